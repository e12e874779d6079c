"""ngram.py: modified Kneser-Ney against a plain-dictionary restatement, normalisation, a Markov source with a
known loss, and a real run directory that analyze.py reads."""
import json
import math
import subprocess
import sys
from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import given, settings, strategies as hs

import ngram
import store as st
from conftest import ROOT, make_synthetic_store, one_line_error


# ----------------------------------------------------------------------------------------------------
# the reference: modified KN written out with dictionaries and loops (the definition in ngram.py's doc)

def dict_discounts(values):
    n = Counter(min(v, 5) for v in values)
    n1, n2, n3, n4 = (n.get(r, 0) for r in (1, 2, 3, 4))
    if 0 in (n1, n2, n3):  # KenLM: no estimate without grams of adjusted count 1, 2 and 3
        return 0.5, 1.0, 1.5
    y = n1 / (n1 + 2 * n2)
    d1 = 1 - 2 * y * n2 / n1
    d2 = 2 - 3 * y * n3 / n2
    d3 = 3 - 4 * y * n4 / n3
    if not (0 < d1 <= 1 and 0 < d2 <= 2 and 0 < d3 <= 3):
        return 0.5, 1.0, 1.5
    return d1, d2, d3


class DictKN:
    def __init__(self, windows, N, V):
        self.N, self.V, self.bos = N, V, V
        raw = {k: Counter() for k in range(1, N + 1)}
        for w in windows:
            s = [self.bos] + [int(t) for t in w]
            for j in range(2, len(s)):               # targets: window positions 1 .. L-1
                for k in range(1, N + 1):
                    if j - k + 1 >= 0:
                        raw[k][tuple(s[j - k + 1:j + 1])] += 1
        self.count = {}
        for k in range(1, N + 1):
            if k == N:
                self.count[k] = dict(raw[k])
                continue
            left = defaultdict(set)
            for g in raw[k + 1]:
                left[g[1:]].add(g[0])
            self.count[k] = {g: (c if g[0] == self.bos else len(left[g])) for g, c in raw[k].items()}
        self.d, self.ctx = {}, {}
        for k in range(1, N + 1):
            self.d[k] = dict_discounts(self.count[k].values())
            ctx = defaultdict(lambda: [0, 0, 0, 0])
            for g, c in self.count[k].items():
                e = ctx[g[:-1]]
                e[0] += c
                e[min(c, 3)] += 1
            self.ctx[k] = dict(ctx)

    def prob(self, hist, w):
        """hist: every symbol before w in its window, BOS first."""
        p = 1.0 / self.V
        for k in range(1, self.N + 1):
            if len(hist) < k - 1:
                break
            h = tuple(hist[len(hist) - (k - 1):]) if k > 1 else ()
            if h not in self.ctx[k]:
                continue
            total, n1, n2, n3 = self.ctx[k][h]
            c = self.count[k].get(h + (w,), 0)
            d1, d2, d3 = self.d[k]
            disc = 0.0 if c == 0 else (d1 if c == 1 else d2 if c == 2 else d3)
            p = (max(c - disc, 0.0) + (d1 * n1 + d2 * n2 + d3 * n3) * p) / total
        return p


def corpus(seed, n_windows, length, V):
    """Windows from a sparse random Markov chain of order 2: repeats at every order, many singletons."""
    rng = np.random.default_rng(seed)
    succ = rng.integers(0, V, size=(V, V, 3))
    out = np.empty((n_windows, length), dtype=np.int64)
    for i in range(n_windows):
        a, b = rng.integers(0, V, size=2)
        for t in range(length):
            c = succ[a, b, rng.integers(3)] if rng.random() < 0.85 else rng.integers(0, V)
            out[i, t] = c
            a, b = b, c
    return out


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_exact_against_dictionary_kn(order):
    V = 9
    train, test = corpus(order, 40, 14, V), corpus(100 + order, 12, 14, V)
    lm = ngram.KneserNey(order, V).fit(train)
    ref = DictKN(train, order, V)
    nll = lm.window_nll(test)
    want = np.array([[-math.log(ref.prob([V] + list(w[:i]), int(w[i]))) for i in range(1, len(w))] for w in test])
    np.testing.assert_allclose(nll, want, rtol=0, atol=1e-9)
    # the discounts are estimated, not fixed (a constant discount would pass a weaker test)
    assert any(len(set(np.round(t.d, 6))) > 1 for t in lm.orders.values())


