"""
The exact evaluation's arithmetic, without torch (evaluate.py's docstring describes what it counts): tile
tiles each paper into windows so that every token but the first is predicted exactly once with at most 100
tokens of context; summarise turns the float64 sums per (category, window position) into per-category and
overall losses; eval_record is evaluate.py's result schema (test_results.json / eval_*.json). model.py's
neural evaluation and ngram.py's Kneser-Ney evaluation both go through these, so their results compare.
"""
import math

import numpy as np

import store as st

WINDOW, STRIDE = st.WINDOW, st.PRED_PER_WINDOW


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


def summarise(store, cats, per_cat_papers, pos_sum, pos_cnt, training_categories):
    """Per-category and overall results from the float64 sums and counts per (category, window position)."""
    C = len(cats)
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
    return per_category, overall


def eval_record(store, split, model_info, dtype_name, tag_base, excluded, training_categories, arguments,
                per_category, overall, wall, output=None):
    """evaluate.py's result schema (test_results.json / eval_*.json), written atomically when output is given;
    ngram.py writes its runs' results through it too."""
    result = {"model": model_info, "store_id": store.store_id, "data_dir": str(store.dir.resolve()),
              "split": split, "dtype": dtype_name, "window": WINDOW,
              "tag_categories": tag_base is not None, "tag_token_base": tag_base, "excluded_papers": excluded,
              "training_categories": training_categories, "arguments": arguments,
              "per_category": per_category, "overall": overall,
              "eval_time_s": wall, "tokens_per_s": overall["n_tokens"] / max(wall, 1e-9)}
    if output is not None:
        st.write_json_atomic(output, result, indent=1)
    return result
