"""IsoFLOP slices (Hoffmann et al.'s approach 2) when the sweep has several model sizes: per K, the loss
of each size at a fixed compute C = 6*N*D, and the compute-optimal N at that C with an interval.

Each size's loss-vs-tokens curve L_N(D) = E_N + B_N * D^(-b_N) is fitted on its runs (>= 3 budgets), so a
slice can be read at any C between the budgets: the size's tokens there are D = C / (6N). A size enters
the slice at C only when that D lies within its budgets (COVER_TOL beyond each end); a slice needs
MIN_SIZES sizes. The optimum is the minimum of a cubic spline in log N through the slice (Hoffmann et al.
fit a parabola; vertex() says why not here); a slice whose lowest loss is at the smallest or largest size
has its optimum at an edge of the ladder, reported as such, not extrapolated.

Interval: parametric bootstrap (each size's curve refitted on its fitted values moved by noise), the slice
and its optimum recomputed; percentile interval of log N_opt. The noise comes from the noise floor or
replicate runs, or residuals only when no size curve interpolates its points (point_noise); otherwise
there is no interval. The noise is drawn on the independent unit, the seed cluster (issue 21): a seed's runs
at every budget share a part of it (the share measured on the sweep's replicate groups,
analysis/noise_structure.py), so each resample moves a cluster's whole curve by one draw plus each point by
its own (noise_split); drawn independently per point, the cluster part averaged away over the budgets
(BENCHMARKS.md, session 23: the isoflop3 calibration design). A point is the mean
of its run's K categories, so the per-category parts shrink by 1/K and the run-level parts do not.
The residuals hold only a point's own part (each size's curve absorbs its seed's shift): from them an interval
needs the shares measured on replicate groups, else there is none (68% coverage under the measured noise,
review of session 23). Replicate points share their category set (another subset at K < 11 is not a replicate).
"edge" gives the share of replicates whose optimum fell at an edge of the sizes; a slice whose own lowest loss
is at an edge has no interval and no located optimum ("ci_why": the truth may be inside, and a one-sided
percentile bound was not calibrated).

N is what the points carry: analyze.py's rows give the non-embedding parameters (the fits' N).
"""
import math
from pathlib import Path

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.optimize import minimize_scalar

from analysis import inference
from analysis import powerlaw as pl

MIN_BUDGETS = 3
MIN_SIZES = 3
COVER_TOL = 1.25


def points_from_rows(rows):
    """{"K", "N", "D", "L", "seed", "cluster", "cats"} per included untagged run: D = tokens seen, L = the macro
    test loss over its training categories (analyze.py's rows, one per run and category), cluster its seed
    cluster (inference.seed_cluster: the unit whose noise its budgets share), cats its category set (sorted)."""
    runs = {}
    for r in rows:
        if r.get("excluded") or r.get("tagged") or not r.get("in_training") or r.get("test_loss") is None:
            continue
        if r["run_id"] not in runs:
            cluster = inference.seed_cluster(r)
            runs[r["run_id"]] = {"K": r["K"], "N": float(r["n_params_nonembedding"] or 0),
                                 "D": float(r["tokens_seen"] or 0), "losses": [], "seed": r.get("seed"),
                                 "cluster": cluster, "cats": cluster[2]}
        p = runs[r["run_id"]]
        p["losses"].append(float(r["test_loss"]))
    return [{"K": p["K"], "N": p["N"], "D": p["D"], "L": float(np.mean(p["losses"])), "seed": p["seed"],
             "cluster": p["cluster"], "cats": p["cats"]}
            for p in runs.values() if p["N"] > 0 and p["D"] > 0]


def size_curves(points):
    """{N: fit with its points} for the sizes with >= MIN_BUDGETS distinct token counts; "cl": each point's
    seed cluster as an index (a point without one is its own cluster)."""
    by = {}
    for i, p in enumerate(points):
        by.setdefault(p["N"], []).append((p["D"], p["L"], repr(p.get("cluster", ("point", i)))))
    out = {}
    for N, pts in sorted(by.items()):
        if len({round(math.log(d), 2) for d, _, _ in pts}) >= MIN_BUDGETS:
            D, L = np.array([d for d, _, _ in pts]), np.array([l for _, l, _ in pts])
            f = pl.fit_power_law(D, L)
            f.update(D=D, L=L, resid=(L - pl.predict(f, D)) * math.sqrt(len(D) / max(len(D) - 3, 1)),
                     cl=np.unique([c for _, _, c in pts], return_inverse=True)[1])
            out[N] = f
    return out


