"""
Fabricated sweeps from a known law: the one fabricator of the project (design.py, the tests, the benchmarks).
Run directories in train.py's format (run_config.json, summary.json, test_results.json), complete, so that
analyze.py reads them unchanged; nothing here trains a model: the point is that the truth is known.

    python simulate.py plans/p1_core_31m.yaml --law "B=410.7,beta=0.28,s=0.5,E=3.9" --out sweeps/fake_p1
    python simulate.py plans/p1_core_31m.yaml --law "..." --noise 0.01 --noise_model independent --out DIR
    python simulate.py plans/p1_core_31m.yaml --law "..." --repetition 25e6,15.4 --out DIR

The law (EXPERIMENT_PLAN.md, H3), for a category c in a run's training set:

    L_c = E_c + B * (D_c^s * D^(1-s))^(-beta) [+ A * N^(-alpha)]

with D the run's predicted tokens (the budget rounded up to whole steps, as train.py does), D_c the tokens of
c it saw (balanced sampling: each window's category uniform over the K, so D_c is multinomial) and N the
model's non-embedding parameters. Other forms (the tests' truths: null, lnK, satK, floorK and the published
mixing laws) are in form_loss.

Repetition (issue 22; Muennighoff et al. 2023): with a finite pool of U unique tokens per category
(`--repetition U,R*`, or law keys U= and Rstar=), a category seen D_c > U tokens counts as
D'_c = U + U R* (1 - exp(-R / R*)), R = D_c / U - 1 effective tokens, and the law is evaluated on D'_c and
D' = the sum of D'_c over the run's categories. Each run's summary.json states epochs_per_category = D_c / U
as train.py writes it (pool tokens; no finite pool: 0).

Noise (NoiseModel): multiplicative, log L = log(law) + e, and `sd` is the TOTAL SD of e, the log test loss of
one (run, category) around the law. e is the sum of independent normal parts whose variances add up to sd^2,
the measured model's a + u + w + v (analysis/noise_structure.py), as shares of sd^2:
  - a, the cluster part (frac_cluster): one draw per seed cluster, common to every budget and category of
    that cluster (same model, category set, subset seed, init seed, data seed: such runs share their
    initialisation and the prefix of their data order);
  - u, shared across budgets per category (frac_shared_across_budgets - frac_cluster): one draw per seed
    cluster and category. a and u each split into an init part (keyed by the init seed) and a data-order
    part (keyed by the data seed) in the ratio sd_init^2 : sd_data_order^2, so replicates that differ only
    in the init seed share the data-order part, as real ones do;
  - w, run level (frac_run_level - frac_cluster): one draw per run, common to all its categories;
  - v, the rest: one draw per (run, category).
So frac_shared_across_budgets (a + u) and frac_run_level (a + w) are the measured fractions, which overlap
by frac_cluster: the covariance of one category at two budgets, of two categories of one run, and of two
categories at two budgets of one cluster, over the total.
The default model is plans/noise_model_abstracts.json (measured on a real-text pilot: its per_model entry
"kn" for n-gram plans, "neural" otherwise); `--noise SD` rescales the total keeping the fractions;
`--noise_model independent` draws every (run, category) independently.

Held-out categories get a plain "worse than seen" loss: with held_out="K" (the tests') less bad the more
categories were seen, with "flat" (design.py's) no K effect (the law says nothing about them, so H5 is not
a design check).
"""
import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

import store as st
# the trainers' subsets exactly (the sampler module is numpy: no torch import)
from random_window_dataset import CATEGORY_PERMUTATION as PERM, select_categories as select

CATEGORIES = list(st.CATEGORIES)  # label order: the order of the noise draws
PRED_PER_WINDOW = 100  # train.py's predicted tokens per window (a 101-token window)
P1_BUDGETS = (10e6, 30e6, 90e6, 270e6, 810e6)
TOKENS_PER_STEP = 320 * PRED_PER_WINDOW  # P1's batch of 320 windows
N_NONEMB = 19_000_000  # pythia-31m-like
DEFAULT_BATCH = 32  # train.py's --batch_size default, when a plan does not fix it
# The tests' pool of unique tokens per category when the truth has no repetition: none (infinite), so the
# epochs a run states (0) agree with a law that ignores repetition. A finite pool here with such a law made
# the analysis model repetition the data do not have (H1 "not supported" on equal floors, s missed).
TEST_POOL = math.inf
NOISE_MODEL_FILE = Path(__file__).resolve().parent / "plans" / "noise_model_abstracts.json"

