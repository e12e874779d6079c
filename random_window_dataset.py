"""
RandomWindowDataset: sample a paper (or a token position, or a category) from a pool of store papers,
then a random window (store.WINDOW = 101 tokens) inside one paper. Windows never cross a paper boundary.

Item i is a pure function of (seed, i): a counter-based hash (splitmix64) of the pair gives the random
numbers, so any DataLoader worker or DDP rank gets the same window for the same index and a resumed run
needs no sampler state beyond the step. sample_batch(step, batch_size, rank, world_size) computes items
(step * world_size + rank) * batch_size + j for j < batch_size in one vectorized call: the same windows
as __getitem__ on those indices, without the per-item Python overhead.
BatchPrefetcher: train.py's batches, sampled one step ahead (pinned on CUDA, for an asynchronous copy).
The sampler itself is numpy: torch is imported only where a tensor is made, so ngram.py (through
run_plan.py) samples a neural run's exact windows without importing torch (~1.3 CPU-s per run).

    python random_window_dataset.py --data_dir preprocessed_arxiv --categories cs.IT math.ST
"""

import threading

import numpy as np

import store as st

SAMPLING_MODES = ("paper", "token", "balanced")

# The project's fixed permutation of the 11 categories for select_categories(). It was derived once
# with numpy.random.default_rng(20240611).permutation(11) applied to CATEGORIES and is written out
# here so that it can never change with a numpy version: [1, 7, 4, 9, 3, 10, 8, 6, 2, 0, 5].
CATEGORY_PERMUTATION = ["cs.CV", "cs.IT", "math.GR", "cs.NE", "cs.SY", "math.ST", "cs.DS", "cs.PL",
                        "cs.AI", "math.AC", "cs.CE"]


