"""
A Kneser-Ney language model as a drop-in "model" of a run: interpolated modified Kneser-Ney (Chen &
Goodman 1998: three discounts per order, estimated from counts of counts) of a store's token ids,
orders 1-5, trained on exactly the windows train.py would see and evaluated with evaluate.py's tiling.

    python ngram.py --data_dir preprocessed_arxiv --K 3 --seed 4 --sampling balanced --order 3 \\
        --token_budget 90000000 --output_dir runs

The training data: the sampler items 0 .. W-1 of RandomWindowDataset(categories, data_seed, sampling),
W = total_steps x --batch_size with total_steps from run_plan.token_schedule: the same windows a train.py
run of the same categories, sampling, data seed, batch and token budget trains on. Each window is a
sequence  BOS t0 t1 .. t100  and, like the neural model, the n-gram model predicts t1 .. t100 (100 tokens
per window) from the tokens before them in the same window; BOS (id = store vocab) marks the window start,
so a short context at a window start is a context of its own (the neural model knows it is at a start too).

The model (the exactness test in tests/test_ngram.py restates it with plain dictionaries):
- order-k grams are (context of k-1 symbols, token) at every target whose window has k-1 symbols before it
  (BOS included). Counts at the highest order, and of grams that begin with BOS, are raw counts; any other
  lower-order gram's count is its continuation count: the number of distinct symbols seen before it.
- discounts per order from the counts of counts n1..n4 of those counts: Y = n1 / (n1 + 2 n2),
  D_r = r - (r + 1) Y n_{r+1} / n_r (r = 1, 2, 3+). As in KenLM's lmplz, when any of n1, n2, n3 is zero or
  any D_r falls outside (0, r] (small or odd data; KenLM keeps D_r = 0) the order takes KenLM's fallback
  discounts (0.5, 1, 1.5).
- p_k(w | h) = max(c(hw) - D(c(hw)), 0) / c(h.) + gamma(h) p_{k-1}(w | h'),
  gamma(h) = (D1 N1(h.) + D2 N2(h.) + D3 N3+(h.)) / c(h.); an unseen context passes p_{k-1} through;
  p_0 = 1 / vocab. Every distribution sums to 1 over the store's vocabulary.

Counting and lookup are numpy over packed integer keys (16 bits per symbol; a context of up to 4 symbols is
one uint64): one sort of the highest-order keys, then sorts of the (much fewer) distinct grams' suffixes per
lower order (uint32 at order 2, a bincount at order 1); lookups are binary searches of sorted queries in the
grams' full keys (orders 2-4), a dense table (order 1), or context then gram (order 5). No Python loop runs
per token. (Speed-ups of issue 16 left every table and probability bit-for-bit as before: checked against
the earlier version on orders 1-5.)

The run directory has train.py's format (run_config.json with model "kn<order>", summary.json written last,
test_results.json in evaluate.py's schema, metrics.jsonl), so sweep.py runs plans of it (a plan's
`script: ngram.py`) and analyze.py reads it unchanged; kn<order> is a model of its own there.
"""
import json
import time
from pathlib import Path

import numpy as np

import store as st
import run_plan
from exact_eval import STRIDE, eval_record, summarise, tile
from random_window_dataset import SAMPLING_MODES, fixed_eval_windows

WINDOW, PRED_PER_WINDOW, EVAL_SEED = st.WINDOW, st.PRED_PER_WINDOW, st.EVAL_SEED
BITS = 16                      # bits per symbol in a packed key: token ids are uint16 in the store
MASK = np.uint64((1 << BITS) - 1)
MAX_ORDER = 5                  # a context of order 5 is 4 symbols = 64 bits
EVAL_CHUNK = 650               # windows per lookup chunk: < 2^16 queries (a sort key carries the query index),
                               # and the sorts and searches stay in cache
FALLBACK_DISCOUNTS = np.array([0.5, 1.0, 1.5])  # KenLM's --discount_fallback


# ----------------------------------------------------------------------------------------------------
# the model

