"""analysis/transfer.py: the transfer matrix t_ij from fabricated sweeps with known t_ij (some negative),
the listing of pairs that cannot be estimated, the adapters from run directories and analyze.py's rows,
the similarity correlation on a real store and the report pieces."""
import json
import math

import numpy as np
import pytest

import analyze
import store as st
from analysis import hilberg
from analysis import synthetic as sy
from analysis import transfer as tr
from analysis import transfer_report as trr
from analysis.runs import collect_runs, run_rows

CATS4 = sy.CATS[:4]
CATS5 = sy.CATS[:5]


@pytest.fixture(scope="module")
def sweeps():
    """Three fabricated sweeps (4 categories: 12 ordered pairs each) and their transfer matrices."""
    out = []
    for seed in range(3):
        runs, truth = sy.transfer_sweep(np.random.default_rng(seed), cats=CATS4)
        out.append((runs, truth, tr.transfer_matrix(runs, n_boot=100, seed=seed)))
    return out


def test_known_t_recovered_within_intervals_and_signs_never_wrong(sweeps):
    covered, total, negatives = 0, 0, 0
    for _, truth, res in sweeps:
        assert not res["missing"] and len(res["t"]) == 12
        for k, v in res["t"].items():
            lo, hi = res["ci"][k]
            assert lo <= v <= hi
            covered += lo <= truth["t"][k] <= hi
            total += 1
            negatives += truth["t"][k] < 0
            # a decided sign is the true sign
            assert not (lo > 0 and truth["t"][k] < 0) and not (hi < 0 and truth["t"][k] > 0), (k, truth["t"][k], lo, hi)
    assert negatives >= 5                    # interference is part of the truth
    assert covered / total >= 0.8, (covered, total)
    # the specialist curves themselves are recovered (noise 0.01 nats over 5 budgets)
    for _, truth, res in sweeps:
        for c, (E, B, beta) in truth["curves"].items():
            assert abs(res["specialists"][c]["E"] - E) < 0.25


def test_interference_decided_when_strong():
    runs, truth = sy.transfer_sweep(np.random.default_rng(7), cats=CATS4[:2], t_range=(-0.45, -0.35), noise=0.003)
    res = tr.transfer_matrix(runs, n_boot=150)
    for k in res["t"]:
        assert res["ci"][k][1] < 0, (k, truth["t"][k], res["ci"][k])


def test_pairs_without_needed_specialists_listed_not_guessed():
    runs, _ = sy.transfer_sweep(np.random.default_rng(1), cats=CATS4)
    a, b, c, d = CATS4
    keep = []
    for r in runs:
        if r["categories"] == [a] and r["budget"] > 3e7:
            continue                      # a: specialists only at 1e7 and 3e7 -> two budgets
        if r["categories"] == [b] and r["budget"] < 9e7:
            continue                      # b: 3 budgets, none near 4.5e7 (a pair's D_b)
        if r["categories"] == [c]:
            continue                      # c: no specialist at all
        keep.append(r)
    res = tr.transfer_matrix(keep, n_boot=20)
    why = {(m["i"], m["j"]): m["reason"] for m in res["missing"]}
    others = lambda i: [j for j in CATS4 if j != i]
    assert all("2 budget(s)" in why[(a, j)] for j in others(a))
    assert all("no specialist of" in why[(c, j)] for j in others(c))
    assert all("no specialist near" in why[(b, j)] for j in others(b))
    assert set(res["t"]) == {(d, j) for j in (a, b, c)}           # only d's specialists cover its pairs
    assert len(why) == 9
    text = "\n".join(trr.markdown_section(res))
    assert f"t({c}, {a}): no specialist of {c}" in text and "n/a" in text


def test_pair_loss_below_the_floor_listed():
    runs, truth = sy.transfer_sweep(np.random.default_rng(6), cats=CATS4[:2])
    i, j = CATS4[:2]
    for r in runs:
        if len(r["categories"]) == 2:
            r["loss"][i] = truth["curves"][i][0] - 0.2      # below i's floor: no effective data explains it
    res = tr.transfer_matrix(runs, n_boot=20)
    why = {(m["i"], m["j"]): m["reason"] for m in res["missing"]}
    assert "below" in why[(i, j)] and "fitted floor" in why[(i, j)] and (i, j) not in res["t"]
    assert (j, i) in res["t"]


