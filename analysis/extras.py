"""The analyses analyze.py's report gained with issue 17, wired in through a few hooks: the transfer matrix
t_ij (transfer.py), H7's Hilberg exponents (hilberg.py), the IsoFLOP slices (isoflop.py) and H2's second
half (the loss ratio against the disjoint prediction K^beta, defined here).

compute() takes what analyze.py already has (its rows, its runs, the fitted laws, the H2 cells and its
equal-weight helper: passed in, so this module never imports analyze) and returns one dict; public() is its
part for fits.json; sections(), h2_lines() and plots() turn it into the report. Nothing here is slow by
default: the transfer matrix and the IsoFLOP slices are power-law refits (seconds), the store is read only
when analyze.py reads it anyway (no --no_baselines), and H7's compression curves are read from their cache
(baselines.py --hilberg) and computed only with analyze.py --hilberg.
"""
import math
from pathlib import Path

import numpy as np

import store as st
from analysis import hilberg, isoflop, transfer
from analysis import powerlaw as pl

CACHE_DIR = "~/.cache/arxiv-ergodic-scaling"  # baselines.py --cache_dir's default: one cache for both


def add_arguments(p):
    """analyze.py's flags for these analyses."""
    p.add_argument("--hilberg", action="store_true",
                   help="compute H7's compression curves when they are not cached yet (minutes per store; "
                   "baselines.py --hilberg computes the same cache)")
    p.add_argument("--cache_dir", default=CACHE_DIR, help="where H7's compression curves are cached, by store id")


def compute(rows, runs, main_fits, args, h2_cells, equal_weight):
    """Every extra analysis as one dict. rows / runs: analyze.py's; main_fits: {form: fit} on all data;
    h2_cells: analyze.cells_by_K(rows, "in"); equal_weight: analyze.equal_weight."""
    store, store_why = open_store(runs, args)
    n_boot, seed = args.n_boot, args.seed
    models = {r["model"]: r["n_params_nonembedding"] for r in rows if not r["excluded"]}
    fit = main_fits.get("dilution") or main_fits.get("disjoint")
    return {"transfer": transfer_matrices(rows, store, store_why, n_boot, seed),
            "h7": h7(rows, store, store_why, args),
            "isoflop": isoflop_slices(rows, n_boot, seed),
            "h2_ratio": h2_ratio(h2_cells, fit, models, equal_weight, n_boot, seed)}


def open_store(runs, args):
    """(Store, None) for the first readable store of the included runs, else (None, why). Not opened with
    --no_baselines: that flag keeps analyze.py off the store."""
    if getattr(args, "no_baselines", False):
        return None, "--no_baselines (the store is not read)"
    why = "the runs name no store (data_dir)"
    for sd in sorted({str(r["config"].get("data_dir")) for r in runs if not r["excluded"] and r["config"].get("data_dir")}):
        try:
            return st.Store(sd), None
        except (st.StoreError, TypeError, OSError) as e:
            why = f"store {sd} not readable ({e})"
    return None, why


# ----------------------------------------------------------------------------------------------------
# transfer matrix

NEEDS_PAIRS = ("needs pair runs (K = 2: each pair of categories, one budget) and specialists (K = 1) of those "
               f"categories at >= {transfer.MIN_BUDGETS} budgets spanning the pairs' tokens per category "
               "(EXPERIMENT_PLAN.md, P3)")


def pick_pair_budget(spec, pairs_by_budget):
    """The pair budget with the most estimable t_ij (then the most pair runs, then the larger): the matrix
    is read at one budget, as the plan runs it; pairs of other budgets are listed, not pooled."""
    fits, why = transfer.fit_specialists(transfer._design(spec)[0])

    def score(b):
        _, pairs = transfer._design(pairs_by_budget[b])
        t, _ = transfer.point_estimates(fits, why, pairs)
        return len(t), len(pairs_by_budget[b]), b
    return max(pairs_by_budget, key=score)


