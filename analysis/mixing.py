"""Competing mixing laws (issue 17, item 2): three published ways a category's loss can depend on its share
of the training data, fitted and cross-validated beside analyze.py's dilution forms.

Notation as in analyze.py: category c of a run with D predicted tokens of which D_c are c's, p_c = D_c / D its
share, N the non-embedding parameters. The dilution law reads, with D_c^s * D^(1-s) = D * p_c^s,

    dilution         L_c = E_c + B * D^-beta * p_c^(-s*beta)          (s in [0, 1]; disjoint s = 1, shared s = 0)

and the competitors are (the N term, when the runs span model sizes, is + A * N^-alpha as in analyze.py,
except where the paper puts it elsewhere):

    exponential      L_c = E_c + B * D^-beta * exp(-t * p_c)
        Ye et al., arXiv:2403.16952: L_i(r) = c_i + k_i * exp(sum_j t_ij r_j) at fixed model size and steps,
        r_j the mixture proportions. Here c_i = E_c (the floor the mixture does not move), k_i = B * D^-beta
        (their "nested" use composes the mixing law with a data scaling law for the reducible part), and one
        coefficient shared by all categories: t_ii = t_self, t_ij = t_cross for j != i gives
        sum_j t_ij r_j = t_cross + (t_self - t_cross) * p_c; the constant t_cross is absorbed into B, leaving
        t = t_cross - t_self (t > 0: a category's own tokens lower its loss more than others' do).
        t = 0 is the shared form. Not a reparametrisation of dilution: exp(-t p) against p^(-s beta), i.e.
        linear against logarithmic in p in the log of the reducible loss; with three or more share levels the
        forms differ.
    multiplicative   L_c = (E_c + B * D^-beta [+ A * N^-alpha]) * p_c^-gamma
        He et al., arXiv:2410.12883: L_i(N, D, p_i) = (E_i + A_i N^-alpha_i + B_i D^-beta_i) * p_i^-gamma_i,
        with D the total training tokens and p_i family i's sampling ratio; here with one gamma for all
        categories (a gamma per category would need every category at three or more shares) and B, beta,
        A, alpha shared, the floors E_c per category as everywhere else. Note: p^-gamma applied to the
        reducible data term only, E_c + B * D^-beta * p_c^-gamma, IS the dilution law with gamma = s * beta
        (a reparametrisation, so it is not added); He's law differs from dilution only in that the share
        multiplies the floor (and the N term) too. gamma = 0 is the shared form.
    effective_data   L_c = E_c + B * (D_c + tau * (D - D_c))^-beta  =  E_c + B * D^-beta * (p_c + tau*(1-p_c))^-beta
        the effective-data form of item 1 (analysis/transfer.py: D_i + t_ij D_j) with one tau shared by all
        ordered pairs: a token of another category is worth tau tokens of one's own (tau < 0: interference).
        tau = 0 is the disjoint form, tau = 1 the shared one, like s = 1 and s = 0 of dilution; in between
        p + tau(1 - p) and p^s differ (at p -> 0 one tends to tau, the other to 0).

Equivalence on the design. Which forms the data can tell apart depends on how many share levels p the runs
have: with one level (every run at one K), all six forms are the same law (B absorbs the share factor);
with two (K = 1 and one other K), dilution, exponential and effective_data each have one free factor g(p) at the
second level and are reparametrisations of one another (within their bounds); multiplicative stays
different (its floor moves). Balanced sampling makes p only nearly 1/K (D_c is multinomial), so such forms
are equivalent in practice but not to the last digit, and a held-out comparison could then "decide" on
optimiser noise. equivalences() therefore checks it numerically on the data at hand: two forms are
equivalent on this design when each, refitted to the other's fitted predictions, reproduces them to within
EQUIV_REL of the residual scale; the comparison then says so for that pair instead of deciding.

Law classes are duck-typed like analyze.Law (names, unpack, predict, objective(th, d, w) -> (value,
gradient), bounds(d), starts(d)), so analyze's minimiser, cross-validation and held-out comparison use them
unchanged; nothing here imports analyze (the minimiser and the comparison are passed in).
"""
import math

import numpy as np

from analysis import inference
from analysis import powerlaw as pl
from analysis.huber import huber

