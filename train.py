"""
Train a randomly initialised Pythia-architecture model on K arXiv categories of a token store under a
token budget. One process on a CPU or GPU, or many through torchrun (DDP).

Dev run on a laptop CPU (the sample store, a few steps):
    python train.py --data_dir preprocessed_sample --K 3 --seed 0 --model_config pythia-14m \\
        --batch_size 8 --token_budget 20000 --output_dir runs
Full run on 8 GPUs (global batch 8 x 40 windows = 32,000 predicted tokens per step):
    torchrun --nproc_per_node=8 train.py --data_dir preprocessed_arxiv --K 3 --seed 4 \\
        --model_config pythia-70m --batch_size 40 --token_budget 90000000 --compile --output_dir runs

Run directory {output_dir}/{run_name}/: run_config.json, train.log, metrics.jsonl, step_XXXXXXXX/ (the
newest --max_step_checkpoints), best/, final/, loss_curve.png, test_results.json and, written last,
summary.json (a run is complete exactly when summary.json says status "complete").
"""
import argparse
import datetime
import inspect
import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

import store as st
from evaluate import evaluate_model, head_chunk_rows, window_hidden
from random_window_dataset import SAMPLING_MODES, RandomWindowDataset, fixed_eval_windows

WINDOW = 101                      # tokens per window: 100 predicted tokens, each with <= 100 of context
PRED_PER_WINDOW = WINDOW - 1
EVAL_SEED = 1234                  # validation windows: the same in every run that trains on a category

# The published Pythia architectures (EleutherAI/pythia configs), written here so no hub is needed.
PYTHIA_BASE = dict(vocab_size=50304, rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=2048,
                   use_parallel_residual=True, tie_word_embeddings=False, layer_norm_eps=1e-5,
                   hidden_act="gelu", initializer_range=0.02, attention_dropout=0.0, hidden_dropout=0.0,
                   bos_token_id=0, eos_token_id=0)
