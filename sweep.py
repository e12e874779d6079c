"""
Expand an experiment plan (YAML or JSON) into train.py runs, run them here, emit them for a cluster, or
show their status.

    python sweep.py run plans/smoke.yaml --out sweeps/smoke [--parallel 2]          # CPU: N runs at a time
    python sweep.py run plans/p1_core_31m.yaml --out sweeps/p1 --runs_per_gpu 4     # every visible GPU, 4 runs each
    python sweep.py status plans/smoke.yaml --out sweeps/smoke
    python sweep.py emit --format slurm plans/p1_core_31m.yaml --out /scratch/sweeps/p1 \
        --setup "module load cuda; source ~/venv/bin/activate" > p1.sbatch
    python sweep.py emit --format commands plans/p1_core_31m.yaml --out /scratch/sweeps/p1 > p1.txt
    python sweep.py list plans/smoke.yaml

A plan file:

    name: smoke
    store:                        # the token store every run reads
      data_dir: preprocessed_sample
      build: {dataset_path: data/sample_corpus, full_dataset: true}   # fetch_arxiv.py flags, if missing
    grid:                         # every combination of these values is one run (train.py flags);
                                  # a list of such mappings gives the union of their runs
      model_config: [plans/configs/tiny-50k.json]
      K: [1, 3, 11]
      seed: [0, 1]
      token_budget: [4000, 12000]
    fixed: {sampling: balanced, batch_size: 8}     # train.py flags for every run; batch_size is global
    gpus_per_run: 1               # emit: torchrun with this many processes, per-device batch = batch_size / gpus
    slurm: {time: "02:00:00", partition: gpu, cpus_per_task: 8}   # emit --format slurm; also max_concurrent,
                                  # extra: [#SBATCH options] (README, section 5: keys and defaults)
    script: train.py              # optional: ngram.py runs the plan with the Kneser-Ney model (plans/ngram_*.yaml)

Every key of a plan is checked (a misspelt one is refused with the nearest valid name): the keys above,
store.build against fetch_arxiv.py's flags, fixed and the grid axes against train.py's. `run` and `emit`
check every value before anything starts, by the script's own parser (check_values): one line per bad value.
Relative paths in a plan (data_dir, model_config files, build paths) are relative to the project root.
Runs live in OUT/runs/<run_id>/ (train.py's run directory); sweep events in OUT/sweep_events.jsonl and each
run's console output in OUT/logs/<run_id>.log. A run is complete exactly when its summary.json says so;
`run` skips complete runs, resumes interrupted ones from their newest checkpoint, records failures and
goes on (failed runs are retried only with --retry_failed), and deletes the step checkpoints of runs that
completed (--keep_checkpoints keeps them). Ctrl-C stops every running run at its next step boundary with
a checkpoint; they are "interrupted", and the next `run` resumes them.

Each run directory records the plan's parameters of the run (sweep_params.json). A plan whose values
for an existing run differ (a `fixed:` value edited, say) is refused for that run ("conflict"): its
results would otherwise pass as the new configuration's. A failed run of a corrected plan is run again
with --retry_failed (its failed attempt moved to OUT/failed/).

GPUs: `run` places runs on --gpus (indexes of the visible GPUs; default: every visible GPU), --runs_per_gpu
at a time on each (small models leave most of a GPU idle), through CUDA_VISIBLE_DEVICES, one per worker;
each process gets cores / processes OpenMP and inductor compile threads, and `run` prints each run's
estimated GPU memory and refuses a --runs_per_gpu that cannot fit the GPU's free memory. On SLURM each array
task gets its GPU(s) from SLURM; `emit --runs_per_gpu R` packs R runs into each task, side by side.
"""
import argparse
import ast
import contextlib
import difflib
import hashlib
import importlib
import io
import itertools
import json
import math
import os
import re
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import runlock
import store as st

PROJECT = st.PROJECT_DIR
TRAIN = "train.py"
# run-id parts: the head axes have their own fixed format (run_id); these get a short prefix; any other
# axis appears as name-value
HEAD_AXES = ("model_config", "K", "categories", "seed", "token_budget", "sampling", "tag_categories")
SHORT_NAMES = {"init_seed": "i", "data_seed": "ds", "learning_rate": "lr"}
# train.py's exit code for a run stopped by a signal (it checkpointed); -2 / -15: killed by SIGINT / SIGTERM;
# 75: train.py found the run held by another process (it is running, not failed)
INTERRUPTED_CODES = (130, -2, -15, 143, 75)
RUN_LOCK = ".lock"  # train.py's one-writer lock in each run directory (runlock.py)
SWEEP_LOCK = ".sweep.lock"  # `run`'s lock on its --out (runlock.py)
# not a lock: the pid file `run` writes in a run directory while the train.py it started runs (pid, host,
# process start), so that the run shows as running before its train.py holds RUN_LOCK, and a stopped
# sweep's runs can be found (benchmarks/gpu_check.py); trusted only for that very process (pid_file_process)
PID_FILE = ".sweep.pid"
STATUSES = ("complete", "running", "interrupted", "failed", "conflict", "pending")
# a plan's schema: every key is checked, so a typo (fixd:, K_: ...) is refused instead of silently ignored
PLAN_KEYS = ("name", "store", "grid", "fixed", "gpus_per_run", "slurm", "script")
SCRIPTS = (TRAIN, "ngram.py")  # what a plan's runs execute (same flags for the run directory, same format)
STORE_KEYS = ("data_dir", "build")
SLURM_KEYS = ("time", "partition", "cpus_per_task", "max_concurrent", "extra")
# train.py flags that sweep.py sets itself for every run
SWEEP_OWNED = {"data_dir": "store.data_dir", "output_dir": "--out", "run_name": "the run id",
               "resume": "sweep.py (every run is started with --resume)"}


def script_flags(script):
    """The long flags a project script declares ("--name" string literals in its source): read, not
    imported, so that checking a plan needs no torch."""
    return sorted(set(re.findall(r"""["']--([A-Za-z][A-Za-z0-9_]*)["']""", (PROJECT / script).read_text())))


def _check_keys(path, where, keys, valid, owned=None):
    """Refuse (one line) a key that is not in `valid`, naming the nearest valid one."""
    for k in keys:
        if owned and k in owned:
            st.die(f"plan {path}: {where}{k} is set by sweep.py ({owned[k]}); remove it from the plan")
        if k not in valid:
            near = difflib.get_close_matches(str(k), valid, n=1, cutoff=0.6)
            hint = f"did you mean {near[0]}?" if near else f"valid: {', '.join(valid)}"
            st.die(f"plan {path}: unknown key {where}{k}; {hint}")


