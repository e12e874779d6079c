"""
Coverage of analyze.py's 95% bootstrap intervals on P1-shaped fabricated sweeps (simulate.py): the
plan's design (K in {1, 2, 3, 5, 11}, budgets 10M..810M rounded up to 320-window steps, 11 subset seeds,
replicate init seeds) with test losses from the dilution law plus run-level and per-category noise. For
each noise seed it counts the seeds whose interval covers the truth (goal: >= 90% per parameter):

- the dilution fit: s, beta, B and every E_c;
- the floor sub-fits of H1 (the 'shared' form on K = 1 and on K = 11; the truth's floors are equal, so H1
  may call them different ('not supported') in at most 1 of 20 seeds): E_c, B, beta of each;
- the N-term fit (three model sizes, a truth with A * N^-alpha; --n_term): E_c, B, beta, s, A, alpha;
- H4: each cell's interval against the true gain.

    python benchmarks/bench_analysis_coverage.py [--seeds 20] [--first_seed 0] [--n_boot 200] [--jobs 2] [--n_term]
"""
import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import simulate  # noqa: E402
from analysis.hypotheses import h1_floors, mixing_gain  # noqa: E402
from analysis.law_data import fit_data  # noqa: E402
from analysis.laws import fit_law  # noqa: E402
from analysis.runs import collect_runs, run_rows  # noqa: E402

SIZES = (("pythia-14m", 1_200_000), ("pythia-31m", simulate.N_NONEMB), ("pythia-70m", 19_000_000 * 3))
N_TRUTH = dict(simulate.TRUTH, A=30.0, alpha=0.35)


def cover(fit, truth, tally, key):
    """Count, per parameter, whether its interval covers the truth (a parameter without one counts as not)."""
    miss = []
    for k, v in truth.items():
        if k not in fit["params"]:
            continue
        lo, hi = fit["params"][k]["ci95"]
        ok = lo is not None and lo <= v <= hi
        t = tally.setdefault(f"{key}: {k}", [0, 0])
        t[0] += ok
        t[1] += 1
        if not ok:
            miss.append(k)
    return miss


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--seeds", type=int, default=20, help="noise seeds")
    p.add_argument("--first_seed", type=int, default=0, help="the first noise seed")
    p.add_argument("--n_boot", type=int, default=200, help="bootstrap resamples per fit")
    p.add_argument("--jobs", type=int, default=2, help="processes for the bootstrap")
    p.add_argument("--n_term", action="store_true", help="also the N-term fit on a three-size sweep (slow)")
    args = p.parse_args(argv)
    base = {"s": simulate.TRUTH["s"], "beta": simulate.TRUTH["beta"], "B": simulate.TRUTH["B"],
            **{f"E[{c}]": e for c, e in simulate.TRUTH["E"].items()}}
    tally, h1_not_supported, h4 = {}, 0, [0, 0]
    t0 = time.time()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for seed in seeds:
        root = Path(tempfile.mkdtemp(prefix="coverage"))
        try:
            simulate.p1_sweep(root, noise_seed=seed)
            rows = run_rows(collect_runs(root))
            d = fit_data(rows)
            fit = fit_law(d, "dilution", n_boot=args.n_boot, seed=seed, jobs=args.jobs)
            miss = cover(fit, base, tally, "dilution")
            # H1's floor sub-fits, exactly as analyze.run_fits makes them
            subs = []
            for K in (1, 11):
                dd = fit_data(rows, lambda r, k=K: r["K"] == k)
                f = fit_law(dd, "shared", n_boot=args.n_boot, seed=seed, jobs=args.jobs, with_n=False)
                f["subset"] = f"K == {K}"
                # at fixed K the law is the shared form with B * K^(s*beta) (D_c = D/K)
                sub = {k: v for k, v in base.items() if k != "s"}
                sub["B"] = base["B"] * K ** (base["s"] * base["beta"])
                miss += [f"K={K} {m}" for m in cover(f, sub, tally, f"floors K={K}")]
                subs.append(f)
            h1 = h1_floors(subs[0], subs[1], 0.02)
            h1_not_supported += h1["verdict"] == "not supported"
            gain = mixing_gain(rows, fit, args.n_boot, seed)
            for t in gain["table"]:
                g = simulate.TRUTH["B"] * t["d"] ** -0.3 * (1 - t["K"] ** (-(1 - 0.5) * 0.3))
                h4[0] += t["ci95"][0] is not None and t["ci95"][0] <= g <= t["ci95"][1]
                h4[1] += 1
            if args.n_term:
                rn = Path(tempfile.mkdtemp(prefix="coverage_n"))
                try:
                    simulate.p1_sweep(rn, noise_seed=seed, models=SIZES, truth=N_TRUTH, Ks=(1, 3, 5),
                                       replicate_Ks=(1,), budgets=simulate.P1_BUDGETS[:4])
                    dn = fit_data(run_rows(collect_runs(rn)))
                    fn = fit_law(dn, "dilution", n_boot=args.n_boot, seed=seed, jobs=args.jobs)
                    miss += [f"N-term {m}" for m in cover(fn, dict(base, A=N_TRUTH["A"], alpha=N_TRUTH["alpha"]),
                                                          tally, "N-term")]
                finally:
                    shutil.rmtree(rn, ignore_errors=True)
            print(f"seed {seed:2d}: s={fit['params']['s']['estimate']:.3f} beta={fit['params']['beta']['estimate']:.3f} "
                  f"H1 {h1['verdict']}; {fit['bootstrap']['refit']}; not covered: {', '.join(miss) or '-'} "
                  f"({time.time() - t0:.0f} s)", flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    n = len(seeds)
    print(f"\ncoverage of the 95% intervals over noise seeds {seeds.start}..{seeds.stop - 1} (n_boot {args.n_boot}), "
          f"{time.time() - t0:.0f} s:")
    for k, (c, m) in tally.items():
        print(f"  {k:28s} {c}/{m}")
    worst = min(tally.items(), key=lambda kv: kv[1][0] / kv[1][1])
    print(f"  worst parameter: {worst[0]} {worst[1][0]}/{worst[1][1]} (goal >= 90%)")
    print(f"  H1 with equal true floors: 'not supported' in {h1_not_supported}/{n} (goal <= 1 in 20)")
    print(f"  H4 cells: {h4[0]}/{h4[1]} intervals cover the true gain")


if __name__ == "__main__":
    main()
