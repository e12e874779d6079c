"""Comparing the forms of the law: cross-validation over subset seeds (all runs of a seed held out together),
the held-out error of each form and, per pair of forms, the difference with a t interval over the folds;
'undecided' unless Holm across the pairs rejects 'no difference'."""
import math

import numpy as np

from analysis import inference, mixing
from analysis.laws import FORMS, Law, _from_start, _minimize, _subset, best_of
from analysis.workers import run_jobs

CV_TOL = (1e-12, 1e-9)     # of the cross-validation fits (from the grid of starts)


def make_law(form, n_cats, with_n):
    """A dilution form (FORMS) or a competing mixing law (analysis/mixing.py: exponential, multiplicative, effective_data)."""
    return Law(form, n_cats, with_n) if form in FORMS else mixing.make_law(form, n_cats, with_n)


def cv_errors(d, forms, with_n, jobs=1):
    """Squared held-out log errors per point and form; folds = subset seeds (a seed's runs held out
    together). Points of a category absent from a fold's training part cannot be predicted and are
    skipped for every form alike. jobs > 1: each (fold, form)'s starts are fitted in the bootstrap's worker
    processes (the same fits, the same errors)."""
    folds = np.unique(d["fold"])
    if len(folds) < 2:  # one subset seed: fold the runs instead (every 5th run)
        fold = d["run"] % 5
    else:
        fold = d["fold"]
    err = {f: np.full(len(d["L"]), np.nan) for f in forms}
    fits = []  # (form, law, training part, held-out part, points held out, starts)
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
            fits.append((f, law, dt, dv, present, law.starts(dt)))
    if jobs > 1:  # every start of every fit at once: the pool stays busy across forms of unequal cost
        flat = run_jobs(_from_start, [(law, dt, th0, CV_TOL) for _, law, dt, _, _, st in fits for th0 in st], jobs)
        results, i = [], 0
        for *_, st in fits:
            results.append(best_of(flat[i:i + len(st)]))
            i += len(st)
    else:
        results = [_minimize(law, dt, st, tol=CV_TOL) for _, law, dt, _, _, st in fits]
    for (f, law, _, dv, present, _), r in zip(fits, results):
        if r is None:  # the law had no starting point on this fold (noisy data): its points stay NaN, skipped for every form
            continue
        err[f][present] = (np.log(law.predict(r.x, dv)) - np.log(dv["L"])) ** 2
    return err


def cv_folds(d):
    """The cross-validation's folds (cv_errors): subset seeds, or every 5th run with one subset seed."""
    return d["fold"] if len(np.unique(d["fold"])) >= 2 else d["run"] % 5


def _ratio_t(num, den, level=0.95):
    """sum(num) / sum(den) over units (folds) with a t interval (units - 1 df) from the linearised ratio
    estimator: var = n / (n - 1) * sum (num_f - R den_f)^2 / (sum den)^2. Returns (estimate, se, df)."""
    n = len(num)
    R = float(num.sum() / den.sum())
    if n < 2:
        return R, None, 0
    se = math.sqrt(n / (n - 1) * float(((num - R * den) ** 2).sum())) / float(den.sum())
    return R, se, n - 1


