"""The hypotheses (EXPERIMENT_PLAN.md, section 2), each decided by its falsifier with an interval: H1 (its verdict:
analysis/floors.py; here the separate-fit floor diagnostic), H2 / H5 (loss against K at fixed budget, in training / held out), H3 (the
dilution law), H4 (mixing gain at equal tokens per category), H6 (identification cost of tagged twins), and
the table of verdicts and the report's headline built from them."""
import json
import math

import numpy as np

from analysis import inference
from analysis.inference import holm  # noqa: F401 -- analyze.holm
from analysis.laws import _ci, _fmt, _interval
from analysis.runs import run_key, used

MIN_STEPS_H4 = 100  # a specialist with fewer optimizer steps measures optimisation, not mixing


def boot_mean_ci(groups, n_boot=None, seed=None, stat=None):
    """95% interval of the mean over units (groups: one value per unit): a t interval with n - 1 df
    (inference.t_mean). A percentile bootstrap of 2-5 units covered 49-85%; n_boot and seed are kept for
    the callers and not used. Fewer than 2 units: [None, None]."""
    return inference.t_mean(groups)["ci95"]


def h1_floors(a, b, margin):
    """Floors E_c fitted on specialists (fit a) and on the largest K (fit b): the bootstrap distribution of
    each difference, a two-sided bootstrap p-value, Holm across categories. Supported when every
    difference's interval lies within ±margin; not supported when more than one category differs after
    Holm; undecided otherwise (the check has too little power to call the floors equal)."""
    from scipy.stats import norm
    cats = [k for k in a["params"] if k.startswith("E[") and k in b["params"]]
    n = min(len(a["_boot"]), len(b["_boot"]))
    table, pvals = [], []
    for k in cats:
        diffs = np.array([a["_boot"][i][k] - b["_boot"][i][k] for i in range(n)])
        est = a["params"][k]["estimate"] - b["params"][k]["estimate"]
        # p from the bootstrap's SD (normal approximation): a percentile p cannot go below 2/(n+1), which
        # at 200 resamples is above Holm's smallest threshold (0.05/11 = 0.0045) and could never reject
        sd = float(np.std(diffs, ddof=1)) if n >= 2 else 0.0
        p = float(2 * norm.sf(abs(est) / sd)) if sd > 0 else 1.0
        ident = a["params"][k].get("identified", True) and b["params"][k].get("identified", True)
        ci = inference.guarded(_interval(diffs), est) if ident else [None, None]
        table.append({"category": k[2:-1], "difference": est, "ci95": ci, "p": p, "identified": bool(ident),
                      "at_bound": bool(a["params"][k].get("at_bound") or b["params"][k].get("at_bound"))})
        pvals.append(p)
    # a floor on the optimiser's bound, or one the data cannot pin, is no estimate: its category cannot decide
    # anything either way
    testable = [i for i, r in enumerate(table) if not r["at_bound"] and r["identified"] and r["ci95"][0] is not None]
    rejected = holm(np.array([pvals[i] for i in testable])) if testable else []
    for row in table:
        row["holm_rejected"] = None
    for i, rej in zip(testable, rejected):
        table[i]["holm_rejected"] = bool(rej)
    n_rej = int(sum(rejected))
    n_bound = len(table) - len(testable)  # at a bound, not identified, or without an interval
    within = [r for r in table if r["ci95"][0] is not None and -margin <= r["ci95"][0] and r["ci95"][1] <= margin]
    if not table:
        verdict, why = "undecided", "no category has a floor in both fits (the K sets share no category)"
    elif n == 0:
        verdict, why = "undecided", "no bootstrap resamples, so no intervals"
    elif n_rej > 1:
        verdict, why = "not supported", f"{n_rej} categories' floors differ after Holm correction"
    elif len(within) == len(table) and not n_bound:
        verdict, why = "supported", f"every difference's 95% interval lies within ±{margin} nats"
    else:
        wide = max(table, key=lambda r: (r["ci95"][1] or 0) - (r["ci95"][0] or 0))
        verdict = "undecided"
        why = (f"{n_rej} of {len(testable)} categories differ after Holm; {len(table) - len(within)} of {len(table)} "
               f"intervals are wider than ±{margin} nats (widest: {wide['category']} {_ci(wide['ci95'])})"
               + (f"; {n_bound} floor(s) on the optimiser's bound, not identified or without an interval"
                  if n_bound else "")
               + ": the check cannot call the floors equal")
    rep = a.get("repetition") or b.get("repetition")
    return {"subsets": [a["subset"], b["subset"]], "margin": margin,
            # where repetition is modelled the floors are the effective-token fits': a K = 1 specialist that
            # repeats its category flattens, and on tokens seen that flattening would leak into its floor
            "basis": f"effective tokens (R* = {rep['r_star']:g})" if rep else "tokens seen (no category past one epoch)",
            "table": table, "verdict": verdict, "why": why,
            "p_method": "two-sided normal approximation from the bootstrap SD of the difference (resolution not "
                        "limited by the number of resamples), Holm across the testable categories"}


