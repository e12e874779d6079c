"""Repetition (issue 22): the dilution law on effective tokens per category (Muennighoff et al. 2023: a
token repeated R times counts as U + U R* (1 - exp(-R/R*)); analysis/law_data.py's fit_data(r_star=...)), with
the counts past one epoch, the fit's intervals, R* halved and doubled, and what it changes against the plain
fit (before / after)."""
import numpy as np

from analysis.law_data import R_STAR, fit_data
from analysis.laws import Law, fit_law

def repetition_counts(d):
    """How much of the data is past one epoch: points (run x category), runs and categories, the most epochs."""
    ep = d["epochs"]
    past = np.isfinite(ep) & (ep > 1)
    return {"points": int(past.sum()), "of_points": int(len(ep)), "runs": len(np.unique(d["run"][past])),
            "of_runs": len(d["runs"]), "categories": sorted({d["categories"][i] for i in d["cat"][past]}),
            "epochs_unknown": int((~np.isfinite(ep)).sum()),
            "max_epochs": float(ep[past].max()) if past.any() else None}


def _short(fit):
    """s, beta and the floors of a fit: estimates and intervals."""
    return {k: {"estimate": v["estimate"], "ci95": v["ci95"]} for k, v in fit["params"].items()
            if k in ("s", "beta") or k.startswith("E[")}


def fit_repetition(rows, plain, n_boot, seed, jobs=1, with_n=None, r_star=R_STAR):
    """The dilution law on effective tokens (fit_data(r_star=...)) with its bootstrap intervals; the same at
    R* halved and doubled (point estimates: how much s, beta and the floors lean on R*) with each one's
    objective (a coarse profile of R*: fitting R* itself is not done); and the plain dilution fit's s, beta
    and floors beside it (before / after). None when no point is past one epoch (the fit would be the plain
    one)."""
    d = fit_data(rows, r_star=r_star)
    counts = repetition_counts(d)
    if not counts["points"] or len(d["L"]) < len(d["categories"]) + 4:
        return None
    fit = fit_law(d, "dilution", n_boot=n_boot, seed=seed, with_n=with_n, jobs=jobs)
    fit["subset"] = f"all, effective tokens (R* = {r_star:g})"
    sens = []
    for rs in (r_star / 2, r_star, r_star * 2):
        dd = fit_data(rows, r_star=rs)
        f = fit if rs == r_star else fit_law(dd, "dilution", n_boot=0, with_n=fit["_with_n"])
        law = Law("dilution", len(dd["categories"]), fit["_with_n"])
        sens.append({"r_star": rs, "objective": law.objective(np.asarray(f["_theta"]), dd)[0],
                     "fit_error": f["fit_error"], "params": {k: v["estimate"] for k, v in _short(f).items()}})
    return {"name": "dilution_repetition", "r_star": r_star, "r_star_fitted": False,
            "rule": "D'_c = U + U R* (1 - exp(-R/R*)), U = D_c / epochs, R = epochs - 1 (D'_c = D_c up to one epoch); "
                    "D' = D - sum_c (D_c - D'_c) over the run's in-training categories",
            "counts": counts, "fit": fit, "sensitivity": sens,
            "before": _short(plain) if plain else None, "after": _short(fit)}
