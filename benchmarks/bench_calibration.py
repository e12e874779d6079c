"""
Calibration of every interval analyze.py prints (issue 21, item 5), under the clustered noise of
simulate.noise_model() (the measured pilot's: shared across a seed cluster's budgets, run level, per category).

For each design and each of --n_sweeps noise seeds: fabricate the sweep with simulate.py, run analyze.main
in-process (--no_baselines --n_boot N --jobs 1; --verdicts_only where a design reads only verdict
intervals), walk fits.json, and for each interval count truth inside / refused (no interval) / zero width.

The truth: the law's own parameters for the fitted ones (E_c, B, beta, s, A, alpha; H1's floor difference
K = 1 vs K = 11 is 0: the floors do not depend on K). For the equal-weight contrasts (H2 cells, H2 ratio, H4,
H5, H6, t_ij, t_ij - t_ji, IsoFLOP N_opt; beta by K's beta_K and their difference, where the analysis is not
--verdicts_only) it is the same statistic on the noiseless twin of the sweep: the same design, the same noise
seed (so the same multinomial token draws D_c) with noise SD 0 — simulate.draw_noise draws the same stream
whatever the SD — analysed with --n_boot 0. (Multiplicative noise has mean exp(sd^2/2),
a relative bias of ~2e-5 at the pilot's SD: far below any interval's width.)

The coverage bracket takes the sweep as its unit: the intervals of one sweep share its noise (the K = 1
specialists in every H4 cell, one law fit under every floor), so they err together and are not independent
trials. Each interval name keeps its per-sweep tallies ("per_sweep": [decided, covered] per sweep); the
coverage's 95% interval is Wilson's (statsmodels) on the effective number of intervals n / deff, with the
design effect deff = the ratio estimator's between-sweep variance over the binomial one (Kish; floored at 1;
where it cannot be estimated, every interval covered or none, the worst case: each sweep one trial,
weighted by its intervals). Why not a cluster bootstrap over
sweeps (scipy.stats.bootstrap): a row with every interval covered (B at 20 of 20) gives every resample 1.0,
a zero-width [1, 1] and "OVER" from no evidence (BCa: a degenerate-data warning and nan), and a percentile
bootstrap under-covers with 20 units; Wilson stays honest at 20 of 20 ([0.84, 1]) and reduces to the plain
bracket where a sweep has one interval of the name. A row is "ok" / "UNDER" / "OVER" when that interval
lies inside / below / above 90-98%, "consistent" where it straddles a bound (not shown to be outside).
Files saved before the per-sweep tallies: the plain Wilson bracket, marked "cells independent".

Wrong verdicts: the law (dilution, s = 0.5, equal floors, a tag gain > 0, held-out loss falling with K) makes
H1..H6 and H2's ratio (growth slower than K^beta) all true, so "not supported" is wrong; for transfer, a pair
whose t_ij - t_ji is Holm-rejected when the noiseless twin's |t_ij - t_ji| is < 0.01 is wrong.

Designs (--designs, comma-separated):
  p1          P1 as first planned: K in {1,2,3,5} x 11 seeds, K = 11 x 3 seeds (the plan file has 12 now), 5 budgets, replicates
  p1_k11x1    the same with one K = 11 seed (one run per budget on that side)
  one_budget  P1 at 90M only (beta and s not identified: refusals expected)
  sizes3      three model sizes (14m, 31m, 70m-like N) with A N^-alpha, K in {1,3,5}, 4 budgets: A, alpha, IsoFLOP
  isoflop3    the three sizes of sizes3 (the same N_TRUTH law, K in {1,3,5}, 3 seeds, K = 11 x 3, init-seed
              replicates at K = 1), each size at its own 5 budgets D = C / (6N) on one compute grid ISO_C (4e15 to
              4e17 FLOPs, half-decade steps), so every C has all three sizes: the IsoFLOP N_opt. The truth's
              compute-optimal size is the middle one (19M) at the middle three C for every K (N_opt strictly
              inside the ladder; tests/test_bench_calibration.py checks it on the law and on the noiseless twin)
  p3_pairs3   P3: tagged twins (H6) + 5 specialists at 3 budgets (10M, 90M, 810M) with an init-seed replicate each
              + the 10 pairs at 90M: t_ij, asymmetry
  p3_pairs5   the same with 5 specialist budgets
  tiny        K in {1, 3} x 3 seeds, K = 11 x 2, 2 budgets: the smoke test's (tests/test_bench_calibration.py)

    OMP_NUM_THREADS=1 python benchmarks/bench_calibration.py --designs p1,p3_pairs3 --n_sweeps 20 --n_boot 100 \
        --out benchmarks/calibration.json
"""
import argparse
import contextlib
import io
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import numpy as np  # noqa: E402
from statsmodels.stats.proportion import proportion_confint  # noqa: E402

