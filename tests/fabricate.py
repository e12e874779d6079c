"""Fabricated sweeps for testing analyze.py against known truths: run directories in train.py's format
(run_config.json, summary.json, test_results.json) whose test losses come from a chosen law plus noise.

Shapes follow the programme's plan files: P1 (K in {1, 2, 3, 5, 11}, the plan's budgets rounded up to
whole 320-window steps, subset seeds, extra init seeds for replicates) and P3 (tagged twins and sampling
arms). Nothing here trains a model: the point is that the truth is known.
"""
import hashlib
import json
import math
from pathlib import Path

import numpy as np

CATEGORIES = ["math.AC", "cs.CV", "cs.AI", "cs.SY", "math.GR", "cs.CE", "cs.PL", "cs.IT", "cs.DS", "cs.NE", "math.ST"]
PERM = ["cs.CV", "cs.IT", "math.GR", "cs.NE", "cs.SY", "math.ST", "cs.DS", "cs.PL", "cs.AI", "math.AC", "cs.CE"]
P1_BUDGETS = (10e6, 30e6, 90e6, 270e6, 810e6)
TOKENS_PER_STEP = 320 * 100
N_NONEMB = 19_000_000  # pythia-31m-like


def select(K, seed):
    return [PERM[(seed + j) % 11] for j in range(K)]


TRUTH = {"E": {c: 1.6 + 0.08 * i for i, c in enumerate(CATEGORIES)}, "B": 40.0, "beta": 0.3, "s": 0.5,
         "gamma": 0.06}
# the competing mixing laws' parameters (analysis/mixing.py): Ye et al.'s t, He et al.'s gamma, the shared tau
MIXING_TRUTH = dict(TRUTH, t=1.0, gamma_p=0.05, tau=0.3)


def law_loss(law, c, D, Dc, K, truth=TRUTH, N=None):
    """The fabricated expected test loss of training category c (plus A * N^-alpha when the truth has A)."""
    if truth.get("A") and N:
        return law_loss(law, c, D, Dc, K, {k: v for k, v in truth.items() if k != "A"}) + truth["A"] * N ** -truth["alpha"]
    E, B, beta, s = truth["E"][c], truth["B"], truth["beta"], truth["s"]
    if law == "dilution":
        return E + B * (Dc ** s * D ** (1 - s)) ** -beta
    if law == "null":  # no K effect: every token helps every category alike
        return E + B * D ** -beta
    if law == "lnK":  # a K penalty additive in ln K, which no form of analyze.py describes
        return E + B * D ** -beta + truth["gamma"] * math.log(K)
    if law == "satK":  # a K penalty that saturates: 1 - 1/K, no power of D_c / D
        return E + B * D ** -beta + 2 * truth["gamma"] * (1 - 1 / K)
    if law == "floorK":  # the dilution law with floors rising with K (0.2 nats from K = 1 to K = 11)
        return E + 0.02 * (K - 1) + B * (Dc ** s * D ** (1 - s)) ** -beta
    p = Dc / D  # the category's share of the run's tokens
    if law == "exponential":  # Ye et al.'s exponential mixing law with one shared t (analysis/mixing.py)
        return E + B * D ** -beta * math.exp(-truth["t"] * p)
    if law == "multiplicative":  # He et al.'s law: the whole loss scales with p^-gamma
        return (E + B * D ** -beta) * p ** -truth["gamma_p"]
    if law == "effective_data":  # effective data with one shared tau (analysis/mixing.py)
        return E + B * (Dc + truth["tau"] * (D - Dc)) ** -beta
    raise ValueError(law)


def write_run(root, rid, cfg, summary, test):
    rd = Path(root) / "runs" / rid
    rd.mkdir(parents=True, exist_ok=True)
    for name, obj in (("run_config.json", cfg), ("summary.json", summary), ("test_results.json", test)):
        if obj is not None:
            (rd / name).write_text(json.dumps(obj))
    return rd


