"""
evaluate.py's tokens/s against train.py's training tokens/s for the same model and batch size.

    python benchmarks/bench_eval.py [--model_config pythia-14m] [--batch_size 8]

Goal: evaluation >= 2.5x training throughput.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_store, st  # noqa: E402
import bench_train  # noqa: E402
import evaluate  # noqa: E402
import model as mdl  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--model_config", default="pythia-14m")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--papers_per_category", type=int, default=2, help="test papers evaluated per category")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = p.parse_args(argv)
    device = mdl.setup_device(mdl.resolve_device(args.device))  # the rule of train.py and evaluate.py
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    store_path = bench_store(Path(tempfile.gettempdir()) / "bench_store_vocab50k")
    store = st.Store(store_path, in_memory=True)
    cfg, name, _, _ = mdl.model_config(args.model_config, store.vocab_size)
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, device {device}; model {name}, "
          f"batch {args.batch_size}, dtype {args.dtype}")
    tr = bench_train.train_py(store_path, args.model_config, args.batch_size, args.steps, 5,
                              tempfile.mkdtemp(prefix="bench_eval_"), ["--device", str(device), "--dtype", args.dtype])
    model = mdl.build_model(cfg, 0)
    evaluate.evaluate_model(model, store, "test", batch_size=args.batch_size, device=device, dtype=dtype,
                            max_papers_per_category=1, progress=False)  # warm-up
    t0 = time.time()
    res = evaluate.evaluate_model(model, store, "test", batch_size=args.batch_size, device=device, dtype=dtype,
                                  max_papers_per_category=args.papers_per_category, progress=False)
    ev = res["overall"]["n_tokens"] / (time.time() - t0)
    print(f"training (train.py): {tr:,.0f} tok/s")
    print(f"evaluation (evaluate.py, {res['overall']['n_tokens']:,} tokens): {ev:,.0f} tok/s")
    print(f"ratio evaluation / training = {ev / tr:.2f} (goal >= 2.5)")


if __name__ == "__main__":
    main()
