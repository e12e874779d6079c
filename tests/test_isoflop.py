"""analysis/isoflop.py: IsoFLOP slices on fabricated multi-size sweeps whose compute-optimal N is known in
closed form (Hoffmann et al.'s L = E + A N^-alpha + B D^-beta)."""
import json

import numpy as np
import pytest

import analyze
import simulate
from analysis import inference
from analysis import isoflop as iso
from analysis import synthetic as sy
from analysis import transfer_report
from analysis.report import json_ready
from analysis.runs import collect_runs, run_rows

SIZES = np.geomspace(3e6, 3e8, 9)
BUDGETS = np.geomspace(1e8, 1e11, 7)


def test_known_optimum_recovered_per_K():
    hits, total = 0, 0
    for seed in range(2):
        pts = sy.isoflop_sweep(np.random.default_rng(seed), SIZES, BUDGETS, Ks=(1, 3))
        res = iso.isoflop(pts, compute=[3e17, 1e18, 3e18], n_boot=50, seed=seed, shares=(0.0, 1.0, 0.0))  # independent noise
        assert set(res) == {1, 3}
        for K, r in res.items():
            assert len(r["sizes"]) == 9 and len(r["slices"]) == 3
            for s in r["slices"]:
                truth = sy.chinchilla_optimum(s["C"])
                lo, hi = s["N_opt_ci"]
                assert s["inside"] and lo <= s["N_opt"] <= hi
                assert abs(np.log(s["N_opt"] / truth)) < 0.1, (s["C"], s["N_opt"], truth)
                hits += lo <= truth <= hi
                total += 1
    assert hits >= 0.8 * total, (hits, total)


def test_optimum_grows_with_compute():
    pts = sy.isoflop_sweep(np.random.default_rng(5), SIZES, BUDGETS, Ks=(1,), noise=0.002)
    r = iso.isoflop(pts, n_boot=20)[1]
    opts = [s["N_opt"] for s in r["slices"] if s.get("inside")]
    assert len(opts) >= 2 and opts == sorted(opts)
    assert all(len(s["N"]) >= iso.MIN_SIZES for s in r["slices"])   # the default grid: covered slices only


def test_edge_and_too_few_sizes_reported_not_extrapolated(outputs):
    small = sy.isoflop_sweep(np.random.default_rng(1), SIZES[:4], BUDGETS, Ks=(1,))  # all below the optimum
    r = iso.isoflop(small, compute=[1e18], n_boot=30, shares=(0.0, 1.0, 0.0))[1]   # optimum ~7.9e7 > 3e7
    s = r["slices"][0]
    assert not s["inside"] and s["N_opt"] == max(s["N"]) and s["edge"] > 0.5
    two = sy.isoflop_sweep(np.random.default_rng(1), SIZES[:2], BUDGETS, Ks=(2,))
    r2 = iso.isoflop(two, n_boot=5)[2]
    assert r2["slices"] == [] and "slices need 3" in r2["reason"]
    text = "\n".join(iso.markdown_section({1: r, 2: r2}))
    assert "at the edge of the sizes" in text and "lowest loss is at the largest size" in text and "slices need 3" in text
    pts = sy.isoflop_sweep(np.random.default_rng(2), SIZES, BUDGETS, Ks=(1, 3))
    res = iso.isoflop(pts, n_boot=10, shares=(0.0, 1.0, 0.0))
    iso.plot(res, outputs / "isoflop.png")
    (outputs / "isoflop_section.md").write_text("\n".join(iso.markdown_section(res)) + "\n")
    assert (outputs / "isoflop.png").stat().st_size > 1000


