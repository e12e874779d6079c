"""The calibration benchmark (benchmarks/bench_calibration.py) end to end on one tiny sweep, so it cannot rot:
it fabricates, runs analyze.main, walks fits.json and tabulates; the table has rows and coverages in [0, 1]."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_calibration as bc  # noqa: E402


def test_one_tiny_sweep_gives_a_table(tmp_path, capsys):
    out = tmp_path / "calib.json"
    rows, results = bc.main(["--designs", "tiny", "--n_sweeps", "1", "--n_boot", "10", "--out", str(out)])
    names = {r["interval"] for r in rows}
    assert {"floors E_c", "B", "beta", "s", "H2 cell"} <= names, names
    for r in rows:
        assert r["n"] >= 1 and r["covered"] + r["refused"] + r["no_truth"] <= r["n"]
        assert r["coverage"] is None or 0 <= r["coverage"] <= 1
        assert r["sweeps"] == 1 and r["ci_method"] in ("sweep-clustered", None)
        assert r["zero_width"] == 0, r  # issue 21's acceptance: no zero-width interval in any benchmark design
    assert any(r["coverage"] is not None for r in rows)  # at least one interval was decided and scored
    assert results[0]["verdicts"]["H2 loss vs K at fixed D"]["sweeps"] == 1
    printed = capsys.readouterr().out
    assert "| tiny | floors E_c |" in printed
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(rows))


def test_unknown_design_is_one_line():
    import pytest
    with pytest.raises(SystemExit) as e:
        bc.main(["--designs", "p9"])
    assert "p9" in str(e.value) and "unknown" in str(e.value)


def test_sweep_is_the_unit_of_the_coverage_bracket():
    """The intervals of one sweep err together (issue 21: H4's 4 cells per sweep): the bracket takes n / deff
    intervals. One interval per sweep is the binomial case (deff 1, the plain Wilson bracket); 4 per sweep
    that are all covered or all missed together count as ~1 each."""
    from statsmodels.stats.proportion import proportion_confint
    assert bc.design_effect([[1, 1]] * 19 + [[1, 0]]) == 1.0
    # no spread to estimate it from: the worst case, a sweep's 4 intervals one trial (20 of 20: [0.84, 1], not OVER)
    assert bc.design_effect([[4, 4]] * 20) == 4.0 and bc.design_effect([[1, 1]] * 20) == 1.0
    assert bc.classify(bc.coverage_interval({"n": 80, "covered": 80, "refused": 0, "no_truth": 0,
                                             "per_sweep": [[4, 4]] * 20})[1]) == "consistent"
    together = [[4, 4]] * 18 + [[4, 0]] * 2
    assert 3.5 < bc.design_effect(together) < 4.5
    spread = [[4, 3]] * 8 + [[4, 4]] * 12  # 8 misses, one in each of 8 sweeps: no clustering
    assert bc.design_effect(spread) == 1.0
    t = {"n": 80, "covered": 72, "refused": 0, "no_truth": 0, "per_sweep": together}
    cov, (lo, hi), deff, how = bc.coverage_interval(t)
    plain = proportion_confint(72, 80, method="wilson")
    assert cov == 0.9 and how == "sweep-clustered" and lo < plain[0] - 0.05 and hi > plain[1] + 0.02
    assert bc.coverage_interval({**t, "per_sweep": spread})[1] == list(plain)


def test_status_comes_from_the_interval_not_the_point():
    assert bc.classify([0.91, 0.97]) == "ok"
    assert bc.classify([0.80, 0.89]) == "UNDER"
    assert bc.classify([0.981, 0.999]) == "OVER"
    assert bc.classify([0.84, 1.0]) == "consistent"  # 20 of 20: not shown to be over 98%
    assert bc.classify([0.85, 0.93]) == "consistent"
    assert bc.classify([None, None]) == "refused"


def test_a_file_saved_before_the_per_sweep_tallies_still_tabulates(tmp_path, capsys):
    """benchmarks/calibration_*.json of session 22 hold pooled tallies only (as this one, its P1 H4 row):
    --table still reads them, with the plain Wilson bracket, and says so."""
    old = {"n": 80, "covered": 70, "refused": 0, "zero_width": 0, "no_truth": 0}
    saved = {"results": [{"design": "p1", "n_sweeps": 20, "intervals": {"H4 gain": old}, "verdicts": {}}]}
    (tmp_path / "old.json").write_text(json.dumps(saved))
    bc.main(["--table", str(tmp_path / "old.json")])
    printed = capsys.readouterr().out
    assert "| p1 | H4 gain | 80 | – | 70 | 0 | 0 | 0.875 | [0.785, 0.931] (cells independent) | consistent |" in printed


def test_isoflop3_fabricates_per_size_budgets_on_one_compute_grid_with_an_interior_optimum(tmp_path):
    """The isoflop3 design (issue 21, session 23): every size's budgets are D = C / (6N) on the one compute
    grid ISO_C, and the truth's compute-optimal size is the middle one (strictly inside the ladder) at the
    middle compute values for every K: on the law itself, and on the noiseless twin through analysis/isoflop.py."""
    import math
    import numpy as np
    import simulate
    from analysis import isoflop
    from analysis.runs import collect_runs, run_rows
    assert 4 <= len(bc.ISO_C) <= 5 and list(bc.ISO_C) == sorted(bc.ISO_C)
    for m, N in bc.SIZES:
        assert np.allclose([6 * N * D for D in bc.ISO_BUDGETS[m]], bc.ISO_C, rtol=1e-12)
    c = simulate.CATEGORIES[0]
    for K in (1, 3, 5):
        for C in bc.ISO_C[1:-1]:  # the law, with D_c = D / K: the middle size has the lowest loss
            L = [simulate.form_loss("dilution", c, C / (6 * N), C / (6 * N) / K, K, bc.N_TRUTH, N=N) for _, N in bc.SIZES]
            assert int(np.argmin(L)) == 1, (K, C, L)
    # the noiseless twin at one seed per K (the design's budgets and sizes; the seeds only add points)
    simulate.p1_sweep(tmp_path, noise=simulate.NoiseModel(0.0), **dict(bc.ISO_KW, seeds=(0,), k11_seeds=(), replicate_Ks=()))
    rows = run_rows(collect_runs(tmp_path))
    budgets = {}
    for r in rows:
        budgets.setdefault(r["model"], set()).add(r["token_budget_planned"])
    assert {m: sorted(b) for m, b in budgets.items()} == {m: sorted(b) for m, b in bc.ISO_BUDGETS.items()}
    res = isoflop.isoflop(isoflop.points_from_rows(rows), n_boot=0)
    assert set(res) == {1, 3, 5}
    sizes = sorted(N for _, N in bc.SIZES)
    for K, r in res.items():
        assert np.allclose([s["C"] for s in r["slices"]], bc.ISO_C, rtol=0.02)  # the analysis reads the same grid
        for s in r["slices"][1:-1]:
            assert s["inside"] and sizes[0] < s["N_opt"] < sizes[-1] and len(s["N"]) == 3, (K, s)
            assert math.isclose(min(s["N"], key=lambda n: s["L"][s["N"].index(n)]), sizes[1])


def test_per_size_budgets_leave_the_existing_stream_unchanged(tmp_path):
    """p1_sweep(budgets={model: budgets}) with every model at the same budgets writes the same sweep, byte for
    byte, as the one tuple: the existing designs' noise streams are untouched."""
    import simulate
    models = (("pythia-14m", 1_200_000), ("pythia-31m", 19_000_000))
    kw = dict(seeds=range(2), Ks=(1, 3), k11_seeds=(0,), replicate_Ks=(1,), replicate_subsets=(0,), models=models,
              truth=bc.N_TRUTH, noise_seed=3)
    simulate.p1_sweep(tmp_path / "tuple", budgets=(10e6, 90e6), **kw)
    simulate.p1_sweep(tmp_path / "dict", budgets={m: (10e6, 90e6) for m, _ in models}, **kw)
    a, b = (sorted((tmp_path / w / "runs").glob("*/*.json")) for w in ("tuple", "dict"))
    assert [p.relative_to(tmp_path / "tuple") for p in a] == [p.relative_to(tmp_path / "dict") for p in b] and len(a) > 20
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(a, b))