# the tests' truths: the dilution law's parameters and the other forms' (form_loss)
TRUTH = {"E": {c: 1.6 + 0.08 * i for i, c in enumerate(CATEGORIES)}, "B": 40.0, "beta": 0.3, "s": 0.5,
         "gamma": 0.06}
# the competing mixing laws' parameters (analysis/mixing.py): Ye et al.'s t, He et al.'s gamma, the shared tau
MIXING_TRUTH = dict(TRUTH, t=1.0, gamma_p=0.05, tau=0.3)


class LawError(ValueError):
    """A law or noise model that cannot be used: one line naming what is wrong."""


# ----------------------------------------------------------------------------------------------------
# noise

@dataclasses.dataclass(frozen=True)
class NoiseModel:
    """Multiplicative noise of one fabricated sweep. sd: the total SD of log test loss per (run, category);
    the fractions are shares of sd^2 (module docstring); init_share: the init seed's share of the part shared
    across budgets (the rest goes with the data seed)."""
    sd: float
    frac_shared_across_budgets: float = 0.0
    frac_run_level: float = 0.0
    init_share: float = 0.5
    source: str = "independent"
    frac_cluster: float = 0.0  # held in both fractions above (the module docstring)

    def __post_init__(self):
        f, r, a = self.frac_shared_across_budgets, self.frac_run_level, self.frac_cluster
        if not (math.isfinite(self.sd) and self.sd >= 0):
            raise LawError(f"noise: the SD must be a finite number >= 0 (got {self.sd})")
        if not (0 <= a <= min(f, r) and f <= 1 and r <= 1 and f + r - a <= 1 + 1e-12 and 0 <= self.init_share <= 1):
            raise LawError(f"noise: needs fractions in [0, 1], the cluster part within both and the parts adding up "
                           f"to at most 1 (got shared {f}, run level {r}, cluster {a})")

    @classmethod
    def parts(cls, run=0.0, own=0.0):
        """A run-level SD and a per-(run, category) SD, nothing shared across budgets."""
        sd = math.hypot(run, own)
        return cls(sd, 0.0, run ** 2 / sd ** 2 if sd else 0.0, source=f"run level {run}, per category {own}")

    def scaled(self, sd):
        """The same structure at total SD `sd` (what --noise SD does)."""
        return dataclasses.replace(self, sd=float(sd))

    def sds(self):
        """(init, data order, run level, own): the SDs of u's two parts, w and v (the cluster part a: cluster_sds)."""
        v, f, r, a = self.sd ** 2, self.frac_shared_across_budgets, self.frac_run_level, self.frac_cluster
        return (math.sqrt(v * (f - a) * self.init_share), math.sqrt(v * (f - a) * (1 - self.init_share)),
                math.sqrt(v * (r - a)), math.sqrt(max(v * (1 - f - r + a), 0.0)))

    def cluster_sds(self):
        """(init, data order): the SDs of the cluster part a's two parts."""
        v = self.sd ** 2 * self.frac_cluster
        return math.sqrt(v * self.init_share), math.sqrt(v * (1 - self.init_share))


def load_noise_model(path=NOISE_MODEL_FILE, kind=None):
    """The NoiseModel of a measured noise file ({"sd_run_category", "frac_shared_across_budgets",
    "frac_run_level", "sd_init", "sd_data_order", "source", "per_model": {"kn": {...}, "neural": {...}}});
    kind picks a per_model entry over the top level when the file has one."""
    try:
        d = json.loads(Path(path).read_text())
        m = dict(d, **((d.get("per_model") or {}).get(kind) or {}))
        si, sdo = float(m.get("sd_init") or 0.0), float(m.get("sd_data_order") or 0.0)
        # measured fractions are moment estimates: a component whose true share is ~0 can come out slightly
        # negative (the KN pilot's run level: -0.02). Clip to [0, 1]; the cluster part (held in both
        # fractions) to [f + r - 1, min(f, r)], so that no part's variance is negative.
        f, r = (min(max(float(m[k]), 0.0), 1.0) for k in ("frac_shared_across_budgets", "frac_run_level"))
        a = min(max(float(m.get("frac_cluster") or 0.0), f + r - 1, 0.0), f, r)
        return NoiseModel(float(m["sd_run_category"]), f, r,
                          si ** 2 / (si ** 2 + sdo ** 2) if si or sdo else 0.5,
                          f"{path}{f' ({kind})' if kind else ''}: {d.get('source', 'no source given')}", a)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise LawError(f"--noise_model {path}: not a noise model file ({type(e).__name__}: {e}); it needs "
                       "sd_run_category, frac_shared_across_budgets, frac_run_level") from None


