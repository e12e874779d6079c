"""
What a run is before any model exists, without torch: the windows it trains on (training_pool: the store,
its categories, the sampler), its token schedule, its identity check and default name, and the code's commit.
train.py and ngram.py both build their runs from these, so an n-gram run trains on exactly the windows of
the neural run with the same flags, and an n-gram run starts in a fraction of a second (importing torch
takes ~1.3 CPU-s, more than a small KN run's whole training and evaluation; a KN pilot is hundreds of runs).
"""
import hashlib
import json
import math
import subprocess

import store as st
from random_window_dataset import RandomWindowDataset, select_categories

WINDOW, PRED_PER_WINDOW = st.WINDOW, st.PRED_PER_WINDOW

# The run-defining values (train.run_identity's keys) and the flags that set them (for resume's refusal).
IDENTITY_FLAGS = {
    "store_id": "--data_dir (store_id)", "categories": "--categories / --K / --seed", "sampling": "--sampling",
    "data_seed": "--data_seed", "init_seed": "--init_seed", "model": "--model_config",
    "model_config_sha256": "--model_config (its fields)", "tag_categories": "--tag_categories",
    "tokens_per_step": "--batch_size x --grad_accum_steps x world size", "total_steps": "--token_budget / --epochs",
    "warmup_steps": "--warmup_ratio", "learning_rate": "--learning_rate", "min_lr_ratio": "--min_lr_ratio",
    "adam_beta1": "--adam_beta1", "adam_beta2": "--adam_beta2", "adam_epsilon": "--adam_epsilon",
    "weight_decay": "--weight_decay", "max_grad_norm": "--max_grad_norm", "dtype": "--dtype",
}


def identity_differences(saved, current):
    """['--flag: saved X, now Y', ...] for every run-defining value that differs (keys both have)."""
    out = []
    for k, flag in IDENTITY_FLAGS.items():
        if k in saved and k in current and saved[k] != current[k]:
            out.append(f"{flag}: {saved[k]!r} in the run, {current[k]!r} now")
    return out


def training_pool(args):
    """(store, categories, training window dataset) of --data_dir / --categories or --K --seed / --data_seed /
    --sampling: the windows a run trains on (ngram.py uses the same)."""
    try:
        store = st.Store(args.data_dir, in_memory=True)  # ~1 GB for the full dataset: sampling from RAM
        categories = list(args.categories) if args.categories else select_categories(args.K, args.seed)
        store.category_ids(categories)
        if len(set(categories)) != len(categories):
            st.die(f"--categories lists a category twice: {' '.join(categories)}")
        train_ds = RandomWindowDataset(None, "train", categories, window=WINDOW, seed=args.data_seed,
                                       sampling=args.sampling, store=store)
    except st.StoreError as e:
        st.die(str(e))
    return store, categories, train_ds


def token_schedule(args, pool_windows, world=1):
    """(token budget, tokens per step, total steps) from --token_budget (or --epochs over pool_windows),
    --batch_size, --grad_accum_steps and the world size. The run trains on sampler items
    0 .. total_steps * tokens_per_step / PRED_PER_WINDOW - 1 (ngram.py counts exactly these windows)."""
    tokens_per_step = PRED_PER_WINDOW * args.batch_size * args.grad_accum_steps * world
    budget = args.token_budget if args.token_budget is not None else args.epochs * pool_windows * PRED_PER_WINDOW
    if budget < tokens_per_step:
        st.die(f"token budget {budget:,.0f} is smaller than one step ({tokens_per_step:,} tokens = "
               f"{PRED_PER_WINDOW} x batch {args.batch_size} x accum {args.grad_accum_steps} x world {world}); "
               "raise --token_budget or lower --batch_size")
    return budget, tokens_per_step, math.ceil(budget / tokens_per_step)


def default_run_name(identity, seed, budget):
    """Readable parts + 8 hex digits of the identity's hash: unique for every distinct identity."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    tag = "_tag" if identity["tag_categories"] else ""
    return (f"{identity['model']}_K{len(identity['categories'])}_s{seed}_{identity['sampling']}"
            f"_d{st.fmt_count(budget)}{tag}_{digest}")


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=st.PROJECT_DIR, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except Exception:
        return None
