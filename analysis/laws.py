"""Laws and fitting (EXPERIMENT_PLAN.md, H3): the dilution / disjoint / shared law with its Huber objective
and analytic gradient, L-BFGS-B from a grid of starts, the bootstrap over seed clusters (resampled within each
K, refitted from the point estimate and a second start, in a pool of processes), the 95% intervals from a
delete-one-seed-cluster jackknife stratified by K (jackknife_intervals), and fit_law, which puts them together
(with analysis/identifiability.py's parameters the design cannot pin) on the arrays of analysis/law_data.py.
Also the percentile intervals and how intervals are printed, shared by the modules that decide the hypotheses."""
import math

import numpy as np

from analysis import progress
from analysis.huber import HUBER_DELTA, huber
from analysis.identifiability import identification
from analysis.inference import cluster_counts, guarded, stratified_jackknife
from analysis.law_data import DATA_FILTER
from analysis.workers import run_jobs

FORMS = {"dilution": None, "disjoint": 1.0, "shared": 0.0}  # form -> fixed s (None: free)
BOOT_TOL = (1e-9, 1e-6)    # (ftol, gtol) of the bootstrap refits, relative to the objective's scale


# ----------------------------------------------------------------------------------------------------
# fitting

class Law:
    """L = E_cat + B * X^-beta [+ A * N^-alpha], X = Dc^s * D^(1-s); parameters in an unconstrained-ish vector
    [log E_0.., log B, beta, (s), (log A, alpha)] with box bounds for L-BFGS-B."""

    def __init__(self, form, n_cats, with_n):
        self.form, self.C, self.with_n = form, n_cats, with_n
        self.fixed_s = FORMS[form]
        self.names = ["logE"] * n_cats + ["logB", "beta"] + (["s"] if self.fixed_s is None else []) + \
            (["logA", "alpha"] if with_n else [])

    def unpack(self, th):
        C = self.C
        out = {"logE": th[:C], "logB": th[C], "beta": th[C + 1]}
        i = C + 2
        if self.fixed_s is None:
            out["s"] = th[i]
            i += 1
        else:
            out["s"] = self.fixed_s
        if self.with_n:
            out["logA"], out["alpha"] = th[i], th[i + 1]
        return out

    def predict(self, th, d):
        p = self.unpack(th)
        logX = p["s"] * np.log(d["Dc"]) + (1 - p["s"]) * np.log(d["D"])
        pred = np.exp(p["logE"][d["cat"]]) + np.exp(p["logB"] - p["beta"] * logX)
        if self.with_n:
            pred = pred + np.exp(p["logA"] - p["alpha"] * np.log(d["N"]))
        return pred

    def _logs(self, d):
        """(log D, log D_c, log L, log N) of the data, computed once per data arrays: a fit evaluates the
        objective 10^2-10^4 times on the same arrays (the same numbers as np.log on each call)."""
        c = getattr(self, "_log_cache", None)
        if c is None or c[0] is not d["D"] or c[1] is not d["Dc"] or c[2] is not d["L"] or c[3] is not d["N"]:
            c = self._log_cache = (d["D"], d["Dc"], d["L"], d["N"],
                                   np.log(d["D"]), np.log(d["Dc"]), np.log(d["L"]), np.log(d["N"]))
        return c[4:]

    def objective(self, th, d, w=None):
        """Huber(log pred - log L) summed (weighted by bootstrap multiplicities w), and its gradient. Written
        for speed (the bootstrap's refits are most of analyze.py's time): the logs of the data cached, the
        parameters read in place; every float operation as before, in the same order (bit-identical)."""
        C = self.C
        logD, logDc, logL, logN = self._logs(d)
        i = C + 2
        if self.fixed_s is None:
            s = th[i]
            i += 1
        else:
            s = self.fixed_s
        beta = th[C + 1]
        logX = s * logDc + (1 - s) * logD
        E = np.exp(th[:C][d["cat"]])
        dterm = np.exp(th[C] - beta * logX)
        pred = E + dterm
        if self.with_n:
            nterm = np.exp(th[i] - th[i + 1] * logN)
            pred = pred + nterm
        hub, dh = huber(np.log(pred) - logL)
        dh = dh / pred
        if w is not None:
            hub, dh = hub * w, dh * w
        g = np.zeros_like(th)
        g[:C] = np.bincount(d["cat"], weights=dh * E, minlength=C)
        ddt = dh * dterm
        g[C] = ddt.sum()
        g[C + 1] = (ddt * -logX).sum()
        if self.fixed_s is None:
            g[C + 2] = (ddt * -beta * (logDc - logD)).sum()
        if self.with_n:
            g[i] = (dh * nterm).sum()
            g[i + 1] = (dh * nterm * -logN).sum()
        return float(hub.sum()), g

    def bounds(self, d):
        lmax = math.log(max(d["L"].max(), 1e-3))
        b = [(math.log(1e-4), lmax)] * self.C + [(-50.0, 200.0), (1e-3, 3.0)]
        if self.fixed_s is None:
            b.append((0.0, 1.0))
        if self.with_n:
            b += [(-50.0, 200.0), (1e-3, 3.0)]
        return b

    def starts(self, d):
        """Chinchilla-style grid of initial points around the data's scale."""
        Lc = np.array([d["L"][d["cat"] == c].min() if np.any(d["cat"] == c) else d["L"].min() for c in range(self.C)])
        logX0 = float(np.median(np.log(d["D"])))
        out = []
        for e_frac in (0.5, 0.85):
            for beta in (0.1, 0.3, 0.7):
                for s in ((0.25, 0.75) if self.fixed_s is None else (None,)):
                    th = list(np.log(e_frac * Lc)) + [math.log(max(np.mean(d["L"]) * (1 - e_frac), 1e-3)) + beta * logX0, beta]
                    if s is not None:
                        th.append(s)
                    if self.with_n:
                        th += [math.log(max(0.1 * np.mean(d["L"]), 1e-3)) + 0.3 * float(np.median(np.log(d["N"]))), 0.3]
                    out.append(np.array(th, dtype=float))
        return out


