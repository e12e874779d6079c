"""A full disk while fetch_arxiv.py writes a store or downloads one: one line naming the path and the free
space, the previous store intact, no temporary directory left; and leftovers of a killed run removed at the
next start. On a real small tmpfs where this machine allows mounting one (root), and everywhere with the
store writer's file writes failing with ENOSPC after N bytes."""
import errno
import json
import os
import shutil
import subprocess
import sys

import boto3
import pytest

import fetch_arxiv
import store as st
from conftest import one_line_error

SMALL = ["--dataset_path", str(st.SAMPLE_CORPUS), "--max_examples_per_split", "11"]
FULL = ["--dataset_path", str(st.SAMPLE_CORPUS), "--full_dataset"]


def _hidden(d):
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


@pytest.fixture
def small_fs(tmp_path):
    """A 320 KiB tmpfs (the full sample store is ~100 kB); skipped where mounting is not allowed."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=320k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()[:80]}); the faked-ENOSPC test covers it")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(fs, leave):
    """Fill the file system but `leave` bytes (rounded to pages)."""
    filler = fs / "filler"
    filler.unlink(missing_ok=True)
    free = shutil.disk_usage(fs).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - leave, 0))
    return filler


def test_full_tmpfs_during_build_and_download(small_fs, tmp_path, s3_env, capsys):
    out = small_fs / "store"
    prev = fetch_arxiv.main(SMALL + ["--output_dir", str(out)])
    # publish the full store, to download it later onto the full disk
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket="enospc")
    fetch_arxiv.main(FULL + ["--output_dir", str(tmp_path / "full"), "--upload_to_s3", "--s3_bucket", "enospc",
                             "--s3_prefix", "full"])
    failures = 0
    # a loop over where the disk fills: before tokens.bin's first flush, inside it, inside index.jsonl, at meta
    for leave in (0, 8 << 10, 32 << 10, 64 << 10, 88 << 10):
        filler = _fill(small_fs, leave)
        for argv in (FULL + ["--output_dir", str(out), "--force"],
                     ["--download_only", "--s3_bucket", "enospc", "--s3_prefix", "full", "--output_dir", str(out),
                      "--force"]):
            capsys.readouterr()
            try:
                fetch_arxiv.main(argv)
            except SystemExit as e:
                assert e.code == 2
                err = capsys.readouterr().err
                lines = [l for l in err.splitlines() if l.startswith("error: ")]
                assert len(lines) == 1 and "Traceback" not in err, err
                assert str(out) in lines[0] and "no space left" in lines[0] and " free of " in lines[0], lines[0]
                failures += 1
                # the previous store is intact and nothing half-written is left beside it
                assert st.Store(out, verify=True).store_id == prev["store_id"]
                assert _hidden(small_fs) == [], _hidden(small_fs)
            else:  # it fitted: then it is complete; put the previous store back for the next point
                st.Store(out, verify=True)
                shutil.rmtree(out)
                filler.unlink()
                fetch_arxiv.main(SMALL + ["--output_dir", str(out)])
                filler = _fill(small_fs, leave)
        filler.unlink()
    assert failures >= 6  # the small points must fail (the build, and the download)


class _FillingFile:
    """A file whose writes fail with ENOSPC once `budget[0]` bytes have been written through any of them."""

    def __init__(self, f, budget):
        self._f, self._budget = f, budget

    def write(self, data):
        if len(data) > self._budget[0]:
            self._f.write(data[:self._budget[0]])
            self._budget[0] = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._budget[0] -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


def test_faked_enospc_at_every_point_of_the_store_writer(tmp_path, monkeypatch, capsys):
    out = tmp_path / "store"
    prev = fetch_arxiv.main(SMALL + ["--output_dir", str(out)])
    real_open = open
    for n in (0, 1, 5000, 40000, 81456, 81456 + 14940 - 1, 81456 + 14940 + 100):  # tokens, index, meta.json
        budget = [n]

        def filling_open(path, mode="r", *a, **k):
            f = real_open(path, mode, *a, **k)
            return _FillingFile(f, budget) if "w" in mode else f

        monkeypatch.setattr(st, "open", filling_open, raising=False)
        msg = one_line_error(fetch_arxiv.main, FULL + ["--output_dir", str(out), "--force"], capsys)
        monkeypatch.undo()
        assert str(out) in msg and "no space left" in msg and "free" in msg, (n, msg)
        assert st.Store(out, verify=True).store_id == prev["store_id"]
        assert _hidden(tmp_path) == [], (n, _hidden(tmp_path))


def test_leftovers_of_a_killed_run_removed_at_next_start(tmp_path, capsys):
    out = tmp_path / "store"
    fetch_arxiv.main(SMALL + ["--output_dir", str(out)])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = st.host_tag("tmp")
    stale = [tmp_path / f".store.{mine}-{dead.pid}-1", tmp_path / f".store.download-{dead.pid}-2",
             tmp_path / f".store.old-{dead.pid}-3", tmp_path / f".store.{st.host_tag('download')}-{dead.pid}-4"]
    kept = [tmp_path / f".store.tmp-othernode-{dead.pid}-5",  # another host's: its pid means nothing here
            tmp_path / f".store.{mine}-{os.getpid()}-6"]       # a live writer's
    for d in stale + kept:
        d.mkdir()
        (d / "tokens.bin").write_bytes(b"\0" * 10)
    capsys.readouterr()
    fetch_arxiv.main(SMALL + ["--output_dir", str(out)])
    printed = capsys.readouterr().out
    for d in stale:
        assert not d.exists() and str(d) in printed
    for d in kept:
        assert d.exists()


def test_json_written_on_a_full_disk_leaves_no_temp_file(small_fs):
    """write_json_atomic (summary.json, run_config.json, meta.json...) on a full disk: the OSError goes up
    (the caller says it in one line), the previous file is intact and no half-written NAME.tmp is left."""
    target = small_fs / "summary.json"
    st.write_json_atomic(target, {"status": "interrupted"})
    with open(small_fs / "filler", "wb") as f:
        try:
            f.write(b"\0" * shutil.disk_usage(small_fs).free)
        except OSError:
            pass
    with pytest.raises(OSError) as e:
        st.write_json_atomic(target, {"status": "complete", "pad": "x" * 100_000})
    assert st.is_no_space(e.value)
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler", "summary.json"]
    assert json.loads(target.read_text()) == {"status": "interrupted"}
    # train.py's loss curve on the same full disk: no truncated loss_curve.png, no temp file
    import train
    (small_fs / "filler").unlink()
    (small_fs / "metrics.jsonl").write_text("".join(json.dumps({"kind": "train", "step": i, "tokens": 100 * i,
                                                                 "loss": 5.0 / i}) + "\n" for i in range(1, 50)))
    with open(small_fs / "filler", "wb") as f:
        try:
            f.write(b"\0" * shutil.disk_usage(small_fs).free)
        except OSError:
            pass
    with pytest.raises(OSError):
        train.plot_loss_curve(small_fs)
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler", "metrics.jsonl", "summary.json"]
