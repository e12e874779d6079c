"""
The GPU checks of the project in one go (benchmarks/gpu_check.sh runs this): about 7 minutes on one H100.

  1. the fused chunked head (bf16) against the reference loss and gradients (fp32 autograd) on the GPU
  2. bf16 + --compile training of pythia-70m and pythia-160m at batch 320: steady tokens/s, MFU, GPU memory
  3. exact evaluation (evaluate.py's code path, bf16) of a 70m model: tokens/s and its ratio to training
  4. kill -9 and --resume on the GPU (pythia-14m): the resumed run completes; weights against an
     uninterrupted run (GPU kernels need not be bit-deterministic: the max difference is reported)
  5. sweep.py run --runs_per_gpu 1 vs 4 (pythia-14m, compiled): each run's steady tokens/s over the time
     the runs overlap, their sum, and the GPU memory each run holds

Every figure is steady state: compile, autotuning and first-batch kernels are excluded (the first log rows
of a run, a warm-up pass of the evaluation), and each figure comes from >= --steady_s (20) seconds of
work. A training run is stopped (SIGKILL; a sweep gets SIGINT) once its steady rows cover that long.
Each step is independent: one that fails is reported in summary.json and the next one runs; summary.json
is rewritten after every step, so a crash or the .sh's timeout keeps what was measured. An inherited
CUDA_VISIBLE_DEVICES is respected (the checks use the first visible GPU; sweep's --gpus indexes the
visible devices).

Data: the shipped sample corpus for training, a synthetic store of random tokens with the real vocabulary
for the evaluation (many batches; contents do not matter for speed). No network needed. Everything up to
the first GPU step also runs on a CPU; there the script stops with "no CUDA device" (exit 0).

    python benchmarks/gpu_check.py [--work /tmp/gpu_check] [--skip_160m]
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

WARMUP_ROWS = 3      # log rows (5 steps each) left out of every training figure: compile, autotuning, first batches
LOG_EVERY = 5        # steps between log rows of the training runs
BIG_BUDGET = 10 ** 12  # runs are stopped once measured, never by their budget


def sh(cmd, log, env=None, timeout=600):
    """Run a command to completion, its output to log; returns (returncode, seconds)."""
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(map(str, cmd))}\n")
        f.flush()
        r = subprocess.run(list(map(str, cmd)), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                           env={**os.environ, **(env or {})})
    return r.returncode, time.time() - t0


LIVE = {}  # background process -> the signal that stops it cleanly (SIGKILL for a run, SIGINT for a sweep)
SWEEP_OUTS = []  # --out of every sweep started: its runs live in sessions of their own


def launch(cmd, log, stop_signal=signal.SIGKILL):
    """Start a command in the background (its own session, so a signal reaches it alone), output to log."""
    f = open(log, "a")
    f.write(f"\n$ {' '.join(map(str, cmd))}\n")
    f.flush()
    p = subprocess.Popen(list(map(str, cmd)), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    LIVE[p] = stop_signal
    return p


def _on_term(signum, frame):
    """gpu_check.sh's timeout (SIGTERM): stop the background processes (their own sessions would outlive
    us on the GPU), then exit; summary.json holds every check finished so far."""
    for p, sig in list(LIVE.items()):
        stop(p, sig, timeout=60)
    for out in SWEEP_OUTS:  # a sweep SIGKILLed after the 60 s leaves its runs (own sessions) on the GPU
        stop_sweep_runs(out)
    print("gpu_check: stopped by SIGTERM (timeout?); summary.json has the checks finished so far", flush=True)
    raise SystemExit(124)


def train_rows(run_dir):
    """The train rows of a run's metrics.jsonl (none yet: [])."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line being written
        if r.get("kind") == "train":
            rows.append(r)
    return rows


def intervals(rows):
    """[(start, end, tokens, mfu, gpu_mem_gib)] per log interval: row i covers rows[i-1]'s time to its own
    (the tokens logged between them). The first row has no start (its interval holds the compile)."""
    out = []
    for a, b in zip(rows, rows[1:]):
        out.append((a["time"], b["time"], b["tokens"] - a["tokens"], b.get("mfu"), b.get("gpu_mem_gib")))
    return out