def _centre(law, d):
    """(indices of log B, of beta, logX0) of the pairs _minimize optimises centred: a law's own centre_pairs(d)
    (LawBetaK: one per K), else for (log B, beta) at [C, C + 1] (Law and its nested variants) that pair at the
    data's median log D. log B and beta trade off along log B - beta log X ~ const (a ridge 2-3 orders of
    magnitude longer than wide at P1's budgets), which made L-BFGS-B crawl: ~700 evaluations per bootstrap
    refit of the H1 fit. Optimising log B0 = log B - beta logX0 instead (the amplitude at the data's median
    budget) is the same problem on a round valley: ~200 evaluations, the same minimum (notes.md)."""
    if hasattr(law, "centre_pairs"):
        return law.centre_pairs(d)
    names, C = getattr(law, "names", None), getattr(law, "C", None)
    if not isinstance(law, Law) or names is None or C is None or names[C:C + 2] != ["logB", "beta"]:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int), np.zeros(0)
    return np.array([C]), np.array([C + 1]), np.array([float(np.median(np.log(d["D"])))])


def _minimize(law, d, starts, w=None, tol=(1e-15, 1e-12), scale=None):
    """Best L-BFGS-B result over the starts. Tight tolerances by default: an optimiser stopped early is a
    known flaw of published fits (Besiroglu et al., arXiv:2404.10102). `scale` divides the objective:
    L-BFGS-B's ftol is relative to max(|f|, 1), so on an objective of ~1e-4 it acts as an absolute
    tolerance 1e4 times looser than asked; dividing by the objective's own scale makes it relative.
    Laws with (log B, beta) are optimised in log B0 = log B - beta logX0 (_centre); res.x is in the law's
    own parameters."""
    from scipy.optimize import minimize
    s = float(scale) if scale else 1.0
    iB, ib, x0 = _centre(law, d)  # the (log B, beta) pairs optimised centred: log B0 = log B - beta x0
    box = bounds = law.bounds(d)
    if len(iB):  # each log B's box becomes log B0's: (lo, hi) - beta x0 over beta's box. That box also holds
        # log B outside (lo, hi) (a parallelogram in (log B, beta)); a result there is refitted below
        bounds = list(bounds)
        for i, j, x in zip(iB, ib, x0):
            (lo, hi), (blo, bhi) = bounds[i], bounds[j]
            bounds[i] = (lo - max(bhi * x, blo * x), hi - min(bhi * x, blo * x))

    def to_law(z):
        if not len(iB):
            return z
        th = np.array(z, dtype=float)
        th[iB] = th[iB] + th[ib] * x0
        return th

    def f(z, centred=True):
        v, g = law.objective(to_law(z) if centred else z, d, w)
        if len(iB) and centred:
            g = np.array(g, dtype=float)
            g[ib] += g[iB] * x0  # d/d beta at fixed log B0: log B moves by x0 per unit of beta
        return v / s, g / s
    opts = {"maxiter": 10000, "maxfun": 20000, "ftol": tol[0], "gtol": tol[1]}
    lo_box, hi_box = np.array(box, dtype=float).T
    best = None
    for th0 in starts:
        z0 = np.array(th0, dtype=float)
        z0[iB] = z0[iB] - z0[ib] * x0
        res = minimize(f, z0, jac=True, method="L-BFGS-B", bounds=bounds, options=opts)
        res.x = to_law(res.x)
        if len(iB) and not np.all((lo_box[iB] <= res.x[iB]) & (res.x[iB] <= hi_box[iB])):  # past a log B's own
            # bound (only where it binds: never at P1's budgets): finish in the law's parameters, from the
            # nearest point in its box
            res = minimize(f, np.clip(res.x, lo_box, hi_box), args=(False,), jac=True, method="L-BFGS-B",
                           bounds=box, options=opts)
        res.fun = res.fun * s
        if best is None or res.fun < best.fun:
            best = res
    return best