def compute_grid(curves, n=5):
    """n compute values, log-spaced over the range where at least MIN_SIZES sizes are covered."""
    ends = sorted((6 * N * f["D"].min(), 6 * N * f["D"].max()) for N, f in curves.items())
    Cs = np.geomspace(min(e[0] for e in ends), max(e[1] for e in ends), 200)
    ok = [C for C in Cs if sum(lo / COVER_TOL <= C <= hi * COVER_TOL for lo, hi in ends) >= MIN_SIZES]
    return list(np.geomspace(ok[0], ok[-1], n)) if ok else []


def slice_at(curves, C):
    """(log N, L) of the sizes covering compute C."""
    xs, ys = [], []
    for N, f in sorted(curves.items()):
        D = C / (6 * N)
        if f["D"].min() / COVER_TOL <= D <= f["D"].max() * COVER_TOL:
            xs.append(math.log(N))
            ys.append(float(pl.predict(f, D)))
    return np.array(xs), np.array(ys)


def vertex(x, y):
    """(log N_opt, inside): the minimum of a cubic spline through the slice, searched between the
    neighbours of the lowest point; inside = False when the lowest point is the smallest or largest size
    (the optimum may lie beyond the ladder: the edge is returned, not an extrapolation). A spline, not
    a parabola: L(log N) at fixed C is skewed (N^-alpha against N^beta), and a parabola's vertex sits ~1%
    off the optimum, a bias as large as the interval."""
    if len(x) < MIN_SIZES:
        return None, False
    k = int(np.argmin(y))
    if k in (0, len(x) - 1):
        return float(x[k]), False
    r = minimize_scalar(CubicSpline(x, y), bounds=(x[k - 1], x[k + 1]), method="bounded",
                        options={"xatol": 1e-7})
    return float(r.x), True


def point_noise(points, curves, noise_log_sd=None):
    """(SD of log loss of one point, where it came from): the noise floor passed in; else replicate points
    (the same K, N, budget and category set, different seeds); else the residuals of the size curves when every one of
    them has more than 3 budgets (pooled df >= 3); else (None, why). A curve through 3 points with 3
    parameters interpolates them: its residuals are 0 and say nothing of the noise."""
    if noise_log_sd:
        return float(noise_log_sd), "the noise floor (replicate runs of the sweep)"
    groups = {}
    for p in points:
        # replicates share the category set: at K < 11 another seed is another
        # subset, whose loss differs by the categories, not by the noise (a 17x SD in the review of session 23)
        cats = p.get("cats")
        groups.setdefault((p["K"], p["N"], round(math.log(p["D"]), 2), cats), []).append(math.log(p["L"]))
    ss = sum(float(((np.asarray(v) - np.mean(v)) ** 2).sum()) for v in groups.values() if len(v) > 1)
    df = sum(len(v) - 1 for v in groups.values() if len(v) > 1)
    if df:
        return math.sqrt(ss / df), f"replicate runs ({df} df)"
    df = sum(len(f["D"]) - 3 for f in curves.values())
    if curves and all(len(f["D"]) > 3 for f in curves.values()) and df >= 3:
        ss = sum(float((((f["L"] - pl.predict(f, f["D"])) / f["L"]) ** 2).sum()) for f in curves.values())
        return math.sqrt(ss / df), f"residuals of the size curves ({df} df)"
    return None, ("no noise estimate: no replicate runs, and a size curve with 3 budgets and 3 parameters "
                  "interpolates its points (residuals 0)")