PYTHIA = {  # name: (hidden, layers, heads, default lr, exact parameter count)
    "pythia-14m": (128, 6, 4, 1e-3, 14_067_712),
    "pythia-31m": (256, 6, 8, 1e-3, 30_494_720),
    "pythia-70m": (512, 6, 8, 1e-3, 70_426_624),
    "pythia-160m": (768, 12, 12, 6e-4, 162_322_944),
    "pythia-410m": (1024, 24, 16, 3e-4, 405_334_016),
}
# bf16 dense peak FLOP/s per GPU, for MFU (nanochat-style table; unknown GPUs report no MFU)
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--data_dir", default="preprocessed_arxiv", help="token store written by fetch_arxiv.py")
    a("--K", type=int, default=1, help="number of categories (select_categories(K, seed))")
    a("--seed", type=int, default=0, help="subset seed; also the default --init_seed and --data_seed")
    a("--categories", nargs="+", default=None, help="explicit category names (overrides --K/--seed)")
    a("--init_seed", type=int, default=None)
    a("--data_seed", type=int, default=None)
    a("--sampling", default="paper", choices=SAMPLING_MODES)
    a("--model_config", default="pythia-14m", help=f"{', '.join(PYTHIA)} or a JSON file of GPTNeoXConfig fields")
    a("--token_budget", type=float, default=None, help="predicted tokens to train on (takes precedence over --epochs)")
    a("--epochs", type=float, default=1.0, help="passes over the pool's non-overlapping windows")
    a("--batch_size", type=int, default=32, help="windows per device per micro-step")
    a("--grad_accum_steps", type=int, default=1)
    a("--learning_rate", type=float, default=None, help="default: Pythia's for the size (1e-3 / 6e-4 / 3e-4)")
    a("--adam_beta1", type=float, default=0.9)
    a("--adam_beta2", type=float, default=0.95)
    a("--adam_epsilon", type=float, default=1e-8)
    a("--weight_decay", type=float, default=0.1, help="on >= 2-D weights only")
    a("--max_grad_norm", type=float, default=1.0)
    a("--warmup_ratio", type=float, default=0.01)
    a("--min_lr_ratio", type=float, default=0.1, help="cosine ends at this fraction of the lr, at the last step")
    a("--output_dir", default="runs")
    a("--run_name", default=None, help="default: <model>_K<K>_seed<seed>_<sampling>_<budget>")
    a("--resume", nargs="?", const="auto", default=None,
      help="bare: the newest complete checkpoint of this run; or a checkpoint directory")
    a("--checkpoint_interval_steps", type=int, default=1000)
    a("--max_step_checkpoints", type=int, default=2)
    a("--eval_interval_steps", type=int, default=500)
    a("--eval_windows", type=int, default=256, help="validation windows per training category")
    a("--eval_batch_size", type=int, default=None, help="default: --batch_size")
    a("--skip_test_eval", action="store_true", help="skip the final exact test-split evaluation")
    a("--log_interval_steps", type=int, default=10)
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    a("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="auto: bf16 on CUDA, fp32 on CPU")
    a("--compile", action="store_true", help="torch.compile the model (GPU)")
    a("--wandb_project", default=None, help="log to wandb (opt-in; never fatal)")
    a("--wandb_mode", default="online", choices=["online", "offline", "disabled"])
    a("--tag_categories", action="store_true",
      help="precede each window with a token naming its category (id = store vocab + label; never a target)")
    args = p.parse_args(argv)
    for name in ("batch_size", "grad_accum_steps", "checkpoint_interval_steps", "eval_interval_steps",
                 "eval_windows", "log_interval_steps", "max_step_checkpoints"):
        if getattr(args, name) < 1:
            st.die(f"--{name} must be >= 1 (got {getattr(args, name)})")
    if args.token_budget is not None and args.token_budget <= 0:
        st.die(f"--token_budget must be positive (got {args.token_budget})")
    if args.epochs <= 0:
        st.die(f"--epochs must be positive (got {args.epochs})")
    args.init_seed = args.seed if args.init_seed is None else args.init_seed
    args.data_seed = args.seed if args.data_seed is None else args.data_seed
    args.eval_batch_size = args.eval_batch_size or args.batch_size
    return args


# ----------------------------------------------------------------------------------------------------
# model

def model_config(spec, store_vocab):
    """(GPTNeoXConfig, name, default lr, expected param count or None)."""
    from transformers import GPTNeoXConfig
    if spec in PYTHIA:
        h, L, nh, lr, n_params = PYTHIA[spec]
        fields = dict(PYTHIA_BASE, hidden_size=h, num_hidden_layers=L, num_attention_heads=nh,
                      intermediate_size=4 * h)
        name = spec
    else:
        path = Path(spec)
        if not path.is_file():
            st.die(f"--model_config {spec}: neither a named config ({', '.join(PYTHIA)}) nor a JSON file")
        try:
            user = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            st.die(f"--model_config {spec}: not valid JSON ({e})")
        known = set(inspect.signature(GPTNeoXConfig.__init__).parameters) | {"rotary_pct", "rotary_emb_base",
                                                                              "model_type"}
        unknown = sorted(set(user) - known)
        if unknown:
            st.die(f"--model_config {spec}: field(s) {', '.join(unknown)} unknown to GPTNeoXConfig")
        fields = dict(PYTHIA_BASE, **{k: v for k, v in user.items() if k != "model_type"})
        fields.setdefault("intermediate_size", 4 * fields.get("hidden_size", 512))
        name, lr, n_params = path.stem, 1e-3, None
    # transformers 5 spells Pythia's rotary settings as rope_parameters
    fields["rope_parameters"] = {"rope_type": "default", "rope_theta": fields.pop("rotary_emb_base"),
                                 "partial_rotary_factor": fields.pop("rotary_pct")}
    cfg = GPTNeoXConfig(**fields)
    if cfg.vocab_size < store_vocab:
        st.die(f"--model_config {spec}: vocab_size {cfg.vocab_size} is smaller than the store's vocabulary "
               f"({store_vocab} ids)")
    return cfg, name, lr, n_params


def build_model(cfg, init_seed):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(init_seed)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)


def count_params(model):
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    return total, total - emb  # non-embedding: Kaplan's convention (the untied output head counts)


