"""H1 by one joint fit (analysis/floors.py): the dilution law on all runs with a floor offset per category at
the largest K, each offset's interval a t interval over seed clusters, an equivalence test on their mean and
Holm across categories. Equal floors: supported; the K = 11 floors raised by 0.05 nats: not supported."""
import numpy as np
import pytest

import simulate
from analysis.floors import LawFloorOffset, h1_offsets
from analysis.laws import fit_data
from analysis.runs import collect_runs, run_rows

BUDGETS = (10e6, 30e6, 90e6, 270e6)


def sweep(root, k11_shift, noise_seed=0):
    """A small P1-like sweep: specialists of every category, K = 3 and K = 11 at three subset seeds each, four
    budgets, clustered noise (0.3% of log loss shared across budgets, run level and own parts); the K = 11
    runs' floors raised by k11_shift nats (a truth with E_c + shift, written here, not by any code's law)."""
    rng = np.random.default_rng(noise_seed)
    noise = simulate.NoiseModel(0.003, 0.3, 0.3)
    shifted = dict(simulate.TRUTH, E={c: e + k11_shift for c, e in simulate.TRUTH["E"].items()})
    for K, seeds in ((1, range(11)), (3, range(3)), (11, range(3))):
        for seed in seeds:
            for D in BUDGETS:
                simulate.make_run(root, simulate.rid_of("pythia-31m", K, seed, D), simulate.select(K, seed), D, seed,
                                  rng, noise=noise, truth=shifted if K == 11 else simulate.TRUTH)
    return fit_data(run_rows(collect_runs(root)))


def test_offset_law_gradient_matches_finite_differences(tmp_path):
    d = sweep(tmp_path, 0.05)
    law = LawFloorOffset(len(d["categories"]), 11, [0, 3, 5])
    th = law.starts(d)[0]
    th[-3:] = [0.01, -0.02, 0.03]
    f, g = law.objective(th, d)
    for i in (0, law.C, law.C + 1, law.C + 2, law.C + 3, law.C + 5):
        e = np.zeros_like(th)
        e[i] = 1e-6
        num = (law.objective(th + e, d)[0] - law.objective(th - e, d)[0]) / 2e-6
        assert num == pytest.approx(g[i], rel=1e-4, abs=1e-8), i


def test_equal_floors_are_supported(tmp_path):
    h = h1_offsets(sweep(tmp_path, 0.0), 0.02, 60, 0)
    assert h["verdict"] == "supported", h["why"]
    assert h["mean"]["n_categories"] == 11 and -0.02 <= h["mean"]["ci90"][0] <= 0 <= h["mean"]["ci90"][1] <= 0.02
    assert not any(r["holm_rejected"] for r in h["table"])


def test_floors_raised_at_k11_are_not_supported(tmp_path):
    h = h1_offsets(sweep(tmp_path, 0.05), 0.02, 60, 0)
    assert h["verdict"] == "not supported", h["why"]
    # the offset is found where it was put, per category and on average
    assert h["mean"]["ci95"][0] <= 0.05 <= h["mean"]["ci95"][1], h["mean"]
    assert sum(r["holm_rejected"] for r in h["table"]) >= 6


def _clustered_sweep(root, noise_seed, k11_seeds):
    """P1-like (specialists of every category, K = 3 x 3 subset seeds, K = 11 at k11_seeds, four budgets) under
    simulate.py's default noise: the pilot's measured structure, 43% of the variance shared by a seed
    cluster's budgets. Equal floors at every K: each offset's truth is 0."""
    rng = np.random.default_rng(noise_seed)
    noise = simulate.noise_model()
    for K, seeds in ((1, range(11)), (3, range(3)), (11, k11_seeds)):
        for seed in seeds:
            for D in BUDGETS:
                simulate.make_run(root, simulate.rid_of("pythia-31m", K, seed, D), simulate.select(K, seed), D, seed,
                                  rng, noise=noise)
    return fit_data(run_rows(collect_runs(root)))


@pytest.mark.slow  # 8 joint fits (~30 s CPU)
def test_offset_intervals_cover_zero_under_clustered_noise(tmp_path):
    """The offsets' 95% intervals hold the true 0 in >= 90% of 88 category-sweeps. The percentile bootstrap
    over 3 clusters at K = 11 (stratified by K, runs resampled where a category would drop) held it in 27%
    of P1's cells and 56% with one K = 11 seed (BENCHMARKS.md, calibration): the clusters' shared noise did
    not enter the interval."""
    held = n = 0
    for s in range(8):
        h = h1_offsets(_clustered_sweep(tmp_path / f"s{s}", s, range(3)), 0.02, 40, s)
        for r in h["table"]:
            lo, hi = r["ci95"]
            if lo is not None:
                n += 1
                held += lo <= 0 <= hi
    assert n >= 80 and held >= 0.90 * n, (held, n)  # 85 of 88 with the cluster t interval; 77 of 88 before


def test_one_cluster_at_the_largest_k_gives_no_offset_interval(tmp_path):
    """One K = 11 seed (one seed cluster, 4 budgets): its shared noise is indistinguishable from an offset,
    so no interval and no 'not supported'."""
    h = h1_offsets(_clustered_sweep(tmp_path, 0, (0,)), 0.02, 40, 0)
    assert h["table"] and all(r["ci95"] == [None, None] and r["ci90"] == [None, None] for r in h["table"]), h["table"]
    assert h["verdict"] == "undecided" and "1 seed cluster" in h["why"], h["why"]