def steady_intervals(rows, skip=WARMUP_ROWS):
    """The intervals after the warm-up rows."""
    return intervals(rows[skip:])


def rate(ivs, t0=None, t1=None):
    """tokens/s, seconds and mean MFU (None if unknown) of the intervals inside [t0, t1]."""
    ivs = [iv for iv in ivs if (t0 is None or iv[0] >= t0) and (t1 is None or iv[1] <= t1)]
    secs = sum(b - a for a, b, *_ in ivs)
    toks = sum(n for _, _, n, *_ in ivs)
    mfus = [m for *_, m, _ in ivs if m is not None]
    return (toks / secs if secs > 0 else None), secs, (sum(mfus) / len(mfus) if mfus else None)


def wait_until(done, proc, deadline, what, poll_s=0.5):
    """Poll done() until it holds; an exited process or the deadline is an error naming `what`."""
    while not done():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited (code {proc.returncode}) before its figure was measured")
        if time.time() > deadline:
            raise RuntimeError(f"{what}: no steady figure within the step's time limit")
        time.sleep(poll_s)


def stop(proc, sig=signal.SIGKILL, timeout=120):
    """Signal a background process's group and wait for it (SIGKILL after `timeout`)."""
    for s in (sig, signal.SIGKILL):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, s)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    LIVE.pop(proc, None)


def stop_sweep_runs(out):
    """Runs a stopped sweep left behind (each in its own session): SIGKILL by their pid files (only a pid
    that is still the process the sweep started: never a later process that reuses the number)."""
    import sweep
    for f in Path(out).glob(f"runs/*/{sweep.PID_FILE}"):
        pid = sweep.pid_file_process(f)
        try:
            if pid:
                os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# ----------------------------------------------------------------------------------------------------
# the checks

def head_check(device, N=16384, d=512, V=50304):
    import torch
    import torch.nn.functional as F
    import model as mdl
    g = torch.Generator(device=device).manual_seed(0)
    h = torch.randn(N, d, device=device, generator=g).requires_grad_()
    w = (0.02 * torch.randn(V, d, device=device, generator=g)).requires_grad_()
    t = torch.randint(0, V, (N,), device=device, generator=g)
    total, _ = mdl.FusedLinearCrossEntropy.apply(h, w, t, mdl.head_chunk_rows(device, V), torch.bfloat16)
    total.backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the reference in true fp32 (setup_device allowed TF32)
    try:
        ref = F.cross_entropy(h @ w.t(), t, reduction="sum")
        ref.backward()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    rel = lambda a, b: float((a - b).norm() / b.norm())
    total, ref = total.detach(), ref.detach()
    res = {"loss_rel_err": abs(float(total) - float(ref)) / float(ref), "grad_h_rel_err": rel(gh, h.grad),
           "grad_w_rel_err": rel(gw, w.grad)}
    res["ok"] = max(res.values()) < 2e-2  # bf16 inputs: ~3 significant digits
    return res


def train_cmd(cfg, store, out, name, model, batch, budget, *extra):
    return [sys.executable, "train.py", "--data_dir", store, "--K", "11", "--model_config", model,
            "--batch_size", batch, "--token_budget", budget, "--output_dir", out, "--run_name", name,
            "--log_interval_steps", LOG_EVERY, "--eval_interval_steps", 10 ** 9, "--eval_windows", "16",
            "--checkpoint_interval_steps", 10 ** 9, "--skip_test_eval", *extra]


def train_throughput(cfg, model):
    """Steady tokens/s, MFU and GPU memory of one bf16 + compile run, stopped once measured."""
    run_dir = cfg.work / "runs" / Path(model).stem
    proc = launch(train_cmd(cfg, cfg.store, cfg.work / "runs", run_dir.name, model, cfg.batch, BIG_BUDGET,
                            "--dtype", "bfloat16", *cfg.compile), cfg.log)
    try:
        wait_until(lambda: rate(steady_intervals(train_rows(run_dir)))[1] >= cfg.steady_s, proc,
                   time.time() + cfg.step_limit_s, f"train.py {model}")
    finally:
        stop(proc)
    ivs = steady_intervals(train_rows(run_dir))
    tps, secs, mfu = rate(ivs)
    mem = max((m for *_, m in ivs if m is not None), default=None)
    return {"ok": True, "tokens_per_s": tps, "mfu": mfu, "steady_s": secs, "gpu_mem_gib": mem,
            "batch": cfg.batch, "warmup_rows_excluded": WARMUP_ROWS}


