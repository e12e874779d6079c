"""Transfer matrix t_ij (EXPERIMENT_PLAN.md, P3): how many tokens of its own one token of category j is
worth to category i.

Category i trained beside j (a K = 2 pair run) sees D_i of its own tokens and D_j of j's. With i's
specialist curve L_i(D) = E_i + B_i * D^(-beta_i), fitted on K = 1 runs of i at several budgets, the pair
run's loss on i defines the effective data D_i + t_ij * D_j:

    L_i(pair) = E_i + B_i * (D_i + t_ij * D_j)^(-beta_i)    =>    t_ij = (D_eff,i - D_i) / D_j

t_ij = 1: j's tokens are as good as i's own; 0: useless; < 0: interference. A pair whose loss lies
below i's fitted floor E_i has no finite t_ij and is listed (a bootstrap replicate may still reach +inf;
intervals keep it). Only pairs whose effective data lie inside the range of i's
specialist budgets (COVER_TOL beyond each end) get a value; the others are listed with the reason.

Intervals: a parametric bootstrap. The plan runs one specialist per (category, budget) and one run per
pair, so resampling whole runs would show no spread at all; instead each replicate refits every specialist
curve on its fitted values moved by noise and moves each pair loss by noise, so the specialist-fit
uncertainty and the pair run's own noise both propagate into t_ij. t_ij's interval inverts the test "the
pair's loss lies on i's curve at D_i + t·D_j" against those replicates (inverted_interval); the signed
asymmetry statistics take percentile intervals of the replicates of t_ij - t_ji. The noise (an SD of log loss) comes from
the sweep's noise floor, or replicate runs, or residuals of curves that do not interpolate (noise_model);
with none of these there is no interval (3 budgets and 3 parameters: zero residuals, which gave
"0.62 [0.62, 0.62]").

Input: a list of run records {"run_id", "model", "categories", "budget", "seed", "tagged", "tokens": {c: D_c},
"loss": {c: test loss}}; runs_from_rows() builds them from analyze.py's rows, runs_from_sweep() from run
directories.
"""
import json
import math
from pathlib import Path

import numpy as np

import store as st
from analysis import inference
from analysis import powerlaw as pl

MIN_BUDGETS = 3     # a specialist curve has 3 parameters
COVER_TOL = 1.25    # effective data may lie this factor beyond the specialists' token range


# ----------------------------------------------------------------------------------------------------
# run records

def runs_from_rows(rows):
    """Run records from analyze.py's rows (one per run and category; excluded runs are skipped)."""
    runs = {}
    for r in rows:
        if r.get("excluded") or not r.get("in_training") or r.get("test_loss") is None:
            continue
        rec = runs.setdefault(r["run_id"], {
            "run_id": r["run_id"], "model": r.get("model"), "categories": (r.get("categories") or "").split(),
            "budget": r.get("token_budget_planned"), "seed": r.get("seed"), "tagged": bool(r.get("tagged")),
            "tokens": {}, "loss": {}})
        rec["tokens"][r["category"]] = float(r["tokens_category"] or 0)
        rec["loss"][r["category"]] = float(r["test_loss"])
    return list(runs.values())


def _json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def runs_from_sweep(sweep_dir):
    """Run records from DIR/runs/* (or DIR/*): complete runs with a full schedule and finite test losses."""
    root = Path(sweep_dir) / "runs"
    root = root if root.is_dir() else Path(sweep_dir)
    out = []
    for rd in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        cfg, s, test = (_json(rd / n) for n in ("run_config.json", "summary.json", "test_results.json"))
        if not (cfg and s and test) or s.get("status") != "complete" or not s.get("schedule_complete"):
            continue
        cats = list(cfg.get("categories") or [])
        per = test.get("per_category") or {}
        loss = {c: per.get(c, {}).get("loss") for c in cats}
        if not cats or any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in loss.values()):
            continue
        out.append({"run_id": rd.name, "model": cfg.get("model_name"), "categories": cats,
                    "budget": cfg.get("token_budget") or cfg.get("token_budget_effective"),
                    "seed": cfg.get("seed"), "tagged": bool(cfg.get("tag_categories")),
                    "tokens": {c: float((s.get("tokens_per_category") or {}).get(c, 0)) for c in cats},
                    "loss": {c: float(v) for c, v in loss.items()}})
    return out