def transfer_matrices(rows, store, store_why, n_boot, seed):
    """{"models": {model: result}, "why": reason when no model has pair runs}."""
    recs = [r for r in transfer.runs_from_rows(rows) if not r["tagged"]]
    out = {}
    for m in sorted({str(r["model"]) for r in recs if len(r["categories"]) == 2}):
        mine = [r for r in recs if str(r["model"]) == m]
        spec = [r for r in mine if len(r["categories"]) == 1]
        by_budget = {}
        for r in mine:
            if len(r["categories"]) == 2:
                by_budget.setdefault(r["budget"], []).append(r)
        b = pick_pair_budget(spec, by_budget)
        T = transfer.transfer_matrix(spec + by_budget[b], n_boot=max(n_boot, 2), seed=seed)
        T["pair_budget"] = b
        T["other_budgets"] = {k: len(v) for k, v in sorted(by_budget.items()) if k != b}
        T["n_boot_requested"] = n_boot
        T["similarity"], T["similarity_why"] = None, store_why
        if store is not None:
            cats = [c for c in T["categories"] if c in store.categories]
            T["jsd"] = transfer.jsd_matrix(transfer.unigram_counts(store, cats))
            T["similarity"] = transfer.transfer_vs_similarity(T, T["jsd"])
        out[m] = T
    return {"models": out, "why": None if out else "no pair runs (K = 2) in this sweep"}


# ----------------------------------------------------------------------------------------------------
# H7

def specialist_exponents(rows):
    """({category: fitted data exponent beta_c}, model, {category: why not}) from the K = 1 runs of the model
    with the most categories fitted (each category's own curve L = E_c + B_c D^-beta_c, >= 3 budgets)."""
    recs = [r for r in transfer.runs_from_rows(rows) if not r["tagged"] and len(r["categories"]) == 1]
    best = ({}, None, {})
    for m in sorted({str(r["model"]) for r in recs}):
        spec, _ = transfer._design([r for r in recs if str(r["model"]) == m])
        fits, why = transfer.fit_specialists(spec)
        if len(fits) > len(best[0]) or best[1] is None:
            best = ({c: f["a"] for c, f in fits.items()}, m, why)
    return best


def read_hilberg_cache(store, cache_dir):
    """The cached curves of this store (whatever parameters baselines.py used), or None."""
    import json
    path = Path(cache_dir).expanduser() / f"hilberg_{store.store_id[:16]}.json"
    try:
        hil = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return hil if (hil.get("key") or {}).get("store_id") == store.store_id else None


def h7(rows, store, store_why, args):
    """{"hilberg": curves and fits per category, "corr": the exploratory correlation} or {"why"}."""
    if store is None:
        return {"why": f"no compression curves: {store_why}"}
    hil = read_hilberg_cache(store, args.cache_dir)
    if hil is None and getattr(args, "hilberg", False):
        import baselines
        hil = baselines.hilberg_baselines(store, args.cache_dir)
    if hil is None:
        return {"why": f"no compression curves cached for store {store.store_id[:16]} under {args.cache_dir}: run "
                       "`python baselines.py --data_dir <store> --hilberg` (minutes; cached by store id) or pass "
                       "--hilberg"}
    exps, model, why = specialist_exponents(rows)
    corr = hilberg.correlate(hil, exps, "ppmd", n_boot=max(args.n_boot, 2), seed=args.seed)
    corr["model"], corr["exponents"], corr["not_fitted"] = model, exps, why
    return {"hilberg": hil, "corr": corr}


def h7_verdict(x, default):
    """The H7 row of the verdicts table (exploratory: the correlation's sign, or undecided)."""
    h = x["h7"]
    if "corr" not in h:
        return default
    c = h["corr"]
    if c["rho"] is None:
        return ("undecided", f"exploratory; compression curves of {len(h['hilberg']['per_category'])} categories, "
                f"but {c['n']} with a fitted data exponent beta_c (specialists at >= {transfer.MIN_BUDGETS} "
                "budgets); the correlation needs 4")
    v = {"> 0": "supported", "< 0": "not supported"}.get(c["verdict"], "undecided")
    return (v, f"exploratory: Spearman rho(1 - beta_H,c, beta_c) = {c['rho']:.3f} "
               f"[{c['ci'][0]:.3f}, {c['ci'][1]:.3f}] over {c['n']} categories")


# ----------------------------------------------------------------------------------------------------
# IsoFLOP

def isoflop_slices(rows, n_boot, seed):
    """isoflop.isoflop() on the rows, or {"why"} (too few model sizes, or no bootstrap)."""
    pts = isoflop.points_from_rows(rows)
    sizes = sorted({p["N"] for p in pts})
    if len(sizes) < isoflop.MIN_SIZES:
        return {"why": f"IsoFLOP slices need >= {isoflop.MIN_SIZES} model sizes with >= {isoflop.MIN_BUDGETS} "
                       f"budgets each; this sweep has {len(sizes)} size(s)"}
    if not n_boot:
        return {"why": "IsoFLOP slices not computed: --n_boot 0 gives the optimum no interval"}
    return {"by_K": isoflop.isoflop(pts, n_boot=n_boot, seed=seed)}