def discounts(counts):
    """Modified KN discounts (D1, D2, D3+) from the counts of counts of `counts` (see the module doc)."""
    n = np.bincount(np.minimum(counts, 5), minlength=6)[1:5].astype(np.float64)  # n1..n4
    # KenLM (lmplz, adjust_counts.cc) refuses the estimate and takes the fallback when any of n1, n2, n3 is
    # zero (n4 = 0 only makes D3+ = 3, which it keeps): reading a missing ratio as 0 instead kept D near
    # (1, 2, 3) on tiny corpora, far from KenLM's (0.5, 1, 1.5)
    if np.any(n[:3] == 0):
        return FALLBACK_DISCOUNTS.copy()
    y = n[0] / (n[0] + 2 * n[1])
    d = np.array([r - (r + 1) * y * n[r] / n[r - 1] for r in (1, 2, 3)])
    # KenLM also falls back when an estimate leaves [0, r]; we fall back at exactly 0 too, where KenLM keeps
    # it: a zero discount leaves a context no mass for unseen tokens (an infinite loss)
    return d if np.all((d > 0) & (d <= [1, 2, 3])) else FALLBACK_DISCOUNTS.copy()


def run_counts(sorted_keys):
    """(distinct keys, occurrences) of a sorted key array."""
    if len(sorted_keys) == 0:
        return sorted_keys, np.zeros(0, dtype=np.int64)
    first = np.empty(len(sorted_keys), dtype=bool)
    first[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
    idx = np.flatnonzero(first)
    counts = np.empty(len(idx), dtype=np.int64)
    np.subtract(idx[1:], idx[:-1], out=counts[:-1])
    counts[-1] = len(sorted_keys) - idx[-1]
    return sorted_keys[idx], counts


class Order:
    """One order's table. Contexts: sorted distinct packed context keys with, per context, the count total
    and the numbers of its grams with count 1, 2, 3+. Grams, sorted by (context, token): their context
    indices ci, tokens tok and counts (raw or continuation, see the module doc); `grams` packs them."""

    def __init__(self, k, ctx_per_gram, tok_per_gram, counts, full=None, ctx_ci=None):
        # inputs: one entry per distinct gram, sorted by (context, token); full (optional, orders <= 4): the
        # grams' packed keys (context key << 16 | token), kept for lookup_grams; ctx_ci (optional, instead of
        # ctx_per_gram): the distinct contexts and each gram's context index, when the caller has them
        self.k = k
        if full is not None and k <= 4:
            self._full = full
        if ctx_ci is None:
            self.ctx, first = run_counts(ctx_per_gram)
            self.ci = np.repeat(np.arange(len(self.ctx), dtype=np.int64), first)  # each gram's context index
        else:
            self.ctx, self.ci = ctx_ci
            first = np.bincount(self.ci, minlength=len(self.ctx))
        nctx = len(self.ctx)
        # the per-gram arrays kept are small types (memory of big tables: full 8 + ci 4 + tok 2 + counts 8 bytes)
        self.ci = self.ci.astype(np.int32 if nctx < 1 << 31 else np.int64)
        self.tok = tok_per_gram.astype(np.uint16)
        self.counts = np.asarray(counts, dtype=np.int64)
        # per-context sums over each context's run of grams (integers: exact, whatever the summation order)
        starts = np.cumsum(first) - first
        self.total = np.add.reduceat(self.counts, starts).astype(np.float64) if nctx else np.zeros(0)
        self.d = discounts(self.counts)
        # N1, N2, N3+ per context in one integer bincount (slot 3 ci + min(c, 3) - 1)
        slot = np.minimum(self.counts, 3)
        slot += 3 * self.ci.astype(np.int64) - 1
        n = np.bincount(slot, minlength=3 * nctx).reshape(nctx, 3).astype(np.float64)
        self.backoff_mass = 0 + self.d[0] * n[:, 0] + self.d[1] * n[:, 1] + self.d[2] * n[:, 2]

    @property
    def grams(self):
        """Sorted gram keys (context index << 16 | token), made when first asked (orders 2-4 look up _full)."""
        if not hasattr(self, "_grams"):
            self._grams = self.ci.astype(np.uint64)
            self._grams <<= np.uint64(BITS)
            self._grams |= self.tok
        return self._grams

    def __len__(self):
        return len(self.tok)

    def suffix_keys(self):
        """Packed keys of the last k-1 symbols of each distinct gram: the lower order's grams it extends."""
        if self.k < 2:
            return np.zeros(0, dtype=np.uint64)
        keys = self.ctx[self.ci]
        keys &= np.uint64((1 << (BITS * (self.k - 2))) - 1)
        keys <<= np.uint64(BITS)
        keys |= self.tok
        return keys

    def lookup(self, ctx_keys, tok, p_lower):
        """p_k(tok | ctx) for packed context keys, given p_{k-1} of the same queries (float64 arrays)."""
        if len(self.ctx) == 0:
            return p_lower
        shape = np.shape(p_lower)
        if self.k == 1:  # one context; counts by token id in a dense table: no search
            if not hasattr(self, "_dense"):
                self._dense = np.zeros(1 << BITS, dtype=np.int64)
                self._dense[self.tok.astype(np.int64)] = self.counts
            c = self._dense[np.asarray(tok, dtype=np.int64)]
            disc = np.array([0.0, *self.d])[np.minimum(c, 3)]
            return (np.maximum(c - disc, 0.0) + self.backoff_mass[0] * p_lower) / self.total[0]
        if self.k <= 4:  # the whole gram fits 64 bits
            gk = np.ravel(ctx_keys) << np.uint64(BITS)
            gk |= np.ravel(tok).astype(np.uint64)
            return self.lookup_grams(gk, np.ravel(p_lower)).reshape(shape)
        # order 5: the gram does not fit 64 bits; search the context, then (context index, token)
        ctx_keys, tok, p_lower = (np.ravel(ctx_keys), np.ravel(tok).astype(np.uint64), np.ravel(p_lower))
        # binary searches of sorted queries walk the tables in order (numpy narrows each search by the last
        # result): 3-10x faster than random queries, more than the argsort costs
        order = np.argsort(ctx_keys)
        q = ctx_keys[order]
        ci = np.minimum(np.searchsorted(self.ctx, q), len(self.ctx) - 1)
        seen = self.ctx[ci] == q
        g = (ci.astype(np.uint64) << np.uint64(BITS)) | tok[order]
        gi = np.minimum(np.searchsorted(self.grams, g), len(self.grams) - 1)
        c = np.where(seen & (self.grams[gi] == g), self.counts[gi], 0)
        disc = np.array([0.0, *self.d])[np.minimum(c, 3)]
        pl = p_lower[order]
        p = np.empty_like(p_lower)
        p[order] = np.where(seen, (np.maximum(c - disc, 0.0) + self.backoff_mass[ci] * pl) / self.total[ci], pl)
        return p.reshape(shape)

    def lookup_grams(self, gk, p_lower):
        """lookup() for orders 2-4 from packed gram keys (context << 16 | token, 1-D uint64): one binary search
        of the sorted queries in the grams' full keys finds the gram and, through a neighbour, its context."""
        n, step = len(gk), 1 << BITS
        if len(self.tok) == 0:
            return p_lower
        if n > step:  # the query index must fit the 16 low bits of the sort key
            return np.concatenate([self.lookup_grams(gk[s:s + step], p_lower[s:s + step]) for s in range(0, n, step)])
        if not hasattr(self, "_full"):  # each gram's full key (context key << 16 | token), sorted like the grams
            self._full = self.ctx[self.ci] << np.uint64(BITS)
            self._full |= self.tok
        full, m = self._full, len(self._full)
        # binary searches of sorted queries walk the table in order (numpy narrows each search by the last
        # result): 3-10x faster than random queries, more than the sort costs; a plain sort carries the index
        if self.k <= 3:  # the gram takes <= 48 bits: a plain sort carries the query index in the low 16 bits
            key = gk << np.uint64(BITS)
            key |= np.arange(n, dtype=np.uint64)
            key.sort()
            order = (key & MASK).astype(np.intp)
            key >>= np.uint64(BITS)  # the sorted gram keys
        else:  # 64 bits: no room for the index
            order = np.argsort(gk)
            key = gk[order]
        # text repeats grams (a chunk of 65,000 queries holds ~25,000 distinct bigrams, ~37,000 trigrams in the
        # benchmark): search and gather from the big tables once per distinct query, then spread to all of them
        first = np.empty(n, dtype=bool)
        first[:1] = True
        np.not_equal(key[1:], key[:-1], out=first[1:])
        grp = np.cumsum(first) - 1  # each sorted query's distinct query
        key = key[first]
        pos = np.searchsorted(full, key)
        np.minimum(pos, m - 1, out=pos)
        fr = full[pos]
        c = np.where(fr == key, self.counts[pos], 0)
        key >>= np.uint64(BITS)  # the sorted context keys; the context is seen when a neighbour shares it:
        fr >>= np.uint64(BITS)   # the gram at the insertion point, else the one before it (an index of -1
        pos -= fr != key         # wraps to the last gram, whose context then differs too)
        seen = (full[pos] >> np.uint64(BITS)) == key
        ci = self.ci[pos]
        disc = np.array([0.0, *self.d])[np.minimum(c, 3)]
        a, bm, tot = np.maximum(c - disc, 0.0)[grp], self.backoff_mass[ci][grp], self.total[ci][grp]
        pl = p_lower[order]
        p = np.empty_like(p_lower)
        p[order] = np.where(seen[grp], (a + bm * pl) / tot, pl)
        return p


def pack(cols):
    """Packed uint64 keys from a list of symbol arrays (oldest first), 16 bits each."""
    key = np.zeros(np.shape(cols[0]) if cols else (), dtype=np.uint64)
    for c in cols:
        key = (key << np.uint64(BITS)) | np.asarray(c, dtype=np.uint64)
    return key


class KneserNey:
    """Interpolated modified Kneser-Ney of order 1..5 over token ids < vocab_size; BOS = vocab_size."""

    def __init__(self, order, vocab_size):
        if not 1 <= order <= MAX_ORDER:
            raise ValueError(f"order must be in 1..{MAX_ORDER}, got {order}")
        if vocab_size + 2 > (1 << BITS):
            raise ValueError(f"vocabulary {vocab_size} too large for {BITS}-bit symbols (BOS and PAD need 2 ids)")
        self.order, self.vocab = order, int(vocab_size)
        self.bos, self.pad = self.vocab, self.vocab + 1
        self.orders = None
        self.n_targets = 0

    def extended(self, windows):
        """(M, L) windows -> (M, order + L) uint64: order-1 PAD columns, BOS, the window. Target i of a window
        (its token i, i >= 1) sits at column order + i; its order-k context at columns order+i-k+1 .. order+i-1,
        valid when the first of them is not PAD, a BOS-initial gram when it is BOS."""
        w = np.asarray(windows)
        out = np.empty((w.shape[0], self.order + w.shape[1]), dtype=np.uint64)
        out[:, :self.order - 1] = self.pad
        out[:, self.order - 1] = self.bos
        out[:, self.order:] = w
        return out

    def ctx_key(self, ext, k, c0, c1):
        """Packed order-k context keys for target columns c0 .. c1-1 of an extended array."""
        if k == 1:
            return np.zeros((ext.shape[0], c1 - c0), dtype=np.uint64)
        return pack([ext[:, c0 - t:c1 - t] for t in range(k - 1, 0, -1)])

    def fit(self, windows, valid=None):
        """Count the grams of (M, L) windows (targets: window positions 1 .. L-1; valid (M, L-1) bool, optional:
        only these targets count, e.g. a padded last window of a tiling). Returns self."""
        ext = self.extended(windows)
        M, L = ext.shape[0], ext.shape[1] - self.order
        N = self.order
        pick = (lambda x, i0: x.ravel()) if valid is None else (lambda x, i0: x[valid[:, i0 - 1:i0 - 1 + x.shape[1]]])
        self.n_targets = M * (L - 1) if valid is None else int(valid.sum())
        # highest order: every target whose context has N-1 real symbols (window position >= N-2)
        a = N + max(1, N - 2)
        if N <= 4:  # (context, token) fits 64 bits: one sort counts them
            keys = pick(self.gram_keys(ext, N, a, N + L), a - N)
            keys.sort()
            keys, counts = run_counts(keys)
            table = Order(N, keys >> np.uint64(BITS), keys & MASK, counts, full=keys)
        else:  # 5 symbols do not fit 64 bits: rank the 4-symbol contexts first (np.unique's argsort, without
            # its inverse scatter: the ranks are made in sorted order), then sort (rank, token)
            ctx = pick(self.gram_keys(ext, N - 1, a - 1, N + L - 1), a - N)
            order = np.argsort(ctx)
            ctx = ctx[order]
            first = np.empty(len(ctx), dtype=bool)
            first[:1] = True
            np.not_equal(ctx[1:], ctx[:-1], out=first[1:])
            keys = np.cumsum(first, dtype=np.uint64)
            keys -= np.uint64(1)
            keys <<= np.uint64(BITS)
            keys |= pick(ext[:, a:N + L], a - N)[order]
            ctx = ctx[first]
            del order, first
            keys.sort()
            keys, counts = run_counts(keys)
            table = Order(N, None, keys & MASK, counts, ctx_ci=(ctx, (keys >> np.uint64(BITS)).astype(np.int64)))
        del keys
        self.orders = {N: table}
        # lower orders: continuation counts (one per distinct longer gram with this suffix) + BOS-initial raw
        for k in range(N - 1, 0, -1):
            keys = self.orders[k + 1].suffix_keys()
            if k == 1:  # one symbol: count by token id, no sort
                c = np.bincount(keys.astype(np.int64), minlength=1 << BITS)
                tok = np.flatnonzero(c)
                self.orders[k] = Order(k, np.zeros(len(tok), dtype=np.uint64), tok.astype(np.uint64), c[tok])
                continue
            i = k - 2  # window position whose order-k context begins with BOS
            if k >= 3 and i <= L - 1:
                keys = np.concatenate([keys, pick(self.gram_keys(ext, k, N + i, N + i + 1), i)])
            if k == 2:  # two symbols fit 32 bits: a uint32 sort is about twice as fast
                keys = keys.astype(np.uint32)
            keys.sort()
            keys, counts = run_counts(keys)
            keys = keys.astype(np.uint64, copy=False)
            self.orders[k] = Order(k, keys >> np.uint64(BITS), keys & MASK, counts, full=keys)
        return self

    def gram_keys(self, ext, k, c0, c1):
        """Packed order-k gram keys (context symbols, then the token) for target columns c0 .. c1-1 of an
        extended array: (M, c1-c0) uint64, built in place (one allocation)."""
        key = ext[:, c0 - k + 1:c1 - k + 1].copy()
        for t in range(k - 2, -1, -1):
            key <<= np.uint64(BITS)
            key |= ext[:, c0 - t:c1 - t]
        return key

    def n_entries(self):
        return int(sum(len(t) for t in self.orders.values()))

    def prob_columns(self, ext, c0, c1):
        """p(target | context) for target columns c0 .. c1-1 of an extended array: (M, c1-c0) float64."""
        tok = ext[:, c0:c1]
        p = np.full(tok.shape, 1.0 / self.vocab)
        for k in range(1, self.order + 1):
            # order k applies where the context's first symbol (column c - k + 1) is not PAD
            lo = max(c0, self.order - 1 + k - 1)
            if lo >= c1:
                break
            s = slice(lo - c0, c1 - c0)
            if 2 <= k <= 4:
                gk = self.gram_keys(ext, k, lo, c1).ravel()
                p[:, s] = self.orders[k].lookup_grams(gk, p[:, s].ravel()).reshape(p[:, s].shape)
            else:
                p[:, s] = self.orders[k].lookup(self.ctx_key(ext, k, lo, c1), tok[:, s], p[:, s])
        return p

    def prob(self, history, tokens):
        """p(token | history) for (n, order-1) histories (oldest first; BOS and PAD allowed, PAD before BOS)
        and n tokens: the general query (the tests ask it for every token of the vocabulary)."""
        history = np.asarray(history, dtype=np.uint64).reshape(len(tokens), self.order - 1)
        tok = np.asarray(tokens, dtype=np.uint64)
        p = np.full(len(tok), 1.0 / self.vocab)
        for k in range(1, self.order + 1):
            h = history[:, self.order - k:]
            ok = np.ones(len(tok), dtype=bool) if k == 1 else h[:, 0] != self.pad
            if ok.any():
                ctx = pack([h[ok, j] for j in range(k - 1)]) if k > 1 else np.zeros(int(ok.sum()), dtype=np.uint64)
                p[ok] = self.orders[k].lookup(ctx, tok[ok], p[ok])
        return p

    def window_nll(self, windows, valid=None):
        """-ln p of targets 1 .. L-1 of each (M, L) window: (M, L-1) float64 (0 where not valid)."""
        out = np.zeros((len(windows), windows.shape[1] - 1))
        for s in range(0, len(windows), EVAL_CHUNK):
            ext = self.extended(windows[s:s + EVAL_CHUNK])
            p = self.prob_columns(ext, self.order + 1, ext.shape[1])
            np.log(p, out=p)
            np.negative(p, out=out[s:s + EVAL_CHUNK])
        if valid is not None:
            out[~valid] = 0.0
        return out


# ----------------------------------------------------------------------------------------------------
# evaluation: evaluate.py's tiling and result schema

def test_windows(store, ids):
    """The exact tiling of papers `ids` as (windows (n, 101) int64, valid (n, 100) bool): a short last window
    is padded by repeating its last token, as evaluate.py does; valid marks the targets that count."""
    starts, lens, _ = tile(store, ids)
    ar = np.arange(WINDOW, dtype=np.int64)
    idx = np.minimum(starts[:, None] + ar, starts[:, None] + lens[:, None] - 1)
    return np.asarray(store.tokens[idx], dtype=np.int64), np.arange(STRIDE)[None, :] < (lens[:, None] - 1)


def evaluate_kn(lm, store, split="test", training_categories=None, output=None, arguments=None, model_name=None):
    """evaluate.py's result dict (the same schema, per-category loss / perplexity / bits per byte /
    loss_by_position, overall) for an n-gram model on every category of `split`."""
    t0 = time.time()
    cats = list(store.categories)
    C = len(cats)
    pos_sum = np.zeros(C * STRIDE, dtype=np.float64)
    pos_cnt = np.zeros(C * STRIDE, dtype=np.int64)
    per_cat_papers = {}
    for ci, c in enumerate(cats):
        ids = store.papers(split, [c])
        ids = ids[store.length[ids] >= 2]
        per_cat_papers[c] = ids
        if len(ids) == 0:
            continue
        x, valid = test_windows(store, ids)
        nll = lm.window_nll(x, valid)
        pos_sum[ci * STRIDE:(ci + 1) * STRIDE] = nll.sum(axis=0)
        pos_cnt[ci * STRIDE:(ci + 1) * STRIDE] = valid.sum(axis=0)
    wall = time.time() - t0
    per_category, overall = summarise(store, cats, per_cat_papers, pos_sum, pos_cnt, training_categories)
    return eval_record(store, split, {"path": None, "weights_sha256": None, "name": model_name}, "float64", None,
                       [], training_categories, arguments, per_category, overall, wall, output)


# ----------------------------------------------------------------------------------------------------
# the run

def parse_args(argv=None):
    p = st.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=st.HelpFormatter,
                                allow_abbrev=False)
    a = p.add_argument
    a("--data_dir", default="preprocessed_arxiv", help="token store written by fetch_arxiv.py")
    seed_int = st.number(int, 0, 2**64 - 1)  # as train.py: a plan is refused before its runs start (sweep.py)
    a("--K", type=st.number(int, 1, len(st.CATEGORIES)), default=1, help="number of categories (select_categories(K, seed))")
    a("--seed", type=seed_int, default=0, help="subset seed; also the default --data_seed")
    a("--categories", nargs="+", default=None, help="explicit category names (overrides --K/--seed)")
    a("--data_seed", type=seed_int, default=None, help="window sampler seed (default: --seed)")
    a("--sampling", default="paper", choices=SAMPLING_MODES, help="the sampler's arm, as in train.py")
    a("--order", type=int, default=3, help=f"n-gram order, 1..{MAX_ORDER}")
    a("--token_budget", type=float, default=None, help="predicted tokens to train on (takes precedence over --epochs)")
    a("--epochs", type=float, default=1.0, help="passes over the pool's non-overlapping windows")
    a("--batch_size", type=int, default=32, help="global windows per step: the budget rounds up to whole steps as in train.py")
    a("--grad_accum_steps", type=int, default=1, help="as in train.py (enters only the step rounding)")
    a("--eval_windows", type=int, default=256, help="validation windows per training category (as in train.py)")
    a("--output_dir", default="runs", help="run directories are created below it")
    a("--run_name", default=None, help="default: kn<order>_K<K>_s<seed>_<sampling>_d<budget>_<hash of the identity>")
    a("--resume", nargs="?", const="auto", default=None,
      help="accepted for sweep.py: a complete run of the same identity is left alone; anything else is recomputed")
    args = p.parse_args(argv)
    if not 1 <= args.order <= MAX_ORDER:
        st.die(f"--order must be in 1..{MAX_ORDER} (got {args.order})")
    for name in ("batch_size", "grad_accum_steps", "eval_windows"):
        if getattr(args, name) < 1:
            st.die(f"--{name} must be >= 1 (got {getattr(args, name)})")
    if args.token_budget is not None and args.token_budget <= 0:
        st.die(f"--token_budget must be positive (got {args.token_budget})")
    if args.epochs <= 0:
        st.die(f"--epochs must be positive (got {args.epochs})")
    args.data_seed = args.seed if args.data_seed is None else args.data_seed
    return args