def test_design_effect_is_statsmodels_cluster_robust_variance_over_the_binomial():
    """The design effect is the textbook one for a clustered proportion: the cluster-robust variance of the mean
    (statsmodels OLS on a constant, cov_type="cluster", its G / (G - 1) correction) over the plain OLS variance,
    p(1 - p) / (n - 1); checked on unequal sweeps with misses in the big ones, and on sweeps whose intervals
    were all refused (no decided interval: no information, dropped), floored at 1."""
    import numpy as np
    import statsmodels.api as sm

    def reference(per):
        y = np.concatenate([[1.0] * c + [0.0] * (n - c) for n, c in per if n])
        g = np.concatenate([[i] * n for i, (n, _) in enumerate(per) if n])
        X = np.ones((len(y), 1))
        return (sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": g}).bse[0] ** 2
                / sm.OLS(y, X).fit().bse[0] ** 2)

    for per in ([[1, 1]] * 10 + [[20, 18]] * 5 + [[20, 14]] * 2 + [[3, 3]] * 3,
                [[1, 1]] * 15 + [[30, 20]] + [[30, 30]] * 4,
                [[11, 11]] * 12 + [[11, 10]] * 5 + [[11, 8]] * 2 + [[11, 5]],
                [[0, 0]] * 5 + [[10, 10]] * 16 + [[10, 3]] * 2 + [[10, 9]] * 2):
        assert abs(bc.design_effect(per) - reference(per)) < 1e-9 * reference(per), per
    assert bc.design_effect([[0, 0]] * 5 + [[4, 4]] * 18 + [[4, 0]] * 2) == bc.design_effect([[4, 4]] * 18 + [[4, 0]] * 2)