def eval_throughput(cfg, model_name, train_tps):
    """Exact evaluation (model.evaluate_model, what evaluate.py runs) of a randomly initialised model in
    bf16 on a synthetic store of many batches: one warm-up pass, then passes until >= steady_s."""
    import torch
    import model as mdl
    import store as st
    from _common import bench_store
    store = st.Store(bench_store(cfg.work / "eval_store", papers_per_category=cfg.eval_papers,
                                length=cfg.eval_paper_tokens), in_memory=True)
    mcfg = mdl.model_config(model_name, store.vocab_size)[0]
    net = mdl.build_model(mcfg, 0)
    run = lambda n: mdl.evaluate_model(net, store, "test", batch_size=cfg.batch, device=cfg.device,
                                       dtype=torch.bfloat16, max_papers_per_category=n, progress=False)
    run(2)  # warm-up: first-batch kernels, cuBLAS handles, the allocator
    toks, secs, passes = 0, 0.0, 0
    while secs < cfg.steady_s:
        if torch.cuda.is_available():
            torch.cuda.synchronize(cfg.device)
        t0 = time.time()
        res = run(None)
        secs += time.time() - t0
        toks += res["overall"]["n_tokens"]
        passes += 1
    batches = -(-res["overall"]["n_tokens"] // (100 * cfg.batch))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    tps = toks / secs
    return {"ok": True, "tokens_per_s": tps, "steady_s": secs, "passes": passes, "batches_per_pass": batches,
            "ratio_to_training": tps / train_tps if train_tps else None}


def kill_resume(cfg):
    runs = cfg.work / "runs"
    common = ["--checkpoint_interval_steps", "20", "--log_interval_steps", "10"]
    budget = 64 * 100 * 80
    rc_ref, _ = sh(train_cmd(cfg, cfg.store, runs, "ref14", cfg.small_model, 64, budget, *common), cfg.log)
    cmd = train_cmd(cfg, cfg.store, runs, "kill14", cfg.small_model, 64, budget, *common)
    proc = launch(cmd, cfg.log)
    try:  # polled often: 80 steps of 14m take a few seconds on a GPU, the kill must land mid-run
        wait_until(lambda: (runs / "kill14" / "step_00000020" / "training_state.pt").is_file(), proc,
                   time.time() + cfg.step_limit_s, "train.py kill14", poll_s=0.01)
    finally:
        stop(proc)
    if (runs / "kill14" / "final").exists():
        raise RuntimeError("train.py kill14 finished before it was killed: nothing resumed")
    rc, _ = sh(cmd + ["--resume"], cfg.log)
    from safetensors.torch import load_file
    a, b = (load_file(str(runs / n / "final" / "model.safetensors")) for n in ("ref14", "kill14"))
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    # the newest step checkpoint when the kill landed (20, or a later one written just before it)
    found = re.findall(r"resumed from step (\d+)", (runs / "kill14" / "train.log").read_text())
    resumed = int(found[-1]) if found else None
    return {"ok": rc_ref == 0 and rc == 0 and resumed is not None and 0 < resumed < budget // (64 * 100),
            "resumed_from_step": resumed, "max_abs_weight_diff_vs_uninterrupted": diff}


def sweep_packing(cfg, r):
    """R compiled runs side by side on the first visible GPU: each run's steady tokens/s over the time all
    of them run (and each run's GPU memory). The sweep gets SIGINT once that overlap covers steady_s."""
    plan = cfg.work / f"plan{r}.json"
    plan.write_text(json.dumps({"name": f"gpu_check{r}", "store": {"data_dir": str(cfg.store)},
                                "grid": {"model_config": [cfg.small_model], "K": [11], "seed": list(range(r))},
                                "fixed": {"sampling": "balanced", "batch_size": 64, "token_budget": BIG_BUDGET,
                                          "eval_interval_steps": 10 ** 9, "skip_test_eval": True,
                                          "eval_windows": 16, "checkpoint_interval_steps": 10 ** 9,
                                          "log_interval_steps": LOG_EVERY, "compile": bool(cfg.compile)}}))
    out = cfg.work / f"sweep{r}"
    SWEEP_OUTS.append(out)
    proc = launch([sys.executable, "sweep.py", "run", plan, "--out", out, "--gpus", "0", "--runs_per_gpu", r],
                  cfg.log, stop_signal=signal.SIGINT)

    def overlap():
        ivs = [steady_intervals(train_rows(d)) for d in sorted((out / "runs").glob("*"))]
        if len(ivs) < r or not all(ivs):
            return None, None, ivs
        return max(iv[0][0] for iv in ivs), min(iv[-1][1] for iv in ivs), ivs

    def measured():
        t0, t1, _ = overlap()
        return t0 is not None and t1 - t0 >= cfg.steady_s

    try:
        wait_until(measured, proc, time.time() + cfg.step_limit_s, f"sweep.py --runs_per_gpu {r}")
    finally:
        stop(proc, signal.SIGINT)  # the runs checkpoint (small) and stop; the sweep exits 130
        stop_sweep_runs(out)
        SWEEP_OUTS.remove(out)
    t0, t1, ivs = overlap()
    per_run = [rate(iv, t0, t1)[0] or 0.0 for iv in ivs]
    mem = [max((m for *_, m in iv if m is not None), default=None) for iv in ivs]
    return {"ok": True, "runs": r, "overlap_s": t1 - t0, "tokens_per_s_per_run": per_run,
            "total_tokens_per_s": sum(per_run), "gpu_mem_gib_per_run": mem}


# ----------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--work", default="/tmp/gpu_check", help="scratch directory (emptied first)")
    p.add_argument("--skip_160m", action="store_true", help="train only pythia-70m in check 2")
    p.add_argument("--steady_s", type=float, default=20.0, help="seconds of steady work behind each figure")
    p.add_argument("--step_limit_s", type=float, default=240.0, help="a step taking longer is reported as failed")
    # sizes, for the CPU tests of this script (the defaults are the checks above)
    p.add_argument("--models", nargs="+", default=None, help=argparse.SUPPRESS)
    p.add_argument("--small_model", default="pythia-14m", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=320, help=argparse.SUPPRESS)
    p.add_argument("--eval_papers", type=int, default=200, help=argparse.SUPPRESS)
    p.add_argument("--eval_paper_tokens", type=int, default=3000, help=argparse.SUPPRESS)
    p.add_argument("--head_size", type=int, nargs=3, default=(16384, 512, 50304), help=argparse.SUPPRESS)
    p.add_argument("--no_compile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", default=None, help=argparse.SUPPRESS)  # an existing sample store
    args = p.parse_args(argv)
    args.models = args.models or ["pythia-70m"] + ([] if args.skip_160m else ["pythia-160m"])
    args.compile = [] if args.no_compile else ["--compile"]
    return args


def main(argv=None):
    cfg = parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_term) if main_thread else None
    try:
        return run_checks(cfg)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run_checks(cfg):
    cfg.work = work = Path(cfg.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg.log = work / "gpu_check.log"
    cfg.store = Path(cfg.store) if cfg.store else work / "store"
    rc = 0 if cfg.store != work / "store" else sh(
        [sys.executable, "fetch_arxiv.py", "--dataset_path", "data/sample_corpus", "--full_dataset",
         "--output_dir", cfg.store], cfg.log)[0]
    if rc != 0:
        print(f"building the sample store failed; see {cfg.log}", file=sys.stderr)
        raise SystemExit(1)
    import torch
    if not torch.cuda.is_available():
        print(f"setup checked (sample store built in {cfg.store}); no CUDA device: stopping before the first GPU step")
        return None
    import model as mdl
    cfg.device = mdl.setup_device(mdl.resolve_device("cuda"))  # the first visible GPU
    gpu = torch.cuda.get_device_name(cfg.device)
    summary = {"gpu": gpu, "peak_bf16_flops": mdl.peak_bf16_flops(gpu),
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "torch": torch.__version__,
               "steady_s": cfg.steady_s, "checks": {}}
    print(f"GPU: {gpu} (CUDA_VISIBLE_DEVICES={summary['cuda_visible_devices']}); log: {cfg.log}", flush=True)
    if summary["peak_bf16_flops"] is None:
        print(f"   MFU n/a: no bf16 peak known for {gpu!r} (model.PEAK_BF16_FLOPS)", flush=True)

    def check(name, fn, describe):
        """Run one check; a failure is recorded and the next check runs. summary.json after each."""
        t0 = time.time()
        try:
            res = fn()
        except Exception as e:
            res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            with open(cfg.log, "a") as f:
                f.write(traceback.format_exc())
        res["wall_s"] = time.time() - t0
        summary["checks"][name] = res
        save()
        try:
            line = describe(res) if res.get("error") is None else f"FAILED ({res['error']})"
        except Exception as e:  # a figure missing from a result: say so, never stop the checks
            line = f"{'ok' if res.get('ok') else 'FAILED'} ({type(e).__name__} describing it: {e}; see summary.json)"
        print(f"{name}: {line} [{res['wall_s']:.0f} s]", flush=True)
        return res

    def save():
        tmp = work / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, work / "summary.json")

    pct = lambda v: "n/a" if v is None else f"{v:.1%}"
    gib = lambda v: "n/a" if v is None else f"{v:.1f} GiB"
    check("1_fused_head_bf16_vs_fp32", lambda: head_check(cfg.device, *cfg.head_size),
          lambda r: f"loss {r['loss_rel_err']:.1e}, grad_h {r['grad_h_rel_err']:.1e}, grad_w {r['grad_w_rel_err']:.1e}"
                    f" relative error ({'ok' if r['ok'] else 'TOO LARGE'})")
    for model in cfg.models:
        check(f"2_train_{Path(model).stem}", lambda: train_throughput(cfg, model),
              lambda r: f"{r['tokens_per_s']:,.0f} tok/s, MFU {pct(r['mfu'])}, {gib(r['gpu_mem_gib'])} "
                        f"(bf16 + compile, batch {r['batch']}, {r['steady_s']:.0f} s steady)")
    first = summary["checks"].get(f"2_train_{Path(cfg.models[0]).stem}", {})
    check(f"3_eval_{Path(cfg.models[0]).stem}", lambda: eval_throughput(cfg, cfg.models[0], first.get("tokens_per_s")),
          lambda r: f"{r['tokens_per_s']:,.0f} tok/s = {r['ratio_to_training'] or float('nan'):.2f} x training "
                    f"({r['passes']} passes of {r['batches_per_pass']} batches, {r['steady_s']:.0f} s)")
    check("4_kill_resume", lambda: kill_resume(cfg),
          lambda r: f"{'ok' if r['ok'] else 'FAILED'}, resumed from step {r['resumed_from_step']}, "
                    f"max |w - w_ref| = {r['max_abs_weight_diff_vs_uninterrupted']:.2e}")
    for r in (1, 4):
        check(f"5_sweep_runs_per_gpu_{r}", lambda: sweep_packing(cfg, r),
              lambda x: f"{x['total_tokens_per_s']:,.0f} tok/s in total "
                        f"({', '.join(f'{v:,.0f}' for v in x['tokens_per_s_per_run'])} per run over "
                        f"{x['overlap_s']:.0f} s of overlap; {', '.join(gib(m) for m in x['gpu_mem_gib_per_run'])})")
    s1, s4 = (summary["checks"][f"5_sweep_runs_per_gpu_{r}"].get("total_tokens_per_s") for r in (1, 4))
    if s1 and s4:
        summary["runs_per_gpu_4_over_1"] = s4 / s1
        print(f"   runs_per_gpu 4 / 1 = {s4 / s1:.2f}", flush=True)
    save()
    failed = [k for k, v in summary["checks"].items() if not v.get("ok")]
    print(f"summary: {work / 'summary.json'}" + (f"; FAILED: {', '.join(failed)}" if failed else "; all checks ok"))
    return summary


if __name__ == "__main__":
    main()
