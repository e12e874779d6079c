"""
Turn a sweep directory into the scaling result: runs.csv, fitted laws with bootstrap confidence
intervals (fits.json), hypothesis verdicts, diagnostics, plots, store baselines and report.md, all in
DIR/analysis/.

    python analyze.py sweeps/smoke [--n_boot 1000] [--sampling balanced] [--where learning_rate=6e-4] [--per_group]

The laws (EXPERIMENT_PLAN.md, H3): for category c in a run's training set, with D the run's predicted
tokens, D_c the tokens it actually saw of c (from summary.json) and N the non-embedding parameters,

    dilution: L_c = E_c + B * (D_c^s * D^(1-s))^(-beta)  [+ A * N^(-alpha)]   s in [0, 1] free
    disjoint: s = 1 (only a category's own tokens help it)
    shared:   s = 0 (every token helps every category: one ergodic source)

(the N term enters only when the runs span several model sizes). Fitting follows Chinchilla's approach 3:
Huber loss (delta 1e-3) on log-loss residuals, L-BFGS-B with analytic gradients from a grid of starts.

What makes the numbers trustworthy (and what the report states):
- Data: only runs that completed their schedule with finite test results enter; every other run is named
  with the reason (failed, killed, incomplete schedule, no results, corrupt file, NaN, a relaunch of a run
  already counted). Runs that differ in a run-defining value other than the design axes (K, subset,
  budget, model size, seeds, tagging) — store, sampling, eval dtype, lr, betas, weight decay, warmup, batch,
  dtype, model config content — are never pooled: refused in one line naming the value unless --store_id /
  --sampling / --eval_dtype / --where FIELD=VALUE pick one, or --per_group analyses each group on its own.
- Equal weight: every K contrast and loss-against-K table or figure averages replicates within (subset,
  category) first, then categories with equal weight; an interval needs >= 2 independent runs on each
  side, and none of zero width is printed.
- Identification: a parameter the design cannot pin (s with one K, beta with one budget, ...) is "not
  identified", with why, never with an interval; H3 is decided only when s is identified, the fit is known
  to fit and the form comparison has its intervals.
- Intervals: 95% percentile intervals from a bootstrap over runs (clusters: a run's categories move
  together), resampled within each K so the design stays balanced; refits at tolerances relative to the
  objective, from the point estimate and a second start; a resample missing a category, and a refit that
  did not converge, are dropped and counted. Parameters at a bound of the optimiser are flagged.
- Model comparison: cross-validation over subset seeds (all runs of a seed are held out together; each
  fold keeps every budget, so the forms stay identified), the held-out error difference between two forms
  with a bootstrap interval over runs; "undecided" when it contains 0.
- Fit quality: residuals against the seed-to-seed noise floor (from replicate runs that differ only in
  their seeds, the category set compared as a set), by K, by budget and by K x budget, with a Bonferroni
  threshold; a misfit is said before any parameter table; without replicates it is "unknown".
- Verdicts: each hypothesis is supported / not supported / undecided by its falsifier in
  EXPERIMENT_PLAN.md, with the interval that decided it.
"""
import csv
import json
import math
import os
from pathlib import Path

import numpy as np

import store as st
from analysis import extras

HUBER_DELTA = 1e-3
FORMS = {"dilution": None, "disjoint": 1.0, "shared": 0.0}  # form -> fixed s (None: free)
DATA_FILTER = ("complete runs whose schedule ran to its end, finite test results, in-training categories, "
               "untagged runs, the final checkpoint's exact test loss")
# Run-defining values that are NOT design axes: runs that differ in any of them are never pooled. The design
# axes (categories / K, subset and init seeds, budget and its derived steps, model size, tagging) vary within
# an analysis; everything else must be one value. (identity field, flag to pick one, how to read an old run)
HOMOGENEOUS = (("store_id", "--store_id"), ("sampling", "--sampling"), ("eval_dtype", "--eval_dtype"),
               ("learning_rate", "--where learning_rate="), ("adam_beta1", "--where adam_beta1="),
               ("adam_beta2", "--where adam_beta2="), ("adam_epsilon", "--where adam_epsilon="),
               ("weight_decay", "--where weight_decay="), ("max_grad_norm", "--where max_grad_norm="),
               ("min_lr_ratio", "--where min_lr_ratio="), ("warmup_ratio", "--where warmup_ratio="),
               ("tokens_per_step", "--where tokens_per_step="), ("dtype", "--where dtype="),
               ("model_config", "--where model_config="))
GROUP_FIELDS = tuple(f for f, _ in HOMOGENEOUS)
BOOT_TOL = (1e-9, 1e-6)    # (ftol, gtol) of the bootstrap refits, relative to the objective's scale
CV_TOL = (1e-12, 1e-9)     # of the cross-validation fits (from the grid of starts)
THIN_PAPERS, THIN_TOKENS = 10, 20_000  # test split per category below which its loss is flagged as noisy
MIN_STEPS_H4 = 100  # a specialist with fewer optimizer steps measures optimisation, not mixing
SAMPLE_CORPUS_NOTE = (
    "**What this sweep can and cannot show.** It trains on the shipped sample corpus (`data/sample_corpus`: "
    "template texts written for this project, a few dozen papers), with budgets of a few thousand tokens "
    "(a few optimizer steps). It checks that the pipeline runs end to end — training, exact evaluation, "
    "fits, intervals, report. Its numbers say nothing about arXiv text or about the hypotheses: every "
    "verdict below is about template text and a handful of steps.")


# ----------------------------------------------------------------------------------------------------
# collecting runs: every run directory is counted, included or excluded with a reason

def _read(path):
    """(object, None) for a readable JSON file; (None, 'missing') or (None, 'corrupt ...') otherwise."""
    p = Path(path)
    if not p.is_file():
        return None, "missing"
    try:
        return json.loads(p.read_text()), None
    except (OSError, json.JSONDecodeError) as e:
        return None, f"corrupt {p.name} ({type(e).__name__})"


def _finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def run_key(cfg):
    """What makes two run directories the same run (a relaunch under another name): the run identity
    train.py records, or, for older runs, the fields that define one."""
    if cfg.get("identity"):
        return json.dumps(cfg["identity"], sort_keys=True)
    fields = ("store_id", "categories", "sampling", "data_seed", "init_seed", "model_name", "tag_categories",
              "token_budget_effective", "tokens_per_step", "learning_rate", "adam_beta2", "min_lr_ratio",
              "dtype_resolved")
    return json.dumps({k: cfg.get(k) for k in fields}, sort_keys=True)


def collect_runs(sweep_dir):
    """Every run directory under DIR/runs (or DIR itself), each with its reason for exclusion (None: used)."""
    root = Path(sweep_dir) / "runs"
    if not root.is_dir():
        root = Path(sweep_dir)
    runs = []
    for rd in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        cfg, cerr = _read(rd / "run_config.json")
        summary, serr = _read(rd / "summary.json")
        test, terr = _read(rd / "test_results.json")
        r = {"run_id": rd.name, "dir": rd, "config": cfg or {}, "summary": summary or {}, "test": test,
             "status": (summary or {}).get("status", "incomplete"), "excluded": None}
        if cerr:
            r["excluded"] = ("never started (no run_config.json)" if cerr == "missing" else cerr)
        elif serr:
            r["excluded"] = ("incomplete: no summary.json (killed, interrupted or still running)"
                             if serr == "missing" else serr)
        elif r["status"] != "complete":
            r["excluded"] = f"{r['status']}: {summary.get('error') or 'no error recorded'}"
        elif not summary.get("schedule_complete"):
            steps, total = summary.get("steps"), summary.get("total_steps")
            if _finite(steps) and _finite(total) and steps >= total:  # say what is wrong, not a contradiction
                r["excluded"] = (f"summary.json marks the schedule incomplete although it ran {steps}/{total} steps "
                                 "(an inconsistent summary: check the run's train.log, or rerun it)")
            else:
                r["excluded"] = f"incomplete schedule ({steps}/{total} steps)"
        elif terr:
            r["excluded"] = "complete without test results (no test_results.json)" if terr == "missing" else terr
        else:
            bad = [c for c, v in (test.get("per_category") or {}).items() if not _finite(v.get("loss"))]
            if bad or not test.get("per_category"):
                r["excluded"] = f"non-finite test loss ({', '.join(bad) or 'no categories'})"
        runs.append(r)
    seen = {}
    for r in runs:  # relaunches of one configuration under another name count once
        if r["excluded"] is None:
            k = run_key(r["config"])
            if k in seen:
                r["excluded"] = f"duplicate of {seen[k]} (the same configuration under another name)"
            else:
                seen[k] = r["run_id"]
    label_models(runs)
    return runs


def label_models(runs):
    """r["model"]: the run's model_name (a config file's stem), plus 8 hex digits of its config's content
    where configs of one name differ (cfgA/tiny.json, cfgB/tiny.json): models are told apart by content."""
    shas = {}
    for r in runs:
        shas.setdefault(r["config"].get("model_name"), set()).add((r["config"].get("identity") or {}).get("model_config_sha256"))
    for r in runs:
        name = r["config"].get("model_name")
        sha = (r["config"].get("identity") or {}).get("model_config_sha256")
        r["model"] = f"{name}-{sha[:8]}" if sha and len(shas[name]) > 1 else name


def _model_config_conflicts(runs):
    """Model names whose runs were trained from different config contents (model_config_sha256)."""
    shas = {}
    for r in runs:
        if not r["excluded"]:
            ident = r["config"].get("identity") or {}
            shas.setdefault(r["config"].get("model_name"), set()).add(ident.get("model_config_sha256"))
    return {m for m, s in shas.items() if len(s) > 1}


def run_values(r, conflicts=frozenset()):
    """{field: value} of the non-design run-defining values of a run (GROUP_FIELDS). The model config's
    content is a design axis across model names (model size) but not within one name: its hash counts only
    for names trained from several contents."""
    cfg = r["config"]
    ident = cfg.get("identity") or {}

    def get(k, *old):
        for key in (k, *old):
            if ident.get(key) is not None:
                return ident[key]
            if cfg.get(key) is not None:
                return cfg[key]
        return None
    warm = cfg.get("warmup_ratio")
    return {"store_id": cfg.get("store_id") or ident.get("store_id"), "sampling": get("sampling"),
            "eval_dtype": (r["test"] if isinstance(r["test"], dict) else {}).get("dtype"),
            "learning_rate": get("learning_rate"), "adam_beta1": get("adam_beta1"), "adam_beta2": get("adam_beta2"),
            "adam_epsilon": get("adam_epsilon"), "weight_decay": get("weight_decay"),
            "max_grad_norm": get("max_grad_norm"), "min_lr_ratio": get("min_lr_ratio"),
            # warmup steps follow the budget (a ratio of the steps): the ratio is what defines the run
            "warmup_ratio": warm, "tokens_per_step": get("tokens_per_step"),
            "dtype": get("dtype", "dtype_resolved"),
            "model_config": (f"{cfg.get('model_name')}:{str(ident.get('model_config_sha256'))[:12]}"
                             if cfg.get("model_name") in conflicts else None)}


def group_of(r, conflicts=frozenset()):
    """The run's values of GROUP_FIELDS, as a tuple: runs of different tuples are never pooled."""
    v = run_values(r, conflicts)
    return tuple(v[f] for f in GROUP_FIELDS)


def group_label(g, differing=GROUP_FIELDS[3:]):
    """A directory name for a group: store / sampling / eval dtype (as before), then the other values in which
    the groups differ, e.g. 'aaaaaaaaaaaa_balanced_bfloat16_learning_rate=0.0006_adam_beta2=0.95'."""
    v = dict(zip(GROUP_FIELDS, g))
    head = f"{str(v['store_id'])[:12]}_{v['sampling']}_{v['eval_dtype']}"
    rest = "_".join(f"{k}={str(v[k]).replace(':', '-').replace('/', '-')}" for k in GROUP_FIELDS[3:]
                    if k in differing)
    return head + ("_" + rest if rest else "")


