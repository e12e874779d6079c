"""
Turn a sweep directory into the scaling result: runs.csv, fitted laws with bootstrap confidence
intervals (fits.json), plots, store baselines and report.md, all in DIR/analysis/.

    python analyze.py sweeps/smoke [--n_boot 1000]

The laws (EXPERIMENT_PLAN.md, H3): for category c in a run's training set, with D the run's predicted
tokens, D_c the tokens it actually saw of c (from summary.json) and N the non-embedding parameters,

    dilution: L_c = E_c + B * (D_c^s * D^(1-s))^(-beta)  [+ A * N^(-alpha)]   s in [0, 1] free
    disjoint: s = 1 (only a category's own tokens help it)
    shared:   s = 0 (every token helps every category: one ergodic source)

(the N term enters only when the runs span several model sizes). With balanced sampling D_c = D/K, so
D_c^s D^(1-s) = D / K^s. Fitting follows Chinchilla's approach 3: Huber loss (delta 1e-3) on log-loss
residuals, L-BFGS-B with analytic gradients from a grid of starts; 95% intervals come from a bootstrap over
runs (each resample refitted warm-started from the point estimate), and forms are compared by the
error on the largest budget when it is left out of the fit. Only complete runs whose schedule ran to its
end enter the fits; test losses are from the final checkpoint.
"""
import argparse
import csv
import json
import math
import os
from pathlib import Path

import numpy as np

import store as st

HUBER_DELTA = 1e-3
FORMS = {"dilution": None, "disjoint": 1.0, "shared": 0.0}  # form -> fixed s (None: free)
DATA_FILTER = "status == complete and schedule_complete and category in training (test split, final checkpoint)"


# ----------------------------------------------------------------------------------------------------
# collecting runs

def _read(p):
    try:
        return json.loads(Path(p).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def collect_runs(sweep_dir):
    """Every run directory under DIR/runs (or DIR itself holding run dirs) with its config and results."""
    root = Path(sweep_dir) / "runs"
    if not root.is_dir():
        root = Path(sweep_dir)
    runs = []
    for rd in sorted(p for p in root.iterdir() if p.is_dir()):
        cfg = _read(rd / "run_config.json")
        if cfg is None:
            continue
        summary = _read(rd / "summary.json") or {}
        runs.append({"run_id": rd.name, "dir": rd, "config": cfg, "summary": summary,
                     "test": _read(rd / "test_results.json"),
                     "status": summary.get("status", "incomplete")})
    return runs


CSV_COLUMNS = ["run_id", "status", "model", "n_params_total", "n_params_nonembedding", "K", "seed", "init_seed",
               "data_seed", "sampling", "tagged", "categories", "token_budget", "tokens_seen", "category",
               "in_training", "tokens_category", "epochs_category", "final_val_loss", "best_val_loss",
               "val_loss_category", "test_loss", "test_perplexity", "test_bits_per_byte", "test_loss_late",
               "schedule_complete", "wall_time_s", "tokens_per_s", "store_id"]


def run_rows(runs):
    """One row per run and category (every evaluated category; training categories for runs without results)."""
    rows = []
    for r in runs:
        cfg, s, test = r["config"], r["summary"], r["test"]
        cats = list(test["per_category"]) if test else list(cfg["categories"])
        for c in cats:
            pc = (test or {}).get("per_category", {}).get(c, {})
            lbp = [v for v in (pc.get("loss_by_position") or [])[63:] if v is not None]
            rows.append({
                "run_id": r["run_id"], "status": r["status"], "model": cfg.get("model_name"),
                "n_params_total": cfg.get("n_params_total"), "n_params_nonembedding": cfg.get("n_params_nonembedding"),
                "K": len(cfg["categories"]), "seed": cfg.get("seed"), "init_seed": cfg.get("init_seed"),
                "data_seed": cfg.get("data_seed"), "sampling": cfg.get("sampling"),
                "tagged": bool(cfg.get("tag_categories")), "categories": " ".join(cfg["categories"]),
                "token_budget": cfg.get("token_budget_effective"), "tokens_seen": s.get("tokens_seen"),
                "category": c, "in_training": c in cfg["categories"],
                "tokens_category": (s.get("tokens_per_category") or {}).get(c, 0 if s else None),
                "epochs_category": (s.get("epochs_per_category") or {}).get(c),
                "final_val_loss": s.get("final_val_loss"), "best_val_loss": s.get("best_val_loss"),
                "val_loss_category": None, "test_loss": pc.get("loss"), "test_perplexity": pc.get("perplexity"),
                "test_bits_per_byte": pc.get("bits_per_byte"),
                "test_loss_late": float(np.mean(lbp)) if lbp else None,  # positions 64..100: ~ H_100
                "schedule_complete": s.get("schedule_complete", False), "wall_time_s": s.get("wall_time_s"),
                "tokens_per_s": s.get("tokens_per_s"), "store_id": cfg.get("store_id")})
    _attach_val(runs, rows)
    return rows


def _attach_val(runs, rows):
    """val_loss/<category> of each run's last evaluation, from metrics.jsonl."""
    last = {}
    for r in runs:
        p = r["dir"] / "metrics.jsonl"
        if p.is_file():
            for line in p.read_text().splitlines():
                if '"eval"' in line:
                    try:
                        last[r["run_id"]] = json.loads(line)
                    except json.JSONDecodeError:
                        pass
    for row in rows:
        ev = last.get(row["run_id"], {})
        row["val_loss_category"] = ev.get(f"val_loss/{row['category']}")


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in CSV_COLUMNS})


