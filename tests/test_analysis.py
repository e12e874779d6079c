"""analyze.py against known truths, on fabricated sweeps in the run-directory format (simulate.py):
a P1-shaped sweep from the dilution law, a sweep with no K effect, a sweep from a law no form describes,
a P3-shaped sweep with tagged twins and sampling arms, mixed stores, and a sweep full of broken runs."""
import json
import math
import shutil

import pytest

import analyze
import simulate
from analysis.hypotheses import boot_mean_ci, holm
from conftest import one_line_error

SMALL = dict(Ks=(1, 3), k11_seeds=(0, 1, 2), budgets=(10e6, 30e6, 90e6, 270e6))


def analyse(root, *extra, n_boot=60):
    out = analyze.main([str(root), "--n_boot", str(n_boot), "--no_baselines", "--jobs", "2", *extra])
    return json.loads((out / "fits.json").read_text()), (out / "report.md").read_text()


@pytest.fixture
def p1(p1_analysis):
    """(fits.json, report.md) of the shared analysed P1 sweep (conftest.py)."""
    return p1_analysis[1:]


@pytest.mark.slow  # the analysed P1 sweep (shared fixture)
def test_p1_shaped_sweep_recovers_the_law(p1):
    result, report = p1
    assert result["runs"]["total"] == result["runs"]["used"] == 295
    fit = result["fits"][0]
    assert (fit["form"], fit["subset"]) == ("dilution", "all")
    truth = {"s": simulate.TRUTH["s"], "beta": simulate.TRUTH["beta"], "B": simulate.TRUTH["B"],
             **{f"E[{c}]": e for c, e in simulate.TRUTH["E"].items()}}
    for name, value in truth.items():
        # one draw of 14 intervals at once, under the measured clustered noise (simulate.py's default; the s
        # estimates of noise seeds 0-3 spread by ~0.04): each truth within its interval widened by a quarter
        # of its width (the intervals' coverage over many draws: BENCHMARKS.md, calibration)
        p = fit["params"][name]
        lo, hi = p["ci95"]
        w = 0.25 * (hi - lo)
        assert lo - w <= value <= hi + w, (name, lo, value, hi)
        if name.startswith("E["):
            assert p["estimate"] == pytest.approx(value, rel=0.015)
    assert fit["params"]["s"]["estimate"] == pytest.approx(0.5, abs=0.1)
    assert fit["params"]["beta"]["estimate"] == pytest.approx(0.3, abs=0.04)
    assert fit["bootstrap"]["used"] == 100 and not fit["at_bound"]
    assert result["diagnostics"]["dilution"]["verdict"] == "fits"
    assert result["verdicts"]["H3 dilution law"]["verdict"] == "supported"
    assert "The data show a K effect" in report
    # model comparison: the free-s form predicts held-out seeds better than both fixed forms
    pairs = {(p["a"], p["b"]): p["better"] for p in result["comparison"]["pairs"]}
    assert pairs[("dilution", "disjoint")] == "dilution" and pairs[("dilution", "shared")] == "dilution"


@pytest.mark.slow  # the analysed P1 sweep (shared fixture)
def test_p1_competing_mixing_laws_never_decide_against_the_dilution_truth(p1):
    """issue 17: the six-form comparison (analysis/mixing.py) is in fits.json and the report; on the dilution
    truth it names dilution or says undecided, never another form decided over it."""
    result, report = p1
    m = result["mixing_laws"]
    assert "## Competing mixing laws" in report and m["verdict"] in report
    assert set(m["rmse"]) == {"dilution", "disjoint", "shared", "exponential", "multiplicative", "effective_data"}
    assert m["best"] in ("dilution", None) and (m["best"] or "dilution" in m["undecided_among"])
    assert all(p["better"] in ("dilution", "undecided") for p in m["pairs"] if "dilution" in (p["a"], p["b"]))
    # analyze's own three-form comparison is the same pairs of the same cross-validation
    three = {(p["a"], p["b"]): p["mse_difference"] for p in result["comparison"]["pairs"]}
    assert all(p["mse_difference"] == three[(p["a"], p["b"])] for p in m["pairs"] if (p["a"], p["b"]) in three)


