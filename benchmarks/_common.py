"""Helpers shared by the benchmarks: a benchmark store with the real vocabulary, built once."""
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import store as st  # noqa: E402


def bench_store(path, papers_per_category=30, length=3000, seed=0):
    """A store of i.i.d. token ids over the Pythia vocabulary (11 categories, all splits): the right shape
    and vocabulary for timing; its contents do not matter for speed."""
    path = Path(path)
    if st.read_meta(path) is not None:
        return path
    rng = np.random.default_rng(seed)
    with st.StoreWriter(path, st.CATEGORIES) as w:
        for split in st.SPLITS:
            for i in range(papers_per_category * len(st.CATEGORIES)):
                w.add(split, i % 11, rng.integers(2, 50277, size=length), n_bytes=4 * length)
        w.finish({"dataset": {"name": "bench", "config": None, "revision": None, "path": None},
                  "tokenizer": {"name": "bench", "sha256": None, "vocab_size": 50277, "eos_token_id": 0},
                  "variant": {"bench": True}, "variant_id": "bench"})
    return path
