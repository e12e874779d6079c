"""The measured noise structure of a sweep with replicate runs, and per-K learning curves.

    python benchmarks/noise_structure.py sweeps/ngram_pilot_abstracts [--n_boot 2000] [--out FILE]

Prints, per model and replicate family (any seed / init seed only / data order only), the SD of log test loss
per run and category, the fraction shared across the budgets of one seed cluster, the run-level fraction
(shared across the categories of one run) and the cluster fraction, with 95% bootstrap intervals over replicate
groups (analysis/noise_structure.py; none below 10 groups: too few for an interval); then, per K, a learning
curve L_c = E_c + B·D^(-beta) (D the planned budget, one floor per category) with a bootstrap over subset
seeds, and the epochs per category at the largest budget. Writes everything as JSON (default
SWEEP/analysis/noise_structure.json).
"""
import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from analysis.noise_structure import noise_model  # noqa: E402
from analysis.runs import collect_runs, run_rows, used  # noqa: E402


def fit_curve(rows):
    """Least squares on log L of L_c = E_c + B·D^(-beta): (beta, B, {c: E_c}) or None when it fails."""
    from scipy.optimize import least_squares
    cats = sorted({r["category"] for r in rows})
    ci = np.array([cats.index(r["category"]) for r in rows])
    D = np.array([float(r["token_budget_planned"]) for r in rows])
    y = np.log([r["test_loss"] for r in rows])
    lo = np.array([min(r["test_loss"] for r in rows if r["category"] == c) for c in cats])

    def resid(p):  # p = log B, beta, log E_c (floors below every observed loss of their category)
        return np.log(np.exp(p[2:])[ci] + np.exp(p[0]) * D ** -p[1]) - y

    best = None
    for beta0 in (0.1, 0.3, 0.6):
        p0 = np.concatenate([[math.log(max(np.exp(y).mean() - lo.min() * 0.8, 1e-3) * D.min() ** beta0), beta0],
                             np.log(0.8 * lo)])
        try:
            res = least_squares(resid, p0, bounds=([-50, 1e-3] + [-10] * len(cats), [50, 3] + list(np.log(lo))))
        except ValueError:
            continue
        if best is None or res.cost < best.cost:
            best = res
    if best is None:
        return None
    return float(best.x[1]), float(math.exp(best.x[0])), {c: float(math.exp(v)) for c, v in zip(cats, best.x[2:])}


def per_K_curves(rows, n_boot, seed=0):
    """{model: {K: {beta, ci, n_runs, budgets, epochs_at_largest}}}: the curve fitted per K, its beta's 95%
    percentile interval from n_boot resamples of subset seeds (a seed's runs together)."""
    rng = np.random.default_rng(seed)
    out = {}
    for model in sorted({r["model"] for r in rows}):
        for K in sorted({r["K"] for r in rows if r["model"] == model}):
            mine = [r for r in rows if r["model"] == model and r["K"] == K and r["in_training"] and not r["tagged"]]
            budgets = sorted({r["token_budget_planned"] for r in mine})
            if len(budgets) < 3:
                continue
            fit = fit_curve(mine)
            seeds = sorted({r["seed"] for r in mine})
            by_seed = {s: [r for r in mine if r["seed"] == s] for s in seeds}
            betas = []
            for _ in range(n_boot if len(seeds) > 1 else 0):
                draw = rng.choice(seeds, len(seeds))
                # a category missing from a resample just has no floor there (at K = 1 each seed is one
                # category, so a resample of seeds is a resample of categories; beta is shared)
                f = fit_curve([r for s in draw for r in by_seed[s]])
                if f:
                    betas.append(f[0])
            top = [r["epochs_category"] for r in mine if r["token_budget_planned"] == budgets[-1]
                   and r["epochs_category"] is not None]
            out.setdefault(model, {})[str(K)] = {
                "beta": fit[0] if fit else None, "B": fit[1] if fit else None,
                "beta_ci": [float(np.percentile(betas, 2.5)), float(np.percentile(betas, 97.5))] if len(betas) > 10
                else None, "n_boot_used": len(betas), "n_runs": len({r["run_id"] for r in mine}),
                "budgets": budgets, "epochs_per_category_at_largest_budget":
                    {"mean": float(np.mean(top)), "max": float(np.max(top))} if top else None}
    return out


def _fmt(v, ci, nd=4):
    if v is None:
        return "-"
    return f"{v:.{nd}f}" + (f" [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]" if ci else "")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir")
    p.add_argument("--n_boot", type=int, default=2000, help="bootstrap resamples of the noise components")
    p.add_argument("--n_boot_curves", type=int, default=200, help="bootstrap resamples of each per-K curve")
    p.add_argument("--out", default=None, help="JSON file (default SWEEP/analysis/noise_structure.json)")
    args = p.parse_args(argv)
    if not Path(args.sweep_dir).is_dir():
        sys.exit(f"noise_structure.py: {args.sweep_dir} is not a directory (give a sweep directory with runs/)")
    rows = [r for r in used(run_rows(collect_runs(args.sweep_dir))) if r["test_loss"] is not None]
    if not rows:
        sys.exit(f"noise_structure.py: no complete run with test results under {args.sweep_dir}")
    noise = noise_model(rows, n_boot=args.n_boot)
    curves = per_K_curves(rows, args.n_boot_curves)
    print("model  family  groups  reps  sd per run x category   shared across budgets   run-level   cluster")
    for model, fams in noise.items():
        for fam, e in fams.items():
            if e is None:
                print(f"{model}  {fam}  no replicate groups")
                continue
            print(f"{model}  {fam}  {e['n_groups']}  {e['n_replicates']}  {_fmt(e['sd'], e['ci']['sd'])}  "
                  f"{_fmt(e['frac_shared_across_budgets'], e['ci']['frac_shared_across_budgets'], 3)}  "
                  f"{_fmt(e['frac_run_level'], e['ci']['frac_run_level'], 3)}  "
                  f"{_fmt(e['frac_cluster'], e['ci']['frac_cluster'], 3)}")
            if all(v is None for v in e["ci"].values()) and e["n_groups"] < e["ci_min_groups"]:
                print(f"    no intervals: {e['n_groups']} replicate groups < {e['ci_min_groups']} (undecided)")
            print("    sd by budget: " + ", ".join(f"{b}: {v:.4f}" for b, v in e["sd_by_budget"].items())
                  + " | by K: " + ", ".join(f"{k}: {v:.4f}" for k, v in e["sd_by_K"].items()))
    print("model  K  beta [95%]  B  runs  epochs/category at the largest budget (mean, max)")
    for model, byK in curves.items():
        for K, c in byK.items():
            ep = c["epochs_per_category_at_largest_budget"]
            print(f"{model}  {K}  {_fmt(c['beta'], c['beta_ci'], 3)}  {c['B']:.4g}  {c['n_runs']}  "
                  + (f"{ep['mean']:.2f}, {ep['max']:.2f}" if ep else "-"))
    out = Path(args.out) if args.out else Path(args.sweep_dir) / "analysis" / "noise_structure.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"sweep": str(args.sweep_dir), "noise": noise, "per_K_curves": curves}, indent=1,
                              default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
