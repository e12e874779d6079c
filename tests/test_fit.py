"""analyze.py's fitting on synthetic results drawn from a known law plus noise: the point estimate recovers
the parameters, the bootstrap intervals cover the truth, and held-out error picks the true form."""
import numpy as np
import pytest

from analysis.forms import compare_forms, preferred_form
from analysis.laws import FORMS, Law, fit_law

TRUE = {"E": [2.0, 2.6, 3.1, 3.5], "B": 40.0, "beta": 0.3, "s": 0.6}


def synthetic(seed=0, noise=0.004, E=TRUE["E"], Ks=(1, 2, 4)):
    rng = np.random.default_rng(seed)
    C = len(E)
    rows = {k: [] for k in ("L", "D", "Dc", "N", "cat", "run", "budget", "K", "fold")}
    run = 0
    for K in Ks:
        for subset_seed in range(C):
            cats = [(subset_seed + j) % C for j in range(K)]
            for D in (1e6, 3e6, 1e7, 3e7, 1e8):
                run_noise = rng.normal(0, noise)  # shared by a run's categories, like a training seed
                for c in cats:
                    Dc = D / K
                    L = E[c] + TRUE["B"] * (Dc ** TRUE["s"] * D ** (1 - TRUE["s"])) ** -TRUE["beta"]
                    rows["L"].append(L * np.exp(run_noise + rng.normal(0, noise)))
                    rows["D"].append(D)
                    rows["Dc"].append(Dc)
                    rows["N"].append(1e6)
                    rows["cat"].append(c)
                    rows["run"].append(run)
                    rows["budget"].append(D)
                    rows["K"].append(K)
                    rows["fold"].append(subset_seed)
                run += 1
    d = {k: np.array(v, dtype=int if k in ("cat", "run", "K", "fold") else float) for k, v in rows.items()}
    d["categories"] = [f"c{i}" for i in range(C)]
    d["runs"] = list(range(run))
    return d


def test_recovers_parameters_and_intervals_cover_truth():
    d = synthetic()
    fit = fit_law(d, "dilution", n_boot=200, seed=1)
    assert fit["converged"] and fit["n_points"] == len(d["L"]) and fit["n_runs"] == 60
    p = fit["params"]
    truth = {"beta": TRUE["beta"], "s": TRUE["s"], "B": TRUE["B"],
             **{f"E[c{i}]": e for i, e in enumerate(TRUE["E"])}}
    assert p["beta"]["estimate"] == pytest.approx(TRUE["beta"], abs=0.05)
    assert p["s"]["estimate"] == pytest.approx(TRUE["s"], abs=0.1)
    for i, e in enumerate(TRUE["E"]):
        assert p[f"E[c{i}]"]["estimate"] == pytest.approx(e, rel=0.03)
    for name, v in truth.items():
        lo, hi = p[name]["ci95"]
        assert lo <= v <= hi, (name, lo, v, hi)
        assert p[name]["n_boot"] == 200
    assert fit["fit_error"] < 0.01
    assert fit["form"] == "dilution" and "D_c^s" in fit["formula"] and "data_filter" in fit


def test_bootstrap_is_the_same_with_any_number_of_processes():
    d = synthetic(seed=5)
    a = fit_law(d, "dilution", n_boot=16, seed=3, jobs=1)
    b = fit_law(d, "dilution", n_boot=16, seed=3, jobs=2)
    assert a["params"] == b["params"]


def test_held_out_error_prefers_the_true_form_with_an_interval():
    # 8 categories and K up to 8: D/K^s then differs between the forms by up to 0.4 * ln 8 in log-tokens
    d = synthetic(seed=2, noise=0.002, E=[2.0, 2.3, 2.6, 2.9, 3.1, 3.3, 3.5, 3.7], Ks=(1, 2, 4, 8))
    cmp = compare_forms(d, list(FORMS), False, n_boot=200, seed=0)
    assert cmp["rmse"]["dilution"]["estimate"] < 0.02
    better = {(p["a"], p["b"]): p for p in cmp["pairs"]}
    for other in ("disjoint", "shared"):
        p = better[("dilution", other)]
        assert p["better"] == "dilution" and p["ci95"][1] < 0
    assert preferred_form(cmp) == "dilution"
    # the same comparison, run again from scratch, gives the same numbers: no dependence on restarts
    assert compare_forms(d, list(FORMS), False, n_boot=200, seed=0) == cmp


def test_forms_indistinguishable_without_a_k_effect_are_undecided():
    """All runs at K = 1: D_c = D, so the three forms are the same law; no interval may pick one."""
    d = synthetic(seed=6, Ks=(1,))
    d["fold"] = d["run"] % 3  # each category keeps some of its budgets in every fold's training part
    cmp = compare_forms(d, list(FORMS), False, n_boot=200, seed=0)
    assert cmp["n_points"] == len(d["L"]) and cmp["n_skipped"] == 0
    assert all(abs(p["mse_difference"]) < 1e-8 and p["better"] == "undecided" for p in cmp["pairs"])
    assert preferred_form(cmp) is None