def _matches(value, want, field=None):
    """--store_id is a prefix; other selectors compare numbers as numbers, text exactly (or as a prefix)."""
    if value is None:
        return False
    if field == "store_id":
        return str(value).startswith(want)
    try:
        return math.isclose(float(value), float(want), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(value) == want or str(value).startswith(want)


def parse_where(items):
    """--where FIELD=VALUE (repeatable) -> {field: value}; a field outside GROUP_FIELDS is a usage error."""
    out = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or k not in GROUP_FIELDS:
            st.die(f"--where {item}: expected FIELD=VALUE with FIELD one of {', '.join(GROUP_FIELDS)}")
        out[k] = v
    return out


def select_runs(runs, args, check_mix=True):
    """Apply --store_id / --sampling / --eval_dtype / --where; refuse (one line) a selection that matches no
    usable run (nothing is written), or (check_mix) that still mixes run-defining values other than the
    design axes, naming the value. Runs outside the selection are excluded with the reason."""
    want = {"store_id": args.store_id, "sampling": args.sampling, "eval_dtype": args.eval_dtype,
            **parse_where(getattr(args, "where", None))}
    conflicts = _model_config_conflicts(runs)
    usable = [r for r in runs if not r["excluded"]]
    for r in usable:
        g = run_values(r, conflicts)
        off = [f"{k}={g[k]}" for k, v in want.items() if v is not None and not _matches(g[k], v, k)]
        if off:
            r["excluded"] = f"not in the selected subset ({', '.join(off)})"
    used = [r for r in runs if not r["excluded"]]
    if usable and not used:  # nothing is written: an empty report would replace a real one
        chosen = " ".join(f"--{k} {v}" if k in ("store_id", "sampling", "eval_dtype") else f"--where {k}={v}"
                          for k, v in want.items() if v is not None)
        present = "; ".join(f"{f}: {', '.join(sorted({str(run_values(r, conflicts)[f]) for r in usable}))}"
                            for f in want if want[f] is not None)
        st.die(f"{chosen}: no run matches (the usable runs have {present}); nothing written")
    if not check_mix:
        return runs
    conflicts = _model_config_conflicts(used)
    for field, flag in HOMOGENEOUS:
        values = {}
        for r in used:
            values.setdefault(run_values(r, conflicts)[field], []).append(r["run_id"])
        if len(values) > 1:
            listing = ", ".join(f"{str(v)[:24]}: {len(ids)} runs" for v, ids in values.items())
            pick = f"{flag} VALUE" if flag.startswith("--") and not flag.endswith("=") else f"{flag}VALUE"
            st.die(f"the runs mix {field} ({listing}); fits never pool runs that differ in it: choose one with "
                   f"{pick}, or analyse each group on its own with --per_group")
    return runs


CSV_COLUMNS = ["run_id", "status", "excluded", "model", "n_params_total", "n_params_nonembedding", "K", "seed",
               "init_seed", "data_seed", "sampling", "tagged", "categories", "token_budget", "token_budget_planned",
               "tokens_seen", "steps", "category", "in_training", "tokens_category", "epochs_category",
               "final_val_loss", "best_val_loss", "val_loss_category", "test_loss", "test_perplexity",
               "test_bits_per_byte", "test_loss_late", "test_n_tokens", "test_n_papers", "schedule_complete", "eval_dtype", "wall_time_s",
               "tokens_per_s", "store_id"]


def run_rows(runs):
    """One row per run and category (every evaluated category; training categories for runs without
    results). Excluded runs keep their rows, marked with the reason; they enter nothing."""
    rows = []
    for r in runs:
        cfg, s, test = r["config"], r["summary"], r["test"] if isinstance(r["test"], dict) else None
        cats = list((test or {}).get("per_category") or cfg.get("categories") or [])
        for c in cats:
            pc = (test or {}).get("per_category", {}).get(c, {})
            lbp = [v for v in (pc.get("loss_by_position") or [])[63:] if _finite(v)]
            rows.append({
                "run_id": r["run_id"], "status": r["status"], "excluded": r["excluded"],
                "model": r.get("model", cfg.get("model_name")),
                "n_params_total": cfg.get("n_params_total"), "n_params_nonembedding": cfg.get("n_params_nonembedding"),
                "K": len(cfg.get("categories") or []), "seed": cfg.get("seed"), "init_seed": cfg.get("init_seed"),
                "data_seed": cfg.get("data_seed"), "sampling": cfg.get("sampling"),
                "tagged": bool(cfg.get("tag_categories")), "categories": " ".join(cfg.get("categories") or []),
                "token_budget": cfg.get("token_budget_effective"),
                # the budget the plan asked for: what pairs runs (the effective one is rounded up to whole steps)
                "token_budget_planned": cfg.get("token_budget") or cfg.get("token_budget_effective"),
                "tokens_seen": s.get("tokens_seen"), "steps": s.get("steps"),
                "category": c, "in_training": c in (cfg.get("categories") or []),
                "tokens_category": (s.get("tokens_per_category") or {}).get(c, 0 if s else None),
                "epochs_category": (s.get("epochs_per_category") or {}).get(c),
                "final_val_loss": s.get("final_val_loss"), "best_val_loss": s.get("best_val_loss"),
                "val_loss_category": None, "test_loss": pc.get("loss"), "test_perplexity": pc.get("perplexity"),
                "test_bits_per_byte": pc.get("bits_per_byte"),
                "test_loss_late": float(np.mean(lbp)) if lbp else None,  # positions 64..100: ~ H_100
                "test_n_tokens": pc.get("n_tokens"), "test_n_papers": pc.get("n_papers"),
                "schedule_complete": s.get("schedule_complete", False), "eval_dtype": (test or {}).get("dtype"),
                "wall_time_s": s.get("wall_time_s"), "tokens_per_s": s.get("tokens_per_s"),
                "store_id": cfg.get("store_id")})
    _attach_val(runs, rows)
    return rows


def _attach_val(runs, rows):
    """val_loss/<category> of each run's validation at its final step (summary's steps), from
    metrics.jsonl; none when that step has no validation row (never another step's value)."""
    last = {}
    for r in runs:
        p = r["dir"] / "metrics.jsonl"
        final_step = (r["summary"] or {}).get("steps")
        if p.is_file() and final_step is not None:
            for line in p.read_text().splitlines():
                if '"eval"' in line:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if row.get("step") == final_step:
                        last[r["run_id"]] = row
    for row in rows:
        row["val_loss_category"] = last.get(row["run_id"], {}).get(f"val_loss/{row['category']}")


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in CSV_COLUMNS})


def used(rows):
    """Rows of included runs."""
    return [r for r in rows if not r["excluded"]]


# ----------------------------------------------------------------------------------------------------
# fitting

def fit_data(rows, where=None):
    """Arrays for the fits: in-training categories of included, untagged runs (and `where`, if given)."""
    use = [r for r in used(rows) if r["in_training"] and not r["tagged"] and (r["tokens_category"] or 0) > 0
           and (where is None or where(r))]
    cats = sorted({r["category"] for r in use}, key=lambda c: st.CATEGORIES.index(c) if c in st.CATEGORIES else 99)
    runs = sorted({r["run_id"] for r in use})
    seeds = sorted({str(r["seed"]) for r in use})
    return {"L": np.array([r["test_loss"] for r in use], dtype=float),
            "D": np.array([r["tokens_seen"] for r in use], dtype=float),
            "Dc": np.array([r["tokens_category"] for r in use], dtype=float),
            "N": np.array([r["n_params_nonembedding"] or 1 for r in use], dtype=float),
            "cat": np.array([cats.index(r["category"]) for r in use], dtype=int),
            "run": np.array([runs.index(r["run_id"]) for r in use], dtype=int),
            "budget": np.array([r["token_budget_planned"] for r in use], dtype=float),
            "K": np.array([r["K"] for r in use], dtype=int),
            "fold": np.array([seeds.index(str(r["seed"])) for r in use], dtype=int),
            "categories": cats, "runs": runs}



class Law:
    """L = E_cat + B * X^-beta [+ A * N^-alpha], X = Dc^s * D^(1-s); parameters in an unconstrained-ish vector
    [log E_0.., log B, beta, (s), (log A, alpha)] with box bounds for L-BFGS-B."""

    def __init__(self, form, n_cats, with_n):
        self.form, self.C, self.with_n = form, n_cats, with_n
        self.fixed_s = FORMS[form]
        self.names = ["logE"] * n_cats + ["logB", "beta"] + (["s"] if self.fixed_s is None else []) + \
            (["logA", "alpha"] if with_n else [])

    def unpack(self, th):
        C = self.C
        out = {"logE": th[:C], "logB": th[C], "beta": th[C + 1]}
        i = C + 2
        if self.fixed_s is None:
            out["s"] = th[i]
            i += 1
        else:
            out["s"] = self.fixed_s
        if self.with_n:
            out["logA"], out["alpha"] = th[i], th[i + 1]
        return out

    def predict(self, th, d):
        p = self.unpack(th)
        logX = p["s"] * np.log(d["Dc"]) + (1 - p["s"]) * np.log(d["D"])
        pred = np.exp(p["logE"][d["cat"]]) + np.exp(p["logB"] - p["beta"] * logX)
        if self.with_n:
            pred = pred + np.exp(p["logA"] - p["alpha"] * np.log(d["N"]))
        return pred

    def objective(self, th, d, w=None):
        """Huber(log pred - log L) summed (weighted by bootstrap multiplicities w), and its gradient."""
        p = self.unpack(th)
        C = self.C
        logD, logDc = np.log(d["D"]), np.log(d["Dc"])
        logX = p["s"] * logDc + (1 - p["s"]) * logD
        E = np.exp(p["logE"][d["cat"]])
        dterm = np.exp(p["logB"] - p["beta"] * logX)
        pred = E + dterm
        if self.with_n:
            nterm = np.exp(p["logA"] - p["alpha"] * np.log(d["N"]))
            pred = pred + nterm
        r = np.log(pred) - np.log(d["L"])
        a = np.abs(r)
        hub = np.where(a <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (a - 0.5 * HUBER_DELTA))
        dh = np.clip(r, -HUBER_DELTA, HUBER_DELTA) / pred
        if w is not None:
            hub, dh = hub * w, dh * w
        g = np.zeros_like(th)
        g[:C] = np.bincount(d["cat"], weights=dh * E, minlength=C)
        g[C] = np.sum(dh * dterm)
        g[C + 1] = np.sum(dh * dterm * -logX)
        i = C + 2
        if self.fixed_s is None:
            g[i] = np.sum(dh * dterm * -p["beta"] * (logDc - logD))
            i += 1
        if self.with_n:
            g[i] = np.sum(dh * nterm)
            g[i + 1] = np.sum(dh * nterm * -np.log(d["N"]))
        return float(hub.sum()), g

    def bounds(self, d):
        lmax = math.log(max(d["L"].max(), 1e-3))
        b = [(math.log(1e-4), lmax)] * self.C + [(-50.0, 200.0), (1e-3, 3.0)]
        if self.fixed_s is None:
            b.append((0.0, 1.0))
        if self.with_n:
            b += [(-50.0, 200.0), (1e-3, 3.0)]
        return b

    def starts(self, d):
        """Chinchilla-style grid of initial points around the data's scale."""
        Lc = np.array([d["L"][d["cat"] == c].min() if np.any(d["cat"] == c) else d["L"].min() for c in range(self.C)])
        logX0 = float(np.median(np.log(d["D"])))
        out = []
        for e_frac in (0.5, 0.85):
            for beta in (0.1, 0.3, 0.7):
                for s in ((0.25, 0.75) if self.fixed_s is None else (None,)):
                    th = list(np.log(e_frac * Lc)) + [math.log(max(np.mean(d["L"]) * (1 - e_frac), 1e-3)) + beta * logX0, beta]
                    if s is not None:
                        th.append(s)
                    if self.with_n:
                        th += [math.log(max(0.1 * np.mean(d["L"]), 1e-3)) + 0.3 * float(np.median(np.log(d["N"]))), 0.3]
                    out.append(np.array(th, dtype=float))
        return out


def _minimize(law, d, starts, w=None, tol=(1e-15, 1e-12), scale=None):
    """Best L-BFGS-B result over the starts. Tight tolerances by default: an optimiser stopped early is a
    known flaw of published fits (Besiroglu et al., arXiv:2404.10102). `scale` divides the objective:
    L-BFGS-B's ftol is relative to max(|f|, 1), so on an objective of ~1e-4 it acts as an absolute
    tolerance 1e4 times looser than asked; dividing by the objective's own scale makes it relative."""
    from scipy.optimize import minimize
    s = float(scale) if scale else 1.0

    def f(th):
        v, g = law.objective(th, d, w)
        return v / s, g / s
    best = None
    for th0 in starts:
        res = minimize(f, th0, jac=True, method="L-BFGS-B", bounds=law.bounds(d),
                       options={"maxiter": 10000, "maxfun": 20000, "ftol": tol[0], "gtol": tol[1]})
        res.fun = res.fun * s
        if best is None or res.fun < best.fun:
            best = res
    return best



