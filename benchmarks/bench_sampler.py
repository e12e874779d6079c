"""
Windows/s of RandomWindowDataset's vectorized sample_batch against per-item __getitem__ (goal >= 10x).

    python benchmarks/bench_sampler.py [--batch_size 512]
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch  # noqa: F401  # before the timing: the sampler imports torch at its first tensor (~1.3 s)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_store, st  # noqa: E402
from random_window_dataset import SAMPLING_MODES, RandomWindowDataset  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--items", type=int, default=20000)
    args = p.parse_args(argv)
    store = st.Store(bench_store(Path(tempfile.gettempdir()) / "bench_store_vocab50k"), in_memory=True)
    print(f"machine: {os.cpu_count()} cores; store {store.n_papers} papers, {len(store.tokens):,} tokens (in RAM)")
    for mode in SAMPLING_MODES:
        ds = RandomWindowDataset(None, "train", store=store, sampling=mode)
        t0 = time.time()
        for i in range(args.items):
            ds[i]
        item = args.items / (time.time() - t0)
        n_batches = max(1, 20 * args.items // args.batch_size)
        t0 = time.time()
        for s in range(n_batches):
            ds.sample_batch(s, args.batch_size)
        batch = n_batches * args.batch_size / (time.time() - t0)
        print(f"{mode:9s} per-item {item:12,.0f} windows/s | sample_batch({args.batch_size}) {batch:12,.0f} "
              f"windows/s | ratio {batch / item:.0f}x")


if __name__ == "__main__":
    main()