def _order(c):
    """The project's category order (store.CATEGORIES), unknown names after it alphabetically."""
    return (st.CATEGORIES.index(c), "") if c in st.CATEGORIES else (len(st.CATEGORIES), c)


def _design(runs):
    """Specialist points per category and pair runs per unordered pair, from untagged runs of one model."""
    runs = [r for r in runs if not r["tagged"]]
    models = sorted({str(r["model"]) for r in runs})
    if len(models) > 1:
        raise ValueError(f"the runs mix models ({', '.join(models)}); pass the runs of one model")
    spec, pairs = {}, {}
    for r in runs:
        if len(r["categories"]) == 1:
            c = r["categories"][0]
            spec.setdefault(c, []).append((r["tokens"][c], r["loss"][c], r["budget"], str(r.get("seed"))))
        elif len(r["categories"]) == 2:
            pairs.setdefault(tuple(sorted(r["categories"])), []).append(r)
    return spec, pairs


# ----------------------------------------------------------------------------------------------------
# estimation

def fit_specialists(spec):
    """{category: power-law fit (E, B, a = beta) + its points and residuals} for categories with specialists
    at >= MIN_BUDGETS budgets; {category: reason} for the others."""
    fits, why = {}, {}
    for c, pts in spec.items():
        x, y = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        if len({p[2] for p in pts}) < MIN_BUDGETS:
            why[c] = f"specialists of {c} at {len({p[2] for p in pts})} budget(s); the curve needs {MIN_BUDGETS}"
            continue
        f = pl.fit_power_law(x, y)
        f.update(x=x, y=y, resid=(y - pl.predict(f, x)) * math.sqrt(len(x) / max(len(x) - 3, 1)),
                 cluster=np.unique([p[3] for p in pts], return_inverse=True)[1])
        fits[c] = f
    return fits, why


def t_value(fit, L, Di, Dj):
    """t_ij from i's curve and the pair's mean loss on i and mean token counts."""
    if fit["B"] <= 0 or L <= fit["E"]:
        return math.inf
    d_eff = ((L - fit["E"]) / fit["B"]) ** (-1.0 / fit["a"])
    return (d_eff - Di) / Dj


def coverage_gap(fit, Di, Dj, t):
    """None when D_i .. D_i + max(t, 0)*D_j lies inside the specialists' token range (COVER_TOL beyond each
    end), else the reason."""
    lo, hi = fit["x"].min() / COVER_TOL, fit["x"].max() * COVER_TOL
    need_lo, need_hi = min(Di, Di + t * Dj) if math.isfinite(t) else Di, Di + max(t, 0) * Dj
    if need_lo < lo:
        return f"no specialist near {need_lo:,.0f} tokens (lowest: {fit['x'].min():,.0f})"
    if not math.isfinite(need_hi) or need_hi > hi:
        return f"no specialist near {need_hi:,.0f} tokens (highest: {fit['x'].max():,.0f})"
    return None


def _pair_means(pair_runs, i, j):
    L = np.mean([r["loss"][i] for r in pair_runs])
    Di = np.mean([r["tokens"][i] for r in pair_runs])
    Dj = np.mean([r["tokens"][j] for r in pair_runs])
    return L, Di, Dj


