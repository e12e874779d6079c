"""
The GPU checks of the project in one go (benchmarks/gpu_check.sh runs this): about 6 minutes on one H100.

  1. the fused chunked head (bf16) against the reference loss and gradients (fp32 autograd) on the GPU
  2. bf16 + --compile training of pythia-70m and pythia-160m at batch 320: tokens/s and MFU (steady state)
  3. evaluation tokens/s of the 70m model (bf16), and its ratio to training tokens/s
  4. kill -9 and --resume on the GPU (pythia-14m): the resumed run completes; weights against an
     uninterrupted run (GPU kernels need not be bit-deterministic: the max difference is reported)
  5. sweep.py run --runs_per_gpu 1 vs 4 on four pythia-14m runs: total tokens/s

Data: the shipped sample corpus (no network needed). Everything up to the first GPU step also runs on a
CPU; there the script stops with "no CUDA device" (exit 0), having checked its setup.

    python benchmarks/gpu_check.py [--work /tmp/gpu_check] [--skip_160m]
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sh(cmd, log, env=None, timeout=600):
    """Run a command, its output to log; returns (returncode, seconds)."""
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(map(str, cmd))}\n")
        f.flush()
        r = subprocess.run(list(map(str, cmd)), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                           env={**os.environ, **(env or {})})
    return r.returncode, time.time() - t0


def steady(run_dir, skip=2):
    """Mean tokens/s and MFU of the train rows after the first `skip` (compile and warmup excluded)."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["kind"] == "train"][skip:]
    tps = sum(r["tokens_per_s"] for r in rows) / max(len(rows), 1)
    mfu = sum(r.get("mfu", 0.0) for r in rows) / max(len(rows), 1)
    return tps, mfu


def head_check():
    import torch
    import torch.nn.functional as F
    import model as mdl
    g = torch.Generator(device="cuda").manual_seed(0)
    N, d, V = 16384, 512, 50304
    h = torch.randn(N, d, device="cuda", generator=g).requires_grad_()
    w = (0.02 * torch.randn(V, d, device="cuda", generator=g)).requires_grad_()
    t = torch.randint(0, V, (N,), device="cuda", generator=g)
    total, _ = mdl.FusedLinearCrossEntropy.apply(h, w, t, mdl.head_chunk_rows("cuda", V), torch.bfloat16)
    total.backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = F.cross_entropy(h @ w.t(), t, reduction="sum")
    ref.backward()
    rel = lambda a, b: float((a - b).norm() / b.norm())
    return {"loss_rel_err": abs(float(total) - float(ref)) / float(ref), "grad_h_rel_err": rel(gh, h.grad),
            "grad_w_rel_err": rel(gw, w.grad)}