# ----------------------------------------------------------------------------------------------------
# fitting

def fit_data(rows, where=None):
    """Arrays for the fits from the rows that enter them (DATA_FILTER, and `where` if given), untagged runs."""
    use = [r for r in rows if r["status"] == "complete" and r["schedule_complete"] and r["in_training"]
           and not r["tagged"] and r["test_loss"] is not None and (r["tokens_category"] or 0) > 0
           and (where is None or where(r))]
    cats = sorted({r["category"] for r in use}, key=lambda c: st.CATEGORIES.index(c) if c in st.CATEGORIES else 99)
    runs = sorted({r["run_id"] for r in use})
    return {"L": np.array([r["test_loss"] for r in use], dtype=float),
            "D": np.array([r["tokens_seen"] for r in use], dtype=float),
            "Dc": np.array([r["tokens_category"] for r in use], dtype=float),
            "N": np.array([r["n_params_nonembedding"] for r in use], dtype=float),
            "cat": np.array([cats.index(r["category"]) for r in use], dtype=int),
            "run": np.array([runs.index(r["run_id"]) for r in use], dtype=int),
            "budget": np.array([r["token_budget"] for r in use], dtype=float),
            "K": np.array([r["K"] for r in use], dtype=int),
            "categories": cats, "runs": runs}


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

    def objective(self, th, d, w=None):
        """Huber(log pred - log L) summed (weighted by bootstrap multiplicities w), and its gradient."""
        p = self.unpack(th)
        C = self.C
        logD, logDc = np.log(d["D"]), np.log(d["Dc"])
        logX = p["s"] * logDc + (1 - p["s"]) * logD
        E = np.exp(p["logE"][d["cat"]])
        dterm = np.exp(p["logB"] - p["beta"] * logX)
        pred = E + dterm
        if self.with_n:
            nterm = np.exp(p["logA"] - p["alpha"] * np.log(d["N"]))
            pred = pred + nterm
        r = np.log(pred) - np.log(d["L"])
        a = np.abs(r)
        hub = np.where(a <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (a - 0.5 * HUBER_DELTA))
        dh = np.clip(r, -HUBER_DELTA, HUBER_DELTA) / pred
        if w is not None:
            hub, dh = hub * w, dh * w
        g = np.zeros_like(th)
        g[:C] = np.bincount(d["cat"], weights=dh * E, minlength=C)
        g[C] = np.sum(dh * dterm)
        g[C + 1] = np.sum(dh * dterm * -logX)
        i = C + 2
        if self.fixed_s is None:
            g[i] = np.sum(dh * dterm * -p["beta"] * (logDc - logD))
            i += 1
        if self.with_n:
            g[i] = np.sum(dh * nterm)
            g[i + 1] = np.sum(dh * nterm * -np.log(d["N"]))
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