def noise_model(spec=None, sd=None, kind=None):
    """--noise_model and --noise together: spec None (the default file), a file, or "independent"; sd (if
    given) sets the total SD keeping the model's fractions ("independent" needs it)."""
    if spec == "independent":
        if sd is None:
            raise LawError("--noise_model independent: needs --noise SD")
        return NoiseModel(float(sd))
    m = load_noise_model(spec or NOISE_MODEL_FILE, kind)
    return m if sd is None else m.scaled(sd)


def _keyed_rng(rng, key):
    """A generator that depends only on the sweep's generator seed and `key`: one seed cluster's shared noise
    is the same at every budget whatever order the runs are written in, and drawing it leaves the sweep's own
    stream untouched."""
    ss = rng.bit_generator.seed_seq
    h = hashlib.sha256(repr(key).encode()).digest()
    words = tuple(int.from_bytes(h[i:i + 4], "little") for i in range(0, 16, 4))
    return np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + words))


def draw_noise(noise, rng, cluster, init_seed, data_seed):
    """{category: e} for one run: cluster = (model, categories as a set, subset seed)."""
    s_init, s_data, s_run, s_own = noise.sds()
    a_init, a_data = noise.cluster_sds()
    shared = {c: 0.0 for c in CATEGORIES}
    if s_init or s_data or a_init or a_data:
        # one draw per category (u) and one more for the whole cluster (a), each from the init and the data seed
        zi = _keyed_rng(rng, ("init", cluster, init_seed)).normal(0, 1, len(CATEGORIES) + 1)
        zd = _keyed_rng(rng, ("data", cluster, data_seed)).normal(0, 1, len(CATEGORIES) + 1)
        common = a_init * zi[-1] + a_data * zd[-1]
        shared = {c: common + s_init * a + s_data * b for c, a, b in zip(CATEGORIES, zi, zd)}
    run = rng.normal(0, s_run)  # always drawn: the stream stays the same whatever the fractions
    return {c: shared[c] + run + rng.normal(0, s_own) for c in CATEGORIES}


_DEFAULT_NOISE = {}


def default_noise(kind="neural"):
    """The measured noise model (plans/noise_model_abstracts.json), read once."""
    if kind not in _DEFAULT_NOISE:
        _DEFAULT_NOISE[kind] = load_noise_model(NOISE_MODEL_FILE, kind)
    return _DEFAULT_NOISE[kind]


# ----------------------------------------------------------------------------------------------------
# the law

def effective_tokens(Dc, U, Rstar):
    """Muennighoff et al.'s effective data: D_c tokens from a pool of U unique tokens."""
    if Dc <= U:
        return float(Dc)
    return U + U * Rstar * (1 - math.exp(-(Dc / U - 1) / Rstar))


