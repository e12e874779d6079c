"""
A run directory's life across the processes that train it (train.py is the loop; this is what lets the loop
be stopped, killed and resumed): one writer (RUN/.lock), the identity check that refuses another run's
directory or checkpoint, resume from the newest checkpoint that loads completely, checkpoints written all or
nothing (and rotated), what a killed run left behind (temp dirs, a best/ or final/ cut between two renames),
stop signals (SIGINT / SIGTERM: the step ends, a checkpoint, exit 130, one line), and the logs
(train.log, metrics.jsonl rewound on resume, loss_curve.png).

The interface train.py uses: lock_run_dir, prepare_run_dir, restore, rewind_metrics (start or resume);
checkpoint, save_step_checkpoint, finished_schedule, StopRun (checkpoints); StopRequest, finish_or_stop,
EXIT_INTERRUPTED (signals); Logger, plot_loss_curve (logs). Functions that take `run` read run.plan
(identity, run_dir, total_steps), run.dist (rank, all_reduce), run.model, run.optimizer and run.args.
"""
import dataclasses
import errno
import json
import math
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch

import store as st
from model import load_model
from run_plan import identity_differences

EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C: sweep.py reads it as "interrupted, resume me"
EXIT_LOCKED = 75       # EX_TEMPFAIL: another process holds the run directory (sweep.py: not a failure)

# ----------------------------------------------------------------------------------------------------
# the run directory, resume, checkpoints