@pytest.mark.slow  # the analysed P1 sweep (shared fixture)
def test_p1_mixing_gain_pairs_on_the_planned_budget(p1):
    """Budgets are rounded up to whole 320-window steps (90M -> 90,016,000): pairing uses the planned ones."""
    result, report = p1
    h4 = result["h4"]
    cells = {(t["K"], t["d"]): t for t in h4["table"]}
    assert set(cells) == {(3, 10e6), (3, 30e6), (3, 90e6), (3, 270e6)}  # D/3 on the grid only for K = 3
    inside = 0
    for (K, d), t in cells.items():
        truth = simulate.TRUTH["B"] * d ** -0.3 * (1 - K ** (-(1 - 0.5) * 0.3))
        assert t["G"] > 0 and t["ci95"][0] > 0 and t["predicted"] == pytest.approx(truth, rel=0.35)
        inside += t["ci95"][0] <= t["predicted"] <= t["ci95"][1]
    assert inside >= 3  # 95% intervals: the law's prediction in (nearly) every cell
    # K = 2, 5 and 11 runs have no specialist at D/K: named, not silently dropped
    assert any(m["run_id"].startswith("pythia-31m_K2_") for m in h4["missing"])
    assert result["verdicts"]["H4 mixing gain"]["verdict"] == "supported"
    assert "pairs made" in report and "Mixed runs without a specialist at D/K" in report


@pytest.mark.slow  # a bootstrapped analysis
def test_no_k_effect_is_reported_as_none(tmp_path):
    simulate.p1_sweep(tmp_path, law="null", **SMALL)
    result, report = analyse(tmp_path, "--verdicts_only")  # what is read here is what a verdict reads
    s = result["fits"][0]["params"]["s"]
    assert s["ci95"][0] <= 0.01  # the interval reaches 0
    assert result["verdicts"]["H3 dilution law"]["verdict"] in ("undecided", "not supported")
    assert "The data do not show a K effect" in report and "is not a finding" in report
    assert report.index("The data do not show a K effect") < report.index("## Fitted laws")


@pytest.mark.slow  # a bootstrapped analysis
def test_a_law_no_form_describes_is_flagged(tmp_path):
    """Loss additive in ln K: every form is wrong; the residuals against the noise floor say so."""
    simulate.p1_sweep(tmp_path, law="lnK", **SMALL)
    result, report = analyse(tmp_path, "--verdicts_only")
    diag = result["diagnostics"]["dilution"]
    assert diag["verdict"] == "misfit", diag["reason"]
    assert result["verdicts"]["H3 dilution law"]["verdict"] == "undecided"
    assert "does not fit" in result["verdicts"]["H3 dilution law"]["why"]
    assert report.index("**misfit**") < report.index("### dilution (all)")


@pytest.mark.slow  # three analyses of a P3 sweep
def test_p3_twins_are_of_the_same_sampling_arm(tmp_path, capsys):
    simulate.p3_sweep(tmp_path, tag_gain=0.005)
    msg = one_line_error(analyze.main, [str(tmp_path), "--n_boot", "0", "--no_baselines"], capsys)
    assert "mix sampling" in msg and "--sampling" in msg and "--per_group" in msg
    # --verdicts_only (here and below): H6's pairs and the exclusions are what a verdict reads; the full
    # analysis's figures and mixing laws are the smoke test's and the P1 analysis's (p1_analysis)
    result, report = analyse(tmp_path, "--sampling", "balanced", "--verdicts_only")
    pairs = result["h6_pairs"]
    assert len(pairs) == 12 and all(p["sampling"] == "balanced" for p in pairs)
    for p in pairs:  # the untagged twin: same run but for the tag (a paper or token arm would be ~0.3 worse)
        assert p["untagged"] == p["tagged"].replace("_tag", "")
        assert abs(p["gap"] - 0.005) < 0.06
    excluded = {e["run_id"]: e["reason"] for e in result["runs"]["excluded"]}
    assert len(excluded) == 24 and all("sampling=" in r for r in excluded.values())
    # --per_group: each arm analysed on its own
    out = analyze.main([str(tmp_path), "--n_boot", "0", "--no_baselines", "--per_group", "--verdicts_only"])
    groups = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(groups) == 3 and {g.split("_")[1] for g in groups} == {"balanced", "paper", "token"}
    for g in groups:
        assert (out / g / "report.md").is_file()