@pytest.mark.parametrize("order", [3, 4])
def test_odd_counts_take_fallback_discounts_and_every_token_keeps_mass(order):
    """Many grams seen exactly 4 times, few 3 times: D3+ estimates below 0. A clipped zero discount gave a
    context no mass for unseen tokens (infinite test loss, seen on the sample corpus); the fallback keeps
    every probability positive and the model equal to the dictionary reference."""
    V = 9
    base = corpus(7, 30, 12, V)
    train = np.concatenate([np.repeat(base[:24], 4, axis=0), np.repeat(base[24:27], 3, axis=0), base[27:]])
    lm = ngram.KneserNey(order, V).fit(train)
    assert any(np.array_equal(t.d, ngram.FALLBACK_DISCOUNTS) for t in lm.orders.values())
    test = corpus(8, 10, 12, V)
    nll = lm.window_nll(test)
    assert np.all(np.isfinite(nll))
    ref = DictKN(train, order, V)
    want = [[-math.log(ref.prob([V] + list(w[:i]), int(w[i]))) for i in range(1, len(w))] for w in test]
    np.testing.assert_allclose(nll, want, rtol=0, atol=1e-9)


def _counts(n1, n2, n3, n4, n5=0):
    return np.repeat([1, 2, 3, 4, 5], [n1, n2, n3, n4, n5])


@pytest.mark.parametrize("n, want", [
    ((10, 4, 2, 1), (1 - 2 * 10 / 18 * 4 / 10, 2 - 3 * 10 / 18 * 2 / 4, 3 - 4 * 10 / 18 * 1 / 2)),  # Chen-Goodman (26)
    ((4, 2, 1, 0), (0.5, 1.25, 3.0)),        # n4 = 0: D3+ = 3 is in range, KenLM keeps the estimate
    ((3, 0, 2, 0), (0.5, 1.0, 1.5)),         # n2 = 0: a missing ratio read as 0 gave D = (1, 2, 3); KenLM falls back
    ((0, 3, 2, 1), (0.5, 1.0, 1.5)),         # n1 = 0
    ((5, 3, 0, 2), (0.5, 1.0, 1.5)),         # n3 = 0
    ((1, 1, 5, 1), (0.5, 1.0, 1.5)),         # D2 = 2 - 3 (1/3) 5 < 0: out of [0, 2]
])
def test_discounts_follow_kenlm_rule(n, want):
    """lmplz (adjust_counts.cc): estimate from n1..n4 unless one of n1, n2, n3 is zero or an estimate leaves
    [0, r]; then --discount_fallback's 0.5, 1, 1.5. Counts of 5 and more do not enter."""
    np.testing.assert_allclose(ngram.discounts(_counts(*n, n5=7)), want, rtol=0, atol=1e-12)


