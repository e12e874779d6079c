"""Issue 23: every value of a plan is checked before anything starts (by the script's own parser, run without
torch), one line per bad value naming its key, exit 2; a YAML syntax error keeps its line and column; `sweep.py
status` notes a complete run whose metrics.jsonl was cut mid-line. The user's path: sweep.py as a subprocess."""
import json
import os
import subprocess
import sys

import pytest
import yaml

import sweep
from conftest import ROOT, TINY_CONFIG


def _sweep(*argv):
    return subprocess.run([sys.executable, str(ROOT / "sweep.py"), *map(str, argv)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _plan(tmp_path, grid, fixed=None, name="plan.yaml", **extra):
    plan = {"name": "v", "store": {"data_dir": str(tmp_path / "store"),
                                   "build": {"dataset_path": "data/sample_corpus", "full_dataset": True}},
            "grid": grid, "fixed": {"sampling": "balanced", "batch_size": 8, **(fixed or {})}, **extra}
    p = tmp_path / name
    p.write_text(yaml.safe_dump(plan))
    return p


BAD = [  # (plan key, value, words the refusal must contain)
    ("grid.model_config", "pythia-999m", "neither a named config"),
    ("grid.model_config", "no/such.json", "nor a JSON file"),
    ("grid.token_budget", -3000, "must be a number > 0"),
    ("grid.token_budget", "lots", "must be a number > 0"),
    ("grid.K", 12, "in [1, 11]"),
    ("grid.K", 0, "in [1, 11]"),
    ("fixed.init_seed", 2 ** 64, "must be an integer in [0, "),
    ("fixed.learning_rate", -0.001, "must be a number > 0"),
    ("fixed.warmup_ratio", 1.5, "in [0, 1]"),
    ("fixed.adam_beta2", 1, "in [0, 1)"),
    ("fixed.eval_windows", 0, "must be an integer >= 1"),
    ("fixed.dtype", "float16", "invalid choice"),
]


def test_every_bad_value_is_refused_before_anything_starts(tmp_path):
    grid = {"model_config": [str(TINY_CONFIG), "pythia-999m", "no/such.json", "pythia-14m"],
            "token_budget": [4000, -3000, "lots"], "K": [1, 12, 0], "seed": [0, 1]}
    fixed = {"init_seed": 2 ** 64, "learning_rate": -0.001, "warmup_ratio": 1.5, "adam_beta2": 1,
             "eval_windows": 0, "dtype": "float16"}
    plan = _plan(tmp_path, grid, fixed)
    out = tmp_path / "out"
    for argv in (["run", plan, "--out", out], ["emit", plan, "--out", out, "--format", "slurm",
                                                "--output", tmp_path / "job.sbatch"]):
        r = _sweep(*argv)
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.splitlines()
        assert len(lines) == len(BAD) and all(l.startswith(f"error: plan {plan}: ") for l in lines), r.stderr
        assert "Traceback" not in r.stderr and r.stdout == ""
        for key, value, words in BAD:
            hit = [l for l in lines if f": {key} {value}: " in l]
            assert len(hit) == 1 and words in hit[0], (key, value, lines)
        assert not out.exists() and not (tmp_path / "job.sbatch").exists()  # nothing emitted or started
        assert not (tmp_path / "store").exists()  # nor the store built
    # the same plan without its bad values is accepted (the check refuses values, not plans)
    good = _plan(tmp_path, {"model_config": [str(TINY_CONFIG), "pythia-14m"], "token_budget": [4000],
                            "K": [1, 11], "seed": [0, 1]}, {"init_seed": 2 ** 64 - 1, "adam_beta2": 0.99})
    r = _sweep("emit", good, "--out", out)
    assert r.returncode == 0 and r.stdout.count("train.py") == 8, r.stderr


def test_categories_and_gpu_split_and_ngram_values(tmp_path):
    plan = _plan(tmp_path, {"categories": [["math.AC", "cs.XX"], ["cs.CV", "cs.CV"], ["cs.AI"]], "seed": [0]},
                 {"batch_size": 9}, gpus_per_run=2)
    r = _sweep("emit", plan, "--out", tmp_path / "o")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 3, r.stderr
    assert 'grid.categories ["math.AC", "cs.XX"]: unknown category cs.XX' in r.stderr
    assert 'grid.categories ["cs.CV", "cs.CV"]: a category is listed twice' in r.stderr
    assert "fixed.batch_size 9: not divisible by gpus_per_run 2" in r.stderr
    # ngram.py's plans: ngram.py's own parser and its own checks (its --order range)
    plan = _plan(tmp_path, {"order": [3, 9], "K": [1], "seed": [0]}, {"batch_size": 8}, script="ngram.py")
    r = _sweep("emit", plan, "--out", tmp_path / "o")
    assert r.returncode == 2 and r.stderr.strip().endswith("grid.order 9: --order must be in 1..5 (got 9)"), r.stderr


def test_slurm_block_values(tmp_path):
    """The slurm: block as README documents it: an unquoted 12:00:00 (YAML's sexagesimal 43200, which
    SLURM would read as 30 days) and other bad values refused; a good block lands in the script."""
    p = tmp_path / "s.yaml"
    p.write_text("name: s\nstore: {data_dir: x}\ngrid: {K: [1]}\n"
                 "slurm: {time: 12:00:00, cpus_per_task: 0, max_concurrent: -1, extra: --account=x, partition: 7}\n")
    r = _sweep("emit", p, "--out", tmp_path / "o", "--format", "slurm")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 5 and not (tmp_path / "o").exists(), r.stderr
    assert "slurm.time 43200: must be a quoted SLURM time" in r.stderr
    for words in ("slurm.cpus_per_task 0", "slurm.max_concurrent -1", "slurm.extra '--account=x'", "slurm.partition 7"):
        assert words in r.stderr, (words, r.stderr)
    p.write_text('name: s\nstore: {data_dir: x}\ngrid: {K: [1, 2]}\n'
                 'slurm: {time: "1-12:00:00", cpus_per_task: 16, max_concurrent: 1, extra: ["--account=x"], partition: gpu}\n')
    r = _sweep("emit", p, "--out", tmp_path / "o", "--format", "slurm")
    assert r.returncode == 0, r.stderr
    for line in ("#SBATCH --time=1-12:00:00", "#SBATCH --cpus-per-task=16", "#SBATCH --array=0-1%1",
                 "#SBATCH --account=x", "#SBATCH --partition=gpu"):
        assert line in r.stdout.splitlines(), (line, r.stdout)


def test_the_parser_is_found_where_train_py_imports_it_from(tmp_path, monkeypatch):
    """train.py may take its parser from a module of its own (a restructuring): script_parser follows the
    import, resolves module-level helpers built from store (pos = st.number(...)) and constants of heavy
    modules (model.PYTHIA, read not imported), and never imports torch."""
    (tmp_path / "model.py").write_text("import torch\nPYTHIA = {'pythia-14m': (128, 6, 4, 1e-3, 1)}\n")
    (tmp_path / "train_args.py").write_text(
        '"""Doc.\n\nMore."""\nimport torch\nimport store as st\nfrom model import PYTHIA\n'
        "pos = st.number(float, 0, lo_open=True)\nDEVICE = torch.device('cpu')\n\n"
        "def parse_args(argv=None):\n    p = st.ArgumentParser(description=__doc__.split('\\n\\n')[0])\n"
        "    p.add_argument('--token_budget', type=pos)\n    p.add_argument('--model_config', help=', '.join(PYTHIA))\n"
        "    return p.parse_args(argv)\n")
    (tmp_path / "train.py").write_text("import torch\nimport store as st\nfrom train_args import parse_args\n")
    monkeypatch.setattr(sweep, "PROJECT", tmp_path)
    parse = sweep.script_parser("train.py")
    assert sweep._refusal(parse, ["--token_budget", "-3"]) == "argument --token_budget: must be a number > 0, got -3"
    assert sweep._refusal(parse, ["--token_budget", "3", "--model_config", "x"]) is None
    probe = ("import sys, sweep, pathlib; sweep.PROJECT = pathlib.Path(sys.argv[1]); sweep.script_parser('train.py'); "
             "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stdout + r.stderr  # no torch imported
    (tmp_path / "train.py").write_text("import torch\n")
    r = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.strip() == ("error: cannot check the plan's values: train.py has no "
                                                      "parse_args (sweep.script_parser reads it)"), r.stderr


def test_shipped_plans_pass_the_value_check():
    for p in sorted((ROOT / "plans").glob("*.yaml")):
        sweep.check_values(p, sweep.load_plan(p))  # SystemExit would fail the test


def test_yaml_and_json_syntax_errors_keep_line_and_column(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: b\nstore: {data_dir: x}\ngrid:\n  K: [1, 3\n  seed: [0]\n")
    r = _sweep("run", p, "--out", tmp_path / "o")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert f"plan {p}: cannot parse" in r.stderr and "line 5, column 7" in r.stderr
    assert "while parsing a flow sequence at line 4, column 6" in r.stderr
    p.write_text("name: b\nstore:\n  data_dir: x\n   build: 2\n")
    r = _sweep("emit", p, "--out", tmp_path / "o")
    assert r.returncode == 2 and "line 4, column 9: mapping values are not allowed here" in r.stderr, r.stderr
    j = tmp_path / "broken.json"
    j.write_text('{"name": "x",\n "grid": {"K": [1,]}}')
    r = _sweep("list", j)
    assert r.returncode == 2 and f"plan {j}: cannot parse (JSONDecodeError at line 2, column 19" in r.stderr


def test_status_notes_a_complete_run_whose_metrics_were_cut(tmp_path):
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"name": "m", "store": {"data_dir": "x"}, "grid": {"seed": [0, 1]}}))
    out = tmp_path / "sw"
    (rid0, _), (rid1, _) = sweep.expand(sweep.load_plan(plan))
    for rid in (rid0, rid1):
        (out / "runs" / rid).mkdir(parents=True)
        (out / "runs" / rid / "summary.json").write_text(json.dumps({"status": "complete", "steps": 6}))
        (out / "runs" / rid / "metrics.jsonl").write_text('{"kind": "train", "step": 5}\n{"kind": "eval", "step": 6}\n')
    with open(out / "runs" / rid1 / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "st')
    r = _sweep("status", plan, "--out", out)
    assert r.returncode == 0, r.stderr
    notes = [l for l in r.stdout.splitlines() if l.startswith("note: ")]
    assert notes == [f"note: {rid1}: metrics.jsonl: 1 of 3 lines unreadable (line 3; the last cut mid-line): "
                     "those rows are missing from the curves"], r.stdout
    assert "complete 2" in r.stdout


def test_ngram_plans_get_train_py_ranges(tmp_path):
    """An ngram.py plan with K 12 (or 0) or a negative seed was accepted by the value check and failed only
    in its run, after the sweep had started: ngram.py's parser range-checks the flags it shares with train.py."""
    plan = _plan(tmp_path, {"K": [1, 12, 0], "seed": [0]}, {"data_seed": -5, "order": 3}, script="ngram.py")
    r = _sweep("emit", plan, "--out", tmp_path / "o")
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.splitlines()) == 3, r.stderr
    assert "grid.K 12: argument --K: must be an integer in [1, 11], got 12" in r.stderr
    assert "grid.K 0: argument --K: must be an integer in [1, 11], got 0" in r.stderr
    assert "fixed.data_seed -5: argument --data_seed: must be an integer in [0, " in r.stderr
    plan = _plan(tmp_path, {"K": [1, 11], "seed": [0, 2 ** 64 - 1]}, {"order": 3}, script="ngram.py")
    r = _sweep("emit", plan, "--out", tmp_path / "o")
    assert r.returncode == 0 and r.stdout.count("ngram.py") == 4, r.stderr


def test_a_parser_built_from_helpers_is_run_not_refused(tmp_path, monkeypatch):
    """A parse_args using a module-level function of its script, the standard library (pathlib, os.environ)
    and a required flag that sweep.py sets itself (--data_dir) still checks values: a valid plan is not
    refused by N lines of NameError; a parser sweep.py cannot run at all is one line naming why."""
    (tmp_path / "train.py").write_text(
        "import torch\nimport store as st\nfrom pathlib import Path\nimport os\n\n"
        "def budget(text):\n    return POS(text)\n\nPOS = st.number(float, 0, lo_open=True)\n\n"
        "def parse_args(argv=None):\n    p = st.ArgumentParser()\n"
        "    p.add_argument('--data_dir', required=True, type=Path)\n"
        "    p.add_argument('--output_dir', default=os.environ.get('NOWHERE', 'runs'))\n"
        "    p.add_argument('--run_name')\n    p.add_argument('--resume', nargs='?', const='auto')\n"
        "    p.add_argument('--token_budget', type=budget)\n    p.add_argument('--K', type=int)\n"
        "    return p.parse_args(argv)\n")
    monkeypatch.setattr(sweep, "PROJECT", tmp_path)
    plan = {"name": "h", "store": {"data_dir": "x"}, "grid": [{"K": [1], "token_budget": [5, -3]}], "fixed": {}}
    with pytest.raises(SystemExit) as e:
        sweep.check_values("p.yaml", plan)
    assert e.value.code == 2
    plan["grid"][0]["token_budget"] = [5]
    sweep.check_values("p.yaml", plan)  # accepted
    (tmp_path / "train.py").write_text("import torch\nfrom model import thing\n\n"
                                       "def parse_args(argv=None):\n    return thing(argv)\n")
    probe = ("import sys, sweep, pathlib; sweep.PROJECT = pathlib.Path(sys.argv[1]); "
             "sweep.check_values('p.yaml', {'name': 'h', 'store': {'data_dir': 'x'}, 'grid': [{'K': [1, 2]}], 'fixed': {}})")
    r = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: cannot check the plan's values: train.py's parse_args fails without any plan "
                               "value (NameError: name 'thing' is not defined)"), r.stderr


def test_unicode_values_are_shown_as_written(tmp_path):
    plan = _plan(tmp_path, {"categories": [["math.AC", "cs.Ü"]], "seed": [0]}, {"sampling": "ünïform"})
    r = _sweep("emit", plan, "--out", tmp_path / "o")
    assert r.returncode == 2 and 'grid.categories ["math.AC", "cs.Ü"]: unknown category cs.Ü' in r.stderr, r.stderr
    assert "fixed.sampling ünïform: argument --sampling: invalid choice" in r.stderr, r.stderr


def test_slurm_time_without_limit_is_accepted(tmp_path):
    """SLURM takes "UNLIMITED" / "INFINITE" for --time (no limit; the partition's cap applies): not refused."""
    p = tmp_path / "s.yaml"
    for t in ("UNLIMITED", "infinite"):
        p.write_text(f'name: s\nstore: {{data_dir: x}}\ngrid: {{K: [1]}}\nslurm: {{time: "{t}"}}\n')
        r = _sweep("emit", p, "--out", tmp_path / "o", "--format", "slurm")
        assert r.returncode == 0 and f"#SBATCH --time={t}" in r.stdout.splitlines(), r.stderr
    p.write_text('name: s\nstore: {data_dir: x}\ngrid: {K: [1]}\nslurm: {time: "forever"}\n')
    assert _sweep("emit", p, "--out", tmp_path / "o", "--format", "slurm").returncode == 2


def test_a_plan_not_in_utf8_is_one_line_with_its_place(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: x\nstore: {data_dir: x}\ngrid: {K: [1]}  # café\n".encode("latin-1"))
    r = _sweep("list", p)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == (f"error: plan {p}: cannot parse (not UTF-8: byte 0xe9 at line 3, column 22); "
                                "save it as UTF-8"), r.stderr


def test_status_and_analysis_survive_run_files_that_are_not_json_objects(tmp_path):
    """A summary.json or run_config.json of null, a list, or not UTF-8 (hand-edited, a broken copy): `sweep.py
    status` shows the run as not complete and analysis names the file, where both raised a traceback."""
    from analysis.runs import collect_runs
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"name": "m", "store": {"data_dir": "x"}, "grid": {"seed": [0]}}))
    out = tmp_path / "sw"
    rid = sweep.expand(sweep.load_plan(plan))[0][0]
    rd = out / "runs" / rid
    rd.mkdir(parents=True)
    (rd / "run_config.json").write_text(json.dumps({"data_dir": "x"}))
    for text, reason in ((b"null", "summary.json is not a JSON object"), (b"[1]", "summary.json is not a JSON object"),
                         (b'{"status": "compl\xe9"}', "corrupt summary.json (UnicodeDecodeError)")):
        (rd / "summary.json").write_bytes(text)
        r = _sweep("status", plan, "--out", out)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        assert f"{rid}  interrupted" in r.stdout, r.stdout
        assert [x["excluded"] for x in collect_runs(out)] == [reason]
    (rd / "run_config.json").write_text("[]")
    assert [x["excluded"] for x in collect_runs(out)] == ["run_config.json is not a JSON object"]