@pytest.mark.slow  # a full analysis (cross-validation, mixing laws, plots)
def test_two_stores_are_refused_or_selected(tmp_path, capsys):
    import numpy as np
    rng = np.random.default_rng(0)
    for K, store in ((1, "a" * 64), (3, "b" * 64)):
        for D in (10e6, 30e6):
            simulate.make_run(tmp_path, simulate.rid_of("pythia-31m", K, 0, D), simulate.select(K, 0), D, 0, rng,
                               store_id=store)
    msg = one_line_error(analyze.main, [str(tmp_path), "--n_boot", "0", "--no_baselines"], capsys)
    assert "mix store_id" in msg and "--store_id" in msg
    result, _ = analyse(tmp_path, "--store_id", "bbbb", n_boot=0)
    assert result["runs"]["used"] == 2


@pytest.mark.slow  # two analyses
def test_broken_runs_are_each_named_and_none_silently_dropped(tmp_path):
    simulate.p1_sweep(tmp_path, Ks=(1, 3), k11_seeds=(0,), budgets=(10e6, 30e6, 90e6), replicate_Ks=(),
                       seeds=range(11))
    runs = tmp_path / "runs"
    names = sorted(p.name for p in runs.iterdir())

    def edit(name, fname, fn):
        p = runs / name / fname
        obj = json.loads(p.read_text())
        fn(obj)
        p.write_text(json.dumps(obj))

    broken = {}
    edit(names[0], "summary.json", lambda s: s.update(status="failed", error="non-finite loss at step 7"))
    broken[names[0]] = "failed: non-finite loss at step 7"
    (runs / names[1] / "summary.json").unlink()
    broken[names[1]] = "incomplete: no summary.json"
    edit(names[2], "summary.json", lambda s: s.update(schedule_complete=False, steps=3))
    broken[names[2]] = "incomplete schedule"
    (runs / names[3] / "test_results.json").unlink()
    broken[names[3]] = "complete without test results"
    (runs / names[4] / "run_config.json").write_text("{not json")
    broken[names[4]] = "corrupt run_config.json"
    (runs / names[5] / "summary.json").write_text('{"status": "compl')
    broken[names[5]] = "corrupt summary.json"
    edit(names[6], "test_results.json", lambda t: t["per_category"][next(iter(t["per_category"]))].update(loss=float("nan")))
    broken[names[6]] = "non-finite test loss"
    (runs / names[8] / "test_results.json").write_text("{}")
    broken[names[8]] = "test_results.json has no categories"
    (runs / names[9] / "test_results.json").write_text("[]")
    broken[names[9]] = "test_results.json is not a JSON object"
    # a metrics.jsonl cut mid-line (a kill or a full disk while writing): the run is used, with a note
    (runs / names[10] / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 1, "loss": 9.0}) + "\n"
                                                     + '{"kind": "eval", "step": 2, "val_lo')
    shutil.copytree(runs / names[7], runs / "relaunch_of_a_run")
    broken["relaunch_of_a_run"] = f"duplicate of {names[7]}"
    (runs / "never_started").mkdir()
    broken["never_started"] = "never started"
    for extra, n_boot in (((), 0), (("--verdicts_only",), 30)):  # the full analysis, then the bootstrapped fits
        result, report = analyse(tmp_path, *extra, n_boot=n_boot)
        excluded = {e["run_id"]: e["reason"] for e in result["runs"]["excluded"]}
        assert set(excluded) == set(broken)
        for name, reason in broken.items():
            assert reason in excluded[name], (name, excluded[name])
            assert f"| {name} | {excluded[name]} |" in report
        assert result["runs"]["used"] + len(broken) == result["runs"]["total"] == len(names) + 2
        assert names[10] not in excluded
        note = [l for l in report.splitlines() if l.startswith(f"| {names[10]} |")]
        assert len(note) == 1 and "metrics.jsonl: 1 of 2 lines unreadable (line 2; the last cut mid-line)" in note[0]
        assert "### Notes" in report
    # n_boot 0: no intervals, said as such, no crash
    assert result["fits"][0]["bootstrap"]["requested"] == 30
    rows = (tmp_path / "analysis" / "runs.csv").read_text()
    assert "complete without test results" in rows  # excluded runs keep their rows, marked


