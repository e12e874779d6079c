"""analysis/inference.py, the one inference core, and the acceptance checks of issue 21: calibrated
intervals under clustered noise, through analyze.py on fabricated P1-shaped sweeps; a symmetric transfer
truth read as symmetric; no interval of zero width anywhere in fits.json.

The sweeps here come from this file's own generator (not tests/fabricate.py, not analysis/synthetic.py), so
they do not share the code's assumptions: noise is additive in nats, with a term per (seed cluster,
category) shared by every budget of the cluster, a term per run shared by its categories, and a term per
(run, category); the expected losses follow the dilution law with tokens split exactly evenly."""
import json
import math

import numpy as np
import pytest

import analyze
from analysis import inference
from analysis import transfer as tr
from conftest import fits_intervals

CATS = ["math.AC", "cs.CV", "cs.AI", "cs.SY", "math.GR", "cs.CE", "cs.PL", "cs.IT", "cs.DS", "cs.NE", "math.ST"]
ROT = ["cs.IT", "math.AC", "cs.NE", "cs.CV", "math.ST", "cs.SY", "cs.DS", "cs.AI", "cs.PL", "math.GR", "cs.CE"]
FLOOR = {c: 1.7 + 0.07 * i for i, c in enumerate(CATS)}
LAW = dict(B=35.0, beta=0.28, s=0.45)
CLUSTERED = dict(cluster=0.012, run=0.01, cell=0.006)   # SDs in nats (issue 21: 0.004-0.03)
INDEPENDENT = dict(cluster=0.0, run=0.0, cell=0.015)


def mu(c, D, K):
    """Expected test loss of category c in a K-category run of D tokens (D_c = D / K exactly)."""
    Dc = D / K
    return FLOOR[c] + LAW["B"] * (Dc ** LAW["s"] * D ** (1 - LAW["s"])) ** -LAW["beta"]


def subset(K, seed):
    return [ROT[(seed + j) % 11] for j in range(K)]