def run_level(rows):
    """Per included untagged run: its test loss per in-training and per held-out category, and its subset
    (the category set, as a set: K = 11 runs of different subset seeds train on the same set)."""
    out = {}
    for r in used(rows):
        if r["tagged"]:
            continue
        o = out.setdefault(r["run_id"], {"model": r["model"], "K": r["K"], "D": r["token_budget_planned"],
                                         "seed": r["seed"], "subset": frozenset(r["categories"].split()),
                                         "in": {}, "out": {}})
        o["in" if r["in_training"] else "out"][r["category"]] = r["test_loss"]
    return out


def equal_weight(runs, kind):
    """{category: loss} over a cell's runs with every category weighted alike: replicates averaged within
    (subset, category) first, then subsets within a category. (A plain mean over runs would count the
    categories of replicated subsets several times: P1's K = 1 cell holds 3 categories three times.)"""
    per = {}
    for v in runs:
        for c, loss in v[kind].items():
            per.setdefault(c, {}).setdefault(v["subset"], []).append(loss)
    return {c: float(np.mean([np.mean(x) for x in subsets.values()])) for c, subsets in per.items()}


def macro(runs, kind, cats=None):
    """Equal-weight macro loss of a cell's runs (over `cats` when given: the categories a contrast pairs)."""
    per = equal_weight(runs, kind)
    vals = [per[c] for c in (cats if cats is not None else per) if c in per]
    return float(np.mean(vals)) if vals else None


def cells_by_K(rows, kind):
    """{(model, planned budget): {K: [run, ...]}} of the runs that have `kind` (in / out) losses."""
    cells = {}
    for v in run_level(rows).values():
        if v[kind]:
            cells.setdefault((v["model"], v["D"]), {}).setdefault(v["K"], []).append(v)
    return cells


