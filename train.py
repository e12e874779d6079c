"""
Train a randomly initialised Pythia-architecture model on K arXiv categories of a token store under a
token budget. One process on a CPU or GPU, or many through torchrun (DDP).

Dev run on a laptop CPU (the sample store, a few steps):
    python train.py --data_dir preprocessed_sample --K 3 --seed 0 --model_config pythia-14m \\
        --batch_size 8 --token_budget 20000 --output_dir runs
Full run on 8 GPUs (global batch 8 x 40 windows = 32,000 predicted tokens per step):
    torchrun --nproc_per_node=8 train.py --data_dir preprocessed_arxiv --K 3 --seed 4 \\
        --model_config pythia-70m --batch_size 40 --token_budget 90000000 --compile --output_dir runs

Run directory {output_dir}/{run_name}/: run_config.json (written once, when the run starts),
train.log, metrics.jsonl, step_XXXXXXXX/ (the newest --max_step_checkpoints), best/, final/,
loss_curve.png, test_results.json and, written last, summary.json (a run is complete exactly when
summary.json says status "complete").

Run identity: every value that changes what a run computes (store, categories, seeds, sampling, model,
schedule, optimiser, batch, dtype, tagging) is its identity, kept in run_config.json and in every
checkpoint. --resume refuses a run directory or checkpoint whose identity differs, naming each flag; the
default run name is readable parts plus a hash of the identity, so two different runs never share one.
Ctrl-C (SIGINT) or SIGTERM: the run stops at the end of the current step (after that step's validation,
best/ and, at the last step, final/), writes a checkpoint and exits 130; --resume continues it from the
newest checkpoint that loads completely; a stop before the first step (imports, data, resume) is one line
and exit 130 too. One process per run directory: RUN/.lock (runlock.py). That life of the run directory
(lock, resume, checkpoints, stop signals, logs) is runlife.py; this file is the run, top-down.
"""
import os  # before the handler below: stop_before_training needs it from its first moment
import signal
import sys


def stop_before_training(signum, frame):
    """A stop before the first step (the imports below take seconds, then data, resume): one line and exit
    130, not a KeyboardInterrupt traceback in the run's log (or SIGTERM's silent death). Nothing was trained.
    The process ends here (os._exit), not by raising SystemExit: Python drops an exception raised in a
    weakref callback, which an import runs (importlib's module locks), and the run then trained to the end
    with both signals ignored (a full suite, session 25). Nothing needs closing first: the kernel frees the
    run's lock (runlock.py), a JSON write cut short leaves only its .tmp, and no checkpoint is written yet."""
    for sig in BEFORE_TRAINING:  # a second signal (Ctrl-C twice) must not add a second line
        signal.signal(sig, signal.SIG_IGN)
    try:  # the line may not be writable (`| tee` killed by the same Ctrl-C: BrokenPipeError): the stop stands
        # torchrun's workers: rank 0 says it, as it says every stop (RANK counts only with a WORLD_SIZE, as in setup_dist)
        if os.environ.get("RANK", "0") == "0" or os.environ.get("WORLD_SIZE", "1") == "1":
            print(f"interrupted ({signal.Signals(signum).name}) before training started, no step run; continue "
                  "with the same command and --resume", flush=True)
        sys.stdout.flush()  # a non-zero rank's earlier output too
        sys.stderr.flush()
    finally:
        os._exit(130)


# the handlers stop_before_training replaced (the script only: a module importing train keeps its own; a
# signal its parent ignores, as a shell's `&` does, stays ignored); put back after the loop, whose own handler
# replaces stop_before_training directly (runlife.StopRequest)
BEFORE_TRAINING = {}
if __name__ == "__main__":
    BEFORE_TRAINING = {s: signal.signal(s, stop_before_training) for s in (signal.SIGINT, signal.SIGTERM)
                       if signal.getsignal(s) is not signal.SIG_IGN}

import argparse  # after the handler: a stop during these imports is a stop before training
import dataclasses
import datetime
import gc
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import runlife
import store as st
from model import (PYTHIA, ConfigError, DeviceError, WindowLoss, build_model, count_params, eval_nll,
                   evaluate_model, flops_per_token, head_chunk_rows, model_config, peak_bf16_flops,
                   resolve_device, setup_device)
from random_window_dataset import SAMPLING_MODES, BatchPrefetcher, RandomWindowDataset, fixed_eval_windows
from run_plan import default_run_name, git_commit, token_schedule, training_pool  # ngram.py's too
from runlife import (EXIT_INTERRUPTED, Logger, StopRequest, StopRun, checkpoint, checkpoint_state,
                     plot_loss_curve)