def _subset(d, mask):
    return {k: (v[mask] if isinstance(v, np.ndarray) else v) for k, v in d.items()}


def named_params(law, th, categories):
    p = law.unpack(th)
    out = {f"E[{c}]": math.exp(p["logE"][i]) for i, c in enumerate(categories)}
    out["B"], out["beta"] = math.exp(p["logB"]), float(p["beta"])
    if law.fixed_s is None:
        out["s"] = float(p["s"])
    if law.with_n:
        out["A"], out["alpha"] = math.exp(p["logA"]), float(p["alpha"])
    return out


def at_bounds(law, th, d, categories):
    """{parameter name: 'lower' | 'upper'} for the parameters the optimiser left on a bound."""
    names = [f"E[{c}]" for c in categories] + ["B", "beta"] + (["s"] if law.fixed_s is None else []) + \
        (["A", "alpha"] if law.with_n else [])
    out = {}
    for name, v, (lo, hi) in zip(names, th, law.bounds(d)):
        tol = 1e-6 * max(1.0, abs(lo), abs(hi))
        if v <= lo + tol:
            out[name] = "lower"
        elif v >= hi - tol:
            out[name] = "upper"
    return out


def bootstrap_weights(d, n_boot, seed):
    """Run-multiplicity weights per point for each resample: runs are drawn with replacement within each
    K (the design's strata). A resample in which some category has no point is dropped and counted (its
    floor would sit at the point estimate with no spread)."""
    rng = np.random.default_rng(seed)
    run_K = np.zeros(len(d["runs"]), dtype=int)
    run_K[d["run"]] = d["K"]
    strata = [np.flatnonzero(run_K == k) for k in np.unique(run_K)]
    out, dropped = [], 0
    for _ in range(n_boot):
        counts = np.zeros(len(d["runs"]))
        for members in strata:
            np.add.at(counts, rng.choice(members, len(members)), 1)
        w = counts[d["run"]]
        if np.bincount(d["cat"], weights=w, minlength=len(d["categories"])).min() <= 0:
            dropped += 1
            continue
        out.append(w)
    return out, dropped


def boot_starts(law, d, th):
    """Starts of a bootstrap refit: the point estimate and a second point away from it (beta moved by 0.15
    with B moved to keep B X^-beta at the median X, s moved towards the other half of [0, 1]), so that a
    refit that stays at its start says the data pin the value, not that the optimiser stopped there."""
    p = law.unpack(th)
    logX0 = float(np.median(p["s"] * np.log(d["Dc"]) + (1 - p["s"]) * np.log(d["D"])))
    alt = np.array(th, dtype=float)
    C = law.C
    beta2 = p["beta"] + 0.15 if p["beta"] < 0.5 else p["beta"] - 0.15
    alt[C] = p["logB"] + (beta2 - p["beta"]) * logX0
    alt[C + 1] = beta2
    if law.fixed_s is None:
        alt[C + 2] = 0.5 * p["s"] + (0.375 if p["s"] < 0.5 else 0.125)
    lo, hi = np.array(law.bounds(d)).T
    return [np.asarray(th, dtype=float), np.clip(alt, lo, hi)]


def _boot_fits(job):
    """Refit each bootstrap resample from the first n_starts of boot_starts, with tolerances relative to the
    resample's objective (its value at the point estimate). Per resample: (named parameters, or None for a
    non-converged refit; whether a start other than the point estimate gave the best fit)."""
    law, d, th, weight_list, n_starts = job
    starts = boot_starts(law, d, th)[:n_starts]
    out = []
    for w in weight_list:
        scale = max(law.objective(np.asarray(th), d, w)[0], 1e-300)
        best, other = None, False
        for i, th0 in enumerate(starts):
            r = _minimize(law, d, [th0], w, tol=BOOT_TOL, scale=scale)
            if best is None or r.fun < best.fun - 1e-6 * scale:  # a better minimum, not tolerance noise
                best, other = r, i > 0
        ok = best.success and np.all(np.isfinite(best.x))
        out.append((named_params(law, best.x, d["categories"]) if ok else None, other))
    return out


_POOLS = {}


def _pool(jobs):
    """One pool of spawned workers per process, reused by every fit (spawning costs ~1 s per worker).
    Workers get single-threaded BLAS: the fits are tiny, and OpenBLAS threads of several processes spinning
    on the same cores made 2 processes slower than 1 (measured, notes.md)."""
    if jobs not in _POOLS:
        import atexit
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        limits = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
        saved = {k: os.environ.get(k) for k in limits}
        os.environ.update({k: "1" for k in limits})
        try:
            ex = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"))
            list(ex.map(abs, range(jobs)))  # start the workers while the limits are set
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        atexit.register(ex.shutdown)
        _POOLS[jobs] = ex
    return _POOLS[jobs]


BOOT_PROBE = 16  # resamples refitted from every start before deciding whether the others need them too


def run_bootstrap(law, d, th, weights, jobs):
    """The refits of all resamples, in order; the same for any number of processes. The first BOOT_PROBE
    resamples are refitted from two starts (boot_starts); if the second start ever gives the better fit,
    the point estimate is not a safe start for these data and every resample is refitted from both,
    otherwise the rest start at the point estimate only (half the cost). Returns (refits, starts used)."""
    def refit(ws, n_starts):
        if jobs > 1 and len(ws) >= 2 * jobs:
            chunks = [ws[i::jobs] for i in range(jobs)]
            parts = list(_pool(jobs).map(_boot_fits, [(law, d, th, c, n_starts) for c in chunks]))
            ordered = [None] * len(ws)
            for i, part in enumerate(parts):
                ordered[i::jobs] = part
            return ordered
        return _boot_fits((law, d, th, ws, n_starts)) if ws else []
    probe = refit(weights[:BOOT_PROBE], 2)
    n_starts = 2 if any(other for _, other in probe) else 1
    ordered = refit(weights[BOOT_PROBE:], n_starts)
    return [p for p, _ in probe + ordered], n_starts


def identification(law, d):
    """{parameter: why} for the parameters these data cannot pin (a flat profile), from the design: s needs
    two K values (with one, D_c/D is one number and s only rescales B; with K = 1 alone D_c = D and s has no
    effect at all); beta and B need two budgets; a floor E_c needs its category at two budgets and in two
    runs; the N term (A, alpha) needs three model sizes."""
    out = {}
    Ks = np.unique(d["K"])
    budgets = np.unique(d["D"])
    if law.fixed_s is None and len(Ks) < 2:
        out["s"] = (f"every run has K = {int(Ks[0])}" + (" (D_c = D: s has no effect on any prediction)"
                                                         if Ks[0] == 1 else " (one D_c/D: s only rescales B)"))
    if len(budgets) < 2:
        out["beta"] = out["B"] = "a single budget: B and beta trade off freely"
    for i, c in enumerate(d["categories"]):
        m = d["cat"] == i
        nb, nr = len(np.unique(d["D"][m])), len(np.unique(d["run"][m]))
        if nb < 2 or nr < 2:
            out[f"E[{c}]"] = (f"{c} is in {nr} run(s) at {nb} budget(s): its floor and the power-law term "
                              "cannot be told apart")
    if law.with_n and len(np.unique(d["N"])) < 3:
        out["A"] = out["alpha"] = f"{len(np.unique(d['N']))} model sizes: A and alpha need three"
    return out


FORMULAS = {"dilution": "L_c = E_c + B * (D_c^s * D^(1-s))^-beta", "disjoint": "L_c = E_c + B * D_c^-beta",
            "shared": "L_c = E_c + B * D^-beta"}


def fit_law(d, form, n_boot=1000, seed=0, with_n=None, jobs=1):
    """Point estimate, bootstrap 95% intervals over runs (counts of dropped resamples and refits), the
    parameters left on a bound, and the residuals."""
    if with_n is None:
        with_n = len(np.unique(d["N"])) > 1
    law = Law(form, len(d["categories"]), with_n)
    res = _minimize(law, d, law.starts(d))
    th = res.x
    point = named_params(law, th, d["categories"])
    resid = np.log(law.predict(th, d)) - np.log(d["L"])
    weights, dropped_missing = bootstrap_weights(d, n_boot, seed)
    refits, n_starts = run_bootstrap(law, d, th, weights, jobs) if weights else ([], 0)
    boots = [b for b in refits if b is not None]
    params = {}
    flat = identification(law, d)
    for k, v in point.items():
        vals = np.array([b[k] for b in boots])
        params[k] = {"estimate": v, "ci95": _interval(vals), "n_boot": len(vals), "identified": k not in flat}
        if k in flat:  # no interval for what the data cannot pin: its bootstrap spread is the optimiser's
            params[k].update(ci95=[None, None], why=f"not identified: {flat[k]}")
        elif len(vals) >= 2 and params[k]["ci95"][0] is None:
            params[k].update(identified=False, why="not identified: the bootstrap refits (from two starts) do not "
                             "move it — a flat profile")
        elif not len(vals):
            params[k]["why"] = "no bootstrap resamples: no interval"
    bound = at_bounds(law, th, d, d["categories"])
    for k, side in bound.items():
        params[k]["at_bound"] = side
    return {"form": form, "formula": FORMULAS[form] + (" + A * N^-alpha" if with_n else ""),
            "data_filter": DATA_FILTER, "params": params, "converged": bool(res.success),
            "optimizer_message": str(res.message), "huber_delta": HUBER_DELTA,
            "fit_error": float(np.sqrt(np.mean(resid ** 2))), "n_points": int(len(d["L"])), "n_runs": len(d["runs"]),
            "bootstrap": {"requested": n_boot, "used": len(boots), "dropped_missing_category": dropped_missing,
                          "dropped_not_converged": len(refits) - len(boots), "strata": "K",
                          "refit": (f"tolerances relative to the objective; the first {BOOT_PROBE} resamples from 2 "
                                    f"starts, the rest from {n_starts}")},
            "at_bound": bound, "_theta": th.tolist(), "_with_n": with_n, "_resid": resid, "_boot": boots}


# ----------------------------------------------------------------------------------------------------
# comparing the forms: cross-validation over subset seeds, with a bootstrap interval of the difference

def cv_errors(d, forms, with_n):
    """Squared held-out log errors per point and form; folds = subset seeds (a seed's runs held out
    together). Points of a category absent from a fold's training part cannot be predicted and are
    skipped for every form alike."""
    folds = np.unique(d["fold"])
    if len(folds) < 2:  # one subset seed: fold the runs instead (every 5th run)
        fold = d["run"] % 5
    else:
        fold = d["fold"]
    err = {f: np.full(len(d["L"]), np.nan) for f in forms}
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        dt = _subset(d, train)
        present = np.isin(d["cat"], np.unique(dt["cat"])) & test
        if not present.any() or len(np.unique(dt["D"])) < 2:
            continue
        # re-index categories for the training part
        cat_map = {c: i for i, c in enumerate(np.unique(dt["cat"]))}
        dt["cat"] = np.array([cat_map[c] for c in dt["cat"]])
        dt["categories"] = [d["categories"][c] for c in cat_map]
        dv = _subset(d, present)
        dv["cat"] = np.array([cat_map[c] for c in dv["cat"]])
        for f in forms:
            law = Law(f, len(dt["categories"]), with_n)
            r = _minimize(law, dt, law.starts(dt), tol=CV_TOL)
            err[f][present] = (np.log(law.predict(r.x, dv)) - np.log(dv["L"])) ** 2
    return err