def compare_forms(d, forms, with_n, n_boot, seed, err=None):
    """Held-out RMSE per form and, per pair, the difference of mean squared held-out errors with an interval
    over the folds (the independent units: a fold's errors share one fit, and a subset seed's runs its
    noise), a t interval of the ratio estimator with folds - 1 df (inference.guard applied). A pair's
    'better' is decided with Holm across the comparison's pairs (one family); 'undecided' otherwise. `err`:
    cv_errors already computed for (at least) these forms. n_boot and seed: kept for the callers (n_boot 0:
    no intervals)."""
    from scipy.stats import t as t_dist
    err = cv_errors(d, forms, with_n) if err is None else err
    ok = np.all([np.isfinite(err[f]) for f in forms], axis=0)
    fold = cv_folds(d)
    units = np.unique(fold[ok])
    per_fold = {f: np.array([err[f][ok & (fold == u)].sum() for u in units]) for f in forms}
    n_pts = np.array([(ok & (fold == u)).sum() for u in units], dtype=float)
    # the forms differ in how K matters: a comparison without two K values held out, each in >= 2 runs, has
    # no K contrast to decide on (one run at K = 3 beside specialists decided 'shared best' on a dilution truth)
    run_K = {int(r): int(k) for r, k in zip(d["run"][ok], d["K"][ok])}
    n_K = sum(n >= 2 for n in np.unique(list(run_K.values()), return_counts=True)[1]) if run_K else 0
    can = bool(n_boot) and len(units) >= inference.MIN_UNITS and n_K >= 2
    out = {"method": "cross-validation over subset seeds (a seed's runs held out together); intervals over "
                     f"the {len(units)} folds (t, folds - 1 df); Holm across the pairs",
           "n_points": int(ok.sum()), "n_skipped": int((~ok).sum()), "rmse": {}, "pairs": [], "n_folds": len(units),
           "why_no_interval": None if can or not n_boot else
           (f"held-out runs at {n_K} K value(s) with >= 2 runs each: no K contrast to compare the forms on" if n_K < 2
            else f"{len(units)} fold(s): an interval needs >= {inference.MIN_UNITS}")}
    if not ok.any():  # nothing could be predicted (each category in one fold only): no comparison
        out["rmse"] = {f: {"estimate": None, "ci95": [None, None]} for f in forms}
        out["pairs"] = [{"a": a, "b": b, "mse_difference": None, "ci95": [None, None], "p": None, "better": "undecided"}
                        for i, a in enumerate(forms) for b in forms[i + 1:]]
        return out
    for f in forms:
        mse, se, df = _ratio_t(per_fold[f], n_pts)
        ci = [None, None]
        if can and se:
            h = float(t_dist.ppf(0.975, df)) * se
            ci = inference.guarded([math.sqrt(max(mse - h, 0.0)), math.sqrt(mse + h)], math.sqrt(mse))
        out["rmse"][f] = {"estimate": math.sqrt(mse), "ci95": ci}
    for i, a in enumerate(forms):
        for b in forms[i + 1:]:
            est, se, df = _ratio_t(per_fold[a] - per_fold[b], n_pts)
            ci, p = [None, None], None
            # float noise between identical predictions is not a difference
            if can and se and se > 1e-12 * max(abs(est), 1e-300) and (abs(est) > 1e-12 or se > 1e-12):
                h = float(t_dist.ppf(0.975, df)) * se
                ci = inference.guarded([est - h, est + h], est)
                p = float(2 * t_dist.sf(abs(est) / se, df)) if ci[0] is not None else None
            out["pairs"].append({"a": a, "b": b, "mse_difference": float(est), "ci95": ci, "p": p})
    decide_pairs(out["pairs"])
    return out


def decide_pairs(pairs):
    """Each pair's 'better': the form with the lower held-out error when Holm across the pairs (one family)
    rejects 'no difference'; 'undecided' otherwise (also for pairs without an interval)."""
    tested = [p for p in pairs if p.get("p") is not None and not p.get("equivalent")]
    for p in pairs:
        p["better"], p["holm_rejected"] = "undecided", None
    for p, rej in zip(tested, inference.holm([p["p"] for p in tested])):
        p["holm_rejected"] = bool(rej)
        if rej:
            p["better"] = p["a"] if p["mse_difference"] < 0 else p["b"]
    return pairs


def preferred_form(comparison):
    """The form that beats every other (Holm-corrected pairs); None otherwise (forms.not_beaten names the set)."""
    return inference.undominated(list(comparison["rmse"]), comparison["pairs"])[0]


def not_beaten(comparison):
    """The forms no other form beats."""
    return inference.undominated(list(comparison["rmse"]), comparison["pairs"])[1]
