"""evaluate.py: exact tiling, a model with a known output distribution, agreement with a plain reference
loop, determinism and batch-size invariance, run_config tagging, and bad input."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
import exact_eval
import model as mdl
import store as st
from conftest import one_line_error, TINY_CONFIG, make_synthetic_store

# lengths that are not multiples of 100, shorter than a window, exactly 100/101/102, and 0/1 (not counted)
LENGTHS = [0, 1, 2, 50, 100, 101, 102, 201, 250, 333]


@pytest.fixture(scope="module")
def eval_store(tmp_path_factory):
    path, _ = make_synthetic_store(tmp_path_factory.mktemp("e") / "store", lengths=LENGTHS, seed=5)
    return path


@pytest.fixture(scope="module")
def tiny_model(eval_store):
    cfg, *_ = mdl.model_config(str(TINY_CONFIG), st.Store(eval_store).vocab_size)
    return mdl.build_model(cfg, init_seed=3)


def _save(model, path, categories=None):
    model.save_pretrained(path)
    if categories is not None:
        (Path(path).parent / "run_config.json").write_text(json.dumps({"categories": categories}))
    return path


def test_tiling_counts_every_token_but_the_first(eval_store, tiny_model):
    s = st.Store(eval_store)
    res = evaluate.evaluate_model(tiny_model, s, "test", progress=False)
    for ci, c in enumerate(s.categories):
        ids = s.papers("test", [c])
        assert res["per_category"][c]["n_tokens"] == sum(max(int(s.length[i]) - 1, 0) for i in ids)
        assert res["per_category"][c]["n_papers"] == sum(1 for i in ids if s.length[i] >= 2)
        assert res["per_category"][c]["n_bytes"] == sum(int(s.n_bytes[i]) for i in ids if s.length[i] >= 2)
    # window starts 0, 100, 200... while s < n - 1
    starts, lens, _ = exact_eval.tile(s, s.papers("test"))
    by_len = {}
    for pid in s.papers("test"):
        st_, ln, _ = exact_eval.tile(s, [pid])
        by_len[int(s.length[pid])] = ((st_ - s.offset[pid]).tolist(), ln.tolist())
    assert by_len[1] == ([], []) and by_len[2] == ([0], [2]) and by_len[101] == ([0], [101])
    assert by_len[102] == ([0, 100], [101, 2]) and by_len[201] == ([0, 100], [101, 101])
    assert by_len[250] == ([0, 100, 200], [101, 101, 50])



def test_zero_head_gives_ln_vocab_everywhere(eval_store, tiny_model, tmp_path):
    import copy
    m = copy.deepcopy(tiny_model)
    with torch.no_grad():
        m.get_output_embeddings().weight.zero_()
    V = m.get_output_embeddings().weight.shape[0]
    res = evaluate.evaluate_model(m, st.Store(eval_store), "test", progress=False)
    for r in res["per_category"].values():
        assert r["loss"] == pytest.approx(math.log(V), rel=1e-6)
        assert r["perplexity"] == pytest.approx(V, rel=1e-5)
        assert all(v is None or v == pytest.approx(math.log(V), rel=1e-6) for v in r["loss_by_position"])
        assert r["bits_per_byte"] == pytest.approx(r["n_tokens"] * math.log(V) / math.log(2) / r["n_bytes"])
    assert res["overall"]["micro_loss"] == pytest.approx(math.log(V), rel=1e-6)


def _reference(model, store, split):
    """Straightforward loop: one paper at a time, one window at a time, HF's own logits."""
    sums, counts = {}, {}
    model.eval()
    with torch.no_grad():
        for pid in store.papers(split):
            n, c = int(store.length[pid]), store.categories[store.label[pid]]
            toks = torch.tensor(np.asarray(store.paper_tokens(pid), dtype=np.int64))
            s = 0
            while s < n - 1:
                w = toks[s:min(s + 101, n)]
                logits = model(input_ids=w[None]).logits[0, :-1].double()
                nll = torch.nn.functional.cross_entropy(logits, w[1:], reduction="sum").item()
                sums[c] = sums.get(c, 0.0) + nll
                counts[c] = counts.get(c, 0) + len(w) - 1
                s += 100
    return {c: sums[c] / counts[c] for c in sums}


