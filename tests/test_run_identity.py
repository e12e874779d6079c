"""Run identity: resume refuses another run's directory or checkpoint naming each differing flag;
run_config.json is written once; default run names are unique per run-defining configuration."""
import argparse
import json
import types

import pytest
import torch

import store as st
import sweep
import train
from random_window_dataset import select_categories
from conftest import ROOT, TINY_CONFIG, make_synthetic_store, one_line_error

CATS = ["math.AC", "cs.CV"]


def _args(store, out, *extra):
    return ["--data_dir", str(store), "--categories", *CATS, "--model_config", str(TINY_CONFIG),
            "--output_dir", str(out), "--run_name", "r", "--eval_windows", "4", "--batch_size", "4",
            "--token_budget", "2400", "--checkpoint_interval_steps", "3", "--skip_test_eval", "--sampling", "paper",
            *extra]


@pytest.fixture(scope="module")
def finished(synthetic_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("identity")
    run = train.main(_args(synthetic_store, out))
    return out, run


CHANGES = [  # (flag(s) changed, text the refusal must name)
    (["--sampling", "token"], "--sampling"),
    (["--data_seed", "5"], "--data_seed"),
    (["--init_seed", "5"], "--init_seed"),
    (["--learning_rate", "0.002"], "--learning_rate"),
    (["--min_lr_ratio", "0.2"], "--min_lr_ratio"),
    (["--warmup_ratio", "0.5"], "--warmup_ratio"),
    (["--adam_beta1", "0.8"], "--adam_beta1"),
    (["--adam_beta2", "0.99"], "--adam_beta2"),
    (["--adam_epsilon", "1e-6"], "--adam_epsilon"),
    (["--weight_decay", "0.0"], "--weight_decay"),
    (["--max_grad_norm", "0.5"], "--max_grad_norm"),
    (["--token_budget", "4800"], "--token_budget"),
    (["--batch_size", "2"], "--batch_size"),
    (["--tag_categories"], "--tag_categories"),
    (["--dtype", "bfloat16"], "--dtype"),
]


@pytest.mark.parametrize("change,flag", CHANGES, ids=[c[1] for c in CHANGES])
def test_resume_with_a_changed_flag_is_refused_naming_it(finished, synthetic_store, capsys, change, flag):
    out, run = finished
    before = (run / "run_config.json").read_text()
    argv = _args(synthetic_store, out, "--resume") + change  # the later value of a repeated flag wins
    msg = one_line_error(train.main, argv, capsys)
    assert "--resume" in msg and "is another run" in msg and flag in msg, msg
    assert (run / "run_config.json").read_text() == before


def test_other_categories_model_and_store_are_refused(finished, synthetic_store, tmp_path, capsys):
    out, run = finished
    base = _args(synthetic_store, out, "--resume")
    argv = base[:base.index("--categories") + 1] + ["math.AC", "cs.AI"] + base[base.index("--categories") + 3:]
    msg = one_line_error(train.main, argv, capsys)
    assert "--categories / --K / --seed" in msg and "'cs.AI'" in msg
    cfg = json.loads(TINY_CONFIG.read_text())
    cfg["intermediate_size"] = 32
    other_cfg = tmp_path / "tiny.json"  # same file name, so the same model name: only the fields differ
    other_cfg.write_text(json.dumps(cfg))
    msg = one_line_error(train.main, base + ["--model_config", str(other_cfg)], capsys)
    assert "--model_config (its fields)" in msg
    other_store, _ = make_synthetic_store(tmp_path / "other_store", seed=7)
    msg = one_line_error(train.main, _args(other_store, out, "--resume"), capsys)
    assert "--data_dir (store_id)" in msg


def test_same_flags_resume_is_complete_and_config_written_once(finished, synthetic_store, capsys):
    out, run = finished
    before = (run / "run_config.json").read_text()
    assert train.main(_args(synthetic_store, out, "--resume")) == run
    assert "already complete" in capsys.readouterr().out
    assert (run / "run_config.json").read_text() == before
    # flags that do not change what is computed may differ (evaluation and logging cadence, wandb)
    assert train.main(_args(synthetic_store, out, "--resume", "--log_interval_steps", "7")) == run


def test_checkpoint_of_another_run_is_refused(finished, synthetic_store, tmp_path, capsys):
    out, _ = finished
    other = train.main(_args(synthetic_store, tmp_path, "--learning_rate", "0.005", "--token_budget", "4800"))
    ckpt = sorted(other.glob("step_*"))[-1]
    argv = _args(synthetic_store, tmp_path / "new", "--resume", str(ckpt))
    msg = one_line_error(train.main, argv, capsys)
    assert str(ckpt) in msg and "another run" in msg and "--learning_rate" in msg


def _plan_for(argv, world=1):
    """train.py's plan (name, identity) for a command line, with the store reduced to what naming reads."""
    args = train.parse_args(argv)
    store = types.SimpleNamespace(vocab_size=50277, tag_token_base=50277, categories=st.CATEGORIES,
                                  store_id="f" * 64)
    cats = args.categories or select_categories(args.K, args.seed)
    dist = types.SimpleNamespace(world=world, device=torch.device("cpu"), dtype=torch.float32)
    return train.plan_run(args, dist, store, cats, [0] * 10 ** 6)


def test_default_run_names_are_unique_per_configuration():
    """200 distinct configurations from the programme's plans (and variations of their fixed values that
    the plans keep out of their run ids) give 200 distinct default run names."""
    configs = []
    for plan_file in ("p1_core_31m.yaml", "p3_controls.yaml", "p0_lr_sweep.yaml"):
        plan = sweep.load_plan(ROOT / "plans" / plan_file)
        for _, params in sweep.expand(plan):
            configs.append(sweep.train_flags({k: v for k, v in params.items()
                                              if k not in ("compile", "wandb_project", "wandb_mode")}))
    # the budgets the old names collapsed (tok3e7), and values a plan holds fixed
    base = ["--model_config", "pythia-31m", "--K", "3", "--seed", "1", "--sampling", "balanced", "--batch_size", "320"]
    configs += [base + ["--token_budget", str(b)] for b in (27e6, 30e6, 34e6)]
    configs += [base + ["--token_budget", "3e7", *extra] for extra in
                (["--learning_rate", "0.0006"], ["--init_seed", "9"], ["--tag_categories"], ["--adam_beta2", "0.99"],
                 ["--sampling", "token"], ["--warmup_ratio", "0.05"], ["--data_seed", "3"])]
    identities, names = set(), []
    for argv in configs:
        plan = _plan_for(argv)
        key = json.dumps(plan.identity, sort_keys=True)
        if key in identities:
            continue
        identities.add(key)
        names.append(plan.run_name)
        if len(names) == 200:
            break
    assert len(names) == 200
    assert len(set(names)) == 200
    n27, n30, n34 = (_plan_for(base + ["--token_budget", str(b)]).run_name for b in (27e6, 30e6, 34e6))
    assert "_d27M_" in n27 and "_d30M_" in n30 and "_d34M_" in n34
    assert _plan_for(base + ["--token_budget", "3e7", "--tag_categories"]).run_name.split("_")[-2] == "tag"
    # the same configuration always gets the same name (a relaunch finds its directory)
    assert _plan_for(base + ["--token_budget", "3e7"]).run_name == n30


def test_help_shows_defaults_and_no_prefix_matching(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.95)" in out and "(default: preprocessed_arxiv)" in out
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--tok", "2000"])  # no silent --token_budget
    assert e.value.code == 2
    assert "unrecognized arguments: --tok" in capsys.readouterr().err
    assert isinstance(train.parse_args([]), argparse.Namespace)