def _from_start(job):
    law, d, th0, tol, w, scale = (*job, None, None)[:6]
    return _minimize(law, d, [th0], w, tol=tol, scale=scale)


def minimize_starts(law, d, starts, jobs=1, w=None, tol=(1e-15, 1e-12), scale=None):
    """_minimize(law, d, starts, w, tol, scale), its starts spread over the bootstrap's worker processes (a
    point fit from a grid of starts at tight tolerances is seconds of serial work): each start is fitted on
    its own either way, and the first of the lowest is kept, so the result is the same for any --jobs."""
    if jobs <= 1 or len(starts) < 2:
        return _minimize(law, d, starts, w, tol=tol, scale=scale)
    return best_of(run_jobs(_from_start, [(law, d, th0, tol, w, scale) for th0 in starts], jobs))


def best_of(results):
    """_minimize's choice among per-start results, in start order: the first with the lowest objective."""
    best = None
    for res in results:
        if res is not None and (best is None or res.fun < best.fun):
            best = res
    return best


def _subset(d, mask):
    return {k: (v[mask] if isinstance(v, np.ndarray) else v) for k, v in d.items()}


def named_params(law, th, categories):
    p = law.unpack(th)
    out = {f"E[{c}]": math.exp(p["logE"][i]) for i, c in enumerate(categories)}
    out["B"], out["beta"] = math.exp(p["logB"]), float(p["beta"])
    if law.fixed_s is None:
        out["s"] = float(p["s"])
    if law.with_n:
        out["A"], out["alpha"] = math.exp(p["logA"]), float(p["alpha"])
    return out


def param_names(law, categories):
    """The printed names of the parameter vector's entries, in its order (named_params' keys)."""
    return [f"E[{c}]" for c in categories] + ["B", "beta"] + (["s"] if law.fixed_s is None else []) + \
        (["A", "alpha"] if law.with_n else [])


def at_bounds(law, th, d, categories):
    """{parameter name: 'lower' | 'upper'} for the parameters the optimiser left on a bound."""
    out = {}
    for name, v, (lo, hi) in zip(param_names(law, categories), th, law.bounds(d)):
        tol = 1e-6 * max(1.0, abs(lo), abs(hi))
        if v <= lo + tol:
            out[name] = "lower"
        elif v >= hi - tol:
            out[name] = "upper"
    return out


# ----------------------------------------------------------------------------------------------------
# the bootstrap over seed clusters

MAX_DROP = 0.2  # a cluster bootstrap that loses a category in more resamples than this falls back to runs


def _unit_weights(d, unit, n_boot, seed):
    n_units = int(unit.max()) + 1 if len(unit) else 0
    unit_K = np.zeros(n_units, dtype=int)
    unit_K[unit] = d["K"]
    counts = cluster_counts(unit_K, n_boot, np.random.default_rng(seed))
    W = counts[:, unit]                                                     # (n_boot, points)
    per_cat = np.stack([W[:, d["cat"] == c].sum(axis=1) for c in range(len(d["categories"]))], axis=1) \
        if len(d["categories"]) else np.ones((n_boot, 1))
    keep = per_cat.min(axis=1) > 0
    return [w for w in W[keep]], int((~keep).sum())


