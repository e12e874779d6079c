"""
Exact per-category loss, perplexity and bits per byte of a causal LM on one split of a token store.

    python evaluate.py --model_dir runs/<run>/final --data_dir preprocessed_arxiv [--split test]

The tiling, exactly: for a paper of n >= 2 tokens, windows start at s = 0, 100, 200, ... while s < n - 1;
window tokens[s : min(s + 101, n)] predicts tokens s+1 .. min(s + 100, n - 1) from the tokens before them
inside the window. Every token but a paper's first is predicted exactly once, with at most 100 tokens of
context; papers with n < 2 predict nothing and are not counted. Windows are packed across papers into
fixed-shape batches (a short last window is padded at the end, which causal attention never sees), and
all sums are float64, so the result does not depend on the batch size beyond float rounding.
"""
import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import store as st

WINDOW = 101
STRIDE = WINDOW - 1  # 100 predicted tokens per full window


def tile(store, paper_ids):
    """(window start offsets, window lengths, paper index into paper_ids) for the exact tiling."""
    starts, lens, owner = [], [], []
    for k, pid in enumerate(paper_ids):
        n, off = int(store.length[pid]), int(store.offset[pid])
        if n < 2:
            continue
        s = np.arange(0, n - 1, STRIDE, dtype=np.int64)
        starts.append(off + s)
        lens.append(np.minimum(s + WINDOW, n) - s)
        owner.append(np.full(len(s), k, dtype=np.int64))
    if not starts:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    return np.concatenate(starts), np.concatenate(lens), np.concatenate(owner)