FORMULAS = {"exponential": "L_c = E_c + B * D^-beta * exp(-t * p_c)",
            "multiplicative": "L_c = (E_c + B * D^-beta) * p_c^-gamma",
            "effective_data": "L_c = E_c + B * (D_c + tau * (D - D_c))^-beta"}
SOURCES = {"exponential": "Ye et al. 2024 (arXiv:2403.16952), one shared t",
           "multiplicative": "He et al. 2024 (arXiv:2410.12883), one shared gamma",
           "effective_data": "effective data D_c + tau (D - D_c), one shared tau (item 1's t_ij averaged)"}
# Reproduction error, relative to the fits' residual RMSE, below which two forms are one law on the design. On
# the shares' levels (share_levels), exact reparametrisations reproduce to ~1e-9 of it; distinct forms on
# P1-shaped fabricated sweeps with five levels to >= 5% (dilution against effective_data, the closest pair).
EQUIV_REL = 0.01
SHARE_TOL = 0.05   # shares within 5% of one another are one level (balanced sampling's jitter is ~1%)


# ----------------------------------------------------------------------------------------------------
# the laws: parameters [log E_0.., log B, beta, mixing parameter, (log A, alpha)]

class _MixingLaw:
    """Shared parts; a form defines mix (its mixing parameter's name), mix_bounds(d), mix_grid(lo, hi) (start
    values), linear_parts(beta, m, d) (for the starts) and pred_jac(th, d)."""
    mix = None

    def __init__(self, n_cats, with_n):
        self.C, self.with_n = n_cats, with_n
        self.names = ["logE"] * n_cats + ["logB", "beta", self.mix] + (["logA", "alpha"] if with_n else [])

    def unpack(self, th):
        C = self.C
        out = {"logE": th[:C], "logB": th[C], "beta": th[C + 1], self.mix: th[C + 2]}
        if self.with_n:
            out["logA"], out["alpha"] = th[C + 3], th[C + 4]
        return out

    def _nterm(self, p, d):
        return np.exp(p["logA"] - p["alpha"] * np.log(d["N"])) if self.with_n else 0.0

    def predict(self, th, d):
        return self.pred_jac(th, d)[0]

    def objective(self, th, d, w=None):
        """Huber(log pred - log L) summed (weighted by bootstrap multiplicities w), and its gradient."""
        pred, dlogE, rest = self.pred_jac(th, d)
        hub, dr = huber(np.log(pred) - np.log(d["L"]))
        dh = dr / pred
        if w is not None:
            hub, dh = hub * w, dh * w
        g = np.empty(len(th))
        g[:self.C] = np.bincount(d["cat"], weights=dh * dlogE, minlength=self.C)
        g[self.C:] = [np.sum(dh * x) for x in rest]
        return float(hub.sum()), g

    def bounds(self, d):
        lmax = math.log(max(d["L"].max(), 1e-3))
        return ([(math.log(1e-4), lmax)] * self.C + [(-50.0, 200.0), (1e-3, 3.0), self.mix_bounds(d)]
                + ([(-50.0, 200.0), (1e-3, 3.0)] if self.with_n else []))

    def starts(self, d):
        """The two best points of a grid over (beta, mixing parameter), each with the linear parameters (E_c,
        B, and A at alpha = 0.3) solved by least squares: for fixed beta and mixing parameter every form is
        linear in them (variable projection, as analysis/powerlaw.py). Two good starts instead of a dozen
        blind ones: the mixing laws' cross-validation costs a few hundred objective evaluations per fit."""
        lo, hi = self.mix_bounds(d)
        onehot = np.eye(self.C)[d["cat"]]
        nreg = [d["N"] ** -0.3] if self.with_n else []
        floor = math.log(1e-4)
        found = []
        for beta in np.geomspace(0.05, 1.5, 12):
            for m in np.unique(np.clip(self.mix_grid(lo, hi), lo, hi)):
                x, y = self.linear_parts(beta, m, d)
                X = np.column_stack([onehot, x] + nreg)
                coef = np.linalg.lstsq(X, y, rcond=None)[0]
                if coef[self.C] <= 0:
                    continue
                logE = np.log(np.clip(coef[:self.C], 1e-4, None))
                th = list(logE) + [math.log(coef[self.C]), beta, m]
                if self.with_n:
                    th += [math.log(max(coef[-1], 1e-6)), 0.3]
                th = np.clip(np.array(th, dtype=float), *np.array(self.bounds(d)).T)
                th[:self.C] = np.maximum(th[:self.C], floor)
                found.append((self.objective(th, d)[0], beta, m, th))
        if not found:  # no grid point with B > 0 (noise so large the loss does not fall with D): a plain start
            beta, m = 0.3, float(np.clip(0.5 * (lo + hi), lo, hi))
            x, y = self.linear_parts(beta, m, d)
            Lc = [float(np.min(d["L"][d["cat"] == c])) if np.any(d["cat"] == c) else float(np.min(d["L"]))
                  for c in range(self.C)]
            th = list(np.log(0.5 * np.array(Lc))) + [math.log(0.5 * float(np.mean(d["L"])) / float(np.median(x))), beta, m]
            if self.with_n:
                th += [math.log(0.1 * float(np.mean(d["L"]))) + 0.3 * float(np.median(np.log(d["N"]))), 0.3]
            th = np.clip(np.array(th, dtype=float), *np.array(self.bounds(d)).T)
            found.append((self.objective(th, d)[0], beta, m, th))
        found.sort(key=lambda t: t[0])
        out = [found[0][3]]
        for _, beta, m, th in found[1:]:  # the second start: the best one away from the first (another basin)
            if abs(beta - found[0][1]) > 0.15 or abs(m - found[0][2]) > 0.25 * (hi - lo):
                out.append(th)
                break
        return out

    def named(self, th, categories):
        """{parameter: value} in the report's names (E[c], B, beta, the mixing parameter, A, alpha)."""
        p = self.unpack(th)
        out = {f"E[{c}]": math.exp(p["logE"][i]) for i, c in enumerate(categories)}
        out.update(B=math.exp(p["logB"]), beta=float(p["beta"]), **{self.mix: float(p[self.mix])})
        if self.with_n:
            out["A"], out["alpha"] = math.exp(p["logA"]), float(p["alpha"])
        return out