def compare_forms(d, forms, with_n, n_boot, seed):
    """Held-out RMSE per form and, per pair, the difference of mean squared held-out errors with a
    bootstrap interval over runs: 'A' or 'B' when the interval excludes 0, 'undecided' otherwise."""
    err = cv_errors(d, forms, with_n)
    ok = np.all([np.isfinite(err[f]) for f in forms], axis=0)
    rng = np.random.default_rng(seed)
    runs = np.unique(d["run"][ok])
    per_run = {f: np.array([err[f][ok & (d["run"] == r)].sum() for r in runs]) for f in forms}
    n_pts = np.array([(ok & (d["run"] == r)).sum() for r in runs])
    idx = [rng.integers(0, len(runs), len(runs)) for _ in range(n_boot if len(runs) > 1 else 0)]
    out = {"method": "cross-validation over subset seeds (a seed's runs held out together)",
           "n_points": int(ok.sum()), "n_skipped": int((~ok).sum()), "rmse": {}, "pairs": []}
    if not ok.any():  # nothing could be predicted (each category in one fold only): no comparison
        out["rmse"] = {f: {"estimate": None, "ci95": [None, None]} for f in forms}
        out["pairs"] = [{"a": a, "b": b, "mse_difference": None, "ci95": [None, None], "better": "undecided"}
                        for i, a in enumerate(forms) for b in forms[i + 1:]]
        return out
    for f in forms:
        boots = [math.sqrt(per_run[f][i].sum() / n_pts[i].sum()) for i in idx]
        out["rmse"][f] = {"estimate": math.sqrt(per_run[f].sum() / n_pts.sum()),
                          "ci95": _pct(boots)}
    for i, a in enumerate(forms):
        for b in forms[i + 1:]:
            diff = [(per_run[a][j].sum() - per_run[b][j].sum()) / n_pts[j].sum() for j in idx]
            est = (per_run[a].sum() - per_run[b].sum()) / n_pts.sum()
            ci = _pct(diff)
            # float noise between identical predictions is not a difference
            better = ("undecided" if ci[0] is None or ci[0] <= 1e-12 and ci[1] >= -1e-12 else
                      (a if ci[1] < 0 else b))
            out["pairs"].append({"a": a, "b": b, "mse_difference": float(est), "ci95": ci, "better": better})
    return out


def _interval(values):
    """A 95% percentile interval that can be printed: none from fewer than two values, and none of zero
    width (noisy data never give one: a zero width means the resamples could not vary)."""
    ci = _pct(values)
    if ci[0] is None or len(values) < 2 or ci[1] - ci[0] <= 1e-12 * max(1.0, abs(ci[0])):
        return [None, None]
    return ci


def _pct(values):
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) else [None, None]


def preferred_form(comparison):
    """The form no other form beats (by its interval); None when that is undecided."""
    forms = list(comparison["rmse"])
    beaten = {f: False for f in forms}
    wins = {f: 0 for f in forms}
    for p in comparison["pairs"]:
        if p["better"] == p["a"]:
            beaten[p["b"]] = True
            wins[p["a"]] += 1
        elif p["better"] == p["b"]:
            beaten[p["a"]] = True
            wins[p["b"]] += 1
    top = [f for f in forms if not beaten[f]]
    return top[0] if len(top) == 1 else None


# ----------------------------------------------------------------------------------------------------
# fit quality: residuals against the seed-to-seed noise floor

def replicate_key(r, values):
    """What replicates share: every run-defining value but the seeds (data / subset seed, init seed), with
    the category set compared as a set (K = 11 runs of different subset seeds are rotations of one set)."""
    return (r["model"], tuple(sorted(r["categories"].split())), r["token_budget_planned"], r["tagged"],
            tuple(sorted(values.get(r["run_id"], {}).items())))


def noise_floor(rows, runs=None):
    """Pooled SD of log test loss among replicate runs (replicate_key: the same run but for its seeds) per
    category: the scatter no law can explain. Returns (sd or None, degrees of freedom, number of groups,
    the groups: [{model, K, budget, runs, df}]). Without replicates the floor is unknown (None)."""
    conflicts = _model_config_conflicts(runs) if runs else frozenset()
    values = {r["run_id"]: run_values(r, conflicts) for r in (runs or [])}
    groups = {}
    for r in used(rows):
        if r["in_training"] and not r["tagged"]:
            key = replicate_key(r, values) + (r["category"],)
            groups.setdefault(key, {}).setdefault(r["run_id"], math.log(r["test_loss"]))
    ss, df, n, listing = 0.0, 0, 0, {}
    for key, by_run in groups.items():
        if len(by_run) > 1:
            v = np.asarray(list(by_run.values()))
            ss += float(((v - v.mean()) ** 2).sum())
            df += len(v) - 1
            n += 1
            g = listing.setdefault(key[:-1], {"model": key[0], "K": len(key[1]), "budget": key[2],
                                              "runs": sorted(by_run), "df": 0})
            g["df"] += len(v) - 1
    return (math.sqrt(ss / df) if df else None), df, n, list(listing.values())


def residual_diagnostics(fit, d, sigma):
    """Mean log residual (prediction − observation) by K, by budget and by K × budget, each against the
    noise floor: z = mean / (sigma / sqrt(runs in the cell)) (a run's categories counted as one draw, the
    conservative choice). A misfit: residual RMSE > 1.5 sigma, or a cell beyond the Bonferroni threshold."""
    from scipy.stats import norm
    resid = fit["_resid"]
    cells = []
    for label, keys in (("K", [d["K"]]), ("budget", [d["budget"]]), ("K x budget", [d["K"], d["budget"]])):
        combos = sorted({tuple(k[i] for k in keys) for i in range(len(resid))})
        for combo in combos:
            m = np.all([k == v for k, v in zip(keys, combo)], axis=0)
            n_runs = len(np.unique(d["run"][m]))
            mean = float(resid[m].mean())
            z = mean / (sigma / math.sqrt(n_runs)) if sigma else None
            cells.append({"by": label, "cell": [float(c) for c in combo], "mean_residual": mean, "n_runs": n_runs,
                          "z": z})
    rmse = float(np.sqrt(np.mean(resid ** 2)))
    out = {"rmse": rmse, "noise_floor": sigma, "cells": cells}
    if not sigma:
        out.update(verdict="unknown", reason="no replicate runs (runs differing only in their seeds), so the "
                   "noise floor is unknown and lack of fit cannot be judged")
        return out
    z_crit = float(norm.ppf(1 - 0.05 / (2 * len(cells))))
    worst = max(cells, key=lambda c: abs(c["z"]))
    out["z_threshold"] = z_crit
    reasons = []
    if rmse > 1.5 * sigma:
        reasons.append(f"residual RMSE {rmse:.4f} is {rmse / sigma:.1f}x the noise floor {sigma:.4f}")
    if abs(worst["z"]) > z_crit:
        where = ", ".join(f"{'budget' if i else 'K'} {v:,.0f}" for i, v in enumerate(worst["cell"])) \
            if worst["by"] == "K x budget" else f"{worst['by']} {worst['cell'][0]:,.0f}"
        reasons.append(f"structured residuals: mean {worst['mean_residual']:+.4f} at {where} (z = {worst['z']:+.1f}, "
                       f"threshold {z_crit:.1f})")
    out.update(verdict="misfit" if reasons else "fits", reason="; ".join(reasons) or
               f"residual RMSE {rmse:.4f} = {rmse / sigma:.2f}x the noise floor, no structured residual beyond "
               f"|z| = {z_crit:.1f}")
    return out


# ----------------------------------------------------------------------------------------------------
# the hypotheses (EXPERIMENT_PLAN.md, section 2), each decided by its falsifier with an interval

def boot_mean_ci(groups, n_boot, seed, stat=np.mean):
    """95% interval of stat over resampled units: groups is a list of per-unit values."""
    v = np.asarray(groups, dtype=float)
    if len(v) == 0:
        return [None, None]
    if len(v) < 2:  # one unit: no spread to resample, no interval
        return [None, None]
    rng = np.random.default_rng(seed)
    return _pct([stat(v[rng.integers(0, len(v), len(v))]) for _ in range(n_boot)])


def holm(pvalues, alpha=0.05):
    """Holm's step-down: which hypotheses are rejected at family-wise level alpha."""
    order = np.argsort(pvalues)
    reject = np.zeros(len(pvalues), dtype=bool)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (len(pvalues) - rank):
            break
        reject[i] = True
    return reject


def h1_floors(a, b, margin):
    """Floors E_c fitted on specialists (fit a) and on the largest K (fit b): the bootstrap distribution of
    each difference, a two-sided bootstrap p-value, Holm across categories. Supported when every
    difference's interval lies within ±margin; not supported when more than one category differs after
    Holm; undecided otherwise (the check has too little power to call the floors equal)."""
    from scipy.stats import norm
    cats = [k for k in a["params"] if k.startswith("E[") and k in b["params"]]
    n = min(len(a["_boot"]), len(b["_boot"]))
    table, pvals = [], []
    for k in cats:
        diffs = np.array([a["_boot"][i][k] - b["_boot"][i][k] for i in range(n)])
        est = a["params"][k]["estimate"] - b["params"][k]["estimate"]
        # p from the bootstrap's SD (normal approximation): a percentile p cannot go below 2/(n+1), which
        # at 200 resamples is above Holm's smallest threshold (0.05/11 = 0.0045) and could never reject
        sd = float(np.std(diffs, ddof=1)) if n >= 2 else 0.0
        p = float(2 * norm.sf(abs(est) / sd)) if sd > 0 else 1.0
        ident = a["params"][k].get("identified", True) and b["params"][k].get("identified", True)
        ci = _interval(diffs) if ident else [None, None]
        table.append({"category": k[2:-1], "difference": est, "ci95": ci, "p": p, "identified": bool(ident),
                      "at_bound": bool(a["params"][k].get("at_bound") or b["params"][k].get("at_bound"))})
        pvals.append(p)
    # a floor on the optimiser's bound, or one the data cannot pin, is no estimate: its category cannot decide
    # anything either way
    testable = [i for i, r in enumerate(table) if not r["at_bound"] and r["identified"] and r["ci95"][0] is not None]
    rejected = holm(np.array([pvals[i] for i in testable])) if testable else []
    for row in table:
        row["holm_rejected"] = None
    for i, rej in zip(testable, rejected):
        table[i]["holm_rejected"] = bool(rej)
    n_rej = int(sum(rejected))
    n_bound = len(table) - len(testable)  # at a bound, not identified, or without an interval
    within = [r for r in table if r["ci95"][0] is not None and -margin <= r["ci95"][0] and r["ci95"][1] <= margin]
    if n == 0:
        verdict, why = "undecided", "no bootstrap resamples, so no intervals"
    elif n_rej > 1:
        verdict, why = "not supported", f"{n_rej} categories' floors differ after Holm correction"
    elif len(within) == len(table) and not n_bound:
        verdict, why = "supported", f"every difference's 95% interval lies within ±{margin} nats"
    else:
        wide = max(table, key=lambda r: (r["ci95"][1] or 0) - (r["ci95"][0] or 0))
        verdict = "undecided"
        why = (f"{n_rej} of {len(testable)} categories differ after Holm; {len(table) - len(within)} of {len(table)} "
               f"intervals are wider than ±{margin} nats (widest: {wide['category']} {_ci(wide['ci95'])})"
               + (f"; {n_bound} floor(s) on the optimiser's bound, not identified or without an interval"
                  if n_bound else "")
               + ": the check cannot call the floors equal")
    return {"subsets": [a["subset"], b["subset"]], "margin": margin, "table": table, "verdict": verdict, "why": why,
            "p_method": "two-sided normal approximation from the bootstrap SD of the difference (resolution not "
                        "limited by the number of resamples), Holm across the testable categories"}


def run_level(rows):
    """Per included untagged run: its test loss per in-training and per held-out category, and its subset
    (the category set, as a set: K = 11 runs of different subset seeds train on the same set)."""
    out = {}
    for r in used(rows):
        if r["tagged"]:
            continue
        o = out.setdefault(r["run_id"], {"model": r["model"], "K": r["K"], "D": r["token_budget_planned"],
                                         "seed": r["seed"], "subset": frozenset(r["categories"].split()),
                                         "in": {}, "out": {}})
        o["in" if r["in_training"] else "out"][r["category"]] = r["test_loss"]
    return out


def equal_weight(runs, kind):
    """{category: loss} over a cell's runs with every category weighted alike: replicates averaged within
    (subset, category) first, then subsets within a category. (A plain mean over runs would count the
    categories of replicated subsets several times: P1's K = 1 cell holds 3 categories three times.)"""
    per = {}
    for v in runs:
        for c, loss in v[kind].items():
            per.setdefault(c, {}).setdefault(v["subset"], []).append(loss)
    return {c: float(np.mean([np.mean(x) for x in subsets.values()])) for c, subsets in per.items()}


def macro(runs, kind, cats=None):
    """Equal-weight macro loss of a cell's runs (over `cats` when given: the categories a contrast pairs)."""
    per = equal_weight(runs, kind)
    vals = [per[c] for c in (cats if cats is not None else per) if c in per]
    return float(np.mean(vals)) if vals else None


