"""The one inference core of the analysis: every interval and test the report prints is made here, on the
design's independent unit, and leaves through one guard.

Independent units (declared by each statistic):
- the seed cluster: all budgets of one (model, K, subset seed, init seed, data seed, sampling, tagging).
  The runs of one seed at several budgets share their initialisation and the prefix of their data
  order, so their noise is shared; resampling runs instead of clusters counts one draw several times.
- the category: a contrast's per-category differences (the K = 1 side holds one category per run, so
  its noise is independent across categories);
- both (two-way): a statistic whose runs hold several categories carries a run-level term shared by
  those categories and a per-(run, category) term; neither unit alone counts both.

Small samples: an interval from n units is a t interval with n - 1 degrees of freedom (for a sum of
variance components, Cochran-Cox's weighted t quantile: Welch-Satterthwaite df undercovered with a 1-df
part), never a percentile bootstrap of 2-5 units (which covered 49 / 73 / 85% of the time with 2 / 3 / 5);
with fewer than 2 units there is none: "undecided: n unit(s)". The law's fitted parameters: a delete-one-
seed-cluster jackknife with a variance component per K (stratified_jackknife), because a parameter read
mostly from the few clusters of one K (s, from K = 11) has a variance of few df, which percentiles of a
bootstrap within K ignored (s covered 75-80%). Percentile bootstraps are kept where the units are many (the
cross-validation over subset seeds) and the statistic is not a mean.

guard(): no interval of zero width, with a NaN end, with lo > hi, or that excludes its own estimate can
leave the module (each is a sign that the resampling could not vary, not a finding).

Families: a verdict decided by several cells (H2's budgets, H5's, H1's categories, H3's form pairs, the
transfer pairs) is corrected with Holm's step-down (statsmodels); "not supported" needs a family-wise
rejection, "supported" needs every cell (an intersection-union test: each at level alpha, no correction).
"""
import functools
import math

import numpy as np

LEVEL = 0.95
MIN_UNITS = 2        # a t interval needs two units (one degree of freedom)
ZERO_WIDTH = 1e-12   # relative: narrower than this, the resamples did not vary


# ----------------------------------------------------------------------------------------------------
# units

def seed_cluster(r):
    """The seed cluster of a run (a row of analyze.py's run table or a run record): every budget of one
    model, category set, subset seed, init seed and data seed (and sampling arm, tagging)."""
    cats = r.get("categories")
    cats = tuple(sorted(cats.split() if isinstance(cats, str) else cats or ()))
    return (str(r.get("model")), r.get("K"), cats, str(r.get("seed")), str(r.get("init_seed")),
            str(r.get("data_seed")), str(r.get("sampling")), bool(r.get("tagged")))


# ----------------------------------------------------------------------------------------------------
# the guard

def guard(ci, estimate=None, tol=ZERO_WIDTH):
    """(ci, None) when the interval can be printed, else ([None, None], why): a missing or NaN end, lo > hi,
    zero width (relative tol), or an estimate outside its own interval."""
    if ci is None or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return [None, None], "no interval"
    lo, hi = float(ci[0]), float(ci[1])
    if math.isnan(lo) or math.isnan(hi):
        return [None, None], "an end of the interval is NaN"
    if lo > hi:
        return [None, None], "lower end above upper end"
    scale = max(1.0, abs(lo) if math.isfinite(lo) else 1.0, abs(hi) if math.isfinite(hi) else 1.0)
    if hi - lo <= tol * scale:
        return [None, None], "zero width: the resamples do not vary (no spread to make an interval from)"
    if estimate is not None and math.isfinite(estimate) and not lo <= estimate <= hi:
        return [None, None], (f"the estimate {estimate:.4g} lies outside its own interval [{lo:.4g}, {hi:.4g}] "
                              "(a biased statistic: the interval would mislead)")
    return [lo, hi], None


def guarded(ci, estimate=None):
    """guard()'s interval alone."""
    return guard(ci, estimate)[0]


# ----------------------------------------------------------------------------------------------------
# t intervals (few units)