class Exponential(_MixingLaw):
    """Ye et al.'s exponential mixing law: L_c = E_c + B * D^-beta * exp(-t * p_c) [+ A * N^-alpha]."""
    form, mix = "exponential", "t"

    def mix_bounds(self, d):
        return (-20.0, 20.0)

    def mix_grid(self, lo, hi):
        return np.linspace(-2.0, 8.0, 11)

    def linear_parts(self, beta, t, d):
        """(regressor of B, target) at fixed beta and t: L = E_c + B * x."""
        return d["D"] ** -beta * np.exp(-t * d["Dc"] / d["D"]), d["L"]

    def pred_jac(self, th, d):
        """Prediction, d pred / d log E_cat (per point) and d pred / d each further parameter."""
        p = self.unpack(th)
        share, logD = d["Dc"] / d["D"], np.log(d["D"])
        E = np.exp(p["logE"][d["cat"]])
        term = np.exp(p["logB"] - p["beta"] * logD - p["t"] * share)
        nterm = self._nterm(p, d)
        rest = [term, -logD * term, -share * term]
        if self.with_n:
            rest += [nterm, -np.log(d["N"]) * nterm]
        return E + term + nterm, E, rest


class Multiplicative(_MixingLaw):
    """He et al.'s multiplicative law: L_c = (E_c + B * D^-beta [+ A * N^-alpha]) * p_c^-gamma."""
    form, mix = "multiplicative", "gamma"

    def mix_bounds(self, d):
        return (-2.0, 2.0)

    def mix_grid(self, lo, hi):
        return np.linspace(-0.2, 0.5, 8)

    def linear_parts(self, beta, gamma, d):
        """L * p^gamma = E_c + B * D^-beta."""
        return d["D"] ** -beta, d["L"] * (d["Dc"] / d["D"]) ** gamma

    def pred_jac(self, th, d):
        p = self.unpack(th)
        logp, logD = np.log(d["Dc"] / d["D"]), np.log(d["D"])
        f = np.exp(-p["gamma"] * logp)
        E = np.exp(p["logE"][d["cat"]])
        term = np.exp(p["logB"] - p["beta"] * logD)
        nterm = self._nterm(p, d)
        pred = (E + term + nterm) * f
        rest = [term * f, -logD * term * f, -logp * pred]
        if self.with_n:
            rest += [nterm * f, -np.log(d["N"]) * nterm * f]
        return pred, E * f, rest