def check_schema(path, plan):
    """Every key of a plan against what reads it: the plan's own keys, fetch_arxiv.py's flags under
    store.build, train.py's flags in fixed and the grid axes."""
    _check_keys(path, "", plan, list(PLAN_KEYS))
    for key, kind, what in (("store", dict, "mapping"), ("fixed", dict, "mapping of train.py flags to values"),
                            ("slurm", dict, "mapping"), ("name", str, "string")):
        if plan.get(key) is not None and not isinstance(plan[key], kind):
            st.die(f"plan {path}: {key} must be a {what} (got {type(plan[key]).__name__})")
    _check_keys(path, "store.", plan.get("store") or {}, list(STORE_KEYS))
    build = (plan.get("store") or {}).get("build") or {}
    if not isinstance(build, dict):
        st.die(f"plan {path}: store.build must be a mapping of fetch_arxiv.py flags")
    fetch = [f for f in script_flags("fetch_arxiv.py") if f != "output_dir"]
    _check_keys(path, "store.build.", build, fetch, {"output_dir": "store.data_dir"})
    _check_keys(path, "slurm.", plan.get("slurm") or {}, list(SLURM_KEYS))
    script = plan.get("script", TRAIN)
    if script not in SCRIPTS:
        st.die(f"plan {path}: script must be one of {', '.join(SCRIPTS)} (got {script!r})")
    train = [f for f in script_flags(script) if f not in SWEEP_OWNED]
    _check_keys(path, "fixed.", plan.get("fixed") or {}, train, SWEEP_OWNED)
    grids = plan["grid"] if isinstance(plan["grid"], list) else [plan["grid"]]
    for i, g in enumerate(grids):
        if isinstance(g, dict):
            _check_keys(path, f"grid[{i}]." if len(grids) > 1 else "grid.", g, train, SWEEP_OWNED)
    gpr = plan.get("gpus_per_run")
    if gpr is not None and (isinstance(gpr, bool) or not isinstance(gpr, int) or gpr < 1):
        st.die(f"plan {path}: gpus_per_run must be a positive integer (got {plan['gpus_per_run']!r})")


def _yaml_load(text):
    """yaml.safe_load, but with 1e6 / 2.5E-4 read as numbers: YAML 1.1 (PyYAML) wants a dot in a float
    ("1.0e6"), so a budget written 1e6 would be the string "1e6" (and its runs refused as duplicates)."""
    import re
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def number(loader, node):  # 1e6 -> 1000000 (an int: a budget or count), 6e-4 -> 0.0006
        v = float(loader.construct_scalar(node).replace("_", ""))
        return int(v) if v.is_integer() and abs(v) < 2 ** 53 else v

    Loader.add_implicit_resolver("!e-number", re.compile(
        r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+.0123456789"))
    for first in "-+.0123456789":  # before PyYAML's float: 1.0e+6 was the float 1000000.0 beside 1.0e6's int
        rs = Loader.yaml_implicit_resolvers[first]
        rs.insert(0, rs.pop())
    Loader.add_constructor("!e-number", number)
    return yaml.load(text, Loader=Loader)


def parse_error(e):
    """A YAML or JSON syntax error in one line, keeping where it is: PyYAML's message spans several lines
    (problem, context, each with its place and a caret), and its first line alone has no place."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    if mark is not None:  # a yaml.MarkedYAMLError; its marks count from 0
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        ctx = e.context_mark
        context = (f" ({e.context} at line {ctx.line + 1}, column {ctx.column + 1})"
                   if e.context and ctx is not None and ctx is not mark else "")
        return f"{type(e).__name__} at {where}: {e.problem or e.context}{context}"
    if isinstance(e, json.JSONDecodeError):
        return f"JSONDecodeError at line {e.lineno}, column {e.colno}: {e.msg}"
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"


def load_plan(path):
    path = Path(path)
    if not path.is_file():
        st.die(f"plan {path}: no such file")
    raw = path.read_bytes()
    try:  # a plan saved by an editor in Latin-1 (a comment's "café"): one line with the place, not a traceback
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        st.die(f"plan {path}: cannot parse (not UTF-8: byte 0x{raw[e.start]:02x} at line {line}, column {column}); "
               "save it as UTF-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            plan = _yaml_load(text)
        else:
            plan = json.loads(text)
    except Exception as e:
        st.die(f"plan {path}: cannot parse ({parse_error(e)})")
    if isinstance(plan, dict):
        _check_keys(path, "", plan, list(PLAN_KEYS))  # first: a misspelt grid: is named as such
    if not isinstance(plan, dict) or not isinstance(plan.get("grid"), (dict, list)):
        st.die(f"plan {path}: needs a 'grid': a mapping of train.py flags to lists of values (or a list of them)")
    check_schema(path, plan)
    if not (plan.get("store") or {}).get("data_dir"):
        st.die(f"plan {path}: needs store.data_dir")
    grids = plan["grid"] if isinstance(plan["grid"], list) else [plan["grid"]]
    for g in grids:
        if not isinstance(g, dict):
            st.die(f"plan {path}: each grid must be a mapping of train.py flags to lists of values")
        if not g:  # no axis: a run with an empty id, whose directory would be OUT/runs itself
            st.die(f"plan {path}: a grid needs at least one axis (a single run: one axis with one value)")
        for k, v in g.items():
            if not isinstance(v, list) or not v:
                st.die(f"plan {path}: grid.{k} must be a non-empty list")
        for s in g.get("seed", []):  # the run id writes it as s<int>
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                st.die(f"plan {path}: grid.seed values must be non-negative integers (got {s!r})")
    plan["grid"] = grids
    plan["name"] = plan.get("name") or path.stem
    plan["fixed"] = plan.get("fixed") or {}
    plan["gpus_per_run"] = plan.get("gpus_per_run") or 1
    return plan


# ----------------------------------------------------------------------------------------------------
# plan values: each checked by the script's own parser before anything starts

# modules a script's parse_args may use as they are (light: no torch): the standard library and these; any
# other name it uses must be a literal constant of the module it imports the name from (PYTHIA, SAMPLING_MODES)
LIGHT_MODULES = ("store",)


def _light(module):
    return module in LIGHT_MODULES or module.split(".")[0] in sys.stdlib_module_names


def _constant(module, name):
    """The literal value of the top-level assignment `name = ...` in a project module, read, not imported."""
    tree = ast.parse((PROJECT / f"{module.replace('.', '/')}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{module}.py has no constant {name}")


def _defined(node):
    """The names a module-level statement binds (an import, an assignment, a def or class)."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


def script_parser(script):
    """The script's own parse_args (train.py's, ngram.py's), taken from its source and run here without the
    script's imports (torch): a value the script refuses is refused before a run starts, by the same check.
    A parse_args the script imports from a project module (`from train_args import parse_args`) is followed.
    What parse_args needs of its module (helpers, constants, light imports, and what those need in turn) is
    run with it, in the module's order; a name that needs a heavy import is left out (check_values says so
    in one line if parse_args cannot run without it)."""
    source = PROJECT / script
    tree = ast.parse(source.read_text())
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "parse_args"), None)
    if fn is None:
        origin = next((n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.level == 0
                       and any(a.name == "parse_args" and a.asname in (None, "parse_args") for a in n.names)), None)
        if origin is None or not (PROJECT / f"{origin.replace('.', '/')}.py").is_file():
            st.die(f"cannot check the plan's values: {script} has no parse_args (sweep.script_parser reads it)")
        return script_parser(f"{origin.replace('.', '/')}.py")
    names = lambda node: {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    used, grown = names(fn), True
    while grown:  # what parse_args uses, and what that uses (a type= helper calling a module constant)
        grown = False
        for node in tree.body:
            if node is not fn and _defined(node) & used and not isinstance(node, (ast.Import, ast.ImportFrom)):
                more = names(node) - used
                grown, used = grown or bool(more), used | more
    ns = {"__doc__": ast.get_docstring(tree, clean=False) or "", "__name__": Path(script).stem}
    for node in tree.body:  # in order: a later assignment may use an earlier import (pos = st.number(...))
        if node is fn or not _defined(node) & used:
            continue
        try:
            if isinstance(node, ast.Import):
                for a in node.names:  # `import os.path` binds os; `import x.y as z` binds z to x.y
                    bound = a.asname or a.name.split(".")[0]
                    if bound in used and _light(a.name):
                        module = importlib.import_module(a.name)
                        ns[bound] = module if a.asname else importlib.import_module(bound)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                for a in node.names:
                    if (a.asname or a.name) in used:
                        ns[a.asname or a.name] = (getattr(importlib.import_module(node.module), a.name)
                                                  if _light(node.module) else _constant(node.module, a.name))
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.FunctionDef, ast.ClassDef)):
                exec(compile(ast.Module(body=[node], type_ignores=[]), str(source), "exec"), ns)
        except Exception:
            pass  # not a light value: parse_args fails on it below only if it really uses it
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(source), "exec"), ns)
    return ns["parse_args"]