def bootstrap_weights(d, n_boot, seed, with_unit=False):
    """Multiplicity weights per point for each resample: seed clusters (all budgets of one K, subset seed,
    init seed and data seed: they share initialisation and data prefix, so their noise is shared) drawn with
    replacement within each K (the design's strata). A resample in which some category has no point is
    dropped and counted (its floor would sit at the point estimate with no spread). When that would drop
    more than MAX_DROP of the resamples (a category held by one or two clusters, as in a K = 1-only fit),
    runs are resampled instead, and with_unit says so: (weights, dropped[, unit])."""
    unit = "seed cluster"
    w, dropped = _unit_weights(d, d["cluster"], n_boot, seed) if "cluster" in d else ([], n_boot + 1)
    if dropped > MAX_DROP * n_boot:
        unit = ("run (some category is held by too few seed clusters to resample them: clusters would drop "
                "it from most resamples)" if "cluster" in d else "run")
        w, dropped = _unit_weights(d, d["run"], n_boot, seed)
    return (w, dropped, unit) if with_unit else (w, dropped)


def boot_starts(law, d, th):
    """Starts of a bootstrap refit: the point estimate and a second point away from it (beta moved by 0.15
    with B moved to keep B X^-beta at the median X, s moved towards the other half of [0, 1]), so that a
    refit that stays at its start says the data pin the value, not that the optimiser stopped there."""
    p = law.unpack(th)
    logX0 = float(np.median(p["s"] * np.log(d["Dc"]) + (1 - p["s"]) * np.log(d["D"])))
    alt = np.array(th, dtype=float)
    C = law.C
    beta2 = p["beta"] + 0.15 if p["beta"] < 0.5 else p["beta"] - 0.15
    alt[C] = p["logB"] + (beta2 - p["beta"]) * logX0
    alt[C + 1] = beta2
    if law.fixed_s is None:
        alt[C + 2] = 0.5 * p["s"] + (0.375 if p["s"] < 0.5 else 0.125)
    lo, hi = np.array(law.bounds(d)).T
    return [np.asarray(th, dtype=float), np.clip(alt, lo, hi)]


def _boot_fits(job):
    """Refit each bootstrap resample from the first n_starts of boot_starts, with tolerances relative to the
    resample's objective (its value at the point estimate). Per resample: (named parameters, or None for a
    non-converged refit; whether a start other than the point estimate gave the best fit)."""
    law, d, th, weight_list, n_starts = job
    starts = boot_starts(law, d, th)[:n_starts]
    out = []
    for w in weight_list:
        scale = max(law.objective(np.asarray(th), d, w)[0], 1e-300)
        best, other = None, False
        for i, th0 in enumerate(starts):
            r = _minimize(law, d, [th0], w, tol=BOOT_TOL, scale=scale)
            if best is None or r.fun < best.fun - 1e-6 * scale:  # a better minimum, not tolerance noise
                best, other = r, i > 0
        ok = best.success and np.all(np.isfinite(best.x))
        out.append((named_params(law, best.x, d["categories"]) if ok else None, other))
    return out


BOOT_PROBE = 16  # resamples refitted from every start before deciding whether the others need them too


BOOT_CHUNK = 8  # resamples per task: small enough for the progress line to move, large enough to amortise a task


def run_bootstrap(law, d, th, weights, jobs, what="bootstrap"):
    """The refits of all resamples, in order; the same for any number of processes (each refit depends on
    its resample only). The first BOOT_PROBE resamples are refitted from two starts (boot_starts); if the
    second start ever gives the better fit, the point estimate is not a safe start for these data and every
    resample is refitted from both, otherwise the rest start at the point estimate only (half the cost).
    Says n/N on stderr as it goes. Returns (refits, starts used)."""
    count = progress.Counter(what, len(weights))

    def refit(ws, n_starts):
        chunks = [ws[i:i + BOOT_CHUNK] for i in range(0, len(ws), BOOT_CHUNK)]
        jobs_ = [(law, d, th, c, n_starts) for c in chunks]
        if jobs > 1 and len(ws) >= 2 * jobs:
            parts = run_jobs(_boot_fits, jobs_, jobs, each=lambda part: count.tick(len(part)))
        else:
            parts = []
            for j in jobs_:
                parts.append(_boot_fits(j))
                count.tick(len(parts[-1]))
        return [r for part in parts for r in part]
    probe = refit(weights[:BOOT_PROBE], 2)
    n_starts = 2 if any(other for _, other in probe) else 1
    ordered = refit(weights[BOOT_PROBE:], n_starts)
    return [p for p, _ in probe + ordered], n_starts


