"""H2's second half: does the equal-weight loss grow with K more slowly than the disjoint law's
prediction K^beta? The growth exponent gamma of the reducible in-training loss from the smallest to the
largest K at fixed budget, against the fit's data exponent beta, with a bootstrap interval (h2_ratio), and
its lines in the report's H2 section (h2_lines)."""
import math

import numpy as np

from analysis import powerlaw as pl
from analysis.hypotheses import equal_weight


def _floor(params, c, N):
    """The fit's floor of category c at model size N (E_c, plus A N^-alpha when the fit has the N term)."""
    E = params[f"E[{c}]"]
    return E + (params["A"] * (N or 1) ** -params["alpha"] if "A" in params else 0.0)


def growth_exponent(low, high, k_low, k_high, params, N):
    """gamma = ln[sum_c (L_c,high - floor_c) / sum_c (L_c,low - floor_c)] / ln(k_high / k_low) over the
    categories of `low` (equal weight); nan when a summed reducible loss is <= 0."""
    num = sum(high[c] - _floor(params, c, N) for c in low)
    den = sum(low[c] - _floor(params, c, N) for c in low)
    if num <= 0 or den <= 0:
        return float("nan")
    return math.log(num / den) / math.log(k_high / k_low)


def _shifted(per, sample, cats):
    """A resample's levels: each category's mean moved by the resample's mean deviation (as k_contrast's
    centring: a resample missing a category keeps the others' information)."""
    dev = [sample[c] - per[c] for c in cats if c in sample]
    s = float(np.mean(dev)) if dev else float("nan")
    return {c: per[c] + s for c in cats}


def h2_ratio_cell(a, b, k0, k1, fit, N, n_boot, rng):
    per_a, per_b = equal_weight(a, "in"), equal_weight(b, "in")
    point = {k: v["estimate"] for k, v in fit["params"].items()}
    ident = {k for k, v in fit["params"].items() if v.get("identified", True)}
    cats = sorted(c for c in set(per_a) & set(per_b) if f"E[{c}]" in ident)
    g = growth_exponent({c: per_a[c] for c in cats}, per_b, k0, k1, point, N)
    row = {"K_low": k0, "K_high": k1, "growth_exponent": g, "beta": point["beta"], "difference": g - point["beta"],
           "ci95": [None, None], "n_runs": [len(a), len(b)], "n_categories": len(cats), "note": None}
    flat = [k for k in ("beta", "A", "alpha") if k in point and k not in ident]
    if flat or not cats:  # the disjoint prediction needs beta and the floors (E_c + A N^-alpha) pinned
        row["note"] = (f"undecided: the fit's {', '.join(flat)} not identified (no prediction K^beta to compare with)"
                       if flat else "undecided: no category's floor E_c is identified")
    elif math.isnan(g):
        row["note"] = "undecided: a summed reducible loss L - E is <= 0 (no ratio)"
    elif min(len(a), len(b)) < 2:
        row["note"] = f"undecided: {len(a)} / {len(b)} runs (an interval needs >= 2 independent runs on each side)"
    elif not n_boot or not fit.get("_boot"):
        row["note"] = "undecided: no bootstrap, so no interval"
    else:
        reps, boots = [], fit["_boot"]
        for i in range(n_boot):
            la = _shifted(per_a, equal_weight([a[j] for j in rng.integers(0, len(a), len(a))], "in"), cats)
            lb = _shifted(per_b, equal_weight([b[j] for j in rng.integers(0, len(b), len(b))], "in"), cats)
            prm = boots[i % len(boots)]
            reps.append(growth_exponent(la, lb, k0, k1, prm, N) - prm["beta"])
        row["ci95"] = pl.interval(reps)
        row["n_boot_nan"] = int(np.sum(np.isnan(reps)))
    return row


def h2_ratio(cells, fit, n_params, n_boot, seed):
    """Per (model, budget) with two K: the growth exponent gamma of the equal-weight reducible loss from the
    smallest to the largest K (growth_exponent), against the disjoint prediction beta (the fit's data
    exponent): difference gamma - beta with a bootstrap interval. Runs resampled within each side (H2's
    units), each replicate paired with one of the fit's bootstrap refits (E_c, beta); the two resamplings are
    independent although they share the runs, so the interval is conservative. Verdict: 'supported' (slower
    than K^beta) when every interval lies below 0."""
    if fit is None:
        return {"table": [], "verdict": "undecided", "why": "no fit of the dilution (or disjoint) form on all data",
                "form": None}
    rng = np.random.default_rng(seed)
    table = []
    for (m, D), byK in sorted(cells.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        if len(byK) >= 2:
            k0, k1 = min(byK), max(byK)
            row = h2_ratio_cell(byK[k0], byK[k1], k0, k1, fit, n_params.get(m), n_boot, rng)
            table.append({"model": m, "D": D, **row})
    decided = [t for t in table if t["ci95"][0] is not None]
    slower = [t for t in decided if t["ci95"][1] < 0]
    faster = [t for t in decided if t["ci95"][0] > 0]
    if not table:
        verdict, why = "undecided", "no budget has two K values"
    elif len(slower) == len(table):
        verdict, why = "supported", "slower than K^beta at every budget (all intervals below 0)"
    elif faster:
        verdict, why = "not supported", f"{len(faster)} budget(s) grow faster than K^beta (interval above 0)"
    else:
        verdict, why = "undecided", (f"{len(slower)} of {len(table)} budgets slower than K^beta; the others' intervals "
                                     "contain 0 or are missing (too few runs)")
    return {"table": table, "verdict": verdict, "why": why, "form": fit["form"]}


def h2_lines(h):
    """Lines for the H2 section: the ratio test's definition, verdict and table (h: h2_ratio()'s result)."""
    if not h or not h["table"]:
        return ["", "Against the disjoint prediction K^β: " + (h["why"] if h else "not computed") + "."] if h else []
    L = ["", f"**Slower than the disjoint prediction K^β? {h['verdict']}** — {h['why']}.", "",
         "γ = ln[Σ_c (L_c,K_high − E_c) / Σ_c (L_c,K_low − E_c)] / ln(K_high / K_low): the growth exponent of the "
         "reducible in-training loss at fixed D (categories both K share, equal weight; E_c, β from the "
         f"{h['form']} fit on all data). The disjoint law (only a category's own D/K tokens help it) predicts "
         "γ = β, dilution γ = s·β, shared γ = 0. Interval of γ − β: runs resampled within each side, each replicate "
         "paired with a bootstrap refit of (E_c, β) — conservative.", "",
         "| model | D (planned) | K low → high | γ | β | γ − β | 95% CI | note |", "|---|---|---|---|---|---|---|---|"]
    for t in h["table"]:
        ci = "–" if t["ci95"][0] is None else f"[{t['ci95'][0]:+.3f}, {t['ci95'][1]:+.3f}]"
        L.append(f"| {t['model']} | {t['D']:,.0f} | {t['K_low']} → {t['K_high']} | {t['growth_exponent']:.3f} | "
                 f"{t['beta']:.3f} | {t['difference']:+.3f} | {ci} | {t['note'] or ''} |")
    return L