def cells_by_K(rows, kind):
    """{(model, planned budget): {K: [run, ...]}} of the runs that have `kind` (in / out) losses."""
    cells = {}
    for v in run_level(rows).values():
        if v[kind]:
            cells.setdefault((v["model"], v["D"]), {}).setdefault(v["K"], []).append(v)
    return cells


def k_contrast(rows, kind, n_boot, seed, margin, smaller_is_lower):
    """Per model and budget: equal-weight macro loss (kind: in / out) at the largest K minus at the smallest
    K that has it, both over the categories the two share (the nested design: K = 11 holds every K = 1
    category), with a bootstrap interval that resamples runs within each side. An interval needs >= 2 runs
    on each side. Returns table and verdict (H2: the difference > 0; H5 < 0)."""
    table = []
    rng = np.random.default_rng(seed)
    for (m, D), byK in sorted(cells_by_K(rows, kind).items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        if len(byK) < 2:
            continue
        k0, k1 = min(byK), max(byK)
        a, b = byK[k0], byK[k1]
        cats = sorted(set(equal_weight(a, kind)) & set(equal_weight(b, kind)))
        if not cats:
            continue
        diff = macro(b, kind, cats) - macro(a, kind, cats)
        row = {"model": m, "D": D, "K_low": k0, "K_high": k1, "difference": diff, "ci95": [None, None],
               "n_runs": [len(a), len(b)], "n_categories": len(cats), "note": None}
        if min(len(a), len(b)) < 2:
            row["note"] = f"undecided: {len(a)} / {len(b)} runs (an interval needs >= 2 independent runs on each side)"
        elif n_boot:
            # Resampled runs are centred on per-category means first: a resample that draws a K = 1 run twice
            # and misses another changes which categories it holds, and the floors' spread across categories
            # (0.8 nats in P1) would then swamp the noise. The centre is the side with more runs per category
            # (its means are the more precise; the other side's centred values carry its own noise).
            per_a, per_b = equal_weight(a, kind), equal_weight(b, kind)
            ref = per_a if len(a) / len(per_a) >= len(b) / len(per_b) else per_b
            boots = []
            for _ in range(n_boot):
                ra = equal_weight([a[i] for i in rng.integers(0, len(a), len(a))], kind)
                rb = equal_weight([b[i] for i in rng.integers(0, len(b), len(b))], kind)
                za = [ra[c] - ref[c] for c in cats if c in ra]
                zb = [rb[c] - ref[c] for c in cats if c in rb]
                if za and zb:
                    boots.append(float(np.mean(zb)) - float(np.mean(za)))
            row["ci95"] = _interval(boots)
            if row["ci95"][0] is None:
                row["note"] = "undecided: the resamples do not vary (no spread to make an interval from)"
        table.append(row)
    want_pos = not smaller_is_lower
    decided = [t for t in table if t["ci95"][0] is not None]
    if not decided:
        why = "; ".join(sorted({t["note"] for t in table if t["note"]})) if table else "no budget has two K values"
        return table, "undecided", (why or "no bootstrap, so no interval")
    good = [t for t in decided if (t["ci95"][0] > 0 if want_pos else t["ci95"][1] < 0)]
    bad = [t for t in decided if (t["ci95"][1] < 0 if want_pos else t["ci95"][0] > 0)]
    null = [t for t in decided if -margin <= t["ci95"][0] and t["ci95"][1] <= margin]
    sign = "rises" if want_pos else "falls"
    if len(good) == len(table):
        return table, "supported", f"the loss {sign} from the smallest to the largest K at every budget (all intervals exclude 0)"
    if bad or len(null) == len(table):
        return table, "not supported", (f"{len(bad)} budget(s) with the opposite sign" if bad else
                                        f"every interval lies within ±{margin} nats: no change with K")
    return table, "undecided", (f"{len(good)} of {len(table)} budgets show it; " +
                                f"{len(decided) - len(good)} interval(s) contain 0" +
                                (f", {len(table) - len(decided)} budget(s) have no interval (too few runs)"
                                 if len(decided) < len(table) else ""))


def mixing_gain(rows, fit, n_boot, seed, tol=0.01):
    """H4: G = L_c(K = 1, d) − L_c(K, K·d) at equal tokens per category, pairing runs on the planned
    budget (within `tol`, relative): the effective budgets are rounded up to whole steps. Returns the
    pairs made, the mixed runs left without a specialist, and per (model, K, d): G (mean over categories
    of specialist mean − mixed mean) with a bootstrap interval over categories, the law's prediction, and
    the optimizer steps of each side."""
    spec, mix = {}, {}
    for r in used(rows):
        if r["in_training"] and not r["tagged"]:
            (spec if r["K"] == 1 else mix).setdefault((r["model"], r["category"]), []).append(r)
    cells, missing = {}, []
    for (m, c), mixed in mix.items():
        for r in mixed:
            d = r["token_budget_planned"] / r["K"]
            match = [s for s in spec.get((m, c), []) if abs(s["token_budget_planned"] - d) <= tol * d]
            if not match:
                missing.append({"run_id": r["run_id"], "category": c, "needs": f"K = 1 at {d:,.0f} tokens"})
                continue
            cell = cells.setdefault((m, r["K"], match[0]["token_budget_planned"]), {"spec": {}, "mix": {}, "steps": set()})
            cell["spec"][c] = {s["run_id"]: s["test_loss"] for s in match}
            cell["mix"].setdefault(r["run_id"], {})[c] = r["test_loss"]
            cell["steps"].add((match[0]["steps"], r["steps"]))
    pred = None
    if fit is not None and fit["form"] == "dilution" and not fit["_with_n"]:
        p = {k: fit["params"][k]["estimate"] for k in ("B", "beta", "s")}
        pred = lambda K, d: p["B"] * d ** -p["beta"] * (1 - K ** (-(1 - p["s"]) * p["beta"]))
    table = []
    for (m, K, d), cell in sorted(cells.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2])):
        per_c = {}
        for losses in cell["mix"].values():
            for c, v in losses.items():
                per_c.setdefault(c, []).append(v)
        # per category: specialist mean − mixed mean; categories are the resampled units (a category with
        # one specialist run carries that run's noise only through the spread across categories)
        vals = [float(np.mean(list(cell["spec"][c].values())) - np.mean(v)) for c, v in per_c.items()]
        steps = sorted(cell["steps"])
        n_spec = len({rid for c in cell["spec"].values() for rid in c})
        ci = boot_mean_ci(vals, n_boot, seed) if min(n_spec, len(cell["mix"])) >= 2 else [None, None]
        ci = ci if ci[0] is None or ci[1] - ci[0] > 1e-12 else [None, None]
        p_ = pred(K, d) if pred else None
        table.append({"model": m, "K": K, "d": d, "G": float(np.mean(vals)), "ci95": ci,
                      "units_note": (None if min(n_spec, len(cell["mix"])) >= 2 else
                                     f"undecided: {n_spec} specialist / {len(cell['mix'])} mixed run(s)"),
                      # an observed interval that excludes what the fitted law predicts: the law and the
                      # direct measurement disagree, which the report must say
                      "contradicts_law": bool(p_ is not None and ci[0] is not None and not ci[0] <= p_ <= ci[1]),
                      "n_pairs": sum(len(v) for v in per_c.values()), "n_categories": len(vals),
                      "n_runs": [sum(len(v) for v in cell["spec"].values()), len(cell["mix"])],
                      "steps_specialist": steps[0][0], "steps_mixed": steps[0][1],
                      "too_few_steps": (steps[0][0] or 0) < MIN_STEPS_H4,
                      "predicted": p_})
    return {"pairs_made": sum(t["n_pairs"] for t in table), "missing": missing, "table": table,
            "tolerance": tol}


def h4_verdict(gain):
    t = [x for x in gain["table"] if not x["too_few_steps"] and x["ci95"][0] is not None]
    if not gain["table"]:
        return "undecided", "no specialist / mixed pairs at equal tokens per category"
    if not t:
        return "undecided", (f"every pair's specialist ran fewer than {MIN_STEPS_H4} optimizer steps: G measures "
                             "the mixed run's extra steps, not mixing")
    pos = [x for x in t if x["ci95"][0] > 0]
    neg = [x for x in t if x["ci95"][1] < 0]
    bad = [x for x in t if x.get("contradicts_law")]
    law = (f"; in {len(bad)} of {len(t)} cells the observed G contradicts the fitted law's prediction (e.g. K = "
           f"{bad[0]['K']}, d = {bad[0]['d']:,.0f}: {bad[0]['G']:+.3f}, 95% {_ci(bad[0]['ci95'], 3)}, law "
           f"{bad[0]['predicted']:+.3f})" if bad else "")
    if len(pos) == len(t):
        return "supported", f"G > 0 in all {len(t)} cells (every interval above 0){law}"
    if len(neg) == len(t):
        return "not supported", f"G < 0 in all {len(t)} cells: mixing hurt everywhere{law}"
    return "undecided", (f"G > 0 in {len(pos)}, < 0 in {len(neg)}, undecided in {len(t) - len(pos) - len(neg)} of "
                         f"{len(t)} cells{law}")


def twin_key(cfg):
    """A tagged run's untagged twin has the same identity but for tagging (every run-defining field:
    sampling arm, seeds, budget, lr, ...)."""
    ident = dict(cfg.get("identity") or json.loads(run_key(cfg)))
    ident.pop("tag_categories", None)
    ident.pop("model_config_sha256", None)  # tags need no other config: the same model file either way
    return json.dumps(ident, sort_keys=True)


def identification_cost(runs, n_boot, seed):
    """H6: pairs of tagged / untagged twins; per (model, K): mean gap (untagged − tagged) over pairs with a
    bootstrap interval, against the bound ln(K)/100."""
    by_key = {}
    for r in runs:
        if not r["excluded"]:
            by_key.setdefault(twin_key(r["config"]), {})["tagged" if r["config"].get("tag_categories") else "untagged"] = r
    pairs = []
    for twins in by_key.values():
        if len(twins) == 2:
            t, u = twins["tagged"], twins["untagged"]
            cats = t["config"]["categories"]
            gap = float(np.mean([u["test"]["per_category"][c]["loss"] - t["test"]["per_category"][c]["loss"]
                                 for c in cats]))
            pos = np.nanmean([np.array(u["test"]["per_category"][c]["loss_by_position"], dtype=float)
                              - np.array(t["test"]["per_category"][c]["loss_by_position"], dtype=float) for c in cats], 0)
            pairs.append({"tagged": t["run_id"], "untagged": u["run_id"], "model": t.get("model", t["config"].get("model_name")),
                          "K": len(cats), "sampling": t["config"].get("sampling"), "gap": gap,
                          "gap_by_position": pos.tolist()})
    groups = {}
    for p in pairs:
        groups.setdefault((p["model"], p["K"]), []).append(p["gap"])
    table = []
    for (m, K), gaps in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        ci = boot_mean_ci(gaps, n_boot, seed)
        bound = math.log(K) / 100
        v = ("undecided" if ci[0] is None or len(gaps) < 2 else "not supported" if ci[0] > bound else
             "supported" if ci[1] <= bound else "undecided")
        table.append({"model": m, "K": K, "pairs": len(gaps), "gap": float(np.mean(gaps)), "ci95": ci,
                      "bound": bound, "verdict": v})
    return pairs, table