def form_loss(form, c, D, Dc, K, truth=TRUTH, N=None):
    """The expected test loss of training category c under a truth of the given form (plus A * N^-alpha when
    the truth has A)."""
    if truth.get("A") and N:
        return form_loss(form, c, D, Dc, K, {k: v for k, v in truth.items() if k != "A"}) + truth["A"] * N ** -truth["alpha"]
    E, B, beta, s = truth["E"][c], truth["B"], truth["beta"], truth["s"]
    if form == "dilution":
        return E + B * (Dc ** s * D ** (1 - s)) ** -beta
    if form == "null":  # no K effect: every token helps every category alike
        return E + B * D ** -beta
    if form == "lnK":  # a K penalty additive in ln K, which no form of analyze.py describes
        return E + B * D ** -beta + truth["gamma"] * math.log(K)
    if form == "satK":  # a K penalty that saturates: 1 - 1/K, no power of D_c / D
        return E + B * D ** -beta + 2 * truth["gamma"] * (1 - 1 / K)
    if form == "floorK":  # the dilution law with floors rising with K (0.2 nats from K = 1 to K = 11)
        return E + 0.02 * (K - 1) + B * (Dc ** s * D ** (1 - s)) ** -beta
    p = Dc / D  # the category's share of the run's tokens
    if form == "exponential":  # Ye et al.'s exponential mixing law with one shared t (analysis/mixing.py)
        return E + B * D ** -beta * math.exp(-truth["t"] * p)
    if form == "multiplicative":  # He et al.'s law: the whole loss scales with p^-gamma
        return (E + B * D ** -beta) * p ** -truth["gamma_p"]
    if form == "effective_data":  # effective data with one shared transfer tau (analysis/mixing.py EffectiveData)
        return E + B * (Dc + truth["tau"] * (D - Dc)) ** -beta
    raise ValueError(form)


def law_loss(law, c, D, Dc, N=None):
    """The dilution law of a law dict (parse_law) at a run's D and D_c (no repetition)."""
    return form_loss("dilution", c, D, Dc, 1, law, N)


def parse_law(text):
    """'B=..,beta=..,s=..,E=..[,E[math.AC]=..][,A=..,alpha=..][,U=..,Rstar=..]' -> law dict {B, beta, s,
    E: {cat: floor}, A, alpha, U, Rstar}. E= sets every category's floor, E[cat]= one category's (after E=,
    whatever the order); U= the unique tokens of every category's pool and Rstar= the repetition constant."""
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
        elif k in ("B", "beta", "s", "A", "alpha", "U", "Rstar"):
            law[k] = v
        else:
            raise LawError(f"--law: unknown parameter {k!r} (B, beta, s, E, E[category], A, alpha, U, Rstar)")
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
    if ("U" in law) != ("Rstar" in law):
        raise LawError("--law: repetition needs both U= (unique tokens per category) and Rstar=")
    bad = [k for k in ("B", "beta", "s", "A", "alpha", "U", "Rstar") if k in law and not math.isfinite(law[k])]
    bad += [f"E[{c}]" for c, v in law["E"].items() if not math.isfinite(v)]
    if bad:  # nan passes every comparison below (and inf fabricates inf losses)
        raise LawError(f"--law: {', '.join(bad)} must be finite numbers")
    if "A" in law and (law["A"] < 0 or law["alpha"] <= 0):
        raise LawError("--law: needs A >= 0 and alpha > 0")
    if "U" in law and (law["U"] < 1 or law["Rstar"] <= 0):
        raise LawError("--law: needs U >= 1 and Rstar > 0 (--repetition U,R*)")
    if not 0 <= law["s"] <= 1 or law["B"] <= 0 or law["beta"] <= 0 or min(law["E"].values()) <= 0:
        raise LawError("--law: needs 0 <= s <= 1, B > 0, beta > 0 and every E > 0")
    return law


def parse_repetition(text):
    """--repetition 'U,R*' -> {"U": U, "Rstar": R*}."""
    try:
        U, R = (float(x) for x in text.split(","))
    except ValueError:
        raise LawError(f"--repetition {text!r}: needs U_per_category,R* (e.g. 25e6,15.4)") from None
    return {"U": U, "Rstar": R}


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
    from model import PYTHIA, PYTHIA_BASE
    if model_config not in PYTHIA:
        return None
    h, _, _, _, total = PYTHIA[model_config]
    return total - 2 * PYTHIA_BASE["vocab_size"] * h


# ----------------------------------------------------------------------------------------------------
# one run

