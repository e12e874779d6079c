"""Fit quality: the seed-to-seed noise floor (replicate runs that differ only in their seeds) and the fitted
law's residuals against it, by K, by budget and by K x budget, with a Bonferroni threshold."""
import math

import numpy as np

from analysis.runs import _model_config_conflicts, run_values, used

def replicate_key(r, values):
    """What replicates share: every run-defining value but the seeds (data / subset seed, init seed), with
    the category set compared as a set (K = 11 runs of different subset seeds are rotations of one set)."""
    return (r["model"], tuple(sorted(r["categories"].split())), r["token_budget_planned"], r["tagged"],
            tuple(sorted(values.get(r["run_id"], {}).items())))


def noise_floor(rows, runs=None):
    """Pooled SD of log test loss among replicate runs (replicate_key: the same run but for its seeds) per
    category: the scatter no law can explain. Every kind of replicate enters (init seed only; data and init
    seed, e.g. K = 11 subsets that are rotations of one set), each group marked with its kind. Returns (sd or None, degrees of freedom, number of groups,
    the groups: [{model, K, budget, runs, df}]). Without replicates the floor is unknown (None)."""
    conflicts = _model_config_conflicts(runs) if runs else frozenset()
    values = {r["run_id"]: run_values(r, conflicts) for r in (runs or [])}
    groups, seeds = {}, {}
    for r in used(rows):
        if r["in_training"] and not r["tagged"]:
            key = replicate_key(r, values) + (r["category"],)
            groups.setdefault(key, {}).setdefault(r["run_id"], math.log(r["test_loss"]))
            seeds[r["run_id"]] = (str(r.get("data_seed") if r.get("data_seed") is not None else r.get("seed")),
                                  str(r.get("init_seed")))
    ss, df, n, listing = 0.0, 0, 0, {}
    for key, by_run in groups.items():
        if len(by_run) > 1:
            v = np.asarray(list(by_run.values()))
            ss += float(((v - v.mean()) ** 2).sum())
            df += len(v) - 1
            n += 1
            data = {seeds[rid][0] for rid in by_run}
            g = listing.setdefault(key[:-1], {"model": key[0], "K": len(key[1]), "budget": key[2],
                                              "runs": sorted(by_run), "df": 0,
                                              # which noise the replicates see: init-seed replicates share their
                                              # data order and miss its noise (the floor is then too small)
                                              "kind": "init seed only" if len(data) == 1 else "data and init seed"})
            g["df"] += len(v) - 1
    return (math.sqrt(ss / df) if df else None), df, n, list(listing.values())


def residual_diagnostics(fit, d, sigma):
    """Mean log residual (prediction − observation) by K, by budget and by K × budget, each against the
    noise floor: z = mean / (sigma / sqrt(seed clusters in the cell)) (a run's categories counted as one draw,
    and a seed's runs at several budgets as one: the conservative choice). A misfit: residual RMSE > 1.5 sigma, or a cell beyond the Bonferroni threshold."""
    from scipy.stats import norm
    resid = fit["_resid"]
    cells = []
    for label, keys in (("K", [d["K"]]), ("budget", [d["budget"]]), ("K x budget", [d["K"], d["budget"]])):
        combos = sorted({tuple(k[i] for k in keys) for i in range(len(resid))})
        for combo in combos:
            m = np.all([k == v for k, v in zip(keys, combo)], axis=0)
            n_runs = len(np.unique(d["run"][m]))
            # the independent draws of a cell are its seed clusters: a seed's runs at several budgets share
            # their noise, so counting runs overstated |z| in the by-K cells
            n_units = len(np.unique(d["cluster"][m])) if "cluster" in d else n_runs
            mean = float(resid[m].mean())
            z = mean / (sigma / math.sqrt(n_units)) if sigma else None
            cells.append({"by": label, "cell": [float(c) for c in combo], "mean_residual": mean, "n_runs": n_runs,
                          "n_clusters": n_units, "z": z})
    rmse = float(np.sqrt(np.mean(resid ** 2)))
    out = {"rmse": rmse, "noise_floor": sigma, "cells": cells}
    if not sigma:
        out.update(verdict="unknown", reason="no replicate runs (runs differing only in their seeds), so the "
                   "noise floor is unknown and lack of fit cannot be judged")
        return out
    z_crit = float(norm.ppf(1 - 0.05 / (2 * len(cells))))
    worst = max(cells, key=lambda c: abs(c["z"]))
    out["z_threshold"] = z_crit
    reasons = []
    if rmse > 1.5 * sigma:
        reasons.append(f"residual RMSE {rmse:.4f} is {rmse / sigma:.1f}x the noise floor {sigma:.4f}")
    if abs(worst["z"]) > z_crit:
        where = ", ".join(f"{'budget' if i else 'K'} {v:,.0f}" for i, v in enumerate(worst["cell"])) \
            if worst["by"] == "K x budget" else f"{worst['by']} {worst['cell'][0]:,.0f}"
        reasons.append(f"structured residuals: mean {worst['mean_residual']:+.4f} at {where} (z = {worst['z']:+.1f}, "
                       f"threshold {z_crit:.1f})")
    out.update(verdict="misfit" if reasons else "fits", reason="; ".join(reasons) or
               f"residual RMSE {rmse:.4f} = {rmse / sigma:.2f}x the noise floor, no structured residual beyond "
               f"|z| = {z_crit:.1f}")
    return out