def k_contrast(rows, kind, n_boot, seed, margin, smaller_is_lower):
    """Per model and budget: equal-weight macro loss (kind: in / out) at the largest K minus at the smallest
    K that has it, both over the categories the two share (the nested design: K = 11 holds every K = 1
    category), with inference.contrast's two-way interval (categories x seed clusters, both sides' noise,
    Cochran-Cox t; analytic, so n_boot and seed are not used). An interval needs >= 2 seed
    clusters on each side. The budgets are one family: 'not supported' needs a Holm rejection with the
    opposite sign. Returns table, verdict, why (H2: the difference > 0; H5 < 0)."""
    table = []
    for (m, D), byK in sorted(cells_by_K(rows, kind).items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        if len(byK) < 2:
            continue
        k0, k1 = min(byK), max(byK)
        a, b = byK[k0], byK[k1]
        cats = sorted(set(equal_weight(a, kind)) & set(equal_weight(b, kind)))
        if not cats:
            continue
        c = inference.contrast([(v["subset"], v[kind]) for v in b], [(v["subset"], v[kind]) for v in a], cats)
        table.append({"model": m, "D": D, "K_low": k0, "K_high": k1, "difference": c["estimate"], "ci95": c["ci95"],
                      "p": c["p"], "df": c["df"], "n_runs": [len(a), len(b)], "n_categories": len(cats),
                      "note": c["note"]})
    want_pos = not smaller_is_lower
    cells = [dict(t, estimate=t["difference"]) for t in table]
    verdict, what, family = inference.direction_family(cells, want_pos, margin, "budgets")
    for t, c in zip(table, cells):
        t["holm_rejected"] = c["holm_rejected"]
    fam = f" (family: {len(table)} budgets, Holm)"
    decided = [t for t in table if t["ci95"][0] is not None]
    if not decided:
        why = "; ".join(sorted({t["note"] for t in table if t["note"]})) if table else "no budget has two K values"
        return table, "undecided", (why or "no interval")
    sign = "rises" if want_pos else "falls"
    if verdict == "supported":
        return table, verdict, f"the loss {sign} from the smallest to the largest K at every budget (all intervals exclude 0)"
    if verdict == "not supported":
        return table, verdict, what + fam
    good = [t for t in decided if (t["ci95"][0] > 0 if want_pos else t["ci95"][1] < 0)]
    return table, "undecided", (f"{len(good)} of {len(table)} budgets show it; " +
                                f"{len(decided) - len(good)} interval(s) contain 0 or have the other sign without a "
                                "Holm rejection" + fam +
                                (f", {len(table) - len(decided)} budget(s) have no interval (too few runs)"
                                 if len(decided) < len(table) else ""))


def mixing_gain(rows, fit, n_boot, seed, tol=0.01):
    """H4: G = L_c(K = 1, d) − L_c(K, K·d) at equal tokens per category, pairing runs on the planned
    budget (within `tol`, relative): the effective budgets are rounded up to whole steps. Returns the
    pairs made, the mixed runs left without a specialist, and per (model, K, d): G (mean over categories
    of specialist mean − mixed mean) with a contrast interval (gain_contrast), the law's prediction, and
    the optimizer steps of each side."""
    spec, mix = {}, {}
    for r in used(rows):
        if r["in_training"] and not r["tagged"]:
            (spec if r["K"] == 1 else mix).setdefault((r["model"], r["category"]), []).append(r)
    cells, missing = {}, []
    for (m, c), mixed in mix.items():
        for r in mixed:
            d = r["token_budget_planned"] / r["K"]
            match = [s for s in spec.get((m, c), []) if abs(s["token_budget_planned"] - d) <= tol * d]
            if not match:
                missing.append({"run_id": r["run_id"], "category": c, "needs": f"K = 1 at {d:,.0f} tokens"})
                continue
            cell = cells.setdefault((m, r["K"], match[0]["token_budget_planned"]),
                                    {"spec": {}, "mix": {}, "steps": set(), "unit": {}})
            cell["spec"][c] = {s["run_id"]: s["test_loss"] for s in match}
            cell["mix"].setdefault(r["run_id"], {})[c] = r["test_loss"]
            cell["unit"].update({x["run_id"]: _data_cluster(x) for x in [r, *match]})
            cell["steps"].add((match[0]["steps"], r["steps"]))
    pred = None
    if fit is not None and fit["form"] == "dilution" and not fit["_with_n"]:
        p = {k: fit["params"][k]["estimate"] for k in ("B", "beta", "s")}
        pred = lambda K, d: p["B"] * d ** -p["beta"] * (1 - K ** (-(1 - p["s"]) * p["beta"]))
    table = []
    for (m, K, d), cell in sorted(cells.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2])):
        per_c = {}
        for losses in cell["mix"].values():
            for c, v in losses.items():
                per_c.setdefault(c, []).append(v)
        # per category: specialist level − mixed level, each the mean over data-seed clusters of the mean over
        # their init-seed replicates (inference.side_levels): replicates of one subset count once
        spec_u, mix_u = gain_units(cell, list(per_c))
        ls, lm = inference.side_levels(spec_u), inference.side_levels(mix_u)
        vals = [ls[c] - lm[c] for c in per_c]
        steps = sorted(cell["steps"])
        n_spec, n_mix = len({k for k, _ in spec_u}), len({k for k, _ in mix_u})  # data-seed clusters
        con = gain_contrast(cell, list(per_c)) if min(n_spec, n_mix) >= 2 else None
        ci = con["ci95"] if con else [None, None]
        p_ = pred(K, d) if pred else None
        table.append({"model": m, "K": K, "d": d, "G": float(np.mean(vals)), "ci95": ci,
                      # why a cell has no interval: too few clusters, or the contrast's own reason (one
                      # category with a specialist, no spread)
                      "units_note": (f"undecided: {n_spec} specialist / {n_mix} mixed seed cluster(s)" if not con else
                                     None if ci[0] is not None else con.get("note") or "undecided: no interval"),
                      # an observed interval that excludes what the fitted law predicts: the law and the
                      # direct measurement disagree, which the report must say
                      "contradicts_law": bool(p_ is not None and ci[0] is not None and not ci[0] <= p_ <= ci[1]),
                      "n_pairs": sum(len(v) for v in per_c.values()), "n_categories": len(vals),
                      "n_runs": [sum(len(v) for v in cell["spec"].values()), len(cell["mix"])],
                      "steps_specialist": steps[0][0], "steps_mixed": steps[0][1],
                      "too_few_steps": (steps[0][0] or 0) < MIN_STEPS_H4,
                      "predicted": p_})
    return {"pairs_made": sum(t["n_pairs"] for t in table), "missing": missing, "table": table,
            "tolerance": tol}