def make_run(root, rid, cats, budget, seed, rng, law="dilution", init_seed=None, sampling="balanced",
             tagged=False, store_id="a" * 64, model="pythia-31m", n_nonemb=N_NONEMB, noise=(0.004, 0.008),
             dtype="bfloat16", truth=TRUTH, tag_gain=0.0, lr=1e-3):
    """One complete run: balanced sampling draws each window's category uniformly, so D_c is multinomial."""
    init_seed = seed if init_seed is None else init_seed
    steps = math.ceil(budget / TOKENS_PER_STEP)
    D = steps * TOKENS_PER_STEP
    K = len(cats)
    windows = rng.multinomial(D // 100, [1 / K] * K)
    per_cat = {c: int(w) * 100 for c, w in zip(cats, windows)}
    run_eff = rng.normal(0, noise[0])
    per_category = {}
    for c in CATEGORIES:
        if c in cats:
            mean = law_loss(law, c, D, per_cat[c], K, truth, N=n_nonemb) - (tag_gain if tagged else 0.0)
            mean += 0.0 if sampling == "balanced" else 0.3  # another arm: visibly different losses
        else:  # held out: worse, and less bad the more categories were seen
            mean = truth["E"][c] + 1.5 + 2 * truth["B"] * D ** -truth["beta"] - 0.05 * math.log(K)
        loss = float(mean * math.exp(run_eff + rng.normal(0, noise[1])))
        pos = [loss * (1.3 - 0.3 * j / 99) for j in range(100)]
        per_category[c] = {"loss": loss, "perplexity": math.exp(loss), "bits_per_byte": loss / math.log(2) / 3.3,
                           "n_tokens": 100000, "n_papers": 100, "n_bytes": 330000, "in_training": c in cats,
                           "loss_by_position": pos}
    identity = {"store_id": store_id, "categories": cats, "sampling": sampling, "data_seed": seed,
                "init_seed": init_seed, "model": model, "tag_categories": tagged, "tokens_per_step": TOKENS_PER_STEP,
                "total_steps": steps, "learning_rate": lr, "dtype": dtype}
    cfg = {"categories": cats, "K": K, "seed": seed, "init_seed": init_seed, "data_seed": seed, "sampling": sampling,
           "tag_categories": tagged, "model_name": model, "n_params_total": n_nonemb + 12_000_000,
           "n_params_nonembedding": n_nonemb, "token_budget": budget, "token_budget_effective": D,
           "total_steps": steps, "tokens_per_step": TOKENS_PER_STEP, "store_id": store_id,
           "data_dir": "preprocessed_arxiv", "identity": identity, "learning_rate": lr}
    summary = {"status": "complete", "error": None, "run_name": rid, "store_id": store_id, "categories": cats,
               "K": K, "steps": steps, "total_steps": steps, "schedule_complete": True, "tokens_seen": D,
               "tokens_per_category": per_cat, "epochs_per_category": {c: per_cat[c] / 3e7 for c in cats},
               "final_val_loss": float(np.mean([per_category[c]["loss"] for c in cats])), "best_val_loss": None,
               "wall_time_s": 100.0, "tokens_per_s": 1e6}
    test = {"store_id": store_id, "split": "test", "dtype": dtype, "tag_categories": tagged,
            "per_category": per_category,
            "overall": {"macro_loss": float(np.mean([v["loss"] for v in per_category.values()]))}}
    return write_run(root, rid, cfg, summary, test)


def rid_of(model, K, seed, budget, sampling="balanced", tagged=False, init_seed=None, cats=None):
    d = f"{budget / 1e6:g}M"
    head = f"c{'+'.join(cats)}" if cats else f"K{K}"
    return (f"{model}_{head}_s{seed:02d}_d{d}_{sampling}" + ("_tag" if tagged else "")
            + (f"_i{init_seed}" if init_seed is not None else ""))


def p1_sweep(root, law="dilution", noise_seed=0, seeds=range(11), Ks=(1, 2, 3, 5), k11_seeds=(0, 1, 2),
             budgets=P1_BUDGETS, replicate_subsets=(0, 1, 2), replicate_Ks=(1, 3), init_seeds=(100, 101),
             models=(("pythia-31m", N_NONEMB),), **kw):
    """The P1 core design (plans/p1_core_31m.yaml) with a known law, for each of `models` ((name, N): P2's
    sizes with a truth that has A and alpha). Returns the run directories."""
    rng = np.random.default_rng(noise_seed)
    out = []
    for m, n in models:
        kw_m = dict(kw, model=m, n_nonemb=n) if len(models) > 1 or m != "pythia-31m" else kw
        for K in Ks:
            for seed in seeds:
                for D in budgets:
                    out.append(make_run(root, rid_of(m, K, seed, D), select(K, seed), D, seed, rng, law, **kw_m))
        for seed in k11_seeds:
            for D in budgets:
                out.append(make_run(root, rid_of(m, 11, seed, D), select(11, seed), D, seed, rng, law, **kw_m))
        for K in replicate_Ks:
            for seed in replicate_subsets:
                for i in init_seeds:
                    for D in budgets:
                        out.append(make_run(root, rid_of(m, K, seed, D, init_seed=i), select(K, seed), D,
                                            seed, rng, law, init_seed=i, **kw_m))
    return out


def p3_sweep(root, noise_seed=0, tag_gain=0.005):
    """P3-shaped: tagged twins (balanced) of K in {3, 11}, and paper / token arms at the same keys."""
    rng = np.random.default_rng(noise_seed)
    for K in (3, 11):
        for seed in (0, 1, 2):
            for D in (10e6, 90e6):
                for sampling in ("balanced", "paper", "token"):
                    make_run(root, rid_of("pythia-31m", K, seed, D, sampling), select(K, seed), D, seed, rng,
                             sampling=sampling, tag_gain=0.0)
                make_run(root, rid_of("pythia-31m", K, seed, D, tagged=True), select(K, seed), D, seed, rng,
                         tagged=True, tag_gain=tag_gain)


def sha(x):
    return hashlib.sha256(str(x).encode()).hexdigest()