def test_worst_case_design_effect_weights_unequal_sweeps():
    """Every interval covered, sweeps of unequal size (refusals, or a name some sweeps print more of): the worst
    case, each sweep one trial, is the ratio estimator's deff when whole sweeps err together, sum n_i^2 / n
    (Kish's effective number of sweeps n^2 / sum n_i^2 <= sweeps), not n / m: the same pattern with one small
    and one big sweep missing whole estimates ~21, so the all-covered row must not get 11 (a narrower bracket
    from less evidence)."""
    unequal = [[1, 1]] * 10 + [[21, 21]] * 10
    assert abs(bc.design_effect(unequal) - (10 * 1 + 10 * 441) / 220) < 1e-12
    assert bc.design_effect(unequal) >= bc.design_effect([[1, 1]] * 9 + [[1, 0]] + [[21, 21]] * 9 + [[21, 0]]) - 1
    assert bc.design_effect([[4, 4]] * 20) == 4.0 and bc.design_effect([[3, 0]] * 20) == 3.0  # equal: as before
    t = {"n": 220, "covered": 220, "refused": 0, "no_truth": 0, "per_sweep": unequal}
    lo = bc.coverage_interval(t)[1][0]
    n_eff = 220 ** 2 / (10 + 10 * 441)  # 10.95 effective sweeps, not 20
    assert abs(lo - n_eff / (n_eff + 1.959963984540054 ** 2)) < 1e-9


def test_status_at_the_edges_of_the_goal():
    """A bracket that touches a bound is inside it ("ok" needs 0.90 <= lo and hi <= 0.98); one that ends exactly
    on a bound from outside is not shown to be outside ("consistent"); one that straddles both is "consistent"."""
    assert bc.classify([0.90, 0.98]) == "ok"
    assert bc.classify([0.85, 0.90]) == "consistent" and bc.classify([0.85, 0.8999]) == "UNDER"
    assert bc.classify([0.98, 0.99]) == "consistent" and bc.classify([0.9801, 0.99]) == "OVER"
    assert bc.classify([0.80, 0.99]) == "consistent"


@pytest.mark.xfail(strict=True, reason="known (session 23 review): the all-covered worst case (one trial per sweep) "
                   "against an estimated deff of ~1 from a single miss: 1099 of 1100 is OVER, 1100 of 1100 consistent")
def test_one_more_covered_interval_does_not_weaken_the_bracket():
    one_miss = [[11, 11]] * 99 + [[11, 10]]
    t = {"n": 1100, "covered": 1099, "refused": 0, "no_truth": 0, "per_sweep": one_miss}
    lo_one_miss = bc.coverage_interval(t)[1][0]  # 0.995: "OVER"
    lo_all = bc.coverage_interval({**t, "covered": 1100, "per_sweep": [[11, 11]] * 100})[1][0]  # 0.963
    assert lo_all >= lo_one_miss
