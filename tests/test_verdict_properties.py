"""Property-based tests of analyze.py's verdict engine (hypothesis): random designs — random K sets, subset
seeds, budgets, replicate counts, missing cells, single-run cells, only K = 1, a single budget — under
random truths (the dilution law, no K effect, a law no form describes) and noise. Bounded (few, small
examples) so the suite stays near its 10 minutes."""
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as hs

import analyze
import simulate
from analysis.forms import compare_forms
from analysis.hypotheses import h3_verdict, k_contrast, mixing_gain
from analysis.law_data import fit_data
from analysis.laws import FORMS, fit_law
from analysis.noise import noise_floor, residual_diagnostics
from analysis.runs import collect_runs, run_rows

pytestmark = pytest.mark.slow  # dozens of analyses of random designs (hypothesis)

BUDGETS = (10e6, 30e6, 90e6, 270e6)


@hs.composite
def designs(draw):
    Ks = draw(hs.lists(hs.sampled_from((1, 2, 3, 5, 11)), min_size=1, max_size=3, unique=True))
    return {"Ks": sorted(Ks),
            "seeds": draw(hs.integers(1, 4)),
            "budgets": draw(hs.lists(hs.sampled_from(BUDGETS), min_size=1, max_size=3, unique=True)),
            "replicates": draw(hs.integers(0, 2)),
            "law": draw(hs.sampled_from(("dilution", "null", "lnK"))),
            "drop": draw(hs.floats(0, 0.4)),
            "noise_seed": draw(hs.integers(0, 10_000))}


def build(root, dz):
    """Write the design's runs (a random share of them missing: failed or never run)."""
    rng = np.random.default_rng(dz["noise_seed"])
    made = 0
    for K in dz["Ks"]:
        for seed in range(dz["seeds"] if K < 11 else min(dz["seeds"], 3)):
            for D in dz["budgets"]:
                for i in range(1 + dz["replicates"]):
                    if rng.random() < dz["drop"]:
                        continue
                    init = None if i == 0 else 100 + i
                    simulate.make_run(root, simulate.rid_of("pythia-31m", K, seed, D, init_seed=init),
                                       simulate.select(K, seed), D, seed, rng, law=dz["law"], init_seed=init)
                    made += 1
    return made


def _tmp():
    return Path(tempfile.mkdtemp(prefix="props"))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(designs(), hs.integers(0, 2 ** 31))
# one subset seed run three times (init seeds): one data-seed cluster per side, however many runs (H4 counted runs)
@example({"Ks": [1, 3], "seeds": 1, "budgets": [10e6, 30e6], "replicates": 2, "law": "dilution", "drop": 0.0,
          "noise_seed": 1}, 0)
def test_contrasts_never_claim_more_than_their_units(dz, perm_seed):
    """H2 / H5 (and H4's cells): no zero-width interval, no interval (and so no decided verdict) from < 2 runs on a side,
    used + excluded = total, and the same table whatever the run names and their order."""
    root = _tmp()
    try:
        made = build(root, dz)
        runs = collect_runs(root)
        assert len(runs) == made
        assert sum(r["excluded"] is None for r in runs) + sum(r["excluded"] is not None for r in runs) == made
        rows = run_rows(runs)
        tables = {}
        for kind, lower in (("in", False), ("out", True)):
            table, verdict, why = k_contrast(rows, kind, 50, 0, 0.02, smaller_is_lower=lower)
            for t in table:
                if t["ci95"][0] is not None:
                    assert t["ci95"][1] > t["ci95"][0] and min(t["n_runs"]) >= 2, t
                else:
                    assert t["note"], t
            if verdict != "undecided":
                assert any(t["ci95"][0] is not None for t in table)
            else:
                assert why
            tables[kind] = [(t["model"], t["D"], t["K_low"], t["K_high"], round(t["difference"], 12)) for t in table]
        # H4: an interval only from >= 2 data-seed clusters on each side (init-seed replicates of one subset
        # are one: they share its data order), of positive width around G; else a reason
        for t in mixing_gain(rows, None, 0, 0)["table"]:
            if t["ci95"][0] is None:
                assert t["units_note"], t
                continue
            used = [r for r in rows if not r["excluded"] and r["in_training"]]
            spec = {(r["category"], r["seed"]) for r in used if r["K"] == 1 and r["token_budget_planned"] == t["d"]}
            mixed = {r["seed"] for r in used if r["K"] == t["K"] and r["token_budget_planned"] == t["K"] * t["d"]
                     and r["category"] in {c for c, _ in spec}}
            assert len(mixed) >= 2 and len(spec) >= 2 and t["ci95"][0] < t["G"] < t["ci95"][1], t
        # rename every run (a random prefix) and reverse their order: the same contrasts
        rng = np.random.default_rng(perm_seed)
        renamed = []
        for r in runs:
            r2 = dict(r, run_id=f"{rng.integers(1e9):09d}_{r['run_id'][::-1]}")
            renamed.append(r2)
        rows2 = run_rows(renamed[::-1])
        for kind, lower in (("in", False), ("out", True)):
            table, _, _ = k_contrast(rows2, kind, 50, 0, 0.02, smaller_is_lower=lower)
            assert [(t["model"], t["D"], t["K_low"], t["K_high"], round(t["difference"], 12)) for t in table] \
                == tables[kind]
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------
# The fits (identification, the null rate of H3, run order and names). Each example is fitted in a worker
# process with one BLAS thread: the fits are tiny, and on a loaded 2-core machine OpenBLAS's threads in the
# test process made one H3 evaluation cost 78 s of CPU instead of 2.8 s (measured, see the report of s19prop).