import analyze  # noqa: E402
import simulate  # noqa: E402
from bench_analysis_coverage import N_TRUTH, SIZES  # noqa: E402  (the three-size truth, shared)

GOAL = (0.90, 0.98)
P3_CATS = simulate.PERM[:5]
EXPECTED = ("supported",)  # every hypothesis is true under the fabricated law (module docstring)


# ----------------------------------------------------------------------------------------------------
# designs: (fabricate(root, noise_seed, noise), truth law, verdicts_only, extra analyze flags)

# isoflop3's compute grid and each size's budgets on it (module docstring)
ISO_C = tuple(float(C) for C in np.geomspace(4e15, 4e17, 5))
ISO_BUDGETS = {m: tuple(C / (6 * N) for C in ISO_C) for m, N in SIZES}
ISO_KW = dict(models=SIZES, truth=N_TRUTH, Ks=(1, 3, 5), seeds=range(3), replicate_Ks=(1,), budgets=ISO_BUDGETS)


def _p3_pairs(budgets):
    def make(root, seed, noise):
        simulate.p3_sweep(root, noise_seed=seed, noise=noise)  # tagged twins: H6
        rng = np.random.default_rng(10_000 + seed)
        for c in P3_CATS:  # specialists, each with an init-seed replicate (the transfer noise floor)
            for D in budgets:
                for init in (None, 100):
                    simulate.make_run(root, simulate.rid_of("pythia-31m", 1, 0, D, init_seed=init, cats=[c]), [c], D,
                                      0, rng, init_seed=init, noise=noise)
        for a in range(len(P3_CATS)):
            for b in range(a + 1, len(P3_CATS)):
                cats = [P3_CATS[a], P3_CATS[b]]
                simulate.make_run(root, simulate.rid_of("pythia-31m", 2, 0, 90e6, cats=cats), cats, 90e6, 0, rng,
                                  noise=noise)
    return make


DESIGNS = {
    "p1": (lambda r, s, n: simulate.p1_sweep(r, noise_seed=s, noise=n), simulate.TRUTH, True, []),
    "p1_k11x1": (lambda r, s, n: simulate.p1_sweep(r, noise_seed=s, noise=n, k11_seeds=(0,)), simulate.TRUTH, True, []),
    "one_budget": (lambda r, s, n: simulate.p1_sweep(r, noise_seed=s, noise=n, budgets=(90e6,)), simulate.TRUTH, True, []),
    "sizes3": (lambda r, s, n: simulate.p1_sweep(r, noise_seed=s, noise=n, models=SIZES, truth=N_TRUTH, Ks=(1, 3, 5),
                                                 replicate_Ks=(1,), budgets=simulate.P1_BUDGETS[:4]), N_TRUTH, False, []),
    "isoflop3": (lambda r, s, n: simulate.p1_sweep(r, noise_seed=s, noise=n, **ISO_KW), N_TRUTH, False, []),
    # the smoke test's: seconds, not a calibration (too few units for most intervals)
    "tiny": (lambda r, s, n: simulate.p1_sweep(r, noise_seed=s, noise=n, seeds=range(3), Ks=(1, 3), k11_seeds=(0, 1),
                                               budgets=(10e6, 90e6), replicate_subsets=(0,)), simulate.TRUTH, True, []),
    "p3_pairs3": (_p3_pairs((10e6, 90e6, 810e6)), simulate.TRUTH, False, ["--sampling", "balanced"]),
    "p3_pairs5": (_p3_pairs(simulate.P1_BUDGETS), simulate.TRUTH, False, ["--sampling", "balanced"]),
}


# ----------------------------------------------------------------------------------------------------
# fits.json -> intervals {(interval name, key): (estimate, [lo, hi])}