WINDOW, PRED_PER_WINDOW, EVAL_SEED = st.WINDOW, st.PRED_PER_WINDOW, st.EVAL_SEED


def parse_args(argv=None):
    p = st.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=st.HelpFormatter,
                          allow_abbrev=False)
    a = p.add_argument
    pos_int, pos = st.number(int, 1), st.number(float, 0, lo_open=True)
    seed_int = st.number(int, 0, 2**64 - 1)  # torch.manual_seed's range; the sampler hashes seeds mod 2**64
    ratio = st.number(float, 0, 1)
    a("--data_dir", default="preprocessed_arxiv", help="token store written by fetch_arxiv.py")
    a("--K", type=st.number(int, 1, len(st.CATEGORIES)), default=1, help="number of categories (select_categories(K, seed))")
    a("--seed", type=seed_int, default=0, help="subset seed; also the default --init_seed and --data_seed")
    a("--categories", nargs="+", default=None, help="explicit category names (overrides --K/--seed)")
    a("--init_seed", type=seed_int, default=None, help="model initialisation seed (default: --seed)")
    a("--data_seed", type=seed_int, default=None, help="window sampler seed (default: --seed)")
    a("--sampling", default="paper", choices=SAMPLING_MODES,
      help="paper: uniform over papers; token: over window starts; balanced: over categories, then tokens")
    a("--model_config", default="pythia-14m", help=f"{', '.join(PYTHIA)} or a JSON file of GPTNeoXConfig fields")
    a("--token_budget", type=pos, default=None, help="predicted tokens to train on (takes precedence over --epochs)")
    a("--epochs", type=pos, default=1.0, help="passes over the pool's non-overlapping windows")
    a("--batch_size", type=pos_int, default=32, help="windows per device per micro-step")
    a("--grad_accum_steps", type=pos_int, default=1, help="micro-steps per optimizer step")
    a("--learning_rate", type=pos, default=None, help="default: Pythia's for the size (1e-3 / 6e-4 / 3e-4)")
    a("--adam_beta1", type=st.number(float, 0, 1, hi_open=True), default=0.9, help="AdamW beta1")
    a("--adam_beta2", type=st.number(float, 0, 1, hi_open=True), default=0.95, help="AdamW beta2")
    a("--adam_epsilon", type=pos, default=1e-8, help="AdamW epsilon")
    a("--weight_decay", type=st.number(float, 0), default=0.1, help="on >= 2-D weights only")
    a("--max_grad_norm", type=st.number(float, 0, lo_open=True, off="off"), default=1.0,
      help="gradient clipping norm; off: no clipping (the norm is still checked for NaN/inf)")
    a("--warmup_ratio", type=ratio, default=0.01, help="linear warmup over this fraction of the steps (>= 1 step)")
    a("--min_lr_ratio", type=ratio, default=0.1, help="cosine ends at this fraction of the lr, at the last step")
    a("--output_dir", default="runs", help="run directories are created below it")
    a("--run_name", default=None,
      help="default: <model>_K<K>_s<seed>_<sampling>_d<budget>[_tag]_<hash of the run identity>")
    a("--resume", nargs="?", const="auto", default=None,
      help="bare: the newest complete checkpoint of this run (or a fresh start if none); or a checkpoint directory")
    a("--checkpoint_interval_steps", type=pos_int, default=1000, help="steps between step checkpoints")
    a("--max_step_checkpoints", type=pos_int, default=2, help="step checkpoints kept (newest)")
    a("--eval_interval_steps", type=pos_int, default=500, help="steps between validations")
    a("--eval_windows", type=pos_int, default=256, help="validation windows per training category")
    a("--eval_batch_size", type=pos_int, default=None, help="default: --batch_size")
    a("--skip_test_eval", action="store_true", help="skip the final exact test-split evaluation")
    a("--log_interval_steps", type=pos_int, default=10, help="steps between log lines")
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    a("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="auto: bf16 on CUDA, fp32 on CPU")
    a("--compile", action="store_true", help="torch.compile the model and loss")
    a("--wandb_project", default=None, help="log to wandb (opt-in; never fatal)")
    a("--wandb_mode", default="online", choices=["online", "offline", "disabled"], help="wandb mode")
    a("--tag_categories", action="store_true",
      help="precede each window with a token naming its category (id = store vocab + label; never a target)")
    args = p.parse_args(argv)  # every numeric flag's range is checked here (st.number): one line, exit 2
    args.init_seed = args.seed if args.init_seed is None else args.init_seed
    args.data_seed = args.seed if args.data_seed is None else args.data_seed
    args.eval_batch_size = args.eval_batch_size or args.batch_size
    return args


# ----------------------------------------------------------------------------------------------------
# setup: processes and devices, data, the run's plan and identity

@dataclasses.dataclass
class Dist:
    """Process group and device. Every collective goes through device tensors (NCCL on CUDA, gloo on
    CPU: the CPU tests run the same code as the GPUs)."""
    ddp: bool
    rank: int
    world: int
    local_rank: int
    device: torch.device
    dtype: torch.dtype

    @property
    def rank0(self):
        return self.rank == 0

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                              enabled=self.dtype == torch.bfloat16)

    def all_reduce(self, t, op="sum"):
        """All-reduced copy of tensor t (on any device), returned on t's device."""
        if not self.ddp:
            return t
        import torch.distributed as dist
        x = t.to(self.device)
        dist.all_reduce(x, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        if op == "avg":  # gloo has no AVG
            x = x / self.world
        return x.to(t.device)

    def barrier(self):
        if self.ddp:
            import torch.distributed as dist
            dist.barrier(device_ids=[torch.cuda.current_device()] if self.device.type == "cuda" else None)

    def close(self):
        if self.ddp:
            import torch.distributed as dist
            self.barrier()
            dist.destroy_process_group()


def setup_dist(args):
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world, local_rank = ((int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
                               if ddp else (0, 1, 0))
    try:
        device = setup_device(resolve_device(args.device))  # cuda -> cuda:<LOCAL_RANK>; TF32 on CUDA
    except DeviceError as e:
        st.die(str(e))
    if ddp:
        import torch.distributed as dist
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=30),
                                device_id=device if device.type == "cuda" else None)
    dtype = {"auto": torch.bfloat16 if device.type == "cuda" else torch.float32,
             "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    return Dist(ddp, rank, world, local_rank, device, dtype)


def load_data(args):
    """(store, categories, training window dataset, {category: fixed validation windows})."""
    store, categories, train_ds = training_pool(args)
    try:
        val_sets = {c: torch.from_numpy(fixed_eval_windows(store, "validation", c, args.eval_windows, WINDOW,
                                                           EVAL_SEED)) for c in categories}
    except st.StoreError as e:
        st.die(str(e))
    return store, categories, train_ds, val_sets


def run_identity(args, dist, store_id, categories, cfg, model_name, lr, tokens_per_step, total_steps, warmup):
    """The values that make two runs the same run (see run_plan.IDENTITY_FLAGS). JSON-plain, comparable exactly."""
    fields = {k: v for k, v in cfg.to_dict().items() if k not in ("transformers_version", "_name_or_path")}
    return {"store_id": store_id, "categories": list(categories), "sampling": args.sampling,
            "data_seed": args.data_seed, "init_seed": args.init_seed, "model": model_name,
            "model_config_sha256": hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest(),
            "tag_categories": bool(args.tag_categories), "tokens_per_step": tokens_per_step,
            "total_steps": total_steps, "warmup_steps": warmup, "learning_rate": lr,
            "min_lr_ratio": args.min_lr_ratio, "adam_beta1": args.adam_beta1, "adam_beta2": args.adam_beta2,
            "adam_epsilon": args.adam_epsilon, "weight_decay": args.weight_decay,
            "max_grad_norm": args.max_grad_norm, "dtype": str(dist.dtype).replace("torch.", "")}


@dataclasses.dataclass
class Plan:
    """Everything fixed before the first step: derived numbers, identity, where the run lives."""
    cfg: object
    model_name: str
    expected_params: int
    lr: float
    tokens_per_step: int
    total_steps: int
    warmup: int
    tag_base: int
    chunk_rows: int
    identity: dict
    run_name: str
    run_dir: Path


def plan_run(args, dist, store, categories, train_ds):
    try:
        cfg, model_name, default_lr, expected = model_config(args.model_config, store.vocab_size)
    except ConfigError as e:
        st.die(str(e))
    # tagged runs: category c's tag is store.tag_token_base + label(c), inside Pythia's unused embedding rows
    tag_base = store.tag_token_base if args.tag_categories else None
    if tag_base is not None and tag_base + len(store.categories) > cfg.vocab_size:
        st.die(f"--tag_categories: tags {tag_base}..{tag_base + len(store.categories) - 1} do not fit the model's "
               f"vocab_size {cfg.vocab_size}")
    budget, tokens_per_step, total_steps = token_schedule(args, len(train_ds), dist.world)
    warmup = max(1, math.ceil(args.warmup_ratio * total_steps))
    lr = args.learning_rate if args.learning_rate is not None else default_lr
    identity = run_identity(args, dist, store.store_id, categories, cfg, model_name, lr, tokens_per_step,
                            total_steps, warmup)
    run_name = args.run_name or default_run_name(identity, args.seed, budget)
    return Plan(cfg, model_name, expected, lr, tokens_per_step, total_steps, warmup, tag_base,
                head_chunk_rows(dist.device, cfg.vocab_size), identity, run_name, Path(args.output_dir) / run_name)


@torch.no_grad()
def validate(model, val_sets, batch_size, chunk_rows, dtype, val_tags=None):
    """Mean loss of each category's fixed validation windows; val_loss = mean over categories. The same
    evaluation path as the final test evaluation and evaluate.py (model.eval_nll: bf16 head under bf16).
    val_tags: {category: tag token id} for tagged runs."""
    model.eval()
    out = {}
    for cat, x in val_sets.items():
        total, n = 0.0, 0
        for s in range(0, len(x), batch_size):
            xb = x[s:s + batch_size]
            tags = None if val_tags is None else torch.full((len(xb),), val_tags[cat], device=xb.device)
            nll = eval_nll(model, xb, None, dtype, chunk_rows, tags)
            total += float(nll.double().sum())
            n += nll.numel()
        out[f"val_loss/{cat}"] = total / n
    model.train()
    out["val_loss"] = float(np.mean([out[f"val_loss/{c}"] for c in val_sets]))
    return out


# ----------------------------------------------------------------------------------------------------
# the run

@dataclasses.dataclass
class Run:
    """The fixed parts of a run, built once: what the loop and the end of the run read."""
    args: argparse.Namespace
    dist: Dist
    plan: Plan
    store: st.Store
    categories: list
    train_ds: RandomWindowDataset
    val_sets: dict
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step_fn: torch.nn.Module
    log: Logger
    n_params: tuple
    peak_flops: float
    batches: "BatchPrefetcher" = None  # created at the first step

    def lr_at(self, update):
        return self.plan.lr * lr_at(update, self.plan.total_steps, self.plan.warmup, self.args.min_lr_ratio)

    def val_tags(self):
        base = self.plan.tag_base
        return None if base is None else {c: base + self.store.categories.index(c) for c in self.categories}


def lr_at(update, total, warmup, min_ratio):
    """LR multiplier for update number 1..total: linear warmup, cosine to min_ratio exactly at `total`."""
    if update <= warmup:
        return update / warmup
    progress = (update - warmup) / max(total - warmup, 1)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def build_model_and_optimizer(args, plan, dist):
    model = build_model(plan.cfg, args.init_seed)
    n_params = count_params(model)
    if plan.expected_params is not None:
        assert n_params[0] == plan.expected_params, f"{plan.model_name}: {n_params[0]} params, expected {plan.expected_params}"
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    model.to(dist.device)
    opt_kwargs = dict(lr=plan.lr, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    if dist.device.type == "cuda":
        opt_kwargs["fused"] = True
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], **opt_kwargs)
    step_fn = WindowLoss(model, plan.chunk_rows, dist.dtype)
    if args.compile:
        step_fn = torch.compile(step_fn)
    if dist.ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        step_fn = DDP(step_fn, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)
    return model, optimizer, step_fn, n_params


