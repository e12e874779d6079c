"""
Coverage of the "beta by K" diagnostic's intervals (analysis/beta_by_k.py; issue 21: every interval the report
prints calibrated): each beta_K's 95% interval and that of the difference beta_Kmin - beta_Kmax, on P1-shaped
sweeps (simulate.p1_sweep: K in {1, 2, 3, 5} x 11 seeds, K = 11 x 3 seeds, 5 budgets) under the measured
clustered noise (simulate.noise_model()).

For each of --n_sweeps noise seeds: fabricate the sweep and its noiseless twin (the same noise seed, so the
same multinomial token draws, simulate.NoiseModel(0)), read both as analyze.py does (collect_runs, run_rows,
fit_data), fit the dilution law (laws.fit_law; beta_by_K reads its point estimate only, which does not depend
on the resamples, so --fit_n_boot defaults to 0: the law's own jackknife is bench_calibration's business) and
call beta_by_K as analyze.py does (--n_boot 0: point estimates only). The truth of each interval is the same
statistic on the twin (its point estimate), as in bench_calibration.py. The functions are called directly
(no figures, no other hypotheses): 7-8 CPU-s a sweep with the jackknife, 19-21 with the old bootstrap.

Coverage is reported per interval name with Wilson's 95% bracket and with the sweep as the unit
(bench_calibration.coverage_interval: the beta_K of one sweep share its fit and noise).

    OMP_NUM_THREADS=1 python benchmarks/bench_beta_by_k.py --n_sweeps 20 [--out beta_by_k.json]
"""
import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
import simulate  # noqa: E402
from analysis.beta_by_k import beta_by_K  # noqa: E402
from analysis.law_data import fit_data  # noqa: E402
from analysis.laws import fit_law  # noqa: E402
from analysis.runs import collect_runs, run_rows  # noqa: E402
from bench_calibration import classify, coverage_interval  # noqa: E402


def beta_k(root, n_boot, fit_n_boot, seed):
    """beta_by_K on the sweep at root, read as analyze.py reads it (its progress lines swallowed)."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        d = fit_data(run_rows(collect_runs(root)))
        fit = fit_law(d, "dilution", n_boot=fit_n_boot, seed=seed, jobs=1)
        return beta_by_K(d, fit, n_boot, 1)


def intervals(b):
    """{name: (estimate, [lo, hi])} of one beta_by_K result."""
    out = {f"beta_K (K = {r['K']})": (r["estimate"], r["ci95"]) for r in b["betas"]}
    out["beta_K difference"] = (b["difference"]["estimate"], b["difference"]["ci95"])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--n_sweeps", type=int, default=20, help="fabricated P1 sweeps (noise seeds)")
    p.add_argument("--first_seed", type=int, default=0, help="the first noise seed")
    p.add_argument("--n_boot", type=int, default=1000, help="analyze.py --n_boot (beta by K: 0 for no intervals, "
                   "else the jackknife)")
    p.add_argument("--fit_n_boot", type=int, default=0, help="resamples of the dilution fit (its point only is read)")
    p.add_argument("--out", default=None, help="write the tallies to this JSON file after every sweep")
    args = p.parse_args(argv)
    if args.n_sweeps < 1 or args.n_boot < 0:
        sys.exit("bench_beta_by_k: --n_sweeps must be >= 1 and --n_boot >= 0")
    nb, noise, tally, t0 = args.n_boot, simulate.noise_model(), {}, time.process_time()
    for seed in range(args.first_seed, args.first_seed + args.n_sweeps):
        tmp = Path(tempfile.mkdtemp(prefix="bench_betak_"))
        try:
            simulate.p1_sweep(tmp / "noisy", noise_seed=seed, noise=noise)
            simulate.p1_sweep(tmp / "twin", noise_seed=seed, noise=simulate.NoiseModel(0.0))
            got = intervals(beta_k(tmp / "noisy", nb, args.fit_n_boot, seed))
            truth = intervals(beta_k(tmp / "twin", 0, 0, seed))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for name, (est, ci) in got.items():
            t = tally.setdefault(name, {"n": 0, "covered": 0, "refused": 0, "zero_width": 0, "no_truth": 0,
                                        "per_sweep": [], "misses": []})
            t["n"] += 1
            tr = truth[name][0]
            if ci[0] is None:
                t["refused"] += 1
                t["per_sweep"].append([0, 0])
                continue
            hit = ci[0] <= tr <= ci[1]
            t["covered"] += hit
            t["zero_width"] += ci[1] - ci[0] == 0
            t["per_sweep"].append([1, int(hit)])
            if not hit:
                t["misses"].append({"seed": seed, "estimate": est, "ci95": ci, "truth": tr})
        print(f"sweep {seed - args.first_seed + 1}/{args.n_sweeps} done ({time.process_time() - t0:.0f} CPU-s)",
              file=sys.stderr, flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps({"argv": sys.argv[1:] if argv is None else argv, "n_boot": nb,
                                                  "cpu_s": time.process_time() - t0, "intervals": tally}, indent=1))
    print("| interval | decided | covered | refused | coverage | 95% CI, sweep as unit | 90-98%? |\n|---|---|---|---|---|---|---|")
    for name, t in tally.items():
        cov, ci, deff, _ = coverage_interval(t)
        print(f"| {name} | {t['n'] - t['refused']} | {t['covered']} | {t['refused']} | "
              + ("– | – | refused |" if cov is None else f"{cov:.3f} | [{ci[0]:.3f}, {ci[1]:.3f}] | {classify(ci)} |"))
    print(f"{time.process_time() - t0:.0f} CPU-s (this process)")
    return tally


if __name__ == "__main__":
    main()