def intervals(f):
    out = {}

    def put(name, key, est, ci):
        out[(name, key)] = (est, list(ci) if ci is not None else [None, None])

    for fit in f.get("fits") or []:
        if fit.get("form") == "dilution" and fit.get("subset") == "all":
            for k, v in fit["params"].items():
                put("floors E_c" if k.startswith("E[") else k, k, v["estimate"], v.get("ci95"))
    for h in f.get("h1") or []:
        for t in h["table"]:
            put("H1 floor difference", (h.get("model"), t["category"]), t["difference"], t["ci95"])
    for name, sec in (("H2 cell", f.get("h2")), ("H5 cell", f.get("h5"))):
        for t in sec or []:
            put(name, (t["model"], t["D"], t["K_low"], t["K_high"]), t["difference"], t["ci95"])
    for t in (f.get("h2_ratio") or {}).get("table") or []:
        put("H2 ratio", (t["model"], t["D"]), t["difference"], t["ci95"])
    for t in (f.get("h4") or {}).get("table") or []:
        put("H4 gain", (t["model"], t["K"], t["d"]), t["G"], t["ci95"])
    for t in f.get("h6") or []:
        put("H6 gap", (t["model"], t["K"]), t["gap"], t["ci95"])
    for m, T in ((f.get("transfer") or {}).get("models") or {}).items():
        for t in T.get("t") or []:
            put("t_ij", (m, t["i"], t["j"]), t["t"], t["ci95"])
        a = T.get("asymmetry") or {}
        for p in a.get("pairs") or []:
            put("t_ij - t_ji", (m, p["i"], p["j"]), p["diff"], p["ci"])
        if a.get("mean_diff") is not None:
            put("mean t_ij - t_ji", m, a["mean_diff"], a.get("mean_diff_ci"))
    for b in f.get("beta_by_K") or []:  # not under --verdicts_only (p1's designs): a diagnostic no verdict reads
        for r in b["betas"]:
            put("beta_K", (b["of_fit"], r["K"]), r["estimate"], r["ci95"])
        put("beta_K difference", b["of_fit"], b["difference"]["estimate"], b["difference"]["ci95"])
    for K, r in ((f.get("isoflop") or {}).get("by_K") or {}).items():  # {"why"} when not computed
        sl = [s for s in r.get("slices") or [] if "N_opt" in s]
        for i, s in enumerate(sl):
            put("IsoFLOP N_opt", (K, s["C"]), s["N_opt"], s.get("N_opt_ci"))
            if 0 < i < len(sl) - 1:  # the inner slices: isoflop3's truth is inside the sizes there
                put("IsoFLOP N_opt, inner C", (K, s["C"]), s["N_opt"], s.get("N_opt_ci"))
    return out


def truth_of(name, key, law, twin):
    """The truth of one interval: the law's parameter, 0 for H1, else the noiseless twin's estimate (None:
    the twin has no such statistic)."""
    if name == "floors E_c":
        return law["E"][key[2:-1]]
    if name in ("B", "beta", "s", "A", "alpha"):
        return law.get(name)
    if name == "H1 floor difference":
        return 0.0
    got = twin.get((name, key))
    return None if got is None else got[0]


