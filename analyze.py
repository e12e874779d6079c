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
  did not converge, are dropped and counted. Parameters at a bound of the optimiser are flagged. The fits
  no verdict reads (disjoint, shared, H1's separate-fit floors, <= 4 epochs) take --n_boot_descriptive (200).
- Model comparison: cross-validation over subset seeds (all runs of a seed are held out together; each
  fold keeps every budget, so the forms stay identified), the held-out error difference between two forms
  with a bootstrap interval over runs; "undecided" when it contains 0.
  The same cross-validation ranks three published mixing laws beside them (analysis/mixing.py: exponential,
  multiplicative, effective_data); forms the design cannot tell apart are said to be one law there, never ranked.
- Fit quality: residuals against the seed-to-seed noise floor (from replicate runs that differ only in
  their seeds, the category set compared as a set), by K, by budget and by K x budget, with a Bonferroni
  threshold; a misfit is said before any parameter table; without replicates it is "unknown".
- Verdicts: each hypothesis is supported / not supported / undecided by its falsifier in
  EXPERIMENT_PLAN.md, with the interval that decided it.
"""
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np

import store as st
# The work lives in analysis/, one concern per module (analysis/__init__.py lists them); this is the command line.
from analysis import hilberg, isoflop, mixing, transfer, transfer_report
from analysis.forms import CV_TOL, compare_forms, cv_errors, make_law
from analysis.h2ratio import h2_ratio
from analysis.hypotheses import (cells_by_K, h1_floors, h3_verdict, identification_cost, k_contrast,
                                 k_effect_statement, mixing_gain, verdict_table)
from analysis.floors import h1_offsets
from analysis.beta_by_k import beta_by_K
from analysis.law_data import DATA_FILTER, R_STAR, fit_data
from analysis.laws import FORMS, _ci, fit_law, minimize_starts
from analysis.repetition import fit_repetition, repetition_counts
from analysis.noise import noise_floor, residual_diagnostics
from analysis.plots import make_plots
from analysis.progress import Step, library_warnings_once, warn_once
from analysis.report import fits_json, thin_categories, write_groups_table, write_report
from analysis.runs import (GROUP_FIELDS, _model_config_conflicts, collect_runs, group_label, group_of,
                           is_sample_corpus, parse_where, run_rows, select_runs, used, write_csv)
from analysis.workers import close_pools


# ----------------------------------------------------------------------------------------------------
# main

# what --verdicts_only leaves out (the report says it in this line): nothing any verdict reads
SKIPPED = ("Skipped (--verdicts_only): the figures, the store baselines, the competing mixing laws (their "
           "cross-validation and comparison), the intervals of the disjoint and shared fits, the fit on <= 4 "
           "epochs, H1's separate-fit floor diagnostic, the transfer matrix, the IsoFLOP slices and H2's ratio against K^beta.")

def run_fits(rows, d, args):
    """The fits: the three forms on all data; per model, the floors at K = 1 and at the largest K (H1: at
    fixed K every form has the same floors, so 'shared' without an N term: a diagnostic, H1's verdict is the joint
    fit's, analysis/floors.py, on the data h1_data holds per model); dilution on <= 4 epochs."""
    fits = []

    def add(dd, form, label):
        if len(dd["L"]) < len(dd["categories"]) + 4 or len(np.unique(dd["D"])) < 2:
            print(f"fit {form} [{label}]: too few complete runs or budgets, skipped")
            return None
        # the verdicts read the intervals of dilution [all] (H3, H2's ratio) and of H1's joint fit only; the others
        # are descriptive (their tables, H1's separate-fit diagnostic): --n_boot_descriptive resamples, none
        # under --verdicts_only. The disjoint form's 1000 refits were ~40% of the smoke sweep's analysis.
        verdict = label == "all" and form == "dilution"
        n_boot = (args.n_boot if verdict else 0 if args.verdicts_only and label == "all" else
                  min(args.n_boot, args.n_boot_descriptive))
        with Step(f"fit {form} [{label}], {n_boot} resamples"):
            f = fit_law(dd, form, n_boot=n_boot, seed=args.seed, jobs=args.jobs,
                        with_n=None if label == "all" or label.startswith("epochs") else False,
                        what=f"bootstrap {form} [{label}]")
        f["subset"] = label
        if not verdict and n_boot < args.n_boot:
            f["bootstrap"]["descriptive"] = (f"{n_boot} resamples (--n_boot_descriptive): no verdict reads this "
                                             "fit's intervals")
        if n_boot and (label == "all" and not verdict or label.startswith("epochs")):
            # BENCHMARKS.md's coverage runs calibrate dilution [all] and H1's separate-fit floors, not these
            f["bootstrap"]["coverage"] = "not measured (BENCHMARKS.md): read these intervals as descriptive"
        if label != "all":
            f["data_filter"] = f"{DATA_FILTER}, and {label}"
        fits.append(f)
        return f

    for form in FORMS:
        add(d, form, "all")
    h1_pairs, h1_data = [], []
    # H1's floors where repetition is modelled: on effective tokens when any category is past one epoch
    rs = R_STAR if repetition_counts(d)["points"] else None
    on = f", effective tokens (R* = {R_STAR:g})" if rs else ""
    basis = f"effective tokens (R* = {R_STAR:g})" if rs else "tokens seen (no category past one epoch)"
    for model in sorted({r["model"] for r in used(rows)}, key=str):
        Ks = sorted({r["K"] for r in used(rows) if r["model"] == model and not r["tagged"]})
        if len(Ks) > 1 and Ks[0] == 1:
            # the verdict: one joint fit on all of the model's runs with a floor offset per category at the
            # largest K (analysis/floors.py); separate fits on K = 1 and on the largest K were too loose to decide
            h1_data.append((model, fit_data(rows, lambda r, m=model: r["model"] == m, r_star=rs), basis))
            if args.verdicts_only:
                continue
            # the old check, a diagnostic: floors of separate fits at K = 1 and at the largest K
            a = add(fit_data(rows, lambda r, m=model: r["model"] == m and r["K"] == 1, r_star=rs), "shared",
                    f"{model}, K == 1{on}")
            b = add(fit_data(rows, lambda r, m=model, k=Ks[-1]: r["model"] == m and r["K"] == k, r_star=rs), "shared",
                    f"{model}, K == {Ks[-1]}{on}")
            if a and b:
                h1_pairs.append((model, a, b))
    few = fit_data(rows, lambda r: r["epochs_category"] is not None and r["epochs_category"] <= 4)
    if len(few["L"]) < len(d["L"]) and not args.verdicts_only:
        add(few, "dilution", "epochs_category <= 4")
    return fits, h1_pairs, h1_data


def analyse(runs, out, args):
    """The whole analysis of one group of runs into `out`: runs.csv, fits.json, the figures, report.md."""
    out.mkdir(parents=True, exist_ok=True)
    rows = run_rows(runs)
    write_csv(rows, out / "runs.csv")
    n_used = sum(1 for r in runs if not r["excluded"])
    print(f"{len(runs)} runs ({n_used} used, {len(runs) - n_used} excluded), {len(rows)} rows -> {out / 'runs.csv'}")
    thin = thin_categories(rows)
    if thin:  # one line for all of them (it was one per category: 11 lines on the sample store)
        warn_once(f"{len(thin)} categor{'y has' if len(thin) == 1 else 'ies have'} a thin test split, so a noisy "
                  "loss: " + ", ".join(f"{c} ({t['papers']} papers, {t['tokens']:,} tokens)" for c, t in thin.items()))
    d = fit_data(rows)
    a, main, pairs = evaluate(runs, rows, d, args)
    st.write_json_atomic(out / "fits.json", fits_json(a, pairs, n_used), indent=1)
    print_summary(a["fits"], a["verdicts"])
    if not args.verdicts_only:
        a["baselines"] = store_baselines(runs, out, args)
        with Step("figures"):
            a["plots"] = (make_plots(a, d, main, pairs, out) + transfer_report.plots(a["transfer"], out) +
                          isoflop.plots(a["isoflop"], out))
    write_report(out / "report.md", a)
    print(f"wrote {out / 'report.md'} with {len(a['plots'])} figures")
    return out


def evaluate(runs, rows, d, args):
    """The fits, their comparison and diagnostics, and every hypothesis with its verdict: the analysis dict
    the report reads, the main fits by form, and the tagged / untagged twin pairs."""
    fits, h1_pairs, h1_data = run_fits(rows, d, args)
    main = {f["form"]: f for f in fits if f["subset"] == "all"}
    with_n = bool(main) and next(iter(main.values()))["_with_n"]
    comparison, mix = compare_all_forms(d, main, with_n, args)
    sigma = noise_floor(rows, runs)
    diagnostics = {f: residual_diagnostics(fit, d, sigma[0]) for f, fit in main.items()}
    mix = mixing.withhold_misfit(mix, diagnostics)  # no 'best' among forms the report calls misfits
    h1, h1_separate = h1_joint(h1_data, h1_pairs, args)
    repetition = fit_repetition(rows, main.get("dilution"), args.n_boot, args.seed, jobs=args.jobs)
    if repetition:
        fits.append(repetition["fit"])
    # one beta against one per K, on the tokens seen and (where repetition is modelled) on effective tokens
    beta_k = []
    if not args.verdicts_only:  # a diagnostic, no verdict reads it
        with Step("beta by K, jackknife over seed clusters" if args.n_boot else "beta by K, point estimates (--n_boot 0)"):
            beta_k = [b for b in ([beta_by_K(d, main["dilution"], args.n_boot, args.jobs)] if "dilution" in main else []) +
                      ([beta_by_K(fit_data(rows, r_star=repetition["r_star"]), repetition["fit"], args.n_boot, args.jobs)]
                       if repetition else []) if b]
    h2 = k_contrast(rows, "in", args.n_boot, args.seed, args.margin, smaller_is_lower=False)
    h5 = k_contrast(rows, "out", args.n_boot, args.seed, args.margin, smaller_is_lower=True)
    with Step("H7 (the other further analyses: skipped, --verdicts_only)" if args.verdicts_only else
              "further analyses (transfer matrix, H7, IsoFLOP, H2 ratio)"):
        x = further_analyses(rows, runs, main, args, sigma[0], sigma[1])
    gain = mixing_gain(rows, main.get("dilution"), args.n_boot, args.seed)
    pairs, h6 = identification_cost(runs, args.n_boot, args.seed)
    v3 = h3_verdict(main.get("dilution"), comparison, diagnostics.get("dilution"))
    verdicts = verdict_table(h1, h2, v3, gain, h5, h6)
    verdicts["H7 Hilberg (exploratory)"] = hilberg.h7_verdict(x["h7"], verdicts["H7 Hilberg (exploratory)"])
    a = {"runs": runs, "rows": rows, "sample": is_sample_corpus(runs), "fits": fits, "comparison": comparison,
         "diagnostics": diagnostics, "sigma": sigma, "with_n": with_n, "h1": h1, "h1_separate": h1_separate, "h2": h2, "h5": h5,
         "gain": gain, "h6": h6, "verdicts": verdicts, "k_effect": k_effect_statement(v3, main.get("dilution"), h2[1:]),
         "baselines": None, "plots": [], "mixing": mix, **x, "repetition": repetition, "beta_by_K": beta_k,
         "skipped": SKIPPED if args.verdicts_only else None}
    return a, main, pairs


def h1_joint(h1_data, h1_pairs, args):
    """H1 per model from the joint fit with floor offsets at the largest K (its verdict), with the separate
    fits' floor differences beside it as a diagnostic (none under --verdicts_only)."""
    separate = {m: h1_floors(a, b, args.margin) for m, a, b in h1_pairs}
    out = []
    for m, dd, basis in h1_data:
        with Step(f"H1 floor offsets [{m}], joint fit, cluster-robust intervals"):  # no resampling (floors.py)
            h = h1_offsets(dd, args.margin, args.n_boot, args.seed, model=m)
        h["basis"] = basis
        out.append(h)
    return out, [dict(v, model=m) for m, v in separate.items()]


def further_analyses(rows, runs, main, args, noise_log_sd=None, noise_df=None):
    """The analyses each sweep design supports or names as missing in one line: the transfer matrix t_ij
    (pair runs), H7's Hilberg exponents (cached compression curves), the IsoFLOP slices (several model sizes)
    and H2's second half (the growth with K against the disjoint prediction K^beta). Nothing here is slow
    by default: the matrix and the slices are power-law refits (seconds), the store is read only when
    analyze.py reads it anyway (no --no_baselines), H7's curves come from their cache unless --hilberg."""
    store, store_why = open_store(runs, args)
    if args.verdicts_only:  # H7's exploratory verdict is the only one of them that a verdict reads
        return {"transfer": None, "h7": hilberg.h7(rows, store, store_why, args), "isoflop": None, "h2_ratio": None}
    models = {r["model"]: r["n_params_nonembedding"] for r in rows if not r["excluded"]}
    fit = main.get("dilution") or main.get("disjoint")
    # the transfer matrix and the IsoFLOP optimum take their noise from the noise floor (replicate runs) where
    # the sweep has one: the residuals of 3-point curves are zeros (issue 21)
    return {"transfer": transfer.transfer_matrices(rows, store, store_why, args.n_boot, args.seed, noise_log_sd,
                                                       noise_df),
            "h7": hilberg.h7(rows, store, store_why, args),
            "isoflop": isoflop.isoflop_slices(rows, args.n_boot, args.seed, noise_log_sd),
            "h2_ratio": h2_ratio(cells_by_K(rows, "in"), fit, models, args.n_boot, args.seed)}


def open_store(runs, args):
    """(Store, None) for the first readable store of the included runs, else (None, why). Not opened with
    --no_baselines: that flag keeps analyze.py off the store."""
    if getattr(args, "no_baselines", False):
        return None, "--no_baselines (the store is not read)"
    why = "the runs name no store (data_dir)"
    for sd in sorted({str(r["config"].get("data_dir")) for r in runs if not r["excluded"] and r["config"].get("data_dir")}):
        try:
            return st.Store(sd), None
        except (st.StoreError, TypeError, OSError) as e:
            why = f"store {sd} not readable ({e})"
    return None, why


def compare_all_forms(d, main, with_n, args):
    """The dilution forms' comparison (H3) and the competing mixing laws' (issue 17), from one
    cross-validation: the three-form comparison is bit-identical to one computed alone."""
    if len(main) != len(FORMS):
        return None, None
    forms = list(main) + ([] if args.verdicts_only else list(mixing.FORMS))  # H3 reads the three forms' only
    with Step(f"cross-validation of {len(forms)} forms"):
        err = cv_errors(d, forms, with_n, jobs=args.jobs)
    comparison = compare_forms(d, list(main), with_n, args.n_boot, args.seed, err=err)
    if args.verdicts_only:
        return comparison, None
    def minimize(law, dd, starts, w=None, tol=(1e-15, 1e-12), scale=None):  # _minimize, starts in the workers
        return minimize_starts(law, dd, starts, args.jobs, w, tol, scale)
    with Step("mixing laws: point fits and equivalences on the design"):
        fits_all, equiv = mixing.equivalences(d, forms, with_n, make_law, minimize, CV_TOL,
                                              {f: fit["_theta"] for f, fit in main.items()})
    mix = mixing.judge(compare_forms(d, forms, with_n, args.n_boot, args.seed, err=err), equiv, fits_all,
                       d["categories"])
    print(f"mixing laws: {mix['verdict']}")
    return comparison, mix


def print_summary(fits, verdicts):
    for f in fits:
        ps = ", ".join(f"{k}={f['params'][k]['estimate']:.4g} {_ci(f['params'][k]['ci95'], 3)}"
                       for k in ("beta", "s") if k in f["params"])
        print(f"fit {f['form']:9s} [{f['subset']}]: converged={f['converged']} fit_error={f['fit_error']:.4f} {ps}")
    for h, (v, why) in verdicts.items():
        print(f"{h}: {v} — {why}")


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


def main(argv=None, own_sigterm=False):
    """The command line (below, run); own_sigterm: the shell entry (cli) stops on SIGTERM in one line, an
    in-process caller (design.py, the tests) keeps its own SIGTERM handling. With one BLAS thread: the fits
    are small L-BFGS-B problems, and OpenBLAS threads made each 35-80x dearer in CPU on a 2-core machine
    (notes.md)."""
    import scipy.optimize  # noqa: F401 -- scipy's own OpenBLAS must be loaded for the limit to reach it
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1, user_api="blas"), workers_end_with_us(own_sigterm), library_warnings_once():
        return run(argv)


class Terminated(Exception):
    pass


@contextlib.contextmanager
def workers_end_with_us(own_sigterm=True):
    """SIGTERM (a scheduler's or `timeout`'s stop) and Ctrl-C end the analysis with its bootstrap workers:
    left alone, the pool's spawned processes outlived their parent. SIGTERM ends in one line, exit 143."""
    def on_term(signum, frame):
        raise Terminated()
    # only for the shell: in design.py's pool workers, taking SIGTERM over made pool.terminate() one failed
    # simulation, and the worker went on while design.py waited for it (a hang)
    own = own_sigterm and threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, on_term) if own else None
    try:
        yield
    except Terminated:
        close_pools()
        print("analyze.py: stopped by SIGTERM; its bootstrap workers are stopped too, and the analysis directory "
              "may be incomplete", file=sys.stderr)
        raise SystemExit(143) from None
    except BaseException:  # Ctrl-C, an error: the workers go first, then it goes on as it would (an in-process
        close_pools()      # caller such as design.py must still see Ctrl-C as Ctrl-C: cli() says the line)
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def run(argv=None):
    p = st.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=st.HelpFormatter,
                                allow_abbrev=False)
    p.add_argument("sweep_dir", help="a sweep.py --out directory (or a train.py --output_dir)")
    p.add_argument("--n_boot", type=st.number(int, 0), default=1000, help="bootstrap resamples for the intervals (0: none)")
    p.add_argument("--n_boot_descriptive", type=st.number(int, 0), default=200,
                   help="resamples (at most --n_boot) for the fits no verdict reads: the disjoint and shared forms, "
                   "H1's separate-fit floors, the fit on <= 4 epochs")
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
    p.add_argument("--verdicts_only", action="store_true",
                   help="compute only what the verdicts read: " + SKIPPED.split(": ", 1)[1])
    p.add_argument("--margin", type=st.number(float, 0), default=0.02,
                   help="equivalence margin (nats): differences whose 95%% interval lies within it count as none")
    hilberg.add_arguments(p)  # --hilberg, --cache_dir (H7's compression curves)
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


def cli():
    """The shell's entry: Ctrl-C ends in one line, exit 130, and the line is true of analyze.py (runs.csv and
    report.md are written in place), unlike store.cli's generic 'nothing half-written is left behind'."""
    try:
        main(own_sigterm=True)
    except KeyboardInterrupt:
        print("analyze.py: stopped by Ctrl-C; its bootstrap workers are stopped too, and the analysis directory "
              "may be incomplete", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    st.cli(cli)
