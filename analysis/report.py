"""report.md, fits.json and groups.md. report.md: what the data can show first, the verdicts, fit quality before any parameter
table, then the hypotheses' tables, the residual diagnostics, loss against K, the figures and the store
baselines."""
import math
from pathlib import Path

import numpy as np

from analysis import hilberg, isoflop, mixing, transfer, transfer_report
from analysis.h2ratio import h2_lines
from analysis.hypotheses import MIN_STEPS_H4, macro, run_level
from analysis.law_data import DATA_FILTER
from analysis.laws import _ci, _fmt
from analysis.runs import _finite, corpora, group_of, used

THIN_PAPERS, THIN_TOKENS = 10, 20_000  # test split per category below which its loss is flagged as noisy
SAMPLE_CORPUS_NOTE = (
    "**What this sweep can and cannot show.** It trains on the shipped sample corpus (`data/sample_corpus`: "
    "template texts written for this project, a few dozen papers), with budgets of a few thousand tokens "
    "(a few optimizer steps). It checks that the pipeline runs end to end — training, exact evaluation, "
    "fits, intervals, report. Its numbers say nothing about arXiv text or about the hypotheses: every "
    "verdict below is about template text and a handful of steps.")
ABSTRACTS_NOTE = (
    "**What this sweep can and cannot show.** It trains on real arXiv text: the titles and abstracts of {papers:,} "
    "papers in 11 categories (`data/arxiv_abstracts_subset`, cut from arXiv's metadata as archived in "
    "staeiou/arxiv_archive, CC0; see its NOTICE.md), not the full papers of ccdv/arxiv-classification that the "
    "study runs on, with budgets of a few thousand tokens (a few optimizer steps). It checks the pipeline end to "
    "end on real scientific English; its numbers are not the study's, and every verdict below is about a "
    "handful of steps on abstracts.")


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
    stores = corpora(runs)
    if sample:
        L += [SAMPLE_CORPUS_NOTE, ""]
    elif any(src == "arxiv_abstracts_subset" for src, _ in stores):
        L += [ABSTRACTS_NOTE.format(papers=sum(n for src, n in stores if src == "arxiv_abstracts_subset")), ""]
    groups = sorted({group_of(r)[:3] for r in inc}, key=str)
    budgets = sorted({r["token_budget_planned"] for r in used(rows)})
    L += ["## Data", "",
          f"{len(runs)} run directories: {len(inc)} used, {len(exc)} excluded (listed below). "
          f"Fits use {DATA_FILTER}.",
          "Store / sampling / evaluation dtype: " + "; ".join(f"{str(g[0])[:12]} / {g[1]} / {g[2]}" for g in groups) + ".",
          f"Models: {', '.join(sorted({str(r['model']) for r in used(rows)}))}; K: "
          f"{', '.join(map(str, sorted({r['K'] for r in used(rows)})))}; planned budgets: "
          f"{', '.join(f'{b:,.0f}' for b in budgets)}.",
          "Corpus: " + ("; ".join(f"{src} ({n:,} papers)" for src, n in stores) or "unknown (no readable store)") + ".",
          ""]
    thin = thin_categories(rows)
    if thin:
        L += ["**Thin test sets**: " + "; ".join(f"{c}: {t['papers']} papers, {t['tokens']:,} tokens" for c, t in thin.items())
              + f" (below {THIN_PAPERS} papers or {THIN_TOKENS:,} tokens): a few papers' quirks move these "
              "categories' losses by more than the effects measured here; read them with care.", ""]
    if exc:
        L += ["### Excluded runs", "", "| run | reason |", "|---|---|"]
        L += [f"| {r['run_id']} | {r['excluded']} |" for r in exc]
        L.append("")
    noted = [r for r in runs if r.get("note")]  # e.g. a metrics.jsonl cut mid-line (analysis.runs.metrics_note)
    if noted:
        L += ["### Notes", "", "| run | note |", "|---|---|"] + [f"| {r['run_id']} | {r['note']} |" for r in noted] + [""]
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
        L += ["", f"Family: the {len(comparison['pairs'])} pairs, Holm; 'better' only after Holm.", "",
              "| A vs B | MSE(A) − MSE(B) | 95% CI | p | better |", "|---|---|---|---|---|"]
        L += [f"| {p['a']} vs {p['b']} | {_fmt(p['mse_difference'], 3)} | {_ci(p['ci95'], 3)} | "
              f"{_fmt(p.get('p'), 3)} | {p['better']} |" for p in comparison["pairs"]]
    L += ["", "## Fitted laws", "",
          "| form | data | formula | converged | fit error (RMSE log L) | points | runs | bootstrap drawn: used / dropped |",
          "|---|---|---|---|---|---|---|---|"]
    for f in fits:
        b = f["bootstrap"]
        L.append(f"| {f['form']} | {f['subset']} | `{f['formula']}` | {f['converged']} | {_fmt(f['fit_error'])} | "
                 f"{f['n_points']} | {f['n_runs']} | {b.get('requested', '?')} drawn: {b['used']} / "
                 f"{b['dropped_missing_category']} missing a category, {b['dropped_not_converged']} not converged |")
    for f in fits:
        L += ["", f"### {f['form']} ({f['subset']})", ""]
        # a fit that took --n_boot_descriptive resamples says so above its intervals (fits.json says it too)
        L += [f"Bootstrap: {f['bootstrap']['descriptive']}.", ""] if f["bootstrap"].get("descriptive") else []
        L += [f"Coverage of these intervals: {f['bootstrap']['coverage']}.", ""] if f["bootstrap"].get("coverage") else []
        jk = f["bootstrap"].get("jackknife")
        L += [f"95% CI: {jk['method']} ({jk['units']} units, {jk['not_converged']} refits not converged).", ""] \
            if jk else []
        L += ["| parameter | estimate | 95% CI | note |", "|---|---|---|---|"]
        for k, v in f["params"].items():
            note = "; ".join(x for x in (v.get("why") if not v.get("identified", True) or v["ci95"][0] is None else None,
                                         v.get("note"),
                                         f"at the optimiser's {v['at_bound']} bound" if v.get("at_bound") else None) if x)
            est = _fmt(v["estimate"]) if v.get("identified", True) else "not identified"
            L.append(f"| {k} | {est} | {_ci(v['ci95'])} | {note} |")
    return L