def read_json(path, what):
    """A JSON file the run needs; unreadable is a one-line error, never an absence."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        st.die(f"{path}: unreadable {what} ({type(e).__name__}); restore it or start the run in a new directory")


def step_checkpoints(run_dir):
    """Step checkpoint directories, oldest first (a temp dir never has the step_ name; whether one loads
    completely is for restore() to find out)."""
    return sorted(p for p in Path(run_dir).glob("step_*") if p.is_dir())


LOCK_NAME = ".lock"  # RUN/.lock: held by the one process writing the run (runlock.py)


def lock_run_dir(run_dir, dist):
    """Rank 0 locks the run directory for the process's life (one writer per run; see runlock.py), then
    clears what a killed run left: temp dirs of unfinished checkpoints, and a best/ or final/ that a kill
    cut between the two renames of its replacement is put back."""
    if not dist.rank0:
        return None
    import runlock
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = runlock.acquire(run_dir / LOCK_NAME, warn=lambda m: print(m, flush=True))
    except runlock.Held as e:
        st.die(f"run directory {run_dir} is in use by {e} (its {LOCK_NAME}); wait for that process to end or stop "
               "it, then --resume", code=EXIT_LOCKED)
    for stale in run_dir.glob(".*.tmp-*"):  # half-written checkpoints of a killed run: never valid
        shutil.rmtree(stale, ignore_errors=True)
    st.restore_old_dirs(run_dir)
    return lock


def prepare_run_dir(args, plan, dist):
    """'complete' for a finished run of this identity (nothing to do), else the checkpoints to resume from,
    newest first ([] for a fresh start). Refuses, in one line, a run directory or checkpoint of another
    identity, and a weights-only directory given to --resume."""
    run_dir = plan.run_dir
    cfg_path = run_dir / "run_config.json"
    if not args.resume:
        if run_dir.exists() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
            st.die(f"run directory {run_dir} exists; use --resume to continue it or another --run_name")
        return []
    if cfg_path.is_file():
        diff = identity_differences(read_json(cfg_path, "run_config.json").get("identity", {}), plan.identity)
        if diff:
            st.die(f"--resume: {run_dir} is another run ({'; '.join(diff)}); use the run's own flags or another "
                   "--run_name")
    summary = run_dir / "summary.json"
    if summary.is_file() and read_json(summary, "summary.json").get("status") == "complete":
        return "complete"  # idempotent: a scheduler may launch a finished run again
    if args.resume == "auto":
        # final/ holds the end of the schedule (written before the test evaluation): a stop during that
        # evaluation resumes from it, redoing no step; the step checkpoints follow if it does not load
        final = [run_dir / "final"] if finished_schedule(run_dir / "final", plan.total_steps) else []
        return final + step_checkpoints(run_dir)[::-1]
    path = Path(args.resume)
    weights_only = f"--resume {args.resume}: a weights-only directory (best/ or final/); resuming needs a step " \
                   "checkpoint: --resume alone takes the run's newest, or --resume RUN/step_XXXXXXXX"
    if not (path / "training_state.pt").is_file():
        if (path / "config.json").is_file():
            st.die(weights_only)
        st.die(f"--resume {args.resume}: not a checkpoint (no training_state.pt)")
    try:
        if torch.load(path / "training_state.pt", map_location="cpu", weights_only=True).get("optimizer") is None:
            st.die(weights_only)
    except SystemExit:
        raise
    except Exception as e:
        st.die(f"--resume {args.resume}: unreadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    return [path]


@dataclasses.dataclass
class TrainState:
    """What changes during the run; saved in every checkpoint."""
    step: int = 0
    tokens_seen: int = 0
    windows_by_label: np.ndarray = None   # this rank's windows per label (all-reduced when saved)
    best_val: float = float("inf")
    best_step: int = None
    last_val: float = None
    last_val_step: int = None             # the step of last_val (final_val_loss is only the last step's)
    prior_wall_s: float = 0.0             # wall and training-loop time of earlier segments of this run
    prior_train_s: float = 0.0
    segment_start: float = dataclasses.field(default_factory=time.time)
    train_start: float = None

    def wall_s(self):
        return self.prior_wall_s + time.time() - self.segment_start

    def train_s(self):
        return self.prior_train_s + (time.time() - self.train_start if self.train_start else 0.0)


def checkpoint_state(state, plan, dist):
    """The training_state.pt payload (collective: every rank takes part in the count's all-reduce)."""
    counts = dist.all_reduce(torch.from_numpy(state.windows_by_label.copy()))
    return {"step": state.step, "tokens_seen": state.tokens_seen, "total_steps": plan.total_steps,
            "windows_by_label": counts.tolist(), "best_val_loss": state.best_val, "best_step": state.best_step,
            "last_val_loss": state.last_val, "last_val_step": state.last_val_step, "torch_rng": torch.get_rng_state(), "identity": plan.identity,
            "wall_s": state.wall_s(), "train_s": state.train_s()}


# Fault injection for the tests (None in every real run): SAVE_HOOK(path, phase) inside each checkpoint
# write (phases "weights", "state", "swapped": the new dir in place, the old one not yet removed,
# "published"), STEP_HOOK(run, state) after each optimizer step (train.train_loop).
SAVE_HOOK = None
STEP_HOOK = None
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def no_space(e):
    """A full disk or quota, as an OSError or as safetensors' own error (which carries the OS error's text)."""
    if isinstance(e, OSError):
        return e.errno in NO_SPACE
    return any(f"os error {n})" in str(e) for n in NO_SPACE)


class StopRun(Exception):
    """A checkpoint that must not or could not be written: the run stops with this one-line message."""


def save_checkpoint(path, model, optimizer, payload):
    """save_pretrained weights + training_state.pt, written to a temp dir, fsync'd and renamed: all or
    nothing, durable once this returns."""
    path = Path(path)
    tmp = st.temp_dir_beside(path)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if SAVE_HOOK:
            SAVE_HOOK(path, "weights")
        torch.save({"optimizer": optimizer.state_dict() if optimizer is not None else None, **payload},
                   tmp / "training_state.pt")
        if SAVE_HOOK:
            SAVE_HOOK(path, "state")
        st.publish_dir(tmp, path, after_swap=(lambda: SAVE_HOOK(path, "swapped")) if SAVE_HOOK else None)
        if SAVE_HOOK:
            SAVE_HOOK(path, "published")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def checkpoint(path, run, state, with_optimizer=True):
    """Write a checkpoint (collective: every rank calls it, rank 0 writes). Raises StopRun, on every rank,
    for non-finite weights (never saved) or a full disk (the previous checkpoints stay as they were)."""
    payload = checkpoint_state(state, run.plan, run.dist)
    finite = all(bool(torch.isfinite(p).all()) for p in run.model.parameters())  # the same on every rank
    if not finite:
        raise StopRun(f"non-finite weights at step {state.step}; not saved to {Path(path).name}, the last good "
                      "checkpoint is kept")
    error = None
    if run.dist.rank0:
        try:
            save_checkpoint(path, run.model, run.optimizer if with_optimizer else None, payload)
        except Exception as e:
            if not no_space(e):
                raise
            free = shutil.disk_usage(Path(path).parent).free
            newest = [p.name for p in step_checkpoints(Path(path).parent)]
            error = (f"no space left writing {path} ({free / 1e6:,.1f} MB free there); the earlier checkpoints "
                     f"({', '.join(newest) or 'none'}) are intact; free space, then rerun with --resume")
    failed = run.dist.all_reduce(torch.tensor(float(error is not None)), op="max")  # rank 0 tells the others
    if float(failed):
        raise StopRun(error or "rank 0 could not write a checkpoint (see its log)")


def save_step_checkpoint(run, state):
    """step_XXXXXXXX/ of this step (collective), then rotation."""
    checkpoint(run.plan.run_dir / f"step_{state.step:08d}", run, state)
    if run.dist.rank0:
        # the newest --max_step_checkpoints up to this step are kept. One from beyond it (an unreadable one
        # a resume skipped) is not counted: by name order it would outrank, and delete, the one just written
        done = [p for p in step_checkpoints(run.plan.run_dir) if p.name[5:].isdigit() and int(p.name[5:]) <= state.step]
        for old in done[:-run.args.max_step_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)


def finished_schedule(path, total_steps):
    """Whether path (final/) is a complete checkpoint of the schedule's last step."""
    try:
        saved = torch.load(Path(path) / "training_state.pt", map_location="cpu", weights_only=True)
        return int(saved["step"]) == total_steps and (Path(path) / "config.json").is_file()
    except Exception:
        return False


def load_checkpoint(path, run):
    """Load a step checkpoint completely into run (weights, optimizer) and return its training state;
    raises (any exception) when any part is unreadable. Another run's checkpoint is a one-line error."""
    saved = torch.load(Path(path) / "training_state.pt", map_location=run.dist.device, weights_only=True)
    diff = identity_differences(saved.get("identity", {"total_steps": saved["total_steps"]}), run.plan.identity)
    if diff:
        st.die(f"--resume {path}: the checkpoint is of another run ({'; '.join(diff)})")
    # the optimizer is needed for steps still to come: final/ (the last step, no optimizer) has none
    done = saved.get("step") == run.plan.total_steps
    for key in (() if done else ("optimizer",)) + ("step", "tokens_seen", "windows_by_label", "torch_rng"):
        if saved.get(key) is None:
            raise KeyError(f"training_state.pt has no {key}")
    # from_pretrained, not load_state_dict on the file: transformers 5 names the GPT-NeoX head differently
    # in memory and on disk, and a non-strict state-dict load silently leaves it untrained
    run.model.load_state_dict(load_model(path).state_dict(), strict=True)
    if saved.get("optimizer") is not None:
        run.optimizer.load_state_dict(saved["optimizer"])
    return saved


def restore(candidates, run, n_labels):
    """(TrainState, the checkpoint it came from): the newest of candidates that loads completely (weights,
    optimizer, RNG, counters; an unreadable one is skipped with one line), or a fresh state for no
    candidates. Candidates that all fail are a one-line error (exit 2), never a silent fresh start."""
    state = TrainState(windows_by_label=np.zeros(n_labels, dtype=np.int64))
    if not candidates:
        return state, None
    for path in candidates:
        try:
            saved, error = load_checkpoint(path, run), None
        except Exception as e:
            saved, error = None, e
        # every rank resumes from the same checkpoint: one that failed to load on any rank is skipped by all
        # (ranks that went on from different steps would hang in, or silently corrupt, the collectives)
        if not float(run.dist.all_reduce(torch.tensor(float(saved is None)), op="max")):
            break
        if run.dist.rank0:
            first = str(error).splitlines()[0][:200] if error is not None and str(error) else ""
            why = f"{type(error).__name__}: {first}" if error is not None else "it failed to load on another rank"
            print(f"resume: skipping {path} (unreadable: {why})", flush=True)
    else:
        st.die(f"--resume: none of the checkpoints of {run.plan.run_dir} loads completely "
               f"({', '.join(p.name for p in candidates)}); restore one or start the run anew in another directory")
    resume_from = path
    state.step, state.tokens_seen = int(saved["step"]), int(saved["tokens_seen"])
    if run.dist.rank0:  # the saved counts are the all-reduced ones: rank 0 carries them, the others restart at 0
        state.windows_by_label = np.asarray(saved["windows_by_label"], dtype=np.int64)
    state.best_val = float(saved.get("best_val_loss", float("inf")))
    state.best_step = saved.get("best_step")
    state.last_val, state.last_val_step = saved.get("last_val_loss"), saved.get("last_val_step")
    state.prior_wall_s, state.prior_train_s = float(saved.get("wall_s", 0.0)), float(saved.get("train_s", 0.0))
    adopt_later_best(run.plan.run_dir / "best", state)
    torch.set_rng_state(saved["torch_rng"].cpu())  # loaded onto the device; the CPU generator needs a CPU tensor
    return state, resume_from


def adopt_later_best(best_dir, state):
    """best/ written after the checkpoint a resume starts from (a newer checkpoint was unreadable, or the kill
    came before the next one) holds weights the checkpoint's best_val does not describe: where the re-run
    steps do not beat it (GPU kernels are not bit-reproducible), best/ would stay while the summary named
    another step. Its own values are taken, so that best/ and the summary's best_step / best_val_loss agree."""
    try:
        best = torch.load(Path(best_dir) / "training_state.pt", map_location="cpu", weights_only=True)
        step, val = int(best["step"]), float(best["best_val_loss"])
    except Exception:
        return  # none, or unreadable: the checkpoint's values stand (a better validation replaces best/)
    if step > state.step and math.isfinite(val) and val <= state.best_val:
        state.best_val, state.best_step = val, step


def rewind_metrics(run_dir, step, state):
    """On resume (rank 0): metrics.jsonl keeps only rows up to the checkpoint's step (none for a fresh
    start, step None), so each step appears once; the time the interrupted segment ran past its checkpoint
    still counts in the run's wall time."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the line a kill cut short
    state.prior_wall_s = max([state.prior_wall_s] + [r.get("wall_s", 0.0) for r in rows])
    state.prior_train_s = max([state.prior_train_s] + [r.get("train_s", 0.0) for r in rows])
    # rows up to the checkpoint; an eval row at its step only if the checkpoint holds that validation
    keep = "".join(json.dumps(r) + "\n" for r in rows if step is not None and r["step"] <= step
                   and not (r["step"] == step and r.get("kind") == "eval" and state.last_val_step != step))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(keep)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------
# stop signals

class StopRequest:
    """SIGINT / SIGTERM set a flag; the loop stops at a step boundary, checkpoints and exits 130. A second
    signal interrupts at once (the default handler is back). restore_to: the handlers to put back instead of
    the ones replaced (train.py's from before its early stop handler, which this one replaces directly: no
    moment without a handler of the run's)."""

    def __init__(self, restore_to=None):
        self.signal = None
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: no handler, a signal interrupts as usual
                continue
            self._old[sig] = (restore_to or {}).get(sig, old)

    def _handler(self, signum, frame):
        self.signal = signal.Signals(signum).name
        self.restore()

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def finish_or_stop(finish, run, state, status, message):
    """finish(run, state, status, message) (train.py's end of the run: final/, the test evaluation, the
    summary), where a stop signal (the loop's handler is gone by now) ends the process in one line, exit 130,
    instead of a traceback or SIGTERM's silent death: final/ is written before the test evaluation, so the
    --resume that follows starts from it and redoes no step."""
    def raise_stop(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)
    try:
        old, old_int = signal.signal(signal.SIGTERM, raise_stop), signal.getsignal(signal.SIGINT)
    except ValueError:  # not the main thread
        old = old_int = None
    try:
        finish(run, state, status, message)
    except KeyboardInterrupt as e:
        if old is not None:  # a second signal (Ctrl-C twice, SIGTERM then SIGINT) must not turn the line into a traceback
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if run.dist.rank0:
            done = finished_schedule(run.plan.run_dir / "final", run.plan.total_steps)
            where = ("final/ holds the last step, so no step is redone" if done else
                     "the newest step checkpoint is resumed from")
            print(f"interrupted ({str(e) or 'SIGINT'}) after step {state.step}, during the final evaluation: {where}; "
                  f"continue with the same command and --resume (run {run.plan.run_name})", flush=True)
        run.log.close()
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
            signal.signal(signal.SIGINT, old_int if old_int is not None else signal.SIG_DFL)


# ----------------------------------------------------------------------------------------------------
# logs

class Logger:
    """Console + train.log + metrics.jsonl on rank 0, and wandb when asked (any wandb failure is a warning)."""

    def __init__(self, run_dir, rank0, args, config):
        self.rank0, self.wandb = rank0, None
        if not rank0:
            return
        self.log_f = open(Path(run_dir) / "train.log", "a")
        self.metrics_f = open(Path(run_dir) / "metrics.jsonl", "a")
        if args.wandb_project and args.wandb_mode != "disabled":
            try:
                import wandb
                self.wandb = wandb.init(project=args.wandb_project, name=Path(run_dir).name, config=config,
                                        mode=args.wandb_mode, dir=str(run_dir), resume="allow",
                                        settings=wandb.Settings(init_timeout=60, console="off"))
            except Exception as e:
                self.print(f"warning: wandb disabled ({type(e).__name__}: {e})")
                self.wandb = None

    def print(self, msg):
        if self.rank0:
            print(msg, flush=True)
            self.log_f.write(msg + "\n")
            self.log_f.flush()

    def metrics(self, row):
        if not self.rank0:
            return
        self.metrics_f.write(json.dumps(row) + "\n")
        self.metrics_f.flush()
        if self.wandb is not None:
            try:
                self.wandb.log({k: v for k, v in row.items() if k != "kind"}, step=row["step"])
            except Exception as e:
                self.print(f"warning: wandb log failed ({type(e).__name__}); disabling wandb")
                self.wandb = None

    def close(self):
        if self.rank0:
            self.log_f.close()
            self.metrics_f.close()
            if self.wandb is not None:
                try:
                    self.wandb.finish()
                except Exception:
                    pass


def plot_loss_curve(run_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    tr = [r for r in rows if r["kind"] == "train"]
    ev = [r for r in rows if r["kind"] == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if tr:
        ax.plot([r["tokens"] for r in tr], [r["loss"] for r in tr], label="train loss", lw=1)
    if ev:
        ax.plot([r["tokens"] for r in ev], [r["val_loss"] for r in ev], "o-", label="validation loss")
    ax.set_xlabel("predicted tokens seen")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(Path(run_dir).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = Path(run_dir) / "loss_curve.png.tmp"
    try:  # written aside and renamed: a full disk leaves the previous plot (or none), never a truncated one
        fig.savefig(tmp, dpi=120, format="png")
        os.replace(tmp, Path(run_dir) / "loss_curve.png")
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)