def point_estimates(fits, why, pairs):
    """{(i, j): t} for ordered pairs that can be estimated, and the list of those that cannot."""
    t, missing = {}, []
    for (a, b), pr in sorted(pairs.items()):
        for i, j in ((a, b), (b, a)):
            if i not in fits:
                missing.append({"i": i, "j": j, "reason": why.get(i, f"no specialist of {i}")})
                continue
            L, Di, Dj = _pair_means(pr, i, j)
            v = t_value(fits[i], L, Di, Dj)
            gap = coverage_gap(fits[i], Di, Dj, v) if math.isfinite(v) else (
                f"the pair's loss on {i} ({L:.4f}) lies below {i}'s fitted floor E = {fits[i]['E']:.4f}: "
                "no amount of its own data explains it")
            if gap:
                missing.append({"i": i, "j": j, "reason": gap})
            else:
                t[(i, j)] = v
    return t, missing


MIN_NOISE_DF = 3     # residual degrees of freedom (pooled) before residuals may serve as the noise estimate


def replicate_noise(runs):
    """(SD of log loss, df) among replicate records (the same categories and budget, different seeds), pooled
    over categories; (None, 0) without replicates."""
    groups = {}
    for r in runs:
        if not r["tagged"]:
            for c, v in r["loss"].items():
                groups.setdefault((tuple(sorted(r["categories"])), r["budget"], c), []).append(math.log(v))
    ss, df = 0.0, 0
    for v in groups.values():
        if len(v) > 1:
            ss += float(((np.asarray(v) - np.mean(v)) ** 2).sum())
            df += len(v) - 1
    return (math.sqrt(ss / df), df) if df else (None, 0)


def noise_model(fits, runs, noise_log_sd=None, noise_df=None):
    """The noise of one test loss, as an SD of log loss, where it came from and its degrees of freedom
    (None: unknown, a normal quantile is used): the noise floor passed in
    (replicates of the whole sweep), else replicates among these runs, else the residuals of the specialist
    curves that do not interpolate their points (> 3 budgets; pooled df >= MIN_NOISE_DF). Never from curves
    with 3 points and 3 parameters (their residuals are 0: the intervals had zero width). Residuals miss
    any noise a seed's runs share across budgets, so they come last. (None, why, None) when none is available."""
    if noise_log_sd:
        return float(noise_log_sd), "the noise floor (replicate runs of the sweep)" + (
            f" ({noise_df} df)" if noise_df else ""), noise_df or None
    sd, df = replicate_noise(runs)
    if sd:
        return sd, f"replicate runs among the specialists / pairs ({df} df)", df
    rel = [(f["y"] - pl.predict(f, f["x"])) / f["y"] for f in fits.values() if len(f["x"]) > MIN_BUDGETS]
    df = sum(len(f["x"]) - MIN_BUDGETS for f in fits.values() if len(f["x"]) > MIN_BUDGETS)
    if df >= MIN_NOISE_DF:
        return math.sqrt(float(sum((r ** 2).sum() for r in rel)) / df), (
            f"residuals of the specialist curves with more than {MIN_BUDGETS} budgets ({df} df; misses noise a "
            "seed shares across its budgets)"), df
    return None, (f"no noise estimate: no replicate runs and no specialist curve with more than {MIN_BUDGETS} "
                  f"budgets (a curve through {MIN_BUDGETS} points interpolates them: residuals 0)"), None


def _replicate(fits, pairs, keys, sd, rng, shared=(0.0, 0.0)):
    """One parametric bootstrap replicate: each specialist point and each pair mean moved by log-normal noise
    of SD sd (a pair mean of n runs by sd / sqrt(n)). shared = (across budgets, run level): the shares of
    sd^2 that a category's specialists of one seed carry at every budget (one draw per seed, moving the
    whole curve) and that the two categories of one pair run share (one draw per pair). Returns
    ({(i, j): t_ij}, {category: refitted curve}, {(i, j): the pair's moved mean loss on i})."""
    rb, rr = shared
    refit = {}
    for c, f in fits.items():
        z = math.sqrt(rb) * rng.normal(0, 1, f["cluster"].max() + 1)[f["cluster"]] + \
            math.sqrt(1 - rb) * rng.normal(0, 1, len(f["x"]))
        refit[c] = pl.fit_power_law(f["x"], pl.predict(f, f["x"]) * np.exp(sd * z))
    out, loss, run = {}, {}, {}
    for i, j in keys:
        p = tuple(sorted((i, j)))
        pr = pairs[p]
        if p not in run:
            run[p] = rng.normal()
        L, Di, Dj = _pair_means(pr, i, j)
        z = math.sqrt(rr) * run[p] + math.sqrt(1 - rr) * rng.normal()
        loss[(i, j)] = L = L * math.exp(sd / math.sqrt(len(pr)) * z)
        out[(i, j)] = t_value(refit[i], L, Di, Dj)
    return out, refit, loss


