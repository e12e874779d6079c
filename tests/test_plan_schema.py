"""sweep.py's inputs checked against their schema (a misspelt key is refused with the nearest valid name),
run ids unique for every distinct configuration, a corrected plan retrying its failed runs, and a cluster
--project_dir with ~ / $HOME expanded by the cluster's shell."""
import itertools
import json
import os
import subprocess

import pytest
import yaml

import sweep
from conftest import TINY_CONFIG, one_line_error

GOOD = {"name": "t", "store": {"data_dir": "x", "build": {"full_dataset": True}},
        "grid": {"model_config": [str(TINY_CONFIG)], "K": [1], "seed": [0], "token_budget": [4000]},
        "fixed": {"sampling": "token", "batch_size": 8}, "gpus_per_run": 1, "slurm": {"time": "01:00:00"}}


def _write(tmp_path, plan, name="plan.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(plan))
    return p


def _with(plan, path, value):
    """A copy of plan with the key at path (a tuple) set; value None deletes it."""
    plan = json.loads(json.dumps(plan))
    d = plan
    for k in path[:-1]:
        d = d[k]
    if value is None:
        d.pop(path[-1], None)
    else:
        d[path[-1]] = value
    return plan


# (where, misspelt key, the name the message must suggest)
TYPOS = [((), "fixd", "fixed"), ((), "gird", "grid"), ((), "slrum", "slurm"), ((), "gpus_per_rnu", "gpus_per_run"),
         (("store",), "data_dri", "data_dir"), (("store",), "biuld", "build"),
         (("store", "build"), "full_datset", "full_dataset"), (("slurm",), "partion", "partition"),
         (("fixed",), "learning_rat", "learning_rate"), (("fixed",), "batchsize", "batch_size"),
         (("fixed",), "eval_window", "eval_windows"), (("grid",), "seeds", "seed"), (("grid",), "token_budgt", "token_budget")]


def test_every_misspelt_key_is_refused_with_the_nearest_name(tmp_path, capsys):
    sweep.main(["list", str(_write(tmp_path, GOOD))])  # the reference plan is valid
    for where, typo, right in TYPOS:
        plan = json.loads(json.dumps(GOOD))
        d = plan
        for k in where:
            d = d[k]
        d[typo] = d.pop(right) if right in d else (["x"] if where == ("grid",) else 1)
        for cmd in ("list", "emit", "status"):
            argv = [cmd, str(_write(tmp_path, plan))] + ([] if cmd == "list" else ["--out", str(tmp_path / "o")])
            msg = one_line_error(sweep.main, argv, capsys)
            assert typo in msg and f"did you mean {right}?" in msg, (where, typo, msg)
    assert not (tmp_path / "o").exists()  # emit refused before creating anything
    # a train.py flag no near name matches: the valid ones are listed; flags sweep.py sets are named as such
    msg = one_line_error(sweep.main, ["list", str(_write(tmp_path, _with(GOOD, ("fixed", "zzz"), 1)))], capsys)
    assert "fixed.zzz" in msg and "learning_rate" in msg
    for owned in ("output_dir", "run_name", "data_dir", "resume"):
        msg = one_line_error(sweep.main, ["list", str(_write(tmp_path, _with(GOOD, ("fixed", owned), "x")))], capsys)
        assert f"fixed.{owned} is set by sweep.py" in msg
    msg = one_line_error(sweep.main, ["list", str(_write(tmp_path, _with(GOOD, ("fixed",), [1])))], capsys)
    assert "fixed must be a mapping" in msg


def test_distinct_configurations_never_share_a_run_id(tmp_path, capsys):
    """cfgA/tiny.json x cfgB/tiny.json x budgets 1234567 / 1234568 (6 significant digits alike): four runs."""
    for d, h in (("cfgA", 8), ("cfgB", 16)):
        (tmp_path / d).mkdir()
        (tmp_path / d / "tiny.json").write_text(json.dumps({**json.loads(TINY_CONFIG.read_text()), "hidden_size": h}))
    grid = {"model_config": [str(tmp_path / "cfgA" / "tiny.json"), str(tmp_path / "cfgB" / "tiny.json")],
            "K": [1], "seed": [0], "token_budget": [1234567, 1234568]}
    runs = sweep.expand(sweep.load_plan(_write(tmp_path, _with(GOOD, ("grid",), grid))))
    assert len(runs) == 4 and len({rid for rid, _ in runs}) == 4
    assert all("d1234567" in rid or "d1234568" in rid for rid, _ in runs)
    # loop over generated grids: every distinct parameter set has its own id, ids are stable
    axes = {"learning_rate": [1e-3, 1.0000001e-3, 0.0006], "token_budget": [9e7, 90000001, 1.5e6, 1500000.5],
            "weight_decay": [0.1, 0.1000004], "seed": [0, 1]}
    for names in itertools.combinations(axes, 3):
        plan = sweep.load_plan(_write(tmp_path, _with(GOOD, ("grid",), {n: axes[n] for n in names})))
        runs = sweep.expand(plan)
        n = 1
        for a in names:
            n *= len(axes[a])
        assert len(runs) == n and len({rid for rid, _ in runs}) == n, names
        assert runs == sweep.expand(plan)
    # values whose names coincide ("a b" and "a-b" as a string axis) refuse the plan, naming the pair
    plan = _write(tmp_path, _with(GOOD, ("grid", "wandb_project"), ["a b", "a-b"]))
    msg = one_line_error(sweep.main, ["list", str(plan)], capsys)
    assert "share the id" in msg and '"a b"' in msg and '"a-b"' in msg


@pytest.mark.slow  # a sweep: train.py processes
def test_corrected_plan_retries_failed_runs(tmp_path, synthetic_store, capsys):
    """A bad value in fixed: that only the run can find (a GPU index no machine has: train.py refuses it, the
    runs fail; values a parser refuses never start, tests/test_plan_values.py); the plan is corrected;
    --retry_failed runs them with the corrected plan instead of calling them a conflict."""
    plan = {"name": "r", "store": {"data_dir": str(synthetic_store)},
            "grid": {"model_config": [str(TINY_CONFIG)], "categories": [["math.AC", "cs.CV"]], "seed": [0]},
            "fixed": {"sampling": "token", "device": "cuda:99", "batch_size": 8, "token_budget": 4000, "skip_test_eval": True,
                      "eval_windows": 4, "eval_interval_steps": 10 ** 6}}
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        sweep.main(["run", str(_write(tmp_path, plan)), "--out", str(out)])
    assert e.value.code == 1
    (rid,) = [d.name for d in (out / "runs").iterdir()]
    plan["fixed"]["device"] = "cpu"
    fixed = _write(tmp_path, plan)
    assert sweep.main(["status", str(fixed), "--out", str(out)])["conflict"] == 1
    capsys.readouterr()
    assert sweep.main(["run", str(fixed), "--out", str(out), "--retry_failed"]) == 0
    printed = capsys.readouterr().out
    assert "failed earlier with other parameters" in printed and "refused" not in printed
    assert sweep.main(["status", str(fixed), "--out", str(out)])["complete"] == 1
    assert json.loads((out / "runs" / rid / "sweep_params.json").read_text())["params"]["device"] == "cpu"
    (kept,) = (out / "failed").iterdir()  # the failed attempt, kept for reading
    assert json.loads((kept / "sweep_params.json").read_text())["params"]["device"] == "cuda:99"


@pytest.mark.parametrize("project_dir", ["~/proj x", "$HOME/proj x", "${HOME}/proj x", "~"])
def test_emit_project_dir_with_home_expands_on_the_cluster(tmp_path, project_dir):
    home = tmp_path / "home"
    target = home / project_dir.split("/", 1)[1] if "/" in project_dir else home
    target.mkdir(parents=True)
    text = sweep.main(["emit", "--format", "slurm", str(_write(tmp_path, GOOD)), "--out", str(tmp_path / "o"),
                       "--project_dir", project_dir])
    (cd,) = [l for l in text.splitlines() if l.startswith("cd ")]
    r = subprocess.run(["bash", "-c", f"set -eu; {cd}; pwd"], env={**os.environ, "HOME": str(home)},
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == str(target), (cd, r.stderr)


def test_grids_without_an_axis_or_with_a_non_integer_seed_are_refused(tmp_path, capsys):
    """A grid with no axis ({} or [{}]) expands to one run whose id is empty: its directory would be
    OUT/runs itself (and train.py, given --run_name '', picks its own name, so the run is never seen as
    complete). A grid seed that is not a non-negative integer crashed run_id with a TypeError."""
    for grid in ({}, [{}], [{"K": [1]}, {}]):
        msg = one_line_error(sweep.main, ["list", str(_write(tmp_path, _with(GOOD, ("grid",), grid)))], capsys)
        assert "at least one axis" in msg, msg
    for seed in (None, "a", -1, 1.5, True):
        msg = one_line_error(sweep.main, ["list", str(_write(tmp_path, _with(GOOD, ("grid", "seed"), [0, seed])))],
                             capsys)
        assert "grid.seed" in msg and "non-negative integers" in msg, msg
    for rid, _ in sweep.expand(sweep.load_plan(_write(tmp_path, GOOD))):
        assert rid


def test_exponent_numbers_in_a_yaml_plan_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads 1e6 as the string "1e6": budgets written so were refused as duplicate run ids.
    Every e-notation spelling is a number now; an integral one an int (a budget), quoted text stays text."""
    text = ("name: t\nstore: {data_dir: x}\n"
            f"grid: {{model_config: [{TINY_CONFIG}], K: [1], seed: [0], token_budget: [4e3, 1.2E4, 1_000, +2e+4]}}\n"
            "fixed: {learning_rate: 6e-4, sampling: token, wandb_project: '1e6'}\n")
    (tmp_path / "plan.yaml").write_text(text)
    plan = sweep.load_plan(tmp_path / "plan.yaml")
    assert plan["grid"][0]["token_budget"] == [4000, 12000, 1000, 20000]
    assert all(type(b) is int for b in plan["grid"][0]["token_budget"])
    assert plan["fixed"]["learning_rate"] == 6e-4 and plan["fixed"]["wandb_project"] == "1e6"
    runs = sweep.expand(plan)
    assert [rid.split("_d")[-1] for rid, _ in runs] == ["4k", "12k", "1k", "20k"]
    assert "--token_budget 4000 " in " ".join(sweep.train_flags(runs[0][1])) + " "


def test_every_exponent_spelling_in_a_yaml_plan_is_the_same_number():
    """.5e3 stayed the string ".5e3", and 1.0e+6 (PyYAML's own float) the float 1000000.0 beside 1.0e6's int."""
    got = sweep._yaml_load("a: [.5e3, 1.0e+6, 1.0e6, 1e+6, -2.5E-1, .inf, 1.5, 7, '1e6', x1e6]")["a"]
    assert got[:5] == [500, 1000000, 1000000, 1000000, -0.25] and all(type(v) is int for v in got[:4])
    assert got[5] == float("inf") and got[6:] == [1.5, 7, "1e6", "x1e6"]
