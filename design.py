"""
The design check: can this plan decide its hypotheses? For exactly the runs a plan file expands to,
fabricate per-category test losses from a known law plus noise (simulate.py) many times, analyse each
fabricated sweep with analyze.py's own fits and verdicts, and report per hypothesis how often it is decided
(supported / not supported vs undecided), the expected 95% interval widths of s, beta and the H4 gains, and
which small change of the plan (more seeds, another budget) would decide what stays undecided.

    python design.py plans/p1_core_31m.yaml --law "B=410.7,beta=0.28,s=0.5,E=3.9" --noise 0.01 --n_sim 50 --out design/p1
    python design.py plans/p1_core_31m.yaml --law sweeps/ngram_smoke/analysis/fits.json --out design/p1_kn

The law: L_c = E_c + B * (D_c^s * D^(1-s))^(-beta) [+ A * N^(-alpha)] (EXPERIMENT_PLAN.md, H3); `E=` sets
every category's floor, `E[math.AC]=` one category's; the N term (`A=..,alpha=..`) matters only when the
plan has several model sizes. Or a pilot's fits.json (a KN pilot sweep's or P0's): its dilution fit, and its
measured seed-to-seed noise unless --noise is given. --noise is the SD of log test loss per run and
category (what analyze.py's noise floor measures).

What it can and cannot say: every simulated sweep obeys the law exactly (no misfit, no outliers, no failed
runs), so decide-probabilities are upper bounds for real data at that noise; held-out losses carry no K
effect (H5 is not checked), and P1 has no tagged twins (H6). Each estimate is from n_sim simulations: a
probability p has a standard error of about sqrt(p(1-p)/n_sim).
"""
import argparse
import contextlib
import copy
import io
import json
import math
import shutil
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
DECIDE = 0.8  # a hypothesis "is decided by the plan" when at least this share of simulations decides it


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


def simulate_plan(plan, law, noise, n_sim, n_boot, workdir, seed=0, label="plan"):
    """n_sim fabricated sweeps of `plan`, each analysed by analyze.py; returns the per-simulation outcomes."""
    from tqdm import tqdm
    results = []
    for i in tqdm(range(n_sim), desc=f"simulating {label}", file=sys.stderr, unit="sweep"):
        root = Path(workdir) / f"sim{i:03d}"
        shutil.rmtree(root, ignore_errors=True)
        simulate.fabricate(plan, law, noise, root, np.random.default_rng([seed, i]))
        try:
            with quiet_analysis():
                # --verdicts_only: what summarise_fits reads (verdicts, the dilution fit, H4), none of the figures,
                # mixing laws or other intervals nobody looks at here
                analyze.main([str(root), "--n_boot", str(n_boot), "--seed", str(i), "--jobs", "1", "--no_baselines",
                              "--verdicts_only"])
            results.append(summarise_fits(json.loads((root / "analysis" / "fits.json").read_text())))
        except SystemExit as e:  # analyze.py refused the sweep: say so, count it as undecided
            results.append({"verdicts": {h: "missing" for h in HYPOTHESES}, "params": {}, "h4": {},
                            "error": f"analyze.py exited {e.code}"})
        shutil.rmtree(root, ignore_errors=True)
        with open(Path(workdir).parent / "simulations.jsonl", "a") as f:  # each outcome as it comes (a log)
            f.write(json.dumps(dict(results[-1], label=label, sim=i)) + "\n")
    return results


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


def summarise(results, law):
    n = len(results)
    hyp = {}
    for h in HYPOTHESES:
        counts = {k: sum(outcome(r["verdicts"][h]) == k for r in results) for k in ("supported", "not supported", "undecided")}
        p = 1 - counts["undecided"] / n
        hyp[h] = {**{f"p_{k.replace(' ', '_')}": counts[k] / n for k in counts}, "p_decided": p,
                  "se": math.sqrt(max(p * (1 - p), 1 / n) / n), "ci95": clopper_pearson(n - counts["undecided"], n)}
    params = {k: dict(_interval_stats([r["params"][k] for r in results if k in r["params"]]), true=law[k])
              for k in ("s", "beta")}
    cells = sorted({c for r in results for c in r["h4"]})
    h4 = {c: _interval_stats([r["h4"][c] for r in results if c in r["h4"]]) for c in cells}
    return {"n_sim": n, "failed": sum("error" in r for r in results), "hypotheses": hyp, "params": params, "h4": h4}


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