def _data_cluster(r):
    """A run's unit for H4: its category set, subset seed and data seed. Runs differing only in the init seed
    share their data order (and its share of the noise): one unit, their mean; K = 11 rotations (other subset
    seeds: the categories in another order, other windows) are separate units even under one data seed."""
    return (frozenset(str(r.get("categories") or "").split()), str(r.get("seed")),
            str(r.get("data_seed") if r.get("data_seed") is not None else r.get("seed")))


def gain_units(cell, cats):
    """(specialist units, mixed units) for inference.contrast: [(unit key, {category: loss})], one entry per run."""
    unit = cell.get("unit") or {}
    spec = [(unit.get(rid, rid), {c: v}) for c, runs in cell["spec"].items() if c in cats for rid, v in runs.items()]
    mix = [(unit.get(rid, rid), {c: v for c, v in losses.items() if c in cats}) for rid, losses in cell["mix"].items()]
    return spec, mix


def gain_contrast(cell, cats):
    """H4's G with its 95% interval: inference.contrast of specialists (high) against mixed runs (low) over
    cats, one unit per data-seed cluster — the spread of the per-category differences and the mixed runs'
    shared run-level term, Cochran-Cox t; the whole result (its note says why an interval is refused). The
    crossed percentile bootstrap over ~11 categories and ~11 runs it replaces covered the true gain 88.7% of
    the time on P1 (BENCHMARKS.md, issue 21): a percentile interval of a mean of a few units is too narrow
    by z / t(n - 1) and sqrt((n - 1) / n)."""
    spec, mix = gain_units(cell, cats)
    return inference.contrast(_merged(spec), _merged(mix), list(cats))


def _merged(units):
    """One unit per key (the mean of its runs per category): contrast's run component counts units."""
    by = {}
    for k, vals in units:
        for c, v in vals.items():
            by.setdefault(k, {}).setdefault(c, []).append(v)
    return [(k, {c: float(np.mean(v)) for c, v in vals.items()}) for k, vals in by.items()]