def gpu_peak(device):
    """(GPU name, dense bf16 peak FLOP/s or None) of a CUDA device, by exact product name; (None, None) on
    a CPU. An unknown GPU gets no MFU (a wrong peak would be worse than none)."""
    if device.type != "cuda":
        return None, None
    name = torch.cuda.get_device_name(device)
    return name, peak_bf16_flops(name)


def mfu_notes(gpu_name, peak):
    """The log lines about MFU: none on a CPU or a known GPU; an unknown GPU is named."""
    return [f"MFU n/a: no bf16 peak known for GPU {gpu_name!r} (add it to model.PEAK_BF16_FLOPS)"] \
        if gpu_name and peak is None else []


def run_config(args, run):
    """run_config.json: the flags, the identity and the derived numbers. Written once, when the run starts."""
    plan, dist = run.plan, run.dist
    n_total, n_nonemb, n_matmul = run.n_params
    fpt = flops_per_token(n_matmul, plan.cfg)
    return {**vars(args), "categories": run.categories, "K": len(run.categories), "run_name": plan.run_name,
            "identity": plan.identity, "model_name": plan.model_name, "learning_rate": plan.lr,
            "n_params_total": n_total, "n_params_nonembedding": n_nonemb, "n_params_matmul": n_matmul,
            "flops_per_token": fpt, "model_config_fields": plan.cfg.to_dict(), "world_size": dist.world,
            "tokens_per_step": plan.tokens_per_step, "token_budget_effective": plan.total_steps * plan.tokens_per_step,
            "total_steps": plan.total_steps, "warmup_steps": plan.warmup,
            "flops_6ND": fpt * plan.total_steps * plan.tokens_per_step,
            "store_id": run.store.store_id, "store_variant": run.store.meta.get("variant_id"),
            "pool_papers": len(run.train_ds.paper_ids), "pool_tokens": int(run.train_ds.lengths.sum()),
            "pool_windows": len(run.train_ds), "pool_short_papers_excluded": run.train_ds.n_short,
            "git_commit": git_commit(), "torch_version": torch.__version__, "window": WINDOW,
            "eval_seed": EVAL_SEED, "tag_token_base": plan.tag_base,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "dtype_resolved": str(dist.dtype).replace("torch.", "")}


