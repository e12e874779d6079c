"""
Expand an experiment plan (YAML or JSON) into train.py runs, run them here, emit them for a cluster, or
show their status.

    python sweep.py run plans/smoke.yaml --out sweeps/smoke [--parallel 2] [--prune]
    python sweep.py status plans/smoke.yaml --out sweeps/smoke
    python sweep.py emit --format slurm plans/p1_core_31m.yaml --out /scratch/sweeps/p1 > p1.sbatch
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
    slurm: {time: "02:00:00", partition: gpu, cpus_per_task: 8}

Relative paths in a plan (data_dir, model_config files, build paths) are relative to the project root.
Runs live in OUT/runs/<run_id>/ (train.py's run directory); sweep events in OUT/sweep_events.jsonl and each
run's console output in OUT/logs/<run_id>.log. A run is complete exactly when its summary.json says so;
`run` skips complete runs, resumes interrupted ones from their newest checkpoint, records failures and
goes on (failed runs are retried only with --retry_failed).
"""
import argparse
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import store as st

PROJECT = st.PROJECT_DIR
TRAIN = "train.py"
# run-id parts: the head axes have their own fixed format (run_id); these get a short prefix; any other
# axis appears as name-value
HEAD_AXES = ("model_config", "K", "categories", "seed", "token_budget", "sampling", "tag_categories")
SHORT_NAMES = {"init_seed": "i", "data_seed": "ds", "learning_rate": "lr"}


def load_plan(path):
    path = Path(path)
    if not path.is_file():
        st.die(f"plan {path}: no such file")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml
            plan = yaml.safe_load(text)
        else:
            plan = json.loads(text)
    except Exception as e:
        st.die(f"plan {path}: cannot parse ({type(e).__name__}: {str(e).splitlines()[0]})")
    if not isinstance(plan, dict) or not isinstance(plan.get("grid"), (dict, list)):
        st.die(f"plan {path}: needs a 'grid': a mapping of train.py flags to lists of values (or a list of them)")
    if not (plan.get("store") or {}).get("data_dir"):
        st.die(f"plan {path}: needs store.data_dir")
    grids = plan["grid"] if isinstance(plan["grid"], list) else [plan["grid"]]
    for g in grids:
        if not isinstance(g, dict):
            st.die(f"plan {path}: each grid must be a mapping of train.py flags to lists of values")
        for k, v in g.items():
            if not isinstance(v, list) or not v:
                st.die(f"plan {path}: grid.{k} must be a non-empty list")
    plan["grid"] = grids
    plan.setdefault("name", path.stem)
    plan.setdefault("fixed", {})
    plan.setdefault("gpus_per_run", 1)
    return plan


def project_path(p):
    p = Path(os.path.expanduser(str(p)))
    return p if p.is_absolute() else PROJECT / p


def _fmt_num(v):
    """2000 -> 2k, 90000000 -> 90M, 1.5e6 -> 1.5M: readable, stable id fragments."""
    v = float(v)
    for div, suf in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suf}"
    return f"{v:g}"


def _slug(v):
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (int, float)):
        return f"{v:g}" if isinstance(v, float) else str(v)
    if isinstance(v, list):
        return "+".join(_slug(x) for x in v)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", Path(str(v)).stem if str(v).endswith(".json") else str(v))


