"""
The fused output head's chunk buffers on the CPU (model.FusedLinearCrossEntropy, session 25: each chunk's
logits, log-softmax and weight gradient written into buffers reused across chunks) against the same head
allocating fresh tensors per chunk (the code before, reproduced below as the baseline), in the same run:

1. whole train.py runs (the smoke plan's tiny-50k model and flags, K = 3, 9,000 tokens, with its exact test
   evaluation) in fresh processes, baseline and buffered alternating: CPU seconds, minor page faults, ratio,
   and whether the final weights are the same bytes;
2. the head alone in one process on one evaluation batch: bit for bit equal?

    python benchmarks/bench_head.py [--pairs 2]

A run is what matters: within one process and nothing else allocating, glibc raises its mmap threshold after
the first free and serves the baseline's chunks from the heap; in a run, the rest of the step's allocations
between them keep handing the chunks fresh pages.
"""
import argparse
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import model as mdl  # noqa: E402
from _common import bench_store  # noqa: E402


def unbuffered_forward(ctx, h, weight, targets, chunk_rows, compute_dtype):
    """FusedLinearCrossEntropy.forward before session 25: fresh tensors for every chunk."""
    need = ctx.needs_input_grad
    w = weight.to(compute_dtype)
    grad_h = torch.empty_like(h) if need[0] else None
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need[1] else None
    nll = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    with torch.autocast(device_type=h.device.type, enabled=False):
        for s in range(0, h.shape[0], chunk_rows):
            hc, tc = h[s:s + chunk_rows].to(compute_dtype), targets[s:s + chunk_rows]
            logits = (hc @ w.t()).float()
            if grad_h is None and grad_w is None:
                nll[s:s + chunk_rows] = -torch.log_softmax(logits, dim=-1).gather(1, tc[:, None]).squeeze(1)
            else:
                m = logits.amax(dim=-1, keepdim=True)
                nll[s:s + chunk_rows] = (m - logits.gather(1, tc[:, None])).squeeze(1)
                g = logits.sub_(m).exp_()
                z = g.sum(dim=-1, keepdim=True)
                nll[s:s + chunk_rows] += z.log().squeeze(1)
                g = g.div_(z)
                g[torch.arange(len(tc), device=g.device), tc] -= 1.0
                g = g.to(compute_dtype)
                if grad_h is not None:
                    grad_h[s:s + chunk_rows] = (g @ w).to(h.dtype)
                if grad_w is not None:
                    grad_w += (g.t() @ hc).float()
    ctx.save_for_backward(grad_h, grad_w)
    ctx.weight_dtype = weight.dtype
    ctx.mark_non_differentiable(nll)
    return nll.sum(), nll


# a child: train.py as the script, the baseline's head patched in when asked
CHILD = """
import runpy, sys
sys.path[:0] = [{root!r}, {bench!r}]
if sys.argv[1] == "baseline":
    import model, bench_head
    model.FusedLinearCrossEntropy.forward = staticmethod(bench_head.unbuffered_forward)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run(kind, store, out):
    """(CPU seconds, minor page faults, sha256 of the final weights) of one train.py run in a fresh process."""
    flags = ["--data_dir", str(store), "--output_dir", str(out), "--run_name", kind,
             "--model_config", str(ROOT / "plans" / "configs" / "tiny-50k.json"), "--K", "3", "--seed", "0",
             "--token_budget", "9000", "--sampling", "balanced", "--batch_size", "10", "--learning_rate", "0.01",
             "--eval_windows", "8", "--eval_interval_steps", "1000", "--checkpoint_interval_steps", "5",
             "--max_step_checkpoints", "1", "--log_interval_steps", "5"]
    code = CHILD.format(root=str(ROOT), bench=str(ROOT / "benchmarks"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([sys.executable, "-c", code, kind, str(ROOT / "train.py"), *flags], capture_output=True,
                       text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        raise SystemExit(f"train.py ({kind}) failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    weights = hashlib.sha256((out / kind / "final" / "model.safetensors").read_bytes()).hexdigest()
    return cpu, after.ru_minflt - before.ru_minflt, weights


def head_alone():
    """The head on one evaluation batch (64 windows) and one training pass, both ways: bit for bit equal?"""
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(6400, 32, generator=g), 0.02 * torch.randn(50304, 32, generator=g)
    t = torch.randint(0, 50304, (6400,), generator=g)
    rows = mdl.head_chunk_rows("cpu", 50304)
    same = []
    for train in (False, True):
        res = []
        for fwd in (unbuffered_forward, mdl.FusedLinearCrossEntropy.forward):
            class Head(mdl.FusedLinearCrossEntropy):
                forward = staticmethod(fwd)
            wg = w.clone().requires_grad_(train)
            with torch.set_grad_enabled(train):
                total, nll = Head.apply(h, wg, t, rows, torch.float32)
            if train:
                total.backward()
            res.append((nll, wg.grad))
        same.append(torch.equal(res[0][0], res[1][0]) and (not train or torch.equal(res[0][1], res[1][1])))
    return same


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=2, help="baseline / buffered run pairs, alternating")
    args = p.parse_args(argv)
    # 2 papers of 2,000 tokens per category and split: ~44k test tokens, as the smoke store's test split
    store = bench_store(Path(tempfile.gettempdir()) / "bench_store_vocab50k_small", papers_per_category=2,
                        length=2000)
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}; train.py tiny-50k, K = 3, 9,000 tokens "
          f"(9 steps) and its exact test evaluation, OMP_NUM_THREADS=1; {args.pairs} pairs, alternating")
    with tempfile.TemporaryDirectory() as tmp:
        got = {"baseline": [], "buffered": []}
        for i in range(args.pairs):
            for kind in got:
                out = Path(tmp) / f"{kind}{i}"
                got[kind].append(run(kind, store, out))
                cpu, faults, _ = got[kind][-1]
                print(f"  {kind:>9} run {i + 1}: {cpu:.2f} CPU-s, {faults:,} minor page faults", flush=True)
    cpu = {k: sum(c for c, _, _ in v) / len(v) for k, v in got.items()}
    flt = {k: sum(f for _, f, _ in v) / len(v) for k, v in got.items()}
    same_weights = len({w for v in got.values() for _, _, w in v}) == 1
    print(f"mean: baseline {cpu['baseline']:.2f} CPU-s, {flt['baseline']:,.0f} faults; buffered {cpu['buffered']:.2f} "
          f"CPU-s, {flt['buffered']:,.0f} faults; CPU ratio {cpu['baseline'] / cpu['buffered']:.2f}x; the same final "
          f"weights in every run: {same_weights}")
    ev, tr = head_alone()
    print(f"the head alone, bit for bit equal: evaluation {ev}, training {tr}")


if __name__ == "__main__":
    main()