def _repetition_section(rep, beta_k):
    """Repetition (issue 22): how much data is past one epoch, what the effective-token law changes, how
    much it leans on R*; and one beta against one per K, as a finding."""
    L = []
    if rep:
        c = rep["counts"]
        L += ["", "## Repetition: the dilution law on effective tokens", "",
              f"{c['points']} of {c['of_points']} (run, category) points in {c['runs']} of {c['of_runs']} runs are past "
              f"one epoch (at most {_fmt(c['max_epochs'], 3)} epochs; categories: {', '.join(c['categories'])})"
              + (f"; {c['epochs_unknown']} points have no epoch count and count every token once"
                 if c["epochs_unknown"] else "")
              + f". Effective tokens: {rep['rule']}; R* = {rep['r_star']:g} fixed (not fitted; the rows below "
              "halve and double it). H1's floors are compared on effective tokens.", "",
              "| parameter | tokens seen | 95% CI | effective tokens | 95% CI |", "|---|---|---|---|---|"]
        before = rep["before"] or {}
        for k, v in rep["after"].items():
            b = before.get(k, {})
            L.append(f"| {k} | {_fmt(b.get('estimate'))} | {_ci(b.get('ci95'))} | {_fmt(v['estimate'])} | {_ci(v['ci95'])} |")
        keys = list(rep["sensitivity"][0]["params"])
        L += ["", "Sensitivity to R* (point estimates; the Huber objective is a coarse profile of R*):", "",
              "| R* | objective | fit error | " + " | ".join(keys) + " |", "|---" * (len(keys) + 3) + "|"]
        L += [f"| {r['r_star']:g} | {_fmt(r['objective'])} | {_fmt(r['fit_error'])} | "
              + " | ".join(_fmt(r["params"].get(k)) for k in keys) + " |" for r in rep["sensitivity"]]
    for b in beta_k or []:
        L += ["", f"## Beta by K ({b['of_fit']}, s fixed at {b['s_fixed']:.3g})", "", f"**{b['finding']}.**", "",
              "| K | beta_K | 95% CI | points |", "|---|---|---|---|"]
        L += [f"| {r['K']} | {_fmt(r['estimate'], 3)} | {_ci(r['ci95'], 3)} | {r['n_points']} |" for r in b["betas"]]
        L += ["", f"Huber objective: one beta {_fmt(b['objective_one_beta'])}, beta per K {_fmt(b['objective_beta_by_K'])} "
              f"({b['extra_parameters']} more parameters). "
              + (f"Intervals: {b['jackknife']['method']}, over {b['jackknife']['units']} seed clusters; coverage "
                 "on fabricated P1 sweeps in BENCHMARKS.md (Session 23, beta by K)." if b.get("jackknife") else
                 "No intervals (--n_boot 0).")]
        L += [f"- K = {r['K']}: {r['note']}" for r in b["betas"] if r.get("note")] + \
            ([f"- difference: {b['difference']['note']}"] if b["difference"].get("note") else [])
    return L