@functools.lru_cache(maxsize=4096)
def _t(df, level=LEVEL):
    from scipy.stats import t
    return float(t.ppf(0.5 + level / 2, df))


def _p_t(est, se, df):
    from scipy.stats import t
    return float(2 * t.sf(abs(est) / se, df)) if se > 0 and df > 0 else 1.0


def t_mean(values, level=LEVEL):
    """Mean of per-unit values with a t interval (n - 1 df). Returns {estimate, ci95, se, df, p, n_units, note}."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    out = {"estimate": float(v.mean()) if len(v) else None, "ci95": [None, None], "se": None, "df": max(len(v) - 1, 0),
           "p": None, "n_units": int(len(v)), "note": None, "method": "t interval over units, n - 1 df"}
    if len(v) < MIN_UNITS:
        out["note"] = f"undecided: {len(v)} unit(s) (an interval needs >= {MIN_UNITS})"
        return out
    se = float(v.std(ddof=1) / math.sqrt(len(v)))
    h = _t(len(v) - 1, level) * se
    out.update(se=se, p=_p_t(out["estimate"], se, len(v) - 1))
    out["ci95"], why = guard([out["estimate"] - h, out["estimate"] + h], out["estimate"])
    if why:
        out["note"] = f"undecided: {why}"
    return out


def t_components(estimate, components, level=LEVEL):
    """Interval of an estimate whose variance is a sum of independent components [(variance, df)]. The
    critical value is Cochran-Cox's: the variance-weighted mean of each component's own t quantile. Welch-
    Satterthwaite df, computed from the estimated components, are too large exactly when a component of
    few df comes out small: with 2 seed clusters on a side (a 1-df run component) the contrast covered 88%
    (tests/test_inference_review.py); Cochran-Cox keeps it within 93-99%. The same held for the law's
    intervals (stratified_jackknife): over 34 fabricated P1 sweeps Welch-Satterthwaite covered s 88%,
    Cochran-Cox 97%. "df" reports the Welch-Satterthwaite value, "t_crit" the critical value used; p is the
    level at which the interval's end reaches 0, so p < 1 - level exactly when the interval excludes 0.
    Returns {estimate, ci95, se, df, t_crit, p, note}."""
    comps = [(float(v), float(d)) for v, d in components if d >= 1 and np.isfinite(v)]
    var = sum(v for v, _ in comps)
    out = {"estimate": float(estimate), "ci95": [None, None], "se": None, "df": None, "t_crit": None, "p": None,
           "note": None}
    if not comps or not var > 0:
        out["note"] = "undecided: no spread between units to make an interval from"
        return out
    df = var ** 2 / sum(v ** 2 / d for v, d in comps if v > 0)
    se = math.sqrt(var)
    crit = _cc_crit(comps, var, level)
    h = crit * se
    out.update(se=se, df=float(df), t_crit=crit, p=_p_cc(estimate, se, comps, var))
    out["ci95"], why = guard([estimate - h, estimate + h], estimate)
    if why:
        out["note"] = f"undecided: {why}"
    return out


def _cc_crit(comps, var, level):
    """Cochran-Cox critical value: sum_i v_i t_(df_i) / sum_i v_i."""
    return sum(v * _t(d, level) for v, d in comps) / var


def _p_cc(estimate, se, comps, var):
    """Two-sided p of 0 under the Cochran-Cox critical value: the 1 - level at which crit * se = |estimate|
    (solved in log p to 1e-4 relative: enough for Holm, and a few dozen t quantiles per contrast)."""
    from scipy.optimize import brentq
    z = abs(estimate) / se if se > 0 else 0.0
    if not np.isfinite(z) or z == 0:
        return 1.0
    f = lambda la: _cc_crit(comps, var, 1 - math.exp(la)) - z   # decreasing in la; at la = 0 the crit is 0
    lo = math.log(1e-15)
    if f(lo) <= 0:
        return 1e-15
    return float(math.exp(brentq(f, lo, 0.0, xtol=1e-4)))


def side_levels(units):
    """Equal-weight level per category of one side of a contrast: units is a list of (subset key, {category:
    value}); replicates are averaged within (subset, category) first, then subsets within a category."""
    per = {}
    for key, vals in units:
        for c, v in vals.items():
            per.setdefault(c, {}).setdefault(key, []).append(v)
    return {c: float(np.mean([np.mean(x) for x in subs.values()])) for c, subs in per.items()}


def contrast(high, low, cats, level=LEVEL):
    """Equal-weight difference mean_c (high_c - low_c) over cats, each side a list of seed-cluster units
    (subset key, {category: value}), with a two-way interval: the category component (the spread of the
    per-category differences / C: every per-(run, category) term and the runs of a side whose runs hold
    one category each) plus, for a side whose runs hold several of the categories, the run component (the
    spread of each run's mean deviation from its side's levels / runs: the run-level term shared by its
    categories, which cancels from the category spread). Both sides' noise counts; Cochran-Cox t
    (t_components); fewer than 2 units on a side or 2 categories: undecided. Conservative: a per-(run, category) term
    of a multi-category side is counted in both components."""
    lh, ll = side_levels(high), side_levels(low)
    cats = [c for c in cats if c in lh and c in ll]
    d = np.array([lh[c] - ll[c] for c in cats])
    est = float(d.mean()) if len(d) else float("nan")
    base = {"estimate": est, "ci95": [None, None], "se": None, "df": None, "p": None, "n_units": [len(low), len(high)],
            "n_categories": len(cats), "note": None}
    if min(len(high), len(low)) < MIN_UNITS or len(cats) < MIN_UNITS:
        base["note"] = (f"undecided: {len(low)} / {len(high)} seed cluster(s) (low / high side), {len(cats)} shared categor"
                        f"{'y' if len(cats) == 1 else 'ies'} (an interval needs >= {MIN_UNITS} of each)")
        return base
    comps = [(float(d.var(ddof=1)) / len(cats), len(cats) - 1)]
    for side, lev in ((high, lh), (low, ll)):
        dev = [np.mean([v - lev[c] for c, v in vals.items() if c in cats]) for _, vals in side
               if sum(c in cats for c in vals) >= 2]
        if len(dev) >= MIN_UNITS:  # runs holding several categories: their shared term, once per run
            comps.append((float(np.var(dev, ddof=1)) / len(dev), len(dev) - 1))
    out = t_components(est, comps, level)
    return {**base, **{k: out[k] for k in ("ci95", "se", "df", "t_crit", "p", "note")},
            "method": "two-way (category x seed cluster) variance, Cochran-Cox t"}


def stratified_jackknife(estimate, replicates, strata, level=LEVEL):
    """Interval of a fitted parameter from its delete-one-unit refits (replicates[g]: the estimate without
    unit g, None / NaN where the refit failed), the units stratified (strata[g]: the seed cluster's K, in an
    order: a stratum's neighbours are the nearest values). Each stratum's variance is its own component,
    (n_h - 1) / n_h sum_i (r_hi - mean_h)^2 with n_h - 1 df (the stratified jackknife), and the interval is
    t_components' (Cochran-Cox). A stratum of one unit cannot be spread about its own mean: it is pooled
    with the stratum of the next smaller value (the next larger for the smallest), the collapsed-strata
    estimator of survey sampling, which assumes the pooled units vary alike about one mean (conservative
    where their means differ) and says so in the note. A refit that failed leaves its unit out (the note
    counts them); a stratum whose refits all failed gives no interval (its variance is unknown).

    Why not the percentile bootstrap within K it replaces for the law's intervals (issue 21): on P1 (3 seed
    clusters at K = 11) its SD of s was right on average but as variable as a 3-df estimate (CV 0.41 over 19
    fabricated sweeps), and its percentiles covered 79%; with one K = 11 cluster that stratum gave no
    variance at all (bootstrap SD 0.025 against the estimates' 0.046). Returns {estimate, ci95, se, df,
    t_crit, p, note, strata: [{strata, n, variance, df}]}."""
    r = np.asarray([np.nan if x is None else x for x in replicates], dtype=float)
    strata = np.asarray(strata)
    ok = np.isfinite(r)
    groups = [[h] for h in np.unique(strata[ok])]
    size = lambda g: int(np.isin(strata[ok], g).sum())
    pooled = []
    while len(groups) > 1 and any(size(g) < MIN_UNITS for g in groups):
        i = next(i for i, g in enumerate(groups) if size(g) < MIN_UNITS)
        k = i - 1 if i > 0 else 1
        pooled.append(f"{_label(groups[i])} with {_label(groups[k])}")
        groups[min(i, k)] = groups[min(i, k)] + groups[max(i, k)]
        del groups[max(i, k)]
    comps, parts = [], []
    for g in groups:
        v = r[ok & np.isin(strata, g)]
        n = len(v)
        comps.append((float((n - 1) / n * ((v - v.mean()) ** 2).sum()) if n >= 2 else 0.0, n - 1))
        parts.append({"strata": [x.item() if hasattr(x, "item") else x for x in g], "n": n,
                      "variance": comps[-1][0], "df": n - 1})
    out = t_components(estimate, comps, level)
    out["strata"] = parts
    notes = [out["note"]] if out["note"] else []
    if pooled:
        notes.append("pooled " + "; ".join(pooled) + " (a stratum of one unit has no spread of its own)")
    if (~ok).any():
        notes.append(f"{int((~ok).sum())} refit(s) not converged (their units left out)")
    # a stratum left with no converged refit would drop out of the variance unseen: refuse instead
    lost = [h for h in np.unique(strata) if not (ok & (strata == h)).any()]
    if lost:
        out.update(ci95=[None, None], se=None, p=None)
        notes.insert(0, f"undecided: no refit without a unit of {_label(lost)} converged (that stratum's "
                        "variance is unknown)")
    out["note"] = "; ".join(notes) or None
    return out


def _label(group):
    return "stratum " + "+".join(str(x.item() if hasattr(x, "item") else x) for x in group)


# ----------------------------------------------------------------------------------------------------
# bootstraps

def unit_counts(n_units, n_boot, rng):
    """(n_boot, n_units) multiplicities of a bootstrap over n_units exchangeable units (vectorised)."""
    if n_units == 0 or n_boot == 0:
        return np.zeros((n_boot, n_units))
    return rng.multinomial(n_units, [1.0 / n_units] * n_units, size=n_boot).astype(float)


def cluster_counts(strata_of, n_boot, rng):
    """(n_boot, n_clusters) multiplicities: seed clusters drawn with replacement within each stratum (K);
    strata_of[k] is cluster k's stratum."""
    strata_of = np.asarray(strata_of)
    out = np.zeros((n_boot, len(strata_of)))
    for s in np.unique(strata_of):
        members = np.flatnonzero(strata_of == s)
        out[:, members] = unit_counts(len(members), n_boot, rng)
    return out