# ----------------------------------------------------------------------------------------------------
# the intervals: a delete-one-seed-cluster jackknife, stratified by K

LOG_SCALE = ("E[", "B", "A")  # positive parameters: their interval on the log scale (the fit's own parameter)


def jackknife_weights(law, d):
    """(weights, unit strata, unpinned): one weight vector per seed cluster (run, where the data have no
    clusters) with that unit's points at 0, the unit's K, and {parameter: why} for the parameters that some
    deletion leaves unidentified (identification() on the data without that unit): its refit keeps such a
    parameter at its start, the point estimate, so the jackknife never sees that unit's noise (a floor whose
    points all lie in one cluster; s where deleting the lone cluster of the largest K leaves one K)."""
    unit = d["cluster"] if "cluster" in d else d["run"]
    units = np.unique(unit)
    strata = np.array([int(d["K"][unit == g][0]) for g in units])
    n, unpinned = len(d["L"]), {}
    for i, c in enumerate(d["categories"]):
        if len(np.unique(unit[d["cat"] == i])) == 1:
            unpinned[f"E[{c}]"] = f"every point of {c} lies in one seed cluster: its shared noise has no replicate"
    for g, h in zip(units, strata):
        keep = unit != g
        if not keep.any():  # one unit: no jackknife at all (stratified_jackknife refuses it)
            continue
        rest = {k: v[keep] if isinstance(v, np.ndarray) and v.shape[:1] == (n,) else v for k, v in d.items()}
        for k, why in identification(law, rest).items():
            unpinned.setdefault(k, f"deleting one seed cluster (K = {h}) leaves {k} not identified ({why}): "
                                   "the jackknife cannot vary it")
    return [(unit != g).astype(float) for g in units], strata, unpinned


def jackknife_intervals(law, d, th, point, jobs, what):
    """{parameter: stratified_jackknife(...)} from the delete-one-seed-cluster refits (from the point
    estimate, as the bootstrap's), on the log scale for the positive parameters (LOG_SCALE), clipped to the
    parameter's box; and a summary for fits.json. Replaces the percentile bootstrap within K for the law's
    intervals (issue 21): stratified_jackknife says why."""
    weights, strata, unpinned = jackknife_weights(law, d)
    refits, _ = run_bootstrap(law, d, th, weights, jobs, what)
    box = dict(zip(param_names(law, d["categories"]), law.bounds(d)))
    out = {}
    for k, v in point.items():
        log = k.startswith(LOG_SCALE)
        f = math.log if log else float
        reps = [None if b is None else f(b[k]) for b in refits]
        r = stratified_jackknife(f(v), reps, strata)
        lo, hi = r["ci95"]
        if lo is not None:
            blo, bhi = box[k]                              # E, B, A: their box is already in logs
            lo, hi = max(lo, blo), min(hi, bhi)
            r["ci95"] = [math.exp(lo), math.exp(hi)] if log else [lo, hi]
        if k in unpinned:
            r.update(ci95=[None, None], note=f"no interval: {unpinned[k]}")
        out[k] = r
    summary = {"units": len(weights), "not_converged": sum(b is None for b in refits),
               "strata": {int(h): int((strata == h).sum()) for h in np.unique(strata)},
               "method": "delete-one-seed-cluster jackknife, stratified by K (each stratum's variance from its own "
                         "clusters, n_h - 1 df; a stratum of one cluster pooled with the next smaller K's), "
                         "Cochran-Cox t; B, A and the floors on the log scale"}
    return out, summary


# ----------------------------------------------------------------------------------------------------
# the fit with its intervals (what a design cannot pin: analysis/identifiability.py)

FORMULAS = {"dilution": "L_c = E_c + B * (D_c^s * D^(1-s))^-beta", "disjoint": "L_c = E_c + B * D_c^-beta",
            "shared": "L_c = E_c + B * D^-beta"}


