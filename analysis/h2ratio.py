"""H2's second half: does the equal-weight loss grow with K more slowly than the disjoint law's
prediction K^beta? The growth exponent gamma of the reducible in-training loss from the smallest to the
largest K at fixed budget, against the fit's data exponent beta, with a bootstrap interval (h2_ratio), and
its lines in the report's H2 section (h2_lines)."""
import math

import numpy as np

from analysis import inference
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


def _growth(cats, high, low, k_low, k_high, params, N):
    """growth_exponent over a list of categories with multiplicity (a bootstrap's category draw)."""
    num = sum(high[c] - _floor(params, c, N) for c in cats)
    den = sum(low[c] - _floor(params, c, N) for c in cats)
    if num <= 0 or den <= 0:
        return float("nan")
    return math.log(num / den) / math.log(k_high / k_low)


def h2_ratio_cell(a, b, k0, k1, fit, N, n_boot, seed):
    """One (model, budget) cell: gamma - beta with the inference core's two-way bootstrap (categories, and
    each side's seed clusters: both sides' noise counts), each replicate paired with one of the fit's
    bootstrap refits (E_c, beta) so the fit's uncertainty counts too."""
    per_a, per_b = equal_weight(a, "in"), equal_weight(b, "in")
    point = {k: v["estimate"] for k, v in fit["params"].items()}
    ident = {k for k, v in fit["params"].items() if v.get("identified", True)}
    cats = sorted(c for c in set(per_a) & set(per_b) if f"E[{c}]" in ident)
    g = growth_exponent({c: per_a[c] for c in cats}, per_b, k0, k1, point, N)
    row = {"K_low": k0, "K_high": k1, "growth_exponent": g, "beta": point["beta"], "difference": g - point["beta"],
           "ci95": [None, None], "p": None, "n_runs": [len(a), len(b)], "n_categories": len(cats), "note": None}
    flat = [k for k in ("beta", "A", "alpha") if k in point and k not in ident]
    if flat or not cats:  # the disjoint prediction needs beta and the floors (E_c + A N^-alpha) pinned
        row["note"] = (f"undecided: the fit's {', '.join(flat)} not identified (no prediction K^beta to compare with)"
                       if flat else "undecided: no category's floor E_c is identified")
    elif math.isnan(g):
        row["note"] = "undecided: a summed reducible loss L - E is <= 0 (no ratio)"
    elif min(len(a), len(b)) < inference.MIN_UNITS or len(cats) < inference.MIN_UNITS:
        row["note"] = (f"undecided: {len(a)} / {len(b)} seed cluster(s), {len(cats)} categories (an interval needs "
                       f">= {inference.MIN_UNITS} of each)")
    elif not n_boot or not fit.get("_boot"):
        row["note"] = "undecided: no bootstrap, so no interval"
    else:
        boots, calls = fit["_boot"], iter(range(10 ** 9))

        def stat(lh, ll, cs):  # call 0 is the point estimate; replicate i is paired with refit i
            i = next(calls)
            prm = point if i == 0 else boots[(i - 1) % len(boots)]
            return _growth(cs, lh, ll, k0, k1, prm, N) - prm["beta"]

        high = [(v["subset"], v["in"]) for v in b]
        low = [(v["subset"], v["in"]) for v in a]
        est, ci, draws = inference.paired_two_way(high, low, cats, stat, n_boot, seed)
        row["ci95"] = ci
        row["p"] = inference.boot_p(est, draws) if ci[0] is not None else None
        row["n_boot_nan"] = int(np.sum(np.isnan(draws)))
        if ci[0] is None:
            row["note"] = "undecided: the resamples give no interval"
    return row


def h2_ratio(cells, fit, n_params, n_boot, seed):
    """Per (model, budget) with two K: the growth exponent gamma of the equal-weight reducible loss from the
    smallest to the largest K (growth_exponent), against the disjoint prediction beta (the fit's data
    exponent): difference gamma - beta with a two-way bootstrap interval (analysis/inference.py: categories and
    each side's seed clusters, each replicate paired with a bootstrap refit of the fit). The budgets are one
    family: 'supported' (slower than K^beta) needs every interval below 0; 'not supported' needs a Holm
    rejection above 0 (faster)."""
    if fit is None:
        return {"table": [], "verdict": "undecided", "why": "no fit of the dilution (or disjoint) form on all data",
                "form": None}
    table = []
    for i, ((m, D), byK) in enumerate(sorted(cells.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))):
        if len(byK) >= 2:
            k0, k1 = min(byK), max(byK)
            row = h2_ratio_cell(byK[k0], byK[k1], k0, k1, fit, n_params.get(m), n_boot, seed + i)
            table.append({"model": m, "D": D, **row})
    if not table:
        return {"table": [], "verdict": "undecided", "why": "no budget has two K values", "form": fit["form"]}
    fam = [dict(t, estimate=t["difference"]) for t in table]
    verdict, what, family = inference.direction_family(fam, False, 0.0, "budgets")
    for t, c in zip(table, fam):
        t["holm_rejected"] = c["holm_rejected"]
    decided = [t for t in table if t["ci95"][0] is not None]
    slower = [t for t in decided if t["ci95"][1] < 0]
    if verdict == "supported":
        why = "slower than K^beta at every budget (all intervals below 0)"
    elif verdict == "not supported":
        why = what.replace("with the opposite sign", "faster than K^beta") + f" (family: {len(table)} budgets, Holm)"
    else:
        why = (f"{len(slower)} of {len(table)} budgets slower than K^beta; the others' intervals contain 0 or are "
               f"missing (too few runs), and no budget is faster after Holm (family: {len(table)} budgets)")
    return {"table": table, "verdict": verdict, "why": why, "form": fit["form"], "family": family}


def h2_lines(h):
    """Lines for the H2 section: the ratio test's definition, verdict and table (h: h2_ratio()'s result)."""
    if not h or not h["table"]:
        return ["", "Against the disjoint prediction K^β: " + (h["why"] if h else "not computed") + "."] if h else []
    L = ["", f"**Slower than the disjoint prediction K^β? {h['verdict']}** — {h['why']}.", "",
         "γ = ln[Σ_c (L_c,K_high − E_c) / Σ_c (L_c,K_low − E_c)] / ln(K_high / K_low): the growth exponent of the "
         "reducible in-training loss at fixed D (categories both K share, equal weight; E_c, β from the "
         f"{h['form']} fit on all data). The disjoint law (only a category's own D/K tokens help it) predicts "
         "γ = β, dilution γ = s·β, shared γ = 0. Interval of γ − β: categories and each side's seed clusters resampled (two-way), "
         "each replicate paired with a bootstrap refit of (E_c, β); the budgets are one family (Holm).", "",
         "| model | D (planned) | K low → high | γ | β | γ − β | 95% CI | note |", "|---|---|---|---|---|---|---|---|"]
    for t in h["table"]:
        ci = "–" if t["ci95"][0] is None else f"[{t['ci95'][0]:+.3f}, {t['ci95'][1]:+.3f}]"
        L.append(f"| {t['model']} | {t['D']:,.0f} | {t['K_low']} → {t['K_high']} | {t['growth_exponent']:.3f} | "
                 f"{t['beta']:.3f} | {t['difference']:+.3f} | {ci} | {t['note'] or ''} |")
    return L