def _minimize(law, d, starts, w=None, tol=(1e-15, 1e-12)):
    """Best L-BFGS-B result over the starts. Tight tolerances by default: an optimiser stopped early is a
    known flaw of published fits (Besiroglu et al., arXiv:2404.10102)."""
    from scipy.optimize import minimize
    best = None
    for th0 in starts:
        res = minimize(law.objective, th0, args=(d, w), jac=True, method="L-BFGS-B", bounds=law.bounds(d),
                       options={"maxiter": 10000, "maxfun": 20000, "ftol": tol[0], "gtol": tol[1]})
        if best is None or res.fun < best.fun:
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


def fit_specs(rows):
    """The fits analyze.py makes: the three forms on all data (compared by held-out error), then the H1
    floor comparison (specialists K = 1 vs the largest K; at fixed K every form has the same floors, so the
    'shared' form is used) and the dilution form restricted to <= 4 epochs per category (repetition)."""
    Ks = sorted({r["K"] for r in rows if r["status"] == "complete"})
    specs = [(form, None, None) for form in FORMS]
    if len(Ks) > 1:
        specs += [("shared", "K == 1", lambda r: r["K"] == 1),
                  ("shared", f"K == {Ks[-1]}", lambda r, k=Ks[-1]: r["K"] == k)]
    specs.append(("dilution", "epochs_category <= 4", lambda r: (r["epochs_category"] or 0) <= 4))
    return specs


def _boot_fits(job):
    """Refit each bootstrap resample (multiplicity weights), warm-started at the point estimate."""
    law, d, th, weight_list = job
    out = []
    for w in weight_list:
        # ftol 1e-12 measured 3x faster than 1e-15 here, with bootstrap means and spreads equal to ~1% of the
        # spread (notes.md)
        r = _minimize(law, d, [th], w, tol=(1e-12, 1e-9))
        out.append(named_params(law, r.x, d["categories"]) if np.all(np.isfinite(r.x)) else None)
    return out


def fit_law(d, form, n_boot=1000, seed=0, with_n=None, jobs=1):
    """Point estimate, bootstrap 95% CIs over runs, in-sample error and leave-largest-budget-out error."""
    if with_n is None:
        with_n = len(np.unique(d["N"])) > 1
    law = Law(form, len(d["categories"]), with_n)
    res = _minimize(law, d, law.starts(d))
    th = res.x
    point = named_params(law, th, d["categories"])
    resid = np.log(law.predict(th, d)) - np.log(d["L"])
    # bootstrap over runs (clusters): all resamples are drawn here, so the result is the same for any `jobs`
    rng = np.random.default_rng(seed)
    n_runs = len(d["runs"])
    weights = [np.bincount(rng.integers(0, n_runs, n_runs), minlength=n_runs)[d["run"]].astype(float)
               for _ in range(n_boot)]
    if jobs > 1 and n_boot >= 4 * jobs:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        chunks = [weights[i::jobs] for i in range(jobs)]
        # spawned workers with single-threaded BLAS: the fits are tiny, and OpenBLAS threads of several
        # processes spinning on the same cores made 2 processes slower than 1 (measured, notes.md)
        limits = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
        saved = {k: os.environ.get(k) for k in limits}
        os.environ.update({k: "1" for k in limits})
        try:
            with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
                parts = list(ex.map(_boot_fits, [(law, d, th, c) for c in chunks]))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        ordered = [None] * n_boot
        for i, part in enumerate(parts):
            ordered[i::jobs] = part
    else:
        ordered = _boot_fits((law, d, th, weights))
    boots = [b for b in ordered if b is not None]
    params = {}
    for k, v in point.items():
        vals = np.array([b[k] for b in boots])
        ci = [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))] if len(vals) else [None, None]
        params[k] = {"estimate": v, "ci95": ci, "n_boot": len(vals)}
    # held-out error: leave the largest budget out, predict it
    cv = None
    budgets = np.unique(d["budget"])
    if len(budgets) > 1:
        train = d["budget"] < budgets.max()
        dt, dv = _subset(d, train), _subset(d, ~train)
        if len(np.unique(dt["cat"])) == len(d["categories"]):
            rcv = _minimize(law, dt, law.starts(dt))
            cv = float(np.sqrt(np.mean((np.log(law.predict(rcv.x, dv)) - np.log(dv["L"])) ** 2)))
    formula = {"dilution": "L_c = E_c + B * (D_c^s * D^(1-s))^-beta", "disjoint": "L_c = E_c + B * D_c^-beta",
               "shared": "L_c = E_c + B * D^-beta"}[form] + (" + A * N^-alpha" if with_n else "")
    return {"form": form, "formula": formula, "data_filter": DATA_FILTER, "params": params,
            "converged": bool(res.success), "optimizer_message": str(res.message), "huber_delta": HUBER_DELTA,
            "fit_error": float(np.sqrt(np.mean(resid ** 2))), "cv_error": cv, "cv_method": "leave largest budget out",
            "n_points": int(len(d["L"])), "n_runs": n_runs, "_theta": th.tolist(), "_with_n": with_n}