def noise_split(sd, per_category, K, shares=None):
    """(SD shared by a seed cluster's points, SD of each point's own part) of the log macro loss of one run
    of K categories. sd: the noise SD per (run, category) (per_category: the noise floor) or per point (the
    replicate points' or residuals' SD). shares: (across budgets, run level, cluster), the shares of the
    per-(run, category) variance in simulate.py's / noise_structure.py's model a + u + w + v (a + u shared
    across budgets, a + w across categories, a both); None: not measured, taken as (0, 1, 0) (nothing shared
    across budgets, the categories of a run fully shared, as before the split: no narrower than that)."""
    f_b, f_r, f_c = shares if shares is not None else (0.0, 1.0, 0.0)
    f_b, f_r = min(max(f_b, 0.0), 1.0), min(max(f_r, 0.0), 1.0)
    f_c = min(max(f_c, f_b + f_r - 1, 0.0), f_b, f_r)
    shared = f_c + (f_b - f_c) / K                 # a + mean over categories of u
    own = (f_r - f_c) + (1 - f_b - f_r + f_c) / K  # w + mean over categories of v
    scale = 1.0 if per_category else 1 / math.sqrt(shared + own) if shared + own > 0 else 0.0
    return sd * scale * math.sqrt(shared), sd * scale * math.sqrt(own)


def _boot_vertices(curves, Cs, n_boot, rng, sd, sd_shared=0.0):
    """Replicates of (log N_opt, inside) at every C (parametric bootstrap of the size curves: each seed
    cluster's points moved by one log-normal draw of SD sd_shared, each point by its own of SD sd, each
    curve refitted)."""
    reps = []
    for _ in range(n_boot):
        refit = {}
        for N, f in curves.items():
            e = rng.normal(0, sd, len(f["D"]))
            if sd_shared:  # drawn only when there is such a part: an unchanged stream otherwise
                e = e + rng.normal(0, sd_shared, f["cl"].max() + 1)[f["cl"]]
            y = pl.predict(f, f["D"]) * np.exp(e)
            refit[N] = {**pl.fit_power_law(f["D"], y), "D": f["D"]}
        reps.append([vertex(*slice_at(refit, C)) for C in Cs])
    return reps


def isoflop_K(points, compute=None, n_boot=500, seed=0, level=0.95, noise_log_sd=None, shares=None):
    """The slices of one K: {"sizes", "slices": [{"C", "N", "L", "N_opt", "N_opt_ci", "inside", "edge"}],
    "noise_sd", "noise_source", "noise_shared_sd"} or {"reason"} when the sweep cannot support them.
    shares: the noise's (across budgets, run level, cluster) shares (noise_split)."""
    curves = size_curves(points)
    if len(curves) < MIN_SIZES:
        return {"sizes": sorted(curves), "slices": [],
                "reason": f"{len(curves)} model size(s) with >= {MIN_BUDGETS} budgets; slices need {MIN_SIZES}"}
    Cs = list(compute) if compute is not None else compute_grid(curves)
    if not Cs:
        return {"sizes": sorted(curves), "slices": [],
                "reason": f"no compute at which {MIN_SIZES} sizes' budgets overlap (within {COVER_TOL}x)"}
    sd, source = point_noise(points, curves, noise_log_sd)
    sd_shared, sd_own = noise_split(sd, bool(noise_log_sd), points[0]["K"], shares) if sd else (None, None)
    if sd and source.startswith("residuals"):
        # a size curve absorbs the shift its seed shares across budgets: the residuals hold only the points'
        # own part. Under the measured noise (43% shared) the interval from them as the total held the optimum
        # in 68% of sweeps (review of session 23): the shared part is added from measured shares, or no interval
        sh, own = noise_split(1.0, False, points[0]["K"], shares)
        if shares is None or own == 0:
            sd = sd_shared = sd_own = None
            source = ("no replicate runs, so the noise a seed shares across its budgets is not measured (the "
                      "size curves' residuals do not hold it)")
        else:
            sd_shared, sd_own = sd * sh / own, sd
    reps = (_boot_vertices(curves, Cs, n_boot, np.random.default_rng(seed), sd_own, sd_shared)
            if sd and n_boot else None)
    slices = []
    for c, C in enumerate(Cs):
        x, y = slice_at(curves, C)
        v, inside = vertex(x, y)
        if v is None:
            slices.append({"C": C, "N": [], "L": [], "reason": f"fewer than {MIN_SIZES} sizes cover this compute"})
            continue
        ci = inference.percentile([r[c][0] for r in reps if r[c][0] is not None], v, level) if reps else [None, None]
        # an optimum at the edge of the ladder is a bound, not an estimate: its interval is open on that side
        ci = ci if inside else [None, None]
        slices.append({"C": float(C), "N": np.exp(x).tolist(), "L": y.tolist(), "N_opt": math.exp(v),
                       "inside": inside, "N_opt_ci": [None, None] if ci[0] is None else [math.exp(ci[0]), math.exp(ci[1])],
                       "edge": float(np.mean([not r[c][1] for r in reps])) if reps else None,
                       # no claim where the optimum is: noise puts the lowest loss at an edge when the truth is
                       # inside too (isoflop3: 20 of 240 inner slices, truth at the middle size), and a one-sided
                       # percentile bound held it in 79% of such slices (review of session 23)
                       "ci_why": None if inside else (f"none: the lowest loss is at the {'smallest' if v == x[0] else 'largest'}"
                                                     " size; the optimum is not located (there, beyond or inside)")})
    return {"sizes": sorted(curves), "slices": slices, "noise_sd": sd, "noise_source": source,
            "noise_shared_sd": sd_shared, "noise_own_sd": sd_own}


