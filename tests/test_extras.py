"""analyze.py's report with issue 17's analyses wired in (analysis/extras.py): the transfer matrix from a
fabricated sweep with known t_ij (analysis/synthetic.py), the text similarity and H7 on the sample store,
IsoFLOP slices on a sweep of three model sizes, and H2's second half (the loss ratio against the disjoint
prediction K^beta) on a disjoint-law truth and a dilution truth with s < 1."""
import json

import numpy as np
import pytest

import analyze
import simulate
import store as st
from analysis import extras
from analysis import synthetic as sy

CATS5 = sy.CATS[:5]


def analyse(root, *extra, n_boot=30):
    out = analyze.main([str(root), "--n_boot", str(n_boot), "--jobs", "1", *extra])
    return out, json.loads((out / "fits.json").read_text()), (out / "report.md").read_text()


@pytest.mark.slow  # a full analysis with bootstrap, cross-validation and plots and --hilberg
def test_transfer_similarity_and_h7_in_the_report(tmp_path, sample_store):
    """Pair runs and specialists of 5 categories with known t_ij: the report's matrix holds them within its
    intervals (most cells), the pairs of a category without specialists are listed, pair runs of a second
    budget are named and not pooled, the JSD correlation is computed from the store the runs name, and H7's
    curves (computed with --hilberg, cached by store id) give per-category beta_H and the exploratory
    correlation with the specialists' fitted exponents."""
    rng = np.random.default_rng(0)
    runs, truth = sy.transfer_sweep(rng, cats=CATS5)
    gone = CATS5[-1]
    runs = [r for r in runs if r["categories"] != [gone]]                     # no specialist of math.GR
    extra, _ = sy.transfer_sweep(np.random.default_rng(1), cats=CATS5[:2], pair_budget=3e7, budgets=())
    runs += [dict(r, run_id=r["run_id"] + "-b30") for r in extra]          # one pair at another budget
    sy.write_run_dirs(tmp_path, runs, store_id=st.Store(sample_store).store_id)
    for cfg_path in (tmp_path / "runs").glob("*/run_config.json"):          # the store the runs trained on
        cfg = json.loads(cfg_path.read_text())
        cfg_path.write_text(json.dumps(dict(cfg, data_dir=str(sample_store))))
    cache = tmp_path / "cache"
    out, fits, report = analyse(tmp_path, "--hilberg", "--cache_dir", str(cache))

    T = fits["transfer"]["models"]["pythia-31m"]
    assert T["pair_budget"] == sy.PAIR_BUDGET and T["other_budgets"] == {"30000000.0": 1}
    got = {(e["i"], e["j"]): e for e in T["t"]}
    assert set(got) == {(i, j) for i in CATS5[:4] for j in CATS5 if i != j}    # 16: every i with specialists
    inside = sum(e["ci95"][0] <= truth["t"][k] <= e["ci95"][1] for k, e in got.items())
    assert inside >= 13, inside
    assert sum(truth["t"][k] < 0 for k in got) >= 3          # some interference among the truths
    missing = {(m["i"], m["j"]) for m in T["missing"]}
    assert missing == {(gone, j) for j in CATS5[:4]}
    assert "## Transfer matrix t_ij" in report and "| i \\ j | math.AC | cs.CV | cs.AI | cs.SY | math.GR |" in report
    assert f"- t({gone}, cs.CV): no specialist of {gone}" in report
    assert "pair runs at other budgets not used" in report and "1 at 30,000,000" in report
    sim = T["similarity"]
    assert sim["n_pairs"] == 16 and -1 <= sim["rho"] <= 1 and "Spearman ρ(t_ij, JSD" in report
    assert (out / "transfer_pythia-31m.png").read_bytes()[:4] == b"\x89PNG" and "](transfer_pythia-31m.png)" in report

    s = st.Store(sample_store)
    assert (cache / f"hilberg_{s.store_id[:16]}.json").is_file()
    h7 = fits["h7"]
    assert set(h7["per_category"]) == set(s.categories)
    assert all(r["fit_ppmd"] is None or 0 < r["fit_ppmd"]["beta_H"] < 1 for r in h7["per_category"].values())
    corr = h7["corr"]
    assert corr["exploratory"] and set(corr["categories"]) == set(CATS5[:4]) and corr["rho"] is not None
    assert "## H7 (exploratory)" in report and "Exploratory: Spearman ρ(1 − β_H,c" in report
    assert fits["verdicts"]["H7 Hilberg (exploratory)"]["why"].startswith("exploratory")
    assert extras.read_hilberg_cache(s, cache)["key"]["store_id"] == s.store_id
    other = type("S", (), {"store_id": "f" * 64})()
    assert extras.read_hilberg_cache(other, cache) is None
    assert "## IsoFLOP slices" in report and "need >= 3 model sizes" in report