class FusedLinearCrossEntropy(torch.autograd.Function):
    """Sum of next-token NLL of hidden states h (N, d) under the output head W (V, d), chunk by chunk.

    The forward pass also computes the gradients (softmax - onehot) per chunk, so neither fp32 logits
    for the whole batch nor a recomputation is needed: only one chunk of logits exists at a time. With a
    50k vocabulary this layer dominates small models; on CPU fp32 it costs the same as the plain loss.
    """

    @staticmethod
    def forward(ctx, h, weight, targets, chunk_rows, compute_dtype):
        need = ctx.needs_input_grad
        w = weight.to(compute_dtype)
        grad_h = torch.empty_like(h) if need[0] else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need[1] else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        with torch.autocast(device_type=h.device.type, enabled=False):
            for s in range(0, h.shape[0], chunk_rows):
                hc, tc = h[s:s + chunk_rows].to(compute_dtype), targets[s:s + chunk_rows]
                logits = (hc @ w.t()).float()
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, tc[:, None]).squeeze(1)).sum()
                if grad_h is not None or grad_w is not None:
                    g = logits.sub_(lse[:, None]).exp_()                   # softmax, in place
                    g[torch.arange(len(tc), device=g.device), tc] -= 1.0   # minus one-hot
                    g = g.to(compute_dtype)
                    if grad_h is not None:
                        grad_h[s:s + chunk_rows] = (g @ w).to(h.dtype)
                    if grad_w is not None:
                        grad_w += (g.t() @ hc).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None, None


class WindowLoss(torch.nn.Module):
    """model -> mean loss of a batch of windows. Wrapping the loss in a module lets DDP and
    torch.compile see the whole step (the fused head included) through one forward()."""

    def __init__(self, model, chunk_rows, compute_dtype):
        super().__init__()
        self.model, self.chunk_rows, self.compute_dtype = model, chunk_rows, compute_dtype

    def forward(self, x, tags=None):
        return lm_loss(self.model, x, self.chunk_rows, self.compute_dtype, tags)


def lm_loss(model, x, chunk_rows, compute_dtype, tags=None):
    """Mean next-token loss of windows x (B, 101): 100 predictions per window, through the fused head.
    tags (B,): optional category tokens put in front of each window (tagged runs)."""
    h = window_hidden(model, x, tags)                          # (B, 100, d), final layer norm applied
    head = model.get_output_embeddings().weight
    targets = x[:, 1:].reshape(-1)
    total = FusedLinearCrossEntropy.apply(h.reshape(-1, h.shape[-1]), head, targets, chunk_rows, compute_dtype)
    return total / targets.numel()


# ----------------------------------------------------------------------------------------------------
# schedule, checkpoints, logging