def head_chunk_rows(device, vocab):
    """Rows of logits computed at a time by the output head (training and evaluation).

    CPU: ~3M logits (~12 MB fp32) per chunk stay cache-resident, which measured 1.5x faster for the
    head's matmul + logsumexp than one big matrix (BENCHMARKS.md). CUDA: 8192 rows (~0.8 GB of bf16
    logits at vocab 50k) keep the matmuls large without materialising the whole batch's logits.
    """
    return 8192 if torch.device(device).type == "cuda" else max(16, 3_000_000 // int(vocab))


def window_hidden(model, x, tags=None):
    """Final hidden states that predict x[:, 1:] (B, W-1, d): the input is x[:, :-1], or, for tagged runs,
    [tag, x[:, :-1]] with one category token in front. The tag's own output is dropped, so it is never a
    target, and the predicted tokens are exactly the untagged ones, each with the same window context
    plus the tag. Shared by train.py (training, validation) and evaluation."""
    inner = model.gpt_neox if hasattr(model, "gpt_neox") else model.get_decoder()
    if tags is None:
        return inner(input_ids=x[:, :-1]).last_hidden_state
    inp = torch.cat([tags.to(x.dtype).view(-1, 1), x[:, :-1]], dim=1)
    return inner(input_ids=inp).last_hidden_state[:, 1:]


@torch.no_grad()
def window_nll(model, x, valid, chunk_rows=None, tags=None):
    """Per-target NLL (fp32) of the valid targets of windows x (B, W): no fp32 logits for the whole batch.

    valid (B, W-1) bool marks real targets; returns a 1-D tensor in row-major order of valid targets.
    """
    h = window_hidden(model, x, tags)
    h = h[valid]                       # only real targets reach the 50k-wide head
    targets = x[:, 1:][valid]
    w = model.get_output_embeddings().weight
    chunk_rows = chunk_rows or head_chunk_rows(x.device, w.shape[0])
    w = w.to(h.dtype)
    out = torch.empty(len(targets), dtype=torch.float32, device=x.device)
    for s in range(0, len(targets), chunk_rows):
        logits = (h[s:s + chunk_rows] @ w.t()).float()
        out[s:s + chunk_rows] = torch.logsumexp(logits, -1) - logits.gather(1, targets[s:s + chunk_rows, None]).squeeze(1)
    return out


def weights_sha256(model_dir):
    """sha256 over the model's weight files (sorted by name) in a save_pretrained directory."""
    files = sorted(Path(model_dir).glob("*.safetensors")) or sorted(Path(model_dir).glob("*.bin"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(st.sha256_file(f).encode())
    return h.hexdigest() if len(files) > 1 else st.sha256_file(files[0])


def run_config_of(model_dir):
    """run_config.json of the run that made model_dir (in it or its parent), or {} when there is none."""
    for d in (Path(model_dir), Path(model_dir).parent):
        p = d / "run_config.json"
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                return {}
    return {}


def tag_base_of(run_config, store):
    """First category-tag token id of a tagged run (tag = base + label), or None for untagged runs."""
    if not run_config.get("tag_categories"):
        return None
    return int(run_config.get("tag_token_base", store.vocab_size))


def evaluate_model(model, store, split="test", categories=None, batch_size=64, device="cpu",
                   dtype=torch.float32, training_categories=None, max_papers_per_category=None,
                   output=None, model_path=None, arguments=None, progress=True, tag_base=None,
                   exclude_papers=None):
    """Evaluate `model` on `split` of `store`; returns (and writes to `output`) the results dict.

    tag_base: for tagged runs, each window is preceded by the token tag_base + its category's label.
    exclude_papers: paper ids left out (e.g. test papers with a near-duplicate in train, from baselines.py).
    """
    excluded = np.asarray(sorted(exclude_papers or []), dtype=np.int64)
    from tqdm import tqdm
    device = torch.device(device)
    cats = list(store.categories) if categories is None else list(categories)
    store.category_ids(cats)  # raises StoreError on an unknown name
    vocab = model.get_output_embeddings().weight.shape[0]
    if store.vocab_size > vocab:
        raise st.StoreError(f"the store's vocabulary ({store.vocab_size} ids) is larger than the model's ({vocab})")
    if tag_base is not None and tag_base + len(store.categories) > vocab:
        raise st.StoreError(f"category tags {tag_base}..{tag_base + len(store.categories) - 1} do not fit the "
                            f"model's vocabulary ({vocab})")
    label_of = {ci: store.categories.index(c) for ci, c in enumerate(cats)}
    # every window of every selected paper, category by category
    per_cat_papers, all_starts, all_lens, all_cat = {}, [], [], []
    for ci, c in enumerate(cats):
        ids = store.papers(split, [c])
        ids = ids[(store.length[ids] >= 2) & ~np.isin(ids, excluded)]
        if max_papers_per_category is not None:
            ids = ids[:max_papers_per_category]
        per_cat_papers[c] = ids
        s, l, _ = tile(store, ids)
        all_starts.append(s)
        all_lens.append(l)
        all_cat.append(np.full(len(s), ci, dtype=np.int64))
    starts, lens, wcat = (np.concatenate(a) for a in (all_starts, all_lens, all_cat))
    if len(starts) == 0:
        raise st.StoreError(f"split {split!r} has no paper of >= 2 tokens in categories {' '.join(cats)}")

    model.eval()
    model.to(device)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    C = len(cats)
    pos_sum = np.zeros(C * STRIDE, dtype=np.float64)
    pos_cnt = np.zeros(C * STRIDE, dtype=np.int64)
    ar = np.arange(WINDOW, dtype=np.int64)
    pos = np.arange(STRIDE, dtype=np.int64)  # target position j-1 for j = 1..100
    t0 = time.time()
    with torch.inference_mode():
        for b in tqdm(range(0, len(starts), batch_size), desc=f"eval {split}", unit="batch",
                      disable=not progress, leave=False):
            s, l, c = starts[b:b + batch_size], lens[b:b + batch_size], wcat[b:b + batch_size]
            idx = np.minimum(s[:, None] + ar, s[:, None] + l[:, None] - 1)  # pad by repeating the last token
            x = torch.from_numpy(np.asarray(store.tokens[idx], dtype=np.int64)).to(device)
            valid_np = pos[None, :] < (l[:, None] - 1)
            valid = torch.from_numpy(valid_np).to(device)
            tags = None
            if tag_base is not None:
                tags = torch.tensor([tag_base + label_of[int(k)] for k in c], device=device)
            with autocast:
                nll = window_nll(model, x, valid, tags=tags).double().cpu().numpy()
            key = (c[:, None] * STRIDE + pos[None, :])[valid_np]  # row-major, matching h[valid]
            pos_sum += np.bincount(key, weights=nll, minlength=C * STRIDE)
            pos_cnt += np.bincount(key, minlength=C * STRIDE)
    wall = time.time() - t0
    loss_sum = pos_sum.reshape(C, STRIDE).sum(axis=1)  # per category: the sum over its window positions

    train_set = set(training_categories) if training_categories is not None else None
    per_category = {}
    for ci, c in enumerate(cats):
        ids = per_cat_papers[c]
        n_tok = int(pos_cnt[ci * STRIDE:(ci + 1) * STRIDE].sum())
        n_bytes = int(store.n_bytes[ids].sum())
        loss = loss_sum[ci] / n_tok if n_tok else None
        ps, pc = pos_sum[ci * STRIDE:(ci + 1) * STRIDE], pos_cnt[ci * STRIDE:(ci + 1) * STRIDE]
        per_category[c] = {
            "loss": loss, "perplexity": math.exp(loss) if loss is not None else None,
            "bits_per_byte": loss_sum[ci] / math.log(2) / n_bytes if n_bytes else None,
            "n_tokens": n_tok, "n_papers": int(len(ids)), "n_bytes": n_bytes,
            "in_training": (c in train_set) if train_set is not None else None,
            "loss_by_position": [float(ps[j] / pc[j]) if pc[j] else None for j in range(STRIDE)],
        }
    scored = [c for c in cats if per_category[c]["loss"] is not None]
    n_all = sum(per_category[c]["n_tokens"] for c in scored)
    micro = float(loss_sum.sum() / n_all)

    def macro(cs):
        cs = [c for c in cs if per_category[c]["loss"] is not None]
        return float(np.mean([per_category[c]["loss"] for c in cs])) if cs else None

    overall = {"micro_loss": micro, "macro_loss": macro(scored), "micro_perplexity": math.exp(micro),
               "in_training_macro_loss": macro([c for c in scored if per_category[c]["in_training"] is True]),
               "held_out_macro_loss": macro([c for c in scored if per_category[c]["in_training"] is False]),
               "n_tokens": n_all}
    result = {"model": {"path": str(Path(model_path).resolve()) if model_path else None,
                        "weights_sha256": weights_sha256(model_path) if model_path else None},
              "store_id": store.store_id, "data_dir": str(store.dir.resolve()), "split": split,
              "dtype": str(dtype).replace("torch.", ""), "window": WINDOW,
              "tag_categories": tag_base is not None, "tag_token_base": tag_base,
              "excluded_papers": excluded.tolist(),
              "training_categories": training_categories, "arguments": arguments,
              "per_category": per_category, "overall": overall,
              "eval_time_s": wall, "tokens_per_s": n_all / max(wall, 1e-9)}
    if output is not None:
        st.write_json_atomic(output, result, indent=1)
    return result


def print_table(res):
    print(f"\n{'category':10s} {'in_train':>8s} {'papers':>7s} {'tokens':>12s} {'loss':>8s} {'ppl':>10s} {'bpb':>7s}")
    for c, r in res["per_category"].items():
        it = {True: "yes", False: "no", None: "-"}[r["in_training"]]
        if r["loss"] is None:
            print(f"{c:10s} {it:>8s} {r['n_papers']:7d} {'-':>12s}")
            continue
        print(f"{c:10s} {it:>8s} {r['n_papers']:7,d} {r['n_tokens']:12,d} {r['loss']:8.4f} "
              f"{r['perplexity']:10.2f} {r['bits_per_byte']:7.4f}")
    o = res["overall"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"
    print(f"micro loss {fmt(o['micro_loss'])} (ppl {o['micro_perplexity']:.2f}), macro {fmt(o['macro_loss'])}, "
          f"in-training macro {fmt(o['in_training_macro_loss'])}, held-out macro {fmt(o['held_out_macro_loss'])}; "
          f"{o['n_tokens']:,} tokens at {res['tokens_per_s']:,.0f} tok/s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model_dir", required=True, help="a save_pretrained causal LM directory")
    p.add_argument("--data_dir", default="preprocessed_arxiv")
    p.add_argument("--split", default="test", choices=st.SPLITS)
    p.add_argument("--categories", nargs="+", default=["all"], help="names, or all (default)")
    p.add_argument("--batch_size", type=int, default=64, help="windows per forward pass")
    p.add_argument("--max_papers_per_category", type=int, default=None, help="first M papers per category")
    p.add_argument("--output", default=None, help="default: eval_<split>.json in --model_dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="fp32 and bf16 results are never mixed in one comparison")
    p.add_argument("--exclude_papers", default=None,
                   help="JSON file: a list of paper ids to leave out, or baselines.py's output (its near-duplicate "
                        "test papers are left out)")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        st.die(f"--batch_size must be >= 1 (got {args.batch_size})")
    if args.max_papers_per_category is not None and args.max_papers_per_category < 1:
        st.die(f"--max_papers_per_category must be >= 1 (got {args.max_papers_per_category})")
    model_dir = Path(args.model_dir)
    if not (model_dir / "config.json").is_file():
        st.die(f"--model_dir {model_dir}: no config.json, not a save_pretrained model directory")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        store = st.Store(args.data_dir)
    except st.StoreError as e:
        st.die(str(e))
    from transformers import AutoModelForCausalLM
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    except Exception as e:
        st.die(f"--model_dir {model_dir}: cannot load the model ({type(e).__name__}: {str(e).splitlines()[0]})")
    exclude = None
    if args.exclude_papers:
        try:
            ex = json.loads(Path(args.exclude_papers).read_text())
        except (OSError, json.JSONDecodeError) as e:
            st.die(f"--exclude_papers {args.exclude_papers}: not a readable JSON file ({e})")
        exclude = ex["overall"]["near_duplicate_test_papers"] if isinstance(ex, dict) else ex
        if not all(isinstance(i, int) for i in exclude):
            st.die(f"--exclude_papers {args.exclude_papers}: expected a list of integer paper ids")
    cats = None if args.categories == ["all"] else args.categories
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    output = Path(args.output) if args.output else model_dir / f"eval_{args.split}.json"
    run_cfg = run_config_of(model_dir)  # training categories and tagging follow the run
    try:
        res = evaluate_model(model, store, args.split, cats, args.batch_size, device, dtype,
                             run_cfg.get("categories"), args.max_papers_per_category, output,
                             model_dir, vars(args), tag_base=tag_base_of(run_cfg, store), exclude_papers=exclude)
    except st.StoreError as e:
        st.die(str(e))
    print_table(res)
    print(f"wrote {output}")
    return res


if __name__ == "__main__":
    main()