# ----------------------------------------------------------------------------------------------------
# plots

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _style(ax, xlabel, ylabel, title, legend_size=8, log_grid=False):
    """Labels, grid and legend: the same for every panel."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both" if log_grid else "major")
    ax.legend(fontsize=legend_size)


def _save(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss_vs_tokens(rows, best_fit, fit_d, path):
    plt = _plt()
    rl = run_level(rows)
    models = sorted({v["model"] for v in rl.values()})
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
    for ax, m in zip(axes[0], models):
        Ks = sorted({v["K"] for v in rl.values() if v["model"] == m})
        colors = plt.cm.viridis(np.linspace(0, 0.9, len(Ks)))
        for K, col in zip(Ks, colors):
            pts = {}
            for v in rl.values():
                if v["model"] == m and v["K"] == K and v["in"]:
                    pts.setdefault(v["D"], []).append(v)
            Ds = sorted(pts)
            # equal weight per category (replicates averaged first); bars: SD of the runs' own macro losses
            ax.errorbar(Ds, [macro(pts[D], "in") for D in Ds],
                        yerr=[np.std([np.mean(list(v["in"].values())) for v in pts[D]]) for D in Ds], fmt="o",
                        color=col, capsize=3, label=f"K={K} (runs, categories weighted equally)")
            if best_fit is not None and Ds:
                law = Law(best_fit["form"], len(fit_d["categories"]), best_fit["_with_n"])
                grid = np.geomspace(min(Ds), max(Ds), 50)
                N = np.median(fit_d["N"])
                # the categories weighted as the runs at this K hold them (the points average the same way);
                # balanced sampling: D_c = D/K
                weight = np.bincount(fit_d["cat"][fit_d["K"] == K], minlength=len(fit_d["categories"]))
                preds = [law.predict(np.array(best_fit["_theta"]), {"D": grid, "Dc": grid / K, "N": np.full_like(grid, N),
                                                                    "cat": np.full(len(grid), c)})
                         for c in range(len(fit_d["categories"]))]
                if weight.sum():
                    ax.plot(grid, np.average(preds, axis=0, weights=weight), "-", color=col, lw=1.2,
                            label=f"K={K} fit ({best_fit['form']})")
        ax.set_xscale("log")
        _style(ax, "predicted tokens seen D", "in-training test loss (macro, nats/token)",
               f"{m}: loss vs tokens per K", log_grid=True)
    _save(plt, fig, path)


def plot_loss_vs_K(rows, path):
    plt = _plt()
    rl = run_level(rows)
    Ds = sorted({v["D"] for v in rl.values()})
    fig, ax = plt.subplots(figsize=(7, 4.8))
    colors = plt.cm.plasma(np.linspace(0, 0.85, max(len(Ds), 1)))
    for D, col in zip(Ds, colors):
        for kind, style, lab in (("in", "o-", "in training"), ("out", "s--", "held out")):
            pts = {}
            for v in rl.values():
                if v["D"] == D and v[kind]:
                    pts.setdefault(v["K"], []).append(v)
            Ks = sorted(pts)
            if Ks:  # equal weight per category, as in H2 / H5; bars: SD of the runs' own macro losses
                ax.errorbar(Ks, [macro(pts[k], kind) for k in Ks],
                            yerr=[np.std([np.mean(list(v[kind].values())) for v in pts[k]]) for k in Ks], fmt=style,
                            color=col, capsize=3, label=f"D={D:,.0f}: {lab}")
    _style(ax, "number of training categories K", "test loss (macro over categories)",
           "in-training vs held-out loss against K at fixed budgets", legend_size=7)
    _save(plt, fig, path)


def plot_collapse(fit, d, path):
    plt = _plt()
    law = Law(fit["form"], len(d["categories"]), fit["_with_n"])
    p = law.unpack(np.array(fit["_theta"]))
    X = np.exp(p["s"] * np.log(d["Dc"]) + (1 - p["s"]) * np.log(d["D"]))
    red = d["L"] - np.exp(p["logE"][d["cat"]])
    if fit["_with_n"]:
        red = red - np.exp(p["logA"] - p["alpha"] * np.log(d["N"]))
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for K in sorted(set(d["K"].tolist())):
        m = d["K"] == K
        ax.scatter(X[m], np.maximum(red[m], 1e-4), s=14, label=f"K={K}")
    grid = np.geomspace(X.min(), X.max(), 50)
    ax.plot(grid, np.exp(p["logB"] - p["beta"] * np.log(grid)), "k-",
            label=f"B X^-beta, beta={p['beta']:.3f}, s={p['s']:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _style(ax, "effective tokens X = D_c^s D^(1-s)", "reducible loss L_c - E_c",
           f"per-category loss collapsed with the fitted s ({fit['form']})", log_grid=True)
    _save(plt, fig, path)


def plot_baselines(rows, baselines, path):
    plt = _plt()
    cats = list(baselines["per_category"])
    best = {}
    for r in used(rows):  # the best (lowest) in-training test bits per byte any run reached, per category
        if r["in_training"] and r["test_bits_per_byte"] is not None and not r["tagged"]:
            best[r["category"]] = min(best.get(r["category"], 1e9), r["test_bits_per_byte"])
    x = np.arange(len(cats))
    fig, ax = plt.subplots(figsize=(9, 4.8))
    wdt = 0.2
    for i, comp in enumerate(("gzip", "bz2", "lzma")):
        vals = [baselines["per_category"][c]["compress_bpb"][comp] or np.nan for c in cats]
        ax.bar(x + (i - 1.5) * wdt, vals, wdt, label=comp)
    ax.bar(x + 1.5 * wdt, [best.get(c, np.nan) for c in cats], wdt, label="best model (in training)")
    ax.set_xticks(x)
    ax.set_xticklabels(cats, rotation=45, ha="right")
    _style(ax, "category", "bits per byte (test text)", "model vs compressors, per category")
    _save(plt, fig, path)


def plot_positions(pairs, runs, path):
    """Tagged minus untagged loss by window position for the twin pairs (same sampling arm, seeds, budget);
    without twins, the in-training loss by position of the largest budget's runs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    if pairs:
        groups = {}
        for p in pairs:
            groups.setdefault((p["model"], p["K"]), []).append(p["gap_by_position"])
        for (m, K), gaps in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            ax.plot(range(1, 101), np.nanmean(np.array(gaps, dtype=float), axis=0), label=f"{m} K={K} ({len(gaps)} twin pairs)")
            ax.axhline(math.log(K) / 100, ls=":", lw=0.8, color="grey")
        title, ylabel = "identification cost by position: untagged − tagged", "loss gap (nats/token)"
    else:
        done = [r for r in runs if not r["excluded"] and r["test"]]
        biggest = max((r["config"].get("token_budget_effective") or 0 for r in done), default=None)
        curves = {}
        for r in done:
            if r["config"].get("token_budget_effective") == biggest and not r["config"].get("tag_categories"):
                vecs = [r["test"]["per_category"][c]["loss_by_position"] for c in r["config"]["categories"]]
                key = (str(r["config"].get("model_name")), len(r["config"]["categories"]))
                curves.setdefault(key, []).append(np.nanmean(np.array(vecs, dtype=float), axis=0))
        for (m, K), cs in sorted(curves.items()):  # mean over the runs of each model and K
            ax.plot(range(1, 101), np.mean(cs, axis=0), lw=1, label=f"{m} K={K} ({len(cs)} runs)")
        title, ylabel = f"loss by window position (D={biggest})", "in-training test loss (nats/token)"
    _style(ax, "position in window (tokens of context)", ylabel, title, legend_size=7)
    _save(plt, fig, path)


def _fmt(v, d=4):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{d}g}" if isinstance(v, float) else str(v)


def _ci(ci, d=4):
    return "–" if ci is None or ci[0] is None else f"[{_fmt(ci[0], d)}, {_fmt(ci[1], d)}]"


# ----------------------------------------------------------------------------------------------------
# verdicts

def h3_verdict(dil, comparison, diag):
    """Decided only when s is identified, the fit quality is known and the dilution law fits, and the form
    comparison has its intervals; otherwise undecided, the reason first."""
    if dil is None:
        return "undecided", "too few complete runs or budgets to fit"
    s = dil["params"].get("s")
    if s is None or not s.get("identified", True):
        return "undecided", f"s is {(s or {}).get('why', 'not fitted')}: the data cannot say how K matters"
    if diag is None or diag["verdict"] == "unknown":
        return "undecided", ("the fit quality is unknown (" + (diag["reason"] if diag else "no diagnostics") +
                             "): a law that may not fit decides nothing")
    if diag["verdict"] == "misfit":
        return "undecided", f"the dilution law does not fit these data ({diag['reason']})"
    better = {(p["a"], p["b"]): p for p in (comparison or {}).get("pairs", [])}
    for other in ("shared", "disjoint"):
        p = better.get(("dilution", other))
        if p is None or p["ci95"][0] is None:
            return "undecided", (f"the held-out comparison of dilution and {other} has no interval (too few runs or "
                                 "subset seeds to cross-validate)")
    for other in ("shared", "disjoint"):
        p = better[("dilution", other)]
        if p["better"] == other:
            what = "one shared source (s = 0): no K effect" if other == "shared" else "disjoint components (s = 1)"
            return "not supported", (f"the {other} form predicts held-out runs better: {what} (difference of held-out "
                                     f"MSE {p['mse_difference']:+.2e}, 95% {_ci(p['ci95'], 3)})")
    if s["ci95"][0] is None:
        return "undecided", "no bootstrap interval for s"
    ci = s["ci95"]
    if ci[0] <= 0.01:
        return "undecided", (f"s's 95% interval {_ci(ci, 3)} reaches 0 (one shared source cannot be excluded)")
    if ci[1] >= 0.99:
        return "undecided", f"s's 95% interval {_ci(ci, 3)} reaches 1 (disjoint components cannot be excluded)"
    return "supported", f"0 < s < 1: s = {s['estimate']:.3f}, 95% {_ci(ci, 3)}, and no fixed-s form predicts held-out runs better"


def k_effect_statement(verdict_h3, dil, verdict_h2=None):
    """The report's headline, consistent with the H2 and H3 rows: it never says 'no K effect' while the
    direct contrast (H2) finds one, and never repeats the verdict's own words."""
    if dil is None:
        return "No fit: too few complete runs or budgets."
    s = dil["params"].get("s", {})
    v, why = verdict_h3
    h2 = verdict_h2[0] if verdict_h2 else None
    h2_note = (" The direct contrast (H2) does find the in-training loss rising with K at fixed D; the law does "
               "not say how much of it is dilution." if h2 == "supported" else "")
    if v == "supported":
        return f"The data show a K effect: the sharing exponent s = {s['estimate']:.3f}, 95% {_ci(s['ci95'], 3)}."
    no_effect = "no K effect" in why or "reaches 0" in why
    if no_effect and h2 != "supported":
        return (f"**The data do not show a K effect**: H3 is {v} — {why}. The fitted s "
                f"({_fmt(s.get('estimate'), 3)}) is not a finding.")
    return f"**No K effect can be claimed from the law**: H3 is {v} — {why}. The fitted s is not a finding.{h2_note}"


# ----------------------------------------------------------------------------------------------------
# the report

def thin_categories(rows):
    """{category: {papers, tokens}} of the categories whose test split is thin (below THIN_PAPERS papers or
    THIN_TOKENS tokens, by the smallest count any used run recorded)."""
    out = {}
    for r in used(rows):
        p, t = r.get("test_n_papers"), r.get("test_n_tokens")
        if (_finite(p) and p < THIN_PAPERS) or (_finite(t) and t < THIN_TOKENS):
            c = out.setdefault(r["category"], {"papers": p, "tokens": t})
            c["papers"] = min(x for x in (c["papers"], p) if x is not None) if p is not None else c["papers"]
            c["tokens"] = min(x for x in (c["tokens"], t) if x is not None) if t is not None else c["tokens"]
    return {c: {"papers": v["papers"] or 0, "tokens": v["tokens"] or 0} for c, v in sorted(out.items())}


def _data_section(runs, rows, sample):
    inc = [r for r in runs if not r["excluded"]]
    exc = [r for r in runs if r["excluded"]]
    L = ["# Ergodic-component scaling: analysis report", ""]
    if sample:
        L += [SAMPLE_CORPUS_NOTE, ""]
    groups = sorted({group_of(r)[:3] for r in inc}, key=str)
    budgets = sorted({r["token_budget_planned"] for r in used(rows)})
    L += ["## Data", "",
          f"{len(runs)} run directories: {len(inc)} used, {len(exc)} excluded (listed below). "
          f"Fits use {DATA_FILTER}.",
          "Store / sampling / evaluation dtype: " + "; ".join(f"{str(g[0])[:12]} / {g[1]} / {g[2]}" for g in groups) + ".",
          f"Models: {', '.join(sorted({str(r['model']) for r in used(rows)}))}; K: "
          f"{', '.join(map(str, sorted({r['K'] for r in used(rows)})))}; planned budgets: "
          f"{', '.join(f'{b:,.0f}' for b in budgets)}.", ""]
    thin = thin_categories(rows)
    if thin:
        L += ["**Thin test sets**: " + "; ".join(f"{c}: {t['papers']} papers, {t['tokens']:,} tokens" for c, t in thin.items())
              + f" (below {THIN_PAPERS} papers or {THIN_TOKENS:,} tokens): a few papers' quirks move these "
              "categories' losses by more than the effects measured here; read them with care.", ""]
    if exc:
        L += ["### Excluded runs", "", "| run | reason |", "|---|---|"]
        L += [f"| {r['run_id']} | {r['excluded']} |" for r in exc]
        L.append("")
    return L