def test_points_from_rows_macro_loss_of_included_untagged_runs():
    rows = [
        {"run_id": "a", "K": 2, "n_params_nonembedding": 1e6, "tokens_seen": 1e8, "test_loss": 3.0,
         "in_training": True, "excluded": None, "tagged": False, "seed": 0},
        {"run_id": "a", "K": 2, "n_params_nonembedding": 1e6, "tokens_seen": 1e8, "test_loss": 4.0,
         "in_training": True, "excluded": None, "tagged": False, "seed": 0},
        {"run_id": "a", "K": 2, "n_params_nonembedding": 1e6, "tokens_seen": 1e8, "test_loss": 9.0,
         "in_training": False, "excluded": None, "tagged": False, "seed": 0},     # not a training category
        {"run_id": "b", "K": 1, "n_params_nonembedding": 1e6, "tokens_seen": 1e8, "test_loss": 3.0,
         "in_training": True, "excluded": "duplicate", "tagged": False, "seed": 0},
        {"run_id": "c", "K": 1, "n_params_nonembedding": 1e6, "tokens_seen": 1e8, "test_loss": 3.0,
         "in_training": True, "excluded": None, "tagged": True, "seed": 0}]
    got = iso.points_from_rows(rows)
    assert [{k: v for k, v in p.items() if k not in ("cluster", "cats")} for p in got] == [{"K": 2, "N": 1e6, "D": 1e8, "L": 3.5, "seed": 0}]
    assert got[0]["cluster"] == inference.seed_cluster(rows[0])  # the unit whose noise its budgets share


def test_three_points_per_size_give_no_zero_width_interval():
    """Every size at exactly three budgets, one run each: the three-parameter curves interpolate, so the
    residual bootstrap resampled zeros and printed intervals like [18416865.0, 18416865.3] (zero width from
    data with 0.01 nats of noise). Now no interval, and the report row says why."""
    pts = sy.isoflop_sweep(np.random.default_rng(0), (5e6, 19e6, 80e6, 300e6), (1e8, 1e9, 1e10), Ks=(1,), noise=0.01)
    r = iso.isoflop(pts, n_boot=20)
    assert r[1]["slices"] and all(s["N_opt_ci"] == [None, None] for s in r[1]["slices"] if "N_opt" in s)
    assert any("interpolates its points" in line for line in iso.markdown_section(r))
    # with the noise floor known, the same slices get intervals of non-zero width that hold the estimate
    r = iso.isoflop(pts, n_boot=40, noise_log_sd=0.01)
    got = [s for s in r[1]["slices"] if s.get("inside") and s["N_opt_ci"][0] is not None]
    assert got and all(s["N_opt_ci"][0] < s["N_opt"] < s["N_opt_ci"][1] for s in got)


def test_isoflop_section_with_three_model_sizes(tmp_path):
    """Three sizes x four budgets at K = 1 and 3 (a truth with an N term): the IsoFLOP section has its table
    per K and its figure (analyze.py's further analyses on its rows: the full analysis of 24 runs with an N
    term is too slow for the suite); without pair runs the transfer section says in one line what it would need."""
    truth = dict(simulate.TRUTH, A=400.0, alpha=0.34)
    simulate.p1_sweep(tmp_path, seeds=(0,), Ks=(1, 3), k11_seeds=(), budgets=(10e6, 30e6, 90e6, 270e6),
                       replicate_Ks=(), truth=truth,
                       models=(("pythia-14m", 1_200_000), ("pythia-31m", 4_700_000), ("pythia-70m", 19_000_000)))
    runs = collect_runs(tmp_path)
    rows = run_rows(runs)
    args = type("Args", (), {"n_boot": 20, "seed": 0, "no_baselines": True, "hilberg": False, "cache_dir": str(tmp_path),
                             "verdicts_only": False})()
    x = analyze.further_analyses(rows, runs, {}, args)
    by_K = json.loads(json.dumps(json_ready(x["isoflop"])))["by_K"]
    assert set(by_K) == {"1", "3"}
    for r in by_K.values():
        assert len(r["sizes"]) == 3 and r["slices"]
        for sl in r["slices"]:
            assert len(sl["N"]) == 3 and min(sl["N"]) <= sl["N_opt"] <= max(sl["N"])
    report = "\n".join(transfer_report.report_section(x["transfer"]) + iso.report_section(x["isoflop"]))
    assert "## IsoFLOP slices" in report and "| 1 |" in report.split("## IsoFLOP slices")[1]
    assert ("IsoFLOP slices", "isoflop.png") in iso.plots(x["isoflop"], tmp_path) and (tmp_path / "isoflop.png").is_file()
    assert "Not estimated: no pair runs (K = 2) in this sweep; the matrix needs pair runs" in report


