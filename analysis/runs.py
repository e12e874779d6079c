"""Collecting runs into a table: every run directory under a sweep, used or excluded with its reason; the
run-defining values that are not design axes (runs differing in one are never pooled), the selection by
--store_id / --sampling / --eval_dtype / --where, and the run table (one row per run and category, runs.csv)."""
import csv
import json
import math
from pathlib import Path

import numpy as np

import store as st

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


# ----------------------------------------------------------------------------------------------------
# collecting runs: every run directory is counted, included or excluded with a reason

def _read(path):
    """(object, None) for a readable JSON file; (None, 'missing') or (None, 'corrupt ...') otherwise."""
    p = Path(path)
    if not p.is_file():
        return None, "missing"
    try:
        obj = json.loads(p.read_text())
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, or UnicodeDecodeError (not UTF-8)
        return None, f"corrupt {p.name} ({type(e).__name__})"
    if not isinstance(obj, dict):  # a null, list or string where train.py writes an object: said, not a crash
        return None, f"{p.name} is not a JSON object"
    return obj, None


def _finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def metrics_note(run_dir):
    """None, or a note naming the lines of the run's metrics.jsonl that do not parse (a line cut mid-write by a
    kill or a full disk): those rows are missing from its curves and its val_loss/<category>."""
    p = Path(run_dir) / "metrics.jsonl"
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError):
        return None if not p.exists() else "metrics.jsonl is unreadable (no curves)"
    lines = text.splitlines()
    bad = []
    for i, line in enumerate(lines, 1):
        try:
            json.loads(line)
        except json.JSONDecodeError:
            bad.append(i)
    if not bad:
        return None
    cut = bad[-1] == len(lines) and not text.endswith("\n")
    where = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
    return (f"metrics.jsonl: {len(bad)} of {len(lines)} lines unreadable (line {where}"
            + ("; the last cut mid-line" if cut else "") + "): those rows are missing from the curves")


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
        elif not test.get("per_category") or not isinstance(test["per_category"], dict):
            r["excluded"] = "test_results.json has no categories"
        else:
            bad = [c for c, v in test["per_category"].items() if not (isinstance(v, dict) and _finite(v.get("loss")))]
            if bad:
                r["excluded"] = f"non-finite test loss ({', '.join(bad)})"
        r["note"] = metrics_note(rd)  # a used run stays used: its results do not come from metrics.jsonl
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


def corpora(runs):
    """[(source, papers)] of the runs' stores, from their meta.json: source is the local folder's name
    (e.g. sample_corpus, arxiv_abstracts_subset) or the hub id; unreadable stores are left out."""
    out = []
    for data_dir in sorted({r["config"].get("data_dir") for r in runs if r["config"].get("data_dir")}):
        try:
            meta = st.read_meta(data_dir) or {}
        except st.StoreError:  # an unreadable store says nothing either way
            continue
        if not isinstance(meta, dict) or not meta:  # no store here (or a meta.json that is no JSON object)
            continue
        ds = meta.get("dataset")
        ds = ds if isinstance(ds, dict) else {"name": ds} if isinstance(ds, str) else {}
        source = (Path(ds["path"].rstrip("/")).name if isinstance(ds.get("path"), str) and ds["path"].strip("/")
                  else ds.get("name"))
        # a readable store whose meta.json names no dataset is still a store: say so, not "no readable store"
        source = source or f"unnamed ({data_dir}/meta.json names no dataset)"
        counts = meta.get("counts") if isinstance(meta.get("counts"), dict) else {}
        out.append((source, sum((c.get("papers") or 0) for c in counts.values() if isinstance(c, dict))))
    return out


def is_sample_corpus(runs):
    """Whether the runs' store was built from the shipped sample corpus (template text)."""
    return any(source == "sample_corpus" for source, _ in corpora(runs))


# ----------------------------------------------------------------------------------------------------
# groups and selection: runs that differ in a run-defining value other than the design axes are never pooled

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


# ----------------------------------------------------------------------------------------------------
# the run table: one row per run and category (runs.csv)

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