def _workers():
    """Two spawned workers with single-threaded BLAS, started once per session: analyze's own bootstrap pool."""
    from analysis.workers import _pool
    return _pool(2)


def build_design(root, dz, law):
    """Like build(), for the fit properties: Ks, subset seeds, budgets, init-seed replicates, a share of runs
    missing; `single` runs (K, seed) appear at one budget only and without replicates (single-run cells)."""
    rng = np.random.default_rng(dz["noise_seed"])
    for K in dz["Ks"]:
        for seed in range(dz["seeds"] if K < 11 else min(dz["seeds"], 3)):
            for j, D in enumerate(dz["budgets"]):
                for i in range(1 + dz["replicates"]):
                    if rng.random() < dz["drop"] or (dz.get("single") and (K, seed) in dz["single"]
                                                        and (i or j)):
                        continue
                    init = None if i == 0 else 100 + i
                    simulate.make_run(root, simulate.rid_of("pythia-31m", K, seed, D, init_seed=init),
                                       simulate.select(K, seed), D, seed, rng, law=law, init_seed=init)


def h3_of(rows, runs, n_boot):
    """analyze.analyse's H3 verdict, computed the way it does (the 'all' dilution fit, the held-out
    comparison of the three forms, the noise floor and the dilution fit's diagnostics), without the other
    fits, hypotheses and figures."""
    d = fit_data(rows)
    if len(d["L"]) < len(d["categories"]) + 4 or len(np.unique(d["D"])) < 2:  # run_fits' rule: no fit
        return h3_verdict(None, None, None)
    dil = fit_law(d, "dilution", n_boot=n_boot, seed=0, jobs=1)
    comparison = compare_forms(d, list(FORMS), dil["_with_n"], n_boot, 0)
    diag = residual_diagnostics(dil, d, noise_floor(rows, runs)[0])
    return h3_verdict(dil, comparison, diag)