def test_loss_by_position_matches_a_per_position_reference(eval_store, tiny_model):
    """loss_by_position[j-1] is the mean NLL of the targets with j tokens of context (window position j):
    checked against a plain loop over every paper's windows with HF's own logits."""
    s = st.Store(eval_store)
    sums, counts = np.zeros((len(s.categories), 100)), np.zeros((len(s.categories), 100))
    with torch.no_grad():
        for pid in s.papers("test"):
            n, c = int(s.length[pid]), int(s.label[pid])
            toks = torch.tensor(np.asarray(s.paper_tokens(pid), dtype=np.int64))
            for start in range(0, max(n - 1, 0), 100):
                w = toks[start:min(start + 101, n)]
                nll = torch.nn.functional.cross_entropy(tiny_model(input_ids=w[None]).logits[0, :-1].double(), w[1:],
                                                        reduction="none").numpy()
                sums[c, :len(nll)] += nll
                counts[c, :len(nll)] += 1
    res = evaluate.evaluate_model(tiny_model, s, "test", batch_size=4, progress=False)
    for ci, cat in enumerate(s.categories):
        got = res["per_category"][cat]["loss_by_position"]
        for j in range(100):
            if counts[ci, j] == 0:
                assert got[j] is None
            else:
                assert got[j] == pytest.approx(sums[ci, j] / counts[ci, j], rel=1e-5), (cat, j)
    assert sum(counts[:, 60:].sum(1)) > 0 and any(v is None for r in res["per_category"].values()
                                                  for v in r["loss_by_position"]) is not None


def test_agrees_with_reference_loop(eval_store, tiny_model):
    s = st.Store(eval_store)
    ref = _reference(tiny_model, s, "test")
    res = evaluate.evaluate_model(tiny_model, s, "test", batch_size=3, progress=False)
    for c, v in ref.items():
        assert res["per_category"][c]["loss"] == pytest.approx(v, rel=1e-5)


def test_deterministic_and_batch_size_invariant(eval_store, tiny_model, tmp_path):
    s = st.Store(eval_store)
    a = evaluate.evaluate_model(tiny_model, s, "test", batch_size=4, progress=False)
    b = evaluate.evaluate_model(tiny_model, s, "test", batch_size=4, progress=False)
    c = evaluate.evaluate_model(tiny_model, s, "test", batch_size=64, progress=False)
    assert a["per_category"] == b["per_category"] and a["overall"] == b["overall"]
    for cat in a["per_category"]:
        assert c["per_category"][cat]["loss"] == pytest.approx(a["per_category"][cat]["loss"], rel=1e-6)


def test_cli_writes_json_with_in_training_tags(eval_store, tiny_model, tmp_path, capsys):
    model_dir = _save(tiny_model, tmp_path / "run" / "final", categories=["math.AC"])
    res = evaluate.main(["--model_dir", str(model_dir), "--data_dir", str(eval_store), "--batch_size", "5"])
    out = json.loads((model_dir / "eval_test.json").read_text())
    assert out["overall"] == res["overall"]
    assert out["per_category"]["math.AC"]["in_training"] is True
    assert out["per_category"]["cs.CV"]["in_training"] is False
    o = out["overall"]
    assert o["in_training_macro_loss"] == pytest.approx(out["per_category"]["math.AC"]["loss"])
    assert o["held_out_macro_loss"] == pytest.approx(np.mean([out["per_category"][c]["loss"] for c in ("cs.CV", "cs.AI")]))
    assert o["macro_loss"] == pytest.approx(np.mean([r["loss"] for r in out["per_category"].values()]))
    assert o["micro_perplexity"] == pytest.approx(math.exp(o["micro_loss"]))
    assert out["store_id"] == st.Store(eval_store).store_id and out["split"] == "test" and out["dtype"] == "float32"
    assert out["model"]["weights_sha256"] == st.sha256_file(model_dir / "model.safetensors")
    printed = capsys.readouterr().out
    assert "math.AC" in printed and "held-out macro" in printed
    # --max_papers_per_category: the first M papers in index order
    r2 = evaluate.main(["--model_dir", str(model_dir), "--data_dir", str(eval_store), "--categories", "cs.CV",
                        "--max_papers_per_category", "1", "--output", str(tmp_path / "one.json")])
    assert list(r2["per_category"]) == ["cs.CV"] and r2["per_category"]["cs.CV"]["n_papers"] == 1


