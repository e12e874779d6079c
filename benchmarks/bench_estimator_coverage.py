"""
Coverage of the 95% intervals of analysis/ (issue 17) over fabricated truths (analysis/synthetic.py):

  t_ij      transfer sweeps shaped like P3: 5 categories, one specialist per (category, budget) on the
            plan's ladder 10M..810M, one pair run per pair at 90M, true t_ij uniform in [-0.4, 0.9],
            test-loss noise 0.01 nats; residual-bootstrap intervals of all 20 ordered pairs
  beta_H    compression-rate curves r(n) = h + A n^(beta_H - 1), n = 1e3..1e7 (20 points), 0.2% relative
            noise, (h, A, beta_H) drawn per seed; the profile-likelihood interval of beta_H (and h's
            interval along that profile)
  N_opt     IsoFLOP sweeps: 9 sizes 3e6..3e8 x 7 budgets 1e8..1e11 of Hoffmann et al.'s law, 0.5% noise;
            the compute-optimal N at C = 3e17, 1e18, 3e18 against the closed-form optimum

  mixing    P1-shaped sweeps (simulate.py: K in {1, 2, 3, 5} x 5 subset seeds and K = 11 x 2, budgets
            10M..270M, run + category noise) from Ye et al.'s exponential mixing law (analysis/mixing.py), t = 1:
            bootstrap intervals (runs within K) of t, beta, B and every E_c; and the six-form held-out
            comparison: the exponential form picked, undecided with it among the best, or a wrong form decided

Goal: each covers its truth in >= 90% of cases (>= 18 of 20 seeds per quantity). beta_H is also counted
over --hilberg_seeds curves (the first --seeds of them are the 20-seed figure).

    nice python benchmarks/bench_estimator_coverage.py [--seeds 20] [--n_boot 300] [--only mixing]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from analysis import hilberg, isoflop, mixing, synthetic, transfer  # noqa: E402


def transfer_coverage(seeds, n_boot):
    """(covered, total, wrongly decided signs, seeds with every t_ij covered)."""
    cov = tot = wrong = 0
    for seed in range(seeds):
        runs, truth = synthetic.transfer_sweep(np.random.default_rng(seed))
        res = transfer.transfer_matrix(runs, n_boot=n_boot, seed=seed)
        for k, (lo, hi) in res["ci"].items():
            t = truth["t"][k]
            cov += lo <= t <= hi
            tot += 1
            wrong += (lo > 0 and t < 0) or (hi < 0 and t > 0)
        tot += len(res["missing"])      # a pair left unestimated counts as not covered
    return cov, tot, wrong


def hilberg_coverage(seeds):
    """Per seed: (beta_H covered, h covered)."""
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        h, A, beta = rng.uniform(1.0, 3.0), rng.uniform(3, 20), rng.uniform(0.3, 0.8)
        n, r = synthetic.hilberg_curve(rng, h=h, A=A, beta_H=beta)
        f = hilberg.fit_hilberg(n, r)
        out.append((f["beta_H_ci"][0] <= beta <= f["beta_H_ci"][1], f["h_ci"][0] <= h <= f["h_ci"][1]))
    return np.array(out)


def isoflop_coverage(seeds, n_boot, Cs=(3e17, 1e18, 3e18)):
    sizes, budgets = np.geomspace(3e6, 3e8, 9), np.geomspace(1e8, 1e11, 7)
    cov = {C: 0 for C in Cs}
    for seed in range(seeds):
        pts = synthetic.isoflop_sweep(np.random.default_rng(2000 + seed), sizes, budgets, Ks=(1,))
        # synthetic noise is independent per point: the residuals are the whole noise (shares (0, 1, 0))
        for s in isoflop.isoflop(pts, compute=Cs, n_boot=n_boot, seed=seed, shares=(0.0, 1.0, 0.0))[1]["slices"]:
            lo, hi = s["N_opt_ci"]  # None: an optimum at the edge of the sizes has no interval (not covered)
            cov[s["C"]] += lo is not None and lo <= synthetic.chinchilla_optimum(s["C"]) <= hi
    return cov


def mixing_coverage(seeds, n_boot):
    """Per parameter [covered, total] over the seeds, and the comparison's outcomes {picked, undecided, wrong}."""
    import shutil
    import tempfile

    import simulate
    from analysis.forms import CV_TOL, compare_forms, cv_errors, make_law
    from analysis.law_data import fit_data
    from analysis.laws import FORMS, _minimize, bootstrap_weights
    from analysis.runs import collect_runs, run_rows
    tally, outcome = {}, {"picked": 0, "undecided": 0, "wrong": 0}
    forms = list(FORMS) + list(mixing.FORMS)
    truth = simulate.MIXING_TRUTH
    for seed in range(seeds):
        root = tempfile.mkdtemp()
        try:
            simulate.p1_sweep(root, law="exponential", noise_seed=3000 + seed, seeds=range(5), Ks=(1, 2, 3, 5),
                               k11_seeds=(0, 1), budgets=(10e6, 30e6, 90e6, 270e6), replicate_Ks=(), truth=truth)
            d = fit_data(run_rows(collect_runs(root)))
        finally:
            shutil.rmtree(root)
        law = mixing.make_law("exponential", len(d["categories"]), False)
        weights, _ = bootstrap_weights(d, n_boot, seed)
        fit = mixing.fit_intervals(law, d, _minimize, weights)
        want = {"t": truth["t"], "beta": truth["beta"], "B": truth["B"],
                **{f"E[{c}]": truth["E"][c] for c in d["categories"]}}
        for k, v in want.items():
            lo, hi = fit["params"][k]["ci95"]
            t = tally.setdefault("E_c" if k.startswith("E[") else k, [0, 0])
            t[0] += lo is not None and lo <= v <= hi
            t[1] += 1
        err = cv_errors(d, forms, False)
        fits, equiv = mixing.equivalences(d, forms, False, make_law, _minimize, CV_TOL)
        cmp = mixing.judge(compare_forms(d, forms, False, n_boot, seed, err=err), equiv, fits, d["categories"])
        beaten = any(p["better"] not in ("exponential", "undecided") for p in cmp["pairs"]
                     if "exponential" in (p["a"], p["b"]))
        outcome["wrong" if beaten or cmp["best"] not in ("exponential", None) else
                "picked" if cmp["best"] == "exponential" else "undecided"] += 1
        print(f"  seed {seed}: t = {fit['params']['t']['estimate']:.3f} {fit['params']['t']['ci95']}; {cmp['verdict'][:60]}",
              flush=True)
    return tally, outcome


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--seeds", type=int, default=20, help="fabricated datasets per quantity")
    p.add_argument("--only", choices=["transfer", "hilberg", "isoflop", "mixing"], default=None, help="one quantity only")
    p.add_argument("--n_boot", type=int, default=300, help="bootstrap replicates per interval")
    p.add_argument("--hilberg_seeds", type=int, default=200,
                   help="curves for beta_H (cheap: a larger sample than --seeds tells the rate from luck)")
    args = p.parse_args(argv)
    t0 = time.time()
    if args.only in (None, "transfer"):
        cov, tot, wrong = transfer_coverage(args.seeds, args.n_boot)
        print(f"t_ij: {cov}/{tot} ordered pairs covered ({100 * cov / tot:.1f}%), {wrong} signs decided wrongly "
              f"[{time.time() - t0:.0f} s]")
    if args.only in (None, "hilberg"):
        t1 = time.time()
        hc = hilberg_coverage(max(args.seeds, args.hilberg_seeds))
        first = hc[:args.seeds].sum(0)
        print(f"beta_H: {first[0]}/{args.seeds} covered; h: {first[1]}/{args.seeds}; over all {len(hc)} curves: "
              f"beta_H {100 * hc[:, 0].mean():.1f}%, h {100 * hc[:, 1].mean():.1f}% [{time.time() - t1:.0f} s]")
    if args.only in (None, "isoflop"):
        t2 = time.time()
        ci = isoflop_coverage(args.seeds, args.n_boot)
        print("N_opt: " + ", ".join(f"C={C:.0e} {n}/{args.seeds}" for C, n in ci.items())
              + f" [{time.time() - t2:.0f} s]")
    if args.only in (None, "mixing"):
        t3 = time.time()
        tally, outcome = mixing_coverage(args.seeds, args.n_boot)
        print("exponential law: " + ", ".join(f"{k} {c}/{n}" for k, (c, n) in tally.items())
              + f"; comparison over {args.seeds} seeds: {outcome} [{time.time() - t3:.0f} s]")
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
