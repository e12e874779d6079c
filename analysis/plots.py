"""The figures of the report: loss against tokens per K with the fitted law, loss against K, the collapse
with the fitted s, model against compressors, loss by window position."""
import math

import numpy as np

from analysis.forms import preferred_form
from analysis.hypotheses import macro, run_level
from analysis.laws import Law
from analysis.runs import used

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
                    pts.setdefault(v["D"], []).append(v)
            Ds = sorted(pts)
            # equal weight per category (replicates averaged first); bars: SD of the runs' own macro losses
            ax.errorbar(Ds, [macro(pts[D], "in") for D in Ds],
                        yerr=[np.std([np.mean(list(v["in"].values())) for v in pts[D]]) for D in Ds], fmt="o",
                        color=col, capsize=3, label=f"K={K} (runs, categories weighted equally)")
            if best_fit is not None and Ds:
                law = Law(best_fit["form"], len(fit_d["categories"]), best_fit["_with_n"])
                grid = np.geomspace(min(Ds), max(Ds), 50)
                N = np.median(fit_d["N"])
                # the categories weighted as the runs at this K hold them (the points average the same way);
                # balanced sampling: D_c = D/K
                weight = np.bincount(fit_d["cat"][fit_d["K"] == K], minlength=len(fit_d["categories"]))
                preds = [law.predict(np.array(best_fit["_theta"]), {"D": grid, "Dc": grid / K, "N": np.full_like(grid, N),
                                                                    "cat": np.full(len(grid), c)})
                         for c in range(len(fit_d["categories"]))]
                if weight.sum():
                    ax.plot(grid, np.average(preds, axis=0, weights=weight), "-", color=col, lw=1.2,
                            label=f"K={K} fit ({best_fit['form']})")
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
                    pts.setdefault(v["K"], []).append(v)
            Ks = sorted(pts)
            if Ks:  # equal weight per category, as in H2 / H5; bars: SD of the runs' own macro losses
                ax.errorbar(Ks, [macro(pts[k], kind) for k in Ks],
                            yerr=[np.std([np.mean(list(v[kind].values())) for v in pts[k]]) for k in Ks], fmt=style,
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


def plot_baselines(rows, baselines, path):
    plt = _plt()
    cats = list(baselines["per_category"])
    # the model's bits per byte at the largest budget that trained the category (mean of those runs): a
    # choice fixed by the design, never the lowest test value over all runs (a selection on the test set)
    top, vals = {}, {}
    for r in used(rows):
        if r["in_training"] and r["test_bits_per_byte"] is not None and not r["tagged"]:
            top[r["category"]] = max(top.get(r["category"], 0), r["token_budget_planned"] or 0)
    for r in used(rows):
        if (r["in_training"] and r["test_bits_per_byte"] is not None and not r["tagged"]
                and (r["token_budget_planned"] or 0) == top.get(r["category"])):
            vals.setdefault(r["category"], []).append(r["test_bits_per_byte"])
    best = {c: float(np.mean(v)) for c, v in vals.items()}
    x = np.arange(len(cats))
    fig, ax = plt.subplots(figsize=(9, 4.8))
    wdt = 0.2
    for i, comp in enumerate(("gzip", "bz2", "lzma")):
        vals = [baselines["per_category"][c]["compress_bpb"][comp] or np.nan for c in cats]
        ax.bar(x + (i - 1.5) * wdt, vals, wdt, label=comp)
    ax.bar(x + 1.5 * wdt, [best.get(c, np.nan) for c in cats], wdt, label="model, largest budget (mean of its runs)")
    ax.set_xticks(x)
    ax.set_xticklabels(cats, rotation=45, ha="right")
    _style(ax, "category", "bits per byte (test text)", "model vs compressors, per category")
    _save(plt, fig, path)


def plot_positions(pairs, runs, path):
    """Tagged minus untagged loss by window position for the twin pairs (same sampling arm, seeds, budget);
    without twins, the in-training loss by position of the largest budget's runs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    if pairs:
        groups = {}
        for p in pairs:
            groups.setdefault((p["model"], p["K"]), []).append(p["gap_by_position"])
        for (m, K), gaps in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            ax.plot(range(1, 101), np.nanmean(np.array(gaps, dtype=float), axis=0), label=f"{m} K={K} ({len(gaps)} twin pairs)")
            ax.axhline(math.log(K) / 100, ls=":", lw=0.8, color="grey")
        title, ylabel = "identification cost by position: untagged − tagged", "loss gap (nats/token)"
    else:
        done = [r for r in runs if not r["excluded"] and r["test"]]
        biggest = max((r["config"].get("token_budget_effective") or 0 for r in done), default=None)
        curves = {}
        for r in done:
            if r["config"].get("token_budget_effective") == biggest and not r["config"].get("tag_categories"):
                vecs = [r["test"]["per_category"][c]["loss_by_position"] for c in r["config"]["categories"]]
                key = (str(r["config"].get("model_name")), len(r["config"]["categories"]))
                curves.setdefault(key, []).append(np.nanmean(np.array(vecs, dtype=float), axis=0))
        for (m, K), cs in sorted(curves.items()):  # mean over the runs of each model and K
            ax.plot(range(1, 101), np.mean(cs, axis=0), lw=1, label=f"{m} K={K} ({len(cs)} runs)")
        title, ylabel = f"loss by window position (D={biggest})", "in-training test loss (nats/token)"
    _style(ax, "position in window (tokens of context)", ylabel, title, legend_size=7)
    _save(plt, fig, path)


def make_plots(a, d, main, pairs, out):
    comparison = a["comparison"]
    best = main.get(preferred_form(comparison)) if comparison and preferred_form(comparison) else main.get("dilution")
    plots = []
    if used(a["rows"]):
        plot_loss_vs_tokens(a["rows"], best, d, out / "loss_vs_tokens.png")
        plots.append(("Loss vs tokens for each K", "loss_vs_tokens.png"))
        plot_loss_vs_K(a["rows"], out / "loss_vs_K.png")
        plots.append(("In-training and held-out loss vs K", "loss_vs_K.png"))
    if "dilution" in main:
        plot_collapse(main["dilution"], d, out / "collapse.png")
        plots.append(("Per-category loss vs effective tokens, collapsed with the fitted s", "collapse.png"))
    plot_positions(pairs, a["runs"], out / "loss_by_position.png")
    plots.append(("Loss by window position", "loss_by_position.png"))
    if a["baselines"]:
        plot_baselines(a["rows"], a["baselines"], out / "baselines.png")
        plots.append(("Model vs compressors (bits per byte)", "baselines.png"))
    return plots
