"""sweep.py: deterministic expansion with stable readable ids, well-formed SLURM / command-list output,
and a failed run that is recorded while the sweep goes on."""
import json
import os
import shlex
import subprocess

import pytest
import yaml

import sweep
from conftest import ROOT, TINY_CONFIG

SMOKE = ROOT / "plans" / "smoke.yaml"


def test_expansion_is_deterministic_and_ids_are_stable():
    a = sweep.expand(sweep.load_plan(SMOKE))
    b = sweep.expand(sweep.load_plan(SMOKE))
    assert a == b
    ids = [rid for rid, _ in a]
    assert len(ids) == len(set(ids)) == 19
    assert ids[0] == "tiny-50k_K1_s00_d3k" and ids[-1] == "tiny-50k_K3_s00_d9k_tag"
    assert "tiny-50k_K11_s01_d27k" in ids
    params = dict(a)["tiny-50k_K3_s00_d9k_tag"]
    assert params["tag_categories"] is True and params["sampling"] == "balanced" and params["batch_size"] == 10
    assert sweep._fmt_num(90e6) == "90M" and sweep._fmt_num(1.5e6) == "1.5M" and sweep._fmt_num(810e6) == "810M"


def test_all_shipped_plans_expand():
    for plan_file in sorted((ROOT / "plans").glob("*.yaml")):
        plan = sweep.load_plan(plan_file)
        runs = sweep.expand(plan)
        assert runs, plan_file
        assert all(p.get("sampling") for _, p in runs), f"{plan_file}: every plan sets sampling explicitly"


def _plan(tmp_path, **over):
    plan = {"name": "t", "store": {"data_dir": str(ROOT / "tests" / "outputs" / "synthetic_markov")},
            "grid": {"model_config": [str(TINY_CONFIG)], "categories": [["math.AC", "cs.CV"]], "seed": [0, 1]},
            "fixed": {"sampling": "token", "batch_size": 8, "token_budget": 4000, "skip_test_eval": True},
            "gpus_per_run": 1, **over}
    p = tmp_path / "plan.yaml"
    p.write_text(yaml.safe_dump(plan))
    return p


def test_emit_commands_and_global_batch(tmp_path):
    plan_file = _plan(tmp_path, gpus_per_run=4, fixed={"sampling": "paper", "batch_size": 320, "token_budget": 9e7})
    text = sweep.main(["emit", "--format", "commands", str(plan_file), "--out", str(tmp_path / "out")])
    lines = [l for l in text.splitlines() if not l.startswith("#")]
    assert len(lines) == 2
    for line, seed in zip(lines, (0, 1)):
        argv = shlex.split(line)
        assert argv[:3] == ["torchrun", "--standalone", "--nproc_per_node=4"] and argv[3].endswith("train.py")
        assert argv[argv.index("--batch_size") + 1] == "80"  # 320 global windows over 4 GPUs
        assert argv[argv.index("--seed") + 1] == str(seed) and "--resume" in argv
        assert argv[argv.index("--categories") + 1: argv.index("--categories") + 3] == ["math.AC", "cs.CV"]
        assert argv[argv.index("--output_dir") + 1] == str((tmp_path / "out" / "runs").resolve())
    bad = _plan(tmp_path, gpus_per_run=3, fixed={"sampling": "paper", "batch_size": 320})
    with pytest.raises(SystemExit):
        sweep.main(["emit", "--format", "commands", str(bad), "--out", str(tmp_path / "o")])


def test_emit_slurm_is_valid_bash_and_indexes_the_runs(tmp_path):
    out = tmp_path / "slurm.sh"
    sweep.main(["emit", "--format", "slurm", str(SMOKE), "--out", str(tmp_path / "sw"), "--output", str(out)])
    text = out.read_text()
    assert text.startswith("#!/bin/bash\n") and "#SBATCH --array=0-18\n" in text and "#SBATCH --gpus-per-task=1" in text
    assert subprocess.run(["bash", "-n", str(out)]).returncode == 0
    cmds = [l for l in sweep.main(["emit", "--format", "commands", str(SMOKE), "--out", str(tmp_path / "sw")]).splitlines()
            if not l.startswith("#")]
    probe = tmp_path / "probe.sh"
    probe.write_text(text.replace('eval "${CMDS[$SLURM_ARRAY_TASK_ID]}"', 'printf "%s\\n" "${CMDS[$SLURM_ARRAY_TASK_ID]}"'))
    for i in (0, 7, 18):
        r = subprocess.run(["bash", str(probe)], env={**os.environ, "SLURM_ARRAY_TASK_ID": str(i)},
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1] == cmds[i]


def test_failed_run_is_recorded_and_sweep_goes_on(tmp_path, synthetic_store, capsys):
    plan_file = _plan(tmp_path, grid={"model_config": [str(TINY_CONFIG)], "categories": [["math.AC", "cs.CV"]],
                                      "learning_rate": [0.01, 1e30]},
                      fixed={"sampling": "token", "batch_size": 8, "token_budget": 4000, "skip_test_eval": True,
                             "max_grad_norm": 1e30, "warmup_ratio": 0})
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        sweep.main(["run", str(plan_file), "--out", str(out)])
    assert e.value.code == 1
    printed = capsys.readouterr().out
    assert "1 completed now, 1 failed" in printed
    counts = sweep.main(["status", str(plan_file), "--out", str(out)])
    assert counts["complete"] == 1 and counts["failed"] == 1
    events = [json.loads(l) for l in (out / "sweep_events.jsonl").read_text().splitlines()]
    assert sorted(e["returncode"] for e in events if e["event"] == "end") == [0, 1]
    # a second run skips both: the complete one silently, the failed one with a note
    sweep.main(["run", str(plan_file), "--out", str(out)])
    assert "failed earlier, skipped" in capsys.readouterr().out


def test_bad_plans(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("grid: {K: 3}\nstore: {data_dir: x}\n")
    with pytest.raises(SystemExit):
        sweep.main(["list", str(p)])
    assert "grid.K must be a non-empty list" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep.main(["list", str(tmp_path / "none.yaml")])
    assert "no such file" in capsys.readouterr().err


def test_json_plan_equals_yaml_plan(tmp_path):
    plan = yaml.safe_load(SMOKE.read_text())
    (tmp_path / "smoke.json").write_text(json.dumps(plan))
    assert sweep.expand(sweep.load_plan(tmp_path / "smoke.json")) == sweep.expand(sweep.load_plan(SMOKE))