def h4_verdict(gain):
    t = [x for x in gain["table"] if not x["too_few_steps"] and x["ci95"][0] is not None]
    if not gain["table"]:
        return "undecided", "no specialist / mixed pairs at equal tokens per category"
    if not t:
        if all(x["too_few_steps"] for x in gain["table"]):
            return "undecided", (f"every pair's specialist ran fewer than {MIN_STEPS_H4} optimizer steps: G "
                                 "measures the mixed run's extra steps, not mixing")
        notes = sorted({x["units_note"] for x in gain["table"] if not x["too_few_steps"] and x["units_note"]})
        return "undecided", ("no cell with enough steps has an interval" + (f" ({'; '.join(notes)})" if notes else
                                                                             " (no spread between the resamples)"))
    pos = [x for x in t if x["ci95"][0] > 0]
    neg = [x for x in t if x["ci95"][1] < 0]
    bad = [x for x in t if x.get("contradicts_law")]
    law = (f"; in {len(bad)} of {len(t)} cells the observed G contradicts the fitted law's prediction (e.g. K = "
           f"{bad[0]['K']}, d = {bad[0]['d']:,.0f}: {bad[0]['G']:+.3f}, 95% {_ci(bad[0]['ci95'], 3)}, law "
           f"{bad[0]['predicted']:+.3f})" if bad else "")
    if len(pos) == len(t):
        return "supported", f"G > 0 in all {len(t)} cells (every interval above 0){law}"
    if len(neg) == len(t):
        return "not supported", f"G < 0 in all {len(t)} cells: mixing hurt everywhere{law}"
    return "undecided", (f"G > 0 in {len(pos)}, < 0 in {len(neg)}, undecided in {len(t) - len(pos) - len(neg)} of "
                         f"{len(t)} cells{law}")


def twin_key(cfg):
    """A tagged run's untagged twin has the same identity but for tagging (every run-defining field:
    sampling arm, seeds, budget, lr, ...)."""
    ident = dict(cfg.get("identity") or json.loads(run_key(cfg)))
    ident.pop("tag_categories", None)
    ident.pop("model_config_sha256", None)  # tags need no other config: the same model file either way
    return json.dumps(ident, sort_keys=True)


def identification_cost(runs, n_boot, seed):
    """H6: pairs of tagged / untagged twins; per (model, K): mean gap (untagged − tagged) over pairs with a
    bootstrap interval, against the bound ln(K)/100."""
    by_key = {}
    for r in runs:
        if not r["excluded"]:
            by_key.setdefault(twin_key(r["config"]), {})["tagged" if r["config"].get("tag_categories") else "untagged"] = r
    pairs = []
    for twins in by_key.values():
        if len(twins) == 2:
            t, u = twins["tagged"], twins["untagged"]
            cats = t["config"]["categories"]
            gap = float(np.mean([u["test"]["per_category"][c]["loss"] - t["test"]["per_category"][c]["loss"]
                                 for c in cats]))
            pos = np.nanmean([np.array(u["test"]["per_category"][c]["loss_by_position"], dtype=float)
                              - np.array(t["test"]["per_category"][c]["loss_by_position"], dtype=float) for c in cats], 0)
            pairs.append({"tagged": t["run_id"], "untagged": u["run_id"], "model": t.get("model", t["config"].get("model_name")),
                          "K": len(cats), "sampling": t["config"].get("sampling"), "gap": gap,
                          "gap_by_position": pos.tolist()})
    groups = {}
    for p in pairs:
        groups.setdefault((p["model"], p["K"]), []).append(p["gap"])
    table = []
    for (m, K), gaps in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        ci = boot_mean_ci(gaps, n_boot, seed)
        bound = math.log(K) / 100
        v = ("undecided" if ci[0] is None or len(gaps) < 2 else "not supported" if ci[0] > bound else
             "supported" if ci[1] <= bound else "undecided")
        table.append({"model": m, "K": K, "pairs": len(gaps), "gap": float(np.mean(gaps)), "ci95": ci,
                      "bound": bound, "verdict": v})
    return pairs, table


# ----------------------------------------------------------------------------------------------------
# verdicts

