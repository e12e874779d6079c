"""Tagged runs: the category token precedes each window as context only; it is never a target, and tagged
and untagged evaluations predict exactly the same tokens."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import evaluate
import model as mdl
import store as st
import train
from conftest import TINY_CONFIG, make_synthetic_store


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path, _ = make_synthetic_store(tmp_path_factory.mktemp("t") / "s", lengths=[2, 57, 101, 150, 333], seed=9)
    s = st.Store(path)
    cfg, *_ = mdl.model_config(str(TINY_CONFIG), s.vocab_size)
    return s, mdl.build_model(cfg, init_seed=1)


def test_tag_is_context_never_target(setup):
    s, model = setup
    x = torch.from_numpy(np.stack([np.asarray(s.tokens[o:o + 101], dtype=np.int64)
                                   for o in s.offset[s.length >= 101][:4]]))
    tags = torch.tensor([s.vocab_size + i for i in range(4)]) % 64
    model.eval()
    with torch.no_grad():
        got = mdl.lm_loss(model, x, 1 << 20, torch.float32, tags)
        # reference: HF's own logits on [tag, x_0..x_99]; the tag position's output is dropped, so the
        # targets are exactly x_1..x_100 (100 per window), the same as untagged
        inp = torch.cat([tags[:, None], x[:, :-1]], 1)
        logits = model(input_ids=inp).logits[:, 1:]
        ref = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        assert got.item() == pytest.approx(ref.item(), rel=1e-6)
        untagged = mdl.lm_loss(model, x, 1 << 20, torch.float32)
        other = mdl.lm_loss(model, x, 1 << 20, torch.float32, (tags + 1) % 64)
    assert got.item() != untagged.item() and got.item() != other.item()  # the tag is real context


def test_tagged_and_untagged_evaluations_predict_the_same_tokens(setup):
    s, model = setup
    plain = evaluate.evaluate_model(model, s, "test", progress=False)
    tagged = evaluate.evaluate_model(model, s, "test", progress=False, tag_base=s.vocab_size)
    assert tagged["tag_categories"] is True and plain["tag_categories"] is False
    for c in s.categories:
        a, b = plain["per_category"][c], tagged["per_category"][c]
        assert a["n_tokens"] == b["n_tokens"] and a["n_papers"] == b["n_papers"]
        assert [v is None for v in a["loss_by_position"]] == [v is None for v in b["loss_by_position"]]
        assert a["loss"] != b["loss"]


def test_train_tagged_records_and_evaluate_follows(synthetic_store, tmp_path):
    run = train.main(["--data_dir", str(synthetic_store), "--categories", "math.AC", "cs.CV",
                      "--model_config", str(TINY_CONFIG), "--batch_size", "8", "--token_budget", "8000",
                      "--eval_windows", "8", "--output_dir", str(tmp_path), "--run_name", "tagged", "--tag_categories"])
    cfg = json.loads((run / "run_config.json").read_text())
    assert cfg["tag_categories"] is True and cfg["tag_token_base"] == st.Store(synthetic_store).vocab_size
    assert json.loads((run / "test_results.json").read_text())["tag_categories"] is True
    res = evaluate.main(["--model_dir", str(run / "final"), "--data_dir", str(synthetic_store)])
    assert res["tag_categories"] is True and res["tag_token_base"] == cfg["tag_token_base"]
    assert res["per_category"]["math.AC"]["loss"] == pytest.approx(
        json.loads((run / "test_results.json").read_text())["per_category"]["math.AC"]["loss"], rel=1e-6)


def test_tags_must_fit_the_vocabulary(synthetic_store, tmp_path, capsys):
    cfg = tmp_path / "v50.json"
    cfg.write_text(json.dumps({"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}))
    with pytest.raises(SystemExit) as e:
        train.main(["--data_dir", str(synthetic_store), "--categories", "math.AC", "--model_config", str(cfg),
                    "--batch_size", "4", "--token_budget", "2000", "--output_dir", str(tmp_path), "--tag_categories"])
    assert e.value.code == 2 and "do not fit the model's vocab_size 50" in capsys.readouterr().err