def isoflop(points, compute=None, n_boot=500, seed=0, level=0.95, noise_log_sd=None, shares=None):
    """{K: isoflop_K(...)} over the Ks present in the points."""
    Ks = sorted({p["K"] for p in points})
    return {K: isoflop_K([p for p in points if p["K"] == K], compute, n_boot, seed, level, noise_log_sd, shares)
            for K in Ks}


def noise_shares(rows):
    """((across budgets, run level, cluster) or None, where from): the noise's shares measured on the rows'
    replicate groups (analysis.noise_structure, every kind of replicate); a share without pairs of its kind
    is taken as noise_split's default for it, and said so."""
    from analysis.noise_structure import noise_structure
    ns = noise_structure(rows, "any", n_boot=0)
    if not ns:
        return None, "not measured (no replicate groups): taken as nothing shared across budgets"
    keys = ("frac_shared_across_budgets", "frac_run_level", "frac_cluster")
    got = [ns[k] for k in keys]
    gaps = [k for k, v in zip(keys, got) if v is None]
    # replicates that share a data order (init seed only) miss its noise: the SD and the share across budgets
    # read low (the measured model: 0.35 for 0.43), so the interval is too narrow; said, not corrected
    init_only = all(len({str(d if d is not None else s) for s, _, d in g["replicates"]}) == 1 for g in ns["groups"])
    return (tuple(d if v is None else v for v, d in zip(got, (0.0, 1.0, 0.0))),
            f"replicate groups of the sweep ({ns['n_groups']} groups, analysis/noise_structure.py)"
            + (f"; {', '.join(gaps)} not measured: taken as the default" if gaps else "")
            + ("; every group varies the init seed only (one data order): the data order's noise is missing, "
               "so the intervals are too narrow" if init_only else ""))