def test_tiny_corpus_takes_fallback_not_one_two_three(monkeypatch):
    """Issue 21: on a handful of short lines every order but the highest lacks some n_r, so KenLM uses the
    fallback discounts; the old rule kept D ~ (1, 2, 3), which drains the seen tokens' mass into the
    lower orders and doubles the perplexity on the training lines themselves."""
    V = 12
    lines = np.array([[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 9, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 10, 8],
                      [11, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 9, 6, 7, 0], [1, 2, 3, 4, 5, 6, 7, 8]])
    lm = ngram.KneserNey(3, V).fit(lines)
    for t in lm.orders.values():
        n = np.bincount(np.minimum(t.counts, 5), minlength=6)[1:4]
        if np.any(n == 0):
            np.testing.assert_array_equal(t.d, ngram.FALLBACK_DISCOUNTS)
    assert any(np.array_equal(t.d, ngram.FALLBACK_DISCOUNTS) for t in lm.orders.values())
    nll = lm.window_nll(lines)
    ref = DictKN(lines, 3, V)
    want = [[-math.log(ref.prob([V] + list(w[:i]), int(w[i]))) for i in range(1, len(w))] for w in lines]
    np.testing.assert_allclose(nll, want, rtol=0, atol=1e-9)
    ppl = math.exp(nll.mean())
    assert abs(ppl - 1.5482) < 1e-4, ppl

    def old_rule(counts):  # the rule before issue 21: a ratio with n_r = 0 read as 0, no fallback for it
        n = np.bincount(np.minimum(counts, 5), minlength=6)[1:5].astype(np.float64)
        y = n[0] / (n[0] + 2 * n[1]) if n[0] + 2 * n[1] > 0 else 0.0
        d = np.array([r - (r + 1) * y * (n[r] / n[r - 1] if n[r - 1] > 0 else 0.0) for r in (1, 2, 3)])
        return d if np.all((d > 0) & (d <= [1, 2, 3])) else ngram.FALLBACK_DISCOUNTS.copy()

    monkeypatch.setattr(ngram, "discounts", old_rule)
    old = ngram.KneserNey(3, V).fit(lines)
    np.testing.assert_array_equal(old.orders[3].d, [1.0, 2.0, 3.0])
    assert math.exp(old.window_nll(lines).mean()) > 1.9 * ppl  # 3.08: the symptom, in small


