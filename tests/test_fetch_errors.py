"""Bad input to fetch_arxiv.py: one clear line on stderr and a non-zero exit, no traceback."""
import subprocess
import sys

import pytest
import yaml

import fetch_arxiv
import store as st
from conftest import one_line_error, ROOT, write_hub_copy


def _fails(argv, capsys):
    return one_line_error(fetch_arxiv.main, argv, capsys)


def test_missing_dataset_path(tmp_path, capsys):
    msg = _fails(["--dataset_path", str(tmp_path / "nope")], capsys)
    assert "--dataset_path" in msg and "no such directory" in msg


def test_dataset_path_without_hub_layout(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train-0.parquet").write_bytes(b"")
    msg = _fails(["--dataset_path", str(tmp_path / "d"), "--output_dir", str(tmp_path / "o")], capsys)
    assert "validation-*.parquet" in msg and "test-*.parquet" in msg


def test_bad_label(tmp_path, capsys):
    hub = write_hub_copy(tmp_path / "h", {s: [("ok", 1), ("bad", -1)] for s in st.SPLITS}, label_feature="int")
    capsys.readouterr()
    msg = _fails(["--dataset_path", str(hub), "--output_dir", str(tmp_path / "o"), "--full_dataset"], capsys)
    assert "train row 1: label -1" in msg
    assert not (tmp_path / "o").exists()


def test_tokenizer_too_large_for_uint16(tmp_path, capsys):
    from tokenizers import Tokenizer, models
    vocab = {f"t{i}": i for i in range(70000)}
    vocab["[UNK]"] = 70000
    Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")).save(str(tmp_path / "big.json"))
    msg = _fails(["--dataset_path", str(st.SAMPLE_CORPUS), "--tokenizer", str(tmp_path / "big.json"),
                  "--output_dir", str(tmp_path / "o")], capsys)
    assert "does not fit" in msg and "uint16" in msg


def test_bad_numbers_and_s3_without_bucket(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("S3_BUCKET", raising=False)
    assert "--max_examples_per_split" in _fails(["--max_examples_per_split", "0"], capsys)
    assert "--num_proc" in _fails(["--num_proc", "0"], capsys)
    assert "--s3_bucket" in _fails(["--upload_to_s3"], capsys)


def test_cli_subprocess_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "fetch_arxiv.py"), "--dataset_path", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "no such directory" in r.stderr


def test_ctrl_c_during_a_build_leaves_nothing_and_one_line(tmp_path):
    import signal
    import time
    rows = [(" ".join(f"token{(i * 7 + j) % 5000}" for j in range(4000)), i % 11) for i in range(600)]
    hub = write_hub_copy(tmp_path / "big", {"train": rows, "validation": rows[:50], "test": rows[:50]},
                         label_feature="int")
    out = tmp_path / "store"
    p = subprocess.Popen([sys.executable, str(ROOT / "fetch_arxiv.py"), "--dataset_path", str(hub), "--full_dataset",
                          "--output_dir", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".store.tmp-*")):  # the build has started writing
        assert p.poll() is None and time.time() < deadline, p.communicate()
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted")
    assert not out.exists() and not list(tmp_path.glob(".store.*"))  # no half-written store anywhere


def test_ctrl_c_inside_a_half_built_object_is_still_one_line(tmp_path):
    """Ctrl-C can land inside a constructor (seen: tqdm's __init__ during fetch_arxiv's build): the half-built
    object's __del__ then fails at exit and Python prints 'Exception ignored in ... Traceback' after the
    one-line message. store.cli ends an interrupted script without such noise."""
    script = tmp_path / "half_built.py"
    script.write_text(f"""import sys
sys.path.insert(0, {str(ROOT)!r})
import store

class Bar:
    def __init__(self):
        raise KeyboardInterrupt  # interrupted before the attribute __del__ reads was set
    def __del__(self):
        self.pos  # AttributeError, as tqdm's close() on a half-built bar

def main():
    Bar()

store.cli(main)
""")
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 130, p.stderr
    assert p.stderr.strip().splitlines() == ["interrupted (Ctrl-C); nothing half-written is left behind"], p.stderr


def _half_built_then(stop):
    """A script whose main() is interrupted inside a constructor, then ends the way `stop` says (the body of
    its `except KeyboardInterrupt:`), run through store.cli as every script is."""
    return f"""import sys
sys.path.insert(0, {str(ROOT)!r})
import store

class Bar:
    def __init__(self):
        raise KeyboardInterrupt
    def __del__(self):
        self.pos

def main():
    try:
        Bar()
    except KeyboardInterrupt:
{stop}

store.cli(main)
"""


def test_a_script_that_handles_its_own_ctrl_c_is_still_one_line(tmp_path):
    """train.py's final evaluation (runlife.finish_or_stop), sweep.py and analyze.py say their own line and
    raise SystemExit(130) (143: analyze.py's SIGTERM) with the interrupted frame, and so the half-built
    object, still alive in the exit's context: its finalizer error is noise there too."""
    for code in (130, 143):
        script = tmp_path / f"own_{code}.py"
        script.write_text(_half_built_then(f"        print('stopped: resume with --resume', file=sys.stderr)\n"
                                           f"        raise SystemExit({code}) from None"))
        p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
        assert p.returncode == code, p.stderr
        assert p.stderr.strip().splitlines() == ["stopped: resume with --resume"], p.stderr


def test_an_in_process_stop_leaves_the_callers_unraisable_hook(tmp_path, monkeypatch, capsys):
    """Silencing finalizer errors is for a process that ends; train.main / sweep.main are also called in
    process (the tests, a notebook), where the caller catches the SystemExit and goes on: its
    sys.unraisablehook (pytest's, which reports a failing __del__ of any later test) must stay. It used to
    be replaced for good by runlife.finish_or_stop's and sweep.py's interrupt branches."""
    import types

    import runlife
    import sweep
    from conftest import TINY_CONFIG
    hook = sys.unraisablehook
    monkeypatch.setattr(sys, "unraisablehook", hook)  # put back after this test whatever happens

    def interrupted(*a):
        raise KeyboardInterrupt
    run = types.SimpleNamespace(dist=types.SimpleNamespace(rank0=False), log=types.SimpleNamespace(close=lambda: None))
    with pytest.raises(SystemExit) as e:
        runlife.finish_or_stop(interrupted, run, None, "complete", None)
    assert e.value.code == 130 and sys.unraisablehook is hook

    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "t", "store": {"data_dir": str(tmp_path / "store")},
        "grid": {"model_config": [str(TINY_CONFIG)], "categories": [["math.AC"]], "seed": [0]},
        "fixed": {"sampling": "token", "batch_size": 8, "token_budget": 4000}, "gpus_per_run": 1}))
    monkeypatch.setattr(sweep, "ensure_store", lambda plan: None)
    monkeypatch.setattr(sweep.Launcher, "launch", interrupted)
    monkeypatch.setattr(sweep.Launcher, "interrupt", lambda self: [])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(SystemExit) as e:
        sweep.main(["run", str(plan), "--out", str(tmp_path / "out")])
    assert e.value.code == 130 and "interrupted: 0 running run(s)" in capsys.readouterr().out
    assert sys.unraisablehook is hook