def _verdict_section(verdicts):
    L = ["## Verdicts", "", "Each hypothesis of EXPERIMENT_PLAN.md, decided by its falsifier.", "",
         "| hypothesis | verdict | what decided it |", "|---|---|---|"]
    L += [f"| {h} | **{v}** | {why} |" for h, (v, why) in verdicts.items()]
    return L + [""]


def _fit_sections(fits, comparison, diagnostics, with_n):
    L = ["## Fit quality", ""]
    main = [f for f in fits if f["subset"] == "all"]
    if main and all(diagnostics.get(f["form"], {}).get("verdict") == "misfit" for f in main):
        L += ["**No form fits these data.** " + "; ".join(f"{f['form']}: {diagnostics[f['form']]['reason']}"
                                                          for f in main) +
              ". The parameters below describe the best of poor approximations, not a law.", ""]
    for f in main:
        dg = diagnostics.get(f["form"])
        if dg:
            L.append(f"- {f['form']}: **{dg['verdict']}** — {dg['reason']}.")
    if comparison:
        L += ["", f"### Comparing the forms ({comparison['method']}; {comparison['n_points']} held-out points"
              + (f", {comparison['n_skipped']} not predictable" if comparison["n_skipped"] else "") + ")", "",
              "| form | held-out RMSE (log L) | 95% CI |", "|---|---|---|"]
        L += [f"| {f} | {_fmt(v['estimate'])} | {_ci(v['ci95'])} |" for f, v in comparison["rmse"].items()]
        L += ["", "| A vs B | MSE(A) − MSE(B) | 95% CI | better |", "|---|---|---|---|"]
        L += [f"| {p['a']} vs {p['b']} | {_fmt(p['mse_difference'], 3)} | {_ci(p['ci95'], 3)} | {p['better']} |"
              for p in comparison["pairs"]]
    L += ["", "## Fitted laws", "",
          "| form | data | formula | converged | fit error (RMSE log L) | points | runs | bootstrap used / dropped |",
          "|---|---|---|---|---|---|---|---|"]
    for f in fits:
        b = f["bootstrap"]
        L.append(f"| {f['form']} | {f['subset']} | `{f['formula']}` | {f['converged']} | {_fmt(f['fit_error'])} | "
                 f"{f['n_points']} | {f['n_runs']} | {b['used']} / {b['dropped_missing_category']} missing a category, "
                 f"{b['dropped_not_converged']} not converged |")
    for f in fits:
        L += ["", f"### {f['form']} ({f['subset']})", "", "| parameter | estimate | 95% CI | note |", "|---|---|---|---|"]
        for k, v in f["params"].items():
            note = "; ".join(x for x in (v.get("why") if not v.get("identified", True) else None,
                                         f"at the optimiser's {v['at_bound']} bound" if v.get("at_bound") else None) if x)
            est = _fmt(v["estimate"]) if v.get("identified", True) else "not identified"
            L.append(f"| {k} | {est} | {_ci(v['ci95'])} | {note} |")
    return L


def _diag_section(diagnostics, sigma_info):
    sigma, df, n, groups = sigma_info
    L = ["", "## Residual diagnostics", "",
         (f"Noise floor (seed-to-seed SD of log test loss among replicate runs — the same run-defining values "
          f"but the seeds, the category set compared as a set — {len(groups)} replicate sets ({n} category "
          f"groups), {df} degrees of freedom): {sigma:.4f}." if sigma else
          "No replicate runs (runs that differ only in their seeds): the noise floor is **unknown**, so no fit "
          "can be called good."),
         ("Replicate sets: " + "; ".join(f"{g['model']} K={g['K']} D={g['budget']:,.0f}: {len(g['runs'])} runs "
                                          f"({g['df']} df)" for g in groups[:20])
          + (f"; … {len(groups) - 20} more (fits.json)" if len(groups) > 20 else "") + ".") if groups else "",
         "Mean residual = mean of log(prediction) − log(observation); z against the noise floor.", ""]
    for form, dg in diagnostics.items():
        L += [f"### {form}", "", "| by | cell | mean residual | runs | z |", "|---|---|---|---|---|"]
        for c in dg["cells"]:
            cell = ", ".join(f"{v:,.0f}" for v in c["cell"])
            L.append(f"| {c['by']} | {cell} | {c['mean_residual']:+.4f} | {c['n_runs']} | {_fmt(c['z'], 3)} |")
        L.append("")
    return L


def _hypothesis_sections(h1, h2, h5, gain, h6, h2_extra=()):
    L = []
    for h in h1:
        L += ["", f"## H1: floors E_c, {h['subsets'][0]} vs {h['subsets'][1]} ({h['model']})", "",
              f"Difference of the floors (bootstrap of the difference; p from its bootstrap SD, Holm across categories; equivalence margin "
              f"±{h['margin']} nats): **{h['verdict']}** — {h['why']}.", "",
              "| category | E_c difference | 95% CI | p | rejected (Holm) | note |", "|---|---|---|---|---|---|"]
        L += [f"| {r['category']} | {r['difference']:+.4f} | {_ci(r['ci95'])} | {r['p']:.3f} | "
              f"{'–' if r['holm_rejected'] is None else r['holm_rejected']} | "
              f"{'a floor at the optimiser bound' if r['at_bound'] else ''} |" for r in h['table']]
    for name, (table, v, why), lab in (("H2: in-training loss against K", h2, "in-training"),
                                      ("H5: held-out loss against K", h5, "held-out")):
        if table:
            L += ["", f"## {name}", "", f"**{v}** — {why}.", "",
                  "Categories weighted equally (replicates averaged within subset and category first), over the "
                  "categories both K share; the interval resamples runs within each side.", "",
                  f"| model | D (planned) | K low → high | {lab} macro loss difference | 95% CI | runs | categories | note |",
                  "|---|---|---|---|---|---|---|---|"]
            L += [f"| {t['model']} | {t['D']:,.0f} | {t['K_low']} → {t['K_high']} | {t['difference']:+.4f} | "
                  f"{_ci(t['ci95'])} | {t['n_runs'][0]} / {t['n_runs'][1]} | {t['n_categories']} | {t['note'] or ''} |"
                  for t in table]
            L += list(h2_extra) if lab == "in-training" else []  # issue 17: H2's second half (analysis/extras.py)
    if gain["table"] or gain["missing"]:
        L += ["", "## H4: mixing gain at equal tokens per category", "",
              "G = L_c(K = 1, d) − L_c(K, K·d), paired on the planned budget (within 1%); mean over categories and "
              "seeds, 95% CI over categories; > 0: mixing helped. The mixed run trains on K·d tokens, so it takes K "
              f"times the specialist's optimizer steps: cells whose specialist ran < {MIN_STEPS_H4} steps measure "
              "optimisation as much as mixing and decide nothing.", "",
              f"{gain['pairs_made']} pairs made; {len(gain['missing'])} mixed (run, category) without a specialist.", "",
              "| model | K | d (tokens per category) | G | 95% CI | law predicts | steps K=1 / K | pairs | note |",
              "|---|---|---|---|---|---|---|---|---|"]
        for t in gain["table"]:
            L.append(f"| {t['model']} | {t['K']} | {t['d']:,.0f} | {t['G']:+.4f} | {_ci(t['ci95'])} | "
                     f"{_fmt(t['predicted'])} | {t['steps_specialist']} / {t['steps_mixed']} | {t['n_pairs']} | "
                     + "; ".join(x for x in ("too few steps" if t["too_few_steps"] else None, t.get("units_note"),
                                             "**contradicts the fitted law**" if t.get("contradicts_law") else None)
                                 if x) + " |")
        if gain["missing"]:  # grouped by what is missing; fits.json lists every (run, category)
            groups = {}
            for m in gain["missing"]:
                g = groups.setdefault(m["needs"], {"runs": set(), "categories": set()})
                g["runs"].add(m["run_id"])
                g["categories"].add(m["category"])
            L += ["", "Mixed runs without a specialist at D/K (no pair made): " + "; ".join(
                f"{len(g['runs'])} run(s), {len(g['categories'])} categories need {need}"
                for need, g in sorted(groups.items())) + "."]
    if h6:
        L += ["", "## H6: identification cost (untagged − tagged twins: same sampling arm, seeds and budget)", "",
              "| model | K | twin pairs | mean gap (nats/token) | 95% CI | bound ln(K)/100 | verdict |",
              "|---|---|---|---|---|---|---|"]
        L += [f"| {t['model']} | {t['K']} | {t['pairs']} | {t['gap']:+.4f} | {_ci(t['ci95'])} | {t['bound']:.4f} | "
              f"{t['verdict']} |" for t in h6]
    return L


def _loss_vs_K_table(rows):
    rl = run_level(rows)
    L = ["", "## Loss against K (included runs only)", "",
         "Macro losses weight every category equally: replicate runs are averaged within (subset, category) "
         "first, then subsets within a category, then categories.", "",
         "| model | K | D (planned) | runs | in-training macro loss | held-out macro loss |", "|---|---|---|---|---|---|"]
    agg = {}
    for v in rl.values():
        agg.setdefault((v["model"], v["K"], v["D"]), []).append(v)
    for (m, K, D), vs in sorted(agg.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2])):
        L.append(f"| {m} | {K} | {D:,.0f} | {len(vs)} | {_fmt(macro(vs, 'in'))} | {_fmt(macro(vs, 'out'))} |")
    return L


def _baseline_section(baselines):
    if not baselines:
        return []
    L = ["", "## Store baselines (model-free reference points)", "",
         "| category | train papers | train tokens | bytes/token | unigram entropy (nats) | gzip bpb | bz2 bpb | lzma bpb | test near-dup rate |",
         "|---|---|---|---|---|---|---|---|---|"]
    for c, b in baselines["per_category"].items():
        cb = b["compress_bpb"]
        L.append(f"| {c} | {b['train_papers']:,} | {b['train_tokens']:,} | {_fmt(b['bytes_per_token'])} | "
                 f"{_fmt(b['unigram_entropy_nats'])} | {_fmt(cb['gzip'])} | {_fmt(cb['bz2'])} | {_fmt(cb['lzma'])} | "
                 f"{_fmt(b['test_near_duplicate_rate'])} |")
    return L


def write_report(path, a):
    """report.md from the analysis dict `a`: what the data can show first, verdicts, fit quality before any
    parameter table, then the hypotheses' tables, diagnostics, figures and baselines."""
    L = _data_section(a["runs"], a["rows"], a["sample"])
    L += [a["k_effect"], ""]
    L += _verdict_section(a["verdicts"])
    L += _fit_sections(a["fits"], a["comparison"], a["diagnostics"], a["with_n"])
    L += _hypothesis_sections(a["h1"], a["h2"], a["h5"], a["gain"], a["h6"], extras.h2_lines(a.get("extras")))
    L += _diag_section(a["diagnostics"], a["sigma"])
    L += _loss_vs_K_table(a["rows"])
    L += extras.sections(a["extras"]) if a.get("extras") else []  # issue 17: transfer matrix, H7, IsoFLOP
    L += ["", "## Figures", ""]
    for title, name in a["plots"]:
        L += [f"### {title}", "", f"![{title}]({name})", ""]
    L += _baseline_section(a["baselines"])
    L += ["", "Files: `runs.csv` (one row per run and category; excluded runs marked), `fits.json`, `baselines.json`, "
          "the PNG figures.", ""]
    Path(path).write_text("\n".join(L))


# ----------------------------------------------------------------------------------------------------
# main

def is_sample_corpus(runs):
    """Whether the runs' store was built from the shipped sample corpus (template text)."""
    for data_dir in {r["config"].get("data_dir") for r in runs if r["config"].get("data_dir")}:
        try:
            ds = (st.read_meta(data_dir) or {}).get("dataset") or {}
        except st.StoreError:  # an unreadable store says nothing either way
            continue
        if (ds.get("path") or "").rstrip("/").endswith("sample_corpus"):
            return True
    return False