@settings(max_examples=25, deadline=None)
@given(order=hs.integers(1, 5), seed=hs.integers(0, 10_000), depth=hs.integers(0, 6))
def test_distribution_sums_to_one(order, seed, depth):
    """p(. | h) over the whole vocabulary sums to 1 for random histories: seen, unseen, at a window start
    (BOS within reach) or deep inside one."""
    V = 11
    lm = ngram.KneserNey(order, V).fit(corpus(seed % 7, 25, 10, V))
    rng = np.random.default_rng(seed)
    hist = [lm.bos] + list(rng.integers(0, V, size=depth))
    h = ([lm.pad] * (order - 1) + hist)[-(order - 1):] if order > 1 else []
    p = lm.prob(np.tile(np.array(h, dtype=np.uint64), (V, 1)), np.arange(V))
    assert np.all(p > 0)
    assert abs(p.sum() - 1.0) < 1e-12
    if order > 1:  # the same as the dictionary reference at these histories too
        ref = DictKN(corpus(seed % 7, 25, 10, V), order, V)
        np.testing.assert_allclose(p, [ref.prob(hist, w) for w in range(V)], rtol=0, atol=1e-9)


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_many_repeated_queries_in_one_call(order):
    """prob() of more queries than one sort key can index (2^16; the lookup splits them) with many repeats
    (each distinct query is searched once and spread): the same as asking them in small pieces, and as the
    dictionary reference on a sample of them."""
    V = 9
    train = corpus(order, 40, 14, V)
    lm = ngram.KneserNey(order, V).fit(train)
    rng = np.random.default_rng(order)
    n = (1 << 16) + 4_000
    hist = rng.integers(0, V, size=(n, order - 1))
    hist[: n // 4, 0] = lm.bos  # some at a window start
    tok = rng.integers(0, V, size=n)
    p = lm.prob(hist, tok)
    pieces = np.concatenate([lm.prob(hist[s:s + 997], tok[s:s + 997]) for s in range(0, n, 997)])
    np.testing.assert_array_equal(p, pieces)
    ref = DictKN(train, order, V)
    for i in rng.choice(n, 300, replace=False):
        h = [int(x) for x in hist[i]]
        h = h[h.index(lm.bos):] if lm.bos in h else [V] + h  # BOS at the start of the window
        assert abs(p[i] - ref.prob(h, int(tok[i]))) < 1e-9


def test_markov_source_bigram_loss_is_ln2():
    """First-order Markov source, two equally likely successors per state: once the counts are large the
    bigram model's test loss is the source's entropy, ln 2."""
    V, rng = 50, np.random.default_rng(0)
    succ = np.stack([rng.permutation(V)[:2] for _ in range(V)])

    def windows(n):
        out = np.empty((n, st.WINDOW), dtype=np.int64)
        cur = rng.integers(0, V, size=n)
        for t in range(st.WINDOW):
            out[:, t] = cur
            cur = succ[cur, rng.integers(0, 2, size=n)]
        return out

    lm = ngram.KneserNey(2, V).fit(windows(4000))
    loss = lm.window_nll(windows(500)).mean()
    assert abs(loss - math.log(2)) < 0.01, loss
    # a unigram model cannot see the structure: its loss is far above ln 2
    assert ngram.KneserNey(1, V).fit(windows(500)).window_nll(windows(200)).mean() > 2 * math.log(2)


# ----------------------------------------------------------------------------------------------------
# the run: the windows train.py sees, evaluate.py's schema, sweep + analyze

@pytest.fixture(scope="module")
def kn_store(outputs):
    path, _ = make_synthetic_store(outputs / "ngram_markov", n_categories=3, papers_per_split=(10, 3, 4))
    return path


def test_an_ngram_run_never_imports_torch(kn_store, tmp_path):
    """A KN run samples a neural run's windows and writes its results without torch (run_plan.py,
    exact_eval.py, the numpy sampler): importing torch costs ~1.3 CPU-s, more than a small KN run's whole
    work, and a KN pilot is hundreds of runs."""
    probe = ("import sys, ngram; ngram.main(sys.argv[1:]); "
             "print('torch loaded' if 'torch' in sys.modules else 'no torch')")
    r = subprocess.run([sys.executable, "-c", probe, "--data_dir", str(kn_store), "--categories", "math.AC", "cs.AI",
                        "--order", "2", "--token_budget", "2000", "--batch_size", "4", "--eval_windows", "4",
                        "--output_dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "no torch", r.stdout


def test_run_directory_trains_on_train_py_windows(kn_store, tmp_path, monkeypatch):
    from random_window_dataset import RandomWindowDataset, fixed_eval_windows
    run_dir = ngram.main(["--data_dir", str(kn_store), "--categories", "math.AC", "cs.AI", "--seed", "1", "--sampling", "balanced",
                          "--order", "2", "--token_budget", "2500", "--batch_size", "4", "--eval_windows", "8",
                          "--output_dir", str(tmp_path)])
    cfg = json.loads((run_dir / "run_config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    test = json.loads((run_dir / "test_results.json").read_text())
    assert cfg["model_name"] == "kn2" and summary["status"] == "complete" and summary["schedule_complete"]
    # train.py's accounting: 2,500 tokens at 400 per step -> 7 steps, 28 windows, 2,800 tokens
    assert (summary["total_steps"], cfg["train_windows"], summary["tokens_seen"]) == (7, 28, 2800)
    # the same windows train.py's loop would sample, step by step
    cats = cfg["categories"]
    ds = RandomWindowDataset(str(kn_store), "train", cats, seed=1, sampling="balanced")
    x = np.concatenate([ds.sample_batch(s, 4).numpy() for s in range(7)])
    lm = ngram.KneserNey(2, st.Store(kn_store).vocab_size).fit(x)
    assert summary["final_val_loss"] == pytest.approx(np.mean(
        [lm.window_nll(fixed_eval_windows(st.Store(kn_store), "validation", c, 8)).mean() for c in cats]),
        abs=1e-12)
    labels = np.concatenate([ds.sample_batch(s, 4, return_labels=True)[1] for s in range(7)])
    assert sum(summary["tokens_per_category"].values()) == 2800
    assert summary["tokens_per_category"][cats[0]] == 100 * int((labels == st.Store(kn_store).categories.index(cats[0])).sum())
    # evaluate.py's schema and tiling: every token but a paper's first, once
    s = st.Store(kn_store)
    for c, r in test["per_category"].items():
        ids = s.papers("test", [c])
        assert r["n_tokens"] == int((s.length[ids] - 1).clip(0).sum())
        assert r["in_training"] == (c in cats) and len(r["loss_by_position"]) == 100
    # the Markov store: in-training categories near their floor, held-out ones far above it
    o = test["overall"]
    assert o["in_training_macro_loss"] < 1.0 < o["held_out_macro_loss"]
    # rerun with --resume: complete, nothing to do; without: refused in one line
    assert ngram.main(["--data_dir", str(kn_store), "--categories", "math.AC", "cs.AI", "--seed", "1", "--sampling", "balanced", "--order", "2",
                       "--token_budget", "2500", "--batch_size", "4", "--output_dir", str(tmp_path),
                       "--run_name", run_dir.name, "--resume"]) == run_dir


def test_user_errors_are_one_line(kn_store, tmp_path, capsys):
    assert "--order" in one_line_error(ngram.main, ["--data_dir", str(kn_store), "--order", "6"], capsys)
    one_line_error(ngram.main, ["--data_dir", str(tmp_path / "none")], capsys)
    args = ["--data_dir", str(kn_store), "--order", "2", "--token_budget", "800", "--batch_size", "4",
            "--output_dir", str(tmp_path), "--run_name", "r"]
    ngram.main(args)
    assert "--resume" in one_line_error(ngram.main, args, capsys)
    other = [("3" if a == "2" else a) for a in args]  # --order 3 under the same --run_name
    assert "another run" in one_line_error(ngram.main, other + ["--resume"], capsys)


def test_valid_mask_counts_only_the_valid_targets():
    """fit(windows, valid) equals fitting the valid prefixes alone (the dictionary reference on the cut windows):
    a tiling's padded last window adds no grams."""
    V, rng = 9, np.random.default_rng(3)
    train = corpus(11, 30, 14, V)
    keep = rng.integers(2, 15, size=len(train))  # window i keeps tokens 0 .. keep_i - 1
    valid = np.arange(13)[None, :] < (keep[:, None] - 1)
    for order in (1, 3, 5):
        lm = ngram.KneserNey(order, V).fit(train, valid)
        ref = DictKN([w[:n] for w, n in zip(train, keep)], order, V)
        test = corpus(12, 5, 14, V)
        want = [[-math.log(ref.prob([V] + list(w[:i]), int(w[i]))) for i in range(1, len(w))] for w in test]
        np.testing.assert_allclose(lm.window_nll(test), want, rtol=0, atol=1e-9)


def test_baselines_kn_loss_near_the_markov_floor(kn_store):
    """baselines.py's per-category KN trigram (trained on the category alone) on the Markov store: close to
    the source's entropy, never below what the counts allow by more than noise."""
    import baselines
    from conftest import markov_entropy
    s = st.Store(kn_store)
    for c in s.categories:
        r = baselines.kn_baseline(s, c)
        assert markov_entropy() - 0.1 < r["kn3_test_loss"] < markov_entropy() + 0.25, (c, r)
        assert r["kn3_test_bpb"] > 0


@pytest.mark.slow  # a sweep of 4 runs, then an analysis
def test_ngram_plan_runs_through_sweep_and_analyze(kn_store, tmp_path, capsys):
    """A plan with `script: ngram.py` runs through sweep.py (subprocesses, run ids, status) and analyze.py
    reads its runs unchanged, as model kn2."""
    import csv
    import yaml
    import analyze
    import sweep
    plan = {"name": "kn", "script": "ngram.py", "store": {"data_dir": str(kn_store)},
            "grid": {"categories": [["math.AC"], ["math.AC", "cs.CV", "cs.AI"]], "seed": [0],
                     "token_budget": [2000, 6000]},
            "fixed": {"order": 2, "sampling": "balanced", "batch_size": 4, "eval_windows": 4}}
    p = tmp_path / "kn.yaml"
    p.write_text(yaml.safe_dump(plan))
    out = tmp_path / "sweep"
    assert "ngram.py" in " ".join(sweep.train_command(sweep.load_plan(p), out, "r", {}))
    sweep.main(["run", str(p), "--out", str(out), "--parallel", "2"])
    assert sweep.main(["status", str(p), "--out", str(out)])["complete"] == 4
    res = analyze.main([str(out), "--n_boot", "0", "--jobs", "1", "--no_baselines"])
    rows = list(csv.DictReader(open(res / "runs.csv")))
    assert len(rows) == 4 * 3 and {r["model"] for r in rows} == {"kn2"} and not any(r["excluded"] for r in rows)
    assert "H2" in (res / "report.md").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**plan, "script": "rm.py"}))
    assert "script" in one_line_error(sweep.main, ["list", str(bad)], capsys)