def _diag_section(diagnostics, sigma_info):
    sigma, df, n, groups = sigma_info
    L = ["", "## Residual diagnostics", "",
         (f"Noise floor (seed-to-seed SD of log test loss among replicate runs — the same run-defining values "
          f"but the seeds, the category set compared as a set — {len(groups)} replicate sets ({n} category "
          f"groups), {df} degrees of freedom): {sigma:.4f}." if sigma else
          "No replicate runs (runs that differ only in their seeds): the noise floor is **unknown**, so no fit "
          "can be called good."),
         ("Replicate kinds that entered: " + ", ".join(sorted({g.get("kind", "?") for g in groups}))
          + ("" if any(g.get("kind") != "init seed only" for g in groups) else
             " — init-seed replicates share their data order, so this floor misses data-order noise and the "
             "misfit threshold is too strict") + ". " if groups else "")
         + ("Replicate sets: " + "; ".join(f"{g['model']} K={g['K']} D={g['budget']:,.0f}: {len(g['runs'])} runs "
                                          f"({g['df']} df, {g.get('kind', '?')})" for g in groups[:20])
          + (f"; … {len(groups) - 20} more (fits.json)" if len(groups) > 20 else "") + ".") if groups else "",
         "Mean residual = mean of log(prediction) − log(observation); z against the noise floor.", ""]
    for form, dg in diagnostics.items():
        L += [f"### {form}", "", "| by | cell | mean residual | runs | z |", "|---|---|---|---|---|"]
        for c in dg["cells"]:
            cell = ", ".join(f"{v:,.0f}" for v in c["cell"])
            L.append(f"| {c['by']} | {cell} | {c['mean_residual']:+.4f} | {c['n_runs']} | {_fmt(c['z'], 3)} |")
        L.append("")
    return L


def _h1_lines(h1, sep):
    """H1: the joint fit's floor offsets per model, and the separate fits' floors as a diagnostic."""
    L = []
    for h in h1:
        m = h.get("mean")
        L += ["", f"## H1: floors E_c at K = {h.get('K_max')} against the other K ({h['model']})", "",
              f"One joint fit on all the model's runs ({h.get('basis')}): `{h.get('law')}`; each offset delta_c's "
              f"interval a t interval over seed clusters ({h.get('clusters_at_K_max', '–')} at K = {h.get('K_max')}: "
              f"{h.get('p_method', '')}). {h.get('test')}. Equivalence "
              f"margin ±{h['margin']} nats: **{h['verdict']}** — {h['why']}.", "",
              "| category | floor offset | 90% CI (TOST) | 95% CI | p | rejected (Holm) | note |",
              "|---|---|---|---|---|---|---|"]
        L += [f"| {r['category']} | {r['difference']:+.4f} | {_ci(r['ci90'])} | {_ci(r['ci95'])} | {r['p']:.3f} | "
              f"{'–' if r['holm_rejected'] is None else r['holm_rejected']} | "
              f"{'at the optimiser bound' if r.get('at_bound') else '' if r.get('identified', True) else 'not identified'} |"
              for r in h['table'] + ([dict(m, category=f"**mean of {m['n_categories']}**")] if m else [])]
    for h in sep:  # the old check, kept as a diagnostic: floors of two separate fits (too loose to decide H1)
        L += ["", f"### H1 diagnostic: floors of separate fits, {h['subsets'][0]} vs {h['subsets'][1]} ({h['model']})", "",
              f"Not the verdict (the joint fit above is): the separate fits' check would say {h['verdict']} — {h['why']}.",
              "", "| category | E_c difference | 95% CI | p | rejected (Holm) |", "|---|---|---|---|---|"]
        L += [f"| {r['category']} | {r['difference']:+.4f} | {_ci(r['ci95'])} | {r['p']:.3f} | "
              f"{'–' if r['holm_rejected'] is None else r['holm_rejected']} |" for r in h['table']]
    return L