def _refusal(parse, argv, shown=()):
    """The script's one-line refusal of argv (None: accepted), without its "error: " and "(see --help)";
    shown: the plan's flags, named when the parser raises instead of refusing."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parse(argv)
    except SystemExit as e:
        if e.code in (0, None):
            return None
        line = (err.getvalue().strip().splitlines() or [f"exit code {e.code}"])[-1]
        return re.sub(r" \(see \S+ --help\)$", "", line.removeprefix("error: "))
    except Exception as e:  # a value the parser chokes on
        return (f"{' '.join(shown)}: " if shown else "") + f"{type(e).__name__}: {e}"
    return None


def model_config_problem(v):
    """Why train.py would refuse a --model_config (None: it would not): a named config or a JSON file of an
    object. The fields themselves are checked by transformers in the run (it needs torch)."""
    names = _constant("model", "PYTHIA")
    if v in names:
        return None
    f = project_path(v)
    if not f.is_file():
        return f"neither a named config ({', '.join(names)}) nor a JSON file"
    try:
        ok = isinstance(json.loads(f.read_text()), dict)
    except (OSError, ValueError) as e:
        return f"{f}: not valid JSON ({e})"
    return None if ok else f"{f}: not a JSON object of GPTNeoXConfig fields"


# SLURM's --time forms (M, M:S, H:M:S, D-H[:M[:S]]) and its words for no limit
SLURM_TIME = re.compile(r"^(\d+-\d+(:\d+){0,2}|\d+(:\d+){0,2}|(?i:unlimited|infinite))$")


def slurm_problems(sl):
    """The slurm: block's values, one line each: time a string (unquoted, YAML reads 12:00:00 as the number
    43200, which SLURM would take as minutes), counts positive integers, extra a list of #SBATCH options."""
    out = []
    t = sl.get("time")
    if t is not None and not (isinstance(t, str) and SLURM_TIME.match(t)):
        out.append(f"slurm.time {t!r}: must be a quoted SLURM time such as \"04:00:00\" or \"1-12:00:00\""
                   + (" (unquoted, YAML reads 12:00:00 as a number of seconds)" if isinstance(t, int) else ""))
    for k in ("cpus_per_task", "max_concurrent"):
        v = sl.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            out.append(f"slurm.{k} {v!r}: must be a positive integer")
    if sl.get("partition") is not None and not isinstance(sl["partition"], str):
        out.append(f"slurm.partition {sl['partition']!r}: must be a partition name")
    extra = sl.get("extra")
    if extra is not None and (not isinstance(extra, list) or not all(isinstance(x, str) for x in extra)):
        out.append(f"slurm.extra {extra!r}: must be a list of #SBATCH options, e.g. [\"--account=proj42\"]")
    return out


def check_values(path, plan):
    """Every value of fixed: and the grids, each through the script's own parser (a budget of -3000, a
    seed out of range, a K of 12, a sampling of 'uniform') and the checks train.py makes later on
    (model_config a named config or a JSON file, categories known): one line per refused value naming its
    key, exit 2, before any run starts or any script is emitted."""
    script = plan.get("script", TRAIN)
    parse = script_parser(script)
    # every value is parsed among the flags sweep.py gives each run (train_command): a parser that needs one
    # of them does not refuse every value; one that fails with none of the plan's values cannot check them
    base = ["--data_dir", str(project_path(plan["store"]["data_dir"])), "--output_dir", "runs", "--run_name", "r"]
    why = _refusal(parse, base + ["--resume"])
    if why is not None:
        st.die(f"cannot check the plan's values: {script}'s parse_args fails without any plan value ({why}); "
               "sweep.script_parser runs it without the script's heavy imports")
    gpus = int(plan.get("gpus_per_run") or 1)
    places = [("fixed.", {k: [v] for k, v in plan["fixed"].items()})]
    places += [(f"grid[{i}]." if len(plan["grid"]) > 1 else "grid.", g) for i, g in enumerate(plan["grid"])]
    problems, seen = [], set()
    for where, axes in places:
        for key, values in axes.items():
            for v in values:
                shown = v if isinstance(v, (str, int, float)) else json.dumps(v, ensure_ascii=False)
                if (where + key, json.dumps(v)) in seen:
                    continue
                seen.add((where + key, json.dumps(v)))
                if key == "batch_size" and gpus > 1 and not isinstance(v, bool) and isinstance(v, int) and v % gpus:
                    problems.append(f"{where}{key} {shown}: not divisible by gpus_per_run {gpus}")
                    continue
                flags = train_flags({key: v}, 1)
                why = _refusal(parse, base + flags + ["--resume"], flags)
                if why is None and key == "model_config" and script == TRAIN:
                    why = model_config_problem(str(v))
                if why is None and key == "categories":
                    names = v if isinstance(v, list) else [v]
                    unknown = [c for c in map(str, names) if c not in st.CATEGORIES]
                    if unknown:
                        why = f"unknown categor{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)} (known: {', '.join(st.CATEGORIES)})"
                    elif len(set(names)) != len(names):
                        why = "a category is listed twice"
                if why:
                    problems.append(f"{where}{key} {shown}: {why}")
    problems += slurm_problems(plan.get("slurm") or {})
    for p in problems:
        print(f"error: plan {path}: {p}", file=sys.stderr)
    if problems:
        raise SystemExit(2)


