"""
The design check: can this plan decide its hypotheses? For exactly the runs a plan file expands to,
fabricate per-category test losses from a known law plus noise (simulate.py) many times, analyse each
fabricated sweep with analyze.py's own fits and verdicts, and report per hypothesis how often the verdict is
correct, wrong, or undecided (the truth of each hypothesis follows from the law: truths()), the expected
95% interval widths of s, beta and the H4 gains, and which small change of the plan (more seeds, another
budget) would decide what stays undecided.

    python design.py plans/p1_core_31m.yaml --law "B=410.7,beta=0.28,s=0.5,E=3.9" --noise 0.01 --n_sim 50 --out design/p1
    python design.py plans/p1_core_31m.yaml --law sweeps/ngram_smoke/analysis/fits.json --out design/p1_kn
    python design.py plans/p1_core_31m.yaml --law "..." --repetition 25e6,15.4 --noise_model independent --noise 0.01 --out DIR

The law: L_c = E_c + B * (D_c^s * D^(1-s))^(-beta) [+ A * N^(-alpha)] (EXPERIMENT_PLAN.md, H3); `E=` sets
every category's floor, `E[math.AC]=` one category's; the N term (`A=..,alpha=..`) matters only when the
plan has several model sizes; `--repetition U,R*` (or U=, Rstar=) evaluates it on effective tokens of finite
category pools (simulate.py). Or a pilot's fits.json (a KN pilot sweep's or P0's): its dilution fit, and its
measured seed-to-seed noise unless --noise is given. The noise: simulate.py's clustered model
(plans/noise_model_abstracts.json, or --noise_model FILE | independent); --noise is its TOTAL SD of log test
loss per run and category, the fractions kept.

Speed: the simulations run in --jobs processes (one BLAS thread each), and each analysis computes only what
the verdicts read (verdicts_analysis: no figures, no competing mixing laws, no bootstrap of fits no verdict
reads); its verdicts equal analyze.py's on the same sweep (tests/test_design.py checks it).

What it can and cannot say: every simulated sweep obeys the law exactly (no misfit, no outliers, no failed
runs), so probabilities of a correct verdict are upper bounds for real data at that noise; held-out losses
carry no K effect (H5 is not checked), and P1 has no tagged twins (H6). Each estimate is from n_sim
simulations: [..] is its exact (Clopper-Pearson) 95% interval.
"""
import contextlib
import copy
import dataclasses
import io
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import analyze
import simulate
import store as st
import sweep

HYPOTHESES = ("H1 floors", "H2 loss vs K at fixed D", "H3 dilution law", "H4 mixing gain")
DECIDE = 0.8  # a hypothesis "is decided by the plan" when at least this share of simulations gets it right
WRONG = 0.05  # ... and at most this share gets it wrong


@contextlib.contextmanager
def quiet_analysis():
    """analyze.py without its printing (stdout: the results, read here from fits.json; stderr: its
    progress), with one BLAS thread: scipy's L-BFGS-B calls OpenBLAS on vectors of ~15 numbers, and OpenBLAS's
    threads spinning on a shared 2-core machine made one fit ~35-80x slower in CPU time (20 s instead of
    0.26-0.6 s, measured; notes_s19design.md). analyze.py's bootstrap workers already run single-threaded;
    its own process did not. What is not computed (analyze.py --verdicts_only) is in simulate_plan."""
    import scipy.optimize  # noqa: F401 -- load scipy's own OpenBLAS first: a limit reaches only loaded libraries
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            threadpool_limits(1, user_api="blas"):
        yield


def summarise_fits(fits):
    """One simulation's outcome: verdicts, and the dilution fit's s and beta and the H4 cells with intervals."""
    v = {h: fits["verdicts"].get(h, {}).get("verdict", "missing") for h in HYPOTHESES}
    dil = next((f for f in fits["fits"] if f["form"] == "dilution" and f["subset"] == "all"), None)
    params = {}
    for k in ("s", "beta"):
        p = (dil or {}).get("params", {}).get(k)
        if p is not None:
            params[k] = {"estimate": p["estimate"], "ci95": p.get("ci95") or [None, None]}
    table = (fits.get("h4") or {}).get("table", [])
    several = len({t.get("model") for t in table}) > 1  # else one model's cells overwrote the other's
    cells = {(f"{t.get('model')} " if several else "") + f"K={t['K']}, d={t['d']:.3g}": {"estimate": t["G"], "ci95": t["ci95"]}
             for t in table}
    return {"verdicts": v, "params": params, "h4": cells}