def print_header(run, config):
    plan, args, log = run.plan, run.args, run.log
    log.print(f"run {plan.run_name}: categories {' '.join(run.categories)} (K={len(run.categories)}), "
              f"sampling {args.sampling}")
    log.print(run.train_ds.summary())
    log.print(f"model {plan.model_name}: {config['n_params_total']:,} params ({config['n_params_nonembedding']:,} "
              f"non-embedding, {config['n_params_matmul']:,} in matmuls), vocab {plan.cfg.vocab_size}, "
              f"device {run.dist.device}, dtype {config['dtype_resolved']}, world {run.dist.world}")
    epochs = plan.total_steps * plan.tokens_per_step / max(len(run.train_ds) * PRED_PER_WINDOW, 1)
    log.print(f"tokens/step {plan.tokens_per_step:,} (100 x {args.batch_size} x {args.grad_accum_steps} x "
              f"{run.dist.world}); steps {plan.total_steps:,}; budget {plan.total_steps * plan.tokens_per_step:,} "
              f"tokens ({epochs:.2f} epochs); warmup {plan.warmup}; lr {plan.lr:g} -> {plan.lr * args.min_lr_ratio:g}; "
              f"FLOPs ~ {config['flops_6ND']:.3g} ({config['flops_per_token']:,.0f} per token: 6 N_matmul + 12 L d T)")