def percentile(draws, estimate=None, level=LEVEL):
    """Guarded percentile interval of bootstrap draws (NaN draws dropped, +-inf kept as order statistics)."""
    v = np.sort(np.asarray([x for x in draws if x is not None and not np.isnan(x)], dtype=float))
    if len(v) < 2:
        return [None, None]
    q = (1 - level) / 2
    ci = [float(v[int(np.floor(q * (len(v) - 1)))]), float(v[int(np.ceil((1 - q) * (len(v) - 1)))])]
    return guarded(ci, estimate)


def boot_p(estimate, draws):
    """Two-sided p of 'the statistic is 0' from the bootstrap SD (normal approximation): a percentile p
    cannot go below 2 / (n_boot + 1), which at a few hundred resamples is above Holm's smallest threshold."""
    from scipy.stats import norm
    v = np.asarray([x for x in draws if x is not None and np.isfinite(x)], dtype=float)
    sd = float(v.std(ddof=1)) if len(v) >= 2 else 0.0
    return float(2 * norm.sf(abs(estimate) / sd)) if sd > 0 and np.isfinite(estimate) else 1.0


def paired_two_way(high, low, cats, stat, n_boot, seed, level=LEVEL):
    """A nonlinear statistic of two sides' per-category levels (e.g. H2's growth exponent against K^beta,
    analysis/h2ratio.py's h2_ratio: stat(levels_high, levels_low, categories) -> float) with a two-way
    bootstrap: categories drawn with replacement (the same draw on both sides), and each side's seed
    clusters (high, low: lists of (subset key, {category: value}) as for contrast()) drawn with replacement
    within the side; a category a side's draw lacks drops out of that replicate. Both sides' noise counts
    (the K = 1 side's through the categories and its clusters: conservative). Returns (estimate, guarded
    interval, draws); fewer than 2 clusters a side or 2 categories: no interval."""
    est = stat(side_levels(high), side_levels(low), list(cats))
    if min(len(high), len(low)) < MIN_UNITS or len(cats) < MIN_UNITS or not n_boot:
        return est, [None, None], []
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        cs = [cats[i] for i in rng.integers(0, len(cats), len(cats))]
        lh = side_levels([high[i] for i in rng.integers(0, len(high), len(high))])
        ll = side_levels([low[i] for i in rng.integers(0, len(low), len(low))])
        keep = [c for c in cs if c in lh and c in ll]
        draws.append(stat(lh, ll, keep) if keep else float("nan"))
    return est, percentile(draws, est, level), draws