def run_id(params):
    """A stable, readable id: model_K3_s04_d90M_balanced[_tag][_name-value...]."""
    parts = []
    if "model_config" in params:
        parts.append(_slug(params["model_config"]))
    if "K" in params and "categories" not in params:
        parts.append(f"K{params['K']}")
    if "categories" in params:
        parts.append("c" + _slug(params["categories"]))
    if "seed" in params:
        parts.append(f"s{int(params['seed']):02d}")
    if "token_budget" in params:
        parts.append(f"d{_fmt_num(params['token_budget'])}")
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
    grids both produce appears once."""
    runs, seen = [], set()
    for grid in plan["grid"]:
        axes = list(grid)
        for combo in itertools.product(*(grid[a] for a in axes)):
            grid_params = dict(zip(axes, combo))
            if grid_params.get("tag_categories") is False:
                del grid_params["tag_categories"]  # the untagged default: same run, same id
            rid = run_id(grid_params)
            if rid in seen:
                continue
            seen.add(rid)
            runs.append((rid, {**plan["fixed"], **grid_params}))
    return runs


def train_flags(params, gpus=1):
    """train.py flags for one run; batch_size in a plan is the global batch (windows per step)."""
    flags = []
    for k, v in params.items():
        if k == "batch_size" and gpus > 1:
            if int(v) % gpus:
                st.die(f"batch_size {v} is not divisible by gpus_per_run {gpus}")
            v = int(v) // gpus
        if k == "model_config" and str(v).endswith(".json"):
            v = str(project_path(v))
        if isinstance(v, bool):
            if v:
                flags.append(f"--{k}")
        elif isinstance(v, list):
            flags += [f"--{k}", *map(str, v)]
        elif v is not None:
            flags += [f"--{k}", str(v)]
    return flags


def train_command(plan, out, rid, params, python=sys.executable, gpus=1):
    data_dir = str(project_path(plan["store"]["data_dir"]))
    base = ([python, str(PROJECT / TRAIN)] if gpus == 1 else
            ["torchrun", "--standalone", f"--nproc_per_node={gpus}", str(PROJECT / TRAIN)])
    return base + ["--data_dir", data_dir, "--output_dir", str(Path(out).resolve() / "runs"), "--run_name", rid,
                   *train_flags(params, gpus), "--resume"]


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
    except (OSError, ValueError):
        return False


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


def run_status(out, rid, events=None):
    """complete | failed | running | interrupted | pending, and the summary (or None)."""
    rd = Path(out) / "runs" / rid
    summary = None
    if (rd / "summary.json").is_file():
        try:
            summary = json.loads((rd / "summary.json").read_text())
        except json.JSONDecodeError:
            summary = None
    if summary and summary.get("status") == "complete":
        return "complete", summary
    lock = rd / ".sweep.pid"
    if lock.is_file():
        try:
            if _pid_alive(int(lock.read_text().strip())):
                return "running", summary
        except ValueError:
            pass
    if summary and summary.get("status") == "failed":
        return "failed", summary
    e = (events or {}).get(rid)
    if e and e.get("event") == "end" and e.get("returncode") != 0:
        return "failed", summary
    if rd.exists() and any(rd.iterdir()):
        return "interrupted", summary
    return "pending", summary


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

def cmd_run(plan, args):
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    ensure_store(plan)
    runs = expand(plan)
    events = last_events(out)
    todo, n_done = [], 0
    for rid, params in runs:
        status, _ = run_status(out, rid, events)
        if status == "complete":
            n_done += 1
            continue
        if status == "running":
            print(f"{rid}: running in another process, skipped")
            continue
        if status == "failed" and not args.retry_failed:
            print(f"{rid}: failed earlier, skipped (--retry_failed to try again)")
            continue
        todo.append((rid, params, status))
    print(f"plan {plan['name']}: {len(runs)} runs, {n_done} complete, {len(todo)} to run, {args.parallel} at a time",
          flush=True)
    threads = max(1, (os.cpu_count() or 1) // args.parallel)

    def launch(item):
        rid, params, status = item
        cmd = train_command(plan, out, rid, params)
        rd = out / "runs" / rid
        rd.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with open(out / "logs" / f"{rid}.log", "a") as log:
            log.write(f"$ {shlex.join(cmd)}\n")
            log.flush()
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT, env=env)
            (rd / ".sweep.pid").write_text(str(p.pid))
            _event(out, run_id=rid, event="start", pid=p.pid, resumed=status == "interrupted")
            rc = p.wait()
        (rd / ".sweep.pid").unlink(missing_ok=True)
        _event(out, run_id=rid, event="end", returncode=rc, wall_s=time.time() - t0)
        state, summary = run_status(out, rid, last_events(out))
        msg = f"{rid}: {state} in {time.time() - t0:.0f} s"
        if state == "complete" and summary:
            tm = summary.get('test_macro_loss')
            msg += f" (final val_loss {summary.get('final_val_loss'):.4f}" + (f", test macro {tm:.4f})" if tm is not None else ")")
        elif state != "complete":
            msg += f" (exit code {rc}; see {out / 'logs' / (rid + '.log')})"
        print(msg, flush=True)
        return state

    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        results = list(pool.map(launch, todo))
    if args.prune:
        freed = sum(prune(out / "runs" / rid) for rid, _ in runs if run_status(out, rid)[0] == "complete")
        print(f"pruned step checkpoints of complete runs: {freed / 1e6:,.1f} MB freed")
    failed = results.count("failed") + results.count("interrupted")
    print(f"done: {results.count('complete')} completed now, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


def cmd_status(plan, args):
    out = Path(args.out)
    events = last_events(out)
    rows = [(rid, *run_status(out, rid, events)) for rid, _ in expand(plan)]
    counts = {s: sum(1 for r in rows if r[1] == s) for s in ("complete", "running", "interrupted", "failed", "pending")}
    width = max(len(r[0]) for r in rows)
    print(f"{'run':{width}s}  {'status':11s} {'tokens':>12s} {'val_loss':>9s} {'test_macro':>10s}")
    for rid, status, s in rows:
        s = s or {}
        fmt = lambda v: "-" if v is None else f"{v:.4f}"
        print(f"{rid:{width}s}  {status:11s} {s.get('tokens_seen') or 0:12,d} {fmt(s.get('final_val_loss')):>9s} "
              f"{fmt(s.get('test_macro_loss')):>10s}")
    print(" | ".join(f"{k} {v}" for k, v in counts.items()))
    return counts


def cmd_emit(plan, args):
    out = Path(args.out)
    gpus = int(plan.get("gpus_per_run", 1))
    runs = expand(plan)
    cmds = [shlex.join(train_command(plan, out, rid, params, python="python", gpus=gpus)) for rid, params in runs]
    data_dir = project_path(plan["store"]["data_dir"])
    build = plan["store"].get("build")
    note = (f"the store {data_dir} must exist first" +
            (f" (python sweep.py run-store {args.plan}, or fetch_arxiv.py with: {build})" if build else ""))
    if args.format == "commands":
        text = f"# {plan['name']}: {len(cmds)} runs; {note}; each line is one run (rerunnable: --resume)\n"
        text += "\n".join(cmds) + "\n"
    else:
        sl = plan.get("slurm") or {}
        lines = ["#!/bin/bash", f"#SBATCH --job-name={plan['name']}",
                 f"#SBATCH --array=0-{len(cmds) - 1}" + (f"%{sl['max_concurrent']}" if sl.get("max_concurrent") else ""),
                 "#SBATCH --nodes=1", "#SBATCH --ntasks=1", f"#SBATCH --gpus-per-task={gpus}",
                 f"#SBATCH --cpus-per-task={sl.get('cpus_per_task', 8)}",
                 f"#SBATCH --time={sl.get('time', '04:00:00')}",
                 f"#SBATCH --output={out.resolve() / 'logs'}/%x_%A_%a.out"]
        if sl.get("partition"):
            lines.append(f"#SBATCH --partition={sl['partition']}")
        for extra in sl.get("extra", []):
            lines.append(f"#SBATCH {extra}")
        lines += [f"# {plan['name']}: {len(cmds)} runs; {note}", "set -euo pipefail",
                  f"mkdir -p {shlex.quote(str(out.resolve() / 'logs'))}", f"cd {shlex.quote(str(PROJECT))}", "CMDS=("]
        lines += [f"  {shlex.quote(c)}" for c in cmds]
        lines += [")", 'echo "task ${SLURM_ARRAY_TASK_ID}: ${CMDS[$SLURM_ARRAY_TASK_ID]}"',
                  'eval "${CMDS[$SLURM_ARRAY_TASK_ID]}"']
        text = "\n".join(lines) + "\n"
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the plan's runs on this machine")
    r.add_argument("plan")
    r.add_argument("--out", required=True)
    r.add_argument("--parallel", type=int, default=1, help="runs at a time")
    r.add_argument("--prune", action="store_true", help="delete step checkpoints of complete runs afterwards")
    r.add_argument("--retry_failed", action="store_true")
    s = sub.add_parser("status", help="complete / running / interrupted / failed / pending per run")
    s.add_argument("plan")
    s.add_argument("--out", required=True)
    e = sub.add_parser("emit", help="print a SLURM array script or a plain command list")
    e.add_argument("plan")
    e.add_argument("--out", required=True)
    e.add_argument("--format", choices=["slurm", "commands"], default="commands")
    e.add_argument("--output", default=None, help="write to this file instead of stdout")
    l = sub.add_parser("list", help="the expanded runs and their parameters")
    l.add_argument("plan")
    b = sub.add_parser("run-store", help="build the plan's store if it is missing")
    b.add_argument("plan")
    args = p.parse_args(argv)
    if getattr(args, "parallel", 1) < 1:
        st.die(f"--parallel must be >= 1 (got {args.parallel})")
    plan = load_plan(args.plan)
    fn = {"run": cmd_run, "status": cmd_status, "emit": cmd_emit, "list": cmd_list, "run-store": cmd_store}[args.command]
    rc = fn(plan, args)
    if args.command == "run" and rc:
        raise SystemExit(rc)
    return rc


if __name__ == "__main__":
    main()
