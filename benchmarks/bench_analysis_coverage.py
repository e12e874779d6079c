"""
Coverage of analyze.py's 95% bootstrap intervals on P1-shaped fabricated sweeps (tests/fabricate.py): the
plan's design (K in {1, 2, 3, 5, 11}, budgets 10M..810M rounded up to 320-window steps, 11 subset seeds,
replicate init seeds) with test losses from the dilution law plus run-level and per-category noise. For
each noise seed the dilution form is fitted with its bootstrap; the script counts, per parameter, the
seeds whose interval covers the truth (goal: >= 17 of 20 for s, beta and every E_c), and the same for
the H4 cells' intervals against the true gain.

    python benchmarks/bench_analysis_coverage.py [--seeds 20] [--n_boot 200] [--jobs 2]
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
import analyze  # noqa: E402
import fabricate  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--seeds", type=int, default=20, help="noise seeds")
    p.add_argument("--n_boot", type=int, default=200, help="bootstrap resamples per fit")
    p.add_argument("--jobs", type=int, default=2, help="processes for the bootstrap")
    args = p.parse_args(argv)
    truth = {"s": fabricate.TRUTH["s"], "beta": fabricate.TRUTH["beta"],
             **{f"E[{c}]": e for c, e in fabricate.TRUTH["E"].items()}}
    covered = {k: 0 for k in truth}
    h4_cov, h4_n = 0, 0
    t0 = time.time()
    for seed in range(args.seeds):
        root = Path(tempfile.mkdtemp(prefix="coverage"))
        try:
            fabricate.p1_sweep(root, noise_seed=seed)
            rows = analyze.run_rows(analyze.collect_runs(root))
            d = analyze.fit_data(rows)
            fit = analyze.fit_law(d, "dilution", n_boot=args.n_boot, seed=seed, jobs=args.jobs)
            miss = []
            for k, v in truth.items():
                lo, hi = fit["params"][k]["ci95"]
                ok = lo <= v <= hi
                covered[k] += ok
                if not ok:
                    miss.append(k)
            gain = analyze.mixing_gain(rows, fit, args.n_boot, seed)
            for t in gain["table"]:
                g = fabricate.TRUTH["B"] * t["d"] ** -0.3 * (1 - t["K"] ** (-(1 - 0.5) * 0.3))
                h4_cov += t["ci95"][0] <= g <= t["ci95"][1]
                h4_n += 1
            print(f"seed {seed:2d}: s={fit['params']['s']['estimate']:.3f} beta={fit['params']['beta']['estimate']:.3f} "
                  f"boot used {fit['bootstrap']['used']}; not covered: {', '.join(miss) or '-'}", flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\ncoverage of the 95% intervals over {args.seeds} noise seeds (n_boot {args.n_boot}), "
          f"{time.time() - t0:.0f} s:")
    for k, n in covered.items():
        print(f"  {k:12s} {n}/{args.seeds}")
    print(f"  worst parameter: {min(covered.values())}/{args.seeds} (goal >= {round(0.85 * args.seeds)})")
    print(f"  H4 cells: {h4_cov}/{h4_n} intervals cover the true gain")


if __name__ == "__main__":
    main()