def _f(x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else (x if math.isinf(x) else None)


def tally_sweep(fits, twin, law, tally, wrong):
    this = {}  # interval name -> [decided, covered] in this sweep: the sweep is the coverage's unit
    for (name, key), (est, ci) in intervals(fits).items():
        truth = truth_of(name, key, law, twin)
        t = tally.setdefault(name, {"n": 0, "covered": 0, "refused": 0, "zero_width": 0, "no_truth": 0,
                                    "per_sweep": []})
        cell = this.setdefault(name, [0, 0])
        t["n"] += 1
        lo, hi = (_f(v) if not isinstance(v, str) else float(v) for v in ci) if ci[0] is not None else (None, None)
        if truth is None:
            t["no_truth"] += 1
        elif lo is None or hi is None:
            t["refused"] += 1
        else:
            t["zero_width"] += hi - lo == 0
            t["covered"] += lo <= truth <= hi
            cell[0] += 1
            cell[1] += lo <= truth <= hi
    for name, cell in this.items():
        tally[name]["per_sweep"].append(cell)
    for h, v in (fits.get("verdicts") or {}).items():
        w = wrong.setdefault(h, {"sweeps": 0, "wrong": 0, "supported": 0, "undecided": 0})
        # several models: one verdict per model, joined ("pythia-14m: supported; pythia-31m: undecided"):
        # wrong if any model's is "not supported", supported if every model's is, else undecided
        parts = [x.rsplit(": ", 1)[-1].strip() for x in v["verdict"].split(";")]
        w["sweeps"] += 1
        w["wrong"] += "not supported" in parts
        w["supported"] += all(x == "supported" for x in parts)
        w["undecided"] += "not supported" not in parts and not all(x == "supported" for x in parts)
    r = fits.get("h2_ratio") or {}
    if r.get("verdict"):
        w = wrong.setdefault("H2 ratio (slower than K^beta)", {"sweeps": 0, "wrong": 0, "supported": 0, "undecided": 0})
        w["sweeps"] += 1
        w["wrong"] += r["verdict"] == "not supported"
        w["supported"] += r["verdict"] == "supported"
        w["undecided"] += r["verdict"] == "undecided"
    for m, T in ((fits.get("transfer") or {}).get("models") or {}).items():
        w = wrong.setdefault("transfer asymmetry (pairs)", {"sweeps": 0, "wrong": 0, "supported": 0, "undecided": 0})
        for p in (T.get("asymmetry") or {}).get("pairs") or []:
            tw = twin.get(("t_ij - t_ji", (m, p["i"], p["j"])))
            if tw is not None and abs(tw[0]) < 0.01:  # a (near-)symmetric true pair: deciding it is wrong
                w["sweeps"] += 1
                w["wrong"] += bool(p.get("holm_rejected"))


# ----------------------------------------------------------------------------------------------------

def analyse(root, n_boot, seed, verdicts_only, extra):
    argv = [str(root), "--no_baselines", "--n_boot", str(n_boot), "--jobs", "1", "--seed", str(seed), *extra]
    argv += ["--verdicts_only"] if verdicts_only else []
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        analyze.main(argv)
    # one group: DIR/analysis/fits.json, or DIR/analysis/<group>/fits.json when a filter (--sampling) names it
    found = sorted((Path(root) / "analysis").glob("**/fits.json"))
    if len(found) != 1:
        raise RuntimeError(f"analyze.py {' '.join(argv)}: {len(found)} fits.json written; its output ended:\n"
                           + buf.getvalue()[-2000:])
    return json.loads(found[0].read_text())


def run_design(name, n_sweeps, n_boot, first_seed=0, log=sys.stderr, after_sweep=None):
    make, law, verdicts_only, extra = DESIGNS[name]
    tally, wrong, t0 = {}, {}, time.time()
    noise = simulate.noise_model()
    res = {"design": name, "n_sweeps": 0, "n_boot": n_boot, "verdicts_only": verdicts_only, "seconds": 0.0,
           "intervals": tally, "verdicts": wrong}
    for seed in range(first_seed, first_seed + n_sweeps):
        tmp = Path(tempfile.mkdtemp(prefix=f"calib_{name}_"))
        try:
            make(tmp / "noisy", seed, noise)
            make(tmp / "twin", seed, simulate.NoiseModel(0.0))
            fits = analyse(tmp / "noisy", n_boot, seed, verdicts_only, extra)
            # the twin's point estimates only; 1 resample where the full analysis runs, because the IsoFLOP
            # slices are not computed at all with --n_boot 0
            twin = intervals(analyse(tmp / "twin", 0 if verdicts_only else 1, seed, verdicts_only, extra))
            tally_sweep(fits, twin, law, tally, wrong)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        res.update(n_sweeps=res["n_sweeps"] + 1, seconds=time.time() - t0)
        print(f"[{name}] sweep {res['n_sweeps']}/{n_sweeps} done ({res['seconds']:.0f} s wall)", file=log, flush=True)
        if after_sweep:
            after_sweep(res)
    return res


def design_effect(per_sweep):
    """Kish's design effect of a coverage pooled over sweeps: the ratio estimator's variance with the sweep as
    the unit (linearised, m / (m - 1) small-sample factor) over the binomial variance of as many independent
    intervals (its N / (N - 1) factor alike, so one interval per sweep gives exactly 1); floored at 1 (a lucky
    spread of 20 sweeps is no evidence of anti-correlation). Where no spread shows how the intervals of a sweep
    go together (p-hat 0 or 1: 220 of 220 floors), the worst case: a sweep's intervals all err together, one
    trial per sweep weighted by its intervals (deff = sum n_i^2 / n, the ratio estimator's under that case;
    intervals per sweep where the sweeps are alike; n / deff = Kish's effective number of sweeps, at most the
    sweeps: with unequal sweeps n / m would be narrower than the estimate the same pattern with one sweep
    missed gets); with one sweep, 1 (the tiny smoke test: nothing to say)."""
    d = np.array([c for c in per_sweep if c[0] > 0], dtype=float).reshape(-1, 2)
    m, n = len(d), d[:, 0].sum()
    if m < 2 or n == 0:
        return 1.0
    p = d[:, 1].sum() / n
    if p in (0.0, 1.0):
        return float(np.sum(d[:, 0] ** 2) / n)
    v_cluster = m / (m - 1) * np.sum((d[:, 1] - p * d[:, 0]) ** 2) / n ** 2
    return max(1.0, float(v_cluster / (p * (1 - p) / (n - 1))))


def coverage_interval(t):
    """(coverage, [lo, hi], deff, method) of one tally: Wilson 95% on the effective n / deff (module
    docstring); a tally saved before the per-sweep records gets the plain Wilson bracket."""
    k = t["n"] - t["refused"] - t["no_truth"]
    if not k:
        return None, [None, None], None, None
    cov = t["covered"] / k
    if "per_sweep" not in t:
        return cov, list(proportion_confint(t["covered"], k, method="wilson")), None, "cells independent"
    deff = design_effect(t["per_sweep"])
    lo, hi = proportion_confint(cov * k / deff, k / deff, method="wilson")
    return cov, [float(lo), float(hi)], deff, "sweep-clustered"


def classify(ci):
    lo, hi = ci
    return ("refused" if lo is None else "UNDER" if hi < GOAL[0] else "OVER" if lo > GOAL[1] else
            "ok" if GOAL[0] <= lo and hi <= GOAL[1] else "consistent")


def rows(result):
    """Table rows: one per interval name, coverage over the decided (non-refused) intervals, its 95% interval
    with the sweep as the unit, and the status that interval gives against 90-98%."""
    out = []
    for name, t in result["intervals"].items():
        cov, ci, deff, method = coverage_interval(t)
        out.append({"design": result["design"], "interval": name, **{k: v for k, v in t.items() if k != "per_sweep"},
                    "sweeps": len(t.get("per_sweep", [])) or None, "coverage": cov, "ci95": ci, "deff": deff,
                    "ci_method": method, "status": classify(ci)})
    return out


def table(all_rows, results):
    L = ["| design | interval | intervals | sweeps | covered | refused | zero width | coverage | 95% CI, sweep as unit "
         "[deff] | 90–98%? |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in all_rows:
        if r["coverage"] is None:
            cov, ci = "–", "–"
        else:
            cov = f"{r['coverage']:.3f}"
            how = f"deff {r['deff']:.2f}" if r["deff"] is not None else r["ci_method"]
            ci = f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] ({how})"
        L.append(f"| {r['design']} | {r['interval']} | {r['n']} | {r['sweeps'] or '–'} | {r['covered']} | "
                 f"{r['refused']} | {r['zero_width']} | {cov} | {ci} | {r['status']} |")
    L += ["", "| design | hypothesis | sweeps | supported | undecided | wrong (\"not supported\") [Wilson 95%] |",
          "|---|---|---|---|---|---|"]
    for res in results:
        for h, w in res["verdicts"].items():
            if w["sweeps"]:
                lo, hi = proportion_confint(w["wrong"], w["sweeps"], method="wilson")
                L.append(f"| {res['design']} | {h} | {w['sweeps']} | {w['supported']} | {w['undecided']} | "
                         f"{w['wrong']} [{lo:.3f}, {hi:.3f}]{' > 5%' if w['wrong'] > 0.05 * w['sweeps'] else ''} |")
    return "\n".join(L)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--designs", default="p1,p3_pairs3", help=f"comma-separated, of {', '.join(DESIGNS)}")
    p.add_argument("--n_sweeps", type=int, default=20, help="fabricated sweeps (noise seeds) per design")
    p.add_argument("--first_seed", type=int, default=0, help="the first noise seed")
    p.add_argument("--n_boot", type=int, default=100, help="analyze.py --n_boot")
    p.add_argument("--out", default=None, help="write the results (tallies, rows) to this JSON file, after every "
                   "sweep (a run stopped early leaves the sweeps done so far)")
    p.add_argument("--table", default=None, metavar="JSON", help="only print the table of a saved --out file")
    args = p.parse_args(argv)
    if args.table:
        saved = json.loads(Path(args.table).read_text())
        print(table([r for res in saved["results"] for r in rows(res)], saved["results"]))
        return None
    names = [d.strip() for d in args.designs.split(",") if d.strip()]
    bad = [d for d in names if d not in DESIGNS]
    if bad or args.n_sweeps < 1 or args.n_boot < 1:
        sys.exit(f"bench_calibration: --designs {','.join(bad)} unknown (one of {', '.join(DESIGNS)})" if bad
                 else "bench_calibration: --n_sweeps and --n_boot must be >= 1")
    results = []

    def save(current=None):
        done = results + ([current] if current is not None else [])
        if args.out:
            Path(args.out).write_text(json.dumps({"argv": sys.argv[1:] if argv is None else argv, "results": done,
                                                  "rows": [r for res in done for r in rows(res)]}, indent=1) + "\n")

    for d in names:
        results.append(run_design(d, args.n_sweeps, args.n_boot, args.first_seed, after_sweep=save))
    save()
    all_rows = [r for res in results for r in rows(res)]
    print(table(all_rows, results))
    return all_rows, results


if __name__ == "__main__":
    main()
