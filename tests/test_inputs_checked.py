"""Inputs checked, outputs never mixed up: evaluate.py refuses a model trained on another store (unless
--allow_other_store) and names each different computation's output file differently; analyze.py refuses a
selector that matches no run without writing anything, and keys model configs by content."""
import json

import numpy as np
import pytest

import analyze
import evaluate
import simulate
import model as mdl
import store as st
from analysis.runs import collect_runs, run_rows
from conftest import TINY_CONFIG, make_synthetic_store, one_line_error


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    a, _ = make_synthetic_store(root / "a", papers_per_split=(2, 2, 2), length=(120, 260), seed=1)
    b, _ = make_synthetic_store(root / "b", papers_per_split=(2, 2, 2), length=(120, 260), seed=2)
    return a, b


def _model_dir(path, store, **cfg):
    s = st.Store(store)
    c, *_ = mdl.model_config(str(TINY_CONFIG), s.vocab_size)
    mdl.build_model(c, init_seed=0).save_pretrained(path / "final")
    (path / "run_config.json").write_text(json.dumps({"categories": s.categories[:1], "store_id": s.store_id, **cfg}))
    return path / "final"


def test_evaluate_refuses_a_model_of_another_store(two_stores, tmp_path, capsys):
    a, b = two_stores
    model_dir = _model_dir(tmp_path / "run", a)
    msg = one_line_error(evaluate.main, ["--model_dir", str(model_dir), "--data_dir", str(b)], capsys)
    ida, idb = st.Store(a).store_id, st.Store(b).store_id
    assert ida in msg and idb in msg and "--allow_other_store" in msg
    assert not list(model_dir.glob("eval_*.json"))  # nothing written
    res = evaluate.main(["--model_dir", str(model_dir), "--data_dir", str(b), "--allow_other_store"])
    assert res["store_id"] == idb and res["arguments"]["allow_other_store"] is True
    evaluate.main(["--model_dir", str(model_dir), "--data_dir", str(a)])  # its own store: as before


def test_each_computation_has_its_own_default_output(two_stores, tmp_path):
    """The plain evaluation, two different exclusion lists, a subset and bf16: five files, none overwritten."""
    a, _ = two_stores
    s = st.Store(a)
    model_dir = _model_dir(tmp_path / "run", a)
    test = [int(i) for i in s.papers("test")]
    (tmp_path / "x1.json").write_text(json.dumps(test[:1]))
    (tmp_path / "x2.json").write_text(json.dumps(test[1:2]))
    (tmp_path / "x1b.json").write_text(json.dumps({"overall": {"near_duplicate_test_papers": test[:1]}}))
    base = ["--model_dir", str(model_dir), "--data_dir", str(a)]
    runs = [[], ["--exclude_papers", str(tmp_path / "x1.json")], ["--exclude_papers", str(tmp_path / "x2.json")],
            ["--categories", s.categories[0]], ["--max_papers_per_category", "1"], ["--dtype", "bfloat16"]]
    results = {}
    for extra in runs:
        before = {p.name: p.read_bytes() for p in model_dir.glob("eval_*.json")}
        res = evaluate.main(base + extra)
        after = {p.name: p.read_bytes() for p in model_dir.glob("eval_*.json")}
        new = set(after) - set(before)
        assert len(new) == 1 and all(after[k] == v for k, v in before.items()), extra  # nothing overwritten
        (name,) = new
        assert json.loads(after[name])["overall"] == res["overall"]
        results[name] = extra
    assert "eval_test.json" in results
    assert any("_excl-" in n for n in results) and any("_bfloat16" in n for n in results)
    # the same exclusion list in baselines.py's form: the same computation, the same file
    n = len(list(model_dir.glob("eval_*.json")))
    evaluate.main(base + ["--exclude_papers", str(tmp_path / "x1b.json")])
    assert len(list(model_dir.glob("eval_*.json"))) == n