def test_isoflop_section_with_three_model_sizes(tmp_path):
    """Three sizes x four budgets at K = 1 and 3 (a truth with an N term): the IsoFLOP section has its table
    per K and its figure (extras on analyze.py's rows: the full analysis of 24 runs with an N term is too slow
    for the suite); without pair runs the transfer section says in one line what it would need."""
    truth = dict(simulate.TRUTH, A=400.0, alpha=0.34)
    simulate.p1_sweep(tmp_path, seeds=(0,), Ks=(1, 3), k11_seeds=(), budgets=(10e6, 30e6, 90e6, 270e6),
                       replicate_Ks=(), truth=truth,
                       models=(("pythia-14m", 1_200_000), ("pythia-31m", 4_700_000), ("pythia-70m", 19_000_000)))
    runs = analyze.collect_runs(tmp_path)
    rows = analyze.run_rows(runs)
    args = type("Args", (), {"n_boot": 20, "seed": 0, "no_baselines": True, "hilberg": False, "cache_dir": str(tmp_path)})()
    x = extras.compute(rows, runs, {}, args, analyze.cells_by_K(rows, "in"), analyze.equal_weight)
    iso = json.loads(json.dumps(extras.public(x)))["isoflop"]["by_K"]
    assert set(iso) == {"1", "3"}
    for r in iso.values():
        assert len(r["sizes"]) == 3 and r["slices"]
        for sl in r["slices"]:
            assert len(sl["N"]) == 3 and min(sl["N"]) <= sl["N_opt"] <= max(sl["N"])
    report = "\n".join(extras.sections(x))
    assert "## IsoFLOP slices" in report and "| 1 |" in report.split("## IsoFLOP slices")[1]
    assert ("IsoFLOP slices", "isoflop.png") in extras.plots(x, tmp_path) and (tmp_path / "isoflop.png").is_file()
    assert "Not estimated: no pair runs (K = 2) in this sweep; the matrix needs pair runs" in report
    assert x["transfer"]["models"] == {} and x["h2_ratio"]["verdict"] == "undecided"  # no fit passed


def ratio_test(root, truth, n_boot=60):
    """H2's ratio test on a P1-like sweep (K = 1 and 11 at three budgets, low noise), with E_c and beta from
    a dilution fit on the same runs."""
    simulate.p1_sweep(root, Ks=(1,), budgets=(10e6, 90e6, 810e6), replicate_Ks=(1,), init_seeds=(100,),
                       noise=simulate.NoiseModel.parts(0.001, 0.002), truth=truth)
    runs = analyze.collect_runs(root)
    rows = analyze.run_rows(runs)
    fit = analyze.fit_law(analyze.fit_data(rows), "dilution", n_boot=16, seed=0)
    return extras.h2_ratio(analyze.cells_by_K(rows, "in"), fit, {"pythia-31m": simulate.N_NONEMB},
                           analyze.equal_weight, n_boot, 0)