# ----------------------------------------------------------------------------------------------------
# plots and report

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _style(ax, xlabel, ylabel, title, legend_size=8, log_grid=False):
    """Labels, grid and legend: the same for every panel."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both" if log_grid else "major")
    ax.legend(fontsize=legend_size)


def _save(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_level(rows):
    """Per complete untagged run: in-training and held-out macro test loss."""
    out = {}
    for r in rows:
        if r["status"] != "complete" or r["test_loss"] is None or r["tagged"]:
            continue
        o = out.setdefault(r["run_id"], {"model": r["model"], "K": r["K"], "D": r["tokens_seen"], "seed": r["seed"],
                                         "in": [], "out": []})
        o["in" if r["in_training"] else "out"].append(r["test_loss"])
    return out


def plot_loss_vs_tokens(rows, best_fit, fit_d, path):
    plt = _plt()
    rl = run_level(rows)
    models = sorted({v["model"] for v in rl.values()})
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
    for ax, m in zip(axes[0], models):
        Ks = sorted({v["K"] for v in rl.values() if v["model"] == m})
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(Ks)))
        for K, col in zip(Ks, colors):
            pts = {}
            for v in rl.values():
                if v["model"] == m and v["K"] == K and v["in"]:
                    pts.setdefault(v["D"], []).append(np.mean(v["in"]))
            Ds = sorted(pts)
            ax.errorbar(Ds, [np.mean(pts[D]) for D in Ds], yerr=[np.std(pts[D]) for D in Ds], fmt="o", color=col,
                        capsize=3, label=f"K={K} (runs)")
            if best_fit is not None and Ds:
                law = Law(best_fit["form"], len(fit_d["categories"]), best_fit["_with_n"])
                grid = np.geomspace(min(Ds), max(Ds), 50)
                N = np.median(fit_d["N"])
                preds = []
                for c in range(len(fit_d["categories"])):  # balanced sampling: D_c = D/K
                    dd = {"D": grid, "Dc": grid / K, "N": np.full_like(grid, N), "cat": np.full(len(grid), c)}
                    preds.append(law.predict(np.array(best_fit["_theta"]), dd))
                ax.plot(grid, np.mean(preds, axis=0), "-", color=col, lw=1.2, label=f"K={K} fit ({best_fit['form']})")
        ax.set_xscale("log")
        _style(ax, "predicted tokens seen D", "in-training test loss (macro, nats/token)",
               f"{m}: loss vs tokens per K", log_grid=True)
    _save(plt, fig, path)


def plot_loss_vs_K(rows, path):
    plt = _plt()
    rl = run_level(rows)
    Ds = sorted({v["D"] for v in rl.values()})
    fig, ax = plt.subplots(figsize=(7, 4.8))
    colors = plt.cm.plasma(np.linspace(0, 0.85, max(len(Ds), 1)))
    for D, col in zip(Ds, colors):
        for kind, style, lab in (("in", "o-", "in training"), ("out", "s--", "held out")):
            pts = {}
            for v in rl.values():
                if v["D"] == D and v[kind]:
                    pts.setdefault(v["K"], []).append(np.mean(v[kind]))
            Ks = sorted(pts)
            if Ks:
                ax.errorbar(Ks, [np.mean(pts[k]) for k in Ks], yerr=[np.std(pts[k]) for k in Ks], fmt=style,
                            color=col, capsize=3, label=f"D={D:,.0f}: {lab}")
    _style(ax, "number of training categories K", "test loss (macro over categories)",
           "in-training vs held-out loss against K at fixed budgets", legend_size=7)
    _save(plt, fig, path)


def plot_collapse(fit, d, path):
    plt = _plt()
    law = Law(fit["form"], len(d["categories"]), fit["_with_n"])
    p = law.unpack(np.array(fit["_theta"]))
    X = np.exp(p["s"] * np.log(d["Dc"]) + (1 - p["s"]) * np.log(d["D"]))
    red = d["L"] - np.exp(p["logE"][d["cat"]])
    if fit["_with_n"]:
        red = red - np.exp(p["logA"] - p["alpha"] * np.log(d["N"]))
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for K in sorted(set(d["K"].tolist())):
        m = d["K"] == K
        ax.scatter(X[m], np.maximum(red[m], 1e-4), s=14, label=f"K={K}")
    grid = np.geomspace(X.min(), X.max(), 50)
    ax.plot(grid, np.exp(p["logB"] - p["beta"] * np.log(grid)), "k-",
            label=f"B X^-beta, beta={p['beta']:.3f}, s={p['s']:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _style(ax, "effective tokens X = D_c^s D^(1-s)", "reducible loss L_c - E_c",
           f"per-category loss collapsed with the fitted s ({fit['form']})", log_grid=True)
    _save(plt, fig, path)


def plot_positions(runs, path):
    """Mean in-training loss by window position; tagged runs against their untagged twins where present."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    curves = {}
    for r in runs:
        if r["status"] != "complete" or not r["test"]:
            continue
        cfg = r["config"]
        key = (cfg.get("model_name"), len(cfg["categories"]), cfg.get("seed"), cfg.get("token_budget_effective"))
        vecs = [r["test"]["per_category"][c]["loss_by_position"] for c in cfg["categories"]
                if c in r["test"]["per_category"]]
        arr = np.array([[np.nan if v is None else v for v in vec] for vec in vecs], dtype=float)
        curves.setdefault(key, {})["tagged" if cfg.get("tag_categories") else "untagged"] = np.nanmean(arr, axis=0)
    twins = {k: v for k, v in curves.items() if len(v) == 2}
    if twins:
        for (m, K, seed, D), v in twins.items():
            ax.plot(range(1, 101), v["untagged"], "-", label=f"{m} K={K} seed={seed} D={D:,}: untagged")
            ax.plot(range(1, 101), v["tagged"], "--", label=f"... tagged (gap {np.nanmean(v['untagged'] - v['tagged']):+.4f})")
        title = "loss by window position: tagged vs untagged"
    else:
        biggest = max((k[3] for k in curves), default=None)
        for k, v in curves.items():
            if k[3] == biggest and "untagged" in v:
                ax.plot(range(1, 101), v["untagged"], label=f"{k[0]} K={k[1]} seed={k[2]}")
        title = f"loss by window position (D={biggest})"
    _style(ax, "position in window (tokens of context)", "in-training test loss (nats/token)", title, legend_size=7)
    _save(plt, fig, path)
    return twins


