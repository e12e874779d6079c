"""The arrays a law fit reads (analysis/laws.py), from analyze.py's run rows: the points a fit keeps (DATA_FILTER),
in an order fixed by their content, on tokens seen or, where repetition is modelled, on data-constrained
scaling's effective tokens (effective_tokens, R_STAR)."""
import numpy as np

import store as st
from analysis.inference import seed_cluster
from analysis.runs import used

DATA_FILTER = ("complete runs whose schedule ran to its end, finite test results, in-training categories, "
               "untagged runs, the final checkpoint's exact test loss")
R_STAR = 15.4  # Muennighoff et al. 2023 (arXiv:2305.16264): repeats of a token lose value with this decay constant


def effective_tokens(Dc, epochs, r_star=R_STAR):
    """Data-constrained scaling's effective tokens: U unique tokens seen R = epochs - 1 extra times are worth
    U + U R* (1 - exp(-R / R*)); at most one epoch (or epochs unknown), every token counts once."""
    Dc = np.asarray(Dc, dtype=float)
    ep = np.asarray([np.nan if e is None else e for e in np.atleast_1d(epochs)], dtype=float).reshape(Dc.shape)
    rep = np.isfinite(ep) & (ep > 1)
    U = np.where(rep, Dc / np.where(rep, ep, 1.0), Dc)
    R = np.where(rep, ep - 1.0, 0.0)
    return np.where(rep, U + U * r_star * (1 - np.exp(-R / r_star)), Dc)


def _effective_run_totals(rows, r_star):
    """{run_id: the run's effective total D'}: its tokens minus what repetition took from each in-training
    category (D - sum_c (D_c - D'_c)). From every in-training row of the run, not only those a fit keeps,
    so that a category dropped from a fit (say, a non-finite test loss) still counts in its run's total."""
    lost = {}
    for r in used(rows):
        if r["in_training"] and (r["tokens_category"] or 0) > 0:
            eff = float(effective_tokens([r["tokens_category"]], [r["epochs_category"]], r_star)[0])
            lost[r["run_id"]] = lost.get(r["run_id"], 0.0) + r["tokens_category"] - eff
    return lost


def fit_data(rows, where=None, r_star=None):
    """Arrays for the fits: in-training categories of included, untagged runs (and `where`, if given).
    With r_star, on effective tokens (repetition-aware): D_c becomes D'_c (effective_tokens, from the
    category's epochs in the run: U = D_c / epochs) and D the run's effective total D' = D - sum_c (D_c - D'_c),
    i.e. the sum of D'_c over its categories — the run's data as the law values it, so that X = D'_c^s D'^(1-s)
    is the same law on the data that counts. The tokens seen stay in D_seen / Dc_seen (identification reads
    the design from them)."""
    use = [r for r in used(rows) if r["in_training"] and not r["tagged"] and (r["tokens_category"] or 0) > 0
           and (where is None or where(r))]
    # points in an order fixed by their content, not by run names or directory order: on a flat objective
    # the optimiser's path (float sums in another order) would otherwise pick another point of the valley
    use.sort(key=lambda r: (str(r["model"]), r["K"], float(r["token_budget_planned"] or 0), r["category"],
                            str(r["seed"]), str(r["init_seed"]), r["test_loss"]))
    cats = sorted({r["category"] for r in use}, key=lambda c: st.CATEGORIES.index(c) if c in st.CATEGORIES else 99)
    runs = sorted({r["run_id"] for r in use})
    seeds = sorted({str(r["seed"]) for r in use})
    clusters = sorted({seed_cluster(r) for r in use}, key=str)
    out = {"L": np.array([r["test_loss"] for r in use], dtype=float),
            "D": np.array([r["tokens_seen"] for r in use], dtype=float),
            "Dc": np.array([r["tokens_category"] for r in use], dtype=float),
            "N": np.array([r["n_params_nonembedding"] or 1 for r in use], dtype=float),
            "cat": np.array([cats.index(r["category"]) for r in use], dtype=int),
            "run": np.array([runs.index(r["run_id"]) for r in use], dtype=int),
            "budget": np.array([r["token_budget_planned"] for r in use], dtype=float),
            "K": np.array([r["K"] for r in use], dtype=int),
            "fold": np.array([seeds.index(str(r["seed"])) for r in use], dtype=int),
            # the seed cluster (all budgets of one K, subset seed, init seed): the bootstrap's unit
            "cluster": np.array([clusters.index(seed_cluster(r)) for r in use], dtype=int),
            "epochs": np.array([np.nan if r["epochs_category"] is None else r["epochs_category"] for r in use], dtype=float),
            "categories": cats, "runs": runs}
    if r_star is not None:
        lost = _effective_run_totals(rows, r_star)
        out["D_seen"], out["Dc_seen"] = out["D"], out["Dc"]
        out["Dc"] = effective_tokens(out["Dc_seen"], out["epochs"], r_star)
        out["D"] = out["D_seen"] - np.array([lost.get(r["run_id"], 0.0) for r in use])
        out["r_star"] = float(r_star)
    return out