def null_draw(job):
    """One draw of a null truth (s = 0: L_c = E_c + B D^-beta, and noise) on a design: H3's verdict."""
    dz, n_boot = job
    root = _tmp()
    try:
        build_design(root, dz, "null")
        runs = collect_runs(root)
        return h3_of(run_rows(runs), runs, n_boot)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def null_designs(n, seed, degenerate=True):
    """n random small designs, mostly ones on which H3 can be decided (two or more K values, two or more
    budgets and subset seeds, init-seed replicates for the noise floor); with `degenerate`, every fourth is
    one that cannot decide it (only K = 1, a single K, no replicates, a single budget)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        Ks = sorted(rng.choice((1, 2, 3, 5, 11), size=int(rng.integers(2, 4)), replace=False).tolist())
        dz = {"Ks": Ks, "seeds": int(rng.integers(2, 4)),
              "budgets": sorted(rng.choice(BUDGETS, size=int(rng.integers(2, 4)), replace=False).tolist()),
              "replicates": 1, "drop": float(rng.uniform(0, 0.15)), "noise_seed": int(rng.integers(1 << 30))}
        if degenerate and i % 4 == 3:
            # no replicates: no init seeds and no K = 11 (its subset seeds are rotations of one set: replicates)
            key, value = [("Ks", [1]), ("Ks", [int(rng.choice((3, 5)))]), ("replicates", 0),
                          ("budgets", dz["budgets"][:1])][(i // 4) % 4]
            dz[key] = value
            if key == "replicates":
                dz["Ks"] = [k for k in dz["Ks"] if k != 11] if len(dz["Ks"]) > 2 else [1, 3]
        out.append(dz)
    return out


# At most 2 "supported" of 16 draws: with a true rate of 5%, P(3 or more of 16) = 4.3%, so 2 is the
# one-sided 95% binomial bound; with 16 draws this only catches gross excess (a rate of 30% gives 3 or more
# with probability 0.90). The many-draw rate is measured by benchmarks/bench_h3_null.py (BENCHMARKS.md).
NULL_DRAWS, NULL_MAX_SUPPORTED = 16, 2


def test_null_truth_rarely_yields_h3_supported():
    """A null truth (no K effect) never gives H3 'supported' beyond the nominal 5% over many draws of the
    noise and of small random designs (a quarter of them degenerate: only K = 1, one K, no replicates, one
    budget — those must never be decided as 'supported')."""
    designs_ = null_designs(NULL_DRAWS, seed=15)
    verdicts = list(_workers().map(null_draw, [(dz, 20) for dz in designs_]))
    supported = [(dz, why) for dz, (v, why) in zip(designs_, verdicts) if v == "supported"]
    assert len(supported) <= NULL_MAX_SUPPORTED, supported
    for i, (v, why) in enumerate(verdicts):
        assert why, (designs_[i], v)
        if i % 4 == 3:  # cannot be decided: undecided with the reason
            assert v == "undecided", (designs_[i], v, why)
    # not vacuous: the decidable draws reach s's interval, and it holds the true 0. (This read "some draw is
    # decided" until session 22: the decided ones were 2 false "supported" of the within-K bootstrap, whose
    # intervals for s excluded the true 0; the stratified jackknife's decide none of the 16.)
    reached = [why for v, why in verdicts if "reaches 0" in why]
    assert len(reached) >= NULL_DRAWS // 2, verdicts


@hs.composite
def fit_designs(draw):
    """Small designs for the identification property: only K = 1, one K, one budget, missing cells and
    single-run cells (a (K, subset seed) run at one budget only, without replicates) all occur."""
    Ks = sorted(draw(hs.lists(hs.sampled_from((1, 2, 3, 5, 11)), min_size=1, max_size=3, unique=True)))
    seeds = draw(hs.integers(1, 3))
    cells = [(K, s) for K in Ks for s in range(seeds if K < 11 else min(seeds, 3))]
    return {"Ks": Ks, "seeds": seeds,
            "budgets": sorted(draw(hs.lists(hs.sampled_from(BUDGETS[:3]), min_size=1, max_size=2, unique=True))),
            "replicates": draw(hs.integers(0, 1)), "drop": draw(hs.floats(0, 0.3)),
            "single": draw(hs.lists(hs.sampled_from(cells), max_size=len(cells), unique=True)),
            "noise_seed": draw(hs.integers(0, 10_000))}


def identification_draw(job):
    """Fit one form on a design (what fit_law reports per parameter), in a worker."""
    dz, form, n_boot = job
    root = _tmp()
    try:
        build_design(root, dz, dz.get("law", "dilution"))
        d = fit_data(run_rows(collect_runs(root)))
        if not len(d["L"]):
            return None
        fit = fit_law(d, form, n_boot=n_boot, seed=0, jobs=1)
        return {"params": fit["params"], "budgets": len(np.unique(d["D"])), "Ks": sorted(set(d["K"].tolist())),
                "used": fit["bootstrap"]["used"]}
    finally:
        shutil.rmtree(root, ignore_errors=True)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(fit_designs(), hs.sampled_from(tuple(FORMS)), hs.sampled_from(("dilution", "null", "lnK")))
@example({"Ks": [1, 3, 5], "seeds": 2, "budgets": [30e6], "replicates": 1, "drop": 0.0, "single": [],
          "noise_seed": 0}, "dilution", "dilution")  # one budget, three K: s used to be 'identified'
def test_every_parameter_is_identified_with_an_interval_or_marked_not_identified(dz, form, law):
    """Every parameter of a fit: identified with an interval of non-zero width, or marked 'not identified'
    with the reason and no interval. (An identified parameter may lack an interval only when the bootstrap
    gave too few refits or the jackknife refused it — a floor in one seed cluster, a parameter some cluster's
    deletion leaves unidentified, no spread — and then says so.) s with a single K, beta and B with a single
    budget are never identified."""
    out = _workers().submit(identification_draw, (dict(dz, law=law), form, 12)).result()
    if out is None:
        return
    for name, p in out["params"].items():
        if p["identified"]:
            if p["ci95"][0] is not None:
                assert p["ci95"][1] > p["ci95"][0], (name, p)
            else:  # no interval although identified: only for want of refits, and said
                assert (out["used"] < 2 or p.get("why", "").startswith("jackknife: ")) and p.get("why"), \
                    (name, p, out["used"])
        else:
            assert p["ci95"] == [None, None] and p["why"].startswith("not identified"), (name, p)
    if "s" in out["params"] and len(out["Ks"]) < 2:
        assert not out["params"]["s"]["identified"]
    if out["budgets"] < 2:  # one budget: B D^-beta (D_c / D)^(-beta s) pins only B D^-beta and beta * s
        assert not any(out["params"][k]["identified"] for k in ("B", "beta", "s") if k in out["params"]), out


CORRUPTIONS = {  # how a run goes wrong -> a word its exclusion reason must contain
    "no summary": "no summary.json", "failed": "failed", "incomplete": "incomplete schedule",
    "no test results": "no test_results.json", "nan loss": "non-finite test loss", "relaunch": "duplicate of"}


def corrupt(rd, kind):
    """Make run directory rd one that analyze.py must exclude (kind: a key of CORRUPTIONS)."""
    import json
    if kind == "no summary":
        (rd / "summary.json").unlink()
    elif kind == "no test results":
        (rd / "test_results.json").unlink()
    elif kind == "relaunch":  # the same run again under another name: one of the two counts
        shutil.copytree(rd, rd.with_name(rd.name + "_relaunch"))
    else:
        name = "test_results.json" if kind == "nan loss" else "summary.json"
        obj = json.loads((rd / name).read_text())
        if kind == "failed":
            obj.update(status="failed", error="CUDA out of memory")
        elif kind == "incomplete":
            obj.update(schedule_complete=False, steps=obj["total_steps"] // 2)
        else:
            next(iter(obj["per_category"].values()))["loss"] = float("nan")
        (rd / name).write_text(json.dumps(obj))


def analysis_draw(job):
    """analyze.main --verdicts_only (no bootstrap, no figures) on a design with some runs corrupted, and on a copy whose run
    directories have random names (so another order); returns both fits.json and the renaming."""
    import contextlib
    import io
    import json
    dz, broken, perm_seed = job
    root = _tmp()
    try:
        build_design(root / "a", dz, "dilution")
        names = sorted(p.name for p in (root / "a" / "runs").iterdir())
        applied = {}
        for i, kind in broken:  # at most one way wrong per run
            applied.setdefault(names[i % len(names)], kind)
        for name, kind in applied.items():
            corrupt(root / "a" / "runs" / name, kind)
        rng = np.random.default_rng(perm_seed)
        rename = {p.name: f"{rng.integers(1e9):09d}_{p.name[::-1]}" for p in (root / "a" / "runs").iterdir()}
        for old, new in rename.items():
            shutil.copytree(root / "a" / "runs" / old, root / "b" / "runs" / new)
        out = {}
        for side in ("a", "b"):
            with contextlib.redirect_stdout(io.StringIO()):
                # --verdicts_only: the counts, exclusions, contrasts and verdicts compared below, and the fits on
                # all data, without the competing mixing laws' fits (half the cost; their inputs are the same rows
                # and folds); H1's separate floor fits and the <= 4 epochs fit are not made (at these designs' two
                # budgets the former are never identified; fit_data's order is checked directly, further below)
                analyze.main([str(root / side), "--n_boot", "0", "--no_baselines", "--jobs", "1", "--verdicts_only"])
            out[side] = json.loads((root / side / "analysis" / "fits.json").read_text())
        return out, rename, applied
    finally:
        shutil.rmtree(root, ignore_errors=True)


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
          phases=(Phase.explicit, Phase.generate))  # shrinking a failure costs minutes: the example is printed
@given(hs.fixed_dictionaries({"Ks": hs.sampled_from(([1, 3], [1, 11], [2, 5])), "seeds": hs.just(2),
                              "budgets": hs.just([10e6, 90e6]), "replicates": hs.just(1), "drop": hs.just(0.0),
                              "noise_seed": hs.integers(0, 10_000)}),
       hs.lists(hs.tuples(hs.integers(0, 100), hs.sampled_from(sorted(CORRUPTIONS))), min_size=1, max_size=4,
                unique_by=lambda t: t[0]),
       hs.integers(0, 2 ** 31))
@example({"Ks": [1, 3], "seeds": 2, "budgets": [10e6, 90e6], "replicates": 1, "drop": 0.0, "noise_seed": 0},
         [(0, "failed")], 0)  # the K = 1 floor fit (two budgets): beta 0.08 or 0.90 depending on the run names
def test_analysis_counts_every_run_and_ignores_run_names_and_order(dz, broken, perm_seed):
    """fits.json: used + excluded = total (every run directory, each exclusion with its reason), and the
    same fits, noise floor, form comparison, contrasts and verdicts whatever the runs are called (and so
    in whatever order they are read)."""
    out, rename, applied = _workers().submit(analysis_draw, (dz, broken, perm_seed)).result()
    back = {new: old for old, new in rename.items()}
    a, b = out["a"], out["b"]
    for side in (a, b):
        total = side["runs"]["total"]
        assert total == len(rename) and side["runs"]["used"] + len(side["runs"]["excluded"]) == total
        assert all(e["reason"] for e in side["runs"]["excluded"])
    reasons = {e["run_id"]: e["reason"] for e in a["runs"]["excluded"]}
    assert len(reasons) == len(applied), (applied, reasons)  # each broken run (or its relaunch), nothing else
    for rid, kind in applied.items():
        rid = rid + "_relaunch" if kind == "relaunch" else rid
        assert CORRUPTIONS[kind] in reasons[rid], (rid, kind, reasons)
    # renamed: the same runs excluded (of a relaunched pair, either copy), for the same reasons
    strip = lambda rid: rid.removesuffix("_relaunch")  # noqa: E731
    assert sorted((strip(back[e["run_id"]]), e["reason"].split(" of ")[0]) for e in b["runs"]["excluded"]) == \
        sorted((strip(rid), r.split(" of ")[0]) for rid, r in reasons.items())
    assert [(f["form"], f["subset"], f["n_runs"]) for f in a["fits"]] == \
        [(f["form"], f["subset"], f["n_runs"]) for f in b["fits"]]
    for fa, fb in zip(a["fits"], b["fits"]):
        for name, p in fa["params"].items():
            q = fb["params"][name]
            assert p["identified"] == q["identified"], (fa["form"], name)
            if p["identified"]:
                assert abs(p["estimate"] - q["estimate"]) <= 1e-4 * max(1.0, abs(p["estimate"])), \
                    (fa["form"], fa["subset"], name, p["estimate"], q["estimate"])
    assert a["noise_floor"]["sd_log_loss"] == pytest.approx(b["noise_floor"]["sd_log_loss"], rel=1e-9)
    if a["comparison"]:
        for f, r in a["comparison"]["rmse"].items():
            assert r["estimate"] == pytest.approx(b["comparison"]["rmse"][f]["estimate"], rel=1e-6)
    assert [round(t["difference"], 12) for t in a["h2"]] == [round(t["difference"], 12) for t in b["h2"]]
    assert a["verdicts"] == b["verdicts"]


def test_the_fits_points_are_in_content_order_whatever_the_run_names(tmp_path):
    """The defect the explicit example above was written for (H1's separate K = 1 floor fit: beta 0.08 or
    0.90 depending on the run names) is no longer visible there: with two budgets per category that fit's
    parameters are 'not identified' (so their estimates are not compared), and under --verdicts_only the fit
    is not made. Checked here directly: fit_data's points, and so that fit, do not depend on the run names
    and their order (without fit_data's sort both checks fail: that fit's beta 0.063 or 0.059 here, 0.064 or
    0.175 through analysis_draw's two copies, which the example passes regardless)."""
    dz = {"Ks": [1, 3], "seeds": 2, "budgets": [10e6, 90e6], "replicates": 1, "drop": 0.0, "noise_seed": 0}
    build_design(tmp_path, dz, "dilution")
    runs = collect_runs(tmp_path)
    rng = np.random.default_rng(0)
    rows = run_rows(runs)
    renamed = run_rows([dict(r, run_id=f"{rng.integers(1e9):09d}_{r['run_id'][::-1]}") for r in runs][::-1])
    k1 = lambda r: r["K"] == 1  # noqa: E731
    for where in (None, k1):
        a, b = fit_data(rows, where), fit_data(renamed, where)
        for key in ("L", "D", "Dc", "N", "cat", "budget", "K", "fold", "cluster", "epochs"):
            assert np.array_equal(a[key], b[key], equal_nan=key == "epochs"), key
    fa, fb = (fit_law(fit_data(r, k1), "shared", n_boot=0, with_n=False) for r in (rows, renamed))
    assert {k: p["estimate"] for k, p in fa["params"].items()} == {k: p["estimate"] for k, p in fb["params"].items()}
