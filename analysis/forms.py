"""Comparing the forms of the law: cross-validation over subset seeds (all runs of a seed held out together),
the held-out error of each form and, per pair of forms, the difference with a bootstrap interval over runs;
'undecided' when it contains 0."""
import math

import numpy as np

from analysis import mixing
from analysis.laws import FORMS, Law, _minimize, _pct, _subset

CV_TOL = (1e-12, 1e-9)     # of the cross-validation fits (from the grid of starts)


def make_law(form, n_cats, with_n):
    """A dilution form (FORMS) or a competing mixing law (analysis/mixing.py: exponential, multiplicative, effective_data)."""
    return Law(form, n_cats, with_n) if form in FORMS else mixing.make_law(form, n_cats, with_n)


def cv_errors(d, forms, with_n):
    """Squared held-out log errors per point and form; folds = subset seeds (a seed's runs held out
    together). Points of a category absent from a fold's training part cannot be predicted and are
    skipped for every form alike."""
    folds = np.unique(d["fold"])
    if len(folds) < 2:  # one subset seed: fold the runs instead (every 5th run)
        fold = d["run"] % 5
    else:
        fold = d["fold"]
    err = {f: np.full(len(d["L"]), np.nan) for f in forms}
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        dt = _subset(d, train)
        present = np.isin(d["cat"], np.unique(dt["cat"])) & test
        if not present.any() or len(np.unique(dt["D"])) < 2:
            continue
        # re-index categories for the training part
        cat_map = {c: i for i, c in enumerate(np.unique(dt["cat"]))}
        dt["cat"] = np.array([cat_map[c] for c in dt["cat"]])
        dt["categories"] = [d["categories"][c] for c in cat_map]
        dv = _subset(d, present)
        dv["cat"] = np.array([cat_map[c] for c in dv["cat"]])
        for f in forms:
            law = make_law(f, len(dt["categories"]), with_n)
            r = _minimize(law, dt, law.starts(dt), tol=CV_TOL)
            if r is None:  # the law had no starting point on this fold (noisy data): its points stay NaN, skipped for every form
                continue
            err[f][present] = (np.log(law.predict(r.x, dv)) - np.log(dv["L"])) ** 2
    return err


def compare_forms(d, forms, with_n, n_boot, seed, err=None):
    """Held-out RMSE per form and, per pair, the difference of mean squared held-out errors with a
    bootstrap interval over runs: 'A' or 'B' when the interval excludes 0, 'undecided' otherwise. `err`:
    cv_errors already computed for (at least) these forms."""
    err = cv_errors(d, forms, with_n) if err is None else err
    ok = np.all([np.isfinite(err[f]) for f in forms], axis=0)
    rng = np.random.default_rng(seed)
    runs = np.unique(d["run"][ok])
    per_run = {f: np.array([err[f][ok & (d["run"] == r)].sum() for r in runs]) for f in forms}
    n_pts = np.array([(ok & (d["run"] == r)).sum() for r in runs])
    # the forms differ in how K matters: a comparison without two K values held out, each in >= 2 runs, has
    # no K contrast to decide on (one run at K = 3 beside specialists decided 'shared best' on a dilution truth)
    run_K = {int(r): int(k) for r, k in zip(d["run"][ok], d["K"][ok])}
    n_K = sum(n >= 2 for n in np.unique(list(run_K.values()), return_counts=True)[1]) if run_K else 0
    idx = [rng.integers(0, len(runs), len(runs)) for _ in range(n_boot if len(runs) > 1 and n_K >= 2 else 0)]
    out = {"method": "cross-validation over subset seeds (a seed's runs held out together)",
           "n_points": int(ok.sum()), "n_skipped": int((~ok).sum()), "rmse": {}, "pairs": [],
           "why_no_interval": None if idx or not n_boot else
           f"held-out runs at {n_K} K value(s) with >= 2 runs each: no K contrast to compare the forms on"}
    if not ok.any():  # nothing could be predicted (each category in one fold only): no comparison
        out["rmse"] = {f: {"estimate": None, "ci95": [None, None]} for f in forms}
        out["pairs"] = [{"a": a, "b": b, "mse_difference": None, "ci95": [None, None], "better": "undecided"}
                        for i, a in enumerate(forms) for b in forms[i + 1:]]
        return out
    for f in forms:
        boots = [math.sqrt(per_run[f][i].sum() / n_pts[i].sum()) for i in idx]
        out["rmse"][f] = {"estimate": math.sqrt(per_run[f].sum() / n_pts.sum()),
                          "ci95": _pct(boots)}
    for i, a in enumerate(forms):
        for b in forms[i + 1:]:
            diff = [(per_run[a][j].sum() - per_run[b][j].sum()) / n_pts[j].sum() for j in idx]
            est = (per_run[a].sum() - per_run[b].sum()) / n_pts.sum()
            ci = _pct(diff)
            # float noise between identical predictions is not a difference
            better = ("undecided" if ci[0] is None or ci[0] <= 1e-12 and ci[1] >= -1e-12 else
                      (a if ci[1] < 0 else b))
            out["pairs"].append({"a": a, "b": b, "mse_difference": float(est), "ci95": ci, "better": better})
    return out


def preferred_form(comparison):
    """The form no other form beats (by its interval); None when that is undecided."""
    forms = list(comparison["rmse"])
    beaten = {f: False for f in forms}
    wins = {f: 0 for f in forms}
    for p in comparison["pairs"]:
        if p["better"] == p["a"]:
            beaten[p["b"]] = True
            wins[p["a"]] += 1
        elif p["better"] == p["b"]:
            beaten[p["a"]] = True
            wins[p["b"]] += 1
    top = [f for f in forms if not beaten[f]]
    return top[0] if len(top) == 1 else None