# ----------------------------------------------------------------------------------------------------
# H2's second half: does the loss grow more slowly with K than the disjoint law's K^beta?

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


def h2_ratio_cell(a, b, k0, k1, fit, N, equal_weight, n_boot, rng):
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


def h2_ratio(cells, fit, n_params, equal_weight, n_boot, seed):
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
            row = h2_ratio_cell(byK[k0], byK[k1], k0, k1, fit, n_params.get(m), equal_weight, n_boot, rng)
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


def h2_lines(x):
    """Lines for the H2 section: the ratio test's definition, verdict and table."""
    h = (x or {}).get("h2_ratio")
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


# ----------------------------------------------------------------------------------------------------
# report, plots, fits.json

def sections(x):
    """The report sections: transfer matrix, H7, IsoFLOP (each one line when the sweep cannot support it)."""
    L = ["", "## Transfer matrix t_ij", ""]
    tm = x["transfer"]
    if not tm["models"]:
        L.append(f"Not estimated: {tm['why']}; the matrix {NEEDS_PAIRS}.")
    for m, T in tm["models"].items():
        L += [f"Model {m}; pair runs at the planned budget {T['pair_budget']:,.0f}" + (
            "; pair runs at other budgets not used (the matrix is read at one budget): " + ", ".join(
                f"{n} at {b:,.0f}" for b, n in T["other_budgets"].items()) if T["other_budgets"] else "") + "."]
        if T["n_boot_requested"] < 2:
            L.append(f"(--n_boot {T['n_boot_requested']}: intervals from {T['n_boot']} replicates, not to be read.)")
        body = transfer.markdown_section(T, T["similarity"])[1:]
        if T["similarity"] is None:
            body += ["", f"t_ij against text similarity (JSD of unigram distributions): not computed, {T['similarity_why']}."]
        L += body + [""]
    h = x["h7"]
    if "hilberg" in h:
        L += [""] + hilberg.markdown_section(h["hilberg"], h["corr"])
        c = h["corr"]
        if c["rho"] is None:
            L += ["", f"Exploratory correlation not computed: {c['n']} categories have both a Hilberg fit and a fitted "
                  f"data exponent (specialists at >= {transfer.MIN_BUDGETS} budgets); it needs 4."]
    else:
        L += ["", "## H7 (exploratory): Hilberg exponents", "", f"Not analysed: {h['why']}."]
    iso = x["isoflop"]
    L += [""] + (isoflop.markdown_section(iso["by_K"]) if "by_K" in iso else
                 ["## IsoFLOP slices", "", f"Not computed: {iso['why']}."])
    return L


def plots(x, out):
    """[(title, file name)] of the figures these analyses add."""
    made = []
    for m, T in x["transfer"]["models"].items():
        name = f"transfer_{str(m).replace('/', '-')}.png"
        transfer.plot_heatmap(T, Path(out) / name)
        made.append((f"Transfer matrix t_ij ({m})", name))
    if any(r["slices"] for r in x["isoflop"].get("by_K", {}).values()):
        isoflop.plot(x["isoflop"]["by_K"], Path(out) / "isoflop.png")
        made.append(("IsoFLOP slices", "isoflop.png"))
    return made


def _plain(v):
    """JSON-ready: numpy scalars to floats, +-inf to strings, tuples keys (i, j) to 'i|j'."""
    if isinstance(v, dict):
        return {("|".join(map(str, k)) if isinstance(k, tuple) else str(k)): _plain(w) for k, w in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(w) for w in v]
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(v) else (str(float(v)) if not math.isnan(v) else None)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def public(x):
    """The fits.json part: transfer matrices (no replicates), H7 fits and correlation, IsoFLOP, H2's ratio."""
    tm = {m: {k: v for k, v in T.items() if k not in ("boot",)} for m, T in x["transfer"]["models"].items()}
    for T in tm.values():
        T["t"] = [{"i": i, "j": j, "t": v, "ci95": T["ci"][(i, j)]} for (i, j), v in sorted(T["t"].items())]
        T.pop("ci")
    h = x["h7"]
    h7_pub = {"why": h["why"]} if "why" in h else {
        "key": h["hilberg"].get("key"), "corr": h["corr"],
        "per_category": {c: {k: r.get(k) for k in ("unit", "symbols", "fit_ppmd", "fit_xz")}
                         for c, r in h["hilberg"]["per_category"].items()}}
    return _plain({"transfer": {"models": tm, "why": x["transfer"]["why"]}, "h7": h7_pub,
                   "isoflop": x["isoflop"], "h2_ratio": x["h2_ratio"]})
