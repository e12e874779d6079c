"""simulate.py, the one fabricator: the clustered noise has the declared structure (its variance components
come back from a plain moment estimator written here), the measured noise file is what the default reads,
repetition follows the effective-token law with epochs as train.py writes them, and bad input is one line."""
import json
import math

import numpy as np
import pytest

import simulate
from conftest import ROOT


def _residuals(root, noise, noise_seed):
    """{run_id: (cluster, init_seed, budget, e[11])}: e = log(loss / noiseless loss). The noiseless twin comes
    from the same noise seed at SD 0: the draws of the sweep's stream stay aligned (every part is drawn, at
    SD 0 too), so the windows per category, and so the law's loss, are the same."""
    kw = dict(Ks=(1, 3), seeds=range(11), k11_seeds=(), budgets=(1e7, 3e7, 9e7), replicate_Ks=(1, 3),
              replicate_subsets=range(11), init_seeds=(100,), noise_seed=noise_seed)
    simulate.p1_sweep(root / "noisy", noise=noise, **kw)
    simulate.p1_sweep(root / "zero", noise=noise.scaled(0.0), **kw)
    out = {}
    for rd in sorted((root / "noisy" / "runs").iterdir()):
        cfg = json.loads((rd / "run_config.json").read_text())
        t1, t0 = (json.loads((root / w / "runs" / rd.name / "test_results.json").read_text())["per_category"]
                  for w in ("noisy", "zero"))
        assert json.loads((rd / "summary.json").read_text())["tokens_per_category"] == \
            json.loads((root / "zero" / "runs" / rd.name / "summary.json").read_text())["tokens_per_category"]
        e = np.array([math.log(t1[c]["loss"] / t0[c]["loss"]) for c in simulate.CATEGORIES])
        out[rd.name] = ((cfg["K"], cfg["seed"]), cfg["init_seed"], cfg["token_budget"], e)
    return out


def components(res):
    """Moment estimates (the noise has mean 0, so a mean product is a covariance): total variance; the
    covariance of two categories of one run (run level); of one category at two budgets of one seed
    cluster (shared across budgets); of one category of two replicates that differ only in the init seed,
    at one budget (the data-order part); of one category of two different clusters (nothing)."""
    runs = list(res.values())
    total = np.mean([e ** 2 for *_, e in runs])
    off = ~np.eye(11, dtype=bool)
    run_level = np.mean([np.outer(e, e)[off].mean() for *_, e in runs])
    budgets, data, other = [], [], []
    for i, (ca, ia, da, ea) in enumerate(runs):
        for cb, ib, db, eb in runs[i + 1:]:
            if ca == cb and ia == ib and da != db:
                budgets.append(ea * eb)
            elif ca == cb and ia != ib and da == db:
                data.append(ea * eb)
            elif ca != cb and da == db:
                other.append(ea * eb)
    return {"total": total, "run_level": run_level, "shared": np.mean(budgets), "data_order": np.mean(data),
            "none": np.mean(other)}


def test_clustered_noise_has_the_declared_variance_components(tmp_path):
    """sd 0.05, 40% shared across budgets (a quarter of it with the init seed, the rest with the data seed),
    30% run level, 30% per (run, category): 3 noise seeds of 132 runs x 11 categories. The tolerances are
    ~3 standard errors of each estimate (clusters of 11 categories x 3 budgets x 2 seed kinds per seed)."""
    m = simulate.NoiseModel(0.05, frac_shared_across_budgets=0.4, frac_run_level=0.3, init_share=0.25)
    est = [components(_residuals(tmp_path / f"n{s}", m, s)) for s in range(3)]
    got = {k: float(np.mean([x[k] for x in est])) / m.sd ** 2 for k in est[0]}
    assert abs(got["total"] - 1) < 0.12, got
    assert abs(got["run_level"] - 0.3) < 0.08, got
    assert abs(got["shared"] - 0.4) < 0.1, got
    assert abs(got["data_order"] - 0.4 * 0.75) < 0.1, got  # replicates share the data order, not the init
    assert abs(got["none"]) < 0.05, got
    # the same estimator on independent noise finds nothing shared: it can tell the two apart
    ind = components(_residuals(tmp_path / "ind", simulate.NoiseModel(0.05), 7))
    assert abs(ind["total"] / 0.05 ** 2 - 1) < 0.15 and max(abs(ind[k]) / 0.05 ** 2 for k in
                                                              ("run_level", "shared", "data_order", "none")) < 0.06, ind


def test_the_default_is_the_measured_noise_file_and_noise_scales_its_total(tmp_path):
    d = json.loads(simulate.NOISE_MODEL_FILE.read_text())
    for k in ("sd_run_category", "frac_shared_across_budgets", "frac_run_level", "sd_init", "sd_data_order", "source"):
        assert k in d and set(d["per_model"]) == {"kn", "neural"}
    m = simulate.noise_model()
    assert (m.sd, m.frac_shared_across_budgets, m.frac_run_level) == (
        d["per_model"]["neural"]["sd_run_category"], d["per_model"]["neural"]["frac_shared_across_budgets"],
        d["per_model"]["neural"]["frac_run_level"])
    s = simulate.noise_model(None, 0.02)
    assert s.sd == 0.02 and s.frac_run_level == m.frac_run_level and s.frac_shared_across_budgets == m.frac_shared_across_budgets
    assert s.frac_cluster == m.frac_cluster == d["per_model"]["neural"]["frac_cluster"] > 0
    assert math.isclose(sum(x ** 2 for x in s.sds() + s.cluster_sds()), 0.02 ** 2)  # the parts' variances add up to the total
    i = simulate.noise_model("independent", 0.03)
    assert i.sds() == (0.0, 0.0, 0.0, 0.03)
    f = tmp_path / "nm.json"
    f.write_text(json.dumps(dict(d, per_model={"kn": dict(d, sd_run_category=0.007, frac_run_level=0.1)})))
    assert simulate.noise_model(str(f), kind="kn").sd == 0.007 and simulate.noise_model(str(f), kind="neural").sd == d["sd_run_category"]