def train_step(run, state, stop):
    """One optimizer step over grad_accum micro-batches. Returns (verdict, device mean loss, lr): verdict
    None, ("failed", msg) for a non-finite loss or gradient norm on any rank (the update is not applied),
    or ("interrupted", msg) for a stop signal on any rank (after this step's update).

    One check per step, before optimizer.step: a 3-value all-reduce (non-finite loss, non-finite grad
    norm, stop signal; a no-op in one process) read on the host. It costs one host-device round trip per
    step, and buys two things: NaN never reaches the weights, and under torchrun every rank agrees on a
    stop at the very next step (torchrun SIGKILLs its workers 30 s after its SIGTERM)."""
    args, dist, plan = run.args, run.dist, run.plan
    lr = run.lr_at(state.step + 1)
    for g in run.optimizer.param_groups:
        g["lr"] = lr
    loss_acc = torch.zeros((), device=dist.device)
    for micro in range(args.grad_accum_steps):
        if run.batches is None:
            run.batches = BatchPrefetcher(run.train_ds, args.batch_size, dist.rank, dist.world,
                                          pin_memory=dist.device.type == "cuda", tag_base=plan.tag_base,
                                          device=dist.device)
        x, labels, tags = run.batches.get(state.step * args.grad_accum_steps + micro)
        state.windows_by_label += np.bincount(labels, minlength=len(run.store.categories))
        x = x.to(dist.device, non_blocking=True)  # asynchronous on CUDA: x is pinned
        tags = tags.to(dist.device, non_blocking=True) if tags is not None else None
        if dist.ddp:  # all-reduce gradients only on the last micro-step
            run.step_fn.require_backward_grad_sync = micro == args.grad_accum_steps - 1
        with dist.autocast():
            loss = run.step_fn(x, tags)
        (loss / args.grad_accum_steps).backward()
        loss_acc += loss.detach().float() / args.grad_accum_steps
    params = [p for p in run.model.parameters() if p.grad is not None]
    if args.max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
    else:  # --max_grad_norm off: no clipping, but the norm is still checked
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    flags = torch.stack([~torch.isfinite(loss_acc), ~torch.isfinite(norm.to(loss_acc.device)),
                         torch.tensor(stop.signal is not None, device=loss_acc.device)]).float()
    bad_loss, bad_grad, stopped = dist.all_reduce(flags, op="max").tolist()
    if bad_loss or bad_grad:
        run.optimizer.zero_grad(set_to_none=True)
        what = "loss" if bad_loss else f"gradient norm ({float(norm)}) with a finite loss"
        return ("failed", f"non-finite {what} at step {state.step + 1}; not applied, the last good checkpoint "
                          "is kept"), loss_acc, lr
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.tokens_seen += plan.tokens_per_step
    verdict = None
    if stopped:
        verdict = "interrupted", f"interrupted ({stop.signal or 'signal on another rank'}) at step {state.step}"
    return verdict, loss_acc, lr