def select_categories(K, seed):
    """The balanced cyclic design: [pi[(seed + j) mod 11] for j < K].

    For a fixed seed the sets are nested in K; over seeds 0..10 every category is chosen exactly K times.
    """
    n = len(CATEGORY_PERMUTATION)
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or not 1 <= K <= n:
        raise st.StoreError(f"--K must be an integer in 1..{n}, got {K!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise st.StoreError(f"--seed must be a non-negative integer, got {seed!r}")
    return [CATEGORY_PERMUTATION[(seed + j) % n] for j in range(K)]

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(x):
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic): a good 64-bit mixing hash."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def uniforms(seed, idx, stream):
    """Uniform floats in [0, 1) as a pure function of (seed, idx, stream); vectorized over idx."""
    key = splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ np.uint64(0xA5A5A5A5 * (stream + 1)))
    with np.errstate(over="ignore"):
        x = splitmix64(np.asarray(idx, dtype=np.uint64) * np.uint64(0x2545F4914F6CDD1D) ^ key)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class RandomWindowDataset:
    """Random windows from one split of a token store (a map-style dataset: __len__ and __getitem__, as
    torch's DataLoader takes it).

    sampling="paper":    a paper uniformly from the pool, then a uniformly random window inside it
    sampling="token":    every window start in the pool equally likely (long papers weigh more)
    sampling="balanced": a category uniformly from the pool's categories, then token-uniform within it
    Papers shorter than the window are excluded from the pool (and counted in summary()).
    """

    def __init__(self, data_dir, split, target_categories=None, window=st.WINDOW, seed=0, sampling="paper",
                 store=None, in_memory=False):
        if sampling not in SAMPLING_MODES:
            raise st.StoreError(f"sampling must be one of {', '.join(SAMPLING_MODES)}, got {sampling!r}")
        if window < 2:
            raise st.StoreError(f"window must be >= 2, got {window}")
        self.store = store if store is not None else st.Store(data_dir, in_memory=in_memory)
        self.split, self.window, self.seed, self.sampling = split, int(window), int(seed), sampling
        cats = list(target_categories) if target_categories is not None else list(self.store.categories)
        ids = self.store.papers(split, cats)  # raises on an unknown category name
        lengths = self.store.length[ids]
        keep = lengths >= self.window
        self.categories = cats
        self.n_short = int((~keep).sum())
        self.short_tokens = int(lengths[~keep].sum())
        self.paper_ids = ids[keep]
        if self.paper_ids.size == 0:
            raise st.StoreError(f"empty pool: split {split!r} of {self.store.dir} has no paper of >= {self.window} "
                                f"tokens in categories {' '.join(cats)}")
        self.offsets = self.store.offset[self.paper_ids]
        self.lengths = self.store.length[self.paper_ids]
        self.labels = self.store.label[self.paper_ids]
        self.n_starts = self.lengths - self.window + 1          # valid window starts per paper
        self.cum_starts = np.cumsum(self.n_starts)              # for token-uniform sampling
        # balanced: per category present in the pool, its papers' positions and cumulative starts
        present = [self.store.categories.index(c) for c in cats]
        present = [c for c in present if np.any(self.labels == c)]
        self.pool_labels = np.array(present, dtype=np.int64)
        self._cat_members = [np.flatnonzero(self.labels == c) for c in present]
        self._cat_cum = [np.cumsum(self.n_starts[m]) for m in self._cat_members]
        self._arange = np.arange(self.window, dtype=np.int64)

    # --- sizes
    def __len__(self):
        """Non-overlapping windows in the pool: what one 'epoch' means."""
        return int((self.lengths // self.window).sum())

    def pool_tokens_by_label(self):
        """{label id: tokens in the pool's papers of that category} (for epochs per category)."""
        return {int(c): int(self.lengths[self.labels == c].sum()) for c in self.pool_labels}

    def summary(self):
        names = self.store.categories
        lines = [f"pool: split={self.split} sampling={self.sampling} window={self.window} seed={self.seed}",
                 f"  {len(self.paper_ids):,} papers, {int(self.lengths.sum()):,} tokens, {len(self):,} "
                 f"non-overlapping windows; excluded {self.n_short} papers shorter than {self.window} tokens "
                 f"({self.short_tokens:,} tokens)"]
        for c in self.pool_labels:
            m = self.labels == c
            lines.append(f"  {names[c]:10s} {int(m.sum()):7,d} papers {int(self.lengths[m].sum()):14,d} tokens")
        return "\n".join(lines)

    # --- sampling
    def sample_starts(self, idx):
        """(token offset of each window, label of each window) for item indices idx (vectorized)."""
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and idx.min() < 0:
            raise IndexError("negative item index")
        u1, u2 = uniforms(self.seed, idx, 0), uniforms(self.seed, idx, 1)
        if self.sampling == "paper":
            p = np.minimum((u1 * len(self.paper_ids)).astype(np.int64), len(self.paper_ids) - 1)
            s = np.minimum((u2 * self.n_starts[p]).astype(np.int64), self.n_starts[p] - 1)
        elif self.sampling == "token":
            total = int(self.cum_starts[-1])
            t = np.minimum((u1 * total).astype(np.int64), total - 1)
            p = np.searchsorted(self.cum_starts, t, side="right")
            s = t - (self.cum_starts[p] - self.n_starts[p])
        else:  # balanced
            k = np.minimum((u1 * len(self.pool_labels)).astype(np.int64), len(self.pool_labels) - 1)
            p = np.empty_like(idx)
            s = np.empty_like(idx)
            for j in np.unique(k):
                sel = k == j
                cum, members = self._cat_cum[j], self._cat_members[j]
                t = np.minimum((u2[sel] * int(cum[-1])).astype(np.int64), int(cum[-1]) - 1)
                q = np.searchsorted(cum, t, side="right")
                p[sel] = members[q]
                s[sel] = t - (cum[q] - self.n_starts[members[q]])
        return self.offsets[p] + s, self.labels[p]

    def gather(self, starts):
        return np.asarray(self.store.tokens[starts[:, None] + self._arange], dtype=np.int64)

    def __getitem__(self, i):
        import torch
        starts, _ = self.sample_starts(np.array([i]))
        return torch.from_numpy(self.gather(starts)[0])

    def sample_batch(self, step, batch_size, rank=0, world_size=1, return_labels=False):
        """Batch `step` of rank `rank`: items (step*world_size + rank)*batch_size + j, as a (B, window) LongTensor."""
        import torch
        first = (int(step) * world_size + rank) * batch_size
        starts, labels = self.sample_starts(np.arange(first, first + batch_size))
        x = torch.from_numpy(self.gather(starts))
        return (x, labels) if return_labels else x


def fixed_eval_windows(store, split, category, n, window=st.WINDOW, seed=st.EVAL_SEED):
    """The same n windows of one category every time (token-uniform, fixed seed): validation sets that
    do not depend on which other categories a run trains on. Returns an (n, window) int64 array (items 0..n-1
    of the token-uniform sampler: sample_batch(0, n) as numpy)."""
    ds = RandomWindowDataset(None, split, [category], window=window, seed=seed, sampling="token", store=store)
    return ds.gather(ds.sample_starts(np.arange(n))[0])


class BatchPrefetcher:
    """Training batches, one ahead: while the device works on batch i, a worker thread samples batch i+1
    (numpy) and, on CUDA, copies it into pinned (page-locked) host memory, so the step's
    .to(device, non_blocking=True) is a real asynchronous copy (from pageable memory it is synchronous).
    Batch i is ds.sample_batch(i, ...) exactly: the same tensors, in the same order, as sampling in the
    loop. Without pinning (CPU) the batch is sampled in the loop: a thread would only compete for the cores.
    A thread per batch (daemon): nothing to shut down when the run stops."""

    def __init__(self, ds, batch_size, rank, world, pin_memory, tag_base=None, device=None):
        self.ds, self.batch_size, self.rank, self.world, self.pin = ds, batch_size, rank, world, pin_memory
        self.tag_base, self.device = tag_base, device
        self.pending = None  # (index, thread, result box)

    def _sample(self, i):
        """(windows, labels, category tags or None) of batch i, pinned when asked."""
        import torch
        x, labels = self.ds.sample_batch(i, self.batch_size, self.rank, self.world, return_labels=True)
        tags = torch.from_numpy(labels + self.tag_base) if self.tag_base is not None else None
        if self.pin:
            x, tags = x.pin_memory(), (tags.pin_memory() if tags is not None else None)
        return x, labels, tags

    def _load(self, i, box):
        import torch
        try:
            if self.device is not None and self.device.type == "cuda":
                # a new thread's current device is cuda:0: pinning from it would open a CUDA context on
                # GPU 0 in every rank's process (PyTorch's DataLoader pin thread sets the device too)
                torch.cuda.set_device(self.device)
            box["batch"] = self._sample(i)
        except BaseException as e:  # re-raised in the loop's thread
            box["error"] = e

    def _start(self, i):
        box = {}
        t = threading.Thread(target=self._load, args=(i, box), daemon=True)
        t.start()
        self.pending = (i, t, box)

    def get(self, i):
        """(x, labels, tags) of batch i; starts batch i+1."""
        if not self.pin:
            return self._sample(i)
        if self.pending is None or self.pending[0] != i:  # first call, or a jump (never in a run)
            self._start(i)
        _, t, box = self.pending
        t.join()
        self._start(i + 1)
        if "error" in box:
            raise box["error"]
        return box["batch"]


def bundled_decoder(store):
    """A decode function when the store was tokenized with the bundled tokenizer; None otherwise."""
    if store.tokenizer_sha256 != st.BUNDLED_TOKENIZER_SHA256:
        return None
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(st.BUNDLED_TOKENIZER))
    return lambda ids: tok.decode(list(map(int, ids)))


def main(argv=None):
    p = st.ArgumentParser(description="Print a window pool's summary and a few sample windows.",
                          formatter_class=st.HelpFormatter, allow_abbrev=False)
    p.add_argument("--data_dir", default="preprocessed_arxiv", help="token store written by fetch_arxiv.py")
    p.add_argument("--split", default="train", choices=st.SPLITS, help="split to sample from")
    p.add_argument("--categories", nargs="+", default=None, help="category names (default: all)")
    p.add_argument("--sampling", default="paper", choices=SAMPLING_MODES,
                   help="paper: uniform over papers; token: over window starts; balanced: over categories")
    p.add_argument("--window", type=st.number(int, 2), default=st.WINDOW, help="tokens per window")
    p.add_argument("--seed", type=st.number(int, 0), default=0, help="sampler seed")
    p.add_argument("--num_samples", type=st.number(int, 1), default=3, help="windows to print")
    args = p.parse_args(argv)
    try:
        ds = RandomWindowDataset(args.data_dir, args.split, args.categories, window=args.window,
                                 seed=args.seed, sampling=args.sampling)
    except st.StoreError as e:
        st.die(str(e))
    print(ds.summary())
    decode = bundled_decoder(ds.store)
    x, labels = ds.sample_batch(0, args.num_samples, return_labels=True)
    for i in range(args.num_samples):
        head = f"\n--- sample {i} ({ds.store.categories[labels[i]]})"
        if decode:
            print(f"{head}, decoded:\n{decode(x[i].tolist())}")
        else:
            print(f"{head}, token ids (store tokenizer is not the bundled one):\n{x[i].tolist()}")
    return ds


if __name__ == "__main__":
    st.cli(main)