def write_markdown(path, report):
    L = [f"# Design check: {report['plan']}", "",
         f"Law: {report['law_text']}; noise (SD of log test loss): {report['noise']}; {report['base']['n_sim']} "
         f"simulations of {report['n_runs']} runs, analyze.py with --n_boot {report['n_boot']}. A probability from "
         f"n_sim simulations has a standard error of about sqrt(p(1-p)/n_sim); [..] is its exact (Clopper-Pearson) 95% interval. Simulated data obey the law exactly: "
         "these are upper bounds for real data at this noise.", "",
         "| hypothesis | P(decided) | P(supported) | P(not supported) | P(undecided) | smallest change that decides it |",
         "|---|---|---|---|---|---|"]
    for h, x in report["base"]["hypotheses"].items():
        L.append(f"| {h} | {x['p_decided']:.2f} ± {x['se']:.2f} [{x['ci95'][0]:.2f}, {x['ci95'][1]:.2f}] | {x['p_supported']:.2f} | {x['p_not_supported']:.2f} | "
                 f"{x['p_undecided']:.2f} | {report['smallest_change'].get(h, '–')} |")
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
            f"{h} P(decided) {x['p_decided']:.2f}" for h, x in v["summary"]["hypotheses"].items())]
    Path(path).write_text("\n".join(L) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=st.HelpFormatter,
                                allow_abbrev=False)
    p.add_argument("plan", help="a sweep.py plan file (YAML or JSON)")
    p.add_argument("--law", required=True,
                   help='"B=..,beta=..,s=..,E=..[,E[math.AC]=..][,A=..,alpha=..]" or a pilot\'s analysis/fits.json')
    p.add_argument("--noise", type=float, default=None,
                   help="SD of log test loss per run and category (default: the fits.json's measured noise floor)")
    p.add_argument("--n_sim", type=int, default=50, help="simulated sweeps per plan (and per variant)")
    p.add_argument("--n_boot", type=int, default=100, help="bootstrap resamples of each analysis (analyze.py --n_boot)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated noise")
    p.add_argument("--no_variants", action="store_true", help="do not try variants of the plan for undecided hypotheses")
    p.add_argument("--out", required=True, help="directory for design.json and design.md")
    args = p.parse_args(argv)
    if args.n_sim < 2 or args.n_boot < 2:
        st.die(f"--n_sim and --n_boot must be >= 2 (got {args.n_sim}, {args.n_boot}): intervals need resamples")
    plan = sweep.load_plan(args.plan)
    try:
        if Path(args.law).suffix == ".json" or Path(args.law).is_file():
            law, measured = simulate.law_from_fits(args.law)
        else:
            law, measured = simulate.parse_law(args.law), None
    except simulate.LawError as e:
        st.die(str(e))
    noise = args.noise if args.noise is not None else measured
    if noise is None or not 0 <= noise < math.inf:  # nan, inf: every loss non-finite, every simulation refused
        st.die("--noise: needed (>= 0): the law has no measured noise floor" if noise is None else
               f"--noise must be a finite number >= 0 (got {noise})")
    if plan.get("script") != "ngram.py" and len({g2 for g in plan["grid"] for g2 in g.get("model_config", [None])}) > 1 \
            and "A" not in law:
        print("note: the plan has several model sizes and the law no N term (A=..,alpha=..): every size gets the same losses")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".simulations"
    t0 = time.time()
    runs, tokens = n_runs(plan), n_tokens(plan)
    (out / "simulations.jsonl").unlink(missing_ok=True)  # this invocation's simulations only
    print(f"plan {plan['name']}: {runs} runs; law B={law['B']:.4g} beta={law['beta']:.4g} s={law['s']:.4g} "
          f"E={min(law['E'].values()):.3g}..{max(law['E'].values()):.3g}"
          + (f" A={law['A']:.4g} alpha={law['alpha']:.4g}" if "A" in law else "") + f"; noise {noise:.4g}")
    base = summarise(simulate_plan(plan, law, noise, args.n_sim, args.n_boot, work, args.seed, plan["name"]), law)
    report = {"plan": args.plan, "n_runs": runs, "law": law, "law_text": args.law, "noise": noise,
              "n_boot": args.n_boot, "seed": args.seed, "base": base, "variants": {}, "smallest_change": {}}
    undecided = [h for h, x in base["hypotheses"].items() if x["p_decided"] < DECIDE]
    if undecided and not args.no_variants:
        for name, v in variants(plan):
            s = summarise(simulate_plan(v, law, noise, args.n_sim, args.n_boot, work, args.seed, name), law)
            extra = f"+{n_runs(v) - runs} runs, +{(n_tokens(v) - tokens) / tokens:.0%} tokens"
            report["variants"][name] = {"n_runs": n_runs(v), "added": extra, "summary": s}
            for h in undecided:
                if h not in report["smallest_change"] and s["hypotheses"][h]["p_decided"] >= DECIDE:
                    report["smallest_change"][h] = f"{name} ({extra}): P(decided) {s['hypotheses'][h]['p_decided']:.2f}"
        for h in undecided:
            report["smallest_change"].setdefault(h, "none of the variants tried")
    shutil.rmtree(work, ignore_errors=True)
    report["wall_time_s"] = time.time() - t0
    st.write_json_atomic(out / "design.json", report, indent=1)
    write_markdown(out / "design.md.tmp", report)
    (out / "design.md.tmp").replace(out / "design.md")
    for h, x in base["hypotheses"].items():
        print(f"{h}: P(decided) {x['p_decided']:.2f} ± {x['se']:.2f} [{x['ci95'][0]:.2f}, {x['ci95'][1]:.2f}] (supported {x['p_supported']:.2f}, "
              f"not supported {x['p_not_supported']:.2f})" + (f" -> {report['smallest_change'][h]}" if h in report["smallest_change"] else ""))
    for k, x in base["params"].items():
        print(f"{k}: mean 95% interval width {x['mean_ci_width']}, spread of estimates {x['spread_of_estimates']} "
              f"({x['n_with_interval']} of {x['n']} with an interval)")
    print(f"wrote {out / 'design.json'} and {out / 'design.md'} in {report['wall_time_s']:.0f} s")
    return report


if __name__ == "__main__":
    st.cli(main)