# ----------------------------------------------------------------------------------------------------
# families

def holm(pvalues, alpha=0.05):
    """Holm's step-down (statsmodels): which hypotheses of the family are rejected at family-wise alpha."""
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return np.zeros(0, dtype=bool)
    from statsmodels.stats.multitest import multipletests
    return multipletests(np.where(np.isfinite(p), p, 1.0), alpha=alpha, method="holm")[0]


def direction_family(cells, want_positive, margin, name):
    """The verdict of a family of cells (each with "estimate", "ci95", "p") on one direction: supported when
    every cell's interval excludes 0 in the wanted direction (intersection-union: no correction needed);
    not supported when Holm rejects 0 in at least one cell with the opposite sign, or every interval lies
    within +-margin; undecided otherwise. Marks each cell's "holm_rejected". Returns (verdict, why, family)."""
    decided = [c for c in cells if c["ci95"][0] is not None and c.get("p") is not None]
    rej = holm([c["p"] for c in decided])
    for c in cells:
        c["holm_rejected"] = None
    for c, r in zip(decided, rej):
        c["holm_rejected"] = bool(r)
    family = {"name": name, "size": len(decided), "correction": "Holm (family-wise 5%) for 'not supported'; "
              "'supported' needs every cell (intersection-union)"}
    if not decided:
        return "undecided", None, family
    good = [c for c in decided if (c["ci95"][0] > 0 if want_positive else c["ci95"][1] < 0)]
    bad = [c for c in decided if c["holm_rejected"] and ((c["estimate"] < 0) if want_positive else (c["estimate"] > 0))]
    null = [c for c in decided if -margin <= c["ci95"][0] and c["ci95"][1] <= margin]
    if len(good) == len(cells):
        return "supported", "all", family
    if bad:
        return "not supported", f"{len(bad)} of {len(decided)} {name} with the opposite sign after Holm", family
    if len(null) == len(cells):
        return "not supported", f"every interval lies within ±{margin} nats", family
    return "undecided", None, family


def undominated(items, pairs):
    """From pairwise decisions [{"a", "b", "better"}]: (best, not_beaten). best is the item that beats every
    other (None otherwise); not_beaten the items no other item beats (A beats C, C beats B, A vs B undecided:
    best None, not beaten [A])."""
    beaten, wins = {f: False for f in items}, {f: set() for f in items}
    for p in pairs:
        if p["better"] in (p["a"], p["b"]):
            loser = p["b"] if p["better"] == p["a"] else p["a"]
            beaten[loser] = True
            wins[p["better"]].add(loser)
    top = [f for f in items if not beaten[f]]
    best = [f for f in top if wins[f] >= set(items) - {f}]
    return (best[0] if len(best) == 1 else None), top