def outcome(verdict):
    """supported / not supported / undecided (a per-model list counts as decided only if no model is undecided)."""
    if verdict in ("supported", "not supported"):
        return verdict
    if "undecided" in verdict or verdict == "missing":
        return "undecided"
    return "supported" if "not supported" not in verdict else "not supported"


def verdicts_analysis(root, n_boot, seed, margin=0.02):
    """The one analysis of a simulated sweep: analyze.py's own code, minus what no verdict reads (figures,
    the report's competing mixing laws: analyze.py --verdicts_only), silent, with one BLAS thread
    (quiet_analysis). Returns its fits.json."""
    with quiet_analysis():
        analyze.main([str(root), "--n_boot", str(n_boot), "--seed", str(seed), "--jobs", "1", "--no_baselines",
                      "--verdicts_only", "--margin", repr(margin)])
    return json.loads((Path(root) / "analysis" / "fits.json").read_text())


def one_simulation(job):
    """Fabricate simulation i of a plan, analyse it, summarise its verdicts; the sweep is removed after."""
    plan, law, noise, n_boot, workdir, seed, i, margin = job
    root = Path(workdir) / f"sim{i:03d}"
    shutil.rmtree(root, ignore_errors=True)
    simulate.fabricate(plan, law, noise, root, np.random.default_rng([seed, i]))
    try:
        result = summarise_fits(verdicts_analysis(root, n_boot, i, margin))
    except Terminated:  # SIGTERM in a one-process check (_sigterm): stop, not one more failed simulation
        raise
    except (SystemExit, Exception) as e:  # analyze.py refused the sweep (or failed): say so, count it undecided
        result = {"verdicts": {h: "missing" for h in HYPOTHESES}, "params": {}, "h4": {},
                  "error": f"analyze.py exited {e.code}" if isinstance(e, SystemExit) else f"{type(e).__name__}: {e}"}
    shutil.rmtree(root, ignore_errors=True)
    return result


def _worker_init():
    # Ctrl-C reaches the whole process group: the parent stops the pool; a worker's own traceback is noise
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def simulate_plan(plan, law, noise, n_sim, n_boot, workdir, seed=0, label="plan", jobs=1, margin=0.02):
    """n_sim fabricated sweeps of `plan`, each analysed by analyze.py, in `jobs` processes (a simulation's
    result does not depend on which process ran it: its noise and bootstrap seeds are its index); returns the
    per-simulation outcomes in order, and logs each to simulations.jsonl as it comes."""
    from tqdm import tqdm
    work = [(plan, law, noise, n_boot, workdir, seed, i, margin) for i in range(n_sim)]
    results = []
    import model  # noqa: F401 -- torch (simulate.py's Pythia sizes), once here: every forked worker inherits it
    import statsmodels.stats.multitest  # noqa: F401 -- Holm's import (~0.4 s), once, not once per worker
    pool = multiprocessing.get_context("fork").Pool(jobs, initializer=_worker_init) if jobs > 1 else None
    stop = signal.signal(signal.SIGTERM, _sigterm)  # SIGTERM: stop the workers too, never orphan them
    try:
        it = pool.imap(one_simulation, work) if pool else map(one_simulation, work)
        for i, r in enumerate(tqdm(it, total=n_sim, desc=f"simulating {label}", file=sys.stderr, unit="sweep")):
            results.append(r)
            with open(Path(workdir).parent / "simulations.jsonl", "a") as f:  # each outcome as it comes (a log)
                f.write(json.dumps(dict(r, label=label, sim=i)) + "\n")
        if pool:
            pool.close()
            pool.join()
    finally:
        if pool:
            pool.terminate()
        signal.signal(signal.SIGTERM, stop)
    return results


class Terminated(SystemExit):
    """SIGTERM: a SystemExit that one_simulation does not take for analyze.py refusing a sweep."""


def _sigterm(signum, frame):
    raise Terminated(143)


def _spread(values):
    """What an interval should cover: the 2.5-97.5 percentile range of the estimates over simulations (as
    3.92 SD, steadier than percentiles at small n_sim)."""
    return float(3.92 * np.std(values, ddof=1)) if len(values) > 1 else None