def run_validation(run, state):
    ev = validate(run.model, run.val_sets, run.args.eval_batch_size, run.plan.chunk_rows, run.dist.dtype,
                  run.val_tags())
    state.last_val, state.last_val_step = ev["val_loss"], state.step
    run.log.metrics({"kind": "eval", "step": state.step, "tokens": state.tokens_seen, **ev,
                     "wall_s": state.wall_s(), "train_s": state.train_s()})
    run.log.print(f"step {state.step:6d} | val_loss {ev['val_loss']:.4f} | "
                  + " ".join(f"{c} {ev['val_loss/' + c]:.3f}" for c in run.val_sets))
    return ev["val_loss"]


def log_train(run, state, loss_acc, lr, t_log, tok_log):
    loss_val = float(run.dist.all_reduce(loss_acc, op="avg"))
    tps = tok_log / max(time.time() - t_log, 1e-9)
    row = {"kind": "train", "step": state.step, "tokens": state.tokens_seen, "lr": lr, "loss": loss_val,
           "perplexity": math.exp(min(loss_val, 50)), "tokens_per_s": tps,
           "wall_s": state.wall_s(), "train_s": state.train_s(), "time": time.time()}
    if run.dist.device.type == "cuda":  # what this process holds on its GPU (runs sharing a GPU: gpu_check)
        row["gpu_mem_gib"] = torch.cuda.max_memory_reserved(run.dist.device) / 2 ** 30
    if run.peak_flops:
        row["mfu"] = flops_per_token(run.n_params[2], run.plan.cfg) * tps / (run.peak_flops * run.dist.world)
    run.log.metrics(row)
    run.log.print(f"step {state.step:6d}/{run.plan.total_steps} | loss {loss_val:.4f} | lr {lr:.2e} | "
                  f"{tps:,.0f} tok/s" + (f" | mfu {row['mfu']:.1%}" if "mfu" in row else ""))


def validate_and_keep_best(run, state):
    """Validation (rank 0) and best/ when it improved (collective: every rank calls it)."""
    dist = run.dist
    improved = run_validation(run, state) < state.best_val if dist.rank0 else False
    state.last_val_step = state.step  # on every rank: all decide alike whether the step's validation exists
    flag = torch.tensor(float(improved), device=dist.device)
    if dist.ddp:  # rank 0 decides, every rank follows (the checkpoint below is collective)
        import torch.distributed as tdist
        tdist.broadcast(flag, 0)
    if flag.item():
        state.best_val = state.last_val if dist.rank0 else state.best_val
        state.best_step = state.step
        checkpoint(run.plan.run_dir / "best", run, state, with_optimizer=False)


