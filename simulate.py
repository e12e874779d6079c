"""
Fabricated sweeps from a known law: the run directories a plan file expands to (sweep.py's own expansion),
with per-category test losses drawn from a scaling law plus noise, written in train.py's format
(run_config.json, summary.json, test_results.json) so that analyze.py reads them unchanged. design.py uses
this to ask whether a plan can decide its hypotheses before anything is trained.

The law (EXPERIMENT_PLAN.md, H3), for a category c in a run's training set:

    L_c = E_c + B * (D_c^s * D^(1-s))^(-beta) [+ A * N^(-alpha)]

with D the run's predicted tokens (the budget rounded up to whole steps, as train.py does), D_c the tokens of
c it saw (balanced sampling: each window's category uniform over the K, so D_c is multinomial) and N the
model's non-embedding parameters. Noise is multiplicative (what analyze.py's noise floor measures: the SD of
log test loss between replicate runs): log L = log(law) + normal(0, noise), independent per run and category.

Held-out categories get E_c + B * D^(-beta) + 1 (a plain "worse than seen" loss with NO K effect): the law
says nothing about them, so H5 is not a design check here.
"""
import json
import math
from pathlib import Path

import numpy as np

import store as st
import sweep
from model import PYTHIA, PYTHIA_BASE
from random_window_dataset import CATEGORY_PERMUTATION, select_categories
from train import PRED_PER_WINDOW

CATEGORIES = sorted(CATEGORY_PERMUTATION)
DEFAULT_BATCH = 32  # train.py's --batch_size default, when a plan does not fix it


class LawError(ValueError):
    """A law that cannot be used: one line naming what is wrong."""


def parse_law(text):
    """'B=..,beta=..,s=..,E=..[,E[math.AC]=..][,A=..,alpha=..]' -> law dict {B, beta, s, E: {cat: floor}, A, alpha}.
    E= sets every category's floor, E[cat]= one category's (after E=, whatever the order)."""
    law, per_cat, E_all = {}, {}, None
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        if "=" not in part:
            raise LawError(f"--law: {part!r} is not NAME=VALUE")
        k, v = (x.strip() for x in part.split("=", 1))
        try:
            v = float(v)
        except ValueError:
            raise LawError(f"--law: {k}={v!r} is not a number") from None
        if k.startswith("E[") and k.endswith("]"):
            if k[2:-1] not in CATEGORIES:
                raise LawError(f"--law: unknown category {k[2:-1]!r} (one of {', '.join(CATEGORIES)})")
            per_cat[k[2:-1]] = v
        elif k == "E":
            E_all = v
        elif k in ("B", "beta", "s", "A", "alpha"):
            law[k] = v
        else:
            raise LawError(f"--law: unknown parameter {k!r} (B, beta, s, E, E[category], A, alpha)")
    if E_all is None and len(per_cat) < len(CATEGORIES):
        raise LawError("--law: needs E= (every category's floor) or E[category]= for all 11 categories")
    law["E"] = {c: per_cat.get(c, E_all) for c in CATEGORIES}
    return check_law(law)


def check_law(law):
    for k in ("B", "beta", "s"):
        if k not in law:
            raise LawError(f"--law: needs {k}=")
    if ("A" in law) != ("alpha" in law):
        raise LawError("--law: the N term needs both A= and alpha=")
    bad = [k for k in ("B", "beta", "s", "A", "alpha") if k in law and not math.isfinite(law[k])]
    bad += [f"E[{c}]" for c, v in law["E"].items() if not math.isfinite(v)]
    if bad:  # nan passes every comparison below (and inf fabricates inf losses)
        raise LawError(f"--law: {', '.join(bad)} must be finite numbers")
    if "A" in law and (law["A"] < 0 or law["alpha"] <= 0):
        raise LawError("--law: needs A >= 0 and alpha > 0")
    if not 0 <= law["s"] <= 1 or law["B"] <= 0 or law["beta"] <= 0 or min(law["E"].values()) <= 0:
        raise LawError("--law: needs 0 <= s <= 1, B > 0, beta > 0 and every E > 0")
    return law


def law_from_fits(path):
    """(law, noise or None) from analyze.py's fits.json: the dilution fit on all runs (its point estimates),
    and the measured seed-to-seed noise (SD of log test loss) when the sweep had replicates."""
    try:
        fits = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise LawError(f"--law {path}: cannot read fits.json ({type(e).__name__})") from None
    dil = [f for f in fits.get("fits", []) if f.get("form") == "dilution" and f.get("subset") == "all"]
    if not dil:
        raise LawError(f"--law {path}: no dilution fit on all runs in it")
    p = {k: v["estimate"] for k, v in dil[0]["params"].items()}
    law = {k: p[k] for k in ("B", "beta", "s", "A", "alpha") if k in p}
    seen = {k[2:-1]: v for k, v in p.items() if k.startswith("E[")}
    if not seen:
        raise LawError(f"--law {path}: the dilution fit has no floors E[category]")
    # a category the pilot never trained on gets the mean floor of the others
    law["E"] = {c: seen.get(c, float(np.mean(list(seen.values())))) for c in CATEGORIES}
    return check_law(law), (fits.get("noise_floor") or {}).get("sd_log_loss")