class EffectiveData(_MixingLaw):
    """Effective data with one shared tau (what a token of another category is worth): L_c = E_c + B * (D_c + tau * (D - D_c))^-beta [+ A N^-alpha]."""
    form, mix = "effective_data", "tau"

    def mix_grid(self, lo, hi):
        return np.linspace(lo, 1.5, 10)

    def linear_parts(self, beta, tau, d):
        return np.maximum(d["Dc"] + tau * (d["D"] - d["Dc"]), 1.0) ** -beta, d["L"]

    def mix_bounds(self, d):
        """tau in [lo, 3]: lo keeps every point's effective data positive (D_c + tau (D - D_c) > 0)."""
        other = d["D"] - d["Dc"]
        m = other > 0
        lo = -0.9 * float(np.min(d["Dc"][m] / other[m])) if m.any() else -1.0
        return (max(lo, -1.0), 3.0)

    def pred_jac(self, th, d):
        p = self.unpack(th)
        other = d["D"] - d["Dc"]
        # held-out points may have a smaller share than the training part's bound allowed for: one token at least
        Deff = np.maximum(d["Dc"] + p["tau"] * other, 1.0)
        E = np.exp(p["logE"][d["cat"]])
        term = np.exp(p["logB"] - p["beta"] * np.log(Deff))
        nterm = self._nterm(p, d)
        rest = [term, -np.log(Deff) * term, -p["beta"] * term * other / Deff]
        if self.with_n:
            rest += [nterm, -np.log(d["N"]) * nterm]
        return E + term + nterm, E, rest


FORMS = {"exponential": Exponential, "multiplicative": Multiplicative, "effective_data": EffectiveData}


def make_law(form, n_cats, with_n):
    return FORMS[form](n_cats, with_n)


# ----------------------------------------------------------------------------------------------------
# fitting with bootstrap intervals (for the coverage benchmark and tests; the report uses point fits)

def fit_intervals(law, d, minimize, weights, tol=(1e-9, 1e-6)):
    """Point estimate and 95% percentile intervals over bootstrap resamples given as per-point weights
    (analyze.bootstrap_weights: runs drawn within each K). Each refit starts at the point estimate and at a
    second point with beta moved by 0.15 (B moved to keep the data term at the median budget), tolerances
    relative to the resample's objective. `minimize` is analyze's (law, d, starts, w, tol, scale)."""
    th = minimize(law, d, law.starts(d)).x
    alt = np.array(th, dtype=float)
    C, beta = law.C, th[law.C + 1]
    beta2 = beta + 0.15 if beta < 0.5 else beta - 0.15
    alt[C] += (beta2 - beta) * float(np.median(np.log(d["D"])))
    alt[C + 1] = beta2
    lo, hi = np.array(law.bounds(d)).T
    starts = [np.asarray(th, dtype=float), np.clip(alt, lo, hi)]
    boots = []
    for w in weights:
        scale = max(law.objective(th, d, w)[0], 1e-300)
        r = minimize(law, d, starts, w, tol=tol, scale=scale)
        if r.success and np.all(np.isfinite(r.x)):
            boots.append(law.named(r.x, d["categories"]))
    point = law.named(th, d["categories"])
    return {"form": law.form, "formula": FORMULAS[law.form], "theta": th,
            # guarded: one converged refit (or refits all at one bound) would print a zero-width interval
            "params": {k: {"estimate": v, "ci95": inference.guarded(pl.interval([b[k] for b in boots]))}
                       for k, v in point.items()},
            "n_boot": len(boots), "dropped_not_converged": len(weights) - len(boots)}


# ----------------------------------------------------------------------------------------------------
# equivalence on the design, and the verdict of the comparison

def _rms_log(a, b):
    return float(np.sqrt(np.mean((np.log(a) - np.log(b)) ** 2)))