def test_exclude_papers(eval_store, tiny_model, tmp_path):
    s = st.Store(eval_store)
    model_dir = _save(tiny_model, tmp_path / "ex")
    drop = [int(i) for i in s.papers("test", ["cs.CV"]) if s.length[i] >= 2][:1]
    (tmp_path / "drop.json").write_text(json.dumps(drop))
    full = evaluate.main(["--model_dir", str(model_dir), "--data_dir", str(eval_store), "--output", str(tmp_path / "a.json")])
    part = evaluate.main(["--model_dir", str(model_dir), "--data_dir", str(eval_store), "--output", str(tmp_path / "b.json"),
                          "--exclude_papers", str(tmp_path / "drop.json")])
    assert part["excluded_papers"] == drop
    assert part["per_category"]["cs.CV"]["n_papers"] == full["per_category"]["cs.CV"]["n_papers"] - 1
    assert part["per_category"]["cs.CV"]["n_tokens"] == full["per_category"]["cs.CV"]["n_tokens"] - int(s.length[drop[0]]) + 1
    assert part["per_category"]["math.AC"] == full["per_category"]["math.AC"]
    (tmp_path / "base.json").write_text(json.dumps({"overall": {"near_duplicate_test_papers": drop}}))
    again = evaluate.main(["--model_dir", str(model_dir), "--data_dir", str(eval_store), "--output", str(tmp_path / "c.json"),
                           "--exclude_papers", str(tmp_path / "base.json")])
    assert again["per_category"] == part["per_category"]


def test_no_run_config_gives_null_tags(eval_store, tiny_model, tmp_path):
    model_dir = _save(tiny_model, tmp_path / "bare")
    res = evaluate.main(["--model_dir", str(model_dir), "--data_dir", str(eval_store)])
    assert all(r["in_training"] is None for r in res["per_category"].values())
    assert res["overall"]["in_training_macro_loss"] is None and res["overall"]["held_out_macro_loss"] is None


def test_corrupt_run_config_is_an_error_not_an_absence(eval_store, tiny_model, tmp_path, capsys):
    """A run_config.json that cannot be read must not turn a tagged model into an untagged evaluation."""
    model_dir = _save(tiny_model, tmp_path / "run" / "final")
    (tmp_path / "run" / "run_config.json").write_text('{"tag_categories": tr')
    msg = _fails(["--model_dir", str(model_dir), "--data_dir", str(eval_store)], capsys)
    assert "run_config.json" in msg and "unreadable" in msg
    assert not (model_dir / "eval_test.json").exists()


def _fails(argv, capsys):
    return one_line_error(evaluate.main, argv, capsys)


def test_bad_input(eval_store, sample_store, tiny_model, tmp_path, capsys):
    model_dir = _save(tiny_model, tmp_path / "m")
    assert "no config.json" in _fails(["--model_dir", str(tmp_path / "none"), "--data_dir", str(eval_store)], capsys)
    assert "no such store directory" in _fails(["--model_dir", str(model_dir), "--data_dir", str(tmp_path / "x")], capsys)
    assert "larger than the model's" in _fails(["--model_dir", str(model_dir), "--data_dir", str(sample_store)], capsys)
    assert "unknown category 'cs.XX'" in _fails(["--model_dir", str(model_dir), "--data_dir", str(eval_store),
                                                 "--categories", "cs.XX"], capsys)
    empty, _ = make_synthetic_store(tmp_path / "empty", lengths=[1, 0, 1], papers_per_split=(1, 1, 1))
    assert "no paper of >= 2 tokens" in _fails(["--model_dir", str(model_dir), "--data_dir", str(empty)], capsys)