def test_adapters_from_run_dirs_and_analyze_rows_agree(tmp_path):
    runs, _ = sy.transfer_sweep(np.random.default_rng(2), cats=CATS4[:3])
    sy.write_run_dirs(tmp_path, runs)
    (tmp_path / "runs" / "broken").mkdir()            # a run that never started: skipped by both
    (tmp_path / "runs" / "broken" / "run_config.json").write_text("{}")
    from_dirs = tr.runs_from_sweep(tmp_path)
    from_rows = tr.runs_from_rows(run_rows(collect_runs(tmp_path)))
    key = lambda rs: sorted((r["run_id"], tuple(r["categories"]), r["budget"], tuple(sorted(r["loss"].items())),
                             tuple(sorted(r["tokens"].items()))) for r in rs)
    assert key(from_dirs) == key(from_rows) == key(runs)
    a, b = tr.transfer_matrix(from_dirs, n_boot=30), tr.transfer_matrix(runs, n_boot=30)
    assert a["t"].keys() == b["t"].keys()   # same numbers up to the order of summation (runs come sorted by name)
    assert all(a["t"][k] == pytest.approx(b["t"][k], abs=1e-8) for k in a["t"])


def test_mixed_models_refused():
    runs, _ = sy.transfer_sweep(np.random.default_rng(3), cats=CATS4[:2])
    runs[0] = {**runs[0], "model": "pythia-70m"}
    with pytest.raises(ValueError, match="mix models"):
        tr.transfer_matrix(runs, n_boot=5)


def test_jsd_properties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.integers(0, 50, 30), rng.integers(0, 50, 30)
        p[0] += 1
        q[0] += 1
        d = tr.jsd(p, q)
        assert 0 <= d <= 1 and d == pytest.approx(tr.jsd(q, p)) and tr.jsd(p, 3 * p) == pytest.approx(0, abs=1e-12)
    assert tr.jsd([1, 0], [0, 1]) == pytest.approx(1.0)


def test_similarity_from_a_real_store_and_its_correlation(tmp_path, outputs):
    """Unigram JSD from a store written through store.py: categories drawn from nearby distributions are
    closer; a fabricated t that falls with JSD gives a negative rho, decided."""
    rng = np.random.default_rng(0)
    base = rng.dirichlet(np.ones(200))
    mix = [0.0, 0.2, 0.5, 0.9]            # category k: (1 - m) * base + m * its own distribution
    dists = [(1 - m) * base + m * rng.dirichlet(np.ones(200)) for m in mix]
    with st.StoreWriter(tmp_path / "s", st.CATEGORIES[:4]) as w:
        for split in st.SPLITS:
            for k, p in enumerate(dists):
                w.add(split, k, rng.choice(200, 3000, p=p), n_bytes=3000)
        w.finish({"tokenizer": {"vocab_size": 200, "sha256": None}, "variant": {}})
    s = st.Store(tmp_path / "s")
    J = tr.jsd_matrix(tr.unigram_counts(s))
    c = s.categories
    assert J[(c[0], c[1])] < J[(c[0], c[2])] < J[(c[0], c[3])]
    runs, _ = sy.transfer_sweep(np.random.default_rng(4), cats=c, noise=0.002)
    # rebuild the pair losses from t_ij = 0.9 - 3 * JSD(i, j): transfer falls with dissimilarity
    truth = {k: 0.9 - 3 * v for k, v in J.items()}
    runs = _with_t(runs, truth, np.random.default_rng(5))
    res = tr.transfer_matrix(runs, n_boot=100)
    sim = tr.transfer_vs_similarity(res, J)
    assert sim["n_pairs"] == 12 and sim["rho"] < -0.8 and sim["verdict"] == "< 0", sim
    trr.plot_heatmap(res, outputs / "transfer_heatmap.png")
    (outputs / "transfer_section.md").write_text("\n".join(trr.markdown_section(res, sim)) + "\n")
    assert (outputs / "transfer_heatmap.png").stat().st_size > 1000


def _with_t(runs, t, rng, noise=0.002):
    """The same sweep with pair losses recomputed for transfer t (specialist curves refitted from the
    noiseless truth are unknown here, so use each category's specialists' exact law: refit on them)."""
    fits, _ = tr.fit_specialists(tr._design(runs)[0])
    out = []
    for r in runs:
        if len(r["categories"]) == 2:
            i, j = r["categories"]
            f = lambda a, b: fits[a]["E"] + fits[a]["B"] * (r["tokens"][a] + t[(a, b)] * r["tokens"][b]) ** -fits[a]["a"]
            r = {**r, "loss": {i: f(i, j) + rng.normal(0, noise), j: f(j, i) + rng.normal(0, noise)}}
        out.append(r)
    return out


def test_markdown_table_shape(sweeps):
    _, _, res = sweeps[0]
    lines = trr.markdown_table(res)
    assert len(lines) == 2 + 4 and all(l.count("|") == 6 for l in lines)
    assert lines[2].count("—") == 1 and all(math.isfinite(v) for v in res["t"].values())


def analyse_sweep(root, *extra, n_boot=30):
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
    out, fits, report = analyse_sweep(tmp_path, "--hilberg", "--cache_dir", str(cache))

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
    assert hilberg.read_hilberg_cache(s, cache)["key"]["store_id"] == s.store_id
    other = type("S", (), {"store_id": "f" * 64})()
    assert hilberg.read_hilberg_cache(other, cache) is None
    assert "## IsoFLOP slices" in report and "need >= 3 model sizes" in report