def make_run(root, rid, cats, budget, seed, rng, law="dilution", init_seed=None, data_seed=None,
             sampling="balanced", tagged=False, store_id="a" * 64, model="pythia-31m", n_nonemb=N_NONEMB,
             noise=None, dtype="bfloat16", truth=TRUTH, tag_gain=0.0, lr=1e-3, tokens_per_step=TOKENS_PER_STEP,
             pool=TEST_POOL, held_out="K", n_params_total=None, config=None, identity=None, data_dir="preprocessed_arxiv"):
    """One complete run directory under root/runs/rid; returns it. law: the truth's form (form_loss); truth:
    its parameters (with U and Rstar: repetition, and U is the pool); noise: a NoiseModel (default: the
    measured one). config / identity: extra run_config.json / identity values (a plan's fixed ones)."""
    noise = default_noise() if noise is None else noise
    init_seed = seed if init_seed is None else init_seed
    data_seed = seed if data_seed is None else data_seed
    steps = math.ceil(budget / tokens_per_step)
    D = steps * tokens_per_step
    K = len(cats)
    windows = rng.multinomial(D // PRED_PER_WINDOW, [1 / K] * K)
    per_cat = {c: int(w) * PRED_PER_WINDOW for c, w in zip(cats, windows)}
    if "U" in truth:  # repetition: the law on effective tokens, and the pool is the category's U
        pool = truth["U"]
        eff = {c: effective_tokens(max(per_cat[c], 1), truth["U"], truth["Rstar"]) for c in cats}
        D_eff = sum(eff.values())
    else:
        eff, D_eff = {c: max(per_cat[c], 1) for c in cats}, D
    e = draw_noise(noise, rng, (model, tuple(sorted(cats)), seed), init_seed, data_seed)
    per_category = {}
    for c in CATEGORIES:
        if c in cats:
            mean = form_loss(law, c, D_eff, eff[c], K, truth, N=n_nonemb) - (tag_gain if tagged else 0.0)
            mean += 0.0 if sampling == "balanced" else 0.3  # another arm: visibly different losses
        elif held_out == "K":  # worse, and less bad the more categories were seen
            mean = truth["E"][c] + 1.5 + 2 * truth["B"] * D ** -truth["beta"] - 0.05 * math.log(K)
        else:  # no K effect
            mean = truth["E"][c] + truth["B"] * D ** -truth["beta"] + 1.0
        loss = float(mean * math.exp(e[c]))
        pos = [loss * (1.3 - 0.3 * j / (PRED_PER_WINDOW - 1)) for j in range(PRED_PER_WINDOW)]
        per_category[c] = {"loss": loss, "perplexity": math.exp(min(loss, 700)), "bits_per_byte": loss / math.log(2) / 3.3,
                           "n_tokens": 100000, "n_papers": 100, "n_bytes": 330000, "in_training": c in cats,
                           "loss_by_position": pos}
    ident = {"store_id": store_id, "categories": cats, "sampling": sampling, "data_seed": data_seed,
             "init_seed": init_seed, "model": model, "tag_categories": tagged, "tokens_per_step": tokens_per_step,
             "total_steps": steps, "learning_rate": lr, "dtype": dtype, **(identity or {})}
    cfg = {"categories": cats, "K": K, "seed": seed, "init_seed": init_seed, "data_seed": data_seed, "sampling": sampling,
           "tag_categories": tagged, "model_name": model,
           "n_params_total": n_params_total if n_params_total is not None else (None if n_nonemb is None else n_nonemb + 12_000_000),
           "n_params_nonembedding": n_nonemb, "token_budget": budget, "token_budget_effective": D,
           "total_steps": steps, "tokens_per_step": tokens_per_step, "store_id": store_id,
           "data_dir": data_dir, "identity": ident, "learning_rate": lr, "fabricated": True, **(config or {})}
    summary = {"status": "complete", "error": None, "run_name": rid, "store_id": store_id, "categories": cats,
               "K": K, "steps": steps, "total_steps": steps, "schedule_complete": True, "tokens_seen": D,
               "tokens_per_category": per_cat,
               "epochs_per_category": {c: per_cat[c] / pool if math.isfinite(pool) else 0.0 for c in cats},
               "final_val_loss": float(np.mean([per_category[c]["loss"] for c in cats])), "best_val_loss": None,
               "wall_time_s": 100.0, "tokens_per_s": 1e6}
    test = {"store_id": store_id, "split": "test", "dtype": dtype, "tag_categories": tagged,
            "per_category": per_category,
            "overall": {"macro_loss": float(np.mean([v["loss"] for v in per_category.values()]))}}
    rd = Path(root) / "runs" / rid
    rd.mkdir(parents=True, exist_ok=True)
    # summary.json last: a run directory is complete only once it exists (as train.py writes it); renamed
    # into place like train.py's files, but not fsynced: a fabricated sweep is rebuilt from its seed, and
    # the fsyncs were a tenth of a design check's time (3 per run)
    for name, obj in (("run_config.json", cfg), ("test_results.json", test), ("summary.json", summary)):
        tmp = rd / (name + ".tmp")
        tmp.write_text(json.dumps(obj) + "\n")
        os.replace(tmp, rd / name)
    return rd


def rid_of(model, K, seed, budget, sampling="balanced", tagged=False, init_seed=None, cats=None):
    d = f"{budget / 1e6:g}M"
    head = f"c{'+'.join(cats)}" if cats else f"K{K}"
    return (f"{model}_{head}_s{seed:02d}_d{d}_{sampling}" + ("_tag" if tagged else "")
            + (f"_i{init_seed}" if init_seed is not None else ""))


# ----------------------------------------------------------------------------------------------------
# sweeps: the programme's shapes (the tests') and any plan file (design.py's)

def p1_sweep(root, law="dilution", noise_seed=0, seeds=range(11), Ks=(1, 2, 3, 5), k11_seeds=(0, 1, 2),
             budgets=P1_BUDGETS, replicate_subsets=(0, 1, 2), replicate_Ks=(1, 3), init_seeds=(100, 101),
             models=(("pythia-31m", N_NONEMB),), **kw):
    """The P1 core design with a known truth of form `law`, for each of `models` ((name, N): P2's sizes with a
    truth that has A and alpha). The default is P1 as first planned (295 runs: K = 11 with 3 seeds, which the
    tests' shared fixture uses); plans/p1_core_31m.yaml now has 12 (k11_seeds=range(12): 340 runs). budgets:
    one tuple for every model, or {model name: tuple} (per-size budgets, e.g. D = C / (6N) on a compute grid).
    Returns the run directories."""
    rng = np.random.default_rng(noise_seed)
    out = []
    for m, n in models:
        kw_m = dict(kw, model=m, n_nonemb=n) if len(models) > 1 or m != "pythia-31m" else kw
        bud = budgets[m] if isinstance(budgets, dict) else budgets
        for K in Ks:
            for seed in seeds:
                for D in bud:
                    out.append(make_run(root, rid_of(m, K, seed, D), select(K, seed), D, seed, rng, law, **kw_m))
        for seed in k11_seeds:
            for D in bud:
                out.append(make_run(root, rid_of(m, 11, seed, D), select(11, seed), D, seed, rng, law, **kw_m))
        for K in replicate_Ks:
            for seed in replicate_subsets:
                for i in init_seeds:
                    for D in bud:
                        out.append(make_run(root, rid_of(m, K, seed, D, init_seed=i), select(K, seed), D,
                                            seed, rng, law, init_seed=i, **kw_m))
    return out


def p3_sweep(root, noise_seed=0, tag_gain=0.005, **kw):
    """P3-shaped: tagged twins (balanced) of K in {3, 11}, and paper / token arms at the same keys."""
    rng = np.random.default_rng(noise_seed)
    for K in (3, 11):
        for seed in (0, 1, 2):
            for D in (10e6, 90e6):
                for sampling in ("balanced", "paper", "token"):
                    make_run(root, rid_of("pythia-31m", K, seed, D, sampling), select(K, seed), D, seed, rng,
                             sampling=sampling, tag_gain=0.0, **kw)
                make_run(root, rid_of("pythia-31m", K, seed, D, tagged=True), select(K, seed), D, seed, rng,
                         tagged=True, tag_gain=tag_gain, **kw)


def fabricate(plan, law, noise, root, rng, store_id="f" * 64):
    """Write one fabricated sweep of `plan` (a sweep.load_plan dict) under root/runs/, the losses from the law
    dict `law` (parse_law) and `noise` (a NoiseModel; a number: that SD, independent). Returns the run ids."""
    import sweep
    from model import PYTHIA, PYTHIA_BASE
    if not isinstance(noise, NoiseModel):
        noise = NoiseModel(float(noise))
    script = plan.get("script", sweep.TRAIN)
    out = []
    for rid, p in sweep.expand(plan):
        cats = list(p["categories"]) if p.get("categories") else select(int(p["K"]), int(p.get("seed", 0)))
        seed = int(p.get("seed", 0))
        model = f"kn{p.get('order', 3)}" if script == "ngram.py" else p.get("model_config", "pythia-14m")
        N = n_nonembedding(model)
        make_run(root, rid, cats, float(p["token_budget"]), seed, rng, "dilution", truth=law, noise=noise,
                 init_seed=int(p.get("init_seed", seed)), data_seed=int(p.get("data_seed", seed)),
                 sampling=p.get("sampling", "balanced"), tagged=bool(p.get("tag_categories")), store_id=store_id,
                 model=model, n_nonemb=N, dtype=p.get("dtype", "float32"), lr=p.get("learning_rate"),
                 tokens_per_step=PRED_PER_WINDOW * int(p.get("batch_size", DEFAULT_BATCH)) * int(p.get("grad_accum_steps", 1)),
                 pool=law.get("U", math.inf), held_out="flat", data_dir="fabricated",
                 n_params_total=None if N is None else N + 2 * PYTHIA_BASE["vocab_size"] * PYTHIA[model][0],
                 identity={"adam_beta2": p.get("adam_beta2")})
        out.append(rid)
    return out


def main(argv=None):
    p = st.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=st.HelpFormatter, allow_abbrev=False)
    p.add_argument("plan", help="a sweep.py plan file (YAML or JSON)")
    p.add_argument("--law", required=True, help='"B=..,beta=..,s=..,E=..[,E[math.AC]=..][,A=..,alpha=..][,U=..,Rstar=..]" '
                   "or a pilot's analysis/fits.json")
    add_noise_arguments(p)
    p.add_argument("--seed", type=st.number(int, 0), default=0, help="seed of the fabricated noise")
    p.add_argument("--out", required=True, help="sweep directory to write runs/ into")
    args = p.parse_args(argv)
    import sweep
    plan = sweep.load_plan(args.plan)
    law, noise = law_and_noise(args, plan)
    rids = fabricate(plan, law, noise, Path(args.out), np.random.default_rng(args.seed))
    print(f"wrote {len(rids)} fabricated runs under {Path(args.out) / 'runs'} (noise: total SD {noise.sd:.4g}, "
          f"shared across budgets {noise.frac_shared_across_budgets:.2f}, run level {noise.frac_run_level:.2f}, "
          f"both (cluster) {noise.frac_cluster:.2f}; {noise.source})")
    return rids