def plot_baselines(rows, baselines, path):
    plt = _plt()
    cats = list(baselines["per_category"])
    best = {}
    for r in rows:  # the best (lowest) in-training test bits per byte any run reached, per category
        if r["in_training"] and r["test_bits_per_byte"] is not None and not r["tagged"]:
            best[r["category"]] = min(best.get(r["category"], 1e9), r["test_bits_per_byte"])
    x = np.arange(len(cats))
    fig, ax = plt.subplots(figsize=(9, 4.8))
    wdt = 0.2
    for i, comp in enumerate(("gzip", "bz2", "lzma")):
        vals = [baselines["per_category"][c]["compress_bpb"][comp] or np.nan for c in cats]
        ax.bar(x + (i - 1.5) * wdt, vals, wdt, label=comp)
    ax.bar(x + 1.5 * wdt, [best.get(c, np.nan) for c in cats], wdt, label="best model (in training)")
    ax.set_xticks(x)
    ax.set_xticklabels(cats, rotation=45, ha="right")
    _style(ax, "category", "bits per byte (test text)", "model vs compressors, per category")
    _save(plt, fig, path)


def _fmt(v, d=4):
    return "–" if v is None else (f"{v:.{d}g}" if isinstance(v, float) else str(v))


def floors_section(fits):
    """H1: per-category floors fitted on specialists vs on the largest K, and whether their CIs overlap."""
    a = next((f for f in fits if f["subset"] == "K == 1"), None)
    b = next((f for f in fits if f["subset"].startswith("K == ") and f["subset"] != "K == 1"), None)
    if a is None or b is None:
        return []
    L = ["", f"## H1: floors E_c, specialists (K = 1) vs {b['subset']}", "",
         f"| category | E_c (K = 1) | 95% CI | E_c ({b['subset']}) | 95% CI | CIs overlap |", "|---|---|---|---|---|---|"]
    for k in a["params"]:
        if not k.startswith("E[") or k not in b["params"]:
            continue
        pa, pb = a["params"][k], b["params"][k]
        overlap = (None if None in pa["ci95"] + pb["ci95"] else
                   pa["ci95"][0] <= pb["ci95"][1] and pb["ci95"][0] <= pa["ci95"][1])
        L.append(f"| {k[2:-1]} | {_fmt(pa['estimate'])} | [{_fmt(pa['ci95'][0])}, {_fmt(pa['ci95'][1])}] | "
                 f"{_fmt(pb['estimate'])} | [{_fmt(pb['ci95'][0])}, {_fmt(pb['ci95'][1])}] | {overlap} |")
    return L