@pytest.mark.slow  # a bootstrapped analysis
def test_a_floor_on_the_optimiser_bound_is_flagged(tmp_path):
    truth = dict(simulate.TRUTH, E=dict(simulate.TRUTH["E"], **{"cs.IT": 1e-6}))
    import numpy as np
    rng = np.random.default_rng(1)
    for K in (1, 3):
        for seed in range(11):
            for D in (10e6, 30e6, 90e6):
                simulate.make_run(tmp_path, simulate.rid_of("pythia-31m", K, seed, D), simulate.select(K, seed),
                                   D, seed, rng, truth=truth)
    result, report = analyse(tmp_path, "--verdicts_only", n_boot=20)  # the dilution fit keeps its bootstrap
    fit = result["fits"][0]
    assert fit["at_bound"].get("E[cs.IT]") == "lower"
    assert fit["params"]["E[cs.IT]"]["at_bound"] == "lower"
    assert "| E[cs.IT] |" in report and "at the optimiser's lower bound" in report


def test_holm_and_bootstrap_helpers():
    import numpy as np
    # Holm: p sorted 0.01, 0.02, 0.04 against 0.05/3, 0.05/2, 0.05/1: all three rejected; 0.03 first fails
    assert holm(np.array([0.04, 0.01, 0.02])).tolist() == [True, True, True]
    assert holm(np.array([0.03, 0.01, 0.2])).tolist() == [False, True, False]
    assert boot_mean_ci([1.0], 100, 0) == [None, None]  # one unit: no interval
    lo, hi = boot_mean_ci(list(range(100)), 400, 0)
    assert 40 < lo < 49.5 < hi < 59 and not math.isnan(lo)


def test_corpus_line_for_stores_that_name_no_known_dataset(tmp_path):
    """report.md's 'Corpus:' line reads the store's meta.json: a hub dataset is named by its id; a readable
    store whose meta.json names no dataset (hand-made, or an older or foreign writer) is said to be that, not
    'no readable store', and odd fields (a plain string, a null paper count) do not crash the report."""
    from analysis.report import _data_section
    metas = {"hub": {"dataset": {"name": "someone/other-arxiv", "path": None},
                     "counts": {"train": {"papers": 7}, "test": {"papers": 2}}},
             "nodataset": {"counts": {"train": {"papers": 5}}},
             "plainstring": {"dataset": "someone/old-arxiv", "counts": {"train": {"papers": None}}}}
    lines = {}
    for name, meta in metas.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "meta.json").write_text(json.dumps(meta))
        runs = [{"config": {"data_dir": str(tmp_path / name)}, "excluded": None, "run_id": "r", "test": None}]
        lines[name] = next(x for x in _data_section(runs, [], False) if x.startswith("Corpus:"))
    assert lines["hub"] == "Corpus: someone/other-arxiv (9 papers)."
    assert "no readable store" not in lines["nodataset"] and "names no dataset" in lines["nodataset"], lines
    assert "(5 papers)" in lines["nodataset"]
    assert lines["plainstring"] == "Corpus: someone/old-arxiv (0 papers).", lines
    runs = [{"config": {"data_dir": str(tmp_path / "absent")}, "excluded": None, "run_id": "r", "test": None}]
    assert "Corpus: unknown (no readable store)." in _data_section(runs, [], False)


def test_corpus_note_for_the_sample_and_the_abstracts_stores(tmp_path):
    """The template corpus gets its 'says nothing about arXiv text' note and the shipped abstracts theirs,
    each named on the Corpus line with its paper count; neither note for another corpus."""
    from analysis.report import ABSTRACTS_NOTE, SAMPLE_CORPUS_NOTE, _data_section
    from analysis.runs import is_sample_corpus
    got = {}
    for name, path in (("sample", "/x/data/sample_corpus"), ("abstracts", "/x/data/arxiv_abstracts_subset/"),
                       ("other", "/x/shared/data/arxiv-abstracts")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "meta.json").write_text(json.dumps({"dataset": {"name": None, "path": path}, "counts": {
            s: {"papers": n} for s, n in (("train", 66), ("validation", 22), ("test", 22))}}))
        runs = [{"config": {"data_dir": str(tmp_path / name)}, "excluded": None, "run_id": "r", "test": None}]
        got[name] = "\n".join(_data_section(runs, [], is_sample_corpus(runs)))
    assert SAMPLE_CORPUS_NOTE in got["sample"] and "Corpus: sample_corpus (110 papers)." in got["sample"]
    assert ABSTRACTS_NOTE.format(papers=110) in got["abstracts"] and SAMPLE_CORPUS_NOTE not in got["abstracts"]
    assert "Corpus: arxiv_abstracts_subset (110 papers)." in got["abstracts"]
    assert "What this sweep can and cannot show" not in got["other"] and "Corpus: arxiv-abstracts (110 papers)." in got["other"]