def project_path(p):
    p = Path(os.path.expanduser(str(p)))
    return p if p.is_absolute() else PROJECT / p


def _exact(short, v):
    """`short` when it reads back as exactly v, else v written in full: two values never share a name."""
    try:
        num, mult = (short[:-1], dict(k=1e3, M=1e6, G=1e9, T=1e12)[short[-1]]) if short[-1] in "kMGT" else (short, 1)
        if float(num) * mult == float(v):
            return short
    except (ValueError, KeyError):
        pass
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _slug(v):
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (int, float)):
        return _exact(f"{v:g}", v) if isinstance(v, float) else str(v)
    if isinstance(v, list):
        return "+".join(_slug(x) for x in v)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", Path(str(v)).stem if str(v).endswith(".json") else str(v))


def model_names(plan):
    """{model_config value: its name in run ids}: a JSON file's stem, plus 8 hex digits of the file's
    content where two different files share a stem (cfgA/tiny.json, cfgB/tiny.json)."""
    values = {json.dumps(v) for g in plan["grid"] for v in g.get("model_config", [])}
    by_slug = {}
    for v in map(json.loads, values):
        by_slug.setdefault(_slug(v), []).append(v)
    names = {}
    for slug, vs in by_slug.items():
        for v in vs:
            if len(vs) > 1 and str(v).endswith(".json"):
                f = project_path(v)
                content = f.read_bytes() if f.is_file() else str(v).encode()
                names[json.dumps(v)] = f"{slug}-{hashlib.sha256(content).hexdigest()[:8]}"
            else:
                names[json.dumps(v)] = slug
    return names


def run_id(params, names=None):
    """A stable, readable id: model_K3_s04_d90M_balanced[_tag][_name-value...]. names: model_names(plan)."""
    parts = []
    if "model_config" in params:
        parts.append((names or {}).get(json.dumps(params["model_config"])) or _slug(params["model_config"]))
    if "K" in params and "categories" not in params:
        parts.append(f"K{params['K']}")
    if "categories" in params:
        parts.append("c" + _slug(params["categories"]))
    if "seed" in params:
        parts.append(f"s{int(params['seed']):02d}")
    if "token_budget" in params:
        parts.append(f"d{_exact(st.fmt_count(params['token_budget']), params['token_budget'])}")
    if "sampling" in params:
        parts.append(str(params["sampling"]))
    if params.get("tag_categories"):
        parts.append("tag")
    for k in sorted(set(params) - set(HEAD_AXES)):
        parts.append(f"{SHORT_NAMES[k]}{_slug(params[k])}" if k in SHORT_NAMES else f"{k}-{_slug(params[k])}")
    return "_".join(parts)


def expand(plan):
    """[(run_id, params)] in a deterministic order: grid by grid, each grid's axes as written, the last
    varying fastest. Only grid axes enter the id; fixed values are the same for every run. A run that two
    grids both produce appears once; two different runs that would share an id refuse the plan."""
    runs, seen = [], {}
    names = model_names(plan)
    for grid in plan["grid"]:
        axes = list(grid)
        for combo in itertools.product(*(grid[a] for a in axes)):
            grid_params = dict(zip(axes, combo))
            if grid_params.get("tag_categories") is False:
                del grid_params["tag_categories"]  # the untagged default: same run, same id
            rid = run_id(grid_params, names)
            params = {**plan["fixed"], **grid_params}
            if rid in seen:
                if seen[rid] != params:
                    st.die(f"plan: two different runs would share the id {rid}: {json.dumps(seen[rid], sort_keys=True)} "
                           f"and {json.dumps(params, sort_keys=True)}; make the values differ in their names")
                continue
            seen[rid] = params
            runs.append((rid, params))
    return runs


def train_flags(params, gpus=1, relative=False):
    """train.py flags for one run; batch_size in a plan is the global batch (windows per step). relative:
    model_config files stay relative to the project root (emitted scripts cd there first)."""
    flags = []
    for k, v in params.items():
        if k == "batch_size" and gpus > 1:
            if int(v) % gpus:
                st.die(f"batch_size {v} is not divisible by gpus_per_run {gpus}")
            v = int(v) // gpus
        if k == "model_config" and str(v).endswith(".json") and not relative:
            v = str(project_path(v))
        if isinstance(v, bool):
            if v:
                flags.append(f"--{k}")
        elif isinstance(v, list):
            flags += [f"--{k}", *map(str, v)]
        elif v is not None:
            flags += [f"--{k}", str(v)]
    return flags


