"""Fabricated data with known truths for the tests and benchmarks/bench_estimator_coverage.py: a transfer
sweep (specialists + pair runs) with known t_ij, compression-rate curves with a known Hilberg exponent,
and multi-size sweeps with a known compute-optimal model size. Everything is drawn from one
np.random.Generator, so a seed reproduces a dataset exactly."""
import itertools
import math

import numpy as np

CATS = ["math.AC", "cs.CV", "cs.AI", "cs.SY", "math.GR"]
SPECIALIST_BUDGETS = (1e7, 3e7, 9e7, 2.7e8, 8.1e8)   # the plan's ladder (EXPERIMENT_PLAN.md)
PAIR_BUDGET = 9e7


def transfer_sweep(rng, cats=CATS, noise=0.01, seeds=1, pair_seeds=1, budgets=SPECIALIST_BUDGETS,
                   pair_budget=PAIR_BUDGET, t_range=(-0.4, 0.9)):
    """(runs, truth): run records in transfer.py's shape and {"t": {(i, j): t}, "curves": {c: (E, B, beta)}}.
    Tokens of a run jitter by up to 1% around the budget (split evenly within a pair), as real runs do."""
    curves = {c: (rng.uniform(1.5, 2.5), rng.uniform(60, 300), rng.uniform(0.25, 0.4)) for c in cats}
    t = {(i, j): rng.uniform(*t_range) for i in cats for j in cats if i != j}
    loss = lambda c, d: curves[c][0] + curves[c][1] * d ** (-curves[c][2]) + rng.normal(0, noise)
    runs = []
    for c, b, s in itertools.product(cats, budgets, range(seeds)):
        d = b * rng.uniform(0.99, 1.01)
        runs.append(_run(f"k1-{c}-{b:.0f}-{s}", [c], b, s, {c: d}, {c: loss(c, d)}))
    for (i, j), s in itertools.product(itertools.combinations(cats, 2), range(pair_seeds)):
        tok = {i: pair_budget / 2 * rng.uniform(0.99, 1.01), j: pair_budget / 2 * rng.uniform(0.99, 1.01)}
        los = {a: loss(a, tok[a] + t[(a, b)] * tok[b]) for a, b in ((i, j), (j, i))}
        runs.append(_run(f"k2-{i}-{j}-{s}", [i, j], pair_budget, s, tok, los))
    return runs, {"t": t, "curves": curves}


def _run(run_id, cats, budget, seed, tokens, loss):
    return {"run_id": run_id, "model": "pythia-31m", "categories": cats, "budget": budget, "seed": seed,
            "tagged": False, "tokens": tokens, "loss": loss}


def hilberg_curve(rng, h=2.0, A=6.0, beta_H=0.6, noise=0.002, n_min=1e3, n_max=1e7, points=20):
    """(n, r) of a compression-rate curve r(n) = h + A*n^(beta_H - 1) with relative Gaussian noise."""
    n = np.logspace(math.log10(n_min), math.log10(n_max), points)
    r = h + A * n ** (beta_H - 1)
    return n, r * (1 + rng.normal(0, noise, len(n)))


def chinchilla_loss(N, D, E=1.7, A=400.0, alpha=0.34, B=410.0, beta=0.28):
    """L(N, D) = E + A N^-alpha + B D^-beta (Hoffmann et al.'s form)."""
    return E + A * N ** (-alpha) + B * D ** (-beta)


def chinchilla_optimum(C, A=400.0, alpha=0.34, B=410.0, beta=0.28):
    """The compute-optimal N at C = 6 N D for chinchilla_loss (closed form)."""
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    return G * (C / 6) ** (beta / (alpha + beta))


def isoflop_sweep(rng, sizes, budgets, Ks=(1, 3), noise=0.005, seeds=1, **law):
    """Points {"K", "N", "D", "L", "seed"}: every size at every budget; the K-dependence is a shift of E
    (which leaves the optimum unchanged, so the truth is chinchilla_optimum for every K)."""
    pts = []
    for K, N, D, s in itertools.product(Ks, sizes, budgets, range(seeds)):
        L = chinchilla_loss(N, D, **law) + 0.05 * math.log(K) + rng.normal(0, noise)
        pts.append({"K": K, "N": float(N), "D": float(D), "L": float(L), "seed": s})
    return pts


def write_run_dirs(root, runs, store_id="a" * 64, n_nonemb=19_000_000):
    """Write run records as train.py's run directories (ROOT/runs/<id>/run_config.json, summary.json,
    test_results.json), complete, so analyze.py's collector and transfer.runs_from_sweep read them."""
    import json
    from pathlib import Path
    for r in runs:
        rd = Path(root) / "runs" / r["run_id"]
        rd.mkdir(parents=True, exist_ok=True)
        cfg = {"categories": r["categories"], "model_name": r["model"], "seed": r["seed"], "init_seed": r["seed"],
               "data_seed": r["seed"], "token_budget": r["budget"], "token_budget_effective": r["budget"],
               "tag_categories": r["tagged"], "sampling": "balanced", "store_id": store_id,
               "n_params_nonembedding": n_nonemb, "n_params_total": 2 * n_nonemb,
               "identity": {"run": r["run_id"]}}
        seen = sum(r["tokens"].values())
        summary = {"status": "complete", "schedule_complete": True, "tokens_seen": seen, "steps": 10,
                   "total_steps": 10, "tokens_per_category": r["tokens"]}
        test = {"dtype": "bfloat16", "per_category": {c: {"loss": v, "loss_by_position": [v] * 100}  # analyze's plot reads it
                                                      for c, v in r["loss"].items()}}
        for name, obj in (("run_config.json", cfg), ("summary.json", summary), ("test_results.json", test)):
            (rd / name).write_text(json.dumps(obj))