def n_nonembedding(model_config):
    """Non-embedding parameters of a named Pythia config (untied input and output embeddings); None else."""
    if model_config not in PYTHIA:
        return None
    h, _, _, _, total = PYTHIA[model_config]
    return total - 2 * PYTHIA_BASE["vocab_size"] * h


def plan_runs(plan):
    """[(run_id, params)]: exactly the runs the plan expands to (sweep.py's expansion)."""
    return sweep.expand(plan)


def law_loss(law, c, D, Dc, N=None):
    L = law["E"][c] + law["B"] * (Dc ** law["s"] * D ** (1 - law["s"])) ** -law["beta"]
    if law.get("A") and N:
        L += law["A"] * N ** -law["alpha"]
    return L


def fabricate(plan, law, noise, root, rng, store_id="f" * 64):
    """Write one fabricated sweep of `plan` (a sweep.load_plan dict) under root/runs/. Returns the run ids."""
    script = plan.get("script", sweep.TRAIN)
    out = []
    for rid, p in plan_runs(plan):
        cats = list(p["categories"]) if p.get("categories") else select_categories(int(p["K"]), int(p.get("seed", 0)))
        K, seed = len(cats), int(p.get("seed", 0))
        init_seed = int(p.get("init_seed", seed))
        tps = PRED_PER_WINDOW * int(p.get("batch_size", DEFAULT_BATCH)) * int(p.get("grad_accum_steps", 1))
        budget = float(p["token_budget"])
        steps = math.ceil(budget / tps)
        D = steps * tps
        windows = rng.multinomial(D // PRED_PER_WINDOW, [1 / K] * K)
        per_cat = {c: int(w) * PRED_PER_WINDOW for c, w in zip(cats, windows)}
        model = f"kn{p.get('order', 3)}" if script == "ngram.py" else p.get("model_config", "pythia-14m")
        N = n_nonembedding(model)
        per_category = {}
        for c in CATEGORIES:
            if c in cats:
                mean = law_loss(law, c, D, max(per_cat[c], 1), N)
            else:
                mean = law["E"][c] + law["B"] * D ** -law["beta"] + 1.0
            loss = float(mean * math.exp(rng.normal(0.0, noise)))
            per_category[c] = {"loss": loss, "perplexity": math.exp(min(loss, 700)), "bits_per_byte": loss / math.log(2) / 3.3,
                               "n_tokens": 100_000, "n_papers": 100, "n_bytes": 330_000, "in_training": c in cats,
                               "loss_by_position": [loss] * PRED_PER_WINDOW}
        identity = {"store_id": store_id, "categories": cats, "sampling": p.get("sampling", "balanced"),
                    "data_seed": int(p.get("data_seed", seed)), "init_seed": init_seed, "model": model,
                    "tag_categories": bool(p.get("tag_categories")), "tokens_per_step": tps, "total_steps": steps,
                    "learning_rate": p.get("learning_rate"), "adam_beta2": p.get("adam_beta2"),
                    "dtype": p.get("dtype", "float32")}
        cfg = {"categories": cats, "K": K, "seed": seed, "init_seed": init_seed, "data_seed": identity["data_seed"],
               "sampling": identity["sampling"], "tag_categories": identity["tag_categories"], "model_name": model,
               "n_params_total": None if N is None else N + 2 * PYTHIA_BASE["vocab_size"] * PYTHIA[model][0],
               "n_params_nonembedding": N, "token_budget": budget, "token_budget_effective": D, "total_steps": steps,
               "tokens_per_step": tps, "store_id": store_id, "data_dir": "fabricated", "identity": identity,
               "learning_rate": p.get("learning_rate"), "fabricated": True}
        summary = {"status": "complete", "error": None, "run_name": rid, "store_id": store_id, "categories": cats,
                   "K": K, "steps": steps, "total_steps": steps, "schedule_complete": True, "tokens_seen": D,
                   "tokens_per_category": per_cat, "epochs_per_category": {c: 0.1 for c in cats},
                   "final_val_loss": float(np.mean([per_category[c]["loss"] for c in cats])), "best_val_loss": None,
                   "wall_time_s": 0.0, "tokens_per_s": None}
        test = {"store_id": store_id, "split": "test", "dtype": identity["dtype"],
                "tag_categories": identity["tag_categories"], "per_category": per_category,
                "overall": {"macro_loss": float(np.mean([v["loss"] for v in per_category.values()]))}}
        rd = Path(root) / "runs" / rid
        rd.mkdir(parents=True, exist_ok=True)
        # summary.json last: a run directory is complete only once it exists (as train.py writes it)
        for name, obj in (("run_config.json", cfg), ("test_results.json", test), ("summary.json", summary)):
            st.write_json_atomic(rd / name, obj)
        out.append(rid)
    return out
