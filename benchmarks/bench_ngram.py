"""
ngram.py's speed: training (counting) + evaluation (lookup) of the Kneser-Ney model against one np.sort of
the same packed n-gram keys, measured in the same run (goal: ratio <= 3); tokens/s of both phases.

    python benchmarks/bench_ngram.py [--order 3] [--train_tokens 5000000] [--eval_tokens 1000000] [--repeat 3]

Data: windows of 101 token ids drawn from a Zipf(1.1) law over the Pythia vocabulary with a first-order
dependence (half the tokens follow their predecessor's fixed successor), so n-grams repeat roughly as in
text; the timing does not depend on the ids beyond how many distinct n-grams there are (printed).
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ngram  # noqa: E402
import store as st  # noqa: E402

VOCAB = 50277


def zipf_windows(n_windows, seed):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(VOCAB)
    successor = np.random.default_rng(12345).integers(0, VOCAB, size=VOCAB)
    draws = perm[np.minimum(rng.zipf(1.1, size=(n_windows, st.WINDOW)), VOCAB) - 1]
    follow = rng.random((n_windows, st.WINDOW)) < 0.5
    out = draws.copy()
    for t in range(1, st.WINDOW):  # a loop over 101 positions, vectorised over windows
        out[:, t] = np.where(follow[:, t], successor[out[:, t - 1]], draws[:, t])
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--train_tokens", type=int, default=5_000_000)
    p.add_argument("--eval_tokens", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3, help="runs of each phase; the best of each counts")
    args = p.parse_args(argv)
    train = zipf_windows(args.train_tokens // st.PRED_PER_WINDOW, 0)
    test = zipf_windows(args.eval_tokens // st.PRED_PER_WINDOW, 1)
    n_train, n_eval = train.shape[0] * st.PRED_PER_WINDOW, test.shape[0] * st.PRED_PER_WINDOW
    lm = ngram.KneserNey(args.order, VOCAB)
    # the reference: the highest-order packed keys of the same windows, sorted once (keys built outside the timing)
    ext = lm.extended(train)
    a = args.order + max(1, args.order - 2)
    ctx = lm.ctx_key(ext, args.order, a, ext.shape[1]) if args.order > 1 else np.uint64(0)
    keys = ((ctx << np.uint64(16)) | ext[:, a:]).ravel() if args.order <= 4 else ctx.ravel()
    del ext, ctx
    # the machine is shared: each phase runs --repeat times, interleaved, and the best of each counts
    t_sort, t_train, t_eval = [], [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        np.sort(keys)
        t_sort.append(time.perf_counter() - t0)
        lm = ngram.KneserNey(args.order, VOCAB)
        t0 = time.perf_counter()
        lm.fit(train)
        t_train.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        nll = lm.window_nll(test)
        t_eval.append(time.perf_counter() - t0)
    del keys
    runs = ", ".join(f"{(a + b) / s:.2f}" for s, a, b in zip(t_sort, t_train, t_eval))
    t_sort, t_train, t_eval = min(t_sort), min(t_train), min(t_eval)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; order {args.order}; train {n_train:,} tokens, eval {n_eval:,} tokens; "
          f"{len(lm.orders[args.order]):,} distinct {args.order}-grams, {lm.n_entries():,} entries in all; "
          f"test loss {nll.mean():.3f}")
    print(f"np.sort of the {n_train:,} packed keys: {t_sort:.2f} s")
    print(f"train {t_train:.2f} s ({n_train / t_train:,.0f} tok/s) + eval {t_eval:.2f} s ({n_eval / t_eval:,.0f} tok/s)"
          f" = {t_train + t_eval:.2f} s = {(t_train + t_eval) / t_sort:.2f} x the sort (goal <= 3; best of {args.repeat}"
          f" of each; the single runs' ratios: {runs})")


if __name__ == "__main__":
    main()