def run_fits(rows, d, args):
    """The fits: the three forms on all data; per model, the floors at K = 1 and at the largest K (H1: at
    fixed K every form has the same floors, so 'shared' without an N term); dilution on <= 4 epochs."""
    fits = []

    def add(dd, form, label):
        if len(dd["L"]) < len(dd["categories"]) + 4 or len(np.unique(dd["D"])) < 2:
            print(f"fit {form} [{label}]: too few complete runs or budgets, skipped")
            return None
        f = fit_law(dd, form, n_boot=args.n_boot, seed=args.seed, jobs=args.jobs,
                    with_n=None if label == "all" or label.startswith("epochs") else False)
        f["subset"] = label
        if label != "all":
            f["data_filter"] = f"{DATA_FILTER}, and {label}"
        fits.append(f)
        return f

    for form in FORMS:
        add(d, form, "all")
    h1_pairs = []
    for model in sorted({r["model"] for r in used(rows)}, key=str):
        Ks = sorted({r["K"] for r in used(rows) if r["model"] == model and not r["tagged"]})
        if len(Ks) > 1 and Ks[0] == 1:
            a = add(fit_data(rows, lambda r, m=model: r["model"] == m and r["K"] == 1), "shared", f"{model}, K == 1")
            b = add(fit_data(rows, lambda r, m=model, k=Ks[-1]: r["model"] == m and r["K"] == k), "shared",
                    f"{model}, K == {Ks[-1]}")
            if a and b:
                h1_pairs.append((model, a, b))
    few = fit_data(rows, lambda r: r["epochs_category"] is not None and r["epochs_category"] <= 4)
    if len(few["L"]) < len(d["L"]):
        add(few, "dilution", "epochs_category <= 4")
    return fits, h1_pairs


def analyse(runs, out, args):
    out.mkdir(parents=True, exist_ok=True)
    rows = run_rows(runs)
    write_csv(rows, out / "runs.csv")
    n_used = sum(1 for r in runs if not r["excluded"])
    print(f"{len(runs)} runs ({n_used} used, {len(runs) - n_used} excluded), {len(rows)} rows -> {out / 'runs.csv'}")
    for c, t in thin_categories(rows).items():
        print(f"warning: category {c} has a thin test split ({t['papers']} papers, {t['tokens']:,} tokens): its loss is noisy")
    d = fit_data(rows)
    fits, h1_pairs = run_fits(rows, d, args)
    main = {f["form"]: f for f in fits if f["subset"] == "all"}
    with_n = bool(main) and next(iter(main.values()))["_with_n"]
    comparison = compare_forms(d, list(main), with_n, args.n_boot, args.seed) if len(main) == len(FORMS) else None
    sigma = noise_floor(rows, runs)
    diagnostics = {f: residual_diagnostics(fit, d, sigma[0]) for f, fit in main.items()}
    h1 = [dict(h1_floors(a, b, args.margin), model=m) for m, a, b in h1_pairs]
    h2 = k_contrast(rows, "in", args.n_boot, args.seed, args.margin, smaller_is_lower=False)
    h5 = k_contrast(rows, "out", args.n_boot, args.seed, args.margin, smaller_is_lower=True)
    x = extras.compute(rows, runs, main, args, cells_by_K(rows, "in"), equal_weight)  # issue 17
    gain = mixing_gain(rows, main.get("dilution"), args.n_boot, args.seed)
    pairs, h6 = identification_cost(runs, args.n_boot, args.seed)
    v3 = h3_verdict(main.get("dilution"), comparison, diagnostics.get("dilution"))
    verdicts = {
        "H1 floors": (h1[0]["verdict"], h1[0]["why"]) if len(h1) == 1 else
        (("undecided", "no K = 1 and larger-K fits to compare") if not h1 else
         ("; ".join(f"{h['model']}: {h['verdict']}" for h in h1), "; ".join(f"{h['model']}: {h['why']}" for h in h1))),
        "H2 loss vs K at fixed D": h2[1:], "H3 dilution law": v3, "H4 mixing gain": h4_verdict(gain),
        "H5 held-out categories": h5[1:],
        "H6 identification cost": ((h6[0]["verdict"] if len({t["verdict"] for t in h6}) == 1 else "undecided"),
                                   "; ".join(f"{t['model']} K={t['K']}: gap {t['gap']:+.4f} "
                                             + (_ci(t["ci95"]) if t["ci95"][0] is not None else
                                                f"(no interval from {t['pairs']} twin pair)")
                                             + f" vs bound {t['bound']:.4f}" for t in h6)) if h6 else
        ("undecided", "no tagged / untagged twin pairs"),
        "H7 Hilberg (exploratory)": extras.h7_verdict(x, ("undecided", "not analysed: needs compression curves per category")),
    }
    a = {"runs": runs, "rows": rows, "sample": is_sample_corpus(runs), "fits": fits, "comparison": comparison,
         "diagnostics": diagnostics, "sigma": sigma, "with_n": with_n, "h1": h1, "h2": h2, "h5": h5,
         "gain": gain, "h6": h6, "verdicts": verdicts, "k_effect": k_effect_statement(v3, main.get("dilution"), h2[1:]),
         "baselines": None, "plots": [], "extras": x}
    public = {"data_filter": DATA_FILTER, "sample_corpus": a["sample"],
              "runs": {"total": len(runs), "used": n_used,
                       "excluded": [{"run_id": r["run_id"], "reason": r["excluded"]} for r in runs if r["excluded"]]},
              "fits": [{k: v for k, v in f.items() if not k.startswith("_")} for f in fits],
              "comparison": comparison, "noise_floor": {"sd_log_loss": sigma[0], "df": sigma[1], "groups": sigma[2],
                              "replicate_groups": sigma[3], "status": "known" if sigma[0] else "unknown"},
              "diagnostics": diagnostics, "h1": h1, "h2": h2[0], "h4": gain, "h5": h5[0], "h6": h6,
              "h6_pairs": [{k: v for k, v in p.items() if k != "gap_by_position"} for p in pairs],
              "verdicts": {k: {"verdict": v, "why": w} for k, (v, w) in verdicts.items()}, **extras.public(x)}
    st.write_json_atomic(out / "fits.json", public, indent=1)
    for f in fits:
        ps = ", ".join(f"{k}={f['params'][k]['estimate']:.4g} {_ci(f['params'][k]['ci95'], 3)}"
                       for k in ("beta", "s") if k in f["params"])
        print(f"fit {f['form']:9s} [{f['subset']}]: converged={f['converged']} fit_error={f['fit_error']:.4f} {ps}")
    for h, (v, why) in verdicts.items():
        print(f"{h}: {v} — {why}")
    a["baselines"] = store_baselines(runs, out, args)
    a["plots"] = make_plots(a, d, main, pairs, out) + extras.plots(x, out)
    write_report(out / "report.md", a)
    print(f"wrote {out / 'report.md'} with {len(a['plots'])} figures")
    return out


def store_baselines(runs, out, args):
    if args.no_baselines:
        return None
    for sd in {r["config"].get("data_dir") for r in runs if not r["excluded"]}:
        try:
            b = __import__("baselines").store_baselines(st.Store(sd))
            st.write_json_atomic(out / "baselines.json", b, indent=1)
            return b
        except (st.StoreError, TypeError) as e:
            print(f"baselines skipped: {e}")
    return None


def make_plots(a, d, main, pairs, out):
    comparison = a["comparison"]
    best = main.get(preferred_form(comparison)) if comparison and preferred_form(comparison) else main.get("dilution")
    plots = []
    if used(a["rows"]):
        plot_loss_vs_tokens(a["rows"], best, d, out / "loss_vs_tokens.png")
        plots.append(("Loss vs tokens for each K", "loss_vs_tokens.png"))
        plot_loss_vs_K(a["rows"], out / "loss_vs_K.png")
        plots.append(("In-training and held-out loss vs K", "loss_vs_K.png"))
    if "dilution" in main:
        plot_collapse(main["dilution"], d, out / "collapse.png")
        plots.append(("Per-category loss vs effective tokens, collapsed with the fitted s", "collapse.png"))
    plot_positions(pairs, a["runs"], out / "loss_by_position.png")
    plots.append(("Loss by window position", "loss_by_position.png"))
    if a["baselines"]:
        plot_baselines(a["rows"], a["baselines"], out / "baselines.png")
        plots.append(("Model vs compressors (bits per byte)", "baselines.png"))
    return plots


def main(argv=None):
    p = st.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=st.HelpFormatter,
                                allow_abbrev=False)
    p.add_argument("sweep_dir", help="a sweep.py --out directory (or a train.py --output_dir)")
    p.add_argument("--n_boot", type=st.number(int, 0), default=1000, help="bootstrap resamples for the intervals (0: none)")
    p.add_argument("--seed", type=st.number(int, 0), default=0, help="bootstrap seed")
    p.add_argument("--jobs", type=st.number(int, 1), default=os.cpu_count() or 1, help="processes for the bootstrap refits")
    p.add_argument("--no_baselines", action="store_true", help="skip the store baselines")
    p.add_argument("--store_id", default=None, help="analyse only runs of this store (a prefix of its store_id)")
    p.add_argument("--sampling", default=None, help="analyse only runs of this sampling arm")
    p.add_argument("--eval_dtype", default=None, help="analyse only runs evaluated in this dtype")
    p.add_argument("--where", action="append", metavar="FIELD=VALUE",
                   help="analyse only runs with this run-defining value (repeatable), e.g. learning_rate=6e-4")
    p.add_argument("--per_group", action="store_true",
                   help="analyse each group of runs that share every run-defining value other than the design "
                   "axes (store, sampling, dtype, lr, betas, ...) on its own, into analysis/<group>/, and "
                   "write analysis/groups.md (validation loss by group)")
    p.add_argument("--margin", type=st.number(float, 0), default=0.02,
                   help="equivalence margin (nats): differences whose 95%% interval lies within it count as none")
    extras.add_arguments(p)  # issue 17: --hilberg, --cache_dir
    args = p.parse_args(argv)
    if args.n_boot < 0 or args.jobs < 1:
        st.die(f"--n_boot must be >= 0 and --jobs >= 1 (got {args.n_boot}, {args.jobs})")
    if not Path(args.sweep_dir).is_dir():
        st.die(f"{args.sweep_dir}: no such directory")
    runs = collect_runs(args.sweep_dir)
    if not runs:
        st.die(f"{args.sweep_dir}: no run directories")
    out = Path(args.sweep_dir) / "analysis"
    conflicts = _model_config_conflicts(runs)
    # which run-defining values differ between the sweep's groups: they name a group's directory
    differing = [f for i, f in enumerate(GROUP_FIELDS)
                 if len({group_of(r, conflicts)[i] for r in runs if not r["excluded"]}) > 1]
    want = {**{k: getattr(args, k) for k in ("store_id", "sampling", "eval_dtype")}, **parse_where(args.where)}
    chosen = [f"{k}-{v}" for k, v in want.items() if v is not None]
    runs = select_runs(runs, args, check_mix=not args.per_group)
    groups = sorted({group_of(r, conflicts) for r in runs if not r["excluded"]}, key=str)
    if not args.per_group:
        if chosen:  # a subset is another computation: its files go where --per_group puts that group's
            out = out / (group_label(groups[0], differing) if len(groups) == 1 else
                         "selected_" + "_".join(chosen).replace("/", "-"))
        return analyse(runs, out, args)
    summary = []
    for g in groups:
        label = group_label(g, differing)
        part = [dict(r, excluded=r["excluded"] or (None if group_of(r, conflicts) == g else
                                                    f"another group ({group_label(group_of(r, conflicts), differing)})"))
                for r in runs]
        print(f"--- group {label}")
        analyse(part, out / label, args)
        summary.append((label, [r for r in part if not r["excluded"]]))
    out.mkdir(parents=True, exist_ok=True)
    write_groups_table(summary, out / "groups.md", differing)
    return out


def write_groups_table(summary, path, differing):
    """groups.md: validation loss by group (arm) and K: what a P0 sweep exists for (choosing lr, beta2...)."""
    Ks = sorted({len(r["config"].get("categories") or []) for _, rs in summary for r in rs})
    L = ["# Groups analysed on their own", "", "Groups differ in: " + (", ".join(differing) or "nothing") + ". "
         "Final validation loss (summary.json, mean over the group's runs; runs without one are not counted) by K.", "",
         "| group | runs | " + " | ".join(f"val loss K={K}" for K in Ks) + " |", "|---|---|" + "---|" * len(Ks)]
    for label, rs in summary:
        cells = []
        for K in Ks:
            v = [r["summary"].get("final_val_loss") for r in rs if len(r["config"].get("categories") or []) == K]
            v = [x for x in v if _finite(x)]
            cells.append(f"{np.mean(v):.4f} ({len(v)})" if v else "–")
        L.append(f"| {label} | {len(rs)} | " + " | ".join(cells) + " |")
    Path(path).write_text("\n".join(L) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    st.cli(main)