def _clustered(rng, sizes, budgets, seeds, sd_shared, sd_own):
    """Points whose noise is mostly shared by a seed cluster's budgets (each size's seed moves its whole
    curve), as simulate.py's noise model and real seeds do."""
    pts = []
    for N in sizes:
        for s in range(seeds):
            shift = rng.normal(0, sd_shared)
            for D in budgets:
                L = sy.chinchilla_loss(N, D) * np.exp(shift + rng.normal(0, sd_own))
                pts.append({"K": 1, "N": float(N), "D": float(D), "L": float(L), "seed": s, "cluster": (N, s)})
    return pts


def test_bootstrap_draws_the_noise_a_seed_cluster_shares():
    """Issue 21 (session 23): the parametric bootstrap moved every point independently, so noise shared by a
    seed's runs at all budgets averaged away over the budgets and the interval of log N_opt was too narrow
    (the isoflop3 calibration design covered under 90%). With the shares of the noise (across budgets, run
    level, cluster) the bootstrap's spread matches the estimator's spread over fresh noise."""
    sizes, budgets, C = np.geomspace(3e6, 3e8, 5), np.geomspace(1e8, 1e11, 6), [1e18]
    sd_shared, sd_own = 0.01, 0.002
    sd = float(np.hypot(sd_shared, sd_own))
    f = sd_shared ** 2 / sd ** 2
    truth_spread = np.std([np.log(iso.isoflop(_clustered(np.random.default_rng(100 + i), sizes, budgets, 3, sd_shared,
                                                         sd_own), compute=C, n_boot=0)[1]["slices"][0]["N_opt"])
                           for i in range(60)])
    pts = _clustered(np.random.default_rng(7), sizes, budgets, 3, sd_shared, sd_own)

    def width(**kw):
        lo, hi = iso.isoflop(pts, compute=C, n_boot=300, seed=1, noise_log_sd=sd, **kw)[1]["slices"][0]["N_opt_ci"]
        return np.log(hi / lo) / (2 * 1.96)  # the SD a normal interval of that width has
    clustered, independent = width(shares=(f, 1.0, f)), width()
    assert 0.75 < clustered / truth_spread < 1.5, (clustered, truth_spread)  # 1.17 here
    assert independent / clustered < 0.75  # 0.58: independent draws per point, the old, too narrow interval


def test_noise_split_of_a_macro_loss():
    """A point is the mean of its run's K categories: the per-category parts shrink by 1/K, the run-level and
    cluster parts do not; per-point SDs (per_category=False) keep their total."""
    sh, own = iso.noise_split(0.01, True, 1, (0.4, 0.6, 0.3))
    assert np.isclose(sh ** 2 + own ** 2, 1e-4) and np.isclose(sh ** 2, 0.4e-4)
    sh5, own5 = iso.noise_split(0.01, True, 5, (0.4, 0.6, 0.3))
    assert np.isclose(sh5 ** 2, 1e-4 * (0.3 + 0.1 / 5)) and np.isclose(own5 ** 2, 1e-4 * (0.3 + 0.3 / 5))
    sh, own = iso.noise_split(0.01, False, 5, (0.4, 0.6, 0.3))
    assert np.isclose(sh ** 2 + own ** 2, 1e-4)
    assert iso.noise_split(0.01, True, 5, None) == (0.0, 0.01)  # not measured: as before (nothing shared)


@pytest.mark.slow  # ~5 CPU-s of synthetic sweeps: the fast loop keeps its 200 s
def test_residual_noise_without_replicates_gives_no_interval():
    """Review of session 23: with one run per (size, budget), the usual IsoFLOP design, and no replicate runs,
    the noise came from the size curves' residuals, which cannot hold the part a seed shares across its
    budgets (each size's curve absorbs its one seed's shift). Under the measured noise structure (43% of the
    variance shared across budgets) the "95%" interval held the optimum in 41 of 60 sweeps (68%; 6 of 40 with
    96% shared). Unmeasured shares: no interval, and why; measured shares: the residuals are the points' own
    part, the shared part added on top."""
    sizes, budgets, C = np.geomspace(3e6, 3e8, 5), np.geomspace(1e8, 1e11, 6), [1e18]
    sd_shared, sd_own = 0.00469, 0.00536  # plans/noise_model_abstracts.json's K = 1 split of 0.0071
    pts = _clustered(np.random.default_rng(3), sizes, budgets, 1, sd_shared, sd_own)
    r = iso.isoflop(pts, compute=C, n_boot=50, seed=0)
    s = r[1]["slices"][0]
    assert s["N_opt_ci"] == [None, None] and "seed shares" in r[1]["noise_source"], r[1]["noise_source"]
    assert any("seed shares" in line for line in iso.markdown_section(r))
    f = sd_shared ** 2 / (sd_shared ** 2 + sd_own ** 2)
    truth, cov = sy.chinchilla_optimum(C[0]), 0
    for i in range(30):
        pts = _clustered(np.random.default_rng(500 + i), sizes, budgets, 1, sd_shared, sd_own)
        lo, hi = iso.isoflop(pts, compute=C, n_boot=100, seed=i, shares=(f, 1.0, f))[1]["slices"][0]["N_opt_ci"]
        cov += lo is not None and lo <= truth <= hi
    assert cov >= 26, cov  # >= 87% of 30 (the residuals taken as the total: 68%)


