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
    slurm: {time: "02:00:00", partition: gpu, cpus_per_task: 8}
    script: train.py              # optional: ngram.py runs the plan with the Kneser-Ney model (plans/ngram_*.yaml)

Relative paths in a plan (data_dir, model_config files, build paths) are relative to the project root.
Runs live in OUT/runs/<run_id>/ (train.py's run directory); sweep events in OUT/sweep_events.jsonl and each
run's console output in OUT/logs/<run_id>.log. A run is complete exactly when its summary.json says so;
`run` skips complete runs, resumes interrupted ones from their newest checkpoint, records failures and
goes on (failed runs are retried only with --retry_failed), and deletes the step checkpoints of runs that
completed (--keep_checkpoints keeps them). Ctrl-C stops every running run at its next step boundary with
a checkpoint; they are "interrupted", and the next `run` resumes them.

Each run directory records the plan's parameters of the run (sweep_params.json). A plan whose values
for an existing run differ (a `fixed:` value edited, say) is refused for that run ("conflict"): its
results would otherwise pass as the new configuration's.

GPUs: `run` places runs on --gpus (default: every visible GPU), --runs_per_gpu at a time on each (small
models leave most of a GPU idle), through CUDA_VISIBLE_DEVICES, one per worker. On SLURM each array
task gets its GPU(s) from SLURM; `emit --runs_per_gpu R` packs R runs into each task, side by side.
"""
import argparse
import itertools
import json
import math
import os
import re
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
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
# train.py's exit code for a run stopped by a signal (it checkpointed); -2 / -15: killed by SIGINT / SIGTERM
INTERRUPTED_CODES = (130, -2, -15, 143)
STATUSES = ("complete", "running", "interrupted", "failed", "conflict", "pending")


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
    if plan.get("script", TRAIN) not in (TRAIN, "ngram.py"):
        st.die(f"plan {path}: script must be {TRAIN} or ngram.py (got {plan['script']!r})")
    return plan


def project_path(p):
    p = Path(os.path.expanduser(str(p)))
    return p if p.is_absolute() else PROJECT / p


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
        parts.append(f"d{st.fmt_count(params['token_budget'])}")
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
    if e and e.get("event") == "end" and e.get("returncode") not in (0, *INTERRUPTED_CODES):
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

def visible_gpus():
    """GPU ids that CUDA_VISIBLE_DEVICES (or, unset, the driver) shows this process; [] without GPUs."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch
        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def worker_slots(plan, args):
    """One entry per concurrent run: the CUDA_VISIBLE_DEVICES value it runs with (None on CPU)."""
    gpus = args.gpus.split(",") if args.gpus else visible_gpus()
    gpus = [g.strip() for g in gpus if g.strip()]
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


class Launcher:
    """Runs train.py processes for a sweep, one per free slot; on Ctrl-C, stops them all cleanly."""

    def __init__(self, plan, out, slots, keep_checkpoints):
        self.plan, self.out, self.keep = plan, Path(out), keep_checkpoints
        self.slots = queue.Queue()
        for s in slots:
            self.slots.put(s)
        n_cpu = os.cpu_count() or 1
        self.threads = max(1, n_cpu // len(slots))
        self.stopping = threading.Event()
        self.procs = {}
        self.lock = threading.Lock()

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
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "PYTHONUNBUFFERED": "1"}
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        t0 = time.time()
        with open(out / "logs" / f"{rid}.log", "a") as log:
            log.write(f"$ {'CUDA_VISIBLE_DEVICES=' + slot + ' ' if slot else ''}{shlex.join(cmd)}\n")
            log.flush()
            # a session of its own: a terminal's Ctrl-C reaches the sweep alone, which stops each run once
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT, env=env,
                                 start_new_session=True)
            with self.lock:
                self.procs[rid] = p
            (rd / ".sweep.pid").write_text(str(p.pid))
            _event(out, run_id=rid, event="start", pid=p.pid, gpu=slot, resumed=status == "interrupted")
            rc = p.wait()
            with self.lock:
                self.procs.pop(rid, None)
        (rd / ".sweep.pid").unlink(missing_ok=True)
        _event(out, run_id=rid, event="end", returncode=rc, wall_s=time.time() - t0)
        state, summary = run_status(out, rid, last_events(out))
        msg = f"{rid}: {state} in {time.time() - t0:.0f} s" + (f" on GPU {slot}" if slot else "")
        if state == "complete" and summary:
            tm = summary.get("test_macro_loss")
            msg += f" (final val_loss {summary.get('final_val_loss'):.4f}" + (f", test macro {tm:.4f})" if tm is not None else ")")
            if not self.keep:
                prune(rd)
        elif state != "complete":
            msg += f" (exit code {rc}; see {out / 'logs' / (rid + '.log')})"
        print(msg, flush=True)
        return state

    def interrupt(self):
        """Stop launching; ask each running run to checkpoint and stop (SIGINT), then wait for them."""
        self.stopping.set()
        with self.lock:
            procs = list(self.procs.values())
        for p in procs:
            try:
                p.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
        return len(procs)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_run(plan, args):
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    ensure_store(plan)
    runs = expand(plan)
    events = last_events(out)
    todo, n_done, conflicts = [], 0, []
    for rid, params in runs:
        conflict = param_conflict(out, rid, plan, params)
        status, _ = run_status(out, rid, events, conflict)
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
    slots = worker_slots(plan, args)
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
        n = launcher.interrupt()
        pool.shutdown(wait=True, cancel_futures=True)
        print(f"interrupted: {n} running run(s) stopped at a checkpoint; `python sweep.py run {args.plan} --out "
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
    fmt = lambda v: "-" if v is None else f"{v:.4f}"
    print(f"{'run':{width}s}  {'status':11s} {'tokens':>12s} {'val_loss':>9s} {'test_macro':>10s}")
    for rid, status, s in rows:
        s = s or {}
        print(f"{rid:{width}s}  {status:11s} {s.get('tokens_seen') or 0:12,d} {fmt(s.get('final_val_loss')):>9s} "
              f"{fmt(s.get('test_macro_loss')):>10s}")
    print(" | ".join(f"{k} {v}" for k, v in counts.items()))
    return counts


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
    lines += [f"cd {shlex.quote(str(args.project_dir or PROJECT))}", "CMDS=("]
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1], **fmt)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, help):
        c = sub.add_parser(name, help=help, description=help, **fmt)
        c.add_argument("plan", help="plan file (YAML or JSON)")
        return c

    r = command("run", "run the plan's runs on this machine (skip complete, resume interrupted)")
    r.add_argument("--out", required=True, help="sweep directory: runs/, logs/, sweep_events.jsonl")
    r.add_argument("--parallel", type=int, default=1, help="runs at a time on a machine without GPUs")
    r.add_argument("--gpus", default=None, help="comma-separated GPU ids to use (default: every visible GPU)")
    r.add_argument("--runs_per_gpu", type=int, default=1, help="runs sharing one GPU at a time")
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
    e.add_argument("--runs_per_gpu", type=int, default=1, help="slurm: runs packed side by side in one array task")
    command("list", "the expanded runs and their parameters")
    command("run-store", "build the plan's store if it is missing")
    args = p.parse_args(argv)
    for flag in ("parallel", "runs_per_gpu"):
        if getattr(args, flag, 1) < 1:
            st.die(f"--{flag} must be >= 1 (got {getattr(args, flag)})")
    plan = load_plan(args.plan)
    fn = {"run": cmd_run, "status": cmd_status, "emit": cmd_emit, "list": cmd_list, "run-store": cmd_store}[args.command]
    rc = fn(plan, args)
    if args.command == "run" and rc:
        raise SystemExit(rc)
    return rc


if __name__ == "__main__":
    st.cli(main)
