"""The transfer matrix in the report (analysis/transfer.py computes it): the markdown table of t_ij with its
intervals, the section with the asymmetry and the similarity correlation, one section per model, and the
heatmaps (a cell coloured only where its interval excludes 0)."""
import math
from pathlib import Path

import numpy as np

from analysis.transfer import NEEDS_PAIRS


def _cell(res, i, j, d=2):
    if i == j:
        return "—"
    if (i, j) not in res["t"]:
        return "n/a"
    lo, hi = res["ci"][(i, j)]
    if lo is None:
        return f"{res['t'][(i, j)]:.{d}f} [no interval]"
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
         f"{pct}% intervals: the t whose effective data D_i + t·D_j puts the pair's loss on i's curve within the "
         f"noise of a parametric bootstrap ({res['n_boot']} replicates; an end at inf: the loss is consistent "
         "with i's curve at any larger effective data). t_ij < 0: interference. Noise: "
         + (f"SD of log loss {res['noise_sd']:.4f} from {res['noise_source']}." if res.get("noise_sd") else
            f"{res.get('noise_source')}: no intervals.")
         + (f" Shares of its variance carried across a seed's budgets {res['noise_shared']['across_budgets']:.2f}, "
            f"by a pair run's two categories {res['noise_shared']['run_level']:.2f}"
            + (f" ({res['noise_shared_source']})." if res.get("noise_shared_source") else ".")
            if res.get("noise_sd") and res.get("noise_shared") else ""), ""] + markdown_table(res)
    a = res["asymmetry"]
    if a["pairs"]:
        ci = a["mean_diff_ci"]
        L += ["", f"Asymmetry (signed; 0 under symmetry): mean over pairs of t_ij − t_ji (i before j in the table's "
              f"order) = {a['mean_diff']:+.3f} " + (f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci[0] is not None else
                                                    "(no interval)")
              + f"; {a['decided']} of {len(a['pairs'])} pairs have t_ij − t_ji ≠ 0 after Holm across the pairs."
              + (f" Descriptive index Σ|t_ij − t_ji| / Σ|t_ij + t_ji| = {a['index']:.3f} (no interval: noise alone "
                 "makes it > 0)." if a["index"] is not None else "")]
    if sim is not None:
        rho = ("n/a" if sim["rho"] is None else f"{sim['rho']:.3f} " + (
            f"[{sim['ci'][0]:.3f}, {sim['ci'][1]:.3f}]" if sim["ci"][0] is not None else "(no interval)"))
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
        lo, hi = res["ci"].get((i, j), [None, None])
        # only a cell whose interval excludes 0 is coloured: an undecided cell (or one whose interval runs to
        # inf) is not shown as transfer or interference
        decided = lo is not None and math.isfinite(v) and (lo > 0 or hi < 0)
        M[cats.index(i), cats.index(j)] = v if decided else np.nan
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
    ax.set_title("transfer t_ij (coloured where the interval excludes 0; < 0: interference)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