def share_levels(d, tol=SHARE_TOL):
    """The data with each share p = D_c / D replaced by its level: shares within a factor exp(tol) of the
    smallest share of their group are one level (their geometric mean). Balanced sampling draws D_c from a
    multinomial, so p is 1/K only up to ~1% jitter; a form with a steep mixing parameter can fit that
    jitter, which is not a design variation and must not make two forms look different."""
    logp = np.log(d["Dc"] / d["D"])
    order = np.argsort(logp)
    level = np.empty_like(logp)
    start = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or logp[order[i]] - logp[order[start]] > tol:
            level[order[start:i]] = logp[order[start:i]].mean()
            start = i
    return dict(d, Dc=d["D"] * np.exp(level))


def equivalences(d, forms, with_n, make, minimize, tol, thetas=None):
    """Point fits of every form on the data with the shares at their levels (share_levels; `thetas`: {form:
    parameters} fitted on the data, used as starts) and, per pair, whether the two are one law on this
    design: each form refitted (from its own fit) to the other's predictions reproduces them to within
    EQUIV_REL of the smaller residual RMSE. `make` is a law factory (analyze.make_law), `minimize` analyze's
    minimiser. Returns ({form: (law, theta on the data)}, [{a, b, reproduce: [a by b, b by a], equivalent}])."""
    fits, lev = {}, {}
    d_lev = share_levels(d)
    for f in forms:
        law = make(f, len(d["categories"]), with_n)
        th = (thetas or {}).get(f)
        th = np.asarray(th, dtype=float) if th is not None else minimize(law, d, law.starts(d), tol=tol).x
        fits[f] = (law, th)
        lev[f] = (law, minimize(law, d_lev, [th] + law.starts(d_lev)[:1], tol=tol).x)
    d, fits_data, fits = d_lev, fits, lev
    pred = {f: law.predict(th, d) for f, (law, th) in fits.items()}
    rmse = {f: _rms_log(pred[f], d["L"]) for f in forms}

    def reproduce(f, target):
        law, th = fits[f]
        dd = dict(d, L=target)
        r = minimize(law, dd, [th], tol=tol, scale=max(law.objective(th, dd)[0], 1e-300))
        return _rms_log(law.predict(r.x, dd), target)
    out = []
    for i, a in enumerate(forms):
        for b in forms[i + 1:]:
            e = [reproduce(b, pred[a]), reproduce(a, pred[b])]
            scale = max(min(rmse[a], rmse[b]), 1e-9)
            out.append({"a": a, "b": b, "reproduce": e, "equivalent": bool(max(e) <= EQUIV_REL * scale)})
    return fits_data, out


def judge(comparison, equiv, fits=None, categories=None):
    """The held-out comparison (analyze.compare_forms) with the equivalences applied — a pair of forms that
    are one law on this design is 'equivalent', never decided — and the verdict: the best form (the only one
    no other beats) with its interval, or 'undecided' among the forms no other beats."""
    eq = {(e["a"], e["b"]): e for e in equiv}
    for p in comparison["pairs"]:
        e = eq.get((p["a"], p["b"]))
        p["equivalent"] = bool(e and e["equivalent"])
        if p["equivalent"]:
            p["better"] = "undecided"
            p["why"] = ("the same law on this design: each reproduces the other's fit to "
                        f"{max(e['reproduce']):.1e} (RMS log)")
    if any("p" in p for p in comparison["pairs"]):  # the family: the non-equivalent pairs, Holm-corrected
        from analysis.forms import decide_pairs
        decide_pairs(comparison["pairs"])
    forms = list(comparison["rmse"])
    # best: the form that beats every other; otherwise the set no other form beats (A beats C, C beats B,
    # A vs B undecided: not 'best A')
    best, top = inference.undominated(forms, comparison["pairs"])
    same = [(p["a"], p["b"]) for p in comparison["pairs"] if p["equivalent"]]
    # a form equivalent on this design to another cannot be the best alone: they are one law here, so a
    # form beating one of them while the other "wins" is optimiser noise; undecided among the class
    if len(top) == 1:
        twins = {f for a, b in same if top[0] in (a, b) for f in (a, b)}
        top = [f for f in forms if f in twins] or top
    comparison["equivalent_pairs"] = same
    comparison["best"] = best if best is not None and len(top) == 1 and comparison["n_points"] else None
    comparison["undecided_among"] = [] if comparison["best"] else top
    comparison["verdict"] = _verdict(comparison, top, same)
    if fits:
        comparison["point_fits"] = {f: law.named(th, categories) for f, (law, th) in fits.items() if hasattr(law, "named")}
    return comparison


