"""A stand-in for train.py / sweep.py under tests/test_gpu_check.py: gpu_check.py's logic (steady windows,
overlap, stopping, failures, summary after each step) is what is tested, so its children only write what
the real ones write (metrics rows with time, tokens, MFU and GPU memory; checkpoints; train.log) at a CPU
test's pace, and record the arguments and environment they got. No torch import: it starts at once."""
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path


def flag(argv, name, default=None):
    """The value of the flag's last occurrence (argparse's rule)."""
    at = [i for i, a in enumerate(argv) if a == name]
    return argv[at[-1] + 1] if at else default


def train(argv, run_dir, stop_event, row_s=0.02, origin=None):
    """Rows every row_s seconds of the run's own clock (the 'time' field starts at `origin`), three times
    slower for the first rows (compile): exact figures for the test, at a few ms of real time per row."""
    run_dir.mkdir(parents=True, exist_ok=True)
    budget = float(flag(argv, "--token_budget"))
    batch = int(flag(argv, "--batch_size"))
    ckpt = int(flag(argv, "--checkpoint_interval_steps"))
    log_every = int(flag(argv, "--log_interval_steps"))
    work = run_dir.parent.parent
    (run_dir / "args.json").write_text(json.dumps({"argv": argv, "cuda_visible_devices":
                                                   os.environ.get("CUDA_VISIBLE_DEVICES")}))
    if (work / "summary.json").is_file():  # what the parent had written when this child started
        (run_dir / "summary_seen.json").write_text((work / "summary.json").read_text())
    if "fail" in run_dir.name:
        sys.exit(1)
    if "--resume" in argv and (run_dir / "summary.json").is_file():  # train.py: complete, nothing to do
        return
    steps = sorted(run_dir.glob("step_*/training_state.pt"))  # train.py resumes from the newest
    resume = "--resume" in argv and bool(steps)
    step = int(steps[-1].parent.name[len("step_"):]) if resume else 0
    with open(run_dir / "train.log", "a") as f:
        f.write(f"resumed from step {step}\n" if resume else "start\n")
    total = int(budget // (batch * 100))
    clock = time.time() if origin is None else origin
    while step < total and not stop_event.is_set():
        time.sleep(0.03 if ckpt <= 100 else 0.003)  # runs that checkpoint (kill / resume): a GPU's pace
        dt = row_s * (3 if step < 15 else 1)  # the first rows are slow: compile
        clock += dt
        step += log_every
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"kind": "train", "step": step, "tokens": step * batch * 100, "time": clock,
                                "tokens_per_s": log_every * batch * 100 / dt, "mfu": 0.25,
                                "gpu_mem_gib": 1.5 + 0.01 * step}) + "\n")
        if step % ckpt == 0:
            (run_dir / f"step_{step:08d}").mkdir(exist_ok=True)
            (run_dir / f"step_{step:08d}" / "training_state.pt").write_text("x")
    if step >= total:
        import numpy as np
        from safetensors.numpy import save_file
        (run_dir / "final").mkdir(exist_ok=True)
        save_file({"w": np.full(3, 1.0 + (0.001 if resume else 0.0), dtype=np.float32)},
                  str(run_dir / "final" / "model.safetensors"))
        (run_dir / "summary.json").write_text(json.dumps({"status": "complete"}))


def main():
    argv = sys.argv[1:]
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    script = argv[0]
    if script == "train.py":
        train(argv, Path(flag(argv, "--output_dir")) / flag(argv, "--run_name"), stop)
    elif script == "sweep.py":
        plan = json.loads(Path(argv[2]).read_text())
        out, r = Path(flag(argv, "--out")), int(flag(argv, "--runs_per_gpu"))
        (out / "runs").mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(json.dumps({"argv": argv, "cuda_visible_devices":
                                                   os.environ.get("CUDA_VISIBLE_DEVICES")}))
        fixed = plan["fixed"]
        threads, origin = [], time.time()
        for seed in plan["grid"]["seed"]:
            a = ["train.py", "--token_budget", str(fixed["token_budget"]), "--batch_size", str(fixed["batch_size"]),
                 "--checkpoint_interval_steps", str(fixed["checkpoint_interval_steps"]),
                 "--log_interval_steps", str(fixed["log_interval_steps"])]
            t = threading.Thread(target=train, args=(a, out / "runs" / f"run{seed}", stop, 0.02 * r, origin))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        sys.exit(130 if stop.is_set() else 0)
    else:
        sys.exit(f"unexpected child {script}")


if __name__ == "__main__":
    main()
