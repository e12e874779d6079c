"""Reviewer's tests of the CUDA paths (issue 13), CUDA faked on a CPU."""
import pytest
import torch

import model as mdl
from test_cuda_paths import fake_cuda


def test_auto_and_cuda_refuse_a_local_rank_without_a_visible_gpu(monkeypatch):
    """torchrun with more processes than visible GPUs (CUDA_VISIBLE_DEVICES=3, --nproc_per_node 2): rank 1's
    auto / cuda would be cuda:1, which torch.cuda.set_device rejects with a CUDA traceback; one line instead."""
    fake_cuda(monkeypatch, n=1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    for spec in ("auto", "cuda", "cuda:1"):
        with pytest.raises(mdl.DeviceError, match=f"--device {spec}: .*1 CUDA device"):
            mdl.resolve_device(spec)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert mdl.resolve_device("auto") == torch.device("cuda:0")


def test_sweep_memory_check_holds_no_cuda_context(synthetic_store, monkeypatch, capsys):
    """The memory check asks a child process: torch.cuda.mem_get_info in the sweep process would create a
    CUDA context on every chosen GPU, held for the whole sweep (and in EXCLUSIVE_PROCESS mode the runs could
    not open their GPU). The child's answer is used per GPU; a child that fails is one line."""
    import sweep
    from conftest import one_line_error
    from test_cuda_paths import fake_mem_query
    gib = 2 ** 30
    fake_cuda(monkeypatch, n=2)
    fake_mem_query(monkeypatch, 30 * gib, 80 * gib)
    plan = {"store": {"data_dir": str(synthetic_store)}, "gpus_per_run": 1}
    todo = [("r", {"model_config": "pythia-14m", "batch_size": 320}, "pending")]
    sweep.check_gpu_memory(plan, todo, [(0, "GPU-aaaa"), (1, "GPU-bbbb")], 1)
    line = one_line_error(lambda a: sweep.check_gpu_memory(*a), [plan, todo, [(0, "GPU-aaaa"), (1, "GPU-bbbb")], 9], capsys)
    assert "free of 80.0 GiB on GPU GPU-aaaa" in line
    monkeypatch.setattr(sweep, "MEM_QUERY", "import sys; sys.exit('RuntimeError: CUDA error: busy or unavailable')")
    line = one_line_error(lambda a: sweep.check_gpu_memory(*a), [plan, todo, [(0, "3")], 1], capsys)
    assert "cannot read the free memory" in line and "busy or unavailable" in line


def test_visible_gpus_as_cuda_reads_them(monkeypatch):
    """CUDA_VISIBLE_DEVICES as CUDA reads it: blanks around entries (a hand-written "2, 5") are not part of
    the ids passed on to the runs, and an entry -1 ends the list (CUDA stops at an invalid entry)."""
    import types
    import sweep
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    for env, want in (("2, 5", ["2", "5"]), (" GPU-aa , GPU-bb ", ["GPU-aa", "GPU-bb"]), ("3", ["3"]),
                      ("", []), ("-1", []), ("0,-1,1", ["0"])):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
        assert sweep.visible_gpus() == want, env
        assert sweep.chosen_gpus(types.SimpleNamespace(gpus=None)) == list(enumerate(want))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert sweep.chosen_gpus(types.SimpleNamespace(gpus=" 1")) == [(1, "5")]


def test_slurm_script_shares_the_task_cores_among_its_runs(synthetic_store, tmp_path):
    """emit --format slurm --runs_per_gpu 4: each of the 4 runs of an array task gets the task's cores / 4 as
    OpenMP and inductor compile threads (SLURM_CPUS_PER_TASK, else the plan's cpus_per_task; at least 1).
    The emitted script itself runs, with a stand-in interpreter that records its environment."""
    import json
    import os
    import subprocess
    import sweep
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"name": "s", "store": {"data_dir": str(synthetic_store)},
                                "grid": {"K": [1], "seed": [0, 1, 2, 3]}, "slurm": {"cpus_per_task": 8}}))
    fake_python = tmp_path / "py"
    fake_python.write_text('#!/bin/bash\necho "$OMP_NUM_THREADS $TORCHINDUCTOR_COMPILE_THREADS" >> "$ENV_LOG"\n')
    fake_python.chmod(0o755)
    script = tmp_path / "job.sh"
    sweep.main(["emit", str(plan), "--out", str(tmp_path / "o"), "--format", "slurm", "--runs_per_gpu", "4",
               "--python", str(fake_python), "--output", str(script)])
    assert script.is_file()
    for cpus, want in (("16", "4 4"), (None, "2 2"), ("2", "1 1")):
        log = tmp_path / f"env_{cpus}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS")}
        env.update({"SLURM_ARRAY_TASK_ID": "0", "ENV_LOG": str(log), **({"SLURM_CPUS_PER_TASK": cpus} if cpus else {})})
        r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert log.read_text().split("\n")[:-1] == [want] * 4, (cpus, log.read_text())


def test_gpu_check_head_reference_is_true_fp32(monkeypatch):
    """Check 1 compares the bf16 fused head with an fp32 reference; gpu_check has allowed TF32 (setup_device)
    by then, so the reference's matmuls must run with TF32 off, or its ~1e-3 error enters the reported figure.
    A dispatch spy records the TF32 flag at every fp32 vocabulary-wide matmul; the flag is restored after."""
    import sys
    from torch.utils._python_dispatch import TorchDispatchMode
    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check
    seen = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket.__name__ in ("mm", "addmm", "matmul") and out.shape[-1] == 300 \
                    and all(a.dtype == torch.float32 for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()):
                seen.append(torch.backends.cuda.matmul.allow_tf32)
            return out

    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    with Spy():
        res = gpu_check.head_check(torch.device("cpu"), 64, 16, 300)
    assert res["ok"] and seen and not any(seen)
    assert torch.backends.cuda.matmul.allow_tf32


def test_gpu_check_sigterm_also_stops_the_runs_of_a_sweep(tmp_path):
    """The timeout's SIGTERM: a sweep that did not stop within its grace is SIGKILLed, and the runs it
    started (each in a session of its own, recorded in runs/*/.sweep.pid) must not be left on the GPU."""
    import os
    import subprocess
    import sys
    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check
    import sweep
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    try:
        out = tmp_path / "sweep4"
        (out / "runs" / "r0").mkdir(parents=True)
        sweep.write_pid_file(out / "runs" / "r0", run.pid)
        gpu_check.SWEEP_OUTS.append(out)
        with pytest.raises(SystemExit):
            gpu_check._on_term(15, None)
        assert run.wait(timeout=10) is not None
    finally:
        gpu_check.SWEEP_OUTS.remove(out)
        if run.poll() is None:
            os.killpg(run.pid, 9)