def fit_law(d, form, n_boot=1000, seed=0, with_n=None, jobs=1, what=None):
    """Point estimate, 95% intervals from the jackknife over seed clusters (jackknife_intervals; none with
    n_boot 0), the bootstrap over seed clusters (its draws, counts of dropped resamples and refits), the
    parameters left on a bound, and the residuals."""
    if with_n is None:
        with_n = len(np.unique(d["N"])) > 1
    law = Law(form, len(d["categories"]), with_n)
    res = minimize_starts(law, d, law.starts(d), jobs)
    th = res.x
    point = named_params(law, th, d["categories"])
    resid = np.log(law.predict(th, d)) - np.log(d["L"])
    weights, dropped_missing, unit = bootstrap_weights(d, n_boot, seed, with_unit=True)
    refits, n_starts = run_bootstrap(law, d, th, weights, jobs, what or f"bootstrap {form}") if weights else ([], 0)
    boots = [b for b in refits if b is not None]
    # the intervals: the jackknife over seed clusters (jackknife_intervals says why not the bootstrap's
    # percentiles); only where resamples were asked for (--n_boot 0: point estimates only)
    label = (what or f"bootstrap {form}").replace("bootstrap", "jackknife", 1)
    jk, jk_summary = jackknife_intervals(law, d, th, point, jobs, label) if weights else ({}, None)
    params = {}
    flat = identification(law, d)
    for k, v in point.items():
        vals = np.array([b[k] for b in boots])
        params[k] = {"estimate": v, "ci95": _interval(vals), "n_boot": len(vals), "identified": k not in flat}
        if k in flat:  # no interval for what the data cannot pin: its bootstrap spread is the optimiser's
            params[k].update(ci95=[None, None], why=f"not identified: {flat[k]}")
        elif len(vals) >= 2 and params[k]["ci95"][0] is None:
            params[k].update(identified=False, why="not identified: the bootstrap refits (from two starts) do not "
                             "move it — a flat profile")
        elif not len(vals):
            params[k]["why"] = "no bootstrap resamples: no interval"
        elif k in jk:
            j = jk[k]
            params[k].update(ci95=guarded(j["ci95"], v), **{"se_log" if k.startswith(LOG_SCALE) else "se": j["se"]})
            if params[k]["ci95"][0] is None:
                params[k]["why"] = f"jackknife: {j['note'] or 'no interval'}"
            elif j["note"]:
                params[k]["note"] = j["note"]
    bound = at_bounds(law, th, d, d["categories"])
    for k, side in bound.items():
        params[k]["at_bound"] = side
    formula = FORMULAS[form] + (" + A * N^-alpha" if with_n else "")
    if "r_star" in d:
        formula = formula.replace("D_c", "D'_c").replace("D^", "D'^") + \
            f", on effective tokens (D'_c = U + U R* (1 - exp(-R/R*)), R* = {d['r_star']:g})"
    return {"form": form, "formula": formula,
            "data_filter": DATA_FILTER, "params": params, "converged": bool(res.success),
            "optimizer_message": str(res.message), "huber_delta": HUBER_DELTA,
            "fit_error": float(np.sqrt(np.mean(resid ** 2))), "n_points": int(len(d["L"])), "n_runs": len(d["runs"]),
            "bootstrap": {"requested": n_boot, "used": len(boots), "dropped_missing_category": dropped_missing,
                          "dropped_not_converged": len(refits) - len(boots), "strata": "K",
                          "unit": unit, "unit_defined": "seed cluster: all budgets of one K, subset seed, init "
                                                        "seed and data seed",
                          "refit": (f"tolerances relative to the objective; the first {BOOT_PROBE} resamples from 2 "
                                    f"starts, the rest from {n_starts}"),
                          "intervals": "ci95 from the jackknife below (the resamples' draws feed the differences "
                                       "between fits and H2's ratio)", "jackknife": jk_summary},
            "at_bound": bound, "repetition": {"r_star": d["r_star"]} if "r_star" in d else None,
            "_theta": th.tolist(), "_with_n": with_n, "_resid": resid, "_boot": boots}


# ----------------------------------------------------------------------------------------------------
# intervals: computed and printed

def _interval(values):
    """A 95% percentile interval that can be printed: none from fewer than two values, and none of zero
    width (noisy data never give one: a zero width means the resamples could not vary)."""
    ci = _pct(values)
    if ci[0] is None or len(values) < 2 or ci[1] - ci[0] <= 1e-12 * max(1.0, abs(ci[0])):
        return [None, None]
    return ci


def _pct(values):
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else [None, None]


def _fmt(v, d=4):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{d}g}" if isinstance(v, float) else str(v)


def _ci(ci, d=4):
    return "–" if ci is None or ci[0] is None else f"[{_fmt(ci[0], d)}, {_fmt(ci[1], d)}]"