def _sweep(root, model_names=("pythia-31m",), sha=None):
    rng = np.random.default_rng(0)
    for m in model_names:
        for K in (1, 3):
            for D in (10e6, 30e6):
                rid = simulate.rid_of(m, K, 0, D)
                simulate.make_run(root, rid, simulate.select(K, 0), D, 0, rng, sampling="balanced")
    return root


def test_a_selector_matching_no_run_writes_nothing(tmp_path, capsys):
    """Runs of sampling balanced, store aaaa..., dtype bfloat16; an earlier analysis's files stand in for a
    real one (a full analysis takes minutes here)."""
    root = _sweep(tmp_path / "sw")
    out = root / "analysis"
    out.mkdir()
    for name in ("report.md", "fits.json", "runs.csv"):
        (out / name).write_text(f"the earlier analysis's {name}")
    listing = lambda: {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    before = listing()
    for flags in (["--sampling", "paper"], ["--store_id", "ffff"], ["--eval_dtype", "float32"],
                  ["--sampling", "paper", "--per_group"], ["--sampling", "bal", "--store_id", "b"]):
        msg = one_line_error(analyze.main, [str(root), "--n_boot", "0", "--no_baselines", *flags], capsys)
        assert flags[0] in msg and "no run matches" in msg and "nothing written" in msg, msg
        assert listing() == before  # nothing written, nothing overwritten



def test_model_configs_keyed_by_content_not_file_stem(tmp_path):
    """Two configs both named tiny (cfgA/tiny.json, cfgB/tiny.json: other contents) are two models, in every
    row and in the fits' data; one config of a name keeps the plain name."""
    root = tmp_path / "sw"
    rng = np.random.default_rng(0)
    for which in ("A", "B"):
        for K in (1, 3):
            for D in (10e6, 30e6):
                rd = simulate.make_run(root, simulate.rid_of("tiny", K, 0, D) + which, simulate.select(K, 0), D, 0,
                                        rng, model="tiny")
                cfg = json.loads((rd / "run_config.json").read_text())
                cfg["identity"]["model_config_sha256"] = which.lower() * 64
                (rd / "run_config.json").write_text(json.dumps(cfg))
    runs = collect_runs(root)
    assert not [r for r in runs if r["excluded"]]  # not duplicates of each other
    rows = run_rows(runs)
    assert {r["model"] for r in rows} == {"tiny-aaaaaaaa", "tiny-bbbbbbbb"}
    by_run = {r["run_id"]: r["model"] for r in rows}
    assert all(m.endswith(rid[-1].lower() * 8) for rid, m in by_run.items())
    single = tmp_path / "one"
    simulate.make_run(single, "x", simulate.select(1, 0), 10e6, 0, rng, model="tiny")
    assert {r["model"] for r in run_rows(collect_runs(single))} == {"tiny"}


def test_a_selected_analysis_has_a_directory_of_its_own(tmp_path, monkeypatch):
    """The whole sweep's analysis lives in analysis/; a subset (--sampling, --store_id, --eval_dtype) is
    another computation and goes to analysis/<group>/, where --per_group puts that group's (analyse itself
    is stubbed: fits take minutes)."""
    root = _sweep(tmp_path / "sw")
    seen = []
    monkeypatch.setattr(analyze, "analyse", lambda runs, out, args: seen.append(out) or out)
    analyze.main([str(root), "--n_boot", "0", "--no_baselines"])
    analyze.main([str(root), "--n_boot", "0", "--no_baselines", "--sampling", "balanced"])
    analyze.main([str(root), "--n_boot", "0", "--no_baselines", "--store_id", "aaaa", "--eval_dtype", "bfloat16"])
    group = root / "analysis" / f"{'a' * 12}_balanced_bfloat16"
    analyze.main([str(root), "--n_boot", "0", "--no_baselines", "--per_group"])
    assert seen == [root / "analysis", group, group, group]