def test_edge_slice_does_not_claim_the_optimum_lies_beyond():
    """Review of session 23: a slice whose lowest loss is at an edge size gets no interval, but the report
    read "open: the optimum lies beyond the sizes", a finding, where the truth may be inside (isoflop3: 20
    of 240 inner slices, truth at the middle size). It says which edge holds the lowest loss, and claims no
    location (a one-sided percentile bound held an inside truth in 79% of such slices: not calibrated)."""
    small = sy.isoflop_sweep(np.random.default_rng(1), SIZES[:4], BUDGETS, Ks=(1,))  # all below the optimum
    r = iso.isoflop(small, compute=[1e18], n_boot=30, shares=(0.0, 1.0, 0.0))
    s = r[1]["slices"][0]
    assert not s["inside"] and s["N_opt_ci"] == [None, None] and "largest" in s["ci_why"]
    text = "\n".join(iso.markdown_section(r))
    assert "beyond the sizes" not in text and "at or beyond" not in text, text
    assert "lowest loss is at the largest size; the optimum is not located" in text, text


def test_noise_shares_say_when_the_replicates_vary_the_init_seed_only(tmp_path):
    """Review of session 23: replicates that share their data order (init seed only) miss its noise, in the SD
    and in the share across budgets (the measured model's 0.43 reads 0.35, its SD 7% low): the shares' source
    says so. K = 11 seeds (other data order and init) are replicates of every seed and silence it."""
    kw = dict(seeds=(0,), Ks=(1,), budgets=(10e6, 30e6, 90e6), replicate_Ks=(1,), replicate_subsets=(0, 1))
    simulate.p1_sweep(tmp_path / "a", k11_seeds=(), **kw)
    shares, why = iso.noise_shares(run_rows(collect_runs(tmp_path / "a")))
    assert shares is not None and "init seed only" in why, why
    simulate.p1_sweep(tmp_path / "b", k11_seeds=(0, 1), **kw)
    shares, why = iso.noise_shares(run_rows(collect_runs(tmp_path / "b")))
    assert shares is not None and "init seed only" not in why, why


def test_runs_of_other_categories_are_not_replicates(tmp_path):
    """Review of session 23: without replicate runs, point_noise took the K = 1 runs of three seeds at one size
    and budget, three different categories, for replicates: a noise SD of 0.118 where the truth's is 0.0071,
    and "95%" intervals spanning the ladder ([1.2M, 57M] at every C). Replicate points share their category
    set; here there are none, and without them the seed-shared noise is unmeasured: no interval."""
    sizes = (("pythia-14m", 1_200_000), ("pythia-31m", 4_700_000), ("pythia-70m", 19_000_000))
    C = np.geomspace(1e14, 1e16, 4)
    simulate.p1_sweep(tmp_path, seeds=range(3), Ks=(1,), k11_seeds=(), replicate_Ks=(), models=sizes,
                      truth=dict(simulate.TRUTH, A=400.0, alpha=0.34),
                      budgets={m: tuple(c / (6 * n) for c in C) for m, n in sizes})
    x = iso.isoflop_slices(run_rows(collect_runs(tmp_path)), 20, 0)
    r = x["by_K"][1]
    assert not r["noise_source"].startswith("replicate runs"), r["noise_source"]
    assert r["slices"] and all(s["N_opt_ci"] == [None, None] for s in r["slices"] if "N_opt" in s)