def train_loop(run, state):
    """Steps until the schedule ends, a non-finite loss / gradient, or a stop signal. Returns (status,
    message).

    Every step is checked before its update (train_step), so no NaN reaches the weights and no checkpoint
    holds one (checkpoint() checks the weights too). A stop signal ends the run at the end of the step it
    arrived in (under DDP: the step at which any rank saw it, the same step on every rank), after what that
    step owes: validation, best/, a step checkpoint (final/ too at the last step)."""
    args, plan, dist = run.args, run.plan, run.dist
    stop = StopRequest(restore_to=BEFORE_TRAINING)  # replaces train.py's early handler, if any, directly
    run.model.train()
    if state.step == 0 and dist.rank0:
        run_validation(run, state)  # the untrained model: ~ln(vocab)
    t_log, tok_log = time.time(), 0
    state.train_start = time.time()
    try:
        while state.step < plan.total_steps:
            verdict, loss_acc, lr = train_step(run, state, stop)
            if verdict and verdict[0] == "failed":
                return verdict
            tok_log += plan.tokens_per_step
            if runlife.STEP_HOOK:
                runlife.STEP_HOOK(run, state)
            if verdict is None and stop.signal and not dist.ddp:  # arrived during this step: stop after it
                verdict = "interrupted", f"interrupted ({stop.signal}) at step {state.step}"
            if state.step % args.log_interval_steps == 0 or state.step == plan.total_steps:
                log_train(run, state, loss_acc, lr, t_log, tok_log)
                t_log, tok_log = time.time(), 0
            # what the step owes: validation (and best/) on eval steps and the last step, a step checkpoint (and
            # rotation) on checkpoint steps; at a stop all of that, then a step checkpoint in any case (final/
            # too at the last step), so a resume loses nothing of this step
            last = state.step == plan.total_steps
            if state.step % args.eval_interval_steps == 0 or last:
                validate_and_keep_best(run, state)
            if (state.step % args.checkpoint_interval_steps == 0 and not last) or verdict:
                runlife.save_step_checkpoint(run, state)
            if verdict and last:
                checkpoint(plan.run_dir / "final", run, state, with_optimizer=False)
            if verdict:  # interrupted: what was trained is kept
                return verdict
        # a stop that arrived after the last step's check (during its validation or best/): honoured here,
        # before the long test evaluation, with a step checkpoint a resume can finish from (agreed by all ranks)
        late = dist.all_reduce(torch.tensor(float(stop.signal is not None)), op="max")
        if float(late):
            runlife.save_step_checkpoint(run, state)
            checkpoint(plan.run_dir / "final", run, state, with_optimizer=False)
            return "interrupted", f"interrupted ({stop.signal or 'signal on another rank'}) at step {state.step}"
        return "complete", None
    except StopRun as e:
        return "failed", str(e)
    finally:
        stop.restore()
        state.prior_train_s, state.train_start = state.train_s(), None


def finish(run, state, status, message):
    """End of the run: final/, loss curve, the exact test evaluation, summary.json (last)."""
    plan, dist = run.plan, run.dist
    if status == "complete":
        try:
            if state.last_val_step != state.step:  # resumed from a checkpoint without this step's validation
                validate_and_keep_best(run, state)
            checkpoint(plan.run_dir / "final", run, state, with_optimizer=False)
        except StopRun as e:
            status, message = "failed", str(e)
            run.log.print(f"error: {message}")
    counts = checkpoint_state(state, plan, dist)["windows_by_label"]  # all-reduced: every rank takes part
    if not dist.rank0 or status == "interrupted":
        return
    try:
        plot_loss_curve(plan.run_dir)
    except OSError as e:  # a full disk must not hide the run's own error
        run.log.print(f"warning: loss_curve.png not written ({e})")
    test = None
    if status == "complete" and not run.args.skip_test_eval:
        test = evaluate_model(run.model, run.store, split="test", categories=None, batch_size=run.args.eval_batch_size,
                              device=dist.device, dtype=dist.dtype, training_categories=run.categories,
                              output=plan.run_dir / "test_results.json", model_path=plan.run_dir / "final",
                              progress=False, tag_base=plan.tag_base)
        o = test["overall"]
        run.log.print(f"test: macro loss {o['macro_loss']:.4f}, in-training macro {o['in_training_macro_loss']:.4f}"
                      + (f", held-out macro {o['held_out_macro_loss']:.4f}" if o["held_out_macro_loss"] is not None else ""))
    names = run.store.categories
    per_cat = {names[i]: int(counts[i]) * PRED_PER_WINDOW for i in range(len(counts)) if names[i] in run.categories}
    pool = run.train_ds.pool_tokens_by_label()
    train_s = state.train_s()
    summary = {"status": status, "error": message, "run_name": plan.run_name, "store_id": run.store.store_id,
               "categories": run.categories, "K": len(run.categories), "steps": state.step,
               "total_steps": plan.total_steps, "schedule_complete": status == "complete" and state.step == plan.total_steps,
               "tokens_seen": state.tokens_seen, "tokens_per_category": per_cat,
               "epochs_per_category": {c: per_cat[c] / max(pool.get(names.index(c), 0), 1) for c in run.categories},
               "final_val_loss": state.last_val if state.last_val_step == state.step else None,
               "final_val_step": state.last_val_step, "best_val_loss": state.best_val if math.isfinite(state.best_val) else None,
               "best_step": state.best_step, "wall_time_s": state.wall_s(), "train_time_s": train_s,
               "tokens_per_s": state.tokens_seen / max(train_s, 1e-9),
               "test_macro_loss": test["overall"]["macro_loss"] if test else None}
    try:
        st.write_json_atomic(plan.run_dir / "summary.json", summary, indent=1)
    except OSError as e:
        if status == "complete":
            raise
        run.log.print(f"warning: summary.json not written ({e})")
    final_val = summary["final_val_loss"]
    run.log.print(f"{status}: {state.step}/{plan.total_steps} steps, {state.tokens_seen:,} tokens, final val_loss "
                  f"{final_val if final_val is None else round(final_val, 4)}, "
                  f"{summary['tokens_per_s']:,.0f} tok/s, wall {summary['wall_time_s']:.1f} s (all segments) -> {plan.run_dir}")