def lr_at(update, total, warmup, min_ratio):
    """LR multiplier for update number 1..total: linear warmup, cosine to min_ratio exactly at `total`."""
    if update <= warmup:
        return update / warmup
    progress = (update - warmup) / max(total - warmup, 1)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def save_checkpoint(path, model, optimizer, state):
    """save_pretrained weights + training_state.pt, written to a temp dir and renamed: all or nothing."""
    path = Path(path)
    tmp = st.temp_dir_beside(path)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        torch.save({"optimizer": optimizer.state_dict() if optimizer is not None else None, **state},
                   tmp / "training_state.pt")
        st.publish_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def step_checkpoints(run_dir):
    """Complete step checkpoints, oldest first (a temp dir never has the step_ name)."""
    return sorted(p for p in Path(run_dir).glob("step_*") if (p / "training_state.pt").is_file())


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=st.PROJECT_DIR, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except Exception:
        return None


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
    rows = [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
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
    fig.savefig(Path(run_dir) / "loss_curve.png", dpi=120)
    plt.close(fig)


@torch.no_grad()
def validate(model, val_sets, batch_size, chunk_rows, compute_dtype, autocast, val_tags=None):
    """Mean loss of each category's fixed validation windows; val_loss = mean over categories.
    val_tags: {category: tag token id} for tagged runs."""
    model.eval()
    out = {}
    for cat, x in val_sets.items():
        total = 0.0
        for s in range(0, len(x), batch_size):
            xb = x[s:s + batch_size]
            tags = None if val_tags is None else torch.full((len(xb),), val_tags[cat], device=xb.device)
            with autocast:
                total += lm_loss(model, xb, chunk_rows, compute_dtype, tags).item() * len(xb)
        out[f"val_loss/{cat}"] = total / len(x)
    model.train()
    out["val_loss"] = float(np.mean([out[f"val_loss/{c}"] for c in val_sets]))
    return out


# ----------------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    t_start = time.time()
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar at every checkpoint

    # --- distributed / device -----------------------------------------------------------------------
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if ddp:
        import torch.distributed as dist
        rank, world, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    else:
        rank, world, local_rank = 0, 1, 0
    rank0 = rank == 0
    if args.device == "auto":
        args.device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            st.die("--device cuda: no CUDA device is available")
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if ddp:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=30))
    dtype = {"auto": torch.bfloat16 if device.type == "cuda" else torch.float32,
             "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)

    # --- data -----------------------------------------------------------------------------------------
    try:
        store = st.Store(args.data_dir, in_memory=True)  # ~1 GB for the full dataset: sampling from RAM
        categories = list(args.categories) if args.categories else st.select_categories(args.K, args.seed)
        store.category_ids(categories)
        if len(set(categories)) != len(categories):
            st.die(f"--categories lists a category twice: {' '.join(categories)}")
        train_ds = RandomWindowDataset(None, "train", categories, window=WINDOW, seed=args.data_seed,
                                       sampling=args.sampling, store=store)
        val_sets = {c: fixed_eval_windows(store, "validation", c, args.eval_windows, WINDOW, EVAL_SEED)
                    for c in categories}
    except st.StoreError as e:
        st.die(str(e))
    args.K = len(categories)

    # --- model ------------------------------------------------------------------------------------------
    cfg, model_name, default_lr, expected_params = model_config(args.model_config, store.vocab_size)
    chunk_rows = head_chunk_rows(device, cfg.vocab_size)
    # tagged runs: category c's tag is the token id store_vocab + label(c); Pythia's vocabulary (50304) has
    # 27 unused ids above the tokenizer's 50277, so the tags 50277..50287 need no new embedding rows
    tag_base = store.vocab_size if args.tag_categories else None
    if tag_base is not None and tag_base + len(store.categories) > cfg.vocab_size:
        st.die(f"--tag_categories: tags {tag_base}..{tag_base + len(store.categories) - 1} do not fit the model's "
               f"vocab_size {cfg.vocab_size}")
    val_tags = {c: tag_base + store.categories.index(c) for c in categories} if tag_base is not None else None
    lr = args.learning_rate if args.learning_rate is not None else default_lr
    model = build_model(cfg, args.init_seed)
    n_total, n_nonemb = count_params(model)
    if expected_params is not None:
        assert n_total == expected_params, f"{model_name}: {n_total} params, expected {expected_params}"

    # --- derived quantities -------------------------------------------------------------------------------
    tokens_per_step = PRED_PER_WINDOW * args.batch_size * args.grad_accum_steps * world
    budget = args.token_budget if args.token_budget is not None else args.epochs * len(train_ds) * PRED_PER_WINDOW
    if budget < tokens_per_step:
        st.die(f"token budget {budget:,.0f} is smaller than one step ({tokens_per_step:,} tokens = "
               f"{PRED_PER_WINDOW} x batch {args.batch_size} x accum {args.grad_accum_steps} x world {world}); "
               "raise --token_budget or lower --batch_size")
    total_steps = math.ceil(budget / tokens_per_step)
    warmup = max(1, math.ceil(args.warmup_ratio * total_steps))
    budget_tag = f"{budget:.0e}".replace("e+0", "e").replace("e+", "e")
    run_name = args.run_name or f"{model_name}_K{args.K}_seed{args.seed}_{args.sampling}_tok{budget_tag}"
    run_dir = Path(args.output_dir) / run_name
    flops_per_token = 6 * n_total
    pool_tokens_by_label = train_ds.pool_tokens_by_label()  # for epochs per category

    # --- run directory / resume -------------------------------------------------------------------------------
    resume_from = None
    summary_path = run_dir / "summary.json"
    if args.resume and summary_path.is_file():
        prior = json.loads(summary_path.read_text())
        if prior.get("status") == "complete":  # idempotent: a scheduler may launch a finished run again
            if rank0:
                print(f"run {run_name} is already complete ({summary_path}); nothing to do")
            if ddp:
                dist.destroy_process_group()
            return run_dir
    if args.resume:
        if args.resume == "auto":
            ckpts = step_checkpoints(run_dir)
            resume_from = ckpts[-1] if ckpts else None
        else:
            resume_from = Path(args.resume)
            if not (resume_from / "training_state.pt").is_file():
                st.die(f"--resume {args.resume}: not a complete checkpoint (no training_state.pt)")
    elif run_dir.exists() and any(run_dir.iterdir()):
        st.die(f"run directory {run_dir} exists; use --resume to continue it or another --run_name")
    if rank0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").unlink(missing_ok=True)  # the run is not complete until we say so
        for stale in run_dir.glob(".*.tmp-*"):  # half-written checkpoints of a killed run: never valid
            shutil.rmtree(stale, ignore_errors=True)
    if ddp:
        dist.barrier()
    config = {**vars(args), "categories": categories, "run_name": run_name, "model_name": model_name,
              "learning_rate": lr, "n_params_total": n_total, "n_params_nonembedding": n_nonemb,
              "model_config_fields": cfg.to_dict(), "world_size": world, "tokens_per_step": tokens_per_step,
              "token_budget_effective": total_steps * tokens_per_step, "total_steps": total_steps,
              "warmup_steps": warmup, "flops_6ND": flops_per_token * total_steps * tokens_per_step,
              "store_id": store.store_id, "store_variant": store.meta.get("variant_id"),
              "pool_papers": len(train_ds.paper_ids), "pool_tokens": int(train_ds.lengths.sum()),
              "pool_windows": len(train_ds), "pool_short_papers_excluded": train_ds.n_short,
              "git_commit": git_commit(), "torch_version": torch.__version__, "window": WINDOW,
              "eval_seed": EVAL_SEED, "tag_token_base": tag_base, "dtype_resolved": str(dtype).replace("torch.", "")}
    log = Logger(run_dir, rank0, args, config)
    if rank0:
        st.write_json_atomic(run_dir / "run_config.json", config, indent=1)
    log.print(f"run {run_name}: categories {' '.join(categories)} (K={args.K}), sampling {args.sampling}")
    log.print(train_ds.summary())
    log.print(f"model {model_name}: {n_total:,} params ({n_nonemb:,} non-embedding), vocab {cfg.vocab_size}, "
              f"device {device}, dtype {config['dtype_resolved']}, world {world}")
    log.print(f"tokens/step {tokens_per_step:,} (100 x {args.batch_size} x {args.grad_accum_steps} x {world}); "
              f"steps {total_steps:,}; budget {total_steps * tokens_per_step:,} tokens "
              f"({total_steps * tokens_per_step / max(len(train_ds) * PRED_PER_WINDOW, 1):.2f} epochs); "
              f"warmup {warmup}; lr {lr:g} -> {lr * args.min_lr_ratio:g}; FLOPs ~ {config['flops_6ND']:.3g} (6ND)")

    # --- optimiser ----------------------------------------------------------------------------------------------
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    model.to(device)
    opt_kwargs = dict(lr=lr, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    if device.type == "cuda":
        opt_kwargs["fused"] = True
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], **opt_kwargs)

    step, tokens_seen, windows_by_label = 0, 0, np.zeros(len(store.categories), dtype=np.int64)
    best_val, last_val, history_best_step = float("inf"), None, None
    if resume_from is not None:
        from transformers import AutoModelForCausalLM
        # from_pretrained, not load_state_dict: transformers 5 names the GPT-NeoX head differently in
        # memory and on disk, and a non-strict state-dict load silently leaves it untrained
        loaded = AutoModelForCausalLM.from_pretrained(resume_from, attn_implementation="sdpa", dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), strict=True)
        del loaded
        state = torch.load(resume_from / "training_state.pt", map_location=device, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        step, tokens_seen = int(state["step"]), int(state["tokens_seen"])
        if rank0:
            windows_by_label = np.asarray(state["windows_by_label"], dtype=np.int64)
        best_val = float(state.get("best_val_loss", float("inf")))
        history_best_step = state.get("best_step")
        torch.set_rng_state(state["torch_rng"].cpu())  # loaded onto `device`; the CPU generator needs a CPU tensor
        if state["total_steps"] != total_steps:
            st.die(f"--resume: the checkpoint was made for {state['total_steps']} steps, this run has "
                   f"{total_steps}; resume with the same budget and batch flags")
        log.print(f"resumed from step {step} ({resume_from})")
    elif args.resume:
        log.print("resume: no checkpoint yet, starting from scratch")

    raw_model = model
    step_fn = WindowLoss(raw_model, chunk_rows, dtype)
    if args.compile:
        step_fn = torch.compile(step_fn)
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        step_fn = DDP(step_fn, device_ids=[local_rank] if device.type == "cuda" else None)
    val_sets = {c: v.to(device) for c, v in val_sets.items()}
    peak = next((v for k, v in PEAK_FLOPS.items() if device.type == "cuda" and k in torch.cuda.get_device_name(device)), None)

    def train_state():
        counts = torch.from_numpy(windows_by_label.copy())
        if ddp:
            dist.all_reduce(counts)
        return {"step": step, "tokens_seen": tokens_seen, "total_steps": total_steps,
                "windows_by_label": counts.tolist(), "best_val_loss": best_val, "best_step": history_best_step,
                "torch_rng": torch.get_rng_state(), "sampler": {"seed": args.data_seed, "sampling": args.sampling,
                                                               "next_step": step},
                "schedule": {"warmup": warmup, "total": total_steps, "min_lr_ratio": args.min_lr_ratio}}

    def checkpoint(path, with_optimizer=True):
        state = train_state()  # collective: every rank takes part
        if rank0:
            save_checkpoint(path, raw_model, optimizer if with_optimizer else None, state)

    def run_validation():
        nonlocal last_val
        ev = validate(raw_model, val_sets, args.eval_batch_size, chunk_rows, dtype, autocast, val_tags)
        last_val = ev["val_loss"]
        log.metrics({"kind": "eval", "step": step, "tokens": tokens_seen, **ev})
        log.print(f"step {step:6d} | val_loss {ev['val_loss']:.4f} | "
                  + " ".join(f"{c} {ev['val_loss/' + c]:.3f}" for c in val_sets))
        return ev

    # --- loop -----------------------------------------------------------------------------------------------------
    status, fail_msg = "complete", None
    raw_model.train()
    if step == 0 and rank0:
        run_validation()  # the untrained model: ~ln(vocab)
    t_log, tok_log = time.time(), 0
    train_t0, train_tok0 = time.time(), tokens_seen
    # A NaN/inf loss is tracked on the device and checked only where the loop synchronises anyway (log,
    # validation, checkpoint, last step): a per-step .item() would stall the GPU every step. Checkpoints are
    # written only after a passing check, so the last checkpoint is always a good one.
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    last_check = step
    while step < total_steps:
        m = lr_at(step + 1, total_steps, warmup, args.min_lr_ratio)
        for g in optimizer.param_groups:
            g["lr"] = lr * m
        loss_acc = torch.zeros((), device=device)
        for micro in range(args.grad_accum_steps):
            x, labels = train_ds.sample_batch(step * args.grad_accum_steps + micro, args.batch_size, rank, world,
                                              return_labels=True)
            windows_by_label += np.bincount(labels, minlength=len(store.categories))
            x = x.to(device, non_blocking=True)
            tags = torch.from_numpy(labels + tag_base).to(device) if tag_base is not None else None
            if ddp:  # all-reduce gradients only on the last micro-step
                step_fn.require_backward_grad_sync = micro == args.grad_accum_steps - 1
            with autocast:
                loss = step_fn(x, tags)
            (loss / args.grad_accum_steps).backward()
            loss_acc += loss.detach().float() / args.grad_accum_steps
        nonfinite |= ~torch.isfinite(loss_acc)
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += tokens_per_step
        tok_log += tokens_per_step
        logging = step % args.log_interval_steps == 0 or step == total_steps
        if logging or step % args.eval_interval_steps == 0 or step % args.checkpoint_interval_steps == 0:
            bad = nonfinite.float()
            if ddp:
                dist.all_reduce(bad, op=dist.ReduceOp.MAX)
            if bad.item():
                status = "failed"
                fail_msg = (f"non-finite loss at step {step}" if step == last_check + 1 else
                            f"non-finite loss between steps {last_check + 1} and {step}") + \
                    "; the last good checkpoint is kept"
                log.print(f"error: {fail_msg}")
                break
            last_check = step
        if logging:
            if ddp:
                dist.all_reduce(loss_acc, op=dist.ReduceOp.AVG)
            loss_val = float(loss_acc)
            dt = time.time() - t_log
            tps = tok_log / max(dt, 1e-9)
            row = {"kind": "train", "step": step, "tokens": tokens_seen, "lr": lr * m, "loss": loss_val,
                   "perplexity": math.exp(min(loss_val, 50)), "tokens_per_s": tps}
            if peak:
                row["mfu"] = flops_per_token * tps / (peak * world)
            log.metrics(row)
            log.print(f"step {step:6d}/{total_steps} | loss {loss_val:.4f} | lr {lr * m:.2e} | {tps:,.0f} tok/s"
                      + (f" | mfu {row['mfu']:.1%}" if peak else ""))
            t_log, tok_log = time.time(), 0
        if step % args.eval_interval_steps == 0 or step == total_steps:
            if rank0:
                improved = run_validation()["val_loss"] < best_val
            else:
                improved = False
            if ddp:
                flag = torch.tensor([int(improved)])
                dist.broadcast(flag, 0)
                improved = bool(flag.item())
            if improved:
                best_val = last_val if rank0 else best_val
                history_best_step = step
                checkpoint(run_dir / "best", with_optimizer=False)
        if step % args.checkpoint_interval_steps == 0 and step < total_steps:
            checkpoint(run_dir / f"step_{step:08d}")
            if rank0:
                for old in step_checkpoints(run_dir)[:-args.max_step_checkpoints]:
                    shutil.rmtree(old, ignore_errors=True)
    train_wall = time.time() - train_t0
    train_tps = (tokens_seen - train_tok0) / max(train_wall, 1e-9)

    # --- end of run ----------------------------------------------------------------------------------------------------
    if status == "complete":
        checkpoint(run_dir / "final", with_optimizer=False)
    state = train_state()
    test_results = None
    if rank0:
        plot_loss_curve(run_dir)
        if status == "complete" and not args.skip_test_eval:
            test_results = evaluate_model(raw_model, store, split="test", categories=None,
                                          batch_size=args.eval_batch_size, device=device, dtype=dtype,
                                          training_categories=categories, output=run_dir / "test_results.json",
                                          model_path=run_dir / "final", progress=False, tag_base=tag_base)
            o = test_results["overall"]
            log.print(f"test: macro loss {o['macro_loss']:.4f}, in-training macro {o['in_training_macro_loss']:.4f}"
                      + (f", held-out macro {o['held_out_macro_loss']:.4f}" if o["held_out_macro_loss"] is not None else ""))
        counts = np.asarray(state["windows_by_label"])
        per_cat_tokens = {store.categories[i]: int(counts[i]) * PRED_PER_WINDOW for i in range(len(counts))
                          if store.categories[i] in categories}
        summary = {"status": status, "error": fail_msg, "run_name": run_name, "store_id": store.store_id,
                   "categories": categories, "K": args.K, "steps": step, "total_steps": total_steps,
                   "schedule_complete": status == "complete" and step == total_steps,
                   "tokens_seen": tokens_seen, "tokens_per_category": per_cat_tokens,
                   "epochs_per_category": {c: per_cat_tokens[c] / max(pool_tokens_by_label.get(store.categories.index(c), 0), 1)
                                           for c in categories},
                   "final_val_loss": last_val, "best_val_loss": best_val if math.isfinite(best_val) else None,
                   "best_step": history_best_step, "wall_time_s": time.time() - t_start,
                   "train_time_s": train_wall, "tokens_per_s": train_tps,
                   "test_macro_loss": test_results["overall"]["macro_loss"] if test_results else None}
        st.write_json_atomic(run_dir / "summary.json", summary, indent=1)
        log.print(f"{status}: {step}/{total_steps} steps, {tokens_seen:,} tokens, final val_loss "
                  f"{last_val if last_val is None else round(last_val, 4)}, {train_tps:,.0f} tok/s, "
                  f"wall {summary['wall_time_s']:.1f} s -> {run_dir}")
    log.close()
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    if status != "complete":
        raise SystemExit(1)
    return run_dir


if __name__ == "__main__":
    main()
