"""The default download path: fetch_arxiv.py against the Hub, emulated on 127.0.0.1 (tests/hub_emulator.py)
with a repository shaped like ccdv/arxiv-classification (a loading script on main; the parquet conversion
with both configs on refs/convert/parquet). fetch_arxiv.py runs as a user runs it, in a subprocess with
HF_ENDPOINT pointing at the emulator: huggingface_hub and datasets are the real clients."""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import store as st
from conftest import ROOT
from hub_emulator import HubEmulator, add_arxiv_repo, add_parquet_repo

REPO = "ccdv/arxiv-classification"


@pytest.fixture(scope="module")
def hub():
    h = HubEmulator()
    _, shas = add_arxiv_repo(h, st.CATEGORIES)
    add_parquet_repo(h, st.CATEGORIES)
    h.shas = shas
    h.start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    """One HF cache for the module: the full run fills it, the later dev run must still read no_ref."""
    return tmp_path_factory.mktemp("hf_home")


def fetch(argv, endpoint, hf_home, timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1")
    t0 = time.time()
    r = subprocess.run([sys.executable, str(ROOT / "fetch_arxiv.py"), *argv], capture_output=True, text=True,
                       env=env, timeout=timeout, cwd=ROOT)
    r.wall = time.time() - t0
    return r


def store_texts(path):
    """{split: [decoded text of each paper]} of a store built with the bundled tokenizer."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(st.BUNDLED_TOKENIZER))
    s = st.Store(path, verify=True)
    return {sp: [tok.decode(s.paper_tokens(int(p)).tolist()) for p in s.splits[sp]] for sp in st.SPLITS}


def assert_no_ref_store(path, commit, version, n_per_split=None):
    meta = json.loads((path / "meta.json").read_text())
    assert meta["dataset"]["name"] == REPO and meta["dataset"]["config"] == "no_ref"
    assert meta["dataset"]["revision"] == commit  # the exact bytes the store came from
    texts = store_texts(path)
    for split, ts in texts.items():
        assert ts, split
        # every paper is a no_ref text of that split and version: the configs are never mixed
        assert all(t.startswith(f"[no_ref v{version}] {split} paper ") for t in ts), ts[:2]
        assert not any("References:" in t for t in ts)
        if n_per_split is not None:
            assert len(ts) == n_per_split[split]
    return meta


@pytest.mark.slow  # fetch_arxiv.py processes against the Hub emulation
def test_dev_run_full_run_and_dev_run_on_the_filled_cache(hub, hf_home, tmp_path):
    head = hub.shas["v2"]
    dev = fetch(["--output_dir", str(tmp_path / "dev"), "--max_examples_per_split", "11"], hub.url, hf_home)
    assert dev.returncode == 0, dev.stderr
    assert "script dataset" in dev.stdout and head in dev.stdout
    meta = assert_no_ref_store(tmp_path / "dev", head, 2, {"train": 11, "validation": 11, "test": 11})
    assert all(meta["category_counts"][c]["train"]["papers"] == 1 for c in st.CATEGORIES)  # dev subset rule

    n_before = len(hub.requests)
    full = fetch(["--output_dir", str(tmp_path / "full"), "--full_dataset"], hub.url, hf_home)
    assert full.returncode == 0, full.stderr
    # v2 of the conversion has 31 / 13 / 13 rows per split (add_arxiv_repo)
    assert_no_ref_store(tmp_path / "full", head, 2, {"train": 31, "validation": 13, "test": 13})
    read = [p for m, p in hub.requests[n_before:] if "/resolve/" in p]
    assert read and all("/no_ref/" in p for p in read), read  # not one byte of the default config
    assert any((hf_home / "datasets").iterdir())  # the non-streaming run filled the datasets cache

    again = fetch(["--output_dir", str(tmp_path / "dev2"), "--max_examples_per_split", "11"], hub.url, hf_home)
    assert again.returncode == 0, again.stderr
    m1, m2 = (json.loads((tmp_path / d / "meta.json").read_text()) for d in ("dev", "dev2"))
    assert m1["store_id"] == m2["store_id"]


@pytest.mark.slow  # fetch_arxiv.py processes against the Hub emulation
def test_pinned_conversion_commit(hub, hf_home, tmp_path):
    old = hub.shas["v1"]
    r = fetch(["--output_dir", str(tmp_path / "pin"), "--full_dataset", "--dataset_revision", old], hub.url, hf_home)
    assert r.returncode == 0, r.stderr
    meta = assert_no_ref_store(tmp_path / "pin", old, 1, {"train": 30, "validation": 12, "test": 12})
    assert meta["dataset"]["requested_revision"] == old
    assert meta["variant"]["revision"] == old and meta["variant_id"].endswith(f"rev{old[:12]}")


@pytest.mark.slow  # fetch_arxiv.py processes against the Hub emulation
def test_non_script_dataset_loads_through_load_dataset(hub, hf_home, tmp_path):
    """A parquet upload with configs in its card (what push_to_hub writes) goes to plain load_dataset."""
    r = fetch(["--output_dir", str(tmp_path / "pq"), "--full_dataset", "--dataset_name", "someone/arxiv-parquet"],
              hub.url, hf_home)
    assert r.returncode == 0, r.stderr
    assert "script dataset" not in r.stdout
    texts = store_texts(tmp_path / "pq")
    assert [len(texts[s]) for s in st.SPLITS] == [22, 11, 11]
    assert all(t.startswith("[no_ref v1]") for ts in texts.values() for t in ts)


def _one_line_failure(r):
    lines = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.mark.slow  # fetch_arxiv.py processes against the Hub emulation
def test_missing_repository_revision_and_config(hub, hf_home, tmp_path):
    out = str(tmp_path / "o")
    msg = _one_line_failure(fetch(["--output_dir", out, "--dataset_name", "nobody/nothing"], hub.url, hf_home))
    assert "--dataset_name nobody/nothing" in msg and "no such dataset repository" in msg
    msg = _one_line_failure(fetch(["--output_dir", out, "--dataset_revision", "0" * 40], hub.url, hf_home))
    assert "--dataset_revision" in msg and "no such branch, tag or commit" in msg
    msg = _one_line_failure(fetch(["--output_dir", out, "--dataset_config", "nope"], hub.url, hf_home))
    assert "--dataset_config nope" in msg and "default, no_ref" in msg
    # a pinned commit of main (the script version) cannot be read by datasets >= 4: say what to pin instead
    main_sha = hub.repos[REPO].refs["main"]
    msg = _one_line_failure(fetch(["--output_dir", out, "--dataset_revision", main_sha], hub.url, hf_home))
    assert "loading script" in msg and "refs/convert/parquet" in msg
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # fetch_arxiv.py processes against the Hub emulation
def test_script_dataset_without_conversion(hf_home, tmp_path):
    h = HubEmulator()
    repo = h.add_repo(REPO)
    repo.commit("main", {"README.md": b"# x\n", "arxiv-classification.py": b"import datasets\n"})
    h.start()
    try:
        msg = _one_line_failure(fetch(["--output_dir", str(tmp_path / "o")], h.url, hf_home))
    finally:
        h.stop()
    assert "no parquet conversion" in msg and "datasets<4" in msg and "--dataset_path" in msg


@pytest.mark.slow  # fetch_arxiv.py processes against the Hub emulation
def test_unreachable_hub_fails_in_seconds(hf_home, tmp_path):
    # nothing listens: refused at once
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    r = fetch(["--output_dir", str(tmp_path / "o")], f"http://127.0.0.1:{dead}", hf_home)
    msg = _one_line_failure(r)
    assert "unreachable" in msg and "--dataset_path" in msg
    # a host that accepts no connection and answers nothing (a black hole): a timeout, well within 30 s
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    filler = [socket.socket() for _ in range(4)]  # fill the accept queue so new connections hang
    for f in filler:
        f.setblocking(False)
        f.connect_ex(hole.getsockname())
    try:
        r = fetch(["--output_dir", str(tmp_path / "o")], f"http://127.0.0.1:{hole.getsockname()[1]}", hf_home)
    finally:
        for f in filler:
            f.close()
        hole.close()
    msg = _one_line_failure(r)
    assert "unreachable" in msg and r.wall < 30, (msg, r.wall)
    assert not (tmp_path / "o").exists()


def test_emulator_serves_ranged_reads_and_lfs_redirects(hub):
    """The far end behaves as the Hub does where the clients depend on it (a check of the emulator)."""
    import urllib.request
    sha = hub.shas["v2"]
    url = f"{hub.url}/datasets/{REPO}/resolve/{sha}/no_ref/train/0000.parquet"
    req = urllib.request.Request(url, method="HEAD")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(req)
    assert e.value.code == 302 and e.value.headers["X-Repo-Commit"] == sha
    loc = e.value.headers["Location"]
    assert loc.startswith(hub.cdn_url)
    size = int(e.value.headers["X-Linked-Size"])
    rng = urllib.request.Request(loc, headers={"Range": "bytes=0-3"})
    with urllib.request.urlopen(rng) as r:
        assert r.status == 206 and r.read() == b"PAR1"
        assert r.headers["Content-Range"] == f"bytes 0-3/{size}"
    data = hub.repos[REPO].commits[sha]["files"]["no_ref/train/0000.parquet"]
    assert np.frombuffer(data[-4:], dtype=np.uint8).tobytes() == b"PAR1"