def train_command(plan, out, rid, params, python=sys.executable, gpus=1, relative=False):
    """The train.py command of one run. relative (emit): the project's paths as the plan gives them, for a
    script that cds into the project directory (on the cluster, --project_dir) first."""
    data_dir = str(plan["store"]["data_dir"]) if relative else str(project_path(plan["store"]["data_dir"]))
    script = plan.get("script", TRAIN)  # a plan may run another script of train.py's flags and run directory (ngram.py)
    script = script if relative else str(PROJECT / script)
    base = ([python, script] if gpus == 1 else
            [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", script])
    return base + ["--data_dir", data_dir, "--output_dir", str(Path(out).resolve() / "runs"), "--run_name", rid,
                   *train_flags(params, gpus, relative), "--resume"]


def ensure_store(plan):
    data_dir = project_path(plan["store"]["data_dir"])
    if st.read_meta(data_dir) is not None:
        return data_dir
    build = plan["store"].get("build")
    if not build:
        st.die(f"store {data_dir} is missing and the plan has no store.build; run fetch_arxiv.py first")
    import fetch_arxiv
    argv = ["--output_dir", str(data_dir)]
    for k, v in build.items():
        if k in ("dataset_path", "tokenizer") and v:
            v = str(project_path(v))
        if isinstance(v, bool):
            argv += [f"--{k}"] if v else []
        else:
            argv += [f"--{k}", str(v)]
    print(f"building the store for plan {plan['name']}: fetch_arxiv.py {' '.join(argv)}", flush=True)
    fetch_arxiv.main(argv)
    return data_dir


# ----------------------------------------------------------------------------------------------------
# status

def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except PermissionError:
        return True  # it exists, owned by another user
    except (OSError, ValueError, OverflowError):
        return False


def process_start(pid):
    """'<boot id>:<start time in clock ticks>' of process pid on this host (None where /proc cannot say): a
    pid reused by a later process, or after a reboot, has another."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"  # field 22, counted after the (comm) field
    except (OSError, ValueError, IndexError):
        return None


def write_pid_file(run_dir, pid):
    st.write_json_atomic(Path(run_dir) / PID_FILE, {"pid": pid, "host": socket.gethostname(),
                                                    "start": process_start(pid)})


def pid_file_process(path):
    """The pid a run's pid file names if that very process still runs here, else None. A pid file left by a
    sweep killed with -9 (its run ended since), naming another host, written before a reboot, or in the old
    bare-pid format says nothing: a later process with the same pid is not the run, and the run's lock
    (train.py's RUN_LOCK) decides."""
    try:
        rec = json.loads(Path(path).read_text())
        pid = int(rec["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # pid <= 0 names no one process (kill(-1, 0) reaches every process, kill(0, 0) this group: both "alive")
    if pid <= 0 or rec.get("host") != socket.gethostname() or not _pid_alive(pid):
        return None
    start = process_start(pid)
    if rec.get("start") is None or start is None:  # no /proc (macOS): the pid alone, on this host
        return pid if rec.get("start") is None and start is None else None
    return pid if start == rec["start"] else None


def last_events(out):
    """{run_id: last sweep event} from OUT/sweep_events.jsonl."""
    p = Path(out) / "sweep_events.jsonl"
    ev = {}
    if p.is_file():
        for line in p.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            ev[e["run_id"]] = e
    return ev


def params_record(plan, params):
    """What sweep_params.json holds: the run's parameters as the plan gives them, and the store."""
    return {"params": json.loads(json.dumps(params)), "data_dir": str(plan["store"]["data_dir"])}


def param_conflict(out, rid, plan, params):
    """None, or a one-line description of how the run directory's recorded parameters differ."""
    p = Path(out) / "runs" / rid / "sweep_params.json"
    if not p.is_file():
        return None
    try:
        saved = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return f"{p} is unreadable"
    now = params_record(plan, params)
    diffs = [f"{k}: {saved['params'].get(k)!r} in the run, {now['params'].get(k)!r} in the plan"
             for k in sorted(set(saved["params"]) | set(now["params"])) if saved["params"].get(k) != now["params"].get(k)]
    if saved.get("data_dir") != now["data_dir"]:
        diffs.append(f"store.data_dir: {saved.get('data_dir')!r} in the run, {now['data_dir']!r} in the plan")
    return "; ".join(diffs) or None


def run_status(out, rid, events=None, conflict=None):
    """complete | failed | running | interrupted | conflict | pending, and the summary (or None)."""
    rd = Path(out) / "runs" / rid
    if conflict:
        return "conflict", None
    summary = None
    if (rd / "summary.json").is_file():
        try:
            summary = json.loads((rd / "summary.json").read_text())
        except (OSError, ValueError):  # cut, or not UTF-8
            summary = None
        if not isinstance(summary, dict):  # null, a list: no summary (not a traceback in status)
            summary = None
    if summary and summary.get("status") == "complete":
        return "complete", summary
    if runlock.holder(rd / RUN_LOCK):  # a train.py holds the run: this sweep's, another's, a SLURM task's
        return "running", summary
    if pid_file_process(rd / PID_FILE):  # started by a `run` here, its train.py not yet holding RUN_LOCK
        return "running", summary
    if summary and summary.get("status") == "failed":
        return "failed", summary
    e = (events or {}).get(rid)
    # a run this sweep stopped (Ctrl-C, SIGTERM) is interrupted whatever its exit code: torchrun exits 1
    # when its workers were signalled, although they checkpointed cleanly
    if (e and e.get("event") == "end" and e.get("returncode") not in (0, *INTERRUPTED_CODES)
            and not e.get("stopped_by_sweep")):
        return "failed", summary
    # a directory holding only the lock and pid files (a run stopped before it wrote anything) has nothing to resume
    if rd.exists() and any(p.name not in (RUN_LOCK, PID_FILE) for p in rd.iterdir()):
        return "interrupted", summary
    return "pending", summary


def set_aside(out, rid):
    """Move a failed run's directory to OUT/failed/<run_id>.<time> (kept for reading, out of the sweep)."""
    stamp, n = time.strftime('%Y%m%d-%H%M%S'), 0
    dest = Path(out) / "failed" / f"{rid}.{stamp}"
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{rid}.{stamp}-{n}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(Path(out) / "runs" / rid, dest)
    return dest


def _event(out, **e):
    with open(Path(out) / "sweep_events.jsonl", "a") as f:
        f.write(json.dumps({"time": time.time(), **e}) + "\n")


def prune(run_dir):
    """Delete what a complete run no longer needs: step checkpoints (with their optimizer state)."""
    freed = 0
    for d in Path(run_dir).glob("step_*"):
        freed += sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        shutil.rmtree(d, ignore_errors=True)
    return freed


# ----------------------------------------------------------------------------------------------------
# commands

def visible_gpus():
    """GPU ids that CUDA_VISIBLE_DEVICES (or, unset, the driver) shows this process; [] without GPUs."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:  # as CUDA reads it: blanks around ids ignored, the list ends at an invalid entry (-1)
        ids = []
        for g in (g.strip() for g in env.split(",")):
            if not g or g.startswith("-"):
                break
            ids.append(g)
        return ids
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def chosen_gpus(args):
    """[(visible index, CUDA_VISIBLE_DEVICES entry)] of the GPUs the sweep uses. --gpus indexes the devices
    this process sees: on a node that assigned GPU 3 (CUDA_VISIBLE_DEVICES=3), --gpus 0 is that GPU, not
    the node's GPU 0."""
    visible = visible_gpus()
    if not args.gpus:
        return list(enumerate(visible))
    picked = []
    for g in (g.strip() for g in args.gpus.split(",") if g.strip()):
        if not g.isdigit():
            st.die(f"--gpus {args.gpus}: {g!r} is not an index (0, 1, ... of the visible GPUs)")
        i = int(g)
        if os.environ.get("CUDA_VISIBLE_DEVICES") is None and not visible:
            picked.append((i, g))  # no GPU seen here (a CPU machine): the ids are passed on as given
        elif i >= len(visible):
            st.die(f"--gpus {args.gpus}: index {i}, but {len(visible)} GPU(s) are visible "
                   f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
        else:
            picked.append((i, visible[i]))
    return picked


def worker_slots(plan, args, gpus=None):
    """One entry per concurrent run: the CUDA_VISIBLE_DEVICES value it runs with (None on CPU)."""
    gpus = [g for _, g in (chosen_gpus(args) if gpus is None else gpus)]
    if not gpus:
        return [None] * args.parallel
    per_run = int(plan.get("gpus_per_run", 1))
    if per_run > 1:
        if args.runs_per_gpu != 1:
            st.die(f"--runs_per_gpu {args.runs_per_gpu}: a plan with gpus_per_run {per_run} runs one run per GPU group")
        if len(gpus) % per_run:
            st.die(f"--gpus {','.join(gpus)}: {len(gpus)} GPUs do not split into groups of gpus_per_run {per_run}")
        return [",".join(gpus[i:i + per_run]) for i in range(0, len(gpus), per_run)]
    return [g for g in gpus for _ in range(args.runs_per_gpu)]


def node_cores():
    """Cores this process may run on (a SLURM job's allocation, not the whole node)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def thread_env(n_processes):
    """Per-process thread counts when n_processes training processes share this node's cores: OpenMP and
    inductor's compile workers (by default up to 32 per process: 8 GPUs x 4 runs would start ~1,000)."""
    n = str(max(1, node_cores() // max(1, n_processes)))
    return {"OMP_NUM_THREADS": n, "TORCHINDUCTOR_COMPILE_THREADS": n}


# (free, total) bytes of visible GPUs, asked in a child process: torch.cuda.mem_get_info in the sweep process
# would create a CUDA context on each chosen GPU and hold it for the whole sweep (~0.5 GB of every GPU; in
# EXCLUSIVE_PROCESS compute mode, common on clusters, it would lock every run out of its GPU)
MEM_QUERY = "import json, sys, torch; print(json.dumps([torch.cuda.mem_get_info(int(i)) for i in sys.argv[1:]]))"


def gpu_free_memory(indexes):
    """[(free, total)] bytes of the visible GPUs `indexes` (torch.cuda.mem_get_info, in a child process)."""
    try:
        r = subprocess.run([sys.executable, "-c", MEM_QUERY, *map(str, indexes)], capture_output=True, text=True,
                           timeout=300)
    except subprocess.TimeoutExpired:
        st.die("cannot read the free memory of the chosen GPU(s): torch.cuda.mem_get_info took over 300 s")
    try:
        got = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else None
    except (IndexError, json.JSONDecodeError):
        got = None
    if got is None or len(got) != len(indexes):
        why = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        st.die(f"cannot read the free memory of the chosen GPU(s) (torch.cuda.mem_get_info): {why}")
    return [tuple(x) for x in got]


def check_gpu_memory(plan, todo, gpus, runs_per_gpu):
    """Print each distinct run shape's estimated GPU memory (model.gpu_memory_estimate) and refuse, in one
    line, a --runs_per_gpu whose runs cannot fit the free memory of a chosen GPU (gpu_free_memory: asked in
    a child process, so that the sweep holds no CUDA context while its runs train)."""
    if not todo or not gpus:
        return
    import torch
    import model as mdl
    if not torch.cuda.is_available():
        print("no CUDA device in this process: the GPU memory check is skipped", flush=True)
        return
    vocab = st.Store(project_path(plan["store"]["data_dir"])).vocab_size
    per_run = int(plan.get("gpus_per_run", 1))
    worst, shapes = None, {}
    for _, params, _ in todo:
        key = (str(params.get("model_config", "pythia-14m")), int(params.get("batch_size", 32)) // per_run,
               params.get("dtype", "auto"))
        if key not in shapes:
            try:
                cfg = mdl.model_config(str(project_path(key[0])) if str(key[0]).endswith(".json") else key[0], vocab)[0]
            except mdl.ConfigError as e:
                st.die(str(e))
            est = mdl.gpu_memory_estimate(cfg, key[1], torch.float32 if key[2] == "float32" else torch.bfloat16)
            shapes[key] = sum(est.values())
            parts = ", ".join(f"{k} {v / 2**30:.2f}" for k, v in est.items())
            print(f"GPU memory per run, estimated: {Path(key[0]).stem} at batch {key[1]} per GPU: "
                  f"{shapes[key] / 2**30:.1f} GiB ({parts})", flush=True)
            if worst is None or shapes[key] > shapes[worst]:
                worst = key
    need = runs_per_gpu * shapes[worst]
    for (index, gid), (free, total) in zip(gpus, gpu_free_memory([i for i, _ in gpus])):
        if need > free:
            st.die(f"--runs_per_gpu {runs_per_gpu}: {runs_per_gpu} x {shapes[worst] / 2**30:.1f} GiB "
                   f"({Path(worst[0]).stem}, batch {worst[1]}) = {need / 2**30:.1f} GiB > {free / 2**30:.1f} GiB "
                   f"free of {total / 2**30:.1f} GiB on GPU {gid}; lower --runs_per_gpu (at most "
                   f"{max(0, int(free // shapes[worst]))} fit) or the batch")


class Launcher:
    """Runs train.py processes for a sweep, one per free slot; on Ctrl-C, stops them all cleanly."""

    def __init__(self, plan, out, slots, keep_checkpoints):
        self.plan, self.out, self.keep = plan, Path(out), keep_checkpoints
        self.slots = queue.Queue()
        for s in slots:
            self.slots.put(s)
        # every training process on this node (a torchrun slot has one per GPU) shares the cores
        self.thread_env = thread_env(sum(len(s.split(",")) if s else 1 for s in slots))
        self.stopping = threading.Event()
        self.procs = {}
        self.procs_mutex = threading.Lock()  # the worker threads share self.procs

    def launch(self, item):
        rid, params, status = item
        if self.stopping.is_set():
            return "interrupted" if status == "interrupted" else "pending"
        slot = self.slots.get()
        try:
            return self._run(rid, params, status, slot)
        finally:
            self.slots.put(slot)

    def _run(self, rid, params, status, slot):
        out, plan = self.out, self.plan
        gpus = len(slot.split(",")) if slot else 1
        cmd = train_command(plan, out, rid, params, gpus=gpus)
        rd = out / "runs" / rid
        rd.mkdir(parents=True, exist_ok=True)
        if not (rd / "sweep_params.json").is_file():
            st.write_json_atomic(rd / "sweep_params.json", params_record(plan, params), indent=1)
        env = {**os.environ, **self.thread_env, "PYTHONUNBUFFERED": "1"}
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        t0 = time.time()
        with open(out / "logs" / f"{rid}.log", "a") as log:
            log.write(f"$ {'CUDA_VISIBLE_DEVICES=' + slot + ' ' if slot else ''}{shlex.join(cmd)}\n")
            log.flush()
            # a session of its own: a terminal's Ctrl-C reaches the sweep alone, which stops each run once
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT, env=env,
                                 start_new_session=True)
            with self.procs_mutex:
                self.procs[rid] = p
            write_pid_file(rd, p.pid)
            _event(out, run_id=rid, event="start", pid=p.pid, gpu=slot, resumed=status == "interrupted")
            rc = p.wait()
            with self.procs_mutex:
                self.procs.pop(rid, None)
        (rd / PID_FILE).unlink(missing_ok=True)
        _event(out, run_id=rid, event="end", returncode=rc, wall_s=time.time() - t0,
               stopped_by_sweep=self.stopping.is_set())
        state, summary = run_status(out, rid, last_events(out))
        msg = f"{rid}: {state} in {time.time() - t0:.0f} s" + (f" on GPU {slot}" if slot else "")
        if state == "complete" and summary:
            fmt = lambda v: "-" if not isinstance(v, (int, float)) else f"{v:.4f}"  # a value may be missing
            msg += (f" (final val_loss {fmt(summary.get('final_val_loss'))}, test macro "
                    f"{fmt(summary.get('test_macro_loss'))})")
            if not self.keep:
                prune(rd)
        elif state != "complete":
            msg += f" (exit code {rc}; see {out / 'logs' / (rid + '.log')})"
        print(msg, flush=True)
        return state

    def interrupt(self):
        """Stop launching; ask each running run to checkpoint and stop (SIGINT), then wait for them."""
        self.stopping.set()
        with self.procs_mutex:
            procs = dict(self.procs)
        for p in procs.values():
            try:
                p.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
        return list(procs)  # their run ids


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_run(plan, args):
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    try:  # one `run` per --out (each run directory is locked by its train.py as well)
        sweep_lock = runlock.acquire(out / SWEEP_LOCK, warn=lambda m: print(m, flush=True))
    except runlock.Held as e:
        st.die(f"--out {out} is in use by another `sweep.py run`: {e}; wait for it, or stop it (Ctrl-C) first")
    try:
        return _run_locked(plan, args, out)
    finally:
        sweep_lock.release()


def _run_locked(plan, args, out):
    ensure_store(plan)
    runs = expand(plan)
    events = last_events(out)
    todo, n_done, conflicts = [], 0, []
    for rid, params in runs:
        conflict = param_conflict(out, rid, plan, params)
        status, _ = run_status(out, rid, events, conflict)
        if status == "conflict" and args.retry_failed and run_status(out, rid, events)[0] == "failed":
            # a failed run whose plan was corrected since: the failed attempt is set aside, not reused
            kept = set_aside(out, rid)
            print(f"{rid}: failed earlier with other parameters ({conflict}); that attempt is kept in {kept}, "
                  "running it with the plan's")
            status = "pending"
        if status == "conflict":
            conflicts.append(rid)
            print(f"{rid}: refused, the run directory holds another configuration ({conflict}); use another "
                  "--out, or remove the run directory to run it anew")
        elif status == "complete":
            n_done += 1
        elif status == "running":
            print(f"{rid}: running in another process, skipped")
        elif status == "failed" and not args.retry_failed:
            print(f"{rid}: failed earlier, skipped (--retry_failed to try again)")
        else:
            todo.append((rid, params, status))
    gpus = chosen_gpus(args)
    slots = worker_slots(plan, args, gpus)
    if slots[0] is not None:  # do the runs fit their GPUs?
        check_gpu_memory(plan, todo, gpus, args.runs_per_gpu)
    where = (f"on GPU(s) {', '.join(sorted(set(slots)))}, {len(slots)} at a time" if slots[0] is not None
             else f"on the CPU, {len(slots)} at a time")
    print(f"plan {plan['name']}: {len(runs)} runs, {n_done} complete, {len(todo)} to run {where}", flush=True)
    launcher = Launcher(plan, out, slots, args.keep_checkpoints)
    # SIGTERM (a scheduler ending the job) is handled like Ctrl-C: the runs checkpoint and stop
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if threading.current_thread() is threading.main_thread() else None
    pool = ThreadPoolExecutor(max_workers=len(slots))
    futures = [pool.submit(launcher.launch, item) for item in todo]
    try:
        results = [f.result() for f in futures]
    except KeyboardInterrupt:
        rids = launcher.interrupt()
        pool.shutdown(wait=True, cancel_futures=True)
        # a run stopped in its imports or setup, before any checkpoint, has none: the next `run` starts it anew
        fresh = sum(not (any((out / "runs" / r).glob("step_*")) or (out / "runs" / r / "final").is_dir()) for r in rids)
        where = f"{len(rids) - fresh} at a checkpoint, {fresh} before their first (they start anew)" if fresh else "at a checkpoint"
        print(f"interrupted: {len(rids)} running run(s) stopped {where}; `python sweep.py run {args.plan} --out "
              f"{args.out}` resumes them", flush=True)
        raise SystemExit(130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    pool.shutdown()
    if not args.keep_checkpoints:  # runs completed earlier (or by another process) too
        freed = sum(prune(out / "runs" / rid) for rid, _ in runs if run_status(out, rid)[0] == "complete")
        if freed:
            print(f"pruned step checkpoints of complete runs: {freed / 1e6:,.1f} MB freed")
    failed = sum(r in ("failed", "interrupted") for r in results)
    print(f"done: {results.count('complete')} completed now, {failed} failed"
          + (f", {len(conflicts)} refused (conflict)" if conflicts else ""), flush=True)
    return 0 if failed == 0 and not conflicts else 1


def cmd_status(plan, args):
    out = Path(args.out)
    if not out.is_dir():
        st.die(f"--out {out}: no such directory (nothing of this plan has run there yet)")
    events = last_events(out)
    rows = [(rid, *run_status(out, rid, events, param_conflict(out, rid, plan, params))) for rid, params in expand(plan)]
    counts = {s: sum(1 for r in rows if r[1] == s) for s in STATUSES}
    width = max(len(r[0]) for r in rows)
    fmt = lambda v: "-" if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{v:.4f}"
    count = lambda v: f"{v:12,.0f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{'-':>12s}"
    print(f"{'run':{width}s}  {'status':11s} {'tokens':>12s} {'val_loss':>9s} {'test_macro':>10s}")
    for rid, status, s in rows:
        s = s or {}
        print(f"{rid:{width}s}  {status:11s} {count(s.get('tokens_seen') or 0)} {fmt(s.get('final_val_loss')):>9s} "
              f"{fmt(s.get('test_macro_loss')):>10s}")
    print(" | ".join(f"{k} {v}" for k, v in counts.items()))
    from analysis.runs import metrics_note  # what analyze.py notes of a complete run (a running one is mid-write)
    for rid, status, _ in rows:
        note = metrics_note(out / "runs" / rid) if status == "complete" else None
        if note:
            print(f"note: {rid}: {note}")
    return counts


def shell_path(p):
    """p quoted for bash, but a leading ~, ~user or $HOME left for the cluster's shell to expand (quoted,
    '~/x' would be a directory named ~)."""
    p = str(p)
    m = re.match(r"(~[A-Za-z0-9._-]*|\$HOME|\$\{HOME\})(/.*)?$", p)
    if not m:
        return shlex.quote(p)
    head = '"$HOME"' if m.group(1) in ("~", "$HOME", "${HOME}") else m.group(1)
    rest = (m.group(2) or "").lstrip("/")
    return head + ("/" + shlex.quote(rest) if rest else "")


def slurm_script(plan, args, cmds, gpus, note):
    """A SLURM array script: task i runs commands i*R .. i*R+R-1 side by side on its GPU(s) (R = --runs_per_gpu)."""
    sl = plan.get("slurm") or {}
    out = Path(args.out).resolve()
    R = args.runs_per_gpu
    n_tasks = math.ceil(len(cmds) / R)
    lines = ["#!/bin/bash", f"#SBATCH --job-name={plan['name']}",
             f"#SBATCH --array=0-{n_tasks - 1}" + (f"%{sl['max_concurrent']}" if sl.get("max_concurrent") else ""),
             "#SBATCH --nodes=1", "#SBATCH --ntasks=1", f"#SBATCH --gpus-per-task={gpus}",
             f"#SBATCH --cpus-per-task={sl.get('cpus_per_task', 8)}", f"#SBATCH --time={sl.get('time', '04:00:00')}",
             # SLURM opens this file before the script runs: emit created the folder
             f"#SBATCH --output={out / 'logs'}/%x_%A_%a.out"]
    if sl.get("partition"):
        lines.append(f"#SBATCH --partition={sl['partition']}")
    lines += [f"#SBATCH {extra}" for extra in sl.get("extra", [])]
    lines += [f"# {plan['name']}: {len(cmds)} runs in {n_tasks} array tasks ({R} per task, side by side on its "
              f"GPU); {note}", "set -euo pipefail"]
    if args.setup:
        lines.append(args.setup)
    # the task's cores shared by its R x gpus training processes (inductor's compile pool included)
    lines += [f"THREADS=$(( ${{SLURM_CPUS_PER_TASK:-{sl.get('cpus_per_task', 8)}}} / {R * gpus} ))",
              "export OMP_NUM_THREADS=$(( THREADS > 0 ? THREADS : 1 ))",
              "export TORCHINDUCTOR_COMPILE_THREADS=$OMP_NUM_THREADS"]
    lines += [f"cd {shell_path(args.project_dir or PROJECT)}", "CMDS=("]
    lines += [f"  {shlex.quote(c)}" for c in cmds]
    lines += [")", f"R={R}", "first=$((SLURM_ARRAY_TASK_ID * R))", "pids=()",
              'for ((i = first; i < first + R && i < ${#CMDS[@]}; i++)); do',
              '  echo "task ${SLURM_ARRAY_TASK_ID}: ${CMDS[$i]}"',
              '  eval "${CMDS[$i]}" &', "  pids+=($!)", "done",
              "rc=0", 'for p in "${pids[@]}"; do wait "$p" || rc=$?; done', "exit $rc"]
    return "\n".join(lines) + "\n"


def cmd_emit(plan, args):
    out = Path(args.out)
    gpus = int(plan.get("gpus_per_run", 1))
    if gpus > 1 and args.runs_per_gpu != 1:
        st.die(f"--runs_per_gpu {args.runs_per_gpu}: a plan with gpus_per_run {gpus} runs one run per task")
    cmds = [shlex.join(train_command(plan, out, rid, params, python=args.python, gpus=gpus, relative=True))
            for rid, params in expand(plan)]
    build = plan["store"].get("build")
    note = (f"the store {plan['store']['data_dir']} must exist first" +
            (f" (python sweep.py run-store {args.plan}, or fetch_arxiv.py with: {build})" if build else ""))
    if args.format == "commands":
        text = (f"# {plan['name']}: {len(cmds)} runs; {note}; each line is one run (rerunnable: --resume), "
                f"run from the project directory {args.project_dir or PROJECT}\n")
        text += "\n".join(cmds) + "\n"
    else:
        text = slurm_script(plan, args, cmds, gpus, note)
        (out / "logs").mkdir(parents=True, exist_ok=True)  # before sbatch: SLURM will not create it
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return text


def cmd_list(plan, args):
    for rid, params in expand(plan):
        print(f"{rid}  {json.dumps(params)}")


def cmd_store(plan, args):
    print(ensure_store(plan))


def main(argv=None):
    fmt = dict(formatter_class=st.HelpFormatter, allow_abbrev=False)
    p = st.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1], **fmt)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, help):
        c = sub.add_parser(name, help=help, description=help, **fmt)
        c.add_argument("plan", help="plan file (YAML or JSON)")
        return c

    r = command("run", "run the plan's runs on this machine (skip complete, resume interrupted)")
    r.add_argument("--out", required=True, help="sweep directory: runs/, logs/, sweep_events.jsonl")
    r.add_argument("--parallel", type=st.number(int, 1), default=1, help="runs at a time on a machine without GPUs")
    r.add_argument("--gpus", default=None,
                   help="comma-separated indexes of the visible GPUs to use (CUDA_VISIBLE_DEVICES order; "
                        "default: every visible GPU)")
    r.add_argument("--runs_per_gpu", type=st.number(int, 1), default=1, help="runs sharing one GPU at a time")
    r.add_argument("--keep_checkpoints", action="store_true",
                   help="keep the step checkpoints of complete runs (default: deleted; final/ and best/ stay)")
    r.add_argument("--prune", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    r.add_argument("--retry_failed", action="store_true", help="run failed runs again")
    s = command("status", "complete / running / interrupted / failed / conflict / pending per run")
    s.add_argument("--out", required=True, help="sweep directory")
    e = command("emit", "print a SLURM array script or a plain command list")
    e.add_argument("--out", required=True, help="sweep directory on the cluster (its logs/ is created now)")
    e.add_argument("--format", choices=["slurm", "commands"], default="commands", help="output kind")
    e.add_argument("--output", default=None, help="write to this file instead of stdout")
    e.add_argument("--python", default="python", help="interpreter the jobs run train.py with")
    e.add_argument("--setup", default=None,
                   help='shell line run before the runs, e.g. "module load cuda; source venv/bin/activate"')
    e.add_argument("--project_dir", default=None, help="where this project lives on the cluster (default: here)")
    e.add_argument("--runs_per_gpu", type=st.number(int, 1), default=1, help="slurm: runs packed side by side in one array task")
    command("list", "the expanded runs and their parameters")
    command("run-store", "build the plan's store if it is missing")
    args = p.parse_args(argv)  # numeric flags are range-checked here (st.number)
    plan = load_plan(args.plan)
    if args.command in ("run", "emit"):  # before a store is built, a run started or a script written
        check_values(args.plan, plan)
    fn = {"run": cmd_run, "status": cmd_status, "emit": cmd_emit, "list": cmd_list, "run-store": cmd_store}[args.command]
    rc = fn(plan, args)
    if args.command == "run" and rc:
        raise SystemExit(rc)
    return rc


if __name__ == "__main__":
    st.cli(main)
