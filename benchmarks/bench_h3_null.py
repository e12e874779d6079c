"""
How often H3 says "supported" (a K effect claimed) when there is none: draws of a null truth (s = 0, i.e.
the shared form L_c = E_c + B * D^-beta, plus simulate.py's run-level and per-category noise and
balanced sampling's multinomial D_c) on small random designs on which H3 can be decided (2-3 K values from
{1, 2, 3, 5, 11}, 2-3 subset seeds, 2-3 budgets, one init-seed replicate per run, up to 15% of runs
missing). H3 is computed as analyze.analyse does (tests/test_verdict_properties.py: h3_of). Goal: the rate
of "supported" at most the nominal 5% (its one-sided 95% Clopper-Pearson upper bound is printed too).
The bounded version in the suite is tests/test_verdict_properties.py::test_null_truth_rarely_yields_h3_supported.

    python benchmarks/bench_h3_null.py [--draws 200] [--n_boot 50] [--seed 1]
"""
import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import test_verdict_properties as props  # noqa: E402


def upper_bound(k, n, level=0.95):
    """One-sided Clopper-Pearson upper bound of a binomial rate."""
    from scipy.stats import beta
    return 1.0 if k == n else float(beta.ppf(level, k + 1, n - k))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--n_boot", type=int, default=50)
    p.add_argument("--seed", type=int, default=1, help="seed of the designs and noise (the suite's test uses 15)")
    args = p.parse_args(argv)
    t0 = time.time()
    designs = props.null_designs(args.draws, args.seed, degenerate=False)
    verdicts = []
    for i, v in enumerate(props._workers().map(props.null_draw, [(dz, args.n_boot) for dz in designs])):
        verdicts.append(v)
        if (i + 1) % 20 == 0:
            print(f"{i + 1} draws, {time.time() - t0:.0f} s: {dict(Counter(x for x, _ in verdicts))}", flush=True)
    counts = Counter(v for v, _ in verdicts)
    k, n = counts["supported"], len(verdicts)
    reasons = Counter(why.split(":")[0].split(" (")[0][:60] for v, why in verdicts if v == "undecided")
    print(f"null truth, {n} draws, n_boot {args.n_boot}: {dict(counts)}")
    print(f"H3 'supported' rate {k}/{n} = {k / n:.3f}, one-sided 95% upper bound {upper_bound(k, n):.3f} "
          f"(goal: rate <= 0.05)")
    print("undecided because:", dict(reasons.most_common(6)))
    for dz, (v, why) in zip(designs, verdicts):
        if v == "supported":
            print("  supported on", {key: dz[key] for key in ("Ks", "seeds", "budgets")}, "-", why)
    print(f"wall {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