def test_fixed_s_forms_have_no_s_parameter():
    d = synthetic(seed=3)
    for form in ("disjoint", "shared"):
        fit = fit_law(d, form, n_boot=0)
        assert "s" not in fit["params"] and fit["converged"]


def test_huber_gradient_matches_finite_differences():
    d = synthetic(seed=4, noise=0.05)  # large residuals exercise both Huber branches
    law = Law("dilution", 4, with_n=False)
    th = law.starts(d)[3]
    f, g = law.objective(th, d)
    eps = 1e-6
    for i in range(len(th)):
        e = np.zeros_like(th)
        e[i] = eps
        num = (law.objective(th + e, d)[0] - law.objective(th - e, d)[0]) / (2 * eps)
        assert num == pytest.approx(g[i], rel=1e-4, abs=1e-8)


def one_cluster_at_the_largest_k(seed, sd_cluster=0.006, sd_cell=0.002, design=((1, 6), (2, 6), (3, 6), (6, 1))):
    """A tiny design with one seed cluster at its largest K (P1 with one K = 11 seed, in small): K in {1, 2, 3}
    x 6 subsets and K = 6 x 1 (design: (K, subsets) pairs), three budgets, tokens split exactly. Its own
    noise, not simulate.py's: a draw per seed cluster shared by all its budgets and categories (additive in
    log loss), and one per point."""
    rng = np.random.default_rng(seed)
    E, C = [1.8 + 0.1 * i for i in range(6)], 6
    rows = {k: [] for k in ("L", "D", "Dc", "N", "cat", "run", "budget", "K", "cluster")}
    run = cluster = 0
    for K, subsets in design:
        for sub in range(subsets):
            shared = rng.normal(0, sd_cluster)
            for D in (1e6, 4e6, 1.6e7):
                for c in [(sub + j) % C for j in range(K)]:
                    L = E[c] + TRUE["B"] * ((D / K) ** 0.5 * D ** 0.5) ** -TRUE["beta"]
                    for k, v in zip(rows, (L * np.exp(shared + rng.normal(0, sd_cell)), D, D / K, 1e6, c, run, D, K,
                                           cluster)):
                        rows[k].append(v)
                run += 1
            cluster += 1
    d = {k: np.array(v, dtype=int if k in ("cat", "run", "K", "cluster") else float) for k, v in rows.items()}
    d.update(categories=[f"c{i}" for i in range(C)], runs=list(range(run)))
    return d


def test_s_interval_counts_the_noise_of_a_lone_cluster_at_the_largest_k():
    """issue 21: s is read mostly from the largest K, and with one seed cluster there the bootstrap within K
    drew that cluster in every resample: its noise moved every estimate of s but no resample, and the
    interval came out a third as wide as the estimates' spread here (P1 with one K = 11 seed: s covered 75%).
    The jackknife pools that cluster with the next K's (laws.jackknife_intervals). Over 16 noise seeds the
    mean half-width must reach 0.7 x 1.96 x the RMS error of the estimates (measured: 0.98 x; the
    bootstrap's 0.30 x). ~5 CPU-s."""
    est, half = [], []
    for seed in range(16):
        p = fit_law(one_cluster_at_the_largest_k(seed), "dilution", n_boot=20, seed=seed)["params"]["s"]
        est.append(p["estimate"])
        half.append((p["ci95"][1] - p["ci95"][0]) / 2)
    spread = float(np.sqrt(np.mean((np.array(est) - 0.5) ** 2)))
    assert np.mean(half) >= 0.7 * 1.96 * spread, (np.mean(half), spread)


def test_no_interval_where_deleting_a_cluster_leaves_the_parameter_unidentified():
    """K = 1 x 6 subsets and one K = 6 cluster: deleting that cluster leaves only K = 1, where s has no
    effect, so its refit keeps s at its start (the point estimate) and the jackknife saw none of that
    cluster's noise: the intervals held s = 0.5 in 8 of 16 noise seeds at 0.38 of the needed half-width.
    The interval must be refused, saying why; B and beta (pinned by the K = 1 runs alone) keep theirs."""
    for seed in range(3):
        p = fit_law(one_cluster_at_the_largest_k(seed, design=((1, 6), (6, 1))), "dilution", n_boot=20,
                    seed=seed)["params"]
        assert p["s"]["ci95"] == [None, None] and "K = 6" in p["s"]["why"], p["s"]
        assert p["beta"]["ci95"][0] is not None and p["B"]["ci95"][0] is not None, (p["beta"], p["B"])
