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

Intervals: a residual bootstrap. The plan runs one specialist per (category, budget) and one run per pair,
so resampling whole runs would show no spread at all; instead each replicate refits every specialist
curve on fitted + resampled residuals and perturbs each pair loss by a resampled residual, so the
specialist-fit uncertainty and the pair run's own noise both propagate into t_ij. Residuals are pooled
over categories (the noise of one model's test loss is much the same across categories, and one
category's 5 budgets leave only 2 degrees of freedom) and scaled by sqrt(n / (n - 3)).

Input: a list of run records {"run_id", "model", "categories", "budget", "seed", "tagged", "tokens": {c: D_c},
"loss": {c: test loss}}; runs_from_rows() builds them from analyze.py's rows, runs_from_sweep() from run
directories.
"""
import json
import math
from pathlib import Path

import numpy as np

import store as st
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
            spec.setdefault(c, []).append((r["tokens"][c], r["loss"][c], r["budget"]))
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
        f.update(x=x, y=y, resid=(y - pl.predict(f, x)) * math.sqrt(len(x) / max(len(x) - 3, 1)))
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


def _replicate(fits, pairs, keys, pool, rng):
    """One bootstrap replicate of every t_ij in keys."""
    refit = {}
    for c, f in fits.items():
        y = pl.predict(f, f["x"]) + rng.choice(pool, len(f["x"]))
        refit[c] = pl.fit_power_law(f["x"], y)
    out = {}
    for i, j in keys:
        pr = pairs[tuple(sorted((i, j)))]
        L, Di, Dj = _pair_means(pr, i, j)
        L = L + rng.choice(pool, len(pr)).mean()
        out[(i, j)] = t_value(refit[i], L, Di, Dj)
    return out


def bootstrap(fits, pairs, keys, n_boot, seed):
    """{(i, j): array of n_boot replicates} (residual bootstrap, see the module doc)."""
    rng = np.random.default_rng(seed)
    pool = np.concatenate([f["resid"] for f in fits.values()]) if fits else np.zeros(1)
    reps = [_replicate(fits, pairs, keys, pool, rng) for _ in range(n_boot)]
    return {k: np.array([r[k] for r in reps]) for k in keys}


def transfer_matrix(runs, n_boot=1000, seed=0, level=0.95):
    """The transfer matrix with intervals. Returns {"categories", "t": {(i, j): value}, "ci": {(i, j): [lo, hi]},
    "boot": {(i, j): replicates}, "missing": [{"i", "j", "reason"}], "specialists": {c: {E, B, beta,
    at_bound}}, "asymmetry": see asymmetry(), "n_boot", "level"}."""
    spec, pairs = _design(runs)
    fits, why = fit_specialists(spec)
    t, missing = point_estimates(fits, why, pairs)
    boot = bootstrap(fits, pairs, sorted(t), n_boot, seed)
    cats = sorted(set(spec) | {c for p in pairs for c in p}, key=_order)
    res = {"categories": cats, "t": t, "ci": {k: pl.interval(v, level) for k, v in boot.items()},
           "boot": boot, "missing": missing, "n_boot": n_boot, "level": level,
           "specialists": {c: {"E": f["E"], "B": f["B"], "beta": f["a"], "at_bound": f["at_bound"],
                               "n": len(f["x"])} for c, f in fits.items()},
           "noise_sd": float(np.std(np.concatenate([f["resid"] for f in fits.values()]))) if fits else None}
    res["asymmetry"] = asymmetry(res)
    return res


# ----------------------------------------------------------------------------------------------------
# asymmetry and similarity

def asymmetry(res):
    """Per unordered pair with both directions: t_ij - t_ji with its interval (same replicates); overall
    A = sum |t_ij - t_ji| / sum |t_ij + t_ji| over those pairs (0: symmetric), with its interval."""
    both = sorted((i, j) for i, j in res["t"] if i < j and (j, i) in res["t"])
    per = []
    for i, j in both:
        diff = res["boot"][(i, j)] - res["boot"][(j, i)]
        per.append({"i": i, "j": j, "diff": res["t"][(i, j)] - res["t"][(j, i)], "ci": pl.interval(diff)})
    if not both:
        return {"pairs": [], "index": None, "index_ci": [None, None], "decided": 0}

    def index(get):  # nan when a replicate has t = inf (a loss below the floor): dropped from the interval
        with np.errstate(invalid="ignore"):
            num = sum(abs(get(i, j) - get(j, i)) for i, j in both)
            den = sum(abs(get(i, j) + get(j, i)) for i, j in both)
            return float(num / den) if den > 0 and np.isfinite(den) else float("nan")
    idx = index(lambda i, j: res["t"][(i, j)])
    reps = [index(lambda i, j: res["boot"][(i, j)][b]) for b in range(res["n_boot"])]
    return {"pairs": per, "index": idx, "index_ci": pl.interval(reps),
            "decided": sum(pl.decided(p["ci"]) != "undecided" for p in per)}


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
    ci = pl.interval(reps, res["level"])
    return {"n_pairs": len(keys), "rho": rho, "ci": ci, "verdict": pl.decided(ci)}


# ----------------------------------------------------------------------------------------------------
# report pieces

def _cell(res, i, j, d=2):
    if i == j:
        return "—"
    if (i, j) not in res["t"]:
        return "n/a"
    lo, hi = res["ci"][(i, j)]
    return f"{res['t'][(i, j)]:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"


def markdown_table(res):
    """Lines of a markdown table: row i (the category evaluated), column j (the partner), t_ij [interval]."""
    cats = res["categories"]
    L = ["| i \\ j | " + " | ".join(cats) + " |", "|---|" + "---|" * len(cats)]
    L += [f"| {i} | " + " | ".join(_cell(res, i, j) for j in cats) + " |" for i in cats]
    return L


def markdown_section(res, sim=None):
    """The report section: the matrix, its asymmetry, the similarity correlation and the missing pairs."""
    pct = int(round(100 * res["level"]))
    L = ["## Transfer matrix t_ij", "",
         f"Effective-data form L_i = E_i + B_i·(D_i + t_ij·D_j)^(−β_i), (E_i, B_i, β_i) from i's specialists; "
         f"{pct}% residual-bootstrap intervals ({res['n_boot']} replicates; an end at inf: some replicates put "
         "the pair's loss below i's fitted floor). t_ij < 0: interference.", ""] + markdown_table(res)
    a = res["asymmetry"]
    if a["index"] is not None:
        L += ["", f"Asymmetry A = Σ|t_ij − t_ji| / Σ|t_ij + t_ji| = {a['index']:.3f} "
              f"[{a['index_ci'][0]:.3f}, {a['index_ci'][1]:.3f}]; {a['decided']} of {len(a['pairs'])} pairs "
              "have t_ij − t_ji with an interval excluding 0."]
    if sim is not None:
        rho = "n/a" if sim["rho"] is None else f"{sim['rho']:.3f} [{sim['ci'][0]:.3f}, {sim['ci'][1]:.3f}]"
        L += ["", f"Spearman ρ(t_ij, JSD of unigram distributions) over {sim['n_pairs']} ordered pairs: {rho} "
              f"({sim['verdict']})."]
    if res["missing"]:
        L += ["", "Not estimated (listed, not guessed):", ""]
        L += [f"- t({m['i']}, {m['j']}): {m['reason']}" for m in res["missing"]]
    return L


def plot_heatmap(res, path):
    """Heatmap of t_ij (rows i, columns j), each cell annotated with its value and interval."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cats = res["categories"]
    M = np.full((len(cats), len(cats)), np.nan)
    for (i, j), v in res["t"].items():
        M[cats.index(i), cats.index(j)] = v if math.isfinite(v) else np.nan
    fig, ax = plt.subplots(figsize=(1.1 * len(cats) + 3, 0.9 * len(cats) + 2))
    lim = max(1.0, float(np.nanmax(np.abs(M)))) if np.isfinite(M).any() else 1.0
    im = ax.imshow(M, cmap="RdBu", vmin=-lim, vmax=lim)
    for a, i in enumerate(cats):
        for b, j in enumerate(cats):
            ax.text(b, a, _cell(res, i, j).replace(" [", "\n["), ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(cats)), cats, rotation=45, ha="right")
    ax.set_yticks(range(len(cats)), cats)
    ax.set_xlabel("partner j")
    ax.set_ylabel("evaluated category i")
    ax.set_title("transfer t_ij (< 0: interference; n/a: not estimated)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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


def transfer_matrices(rows, store, store_why, n_boot, seed):
    """{"models": {model: result}, "why": reason when no model has pair runs}."""
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
        T = transfer_matrix(spec + by_budget[b], n_boot=max(n_boot, 2), seed=seed)
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


def report_section(tm):
    """The report's section: one matrix per model, or one line when the sweep cannot support it."""
    L = ["", "## Transfer matrix t_ij", ""]
    if not tm["models"]:
        L.append(f"Not estimated: {tm['why']}; the matrix {NEEDS_PAIRS}.")
    for m, T in tm["models"].items():
        L += [f"Model {m}; pair runs at the planned budget {T['pair_budget']:,.0f}" + (
            "; pair runs at other budgets not used (the matrix is read at one budget): " + ", ".join(
                f"{n} at {b:,.0f}" for b, n in T["other_budgets"].items()) if T["other_budgets"] else "") + "."]
        if T["n_boot_requested"] < 2:
            L.append(f"(--n_boot {T['n_boot_requested']}: intervals from {T['n_boot']} replicates, not to be read.)")
        body = markdown_section(T, T["similarity"])[1:]
        if T["similarity"] is None:
            body += ["", f"t_ij against text similarity (JSD of unigram distributions): not computed, {T['similarity_why']}."]
        L += body + [""]
    return L


def plots(tm, out):
    """[(title, file name)]: one heatmap per model."""
    made = []
    for m, T in tm["models"].items():
        name = f"transfer_{str(m).replace('/', '-')}.png"
        plot_heatmap(T, Path(out) / name)
        made.append((f"Transfer matrix t_ij ({m})", name))
    return made


def public(tm):
    """The fits.json part: the matrices without their replicates, t_ij as a list."""
    models = {m: {k: v for k, v in T.items() if k not in ("boot",)} for m, T in tm["models"].items()}
    for T in models.values():
        T["t"] = [{"i": i, "j": j, "t": v, "ci95": T["ci"][(i, j)]} for (i, j), v in sorted(T["t"].items())]
        T.pop("ci")
    return {"models": models, "why": tm["why"]}