def add_noise_arguments(p):
    """--noise, --noise_model and --repetition: shared by simulate.py and design.py."""
    p.add_argument("--noise", type=float, default=None,
                   help="total SD of log test loss per (run, category); scales the noise model keeping its fractions "
                   "(default: a fits.json law's measured noise floor, else the noise model's own SD)")
    p.add_argument("--noise_model", default=None, metavar="FILE|independent",
                   help=f"noise structure (default {NOISE_MODEL_FILE.relative_to(NOISE_MODEL_FILE.parents[1])}; "
                   "'independent': every (run, category) on its own)")
    p.add_argument("--repetition", default=None, metavar="U,R*",
                   help="finite category pools: U unique tokens per category, repetition constant R* (e.g. 25e6,15.4)")


def law_and_noise(args, plan):
    """(law dict, NoiseModel) from --law, --noise, --noise_model, --repetition; one-line exit on bad input."""
    try:
        if Path(args.law).suffix == ".json" or Path(args.law).is_file():
            law, measured = law_from_fits(args.law)
        else:
            law, measured = parse_law(args.law), None
        if args.repetition:
            law = check_law(dict(law, **parse_repetition(args.repetition)))
        sd = args.noise if args.noise is not None else measured  # a pilot's measured noise floor scales the model
        if sd is not None and not 0 <= sd < math.inf:  # nan, inf: every loss non-finite
            raise LawError(f"--noise must be a finite number >= 0 (got {sd})")
        if args.noise_model == "independent" and sd is None:
            raise LawError("--noise: needed (>= 0) with --noise_model independent: the law has no measured noise floor")
        return law, noise_model(args.noise_model, sd, "kn" if plan.get("script") == "ngram.py" else "neural")
    except LawError as e:
        st.die(str(e))


if __name__ == "__main__":
    st.cli(main)