def _verdict(cmp, top, same):
    if not cmp["n_points"]:
        return "undecided: nothing could be predicted held out (each category in one fold only)"
    if cmp["best"]:
        f = cmp["best"]
        r = cmp["rmse"][f]
        wins = [p for p in cmp["pairs"] if p["better"] == f]
        return (f"best form: **{f}** — held-out RMSE {r['estimate']:.4g}, 95% {_ci(r['ci95'])}; no other form "
                f"predicts held-out runs as well (" + "; ".join(
                    f"vs {p['b'] if p['a'] == f else p['a']}: MSE difference "
                    f"{(1 if p['a'] == f else -1) * p['mse_difference']:+.2e}, 95% "
                    f"{_ci(sorted((1 if p['a'] == f else -1) * x for x in p['ci95']))}" for p in wins) + ")")
    eqs = [f"{a} = {b}" for a, b in same if a in top and b in top]
    beats_some = [f for f in top if any(p["better"] == f for p in cmp["pairs"])]
    return (f"**undecided** among {', '.join(top)} (no other form beats them; none beats every other)" + ": "
            + (cmp.get("why_no_interval") or ("no form beats every other after Holm across the pairs" if beats_some
                                              else "no interval of their held-out differences excludes 0 after Holm"))
            + (f"; equivalent on this design (reparametrisations of one law here): {', '.join(eqs)}" if eqs else ""))


def _ci(ci):
    return "—" if ci[0] is None else f"[{ci[0]:.4g}, {ci[1]:.4g}]"


def report_lines(cmp):
    """The report's section (markdown lines); none when the comparison did not run."""
    if not cmp:
        return []
    L = ["", "## Competing mixing laws", "",
         f"Held-out comparison ({cmp['method']}; {cmp['n_points']} points) of the dilution forms and three "
         "published mixing laws (analysis/mixing.py documents how each maps to its paper), p_c = D_c / D:", "",
         "| form | formula | source | point estimates (all data) |", "|---|---|---|---|"]
    for f in cmp["rmse"]:
        est = ", ".join(f"{k}={v:.4g}" for k, v in (cmp.get("point_fits") or {}).get(f, {}).items()
                        if not k.startswith("E["))
        L.append(f"| {f} | " + (f"`{FORMULAS[f]}` | {SOURCES[f]} | {est} |" if f in FORMULAS else
                                "see Fitted laws | analyze.py's dilution forms | see Fitted laws |"))
    L += ["", "| form | held-out RMSE (log L) | 95% CI |", "|---|---|---|"]
    L += [f"| {f} | {v['estimate']:.4g} | {_ci(v['ci95'])} |" if v["estimate"] is not None else f"| {f} | — | — |"
          for f, v in cmp["rmse"].items()]
    L += ["", "| A vs B | MSE(A) − MSE(B) | 95% CI | better |", "|---|---|---|---|"]
    L += [f"| {p['a']} vs {p['b']} | " + ("—" if p["mse_difference"] is None else f"{p['mse_difference']:.3g}")
          + f" | {_ci(p['ci95'])} | " + ("equivalent on this design" if p.get("equivalent") else p["better"]) + " |"
          for p in cmp["pairs"]]
    return L + ["", cmp["verdict"], ""]


def withhold_misfit(cmp, diagnostics):
    """No 'best' form when the report calls that form's fit a misfit (its residuals against the noise floor):
    predicting held-out runs best among misfits is not a law that fits."""
    if not cmp or not cmp.get("best") or not diagnostics:
        return cmp
    bad = (diagnostics.get(cmp["best"], {}).get("verdict") == "misfit"
           or all(v.get("verdict") == "misfit" for v in diagnostics.values()))
    if bad:
        f = cmp["best"]
        cmp["best"], cmp["undecided_among"] = None, [f]
        cmp["verdict"] = (f"**undecided**: {f} predicts held-out runs best, but the residual diagnostics call "
                          + ("every dilution form's fit" if f not in diagnostics else f"{f}'s fit")
                          + " a misfit, so no form is named best")
    return cmp