def _hypothesis_sections(h1, h2, h5, gain, h6, h2_extra=(), sep=()):
    L = []
    L += _h1_lines(h1, sep)
    for name, (table, v, why), lab in (("H2: in-training loss against K", h2, "in-training"),
                                      ("H5: held-out loss against K", h5, "held-out")):
        if table:
            L += ["", f"## {name}", "", f"**{v}** — {why}.", "",
                  "Categories weighted equally (replicates averaged within subset and category first), over the "
                  "categories both K share. Interval (analysis/inference.py): two-way over categories and seed "
                  "clusters, both sides' noise, Cochran-Cox t; none from fewer than 2 seed clusters "
                  f"a side. Family: the {len(table)} budgets, Holm — 'not supported' needs a Holm rejection with "
                  "the opposite sign; 'supported' needs every budget's interval on the predicted side.", "",
                  f"| model | D (planned) | K low → high | {lab} macro loss difference | 95% CI | p | rejected (Holm) | "
                  "runs | categories | note |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
            L += [f"| {t['model']} | {t['D']:,.0f} | {t['K_low']} → {t['K_high']} | {t['difference']:+.4f} | "
                  f"{_ci(t['ci95'])} | {_fmt(t.get('p'), 3)} | "
                  f"{'–' if t.get('holm_rejected') is None else t['holm_rejected']} | "
                  f"{t['n_runs'][0]} / {t['n_runs'][1]} | {t['n_categories']} | {t['note'] or ''} |"
                  for t in table]
            L += list(h2_extra) if lab == "in-training" else []  # H2's second half (analysis/h2ratio.py)
    if gain["table"] or gain["missing"]:
        L += ["", "## H4: mixing gain at equal tokens per category", "",
              "G = L_c(K = 1, d) − L_c(K, K·d), paired on the planned budget (within 1%); mean over categories and "
              "seeds (init-seed replicates averaged first), 95% CI a two-way t interval over categories and mixed seed "
              "clusters (inference.contrast); > 0: mixing helped. The mixed run trains on K·d tokens, so it takes K "
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
              "95% CI: t interval over the twin pairs (n − 1 df); none from one pair.", "",
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
    L += [a["skipped"], ""] if a.get("skipped") else []
    L += _verdict_section(a["verdicts"])
    L += _fit_sections(a["fits"], a["comparison"], a["diagnostics"], a["with_n"])
    L += mixing.report_lines(a.get("mixing"))
    L += _repetition_section(a.get("repetition"), a.get("beta_by_K"))
    L += _hypothesis_sections(a["h1"], a["h2"], a["h5"], a["gain"], a["h6"], h2_lines(a.get("h2_ratio")),
                               a.get("h1_separate") or ())
    L += _diag_section(a["diagnostics"], a["sigma"])
    L += _loss_vs_K_table(a["rows"])
    # the transfer matrix, H7, the IsoFLOP slices: one line each when the sweep has none (None: not computed)
    L += transfer_report.report_section(a["transfer"]) if a.get("transfer") else []
    L += hilberg.report_section(a["h7"]) if a.get("h7") else []
    L += isoflop.report_section(a["isoflop"]) if a.get("isoflop") else []
    L += ["", "## Figures", ""]
    for title, name in a["plots"]:
        L += [f"### {title}", "", f"![{title}]({name})", ""]
    L += _baseline_section(a["baselines"])
    L += ["", "Files: `runs.csv` (one row per run and category; excluded runs marked), `fits.json`, `baselines.json`, "
          "the PNG figures.", ""]
    Path(path).write_text("\n".join(L))


def fits_json(a, pairs, n_used):
    """fits.json: everything the report states, without the bootstrap draws and residual arrays."""
    runs, sigma, verdicts = a["runs"], a["sigma"], a["verdicts"]
    return {"data_filter": DATA_FILTER, "sample_corpus": a["sample"],
            "runs": {"total": len(runs), "used": n_used,
                     "excluded": [{"run_id": r["run_id"], "reason": r["excluded"]} for r in runs if r["excluded"]]},
            "fits": [{k: v for k, v in f.items() if not k.startswith("_")} for f in a["fits"]],
            "comparison": a["comparison"], "mixing_laws": a["mixing"], "noise_floor": {"sd_log_loss": sigma[0], "df": sigma[1], "groups": sigma[2],
                                                           "replicate_groups": sigma[3],
                                                           "status": "known" if sigma[0] else "unknown"},
            "diagnostics": a["diagnostics"],
            "dilution_repetition": ({k: v for k, v in a["repetition"].items() if k != "fit"} if a.get("repetition")
                                    else None),
            "beta_by_K": a.get("beta_by_K") or [], "h1": a["h1"],
            "h1_separate_fits": a.get("h1_separate") or [], "h2": a["h2"][0], "h4": a["gain"], "h5": a["h5"][0],
            "h6": a["h6"], "h6_pairs": [{k: v for k, v in p.items() if k != "gap_by_position"} for p in pairs],
            "verdicts": {k: {"verdict": v, "why": w} for k, (v, w) in verdicts.items()},
            **json_ready({"transfer": transfer.public(a["transfer"]) if a["transfer"] else None,
                          "h7": hilberg.public(a["h7"]), "isoflop": a["isoflop"], "h2_ratio": a["h2_ratio"]}),
            **({"skipped": a["skipped"]} if a.get("skipped") else {})}


def json_ready(v):
    """JSON-ready: numpy scalars to floats, +-inf to strings, tuples keys (i, j) to 'i|j'."""
    if isinstance(v, dict):
        return {("|".join(map(str, k)) if isinstance(k, tuple) else str(k)): json_ready(w) for k, w in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [json_ready(w) for w in v]
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(v) else (str(float(v)) if not math.isnan(v) else None)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


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
