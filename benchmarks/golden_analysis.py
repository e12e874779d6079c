"""
Golden outputs of analyze.py, to prove that a refactor of the analysis changes no result, bit for bit:
analyses a few fabricated sweeps (simulate.py: P1-shaped, K = 1 only, lr arms with --where and
--per_group, several model sizes (the N term), P3 twins, broken runs) and, if given, a finished smoke sweep,
and copies every file analyze.py writes (runs.csv, fits.json, report.md, groups.md, the PNG figures) under
OUT. With --compare GOLDEN it then compares OUT with an earlier OUT byte for byte and lists what differs.

    python benchmarks/golden_analysis.py /tmp/golden-split/before [--smoke SWEEP_DIR]
    python benchmarks/golden_analysis.py /tmp/golden-split/after [--smoke SWEEP_DIR] --compare /tmp/golden-split/before

The fabricated sweeps are rebuilt from their seeds each time (the same bytes); a smoke sweep is copied
(run_config / summary / test_results / metrics only) so that its analysis/ is written outside it.
"""
import argparse
import contextlib
import filecmp
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import analyze  # noqa: E402
import simulate  # noqa: E402

N_BOOT = "12"  # few resamples: the bootstrap path runs (probe + rest) at a small CPU cost


def p1(root):
    simulate.p1_sweep(root, Ks=(1, 3), seeds=range(6), k11_seeds=(0, 1), budgets=(10e6, 30e6, 90e6, 270e6),
                       replicate_Ks=(1,), replicate_subsets=(0, 1))


def k1_only(root):
    simulate.p1_sweep(root, Ks=(1,), k11_seeds=(), budgets=(10e6, 90e6, 810e6), replicate_Ks=(1,))


def lnk(root):
    simulate.p1_sweep(root, law="lnK", Ks=(1, 3), seeds=range(4), k11_seeds=(0,), budgets=(10e6, 90e6, 810e6),
                       replicate_Ks=())


def lr_arms(root):
    rng = np.random.default_rng(0)
    for lr in (6e-4, 2e-3):
        for K in (1, 3):
            for seed in (0, 1, 2):
                for D in (10e6, 90e6):
                    simulate.make_run(root, f"lr{lr}_" + simulate.rid_of("pythia-31m", K, seed, D),
                                       simulate.select(K, seed), D, seed, rng, lr=lr)


def sizes(root):
    truth = dict(simulate.TRUTH, A=400.0, alpha=0.34)
    simulate.p1_sweep(root, Ks=(1, 3), seeds=range(4), k11_seeds=(), budgets=(10e6, 30e6, 90e6), replicate_Ks=(),
                       truth=truth, models=(("pythia-14m", 1.2e6), ("pythia-31m", simulate.N_NONEMB),
                                            ("pythia-70m", 19e6 * 2.5)))


def p3(root):
    simulate.p3_sweep(root, tag_gain=0.005)


def broken(root):
    simulate.p1_sweep(root, Ks=(1, 3), seeds=range(5), k11_seeds=(0,), budgets=(10e6, 30e6, 90e6), replicate_Ks=())
    runs = sorted((Path(root) / "runs").iterdir())
    (runs[0] / "test_results.json").unlink()
    (runs[1] / "summary.json").write_text("{not json")
    s = json.loads((runs[2] / "summary.json").read_text())
    (runs[2] / "summary.json").write_text(json.dumps(dict(s, status="failed", error="CUDA OOM")))
    shutil.copytree(runs[3], runs[3].with_name(runs[3].name + "_relaunch"))


CASES = [("p1", p1, []), ("k1_only", k1_only, []), ("lnK", lnk, []),
         ("lr_where", lr_arms, ["--where", "learning_rate=6e-4"]), ("lr_per_group", lr_arms, ["--per_group"]),
         ("sizes", sizes, []), ("p3_balanced", p3, ["--sampling", "balanced"]), ("broken", broken, [])]


def copy_sweep(src, dst):
    """The files analyze.py reads from a finished sweep (no checkpoints)."""
    for rd in sorted((Path(src) / "runs").iterdir()):
        if rd.is_dir():
            (dst / "runs" / rd.name).mkdir(parents=True)
            for name in ("run_config.json", "summary.json", "test_results.json", "metrics.jsonl"):
                if (rd / name).is_file():
                    shutil.copy2(rd / name, dst / "runs" / rd.name / name)


def run_case(name, build, extra, work, out, baselines=False):
    sweep = work / name
    if build is not None:
        build(sweep)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        analyze.main([str(sweep), "--n_boot", N_BOOT, "--jobs", "1", *(() if baselines else ("--no_baselines",)),
                      *extra])
    shutil.copytree(sweep / "analysis", out / name)
    (out / name / "stdout.txt").write_text(log.getvalue().replace(str(sweep), "SWEEP"))


def compare(a, b):
    """Files that differ or exist on one side only, between two output trees."""
    fa = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    fb = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    bad = [f"only in {a}: {p}" for p in sorted(fa - fb)] + [f"only in {b}: {p}" for p in sorted(fb - fa)]
    bad += [f"differs: {p}" for p in sorted(fa & fb) if not filecmp.cmp(a / p, b / p, shallow=False)]
    return bad, len(fa & fb)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="directory for the outputs (must not exist)")
    p.add_argument("--smoke", default=None, help="a finished smoke sweep (sweep.py run plans/smoke.yaml) to analyse too")
    p.add_argument("--compare", default=None, help="an earlier OUT to compare with, byte for byte")
    p.add_argument("--cases", default=None,
                   help=f"comma-separated cases to run, in this order (default: all: {', '.join(c for c, _, _ in CASES)}"
                        ", smoke); each is compared as soon as it is done")
    args = p.parse_args(argv)
    out = Path(args.out)
    work = out.with_name(out.name + "_sweeps")
    if out.exists() or work.exists():
        sys.exit(f"{out} or {work} exists: choose a new directory")
    cases = {name: (build, extra) for name, build, extra in CASES}
    names = args.cases.split(",") if args.cases else [*cases, *(["smoke"] if args.smoke else [])]
    bad = []
    for name in names:
        if name == "smoke":
            copy_sweep(args.smoke, work / "smoke")
            run_case("smoke", None, [], work, out, baselines=True)
        else:
            run_case(name, *cases[name], work, out)
        if args.compare:
            diff, n = compare(Path(args.compare) / name, out / name)
            bad += diff
            print(f"{name}: " + ("; ".join(diff) or f"identical: {n} files, byte for byte"), flush=True)
        else:
            print(f"{name}: done", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
