"""benchmarks/gpu_check.sh on a machine without a GPU: everything up to the first GPU step runs. And every
GPU step of gpu_check.py with CUDA faked: the checks run on the CPU at tiny sizes (the fused head, the
exact evaluation) and its train.py / sweep.py children are a stand-in (tests/gpu_check_child.py) that writes
what they write, so gpu_check's own logic is what is tested: warm-up left out, figures from the steady
window, the overlap of packed runs, a failing check reported while the next one runs, summary.json after
every check, CUDA_VISIBLE_DEVICES passed on."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402
import model as mdl  # noqa: E402

CHILD = ROOT / "tests" / "gpu_check_child.py"


@pytest.mark.slow  # benchmarks/gpu_check.sh: a chain of python processes
def test_gpu_check_runs_up_to_its_first_gpu_step(tmp_path):
    # the interpreter running the tests, not whichever python3 PATH finds (a venv run without activating it)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--work", str(tmp_path / "w")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no CUDA device: stopping before the first GPU step" in r.stdout
    assert (tmp_path / "w" / "store" / "meta.json").is_file()


def test_steady_figures_leave_out_warmup_and_use_the_overlap():
    # rows every second, 1,000 tokens each, but the first three intervals slow (compile)
    rows, t, tok = [], 0.0, 0
    for i in range(12):
        t += 10.0 if i < 3 else 1.0
        tok += 1000
        rows.append({"time": t, "tokens": tok, "mfu": 0.1 if i < 3 else 0.5, "gpu_mem_gib": float(i)})
    tps, secs, mfu = gpu_check.rate(gpu_check.steady_intervals(rows))
    assert tps == pytest.approx(1000.0) and secs == pytest.approx(8.0) and mfu == pytest.approx(0.5)
    tps_all = gpu_check.rate(gpu_check.intervals(rows))[0]
    assert tps_all < 500  # what counting the warm-up would have reported
    tps, secs, _ = gpu_check.rate(gpu_check.steady_intervals(rows), t0=35.0, t1=38.0)
    assert secs == pytest.approx(3.0) and tps == pytest.approx(1000.0)


def test_every_gpu_step_with_cuda_faked(tmp_path, monkeypatch, capsys, sample_store):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 PCIe")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(mdl, "resolve_device", lambda spec="auto": torch.device("cpu"))  # the "GPU" is the CPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # a node that gave this job its GPU 3

    def child(cmd):
        cmd = list(map(str, cmd))
        return [sys.executable, str(CHILD), *cmd[1:]] if cmd[1] in ("train.py", "sweep.py") else cmd

    real_launch, real_sh = gpu_check.launch, gpu_check.sh
    monkeypatch.setattr(gpu_check, "launch", lambda cmd, log, **k: real_launch(child(cmd), log, **k))
    monkeypatch.setattr(gpu_check, "sh", lambda cmd, log, **k: real_sh(child(cmd), log, **k))
    work = tmp_path / "w"
    tiny = str(ROOT / "plans" / "configs" / "tiny-50k.json")
    summary = gpu_check.main(["--work", str(work), "--steady_s", "0.5", "--step_limit_s", "60",
                              "--models", tiny, "fail-model", "--small_model", tiny, "--batch", "8",
                              "--eval_papers", "1", "--eval_paper_tokens", "250", "--head_size", "64", "16", "300", "--no_compile", "--store", str(sample_store)])
    out = capsys.readouterr().out
    checks = summary["checks"]
    assert list(checks) == ["1_fused_head_bf16_vs_fp32", "2_train_tiny-50k", "2_train_fail-model", "3_eval_tiny-50k",
                            "4_kill_resume", "5_sweep_runs_per_gpu_1", "5_sweep_runs_per_gpu_4"]
    assert summary["gpu"] == "NVIDIA H100 PCIe" and summary["peak_bf16_flops"] == pytest.approx(756.5e12)
    assert summary["cuda_visible_devices"] == "3"
    assert checks["1_fused_head_bf16_vs_fp32"]["ok"]
    t = checks["2_train_tiny-50k"]
    assert t["ok"] and t["tokens_per_s"] == pytest.approx(5 * 8 * 100 / 0.02) and t["steady_s"] >= 0.5
    assert t["mfu"] == pytest.approx(0.25) and t["gpu_mem_gib"] > 1.5
    # a failing check is reported and the next ones run
    assert not checks["2_train_fail-model"]["ok"] and "exited (code 1)" in checks["2_train_fail-model"]["error"]
    assert "2_train_fail-model: FAILED" in out
    ev = checks["3_eval_tiny-50k"]
    assert ev["ok"] and ev["steady_s"] >= 0.5 and ev["tokens_per_s"] > 0 and ev["ratio_to_training"] > 0
    assert checks["4_kill_resume"]["ok"] and checks["4_kill_resume"]["max_abs_weight_diff_vs_uninterrupted"] > 0
    # killed mid-run (the stand-in runs at a GPU's pace: 80 steps in ~0.25 s), resumed from its newest checkpoint
    assert checks["4_kill_resume"]["resumed_from_step"] in (20, 40, 60)
    s1, s4 = checks["5_sweep_runs_per_gpu_1"], checks["5_sweep_runs_per_gpu_4"]
    assert s1["ok"] and s4["ok"] and len(s4["tokens_per_s_per_run"]) == 4 and s4["overlap_s"] >= 0.5
    assert all(v == pytest.approx(5 * 64 * 100 / 0.08) for v in s4["tokens_per_s_per_run"])
    assert s4["total_tokens_per_s"] == pytest.approx(sum(s4["tokens_per_s_per_run"]))
    assert all(m > 1.5 for m in s4["gpu_mem_gib_per_run"])
    assert summary["runs_per_gpu_4_over_1"] == pytest.approx(1.0)
    # summary.json was there, with the earlier checks, when check 4 started
    seen = json.loads((work / "runs" / "ref14" / "summary_seen.json").read_text())
    assert list(seen["checks"]) == list(checks)[:4]
    # the sweep indexes the visible GPUs (--gpus 0 = this job's GPU 3; sweep.py maps it, see test_cuda_paths)
    sw = json.loads((work / "sweep4" / "args.json").read_text())
    assert sw["cuda_visible_devices"] == "3" and sw["argv"][sw["argv"].index("--gpus") + 1] == "0"
    assert json.loads((work / "summary.json").read_text())["checks"].keys() == checks.keys()
    assert not gpu_check.LIVE and not gpu_check.SWEEP_OUTS  # nothing left running


def test_sigterm_stops_the_background_children(tmp_path):
    """gpu_check.sh's timeout sends SIGTERM: the runs gpu_check started in their own sessions are stopped
    with it (they would hold the GPU after gpu_check is gone)."""
    proc = gpu_check.launch([sys.executable, "-c", "import time; time.sleep(300)"], tmp_path / "log")
    assert proc in gpu_check.LIVE
    with pytest.raises(SystemExit) as e:
        gpu_check._on_term(15, None)
    assert e.value.code == 124 and proc.poll() is not None and not gpu_check.LIVE
