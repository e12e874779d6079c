"""sweep.py: deterministic expansion with stable readable ids, well-formed SLURM / command-list output,
and a failed run that is recorded while the sweep goes on."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import yaml

import store as st
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
    assert st.fmt_count(90e6) == "90M" and st.fmt_count(1.5e6) == "1.5M" and st.fmt_count(810e6) == "810M"


def test_all_shipped_plans_expand():
    for plan_file in sorted((ROOT / "plans").glob("*.yaml")):
        plan = sweep.load_plan(plan_file)
        runs = sweep.expand(plan)
        assert runs, plan_file
        assert all(p.get("sampling") for _, p in runs), f"{plan_file}: every plan sets sampling explicitly"


def _plan(tmp_path, store=None, **over):
    """A plan of tiny runs on `store` (the synthetic_store fixture where the runs train; else a path not built)."""
    plan = {"name": "t", "store": {"data_dir": str(store or tmp_path / "synthetic_markov")},
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
        assert argv[:6] == ["python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "train.py"]
        assert argv[argv.index("--batch_size") + 1] == "80"  # 320 global windows over 4 GPUs
        assert argv[argv.index("--seed") + 1] == str(seed) and "--resume" in argv
        assert argv[argv.index("--categories") + 1: argv.index("--categories") + 3] == ["math.AC", "cs.CV"]
        assert argv[argv.index("--output_dir") + 1] == str((tmp_path / "out" / "runs").resolve())
    bad = _plan(tmp_path, gpus_per_run=3, fixed={"sampling": "paper", "batch_size": 320})
    with pytest.raises(SystemExit):
        sweep.main(["emit", "--format", "commands", str(bad), "--out", str(tmp_path / "o")])


def _probe(text, tmp_path, task):
    """What array task `task` of an emitted script would run: the script with eval replaced by printing."""
    probe = tmp_path / "probe.sh"
    probe.write_text(text.replace('eval "${CMDS[$i]}" &', 'printf "%s\\n" "${CMDS[$i]}" &'))
    r = subprocess.run(["bash", str(probe)], env={**os.environ, "SLURM_ARRAY_TASK_ID": str(task)},
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return [l for l in r.stdout.splitlines() if not l.startswith("task ")]


def test_emit_slurm_is_valid_bash_and_indexes_the_runs(tmp_path):
    out = tmp_path / "slurm.sh"
    sw = tmp_path / "sw"
    sweep.main(["emit", "--format", "slurm", str(SMOKE), "--out", str(sw), "--output", str(out),
                "--python", "/opt/venv/bin/python", "--setup", "module load cuda/12; echo setup-ran",
                "--project_dir", str(tmp_path)])
    text = out.read_text()
    assert text.startswith("#!/bin/bash\n") and "#SBATCH --array=0-18\n" in text and "#SBATCH --gpus-per-task=1" in text
    # SLURM opens --output before the script runs: the folder exists once emit has run
    assert f"#SBATCH --output={sw.resolve() / 'logs'}/" in text and (sw / "logs").is_dir()
    assert subprocess.run(["bash", "-n", str(out)]).returncode == 0
    assert text.index("module load cuda/12") < text.index("CMDS=(")
    cmds = [l for l in sweep.main(["emit", "--format", "commands", str(SMOKE), "--out", str(sw),
                                   "--python", "/opt/venv/bin/python"]).splitlines() if not l.startswith("#")]
    for i in (0, 7, 18):
        text_run = text.replace("module load cuda/12; ", "")
        assert _probe(text_run, tmp_path, i) == ["setup-ran", cmds[i]]
        argv = shlex.split(cmds[i])
        assert argv[:2] == ["/opt/venv/bin/python", "train.py"]  # the interpreter named; paths of the project
        assert argv[argv.index("--data_dir") + 1] == "preprocessed_abstracts"
    # several small runs per GPU: 19 runs, 4 per array task side by side
    packed = sweep.main(["emit", "--format", "slurm", str(SMOKE), "--out", str(sw), "--runs_per_gpu", "4",
                         "--python", "/opt/venv/bin/python"])
    assert "#SBATCH --array=0-4\n" in packed
    assert sorted(_probe(packed, tmp_path, 1)) == sorted(cmds[4:8])  # started side by side: any order
    assert sorted(_probe(packed, tmp_path, 4)) == sorted(cmds[16:19])


@pytest.mark.slow  # a sweep: train.py processes
def test_failed_run_is_recorded_and_sweep_goes_on(tmp_path, synthetic_store, capsys):
    plan_file = _plan(tmp_path, synthetic_store,
                      grid={"model_config": [str(TINY_CONFIG)], "categories": [["math.AC", "cs.CV"]],
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


def _quick_plan(tmp_path, n_seeds, budget, store=None, **fixed):
    return _plan(tmp_path, store=store, grid={"model_config": [str(TINY_CONFIG)], "categories": [["math.AC", "cs.CV"]],
                                 "seed": list(range(n_seeds))},
                 fixed={"sampling": "token", "batch_size": 8, "token_budget": budget, "skip_test_eval": True,
                        "eval_windows": 4, "eval_interval_steps": 10 ** 6, **fixed})


@pytest.mark.slow  # a sweep: train.py processes
def test_runs_are_placed_on_the_named_gpus(tmp_path, synthetic_store, capsys):
    """--gpus 0,1 --runs_per_gpu 2: four workers, each run with CUDA_VISIBLE_DEVICES of its slot, never
    more than two runs on a GPU at once (on this CPU machine the runs train on the CPU all the same)."""
    plan_file = _quick_plan(tmp_path, 5, 8000, synthetic_store)  # one more run than the 4 slots: one waits
    out = tmp_path / "out"
    assert sweep.main(["run", str(plan_file), "--out", str(out), "--gpus", "0,1", "--runs_per_gpu", "2"]) == 0
    assert "on GPU(s) 0, 1, 4 at a time" in capsys.readouterr().out
    events = [json.loads(l) for l in (out / "sweep_events.jsonl").read_text().splitlines()]
    starts = {e["run_id"]: e for e in events if e["event"] == "start"}
    ends = {e["run_id"]: e for e in events if e["event"] == "end"}
    assert len(starts) == 5 and {e["gpu"] for e in starts.values()} == {"0", "1"}
    for gpu in ("0", "1"):  # at any start, at most 2 runs of that GPU are running
        spans = [(starts[r]["time"], ends[r]["time"]) for r in starts if starts[r]["gpu"] == gpu]
        for t0, _ in spans:
            assert sum(a <= t0 < b for a, b in spans) <= 2
    for rid, e in starts.items():
        assert (out / "logs" / f"{rid}.log").read_text().startswith(f"$ CUDA_VISIBLE_DEVICES={e['gpu']} ")
        cfg = json.loads((out / "runs" / rid / "run_config.json").read_text())
        assert cfg["cuda_visible_devices"] == e["gpu"]
        assert not list((out / "runs" / rid).glob("step_*"))  # complete runs are pruned by default


@pytest.mark.slow  # a sweep of training runs, interrupted and resumed
def test_ctrl_c_interrupts_and_the_next_run_resumes(tmp_path, synthetic_store):
    # 250 steps: the resume trains what is left (400k tokens, 500 steps, cost ~5 CPU-s more a run); both runs
    # hold a checkpoint at step 20 long before either can end
    plan_file = _quick_plan(tmp_path, 2, 200000, synthetic_store, checkpoint_interval_steps=20, log_interval_steps=5)
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "sweep.py"), "run", str(plan_file), "--out", str(out), "--parallel", "2"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    # both runs have a checkpoint (counted per run: under load one run can hold two before the other has one)
    while len({c.parent for c in out.glob("runs/*/step_*")}) < 2:
        assert p.poll() is None and time.time() < deadline
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGINT)  # a terminal's Ctrl-C: the sweep's process group
    text = p.communicate(timeout=120)[0]
    assert p.returncode == 130, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert "interrupted: 2 running run(s) stopped at a checkpoint" in text.strip().splitlines()[-1]
    assert "sweep.py run" in text.strip().splitlines()[-1]
    counts = sweep.main(["status", str(plan_file), "--out", str(out)])
    assert counts["interrupted"] == 2 and counts["failed"] == 0
    # the next run resumes both (no --retry_failed needed) and they complete
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:]
    for d in (out / "runs").iterdir():
        assert "resumed from step " in (d / "train.log").read_text()
        assert json.loads((d / "summary.json").read_text())["status"] == "complete"


@pytest.mark.slow  # a sweep: train.py processes
def test_changed_fixed_value_is_a_conflict_not_a_reuse(tmp_path, synthetic_store, capsys):
    plan_file = _quick_plan(tmp_path, 1, 4000, synthetic_store, learning_rate=0.01)
    out = tmp_path / "out"
    sweep.main(["run", str(plan_file), "--out", str(out)])
    (rid,) = [d.name for d in (out / "runs").iterdir()]
    before = (out / "runs" / rid / "summary.json").read_text()
    plan_file = _quick_plan(tmp_path, 1, 4000, synthetic_store, learning_rate=0.02)  # same run id: lr is not a grid axis
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        sweep.main(["run", str(plan_file), "--out", str(out)])
    assert e.value.code == 1
    printed = capsys.readouterr().out
    assert f"{rid}: refused" in printed and "learning_rate: 0.01 in the run, 0.02 in the plan" in printed
    assert (out / "runs" / rid / "summary.json").read_text() == before
    assert sweep.main(["status", str(plan_file), "--out", str(out)])["conflict"] == 1


def test_cli_edges(tmp_path, capsys):
    r = subprocess.run(f"{shlex.quote(sys.executable)} sweep.py list plans/p3_controls.yaml | head -n 1",
                       shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.stdout.count("\n") == 1 and "Traceback" not in r.stderr and r.stderr == "", r.stderr
    from conftest import one_line_error
    msg = one_line_error(sweep.main, ["status", str(SMOKE), "--out", str(tmp_path / "none")], capsys)
    assert "--out" in msg and "no such directory" in msg
    with pytest.raises(SystemExit):
        sweep.main(["run", str(SMOKE), "--ou", str(tmp_path)])  # no prefix matching of flags
    assert "the following arguments are required: --out" in capsys.readouterr().err


def test_status_of_lock_only_dirs_and_hand_edited_summaries(tmp_path, capsys):
    """A run directory holding only train.py's .lock (a run stopped before it wrote anything) has nothing to
    resume: "pending", not "interrupted". A summary whose tokens_seen was edited into a float (or text) is
    shown, not a traceback."""
    plan_file = _quick_plan(tmp_path, 3, 8000)
    out = tmp_path / "out"
    (rid0, _), (rid1, _), (rid2, _) = sweep.expand(sweep.load_plan(plan_file))
    (out / "runs" / rid0).mkdir(parents=True)
    (out / "runs" / rid0 / ".lock").write_text("{}")
    for rid, tokens in ((rid1, 1234.0), (rid2, "many")):
        (out / "runs" / rid).mkdir(parents=True)
        (out / "runs" / rid / "summary.json").write_text(json.dumps({"status": "failed", "tokens_seen": tokens,
                                                                       "final_val_loss": "x"}))
    counts = sweep.main(["status", str(plan_file), "--out", str(out)])
    assert counts["pending"] == 1 and counts["interrupted"] == 0 and counts["failed"] == 2
    text = capsys.readouterr().out
    assert "       1,234 " in text and "Traceback" not in text


def test_restore_old_dirs_leaves_names_it_did_not_make(tmp_path):
    """.best.old-<ns> (a kill between publish_dir's two renames) is put back; a stray .x.old-foo is not this
    code's and used to raise ValueError at every start of the run."""
    import store as st
    (tmp_path / ".best.old-123").mkdir()
    (tmp_path / ".x.old-foo").mkdir()
    assert st.restore_old_dirs(tmp_path) == ["best"]
    assert (tmp_path / "best").is_dir() and (tmp_path / ".x.old-foo").is_dir()


def test_restore_old_dirs_leaves_digit_like_and_dashed_stray_names(tmp_path):
    """.x.old-\u00b2 (str.isdigit() is true for '\u00b2', int() raised at every start of the run) and .y.old-foo-5
    (someone's backup, which was renamed to y or deleted) are not publish_dir's; .best.old-<pid>-<ns> is."""
    import store as st
    (tmp_path / ".best.old-42-123").mkdir()
    (tmp_path / ".x.old-\u00b2").mkdir()
    (tmp_path / ".y.old-foo-5").mkdir()
    assert st.restore_old_dirs(tmp_path) == ["best"]
    assert (tmp_path / ".x.old-\u00b2").is_dir() and (tmp_path / ".y.old-foo-5").is_dir() and not (tmp_path / "y").exists()