def mixing_gain(rows):
    """H4: G = L_c(K=1, d) - L_c(K, K*d) at equal tokens per category d, averaged over seeds and categories.
    Returns {(model, K, d): (G, n_categories)}."""
    spec, mix = {}, {}
    for r in rows:
        if r["status"] != "complete" or not r["in_training"] or r["tagged"] or r["test_loss"] is None:
            continue
        key = (r["model"], r["category"])
        if r["K"] == 1:
            spec.setdefault(key + (r["token_budget"],), []).append(r["test_loss"])
        else:
            mix.setdefault(key + (r["K"], r["token_budget"]), []).append(r["test_loss"])
    out = {}
    for (m, c, K, D), losses in mix.items():
        d = D / K
        s = spec.get((m, c, d)) or spec.get((m, c, round(d)))
        if s:
            out.setdefault((m, K, d), []).append(np.mean(s) - np.mean(losses))
    return {k: (float(np.mean(v)), len(v)) for k, v in out.items()}


def gain_section(rows):
    g = mixing_gain(rows)
    if not g:
        return []
    L = ["", "## H4: mixing gain at equal tokens per category", "",
         "G = L_c(K = 1, d) − L_c(K, K·d), mean over categories and seeds: > 0 means mixing helped (sharing), < 0 "
         "that it hurt (competition).", "", "| model | K | tokens per category d | G (nats/token) | categories |",
         "|---|---|---|---|---|"]
    for (m, K, d), (v, n) in sorted(g.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2])):
        L.append(f"| {m} | {K} | {d:,.0f} | {v:+.4f} | {n} |")
    return L