def write_run(root, rid, cats, D, seed, init_seed, losses):
    """One complete run directory in train.py's format (the files analyze.py reads)."""
    rd = root / "runs" / rid
    rd.mkdir(parents=True)
    K = len(cats)
    per = {c: int(D // K) for c in cats}
    store = "c" * 64
    ident = {"store_id": store, "categories": cats, "sampling": "balanced", "data_seed": seed, "init_seed": init_seed,
             "model": "pythia-31m", "tag_categories": False, "tokens_per_step": 32000, "total_steps": int(D // 32000),
             "learning_rate": 1e-3, "dtype": "bfloat16"}
    cfg = {"categories": cats, "K": K, "seed": seed, "init_seed": init_seed, "data_seed": seed, "sampling": "balanced",
           "tag_categories": False, "model_name": "pythia-31m", "n_params_total": 31_000_000,
           "n_params_nonembedding": 19_000_000, "token_budget": D, "token_budget_effective": D,
           "total_steps": int(D // 32000), "tokens_per_step": 32000, "store_id": store, "data_dir": "no_store",
           "identity": ident, "learning_rate": 1e-3}
    per_category = {c: {"loss": v, "perplexity": math.exp(v), "bits_per_byte": v / math.log(2) / 3.3,
                        "n_tokens": 100000, "n_papers": 100, "n_bytes": 330000, "in_training": c in cats,
                        "loss_by_position": [v] * 100} for c, v in losses.items()}
    summary = {"status": "complete", "error": None, "run_name": rid, "store_id": store, "categories": cats, "K": K,
               "steps": int(D // 32000), "total_steps": int(D // 32000), "schedule_complete": True, "tokens_seen": D,
               "tokens_per_category": per, "epochs_per_category": {c: per[c] / 3e7 for c in cats},
               "final_val_loss": float(np.mean([losses[c] for c in cats])), "best_val_loss": None,
               "wall_time_s": 1.0, "tokens_per_s": 1e6}
    test = {"store_id": store, "split": "test", "dtype": "bfloat16", "tag_categories": False,
            "per_category": per_category, "overall": {"macro_loss": float(np.mean(list(losses.values())))}}
    for name, obj in (("run_config.json", cfg), ("summary.json", summary), ("test_results.json", test)):
        (rd / name).write_text(json.dumps(obj))


def p1_like(root, rng, noise, budgets=(10e6, 30e6, 90e6), seeds=range(11), Ks=(1, 2, 3, 5), k11=(0, 1, 2),
            replicates=((1, 3), (0, 1, 2), (100, 101))):
    """plans/p1_core_31m.yaml's shape: K in Ks x subset seeds, K = 11 with k11 seeds, init-seed replicates of
    (Ks, subset seeds, init seeds); every budget of a (K, subset seed, init seed) is one seed cluster."""
    clusters = [(K, s, s) for K in Ks for s in seeds] + [(11, s, s) for s in k11]
    clusters += [(K, s, i) for K in replicates[0] for s in replicates[1] for i in replicates[2]]
    for K, s, i in clusters:
        cats = subset(K, s)
        shared = {c: rng.normal(0, noise["cluster"]) for c in CATS}   # one draw per (cluster, category)
        for D in budgets:
            run = rng.normal(0, noise["run"])
            losses = {c: (mu(c, D, K) if c in cats else FLOOR[c] + 1.5) + shared[c] + run + rng.normal(0, noise["cell"])
                      for c in CATS}
            write_run(root, f"K{K}_s{s:02d}_i{i}_d{D / 1e6:g}M", cats, D, s, i, losses)


def h2_truth(D, k_high=11):
    return float(np.mean([mu(c, D, k_high) - mu(c, D, 1) for c in CATS]))


# ----------------------------------------------------------------------------------------------------
# the core's pieces

def test_guard_refuses_what_is_not_an_interval():
    assert inference.guard([1.0, 1.0])[0] == [None, None]
    assert inference.guard([0.62, 0.62 + 4e-13])[0] == [None, None]          # "0.62 [0.62, 0.62]"
    assert inference.guard([float("nan"), 1.0])[0] == [None, None]
    assert inference.guard([2.0, 1.0])[0] == [None, None]
    assert inference.guard([0.696, 1.239], estimate=0.359)[0] == [None, None]  # estimate outside its interval
    assert inference.guard([0.1, float("inf")], estimate=0.5)[0] == [0.1, float("inf")]
    assert inference.guard([0.1, 0.2], estimate=0.15) == ([0.1, 0.2], None)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_t_mean_covers_with_few_units(n):
    """The percentile bootstrap of 2 / 3 / 5 units covered 49 / 73 / 85%; the t interval is exact for normal units."""
    rng = np.random.default_rng(n)
    cover = []
    for _ in range(1000):
        lo, hi = inference.t_mean(rng.normal(0.3, 0.02, n))["ci95"]
        cover.append(lo <= 0.3 <= hi)
    assert 0.93 <= np.mean(cover) <= 0.97, np.mean(cover)
    assert inference.t_mean([0.3])["ci95"] == [None, None] and "1 unit" in inference.t_mean([0.3])["note"]


def _cell(rng, noise, n_high=3):
    """One P1-shaped budget cell with zero true difference: K = 1 (11 categories, 3 of them with 2 more
    init seeds) against K = 11 (n_high runs holding every category)."""
    low = []
    for i, c in enumerate(CATS):
        for _ in range(3 if i < 3 else 1):
            low.append((("low", i), {c: FLOOR[c] + rng.normal(0, noise["cluster"]) + rng.normal(0, noise["run"])
                                     + rng.normal(0, noise["cell"])}))
    high = []
    for r in range(n_high):
        run = rng.normal(0, noise["run"])
        high.append((("high", r), {c: FLOOR[c] + rng.normal(0, noise["cluster"]) + run + rng.normal(0, noise["cell"])
                                   for c in CATS}))
    return high, low


@pytest.mark.parametrize("noise", [CLUSTERED, INDEPENDENT, dict(cluster=0.004, run=0.03, cell=0.004)])
def test_contrast_counts_both_sides_noise(noise):
    """The old k_contrast centred resamples on the K = 1 side: a zero-difference cell covered 69% at half width."""
    rng = np.random.default_rng(0)
    cover = [lo <= 0 <= hi for lo, hi in (inference.contrast(*_cell(rng, noise), CATS)["ci95"] for _ in range(600))]
    assert 0.91 <= np.mean(cover) <= 0.99, np.mean(cover)


def _strata_mean_replicates(ys, W):
    """A stratified mean theta = sum_h W_h mean(y_h) and its delete-one replicates (the linear case, where
    the stratified jackknife's variance is exactly sum_h W_h^2 s_h^2 / n_h, written out independently)."""
    theta = sum(w * np.mean(y) for w, y in zip(W, ys))
    reps, strata = [], []
    for h, (w, y) in enumerate(zip(W, ys)):
        for i in range(len(y)):
            reps.append(theta + w * (np.delete(y, i).mean() - np.mean(y)))
            strata.append(h)
    return theta, reps, strata


def test_stratified_jackknife_is_the_stratified_variance_of_a_linear_statistic():
    rng = np.random.default_rng(0)
    ys, W = [rng.normal(size=n) for n in (6, 3, 2)], [0.5, 0.3, 0.2]
    theta, reps, strata = _strata_mean_replicates(ys, W)
    r = inference.stratified_jackknife(theta, reps, strata)
    assert r["se"] ** 2 == pytest.approx(sum(w ** 2 * np.var(y, ddof=1) / len(y) for w, y in zip(W, ys)), rel=1e-12)
    assert [p["df"] for p in r["strata"]] == [5, 2, 1] and r["note"] is None
    # a stratum of one unit is pooled with its neighbour, and says so
    r = inference.stratified_jackknife(theta, reps + [theta + 0.1], strata + [7])
    assert r["strata"][-1]["strata"] == [2, 7] and "pooled stratum 7 with stratum 2" in r["note"]


def test_stratified_jackknife_refuses_when_a_stratums_refits_all_failed():
    """A refit that did not converge is left out; when that leaves a stratum with no replicate at all (the
    lone K = 11 cluster of P1-with-one-seed whose deletion failed, or every K = 11 deletion), the interval
    silently lost that stratum's variance: s, read mostly from K = 11, came out narrower than its own
    noise, and nothing but a count in fits.json said so. It must be refused, naming the stratum."""
    rng = np.random.default_rng(1)
    theta, reps, strata = _strata_mean_replicates([rng.normal(size=n) for n in (6, 3)], [0.1, 0.1])
    for lost in ([None], [None, None, None]):
        r = inference.stratified_jackknife(theta, reps + lost, strata + [11] * len(lost))
        assert r["ci95"] == [None, None] and "11" in r["note"] and "converge" in r["note"], r
    # one failed refit in a stratum that keeps two: an interval, with the failure said
    r = inference.stratified_jackknife(theta, reps[:-1] + [None], strata)
    assert r["ci95"][0] is not None and "1 refit" in r["note"], r


def test_paired_two_way_for_a_nonlinear_statistic():
    """The hook H2's ratio (analysis/h2ratio.py) is to use: a statistic of both sides' category levels, here
    the equal-weight difference, whose two-way bootstrap interval must hold the zero truth about as often
    as contrast()'s (conservative: the K = 1 side's noise enters twice)."""
    rng = np.random.default_rng(1)
    diff = lambda h, l, cs: float(np.mean([h[c] - l[c] for c in cs]))
    cover = []
    for k in range(60):
        est, ci, _ = inference.paired_two_way(*_cell(rng, CLUSTERED, n_high=5), CATS, diff, 100, k)
        cover.append(ci[0] is not None and ci[0] <= 0 <= ci[1])
    assert np.mean(cover) >= 0.85, np.mean(cover)


def test_best_form_must_beat_every_other():
    pairs = [{"a": "A", "b": "C", "better": "A"}, {"a": "C", "b": "B", "better": "C"},
             {"a": "A", "b": "B", "better": "undecided"}]
    assert inference.undominated(["A", "B", "C"], pairs) == (None, ["A"])
    pairs[2]["better"] = "A"
    assert inference.undominated(["A", "B", "C"], pairs) == ("A", ["A"])


def test_one_opposite_cell_is_not_a_family_wise_rejection():
    """H2 read 'not supported: 2 budgets with the opposite sign' on a null sweep: one cell just below 0
    (p = 0.04) in a family of five is no Holm rejection."""
    cells = [{"estimate": -0.004, "ci95": [-0.0078, -0.0002], "p": 0.04}] + \
            [{"estimate": 0.001, "ci95": [-0.003, 0.005], "p": 0.6} for _ in range(4)]
    verdict, _, family = inference.direction_family(cells, True, 0.002, "budgets")
    assert verdict == "undecided" and family["size"] == 5
    cells[0]["p"] = 1e-5
    assert inference.direction_family(cells, True, 0.002, "budgets")[0] == "not supported"


# ----------------------------------------------------------------------------------------------------
# transfer: a symmetric truth

def _transfer_runs(rng, noise, t_sym, cats=CATS[:5], budgets=(1e7, 3e7, 9e7, 2.7e8, 8.1e8), pair_budget=9e7):
    """Specialists of each category (one seed cluster across its budgets) and one run per pair, with
    t_ij = t_ji = t_sym[(i, j)]; additive clustered noise in nats."""
    curve = {c: (FLOOR[c], 60 + 20 * k, 0.3 + 0.02 * k) for k, c in enumerate(cats)}
    L = lambda c, d: curve[c][0] + curve[c][1] * d ** -curve[c][2]
    runs = []
    for c in cats:
        shared = rng.normal(0, noise["cluster"])
        for b in budgets:
            runs.append({"run_id": f"s-{c}-{b:g}", "model": "m", "categories": [c], "budget": b, "seed": 0,
                         "tagged": False, "tokens": {c: b},
                         "loss": {c: L(c, b) + shared + rng.normal(0, noise["run"]) + rng.normal(0, noise["cell"])}})
    for k, i in enumerate(cats):
        for j in cats[k + 1:]:
            half, run = pair_budget / 2, rng.normal(0, noise["run"])
            t_ij = t_sym[(i, j)] if (i, j) in t_sym else t_sym[(j, i)]
            loss = {a: L(a, half + t_ij * half) + rng.normal(0, noise["cluster"]) + run
                    + rng.normal(0, noise["cell"]) for a in (i, j)}
            runs.append({"run_id": f"p-{i}-{j}", "model": "m", "categories": [i, j], "budget": pair_budget, "seed": 0,
                         "tagged": False, "tokens": {i: half, j: half}, "loss": loss})
    return runs


def test_symmetric_transfer_reads_symmetric():
    """Symmetric truth: at most 10% of pairs with t_ij - t_ji excluding 0 (after Holm), and the signed
    asymmetry's interval holds 0 (the old index excluded the truth in 12 of 12 sweeps; 11 of 11 pairs
    'excluded 0' with the noise taken from residuals as 0.0005 against 0.025)."""
    rng = np.random.default_rng(3)
    total_sd = math.sqrt(sum(v ** 2 for v in CLUSTERED.values()))
    decided, pairs, held = 0, 0, 0
    for sweep in range(4):
        cats = CATS[:5]
        t_sym = {(i, j): rng.uniform(0.1, 0.8) for k, i in enumerate(cats) for j in cats[k + 1:]}
        runs = _transfer_runs(rng, CLUSTERED, t_sym, cats)
        # the noise floor of such a sweep as an SD of log loss (analyze.py's noise_floor on replicates)
        res = tr.transfer_matrix(runs, n_boot=150, seed=sweep, noise_log_sd=total_sd / 2.0)
        a = res["asymmetry"]
        decided += a["decided"]
        pairs += len(a["pairs"])
        lo, hi = a["mean_diff_ci"]
        held += lo is not None and lo <= 0 <= hi
    assert pairs >= 30 and decided <= 0.1 * pairs, (decided, pairs)
    assert held >= 3, held


def test_three_specialist_budgets_give_no_interval_without_noise():
    """3 budgets, 3-parameter curves, no replicates: the residuals are 0 and no noise is known: no interval
    (it printed '0.62 [0.62, 0.62]', width 4e-9)."""
    rng = np.random.default_rng(5)
    cats = CATS[:3]
    runs = _transfer_runs(rng, CLUSTERED, {(i, j): 0.5 for i in cats for j in cats}, cats, budgets=(1e7, 9e7, 8.1e8))
    res = tr.transfer_matrix(runs, n_boot=50)
    assert res["t"] and all(ci == [None, None] for ci in res["ci"].values())
    assert "interpolates" in res["noise_source"] and res["asymmetry"]["mean_diff_ci"] == [None, None]


# ----------------------------------------------------------------------------------------------------
# through analyze.py

@pytest.mark.slow  # full analyses of several fabricated sweeps (~30 CPU-s): the fast loop stays under 200 s
def test_no_zero_width_interval_in_fits_json_one_run_per_k(tmp_path):
    """One run per K (K = 1 specialists of every category), 3 specialist budgets: every interval fits.json
    holds has lo <= hi and non-zero width (missing ends are [null, null])."""
    p1_like(tmp_path, np.random.default_rng(0), CLUSTERED, seeds=(0,), Ks=(2, 3, 5), k11=(0,), replicates=((), (), ()))
    p1_like(tmp_path, np.random.default_rng(1), CLUSTERED, seeds=range(11), Ks=(1,), k11=(), replicates=((), (), ()))
    analyze.main([str(tmp_path), "--n_boot", "20", "--jobs", "1", "--no_baselines"])
    fits = json.loads((tmp_path / "analysis" / "fits.json").read_text())
    found = list(fits_intervals(fits))
    assert len(found) > 20
    for where, (lo, hi) in found:
        if lo is None or hi is None:
            assert lo is None and hi is None, where
            continue
        lo, hi = float(lo), float(hi)  # '+-inf' are strings in fits.json
        assert lo <= hi and hi - lo > 1e-12 * max(1.0, abs(lo) if math.isfinite(lo) else 1.0), (where, lo, hi)


def _h2_cells(root, through_analyze):
    """H2's cells of a sweep: from analyze.py's fits.json, or from analyze.py's own contrast on the rows it
    reads (hypotheses.k_contrast with analyze.py's defaults: seed 0, margin 0.02) without the fits no H2 cell
    reads (a verdicts-only analysis is ~6 CPU-s a sweep; the test checks both ways agree where it runs both)."""
    from analysis.hypotheses import k_contrast
    from analysis.runs import collect_runs, run_rows
    cells = k_contrast(run_rows(collect_runs(root)), "in", 0, 0, 0.02, smaller_is_lower=False)[0]
    if through_analyze:
        analyze.main([str(root), "--n_boot", "0", "--jobs", "1", "--no_baselines", "--verdicts_only"])
        fits = json.loads((root / "analysis" / "fits.json").read_text())
        assert json.loads(json.dumps(cells)) == fits["h2"]  # the shortcut is analyze.py's H2, bit for bit
    return cells


@pytest.mark.slow
def test_h2_intervals_hold_the_truth_through_analyze(tmp_path):
    """Six P1-shaped sweeps (3 budgets each: 18 H2 cells), three with independent and three with clustered
    noise: H2's intervals hold the equal-weight truth in >= 15 of 18 cells (the old ones: 8 of 18). The first
    sweep of each noise goes through analyze.py, the others through its contrast (checked equal there)."""
    held, cells = 0, 0
    for k, noise in enumerate([INDEPENDENT] * 3 + [CLUSTERED] * 3):
        root = tmp_path / f"sweep{k}"
        p1_like(root, np.random.default_rng(100 + k), noise)
        for t in _h2_cells(root, through_analyze=k in (0, 3)):
            cells += 1
            lo, hi = t["ci95"]
            held += lo is not None and lo <= h2_truth(t["D"]) <= hi
    assert cells == 18 and held >= 15, (held, cells)