@pytest.mark.parametrize("argv, needle", [
    (["--noise_model", "independent"], "--noise"),
    (["--noise_model", "nofile.json"], "--noise_model nofile.json"),
    (["--noise", "nan"], "--noise"),
    (["--repetition", "25e6"], "--repetition"),
    (["--repetition", "0,15.4"], "U >= 1"),
])
def test_bad_noise_or_repetition_is_one_line(tmp_path, capsys, argv, needle):
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"name": "p", "store": {"data_dir": "x"},
                                "grid": [{"model_config": ["pythia-31m"], "K": [1], "seed": [0], "token_budget": [1e6]}]}))
    with pytest.raises(SystemExit) as e:
        simulate.main([str(plan), "--law", "B=40,beta=0.3,s=0.5,E=2", "--out", str(tmp_path / "o"), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err


def test_repetition_follows_the_effective_token_law_and_writes_epochs(tmp_path):
    """Finite pools (issue 22): K = 1 specialists repeating 8-18 times; with noise 0 each loss is the dilution
    law on D'_c = U + U R* (1 - exp(-R/R*)), R = D_c/U - 1, and D' = sum of D'_c; epochs = D_c / U."""
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"name": "p", "store": {"data_dir": "x"}, "fixed": {"batch_size": 320},
                                "grid": [{"model_config": ["pythia-31m"], "K": [1, 3], "seed": [0, 1],
                                          "token_budget": [9e6, 18e6]}]}))
    rids = simulate.main([str(plan), "--law", "B=40,beta=0.3,s=0.5,E=2", "--noise", "0", "--repetition", "1e6,15.4",
                          "--out", str(tmp_path / "o")])
    seen_epochs = []
    for rid in rids:
        rd = tmp_path / "o" / "runs" / rid
        s, t = (json.loads((rd / n).read_text()) for n in ("summary.json", "test_results.json"))
        eff = {}
        for c, Dc in s["tokens_per_category"].items():
            assert math.isclose(s["epochs_per_category"][c], Dc / 1e6)
            R = Dc / 1e6 - 1
            eff[c] = Dc if R <= 0 else 1e6 + 1e6 * 15.4 * (1 - math.exp(-R / 15.4))
        for c in eff:
            want = 2 + 40 * (eff[c] ** 0.5 * sum(eff.values()) ** 0.5) ** -0.3
            assert math.isclose(t["per_category"][c]["loss"], want, rel_tol=1e-12)
        if s["K"] == 1:
            seen_epochs.append(s["epochs_per_category"][s["categories"][0]])
    assert 8 <= min(seen_epochs) and max(seen_epochs) <= 18.5
    # and it matters: the same run without repetition has a lower loss (every repeated token counted whole)
    law = simulate.parse_law("B=40,beta=0.3,s=0.5,E=2,U=1e6,Rstar=15.4")
    assert simulate.effective_tokens(18e6, law["U"], law["Rstar"]) < 18e6
    assert simulate.effective_tokens(0.5e6, 1e6, 15.4) == 0.5e6


def test_subsets_are_the_trainers_balanced_cyclic_design():
    """simulate.py fabricates runs on random_window_dataset.select_categories' subsets, which train.py uses,
    without importing torch."""
    import subprocess
    import sys
    from random_window_dataset import CATEGORY_PERMUTATION, select_categories
    assert simulate.select is select_categories and simulate.PERM is CATEGORY_PERMUTATION
    assert sorted(simulate.CATEGORIES) == sorted(CATEGORY_PERMUTATION)
    r = subprocess.run([sys.executable, "-c", "import sys, simulate; print('torch' in sys.modules)"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip() == "False", r.stdout + r.stderr


def test_default_noise_gives_back_the_measured_components_under_the_pilots_estimator():
    """The measured file's fractions overlap: frac_shared_across_budgets = (var a + var u) / total and
    frac_run_level = (var a + var w) / total both hold the cluster component a (frac_cluster: common to every
    budget and category of a seed cluster; analysis/noise_structure.py). Fabricated noise, measured by that
    same estimator over 1000 seed clusters x 3 budgets, must give back all three (the neural pilot's a is 0.35
    of the variance; treating the two fractions as disjoint drops it and leaves ~0 per (run, category))."""
    from analysis.noise_structure import PAIR_TYPES, _estimates, group_moments
    d = json.loads(simulate.NOISE_MODEL_FILE.read_text())["per_model"]["neural"]
    m = simulate.noise_model()
    rng = np.random.default_rng(0)
    y = np.array([[list(simulate.draw_noise(m, rng, ("pythia-31m", ("cs.CV", "cs.IT", "math.GR"), cl), 100 + cl, cl).values())
                   for _ in range(3)] for cl in range(1000)])
    mom = group_moments(y)
    est = _estimates(*(np.array([[mom[t][i] for t in PAIR_TYPES]], dtype=float) for i in (0, 1)))  # one group
    assert abs(est["sd"] / d["sd_run_category"] - 1) < 0.05, est
    for k in ("frac_shared_across_budgets", "frac_run_level", "frac_cluster"):
        assert abs(est[k] - d[k]) < 0.06, (k, est[k], d[k])