def write_report(path, runs, rows, fits, baselines, twins, plots):
    status = {}
    for r in runs:
        status[r["status"]] = status.get(r["status"], 0) + 1
    L = ["# Ergodic-component scaling: analysis report", "",
         f"{len(runs)} runs: " + ", ".join(f"{v} {k}" for k, v in sorted(status.items())) + ".",
         f"Fits use: {DATA_FILTER}.", ""]
    L += ["## Fitted laws", "", "The first three rows compare the forms on the same data by held-out error.", "",
          "| form | data | formula | converged | fit error (RMSE log L) | CV error (largest budget left out) | points | runs |",
          "|---|---|---|---|---|---|---|---|"]
    for f in fits:
        L.append(f"| {f['form']} | {f['subset']} | `{f['formula']}` | {f['converged']} | {_fmt(f['fit_error'])} | "
                 f"{_fmt(f['cv_error'])} | {f['n_points']} | {f['n_runs']} |")
    L += floors_section(fits)
    L += gain_section(rows)
    for f in fits:
        L += ["", f"### {f['form']} ({f['subset']})", "", "| parameter | estimate | 95% CI | n_boot |", "|---|---|---|---|"]
        for k, v in f["params"].items():
            L.append(f"| {k} | {_fmt(v['estimate'])} | [{_fmt(v['ci95'][0])}, {_fmt(v['ci95'][1])}] | {v['n_boot']} |")
    L += ["", "## Figures", ""]
    for title, name in plots:
        L += [f"### {title}", "", f"![{title}]({name})", ""]
    rl = run_level(rows)
    L += ["## Loss against K", "", "| model | K | D | runs | in-training macro loss | held-out macro loss |", "|---|---|---|---|---|---|"]
    agg = {}
    for v in rl.values():
        a = agg.setdefault((v["model"], v["K"], v["D"]), {"in": [], "out": []})
        if v["in"]:
            a["in"].append(np.mean(v["in"]))
        if v["out"]:
            a["out"].append(np.mean(v["out"]))
    for (m, K, D), a in sorted(agg.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2])):
        L.append(f"| {m} | {K} | {D:,} | {max(len(a['in']), len(a['out']))} | "
                 f"{_fmt(float(np.mean(a['in'])) if a['in'] else None)} | {_fmt(float(np.mean(a['out'])) if a['out'] else None)} |")
    if twins:
        L += ["", "## Identification cost (untagged − tagged: > 0 when knowing the category helps)", "", "| run group | mean gap (nats/token) | bound ln(K)/100 |", "|---|---|---|"]
        for (m, K, seed, D), v in twins.items():
            L.append(f"| {m} K={K} seed={seed} D={D:,} | {np.nanmean(v['untagged'] - v['tagged']):+.4f} | {math.log(K) / 100:.4f} |")
    if baselines:
        L += ["", "## Store baselines (model-free reference points)", "",
              "| category | train papers | train tokens | bytes/token | unigram entropy (nats) | gzip bpb | bz2 bpb | lzma bpb | test near-dup rate |",
              "|---|---|---|---|---|---|---|---|---|"]
        for c, b in baselines["per_category"].items():
            cb = b["compress_bpb"]
            L.append(f"| {c} | {b['train_papers']:,} | {b['train_tokens']:,} | {_fmt(b['bytes_per_token'])} | "
                     f"{_fmt(b['unigram_entropy_nats'])} | {_fmt(cb['gzip'])} | {_fmt(cb['bz2'])} | {_fmt(cb['lzma'])} | "
                     f"{_fmt(b['test_near_duplicate_rate'])} |")
    L += ["", "Files: `runs.csv` (one row per run and category), `fits.json`, `baselines.json`, the PNG figures.", ""]
    Path(path).write_text("\n".join(L))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=st.HelpFormatter,
                                allow_abbrev=False)
    p.add_argument("sweep_dir", help="a sweep.py --out directory (or a train.py --output_dir)")
    p.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples for the intervals (0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes for the bootstrap refits")
    p.add_argument("--no_baselines", action="store_true", help="skip the store baselines")
    args = p.parse_args(argv)
    if not Path(args.sweep_dir).is_dir():
        st.die(f"{args.sweep_dir}: no such directory")
    runs = collect_runs(args.sweep_dir)
    if not runs:
        st.die(f"{args.sweep_dir}: no run directories with run_config.json")
    out = Path(args.sweep_dir) / "analysis"
    out.mkdir(exist_ok=True)
    rows = run_rows(runs)
    write_csv(rows, out / "runs.csv")
    print(f"{len(runs)} runs, {len(rows)} rows -> {out / 'runs.csv'}")

    d = fit_data(rows)
    fits = []
    from tqdm import tqdm
    for form, label, where in tqdm(fit_specs(rows), desc="fits", leave=False):
        dd = d if where is None else fit_data(rows, where)
        if len(dd["L"]) < len(dd["categories"]) + 4 or len(np.unique(dd["D"])) < 2:
            print(f"fit {form} [{label or 'all'}]: too few complete runs or budgets, skipped")
            continue
        f = fit_law(dd, form, n_boot=args.n_boot, seed=args.seed, jobs=args.jobs)
        if label:
            f["data_filter"] = f"{DATA_FILTER} and {label}"
        f["subset"] = label or "all"
        fits.append(f)
    if not fits:
        print("too few complete runs (or budgets) to fit the laws yet")
    public = [{k: v for k, v in f.items() if not k.startswith("_")} for f in fits]
    st.write_json_atomic(out / "fits.json", public, indent=1)
    for f in fits:
        ps = f"[{f['subset']}] " + ", ".join(f"{k}={f['params'][k]['estimate']:.4g} [{f['params'][k]['ci95'][0]:.3g}, {f['params'][k]['ci95'][1]:.3g}]"
                       for k in ("beta", "s") if k in f["params"])
        print(f"fit {f['form']:9s}: converged={f['converged']} fit_error={f['fit_error']:.4f} cv_error={_fmt(f['cv_error'])} {ps}")
    main_fits = [f for f in fits if f["subset"] == "all"]
    scored = [f for f in main_fits if f["converged"]] or main_fits
    best = min(scored, key=lambda f: f["cv_error"] if f["cv_error"] is not None else f["fit_error"]) if fits else None

    baselines = None
    if not args.no_baselines:
        store_dirs = {r["config"].get("data_dir") for r in runs}
        for sd in store_dirs:
            try:
                baselines = __import__("baselines").store_baselines(st.Store(sd))
                st.write_json_atomic(out / "baselines.json", baselines, indent=1)
                break
            except st.StoreError as e:
                print(f"baselines skipped: {e}")
    plots = []
    plot_loss_vs_tokens(rows, best, d, out / "loss_vs_tokens.png")
    plots.append(("Loss vs tokens for each K", "loss_vs_tokens.png"))
    plot_loss_vs_K(rows, out / "loss_vs_K.png")
    plots.append(("In-training and held-out loss vs K", "loss_vs_K.png"))
    dil = next((f for f in main_fits if f["form"] == "dilution"), None)
    if dil is not None:
        plot_collapse(dil, d, out / "collapse.png")
        plots.append(("Per-category loss vs effective tokens, collapsed with the fitted s", "collapse.png"))
    twins = plot_positions(runs, out / "loss_by_position.png")
    plots.append(("Loss by window position", "loss_by_position.png"))
    if baselines:
        plot_baselines(rows, baselines, out / "baselines.png")
        plots.append(("Model vs compressors (bits per byte)", "baselines.png"))
    write_report(out / "report.md", runs, rows, fits, baselines, twins, plots)
    print(f"wrote {out / 'report.md'} with {len(plots)} figures")
    return out


if __name__ == "__main__":
    main()