@pytest.mark.parametrize("s", [1.0, 0.5])
def test_h2_ratio_against_the_disjoint_prediction(tmp_path, s):
    """Disjoint truth (s = 1: the reducible loss grows as K^beta): never 'slower', the difference's interval
    holds 0. Dilution truth s = 0.5: the loss grows as K^(s beta), slower, decided at every budget, the
    interval holding the true difference (s - 1) beta."""
    beta = simulate.TRUTH["beta"]
    h = ratio_test(tmp_path, dict(simulate.TRUTH, s=s))
    assert [(t["K_low"], t["K_high"]) for t in h["table"]] == [(1, 11)] * 3
    for t in h["table"]:
        lo, hi = t["ci95"]
        assert t["n_categories"] == 11 and lo <= (s - 1) * beta <= hi, (t["D"], lo, hi)
        assert abs(t["growth_exponent"] - s * beta) < 0.05
        if s == 1.0:
            assert hi >= 0
        else:
            assert hi < 0
    assert h["verdict"] == ("supported" if s < 1 else "undecided")
    lines = "\n".join(extras.h2_lines({"h2_ratio": h}))
    assert f"Slower than the disjoint prediction K^β? {h['verdict']}" in lines and "| pythia-31m | 10,000,000 | 1 → 11 |" in lines


def test_h2_ratio_too_few_runs_is_undecided(tmp_path):
    """One run per side at each budget: no interval, undecided, and the report row says why."""
    simulate.p1_sweep(tmp_path, seeds=(0,), Ks=(1,), k11_seeds=(0,), budgets=(10e6, 90e6, 810e6), replicate_Ks=())
    rows = analyze.run_rows(analyze.collect_runs(tmp_path))
    fit = analyze.fit_law(analyze.fit_data(rows), "dilution", n_boot=0, seed=0)
    h = extras.h2_ratio(analyze.cells_by_K(rows, "in"), fit, {}, analyze.equal_weight, 50, 0)
    assert h["verdict"] == "undecided" and all(t["ci95"] == [None, None] for t in h["table"])
    assert all("1 / 1 runs" in t["note"] for t in h["table"])


def test_h2_ratio_single_budget_is_undecided(tmp_path):
    """A single budget (K = 1 and 11 at 90M): beta and the floors are not identified, so there is no K^beta
    to compare with. On a disjoint truth (s = 1) the ratio test said 'supported' (slower than K^beta,
    interval [-0.30, -0.15]) from an unidentified beta; now every row is undecided and says why."""
    simulate.p1_sweep(tmp_path, Ks=(1,), seeds=range(4), k11_seeds=(0, 1, 2), budgets=(90e6,), replicate_Ks=(1,),
                       init_seeds=(100,), noise=simulate.NoiseModel.parts(0.001, 0.002), truth=dict(simulate.TRUTH, s=1.0))
    rows = analyze.run_rows(analyze.collect_runs(tmp_path))
    fit = analyze.fit_law(analyze.fit_data(rows), "dilution", n_boot=16, seed=0)
    assert not fit["params"]["beta"]["identified"]
    h = extras.h2_ratio(analyze.cells_by_K(rows, "in"), fit, {"pythia-31m": simulate.N_NONEMB},
                        analyze.equal_weight, 40, 0)
    assert h["verdict"] == "undecided" and len(h["table"]) == 1
    assert h["table"][0]["ci95"] == [None, None] and "beta not identified" in h["table"][0]["note"]


def test_h2_ratio_floor_with_an_unidentified_n_term_is_undecided(tmp_path):
    """Two model sizes: A and alpha are not identified, so neither is the floor E_c + A N^-alpha the ratio
    subtracts; the ratio test used their point values and decided."""
    simulate.p1_sweep(tmp_path, Ks=(1,), budgets=(10e6, 90e6, 810e6), replicate_Ks=(1,), init_seeds=(100,),
                       noise=simulate.NoiseModel.parts(0.001, 0.002), truth=dict(simulate.TRUTH, s=1.0))
    rows = analyze.run_rows(analyze.collect_runs(tmp_path))
    fit = analyze.fit_law(analyze.fit_data(rows), "dilution", n_boot=16, seed=0)
    fit["params"]["A"] = {"estimate": 50.0, "identified": False}
    fit["params"]["alpha"] = {"estimate": 0.3, "identified": False}
    h = extras.h2_ratio(analyze.cells_by_K(rows, "in"), fit, {"pythia-31m": simulate.N_NONEMB},
                        analyze.equal_weight, 40, 0)
    assert h["verdict"] == "undecided" and all("A, alpha not identified" in t["note"] for t in h["table"])