def identity_of(args, store, categories, tokens_per_step, total_steps):
    """The values that make two n-gram runs the same run (train.py's identity fields that apply)."""
    return {"store_id": store.store_id, "categories": list(categories), "sampling": args.sampling,
            "data_seed": args.data_seed, "model": f"kn{args.order}", "tag_categories": False,
            "tokens_per_step": tokens_per_step, "total_steps": total_steps, "dtype": "float64"}


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        st.die(f"{path}: unreadable ({type(e).__name__}); remove the run directory or use another --run_name")


def main(argv=None):
    args = parse_args(argv)
    t_start = time.time()
    store, categories, train_ds = run_plan.training_pool(args)
    if store.vocab_size + 2 > (1 << BITS):
        st.die(f"--data_dir {args.data_dir}: vocabulary {store.vocab_size} leaves no 16-bit ids for BOS/PAD")
    args.K = len(categories)
    budget, tokens_per_step, total_steps = run_plan.token_schedule(args, len(train_ds), 1)
    n_windows = total_steps * tokens_per_step // PRED_PER_WINDOW
    identity = identity_of(args, store, categories, tokens_per_step, total_steps)
    run_name = args.run_name or run_plan.default_run_name(identity, args.seed, budget)
    run_dir = Path(args.output_dir) / run_name
    if run_dir.exists() and (run_dir / "run_config.json").is_file():
        saved = read_json(run_dir / "run_config.json").get("identity", {})
        diff = run_plan.identity_differences(saved, identity)
        if diff or saved.get("model") != identity["model"]:
            st.die(f"{run_dir} is another run ({'; '.join(diff) or 'model ' + str(saved.get('model'))}); "
                   "use another --run_name")
        if not args.resume:
            st.die(f"run directory {run_dir} exists; use --resume to skip it when complete, or another --run_name")
        if (run_dir / "summary.json").is_file() and read_json(run_dir / "summary.json").get("status") == "complete":
            print(f"run {run_name} is already complete ({run_dir / 'summary.json'}); nothing to do")
            return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").unlink(missing_ok=True)  # complete only when we say so

    # train: exactly the sampler items a train.py run of this identity sees
    t0 = time.time()
    starts, labels = train_ds.sample_starts(np.arange(n_windows))
    windows = train_ds.gather(starts)
    lm = KneserNey(args.order, store.vocab_size).fit(windows)
    del windows
    train_s = time.time() - t0
    by_label = np.bincount(labels, minlength=len(store.categories))
    config = {**vars(args), "categories": categories, "K": len(categories), "run_name": run_name,
              "identity": identity, "model_name": f"kn{args.order}", "n_params_total": lm.n_entries(),
              "n_params_nonembedding": None, "n_params_matmul": None, "learning_rate": None,
              "discounts": {str(k): t.d.tolist() for k, t in lm.orders.items()},
              "tokens_per_step": tokens_per_step, "token_budget_effective": total_steps * tokens_per_step,
              "total_steps": total_steps, "train_windows": n_windows,
              "store_id": store.store_id, "store_variant": store.meta.get("variant_id"),
              "pool_papers": len(train_ds.paper_ids), "pool_tokens": int(train_ds.lengths.sum()),
              "pool_windows": len(train_ds), "pool_short_papers_excluded": train_ds.n_short,
              "git_commit": run_plan.git_commit(), "window": WINDOW, "eval_seed": EVAL_SEED, "tag_token_base": None,
              "dtype_resolved": "float64"}
    st.write_json_atomic(run_dir / "run_config.json", config, indent=1)
    print(f"run {run_name}: kn{args.order} on {' '.join(categories)} (K={len(categories)}), sampling {args.sampling}")
    print(train_ds.summary())
    print(f"trained on {n_windows:,} windows ({lm.n_targets:,} predicted tokens) in {train_s:.1f} s "
          f"({lm.n_targets / max(train_s, 1e-9):,.0f} tok/s); {lm.n_entries():,} n-gram entries")

    # validation (train.py's fixed windows per training category) and the exact test evaluation
    val = {}
    for c in categories:
        x = fixed_eval_windows(store, "validation", c, args.eval_windows, WINDOW, EVAL_SEED)
        val[f"val_loss/{c}"] = float(lm.window_nll(x).mean())
    val["val_loss"] = float(np.mean([val[f"val_loss/{c}"] for c in categories]))
    t1 = time.time()
    test = evaluate_kn(lm, store, "test", categories, run_dir / "test_results.json", vars(args), f"kn{args.order}")
    eval_s = time.time() - t1
    tokens_seen = total_steps * tokens_per_step
    names = store.categories
    per_cat = {c: int(by_label[names.index(c)]) * PRED_PER_WINDOW for c in categories}
    pool = train_ds.pool_tokens_by_label()
    with open(run_dir / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"kind": "eval", "step": total_steps, "tokens": tokens_seen, **val,
                            "wall_s": time.time() - t_start, "train_s": train_s}) + "\n")
    o = test["overall"]
    summary = {"status": "complete", "error": None, "run_name": run_name, "store_id": store.store_id,
               "categories": categories, "K": len(categories), "steps": total_steps, "total_steps": total_steps,
               "schedule_complete": True, "tokens_seen": tokens_seen, "tokens_per_category": per_cat,
               "epochs_per_category": {c: per_cat[c] / max(pool.get(names.index(c), 0), 1) for c in categories},
               "final_val_loss": val["val_loss"], "best_val_loss": val["val_loss"], "best_step": total_steps,
               "wall_time_s": time.time() - t_start, "train_time_s": train_s, "eval_time_s": eval_s,
               "tokens_per_s": lm.n_targets / max(train_s, 1e-9), "eval_tokens_per_s": test["tokens_per_s"],
               "test_macro_loss": o["macro_loss"]}
    st.write_json_atomic(run_dir / "summary.json", summary, indent=1)
    print(f"test: macro loss {o['macro_loss']:.4f}, in-training macro {o['in_training_macro_loss']:.4f}"
          + (f", held-out macro {o['held_out_macro_loss']:.4f}" if o["held_out_macro_loss"] is not None else "")
          + f" ({o['n_tokens']:,} tokens, {test['tokens_per_s']:,.0f} tok/s); wall {summary['wall_time_s']:.1f} s "
          f"-> {run_dir}")
    return run_dir


if __name__ == "__main__":
    st.cli(main)