def test_shared_noise_moves_a_seeds_curve_and_a_pair_runs_categories_together():
    """The bootstrap draws the noise a specialist's seed carries across its budgets as one draw per seed
    (it moves the whole curve: with every bit of it shared, a replicate curve is the fitted one scaled, the
    exponent unchanged) and a pair run's run-level noise as one draw for both categories (it cancels from
    t_ij - t_ji). Drawn independently, as before, t_ij's intervals were too narrow and t_ij - t_ji's too
    wide under the real-text pilot's noise (43% shared across budgets, 57% run level; BENCHMARKS.md)."""
    runs, _ = sy.transfer_sweep(np.random.default_rng(3), cats=CATS4[:2])
    spec, pairs = tr._design(runs)
    fits, _ = tr.fit_specialists(spec)
    keys = sorted(tr.point_estimates(fits, {}, pairs)[0])
    _, curves, losses = tr.bootstrap(fits, pairs, keys, 20, 0, 0.01, shared=(1.0, 1.0))
    for c, f in fits.items():
        assert all(abs(g["a"] - f["a"]) < 1e-3 * f["a"] for g in curves[c]), c
    (i, j), = {tuple(sorted(k)) for k in keys}
    L = {k: tr._pair_means(pairs[(i, j)], *k)[0] for k in ((i, j), (j, i))}
    assert np.allclose(losses[(i, j)] / L[(i, j)], losses[(j, i)] / L[(j, i)])
    # the run-level draw cancels from t_ij - t_ji: its interval narrows as that share grows
    width = lambda ci: ci[1] - ci[0]
    diff = [tr.transfer_matrix(runs, n_boot=100, seed=0, noise_log_sd=0.01, shared=(0.6, r))["asymmetry"]["pairs"][0]["ci"]
            for r in (0.0, 0.9)]
    assert width(diff[1]) < width(diff[0]), diff


def test_a_precise_measurement_gets_a_narrow_interval_not_none():
    """A sweep whose noise is small (SD of log loss 1e-4: a large model's late budgets, replicates agreeing to
    the fourth digit) makes t_ij's interval narrower than the inversion grid's spacing (~2% of D_eff - D_i:
    0.01 in t). The grid then kept one point or none: a zero-width interval, or the estimate outside its own
    interval, which the guard refused ('no interval') although the percentile interval of the same
    replicates was a proper +-0.004. Every estimate gets an interval of positive width holding it, and the
    intervals hold the truth (the fabricated noise, 1e-4 in loss ~3e-5 in log, is within the floor passed)."""
    covered, n = 0, 0
    for seed in range(2):
        runs, truth = sy.transfer_sweep(np.random.default_rng(seed), cats=CATS4, noise=1e-4)
        res = tr.transfer_matrix(runs, n_boot=100, seed=seed, noise_log_sd=1e-4, noise_df=30)
        for k, v in res["t"].items():
            lo, hi = res["ci"][k]
            assert lo is not None and lo < v < hi and hi - lo < 0.05, (k, v, lo, hi)
            covered += lo <= truth["t"][k] <= hi
            n += 1
    assert covered / n >= 0.9, covered / n


def test_shares_not_measured_are_said_to_be_assumed(tmp_path):
    """A sweep without replicate runs measures neither share of the noise: the bootstrap takes both as 0
    (independent noise), and the report must say they were assumed, not print "0.00" as if measured. A sweep
    whose replicate groups all hold one category measures the across-budget share only: the run-level one is
    then named as assumed."""
    runs, _ = sy.transfer_sweep(np.random.default_rng(2), cats=CATS4[:3])
    sy.write_run_dirs(tmp_path / "a", runs)
    rows = run_rows(collect_runs(tmp_path / "a"))
    shared, why = tr.noise_shares(rows)
    assert shared == (0.0, 0.0) and "no replicate groups" in why
    res = tr.transfer_matrices(rows, None, "no store", 30, 0, noise_log_sd=0.01)["models"]["pythia-31m"]
    text = "\n".join(trr.markdown_section(res))
    assert "not measured" in text and "no replicate groups" in text, text[:800]
    # a second seed of every specialist: K = 1 replicate groups, no group with two categories
    again, _ = sy.transfer_sweep(np.random.default_rng(2), cats=CATS4[:3], seeds=2)
    sy.write_run_dirs(tmp_path / "b", again)
    rows = run_rows(collect_runs(tmp_path / "b"))
    (budgets, run_level), why = tr.noise_shares(rows)
    assert run_level == 0.0 and "run-level share not measured" in why, why
    res = tr.transfer_matrices(rows, None, "no store", 30, 0, noise_log_sd=0.01)["models"]["pythia-31m"]
    assert "run-level share not measured" in "\n".join(trr.markdown_section(res))