def markdown_section(res):
    L = ["## IsoFLOP slices", "",
         "Loss against N at fixed compute C = 6·N·D (each size's loss-vs-tokens curve read at D = C/(6N)); "
         "N_opt: minimum of a cubic spline in log N, 95% parametric-bootstrap interval (noise: noise floor, replicates, or residuals of curves that do not interpolate, where replicate groups measure the share a seed's budgets have in common; "
         "drawn per seed cluster, for the part a seed's budgets share, and per run); edge: share of replicates "
         "whose optimum lay at an edge of the sizes; a slice whose own lowest loss is at an edge gets no interval.", "",
         "| K | C (FLOPs) | sizes | N_opt | interval | edge |", "|---|---|---|---|---|---|"]
    for K, r in res.items():
        if r.get("reason"):
            L.append(f"| {K} | — | {len(r['sizes'])} | n/a | {r['reason']} | |")
        for s in r["slices"]:
            if s.get("reason"):
                L.append(f"| {K} | {s['C']:.3g} | {len(s['N'])} | n/a | {s['reason']} | |")
                continue
            flag = "" if s["inside"] else " (at the edge of the sizes)"
            if not s["inside"]:
                # an edge is no estimate, and the truth may be inside (noise moved the lowest point): no claim
                edge = "" if s["edge"] is None else f"{100 * s['edge']:.0f}%"
                where = s.get("ci_why") or "none: the lowest loss is at an edge of the sizes; the optimum is not located"
                L.append(f"| {K} | {s['C']:.3g} | {len(s['N'])} | not located (lowest loss at {s['N_opt']:.3g}, {flag[2:-1]}) "
                         f"| {where} | {edge} |")
                continue
            if s["N_opt_ci"][0] is None:
                L.append(f"| {K} | {s['C']:.3g} | {len(s['N'])} | {s['N_opt']:.3g}{flag} | none: "
                         f"{r.get('noise_source') or 'no spread between the replicates'} | — |")
                continue
            ci = f"[{s['N_opt_ci'][0]:.3g}, {s['N_opt_ci'][1]:.3g}]"
            if s["edge"] > 0.025:
                ci += " (open: in some replicates the lowest loss is at an edge of the sizes)"
            L.append(f"| {K} | {s['C']:.3g} | {len(s['N'])} | {s['N_opt']:.3g}{flag} | {ci} | {100 * s['edge']:.0f}% |")
    return L


def plot(res, path):
    """Loss against N, one line per compute C, one panel per K."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    Ks = [K for K, r in res.items() if r["slices"]]
    fig, axes = plt.subplots(1, max(len(Ks), 1), figsize=(4.5 * max(len(Ks), 1), 3.8), squeeze=False)
    for ax, K in zip(axes[0], Ks):
        for s in res[K]["slices"]:
            if s.get("N"):
                line, = ax.plot(s["N"], s["L"], "o-", ms=3, label=f"C = {s['C']:.2g}")
                if "N_opt" in s:
                    ax.axvline(s["N_opt"], color=line.get_color(), lw=0.7, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("N (parameters)")
        ax.set_ylabel("test loss (nats/token)")
        ax.set_title(f"IsoFLOP slices, K = {K}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------
# the report's IsoFLOP slices, from analyze.py's rows

def isoflop_slices(rows, n_boot, seed, noise_log_sd=None):
    """isoflop() on the rows, or {"why"} (too few model sizes, or no bootstrap). noise_log_sd: the sweep's
    noise floor, the points' noise when known (never the residuals of curves that interpolate)."""
    pts = points_from_rows(rows)
    sizes = sorted({p["N"] for p in pts})
    if len(sizes) < MIN_SIZES:
        return {"why": f"IsoFLOP slices need >= {MIN_SIZES} model sizes with >= {MIN_BUDGETS} "
                       f"budgets each; this sweep has {len(sizes)} size(s)"}
    if not n_boot:
        return {"why": "IsoFLOP slices not computed: --n_boot 0 gives the optimum no interval"}
    shares, why = noise_shares(rows)
    return {"by_K": isoflop(pts, n_boot=n_boot, seed=seed, noise_log_sd=noise_log_sd, shares=shares),
            "noise_shares": shares, "noise_shares_source": why}


def report_section(iso):
    if "by_K" not in iso:
        return ["", "## IsoFLOP slices", "", f"Not computed: {iso['why']}."]
    sh = iso.get("noise_shares")
    shares = ("" if sh is None else f"{sh[0]:.2f} of the noise variance shared across a seed's budgets, "
              f"{sh[1]:.2f} by a run's categories, {sh[2]:.2f} by both; ")
    return [""] + markdown_section(iso["by_K"]) + ["", f"Noise structure of the bootstrap: {shares}"
                                                   f"{iso.get('noise_shares_source') or 'not measured'}."]


def plots(iso, out):
    """[(title, file name)]: the slices' figure when a K has one."""
    if not any(r["slices"] for r in iso.get("by_K", {}).values()):
        return []
    plot(iso["by_K"], Path(out) / "isoflop.png")
    return [("IsoFLOP slices", "isoflop.png")]