def train_cmd(store, out, name, model, batch, budget, *extra):
    return [sys.executable, "train.py", "--data_dir", store, "--K", "11", "--model_config", model,
            "--batch_size", batch, "--token_budget", budget, "--output_dir", out, "--run_name", name,
            "--log_interval_steps", "5", "--eval_interval_steps", "100000", "--eval_windows", "16",
            "--checkpoint_interval_steps", "100000", *extra]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--work", default="/tmp/gpu_check", help="scratch directory (emptied first)")
    p.add_argument("--skip_160m", action="store_true", help="train only pythia-70m in check 2")
    args = p.parse_args(argv)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "gpu_check.log"
    summary = {}
    store = work / "store"
    rc, _ = sh([sys.executable, "fetch_arxiv.py", "--dataset_path", "data/sample_corpus", "--full_dataset",
                "--output_dir", store], log)
    assert rc == 0, f"building the sample store failed; see {log}"
    import torch
    if not torch.cuda.is_available():
        print(f"setup checked (sample store built in {store}); no CUDA device: stopping before the first GPU step")
        return None
    summary["gpu"] = torch.cuda.get_device_name(0)
    print(f"GPU: {summary['gpu']}; log: {log}", flush=True)

    summary["fused_head_bf16_vs_fp32"] = head_check()
    print("1. fused head (bf16) vs fp32 reference:", summary["fused_head_bf16_vs_fp32"], flush=True)

    runs = work / "runs"
    for model in ["pythia-70m"] + ([] if args.skip_160m else ["pythia-160m"]):
        rc, wall = sh(train_cmd(store, runs, model, model, 320, 320 * 100 * 40, "--compile", "--dtype", "bfloat16"), log)
        tps, mfu = steady(runs / model)
        summary[f"train_{model}"] = {"ok": rc == 0, "tokens_per_s": tps, "mfu": mfu, "wall_s": wall}
        print(f"2. {model} bf16 + compile, batch 320: {tps:,.0f} tok/s, MFU {mfu:.1%} (rc {rc}, {wall:.0f} s)",
              flush=True)

    rc, _ = sh([sys.executable, "evaluate.py", "--model_dir", runs / "pythia-70m" / "final", "--data_dir", store,
                "--split", "train", "--batch_size", "320", "--dtype", "bfloat16", "--output", work / "eval.json"], log)
    ev = json.loads((work / "eval.json").read_text())["tokens_per_s"] if rc == 0 else float("nan")
    ratio = ev / summary["train_pythia-70m"]["tokens_per_s"]
    summary["eval_pythia-70m"] = {"tokens_per_s": ev, "ratio_to_training": ratio}
    print(f"3. evaluation pythia-70m bf16: {ev:,.0f} tok/s = {ratio:.2f} x training", flush=True)

    common = ["--checkpoint_interval_steps", "20", "--skip_test_eval"]
    sh(train_cmd(store, runs, "ref14", "pythia-14m", 64, 64 * 100 * 80, *common), log)
    cmd = train_cmd(store, runs, "kill14", "pythia-14m", 64, 64 * 100 * 80, *common)
    proc = subprocess.Popen(list(map(str, cmd)), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (runs / "kill14" / "step_00000020").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rc, _ = sh(cmd + ["--resume"], log)
    from safetensors.torch import load_file
    a, b = (load_file(str(runs / n / "final" / "model.safetensors")) for n in ("ref14", "kill14"))
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    resumed = "resumed from step 20" in (runs / "kill14" / "train.log").read_text()
    summary["kill_resume_gpu"] = {"ok": rc == 0 and resumed, "max_abs_weight_diff_vs_uninterrupted": diff}
    print(f"4. kill -9 + --resume on the GPU: {'ok' if rc == 0 and resumed else 'FAILED'}, max |w - w_ref| = {diff:.2e}",
          flush=True)

    plan = work / "plan.json"
    plan.write_text(json.dumps({"name": "gpu_check", "store": {"data_dir": str(store)},
                                "grid": {"model_config": ["pythia-14m"], "K": [11], "seed": [0, 1, 2, 3]},
                                "fixed": {"sampling": "balanced", "batch_size": 64, "token_budget": 64 * 100 * 150,
                                          "eval_interval_steps": 100000, "skip_test_eval": True, "eval_windows": 16,
                                          "checkpoint_interval_steps": 100000}}))
    for r in (1, 4):
        rc, wall = sh([sys.executable, "sweep.py", "run", plan, "--out", work / f"sweep{r}", "--gpus", "0",
                       "--runs_per_gpu", r], log)
        total = 4 * 64 * 100 * 150 / wall
        summary[f"sweep_runs_per_gpu_{r}"] = {"ok": rc == 0, "wall_s": wall, "total_tokens_per_s": total}
        print(f"5. sweep --runs_per_gpu {r}: 4 pythia-14m runs in {wall:.0f} s = {total:,.0f} tok/s in total", flush=True)
    s1, s4 = summary["sweep_runs_per_gpu_1"], summary["sweep_runs_per_gpu_4"]
    print(f"   runs_per_gpu 4 / 1 = {s4['total_tokens_per_s'] / s1['total_tokens_per_s']:.2f}")
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