def h3_verdict(dil, comparison, diag):
    """Decided only when s is identified, the fit quality is known and the dilution law fits, and the form
    comparison has its intervals; otherwise undecided, the reason first."""
    if dil is None:
        return "undecided", "too few complete runs or budgets to fit"
    s = dil["params"].get("s")
    if s is None or not s.get("identified", True):
        return "undecided", f"s is {(s or {}).get('why', 'not fitted')}: the data cannot say how K matters"
    if diag is None or diag["verdict"] == "unknown":
        return "undecided", ("the fit quality is unknown (" + (diag["reason"] if diag else "no diagnostics") +
                             "): a law that may not fit decides nothing")
    if diag["verdict"] == "misfit":
        return "undecided", f"the dilution law does not fit these data ({diag['reason']})"
    better = {(p["a"], p["b"]): p for p in (comparison or {}).get("pairs", [])}
    for other in ("shared", "disjoint"):
        p = better.get(("dilution", other))
        if p is None or p["ci95"][0] is None:
            return "undecided", (f"the held-out comparison of dilution and {other} has no interval (too few runs or "
                                 "subset seeds to cross-validate)")
    for other in ("shared", "disjoint"):
        p = better[("dilution", other)]
        if p["better"] == other:
            what = "one shared source (s = 0): no K effect" if other == "shared" else "disjoint components (s = 1)"
            return "not supported", (f"the {other} form predicts held-out runs better: {what} (difference of held-out "
                                     f"MSE {p['mse_difference']:+.2e}, 95% {_ci(p['ci95'], 3)})")
    if s["ci95"][0] is None:
        return "undecided", "no interval for s" + (f" ({s['why']})" if s.get("why") else "")
    ci = s["ci95"]
    if ci[0] <= 0.01:
        return "undecided", (f"s's 95% interval {_ci(ci, 3)} reaches 0 (one shared source cannot be excluded)")
    if ci[1] >= 0.99:
        return "undecided", f"s's 95% interval {_ci(ci, 3)} reaches 1 (disjoint components cannot be excluded)"
    return "supported", f"0 < s < 1: s = {s['estimate']:.3f}, 95% {_ci(ci, 3)}, and no fixed-s form predicts held-out runs better"


def k_effect_statement(verdict_h3, dil, verdict_h2=None):
    """The report's headline, consistent with the H2 and H3 rows: it never says 'no K effect' while the
    direct contrast (H2) finds one, and never repeats the verdict's own words."""
    if dil is None:
        return "No fit: too few complete runs or budgets."
    s = dil["params"].get("s", {})
    v, why = verdict_h3
    h2 = verdict_h2[0] if verdict_h2 else None
    h2_note = (" The direct contrast (H2) does find the in-training loss rising with K at fixed D; the law does "
               "not say how much of it is dilution." if h2 == "supported" else "")
    if v == "supported":
        return f"The data show a K effect: the sharing exponent s = {s['estimate']:.3f}, 95% {_ci(s['ci95'], 3)}."
    no_effect = "no K effect" in why or "reaches 0" in why
    if no_effect and h2 != "supported":
        return (f"**The data do not show a K effect**: H3 is {v} — {why}. The fitted s "
                f"({_fmt(s.get('estimate'), 3)}) is not a finding.")
    return f"**No K effect can be claimed from the law**: H3 is {v} — {why}. The fitted s is not a finding.{h2_note}"


def verdict_table(h1, h2, v3, gain, h5, h6):
    """{hypothesis: (verdict, what decided it)}, in the order of EXPERIMENT_PLAN.md."""
    return {"H1 floors": h1_verdict(h1), "H2 loss vs K at fixed D": h2[1:], "H3 dilution law": v3,
            "H4 mixing gain": h4_verdict(gain), "H5 held-out categories": h5[1:],
            "H6 identification cost": h6_verdict(h6),
            "H7 Hilberg (exploratory)": ("undecided", "not analysed: needs compression curves per category")}


def h1_verdict(h1):
    """One model's H1 as it is; several models' verdicts and reasons joined, each named."""
    if len(h1) == 1:
        return h1[0]["verdict"], h1[0]["why"]
    if not h1:
        return "undecided", "no K = 1 and larger-K fits to compare"
    return "; ".join(f"{h['model']}: {h['verdict']}" for h in h1), "; ".join(f"{h['model']}: {h['why']}" for h in h1)


def h6_verdict(h6):
    """The verdict shared by every (model, K) cell, else undecided; each cell's gap against its bound."""
    if not h6:
        return "undecided", "no tagged / untagged twin pairs"
    return ((h6[0]["verdict"] if len({t["verdict"] for t in h6}) == 1 else "undecided"),
            "; ".join(f"{t['model']} K={t['K']}: gap {t['gap']:+.4f} "
                      + (_ci(t["ci95"]) if t["ci95"][0] is not None else f"(no interval from {t['pairs']} twin pair)")
                      + f" vs bound {t['bound']:.4f}" for t in h6))
