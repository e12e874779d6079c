"""
train.py's steady-state tokens/s against a bare training loop (same model, batch, dtype; forward,
backward and AdamW step on pre-made tensors with the plain HF-logits cross-entropy), in one run.

    python benchmarks/bench_train.py [--model_config pythia-14m] [--batch_size 8] [--steps 40]

Prints the ratio train.py / bare (goal >= 0.9 on CPU). The first --warmup steps of each are not timed.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_store, st  # noqa: E402
import model as mdl  # noqa: E402
from random_window_dataset import RandomWindowDataset  # noqa: E402
import train  # noqa: E402


def bare_loop(cfg, store, batch_size, steps, warmup, device, dtype, lr):
    model = mdl.build_model(cfg, 0).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if device.type == "cuda" else {}))
    ds = RandomWindowDataset(None, "train", st.CATEGORIES[:3], store=store)
    batches = [ds.sample_batch(i, batch_size).to(device) for i in range(steps)]  # pre-made tensors
    ac = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    for i, x in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.time()
        with ac:
            logits = model(input_ids=x[:, :-1]).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (steps - warmup) * batch_size * 100 / (time.time() - t0)


def train_py(store, model_config, batch_size, steps, warmup, workdir, extra):
    out = Path(workdir)
    argv = ["--data_dir", str(store), "--categories", *st.CATEGORIES[:3], "--model_config", model_config,
            "--batch_size", str(batch_size), "--token_budget", str(steps * batch_size * 100),
            "--eval_interval_steps", str(10 ** 9), "--checkpoint_interval_steps", str(10 ** 9),
            "--log_interval_steps", "1", "--skip_test_eval", "--eval_windows", "1",
            "--output_dir", str(out), "--run_name", "bench", *extra]
    run = train.main(argv)
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    timed = rows[warmup:]
    # per-step rows: tokens / sum of interval times = steady-state rate
    return sum(batch_size * 100 for _ in timed) / sum(batch_size * 100 / r["tokens_per_s"] for r in timed)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--model_config", default="pythia-14m")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--compile", action="store_true")
    args = p.parse_args(argv)
    device = mdl.setup_device(mdl.resolve_device(args.device))  # cuda = cuda:0, as train.py
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    store_path = bench_store(Path(tempfile.gettempdir()) / "bench_store_vocab50k")
    store = st.Store(store_path, in_memory=True)
    cfg, name, lr, _ = mdl.model_config(args.model_config, store.vocab_size)
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"model {name}, batch {args.batch_size} windows ({args.batch_size * 100} predicted tokens), "
          f"dtype {args.dtype}, {args.steps} steps ({args.warmup} warm-up)")
    extra = ["--device", str(device), "--dtype", args.dtype] + (["--compile"] if args.compile else [])
    t = train_py(store_path, args.model_config, args.batch_size, args.steps, args.warmup, work, extra)
    b = bare_loop(cfg, store, args.batch_size, args.steps, args.warmup, device, dtype, lr)
    print(f"bare loop: {b:,.0f} tok/s")
    print(f"train.py:  {t:,.0f} tok/s")
    print(f"ratio train.py / bare = {t / b:.2f} (goal >= 0.9)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