def bootstrap(fits, pairs, keys, n_boot, seed, sd, shared=(0.0, 0.0)):
    """({(i, j): array of n_boot replicates of t_ij}, the replicates' curves {category: [fit]}, their pair
    losses {(i, j): array}) — a parametric bootstrap with noise sd and its shared parts (_replicate,
    noise_shares); inverted_interval reads the curves and losses."""
    rng = np.random.default_rng(seed)
    reps = [_replicate(fits, pairs, keys, sd, rng, shared) for _ in range(n_boot)] if sd else []
    return ({k: np.array([r[0][k] for r in reps]) for k in keys}, {c: [r[1][c] for r in reps] for c in fits},
            {k: np.array([r[2][k] for r in reps]) for k in keys})


GRID_T = 801   # points of the effective-data grid on which the interval of t_ij is inverted


def inverted_interval(fit, L, Di, Dj, curves, losses, level=0.95, df=None):
    """The interval of t_ij by inverting the test of "the pair's loss lies on i's curve at D_i + t·D_j":
    t is kept when g(t) = log L - log f(D_i + t·D_j) lies within z·SD of its bootstrap null draws
    g*(t) = (log L* - log L) - (log f*(x) - log f(x)) (a curve refitted on moved points, a moved pair loss).
    g is nearly linear in the noise at every fixed x, so its spread barely depends on where the truth lies;
    the percentile interval of t_ij itself (a steep, bounded inverse: t >= -D_i / D_j, +inf beyond the
    floor) was skewed the wrong way around a noisy curve and covered 88% / 87% (BENCHMARKS.md, issue 21).
    The grid spans D_i·1e-3 .. the specialists' largest budget x COVER_TOL^2; an end that reaches the grid's
    top is +inf, one at its bottom is -D_i / D_j (no data can be worth less than nothing). df: the noise
    SD's degrees of freedom; g*'s spread is proportional to that SD, so the quantile is Student's t with its
    df (normal when unknown)."""
    from scipy.stats import norm
    if len(losses) < 2:
        return [None, None]
    z = inference._t(df, level) if df else float(norm.ppf(0.5 + level / 2))
    hi_x = max(float(fit["x"].max()) * COVER_TOL ** 2, Di * 2)
    x = Di + np.concatenate([-Di * (1 - np.geomspace(1e-3, 1, GRID_T // 2, endpoint=False)),
                             np.geomspace(Di * 1e-3, hi_x - Di, GRID_T - GRID_T // 2)])
    # the estimate itself (g = 0 there: kept whenever its null spread is finite) and a fine grid around it:
    # under small noise the kept band is narrower than the coarse grid's ~2% steps, which kept one point
    # or none (zero width, or the estimate outside its interval: refused)
    t_hat = t_value(fit, L, Di, Dj)
    if math.isfinite(t_hat) and Di + t_hat * Dj > 0:
        x_hat = Di + t_hat * Dj
        near = np.geomspace(1e-7, 0.1, GRID_T // 4)
        x = np.concatenate([x, [x_hat], x_hat * (1 - near), x_hat * (1 + near)])
    x = np.unique(x[(x > 0) & (x <= hi_x * (1 + 1e-12))])
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        f0 = np.log(pl.predict(fit, x))
        fb = np.log(np.array([pl.predict(c, x) for c in curves]))            # (n_boot, grid)
        null = (np.log(losses) - math.log(L))[:, None] - (fb - f0[None, :])
        sd = np.nanstd(null, axis=0, ddof=1)
        g = math.log(L) - f0
        h = np.where(np.isfinite(g) & np.isfinite(sd), z * sd - np.abs(g), -np.inf)   # >= 0: kept
    keep = h >= 0
    if not keep.any():
        return [None, None]
    k = np.flatnonzero(keep)
    t = (x - Di) / Dj

    def edge(a, b):
        """The t where h crosses 0 between kept grid point a and rejected b (linear in x)."""
        if not np.isfinite(h[b]):
            return float(t[a])
        w = h[a] / (h[a] - h[b])
        return float(t[a] + w * (t[b] - t[a]))
    # the kept set of a monotone g is one run of grid points; a gap (a wiggling band) is bridged
    lo = -Di / Dj if k[0] == 0 else edge(k[0], k[0] - 1)
    hi = math.inf if k[-1] == len(x) - 1 else edge(k[-1], k[-1] + 1)
    return [lo, hi]


def transfer_matrix(runs, n_boot=1000, seed=0, level=0.95, noise_log_sd=None, noise_df=None, shared=(0.0, 0.0)):
    """The transfer matrix with intervals. Returns {"categories", "t": {(i, j): value}, "ci": {(i, j): [lo, hi]},
    "boot": {(i, j): replicates}, "missing": [{"i", "j", "reason"}], "specialists": {c: {E, B, beta,
    at_bound}}, "asymmetry": see asymmetry(), "noise_sd", "noise_source", "n_boot", "level"}. noise_log_sd:
    the sweep's noise floor (SD of log test loss), when known; noise_df: its degrees of freedom; shared: the
    shares of its variance carried across a seed's budgets and by a run's categories (noise_shares)."""
    spec, pairs = _design(runs)
    fits, why = fit_specialists(spec)
    t, missing = point_estimates(fits, why, pairs)
    sd, source, df = noise_model(fits, runs, noise_log_sd, noise_df)
    boot, curves, losses = bootstrap(fits, pairs, sorted(t), n_boot, seed, sd, shared=shared)
    cats = sorted(set(spec) | {c for p in pairs for c in p}, key=_order)
    ci = {}
    for (i, j) in t:
        L, Di, Dj = _pair_means(pairs[tuple(sorted((i, j)))], i, j)
        ci[(i, j)] = inference.guarded(inverted_interval(fits[i], L, Di, Dj, curves[i], losses[(i, j)], level, df),
                                    t[(i, j)])
    res = {"categories": cats, "t": t, "ci": ci,
           "boot": boot, "missing": missing, "n_boot": n_boot if sd else 0, "level": level,
           "specialists": {c: {"E": f["E"], "B": f["B"], "beta": f["a"], "at_bound": f["at_bound"],
                               "n": len(f["x"])} for c, f in fits.items()},
           "noise_sd": sd, "noise_source": source, "noise_df": df,
           "noise_shared": {"across_budgets": shared[0], "run_level": shared[1]}}
    res["asymmetry"] = asymmetry(res)
    return res


# ----------------------------------------------------------------------------------------------------
# asymmetry and similarity

def asymmetry(res):
    """Signed statistics, whose intervals hold 0 under symmetry: per unordered pair (i before j in the
    category order) t_ij - t_ji with its interval (same replicates) and a p from the replicates' SD, Holm
    across the pairs (one family: "decided" counts the Holm rejections); and the mean of t_ij - t_ji over
    the pairs with its interval. The index A = sum |t_ij - t_ji| / sum |t_ij + t_ji| is descriptive only:
    noise alone makes it > 0, so its bootstrap interval excluded a symmetric truth every time."""
    order = {c: k for k, c in enumerate(res["categories"])}
    both = sorted(((i, j) for i, j in res["t"] if order[i] < order[j] and (j, i) in res["t"]),
                  key=lambda p: (order[p[0]], order[p[1]]))
    if not both:
        return {"pairs": [], "index": None, "mean_diff": None, "mean_diff_ci": [None, None], "decided": 0,
                "family": "transfer pairs, Holm"}
    per = []
    for i, j in both:
        est = res["t"][(i, j)] - res["t"][(j, i)]
        with np.errstate(invalid="ignore"):
            diff = res["boot"][(i, j)] - res["boot"][(j, i)] if res["n_boot"] else np.array([])
        ci = inference.guarded(pl.interval(diff), est) if len(diff) else [None, None]
        per.append({"i": i, "j": j, "diff": est, "ci": ci,
                    "p": inference.boot_p(est, diff) if ci[0] is not None else None})
    tested = [p for p in per if p["p"] is not None]
    for p in per:
        p["holm_rejected"] = None
    for p, r in zip(tested, inference.holm([p["p"] for p in tested])):
        p["holm_rejected"] = bool(r)
    with np.errstate(invalid="ignore"):
        num = sum(abs(res["t"][(i, j)] - res["t"][(j, i)]) for i, j in both)
        den = sum(abs(res["t"][(i, j)] + res["t"][(j, i)]) for i, j in both)
        mean = float(np.mean([p["diff"] for p in per]))
        reps = (np.mean([res["boot"][(i, j)] - res["boot"][(j, i)] for i, j in both], axis=0)
                if res["n_boot"] else np.array([]))
    return {"pairs": per, "index": float(num / den) if den > 0 and np.isfinite(den) else None,
            "mean_diff": mean, "mean_diff_ci": inference.guarded(pl.interval(reps), mean) if len(reps) else [None, None],
            "decided": sum(bool(p["holm_rejected"]) for p in per), "family": "transfer pairs, Holm"}


def unigram_counts(store, categories=None, split="train"):
    """{category: token-count vector} over the store's papers of a split."""
    counts = {}
    for c in categories or store.categories:
        v = np.zeros(max(store.vocab_size, 1), dtype=np.int64)
        for pid in store.papers(split, [c]):
            v += np.bincount(np.asarray(store.paper_tokens(pid), dtype=np.int64), minlength=len(v))[:len(v)]
        counts[c] = v
    return counts


def jsd(p, q):
    """Jensen-Shannon divergence in bits (0: identical, 1: disjoint supports) of two count vectors."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))
    return 0.5 * kl(p) + 0.5 * kl(q)


def jsd_matrix(counts):
    """{(i, j): JSD} for every ordered pair of distinct categories."""
    return {(i, j): jsd(counts[i], counts[j]) for i in counts for j in counts if i != j}


def transfer_vs_similarity(res, jsd_by_pair):
    """Spearman's rho between t_ij and JSD(i, j) over the estimated ordered pairs, with its bootstrap interval
    (the JSD is a fixed property of the store; the interval carries t_ij's uncertainty). Negative rho:
    the more alike two categories' unigrams, the more they transfer."""
    keys = [k for k in sorted(res["t"]) if k in jsd_by_pair]
    if len(keys) < 3:
        return {"n_pairs": len(keys), "rho": None, "ci": [None, None], "verdict": "too few pairs"}
    x = [jsd_by_pair[k] for k in keys]
    rho = pl.spearman([res["t"][k] for k in keys], x)
    reps = [pl.spearman([res["boot"][k][b] for k in keys], x) for b in range(res["n_boot"])]
    ci = inference.guarded(pl.interval(reps, res["level"]), rho)  # every replicate equal: no interval
    return {"n_pairs": len(keys), "rho": rho, "ci": ci, "verdict": pl.decided(ci)}


# ----------------------------------------------------------------------------------------------------
# the report's transfer matrices, from analyze.py's rows

NEEDS_PAIRS = ("needs pair runs (K = 2: each pair of categories, one budget) and specialists (K = 1) of those "
               f"categories at >= {MIN_BUDGETS} budgets spanning the pairs' tokens per category "
               "(EXPERIMENT_PLAN.md, P3)")


def pick_pair_budget(spec, pairs_by_budget):
    """The pair budget with the most estimable t_ij (then the most pair runs, then the larger): the matrix
    is read at one budget, as the plan runs it; pairs of other budgets are listed, not pooled."""
    fits, why = fit_specialists(_design(spec)[0])

    def score(b):
        _, pairs = _design(pairs_by_budget[b])
        t, _ = point_estimates(fits, why, pairs)
        return len(t), len(pairs_by_budget[b]), b
    return max(pairs_by_budget, key=score)


def noise_shares(rows):
    """((across budgets, run level), where from): the shares of the noise variance that a seed carries across
    its budgets and that one run's categories share, measured on the rows' replicate groups
    (analysis.noise_structure, every kind of replicate), each clipped to [0, 1]. A specialist curve refitted
    on independently moved points misses the first (the whole curve moves with its seed: 43% of the
    variance on the real-text pilot), and independent pair losses on i and j miss the second (it cancels
    from t_ij - t_ji). ((0, 0), why) without replicate groups: the noise is then taken as independent."""
    from analysis.noise_structure import noise_structure
    ns = noise_structure(rows, "any", n_boot=0)
    if not ns:
        return (0.0, 0.0), ("not measured (no replicate groups): the noise is taken as independent across budgets "
                            "and categories")
    keys = {"frac_shared_across_budgets": "across-budget share not measured (no replicate group at 2+ budgets)",
            "frac_run_level": "run-level share not measured (no replicate group with 2+ categories)"}
    # None: the moment estimate had no pairs of that kind (or a zero denominator); taken as 0, and said so
    f = [min(max(ns[k], 0.0), 1.0) if ns[k] is not None else 0.0 for k in keys]
    gaps = [why for k, why in keys.items() if ns[k] is None]
    return (f[0], f[1]), (f"replicate groups of the sweep ({ns['n_groups']} groups, analysis/noise_structure.py)"
                          + "".join(f"; {g}: taken as 0" for g in gaps))


def transfer_matrices(rows, store, store_why, n_boot, seed, noise_log_sd=None, noise_df=None):
    """{"models": {model: result}, "why": reason when no model has pair runs}; noise_log_sd: the noise floor
    (noise_df: its degrees of freedom)."""
    recs = [r for r in runs_from_rows(rows) if not r["tagged"]]
    out = {}
    for m in sorted({str(r["model"]) for r in recs if len(r["categories"]) == 2}):
        mine = [r for r in recs if str(r["model"]) == m]
        spec = [r for r in mine if len(r["categories"]) == 1]
        by_budget = {}
        for r in mine:
            if len(r["categories"]) == 2:
                by_budget.setdefault(r["budget"], []).append(r)
        b = pick_pair_budget(spec, by_budget)
        shared, T_why = noise_shares([r for r in rows if str(r.get("model")) == m])
        T = transfer_matrix(spec + by_budget[b], n_boot=max(n_boot, 2), seed=seed, noise_log_sd=noise_log_sd,
                              noise_df=noise_df, shared=shared)
        T["noise_shared_source"] = T_why
        T["pair_budget"] = b
        T["other_budgets"] = {k: len(v) for k, v in sorted(by_budget.items()) if k != b}
        T["n_boot_requested"] = n_boot
        T["similarity"], T["similarity_why"] = None, store_why
        if store is not None:
            cats = [c for c in T["categories"] if c in store.categories]
            T["jsd"] = jsd_matrix(unigram_counts(store, cats))
            T["similarity"] = transfer_vs_similarity(T, T["jsd"])
        out[m] = T
    return {"models": out, "why": None if out else "no pair runs (K = 2) in this sweep"}


def public(tm):
    """The fits.json part: the matrices without their replicates, t_ij as a list."""
    models = {m: {k: v for k, v in T.items() if k not in ("boot",)} for m, T in tm["models"].items()}
    for T in models.values():
        T["t"] = [{"i": i, "j": j, "t": v, "ci95": T["ci"][(i, j)]} for (i, j), v in sorted(T["t"].items())]
        T.pop("ci")
    return {"models": models, "why": tm["why"]}