def main(argv=None):
    args = parse_args(argv)
    t_start = time.time()
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar at every checkpoint
    dist = setup_dist(args)
    store, categories, train_ds, val_sets = load_data(args)
    args.K = len(categories)
    plan = plan_run(args, dist, store, categories, train_ds)

    lock = runlife.lock_run_dir(plan.run_dir, dist)  # one writer: held until this process ends
    try:
        dist.barrier()
        candidates = runlife.prepare_run_dir(args, plan, dist)  # the checkpoints to resume from, newest first
        if candidates == "complete":
            if dist.rank0:
                print(f"run {plan.run_name} is already complete ({plan.run_dir / 'summary.json'}); nothing to do")
            dist.close()
            return plan.run_dir
        if dist.rank0:
            (plan.run_dir / "summary.json").unlink(missing_ok=True)  # the run is not complete until we say so
        dist.barrier()

        model, optimizer, step_fn, n_params = build_model_and_optimizer(args, plan, dist)
        gpu_name, peak = gpu_peak(dist.device)
        val_sets = {c: v.to(dist.device) for c, v in val_sets.items()}
        run = Run(args, dist, plan, store, categories, train_ds, val_sets, model, optimizer, step_fn, None, n_params, peak)
        config = run_config(args, run)
        state, resume_from = runlife.restore(candidates, run, len(store.categories))
        state.segment_start = t_start
        if dist.rank0:
            if not (plan.run_dir / "run_config.json").is_file():  # written once, when the run starts
                st.write_json_atomic(plan.run_dir / "run_config.json", config, indent=1)
            if args.resume:
                runlife.rewind_metrics(plan.run_dir, state.step if resume_from is not None else None, state)
        run.log = Logger(plan.run_dir, dist.rank0, args, config)
        print_header(run, config)
        for line in mfu_notes(gpu_name, peak):
            run.log.print(line)
        if resume_from is not None:
            run.log.print(f"resumed from step {state.step} ({resume_from})")
        elif args.resume:
            run.log.print("resume: no checkpoint yet, starting from scratch")

        status, message = train_loop(run, state)  # from its start a stop ends a step (runlife.StopRequest)
        if status == "failed":
            run.log.print(f"error: {message}")
        runlife.finish_or_stop(finish, run, state, status, message)  # final/, test evaluation, summary.json
        run.log.close()
        # the DDP wrapper holds the process group: freed first, so that destroy_process_group leaves no gloo
        # thread for the interpreter's exit to destroy (rank 1 of a complete 2-rank run once aborted there,
        # "terminate called without an active exception", under load: notes.md session 24)
        del run, model, optimizer, step_fn
        gc.collect()
        dist.close()
        if status == "interrupted":
            if dist.rank0:
                print(f"{message}: checkpoint step_{state.step:08d} written; continue with the same command and "
                      f"--resume (run {plan.run_name})", flush=True)
            raise SystemExit(EXIT_INTERRUPTED)
        if status != "complete":
            raise SystemExit(1)
        return plan.run_dir
    finally:
        if lock:  # the kernel would release it at exit; a caller in the same process (tests) needs it now
            lock.release()


if __name__ == "__main__":
    st.cli(main)