def _interval_stats(items):
    est = [x["estimate"] for x in items]
    widths = [x["ci95"][1] - x["ci95"][0] for x in items if x["ci95"][0] is not None]
    return {"n": len(est), "mean_estimate": float(np.mean(est)) if est else None,
            "mean_ci_width": float(np.mean(widths)) if widths else None, "n_with_interval": len(widths),
            "spread_of_estimates": _spread(est)}


def clopper_pearson(k, n):
    """Exact 95% interval of a probability seen k times in n simulations (meaningful at 0 of n and n of n too,
    where the standard error says nothing)."""
    from scipy.stats import beta
    return [float(beta.ppf(0.025, k, n - k + 1)) if k > 0 else 0.0,
            float(beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0]


def _reducible(law, K, D):
    """The law's reducible loss B X^-beta of a category in a balanced run of K categories and D tokens (its
    expected D_c = D / K; with finite pools on effective tokens, as simulate.make_run)."""
    Dc, D_all = D / K, D
    if "U" in law:
        Dc = simulate.effective_tokens(Dc, law["U"], law["Rstar"])
        D_all = K * Dc
    return law["B"] * (Dc ** law["s"] * D_all ** (1 - law["s"])) ** -law["beta"]


def h2_truth(law, plan, margin=None):
    """H2 as analyze.py decides it: the in-training loss at the largest K above that at the smallest, at every
    planned budget (of every model). Without finite pools that is s > 0 (the reducible part times K^(s beta));
    with them K = 1 repeats its category K times more, and at a large budget the loss can fall with K.
    analyze.py also says "not supported" when every budget's interval lies within +-margin: where the law's
    rise stays within the margin at every planned budget, that verdict is as true as "supported" (both are
    correct; only "undecided" misses)."""
    s = law["s"]
    cells = {}
    for _, p in (sweep.expand(plan) if plan is not None and ("U" in law or margin is not None) else []):
        cells.setdefault((p.get("model_config"), float(p["token_budget"])), set()).add(
            len(p["categories"]) if p.get("categories") else int(p["K"]))
    falls = [D for (_, D), Ks in sorted(cells.items(), key=lambda kv: kv[0][1]) if len(Ks) > 1 and
             _reducible(law, max(Ks), D) <= _reducible(law, min(Ks), D) * (1 + 1e-12)]
    if falls:
        return "not supported", (f"finite pools (U = {law['U']:.3g}): at D = {falls[0]:.3g} the loss does not rise "
                                 "with K (K = 1 repeats its category most)" if "U" in law else
                                 f"s = {s:g}: the loss does not rise with K at D = {falls[0]:.3g}")
    rise = {D: _reducible(law, max(Ks), D) - _reducible(law, min(Ks), D) for (_, D), Ks in cells.items() if len(Ks) > 1}
    if margin is not None and rise and max(rise.values()) <= margin:
        return "supported or not supported", (f"the loss rises with K by at most {max(rise.values()):.3g} nats at a "
                                              f"planned budget, within the ±{margin:g} margin: both verdicts hold")
    if cells:
        return "supported", f"s = {s:g} > 0: loss rises with K at every planned budget" + \
            (", repetition included" if "U" in law else "")
    return ("supported", f"s = {s:g} > 0: loss rises with K") if s > 0 else \
        ("not supported", "s = 0: no K effect at fixed D")


def truths(law, plan=None, margin=None):
    """{hypothesis: (true verdict, why)} under the fabricated law (EXPERIMENT_PLAN.md's statements). The law
    gives every category one floor E_c at every K, so H1 holds; H2 holds iff the loss rises with K at every
    budget of the plan (h2_truth: s > 0 without finite pools); H3 claims a sharing exponent strictly between
    0 (one shared source) and 1 (disjoint components); H4's gain G = B d^-beta (1 - K^(-(1-s) beta)) is
    positive iff s < 1 (with finite pools too: both sides see D_c = d, so X_mix / X_spec = K^(1-s))."""
    s = law["s"]
    return {"H1 floors": ("supported", "the law's floors E_c do not depend on K"),
            "H2 loss vs K at fixed D": h2_truth(law, plan, margin),
            "H3 dilution law": ("supported", f"0 < s = {s:g} < 1") if 0 < s < 1 else
            ("not supported", f"s = {s:g} is a limit (shared or disjoint)"),
            "H4 mixing gain": ("supported", f"s = {s:g} < 1: G > 0") if s < 1 else ("not supported", "s = 1: G = 0")}


def summarise(results, law, plan=None, margin=None):
    """Per hypothesis: P(correct verdict), P(wrong verdict), P(undecided) against truths(law, plan, margin), each
    with its exact 95% interval; P(supported), P(not supported) and P(decided) (= correct + wrong) beside them.
    A truth "supported or not supported" counts either decision as correct."""
    n = len(results)
    hyp = {}
    truth = truths(law, plan, margin)
    for h in HYPOTHESES:
        counts = {k: sum(outcome(r["verdicts"][h]) == k for r in results) for k in ("supported", "not supported", "undecided")}
        right = sum(counts[v] for v in truth[h][0].split(" or "))
        wrong = n - right - counts["undecided"]
        p = 1 - counts["undecided"] / n
        hyp[h] = {"truth": truth[h][0], "truth_why": truth[h][1],
                  "p_correct": right / n, "p_correct_ci95": clopper_pearson(right, n),
                  "p_wrong": wrong / n, "p_wrong_ci95": clopper_pearson(wrong, n),
                  **{f"p_{k.replace(' ', '_')}": counts[k] / n for k in counts},
                  "p_undecided_ci95": clopper_pearson(counts["undecided"], n), "p_decided": p,
                  "se": math.sqrt(max(p * (1 - p), 1 / n) / n), "ci95": clopper_pearson(n - counts["undecided"], n)}
    params = {k: dict(_interval_stats([r["params"][k] for r in results if k in r["params"]]), true=law[k])
              for k in ("s", "beta")}
    cells = sorted({c for r in results for c in r["h4"]})
    h4 = {c: _interval_stats([r["h4"][c] for r in results if c in r["h4"]]) for c in cells}
    return {"n_sim": n, "failed": sum("error" in r for r in results), "hypotheses": hyp, "params": params, "h4": h4}


def decides(x):
    """A plan decides a hypothesis when the verdict is correct with probability >= DECIDE and wrong with at
    most WRONG (issue 22's bar)."""
    return x["p_correct"] >= DECIDE and x["p_wrong"] <= WRONG


# ----------------------------------------------------------------------------------------------------
# variants of the plan: the smallest changes that might decide an undecided hypothesis

def n_runs(plan):
    return len(sweep.expand(plan))


def n_tokens(plan):
    """The plan's total token budget: the training compute of a one-size plan, up to a constant."""
    return sum(float(p["token_budget"]) for _, p in sweep.expand(plan))


def variants(plan):
    """[(name, plan)]: one more initialisation seed for every run; one more budget above (x3 the largest);
    one more budget below (the smallest / 3). Ordered by the tokens they add (the compute they cost)."""
    out = []
    more = copy.deepcopy(plan)
    extra = [dict(g, init_seed=[200]) for g in plan["grid"] if "init_seed" not in g]
    if extra:
        more["grid"] = plan["grid"] + extra
        out.append(("one more init seed for every subset (init_seed 200)", more))
    for name, pick in (("one more budget, 3x the largest", lambda b: b + [3 * max(b)]),
                       ("one more budget, the smallest / 3", lambda b: [int(float(f"{min(b) / 3:.2g}"))] + b)):
        v = copy.deepcopy(plan)
        fixed = v.get("fixed") or {}
        for g in v["grid"]:
            # a budget in fixed (one for every run) becomes a grid axis: else the variant is the plan itself
            b = g.get("token_budget", [fixed["token_budget"]] if "token_budget" in fixed else None)
            if b is not None:  # whole tokens, two digits: min / 3 of 1e6 was the run id d333333.3333333333
                g["token_budget"] = pick([int(x) if float(x).is_integer() else float(x) for x in b])
        fixed.pop("token_budget", None)
        if n_tokens(v) > n_tokens(plan):
            out.append((name, v))
    return sorted(out, key=lambda nv: n_tokens(nv[1]))


def _p(x, k):
    lo, hi = x[f"{k}_ci95"]
    return f"{x[k]:.2f} [{lo:.2f}, {hi:.2f}]"


def write_markdown(path, report):
    nm = report["noise_model"]
    L = [f"# Design check: {report['plan']}", "",
         f"Law: {report['law_text']}" + (f" (repetition: U = {report['law']['U']:.4g} per category, R* = {report['law']['Rstar']:g})"
                                          if "U" in report["law"] else "")
         + f"; noise: total SD of log test loss {nm['sd']:.4g} per (run, category), {nm['frac_shared_across_budgets']:.2f} of "
         f"its variance shared across a seed cluster's budgets, {nm['frac_run_level']:.2f} run level, {nm.get('frac_cluster', 0):.2f} "
         f"in both (every budget and category of a seed cluster) ({nm['source']}); "
         f"{report['base']['n_sim']} simulations of {report['n_runs']} runs, analyze.py with --n_boot {report['n_boot']}, "
         f"equivalence margin ±{report.get('margin', 0.02):g} nats (H1, H2, H5). "
         "A verdict is correct when it matches the law's truth (design.truths), wrong when it is the opposite "
         "decision; [..] is the exact (Clopper-Pearson) 95% interval of each probability. Simulated data obey the "
         "law exactly: these are upper bounds for real data at this noise.", "",
         "| hypothesis | truth | P(correct) | P(wrong) | P(undecided) | P(supported) | P(not supported) | smallest change that decides it |",
         "|---|---|---|---|---|---|---|---|"]
    for h, x in report["base"]["hypotheses"].items():
        L.append(f"| {h} | {x['truth']} ({x['truth_why']}) | {_p(x, 'p_correct')} | {_p(x, 'p_wrong')} | {_p(x, 'p_undecided')} | "
                 f"{x['p_supported']:.2f} | {x['p_not_supported']:.2f} | {report['smallest_change'].get(h, '–')} |")
    L += ["", "| parameter | true | mean estimate | mean 95% interval width | spread of estimates (3.92 SD) | sims with an interval |",
          "|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else f"{v:.4g}"
    for k, x in report["base"]["params"].items():
        L.append(f"| {k} | {fmt(x['true'])} | {fmt(x['mean_estimate'])} | {fmt(x['mean_ci_width'])} | "
                 f"{fmt(x['spread_of_estimates'])} | {x['n_with_interval']} of {x['n']} |")
    for c, x in report["base"]["h4"].items():
        L.append(f"| H4 gain {c} | – | {fmt(x['mean_estimate'])} | {fmt(x['mean_ci_width'])} | "
                 f"{fmt(x['spread_of_estimates'])} | {x['n_with_interval']} of {x['n']} |")
    for name, v in report["variants"].items():
        L += ["", f"Variant: {name} ({v['n_runs']} runs, {v['added']}): " + "; ".join(
            f"{h} P(correct) {x['p_correct']:.2f}, P(wrong) {x['p_wrong']:.2f}" for h, x in v["summary"]["hypotheses"].items())]
    L += ["", f"Wall time {report['wall_time_s']:.0f} s, {report['jobs']} processes."]
    Path(path).write_text("\n".join(L) + "\n")


def main(argv=None):
    p = st.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=st.HelpFormatter, allow_abbrev=False)
    p.add_argument("plan", help="a sweep.py plan file (YAML or JSON)")
    p.add_argument("--law", required=True,
                   help='"B=..,beta=..,s=..,E=..[,E[math.AC]=..][,A=..,alpha=..][,U=..,Rstar=..]" or a pilot\'s analysis/fits.json')
    simulate.add_noise_arguments(p)  # --noise, --noise_model, --repetition
    p.add_argument("--n_sim", type=int, default=50, help="simulated sweeps per plan (and per variant)")
    p.add_argument("--n_boot", type=int, default=100, help="bootstrap resamples of each analysis (analyze.py --n_boot)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated noise")
    p.add_argument("--jobs", type=st.number(int, 1), default=os.cpu_count() or 1,
                   help="processes: simulations run in parallel, each analysis on one core")
    p.add_argument("--margin", type=st.number(float, 0), default=0.02,
                   help="equivalence margin in nats of H1 / H2 / H5 (analyze.py --margin): what the plan must resolve")
    p.add_argument("--no_variants", action="store_true", help="do not try variants of the plan for undecided hypotheses")
    p.add_argument("--out", required=True, help="directory for design.json and design.md")
    args = p.parse_args(argv)
    if args.n_sim < 2 or args.n_boot < 2:
        st.die(f"--n_sim and --n_boot must be >= 2 (got {args.n_sim}, {args.n_boot}): intervals need resamples")
    plan = sweep.load_plan(args.plan)
    law, noise = simulate.law_and_noise(args, plan)
    if plan.get("script") != "ngram.py" and len({g2 for g in plan["grid"] for g2 in g.get("model_config", [None])}) > 1 \
            and "A" not in law:
        print("note: the plan has several model sizes and the law no N term (A=..,alpha=..): every size gets the same losses")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".simulations"
    t0 = time.time()
    jobs = min(args.jobs, args.n_sim)
    runs, tokens = n_runs(plan), n_tokens(plan)
    (out / "simulations.jsonl").unlink(missing_ok=True)  # this invocation's simulations only
    print(f"plan {plan['name']}: {runs} runs; law B={law['B']:.4g} beta={law['beta']:.4g} s={law['s']:.4g} "
          f"E={min(law['E'].values()):.3g}..{max(law['E'].values()):.3g}"
          + (f" A={law['A']:.4g} alpha={law['alpha']:.4g}" if "A" in law else "")
          + (f" U={law['U']:.4g} R*={law['Rstar']:g}" if "U" in law else "")
          + f"; noise: total SD {noise.sd:.4g} ({noise.frac_shared_across_budgets:.2f} shared across budgets, "
          f"{noise.frac_run_level:.2f} run level, {noise.frac_cluster:.2f} in both); {jobs} processes")
    base = summarise(simulate_plan(plan, law, noise, args.n_sim, args.n_boot, work, args.seed, plan["name"], jobs, args.margin), law, plan, args.margin)
    if base["failed"]:
        print(f"warning: {base['failed']} of {args.n_sim} simulations failed (their errors: simulations.jsonl); counted undecided")
    report = {"plan": args.plan, "n_runs": runs, "law": law, "law_text": args.law, "noise": noise.sd,
              "noise_model": dataclasses.asdict(noise), "n_boot": args.n_boot, "margin": args.margin, "seed": args.seed, "jobs": jobs,
              "base": base, "variants": {}, "smallest_change": {}}
    undecided = [h for h, x in base["hypotheses"].items() if not decides(x)]
    if undecided and not args.no_variants:
        for name, v in variants(plan):
            s = summarise(simulate_plan(v, law, noise, args.n_sim, args.n_boot, work, args.seed, name, jobs, args.margin), law, v, args.margin)
            extra = f"+{n_runs(v) - runs} runs, +{(n_tokens(v) - tokens) / tokens:.0%} tokens"
            report["variants"][name] = {"n_runs": n_runs(v), "added": extra, "summary": s}
            for h in undecided:
                x = s["hypotheses"][h]
                if h not in report["smallest_change"] and decides(x):
                    report["smallest_change"][h] = f"{name} ({extra}): P(correct) {x['p_correct']:.2f}, P(wrong) {x['p_wrong']:.2f}"
        for h in undecided:
            report["smallest_change"].setdefault(h, "none of the variants tried")
    shutil.rmtree(work, ignore_errors=True)
    report["wall_time_s"] = time.time() - t0
    st.write_json_atomic(out / "design.json", report, indent=1)
    write_markdown(out / "design.md.tmp", report)
    (out / "design.md.tmp").replace(out / "design.md")
    for h, x in base["hypotheses"].items():
        print(f"{h} (truth: {x['truth']}): P(correct) {_p(x, 'p_correct')}, P(wrong) {_p(x, 'p_wrong')}, "
              f"P(undecided) {_p(x, 'p_undecided')}" + (f" -> {report['smallest_change'][h]}" if h in report["smallest_change"] else ""))
    for k, x in base["params"].items():
        print(f"{k}: mean 95% interval width {x['mean_ci_width']}, spread of estimates {x['spread_of_estimates']} "
              f"({x['n_with_interval']} of {x['n']} with an interval)")
    print(f"wrote {out / 'design.json'} and {out / 'design.md'} in {report['wall_time_s']:.0f} s ({jobs} processes)")
    return report


if __name__ == "__main__":
    st.cli(main)
