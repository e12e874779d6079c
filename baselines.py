"""
Model-free reference points per category of a token store: papers, tokens, bytes per token, unigram
entropy, compression rates (bits per byte of gzip / bz2 / lzma on the category's test text), the test loss
of a Kneser-Ney trigram trained on the category's train papers alone (ngram.py, evaluate.py's tiling on
both sides) and the near-duplicate rate between train and test papers (bottom-k MinHash over token 5-grams).

    python baselines.py --data_dir preprocessed_arxiv [--output baselines.json] [--hilberg]

--hilberg adds H7's compression curves r(n) and Hilberg fits per category (analysis/hilberg.py), cached
by store id under --cache_dir.

analyze.py runs this on the store its runs used and adds the figures to its tables and plots.
"""
import bz2
import gzip
import lzma

import numpy as np

import store as st
from analysis import hilberg
from ngram import KneserNey, test_windows
from random_window_dataset import bundled_decoder, splitmix64

SHINGLE = 5          # token 5-grams
SKETCH = 64          # bottom-k MinHash sketch size
DUP_JACCARD = 0.8    # a test paper with a train paper this similar counts as a near-duplicate
KN_ORDER = 3         # the per-category Kneser-Ney baseline: a trigram, as the KN pilot's runs


def sketch(tokens):
    """Bottom-k MinHash sketch (sorted uint64) of the set of token 5-grams of one paper."""
    t = np.asarray(tokens, dtype=np.uint64)
    if len(t) < SHINGLE:
        return np.zeros(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = np.zeros(len(t) - SHINGLE + 1, dtype=np.uint64)
        for j in range(SHINGLE):
            h = splitmix64(h ^ t[j:len(t) - SHINGLE + 1 + j])
    u = np.unique(h)
    return u[:SKETCH]


def jaccard_estimate(a, b):
    """Bottom-k estimate of the Jaccard similarity of two sets from their sketches."""
    if len(a) == 0 or len(b) == 0:
        return 0.0
    union = np.union1d(a, b)[:SKETCH]
    both = np.intersect1d(np.intersect1d(a, b), union)
    return len(both) / len(union)


def near_duplicates(store, progress=True):
    """Per test paper: the best Jaccard estimate against train papers sharing sketch values."""
    from tqdm import tqdm
    index = {}
    train_ids = store.papers("train")
    sketches = {}
    for pid in tqdm(train_ids, desc="minhash train", disable=not progress, leave=False):
        s = sketch(store.paper_tokens(pid))
        sketches[pid] = s
        for v in s.tolist():
            index.setdefault(v, []).append(pid)
    best = {}
    for pid in tqdm(store.papers("test"), desc="minhash test", disable=not progress, leave=False):
        s = sketch(store.paper_tokens(pid))
        hits = {}
        for v in s.tolist():
            for q in index.get(v, ()):
                hits[q] = hits.get(q, 0) + 1
        # J >= 0.8 between the sets means most sketch values are shared: check only strong candidates
        cands = [q for q, n in hits.items() if n >= max(1, len(s) // 4)]
        best[int(pid)] = max((jaccard_estimate(s, sketches[q]) for q in cands), default=0.0)
    return best


def compression_bpb(text_bytes):
    n = len(text_bytes)
    if n == 0:
        return {"gzip": None, "bz2": None, "lzma": None}
    return {"gzip": 8 * len(gzip.compress(text_bytes, 9)) / n, "bz2": 8 * len(bz2.compress(text_bytes, 9)) / n,
            "lzma": 8 * len(lzma.compress(text_bytes, preset=6)) / n}


def kn_baseline(store, category, order=KN_ORDER):
    """Test loss (nats/token) and bits per byte of a Kneser-Ney model of `order` trained on all of the
    category's train papers (each tiled as evaluate.py tiles a test paper: every token but the first once)."""
    key = f"kn{order}"
    tr, te = (store.papers(s, [category]) for s in ("train", "test"))
    tr, te = tr[store.length[tr] >= 2], te[store.length[te] >= 2]
    if len(tr) == 0 or len(te) == 0 or store.vocab_size + 2 > 1 << 16:
        return {f"{key}_test_loss": None, f"{key}_test_bpb": None}
    lm = KneserNey(order, store.vocab_size).fit(*test_windows(store, tr))
    x, valid = test_windows(store, te)
    total = float(lm.window_nll(x, valid).sum())
    return {f"{key}_test_loss": total / int(valid.sum()),
            f"{key}_test_bpb": total / np.log(2) / max(int(store.n_bytes[te].sum()), 1)}


def store_baselines(store, max_compress_bytes=20_000_000, progress=True):
    """{"store_id", "per_category": {cat: {...}}, "overall": {...}} (see module doc)."""
    from tqdm import tqdm
    decode = bundled_decoder(store)
    dup = near_duplicates(store, progress)
    per = {}
    for ci, c in enumerate(tqdm(store.categories, desc="baselines", disable=not progress, leave=False)):
        r = {}
        for split in st.SPLITS:
            ids = store.papers(split, [c])
            r[f"{split}_papers"] = int(len(ids))
            r[f"{split}_tokens"] = int(store.length[ids].sum())
        tr = store.papers("train", [c])
        counts = np.zeros(max(store.vocab_size, 1), dtype=np.int64)
        for pid in tr:
            counts += np.bincount(np.asarray(store.paper_tokens(pid), dtype=np.int64), minlength=len(counts))
        p = counts[counts > 0] / max(counts.sum(), 1)
        r["unigram_entropy_nats"] = float(-(p * np.log(p)).sum()) if len(p) else None
        r["bytes_per_token"] = float(store.n_bytes[tr].sum() / max(store.length[tr].sum(), 1))
        te = store.papers("test", [c])
        if decode is not None:
            parts, size = [], 0
            for pid in te:
                b = decode(store.paper_tokens(pid)).encode("utf-8")
                parts.append(b)
                size += len(b)
                if size >= max_compress_bytes:
                    break
            r["compress_bpb"] = compression_bpb(b"\n".join(parts))
        else:
            r["compress_bpb"] = {"gzip": None, "bz2": None, "lzma": None}  # no text without the tokenizer
        r.update(kn_baseline(store, c))
        sims = [dup[int(pid)] for pid in te]
        r["test_near_duplicate_rate"] = float(np.mean([s >= DUP_JACCARD for s in sims])) if sims else None
        per[c] = r
    all_sims = list(dup.values())
    overall = {"test_near_duplicate_rate": float(np.mean([s >= DUP_JACCARD for s in all_sims])) if all_sims else None,
               "near_duplicate_test_papers": [pid for pid, s in dup.items() if s >= DUP_JACCARD]}
    return {"store_id": store.store_id, "shingle": SHINGLE, "sketch": SKETCH, "dup_jaccard": DUP_JACCARD,
            "per_category": per, "overall": overall}


def hilberg_baselines(store, cache_dir, max_bytes=16_000_000, progress=True):
    """H7's compression curves and Hilberg fits per category (bits per byte of the decoded text with the
    bundled tokenizer, else bits per token), computed once per store id and parameters, then cached."""
    return hilberg.analyse(store, cache_dir, max_bytes, decode=bundled_decoder(store), progress=progress)


def print_table(b):
    print(f"{'category':10s} {'train pap':>9s} {'train tok':>12s} {'B/tok':>6s} {'H1 nats':>8s} "
          f"{'gzip':>6s} {'bz2':>6s} {'lzma':>6s} {'kn3':>6s} {'kn3bpb':>6s} {'dup%':>6s}")
    f = lambda v, w=6, d=3: f"{v:{w}.{d}f}" if v is not None else f"{'-':>{w}s}"
    for c, r in b["per_category"].items():
        cb = r["compress_bpb"]
        dup = None if r["test_near_duplicate_rate"] is None else 100 * r["test_near_duplicate_rate"]
        print(f"{c:10s} {r['train_papers']:9,d} {r['train_tokens']:12,d} {f(r['bytes_per_token'])} "
              f"{f(r['unigram_entropy_nats'], 8)} {f(cb['gzip'])} {f(cb['bz2'])} {f(cb['lzma'])} "
              f"{f(r.get('kn3_test_loss'))} {f(r.get('kn3_test_bpb'))} {f(dup, 6, 1)}")


def main(argv=None):
    p = st.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=st.HelpFormatter,
                          allow_abbrev=False)
    p.add_argument("--data_dir", default="preprocessed_arxiv", help="token store written by fetch_arxiv.py")
    p.add_argument("--output", default=None, help="write the JSON here")
    p.add_argument("--max_compress_bytes", type=st.number(int, 1), default=20_000_000, help="test text compressed per category")
    p.add_argument("--hilberg", action="store_true", help="add compression curves and Hilberg fits (H7)")
    p.add_argument("--hilberg_max_bytes", type=st.number(int, 1), default=16_000_000,
                   help="training text per category for the compression curves")
    p.add_argument("--cache_dir", default=hilberg.CACHE_DIR,
                   help="where the compression curves are cached, keyed by store id")
    args = p.parse_args(argv)
    try:
        s = st.Store(args.data_dir)
    except st.StoreError as e:
        st.die(str(e))
    b = store_baselines(s, args.max_compress_bytes)
    print_table(b)
    if args.hilberg:
        try:
            b["hilberg"] = hilberg_baselines(s, args.cache_dir, args.hilberg_max_bytes)
        except OSError as e:
            st.die(f"--cache_dir {args.cache_dir}: cannot write the compression-curve cache ({e.strerror}); "
                   "pass a writable directory")
        print("\n".join(hilberg.markdown_section(b["hilberg"])))
    if args.output:
        st.write_json_atomic(args.output, b, indent=1)
        print(f"wrote {args.output}")
    return b


if __name__ == "__main__":
    st.cli(main)
