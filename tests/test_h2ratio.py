"""analysis/h2ratio.py: H2's second half (the loss growth with K against the disjoint prediction K^beta) on
a disjoint-law truth and a dilution truth with s < 1, and the designs where it must stay undecided."""
import pytest

import simulate
from analysis.h2ratio import h2_lines, h2_ratio
from analysis.hypotheses import cells_by_K
from analysis.law_data import fit_data
from analysis.laws import fit_law
from analysis.runs import collect_runs, run_rows


def ratio_test(root, truth, n_boot=60):
    """H2's ratio test on a P1-like sweep (K = 1 and 11 at three budgets, low noise), with E_c and beta from
    a dilution fit on the same runs."""
    simulate.p1_sweep(root, Ks=(1,), budgets=(10e6, 90e6, 810e6), replicate_Ks=(1,), init_seeds=(100,),
                       noise=simulate.NoiseModel.parts(0.001, 0.002), truth=truth)
    runs = collect_runs(root)
    rows = run_rows(runs)
    fit = fit_law(fit_data(rows), "dilution", n_boot=16, seed=0)
    return h2_ratio(cells_by_K(rows, "in"), fit, {"pythia-31m": simulate.N_NONEMB}, n_boot, 0)


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
    lines = "\n".join(h2_lines(h))
    assert f"Slower than the disjoint prediction K^β? {h['verdict']}" in lines and "| pythia-31m | 10,000,000 | 1 → 11 |" in lines


def test_h2_ratio_too_few_runs_is_undecided(tmp_path):
    """One run per side at each budget: no interval, undecided, and the report row says why."""
    simulate.p1_sweep(tmp_path, seeds=(0,), Ks=(1,), k11_seeds=(0,), budgets=(10e6, 90e6, 810e6), replicate_Ks=())
    rows = run_rows(collect_runs(tmp_path))
    fit = fit_law(fit_data(rows), "dilution", n_boot=0, seed=0)
    h = h2_ratio(cells_by_K(rows, "in"), fit, {}, 50, 0)
    assert h["verdict"] == "undecided" and all(t["ci95"] == [None, None] for t in h["table"])
    assert all("1 / 1 seed cluster(s)" in t["note"] for t in h["table"])


def test_h2_ratio_single_budget_is_undecided(tmp_path):
    """A single budget (K = 1 and 11 at 90M): beta and the floors are not identified, so there is no K^beta
    to compare with. On a disjoint truth (s = 1) the ratio test said 'supported' (slower than K^beta,
    interval [-0.30, -0.15]) from an unidentified beta; now every row is undecided and says why."""
    simulate.p1_sweep(tmp_path, Ks=(1,), seeds=range(4), k11_seeds=(0, 1, 2), budgets=(90e6,), replicate_Ks=(1,),
                       init_seeds=(100,), noise=simulate.NoiseModel.parts(0.001, 0.002), truth=dict(simulate.TRUTH, s=1.0))
    rows = run_rows(collect_runs(tmp_path))
    fit = fit_law(fit_data(rows), "dilution", n_boot=16, seed=0)
    assert not fit["params"]["beta"]["identified"]
    h = h2_ratio(cells_by_K(rows, "in"), fit, {"pythia-31m": simulate.N_NONEMB}, 40, 0)
    assert h["verdict"] == "undecided" and len(h["table"]) == 1
    assert h["table"][0]["ci95"] == [None, None] and "beta not identified" in h["table"][0]["note"]


def test_h2_ratio_floor_with_an_unidentified_n_term_is_undecided(tmp_path):
    """Two model sizes: A and alpha are not identified, so neither is the floor E_c + A N^-alpha the ratio
    subtracts; the ratio test used their point values and decided."""
    simulate.p1_sweep(tmp_path, Ks=(1,), budgets=(10e6, 90e6, 810e6), replicate_Ks=(1,), init_seeds=(100,),
                       noise=simulate.NoiseModel.parts(0.001, 0.002), truth=dict(simulate.TRUTH, s=1.0))
    rows = run_rows(collect_runs(tmp_path))
    fit = fit_law(fit_data(rows), "dilution", n_boot=16, seed=0)
    fit["params"]["A"] = {"estimate": 50.0, "identified": False}
    fit["params"]["alpha"] = {"estimate": 0.3, "identified": False}
    h = h2_ratio(cells_by_K(rows, "in"), fit, {"pythia-31m": simulate.N_NONEMB}, 40, 0)
    assert h["verdict"] == "undecided" and all("A, alpha not identified" in t["note"] for t in h["table"])
