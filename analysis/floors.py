"""H1 (EXPERIMENT_PLAN.md): do the floors E_c depend on K? One joint fit of the dilution law on all of a model's
runs with one floor per category and, per category, an offset delta_c that applies at the largest K only:
L = E_c + delta_c [K = Kmax] + B X^-beta, X = D_c^s D^(1-s). B, beta and s are pinned by every run, so each
delta_c is pinned far tighter than the difference of two separate floor fits (K = 1 runs alone and largest-K
runs alone: each fit trades its floors against its own B and beta; in P1 that check was undecided 10/10).
Each delta_c's interval comes from the seed-cluster bootstrap (laws.bootstrap_weights); the test is an
equivalence test (TOST) per category and Holm across categories for a difference."""
import functools

import numpy as np

from analysis.huber import huber
from analysis.inference import _p_t, holm, percentile
from analysis.laws import BOOT_TOL, Law, _minimize, identification

TOST_LEVEL = 0.90  # two one-sided tests at 5% each: the 90% interval within +-margin


class LawFloorOffset(Law):
    """The dilution law with a floor offset per category at the largest K: vector [log E_0.., log B, beta, s,
    delta_0..] (delta for the categories present at Kmax, in `cats_at_max` order). With every delta at 0 it is
    the dilution law (nested); B, beta and s stay where Law keeps them, so Law's starts and boot starts apply."""

    def __init__(self, n_cats, k_max, cats_at_max):
        super().__init__("dilution", n_cats, False)
        self.form, self.k_max, self.cats_at_max = "dilution_floor_offset", int(k_max), list(cats_at_max)
        self._nd = len(self.cats_at_max)
        self.names = self.names + [f"delta[{c}]" for c in self.cats_at_max]

    def _parts(self, th, d):
        th = np.asarray(th, dtype=float)
        C, nd = self.C, self._nd
        base = th[:C + 3]
        # which delta each point takes: its category's, at Kmax; none (index nd, a zero) below Kmax
        pos = np.full(self.C, nd)
        pos[self.cats_at_max] = np.arange(nd)
        idx = pos[d["cat"]]
        g = (d["K"] == self.k_max).astype(float)  # the offset applies at the largest K only
        delta = np.append(th[C + 3:C + 3 + nd], 0.0)[idx] * g
        return base, idx, delta, g

    def predict(self, th, d):
        base, _, delta, _ = self._parts(th, d)
        return Law.predict(self, base, d) + delta

    def objective(self, th, d, w=None):
        """Huber(log pred - log L) and its gradient: Law's terms with the offset in pred, plus d/d delta_c."""
        base, idx, delta, gk = self._parts(th, d)
        p = self.unpack(base)
        C = self.C
        logD, logDc = np.log(d["D"]), np.log(d["Dc"])
        logX = p["s"] * logDc + (1 - p["s"]) * logD
        E = np.exp(p["logE"][d["cat"]])
        dterm = np.exp(p["logB"] - p["beta"] * logX)
        pred = np.maximum(E + dterm + delta, 1e-12)
        hub, dh = huber(np.log(pred) - np.log(d["L"]))
        dh = dh / pred
        if w is not None:
            hub, dh = hub * w, dh * w
        g = np.zeros(len(th))
        g[:C] = np.bincount(d["cat"], weights=dh * E, minlength=C)
        g[C] = np.sum(dh * dterm)
        g[C + 1] = np.sum(dh * dterm * -logX)
        g[C + 2] = np.sum(dh * dterm * -p["beta"] * (logDc - logD))
        g[C + 3:] = np.bincount(idx, weights=dh * gk, minlength=self._nd + 1)[:self._nd]
        return float(hub.sum()), g

    def bounds(self, d):
        return Law.bounds(self, d) + [(-1.0, 1.0)] * self._nd

    def starts(self, d):
        return [np.append(th, np.zeros(self._nd)) for th in Law.starts(self, d)]


def _p_clusters(est, x, n):
    """Two-sided t p of est = 0 with n - 1 df, on the bootstrap draws' SD scaled by n / (n - 1)."""
    x = np.asarray(x, dtype=float)
    sd = float(np.std(x, ddof=1)) * np.sqrt(n / max(n - 1, 1)) if len(x) >= 2 else 0.0
    return _p_t(est, sd, max(n - 1, 1))


def h1_offsets(d, margin, n_boot, seed, model=None, subset=None):
    """H1 for one model's runs d (fit_data; on effective tokens where repetition is modelled): the joint fit
    (LawFloorOffset, Kmax = the largest K), each delta_c with its 90% (TOST) and 95% percentile intervals over
    seed-cluster resamples (refitted from the point estimate) and a two-sided p from the bootstrap SD.
    Supported when every category's 90% interval lies within +-margin (each one-sided test at 5%; the
    intersection-union test needs no correction); not supported when Holm (family-wise 5%) rejects
    delta_c = 0 for at least one category; undecided otherwise (too little power either way)."""
    from analysis.laws import bootstrap_weights
    Ks = sorted({int(k) for k in d["K"]})
    C = len(d["categories"])
    k_max = Ks[-1]
    at_max = [c for c in range(C) if np.any((d["cat"] == c) & (d["K"] == k_max))]
    # a delta is a contrast: its category needs runs at Kmax and below it (two runs on either side)
    testable = [c for c in at_max
                if len(np.unique(d["run"][(d["cat"] == c) & (d["K"] == k_max)])) >= 2
                and len(np.unique(d["run"][(d["cat"] == c) & (d["K"] < k_max)])) >= 2]
    out = {"model": model, "subsets": [f"K < {k_max}", f"K == {k_max}"], "subset": subset, "margin": margin,
           "K_max": k_max, "law": "L_c = E_c + delta_c [K = Kmax] + B * (D_c^s * D^(1-s))^-beta",
           "test": (f"TOST: the mean offset's {TOST_LEVEL:.0%} interval within ±{margin} nats (supported); Holm across "
                    "the categories and their mean, t on the bootstrap SD (not supported)"),
           "table": [], "n_boot": 0}
    if len(Ks) < 2 or not testable:
        out.update(verdict="undecided", why="no category is in two runs at the largest K and two below it"
                   if len(Ks) > 1 else "a single K: no floor offset to estimate")
        return out
    law = LawFloorOffset(C, k_max, testable)
    res = _minimize(law, d, law.starts(d))
    th = res.x
    weights, dropped, unit = bootstrap_weights(d, n_boot, seed, with_unit=True)
    draws = []
    for w in weights:  # from the point estimate, tolerances relative to the resample's objective (as laws.py)
        r = _minimize(law, d, [th], w, tol=BOOT_TOL, scale=max(law.objective(th, d, w)[0], 1e-300))
        if r.success and np.all(np.isfinite(r.x)):
            draws.append(r.x[C + 3:])
    draws = np.array(draws).reshape(-1, len(testable))
    flat = identification(Law("dilution", C, False), d)
    # the p of each offset: a t test with the clusters at Kmax - 1 df, on the bootstrap SD scaled by n / (n - 1)
    # (a bootstrap of n units underestimates the variance by (n - 1) / n). The normal p from the bootstrap SD
    # of 3 clusters rejected a true 0 (equal floors, measured): its SD has 2 degrees of freedom
    n_max = len(np.unique(d["cluster"][d["K"] == k_max])) if "cluster" in d else 2

    p_of = functools.partial(_p_clusters, n=n_max)
    lo, hi = np.array(law.bounds(d)).T
    table = []
    for i, c in enumerate(testable):
        name, est = d["categories"][c], float(th[C + 3 + i])
        ident = "beta" not in flat and f"E[{name}]" not in flat
        on_bound = bool(est <= lo[C + 3 + i] + 1e-6 or est >= hi[C + 3 + i] - 1e-6)
        ci90 = percentile(draws[:, i], est, TOST_LEVEL) if ident else [None, None]
        ci95 = percentile(draws[:, i], est) if ident else [None, None]
        table.append({"category": name, "difference": est, "ci90": ci90, "ci95": ci95,
                      "p": p_of(est, draws[:, i]) if ident else 1.0, "identified": ident, "at_bound": on_bound})
    verdict, why, mean = _verdict(table, draws, testable, at_max, d, k_max, margin, p_of)
    out.update(verdict=verdict, why=why, table=table, mean=mean, n_boot=len(draws), converged=bool(res.success),
               bootstrap={"requested": n_boot, "used": len(draws), "dropped_missing_category": dropped, "unit": unit},
               fit={"s": float(th[C + 2]), "beta": float(th[C + 1]), "B": float(np.exp(th[C]))},
               clusters_at_K_max=n_max,
               p_method="two-sided t with (seed clusters at Kmax - 1) df on the bootstrap SD of delta_c scaled by "
                        "n / (n - 1); Holm across the testable categories and their mean")
    return out


def _verdict(table, draws, testable, at_max, d, k_max, margin, p_of):
    """(verdict, why, the mean offset row) from the per-category offsets (h1_offsets' rules); marks each
    row's holm_rejected."""
    usable = [r for r in table if r["identified"] and not r["at_bound"] and r["ci90"][0] is not None]
    # the mean offset over the testable categories (equal weight): the statistic the equivalence test reads.
    # Per category, 3 clusters at Kmax leave each delta_c's 90% interval at ~±0.05 nats in P1 (measured), wider
    # than any margin a floor comparison needs; their mean averages the per-category noise
    cols = [testable.index(d["categories"].index(r["category"])) for r in usable]
    mean = None
    if usable and draws.size:
        md = draws[:, cols].mean(axis=1)
        est = float(np.mean([r["difference"] for r in usable]))
        mean = {"category": "mean", "difference": est, "ci90": percentile(md, est, TOST_LEVEL),
                "ci95": percentile(md, est), "p": p_of(est, md), "n_categories": len(usable)}
    # one family: the mean and every category (Holm, family-wise 5%): a difference anywhere is a rejection
    fam = usable + ([mean] if mean else [])
    rej = holm([r["p"] for r in fam])
    for r in table + ([mean] if mean else []):
        r["holm_rejected"] = None
    for r, x in zip(fam, rej):
        r["holm_rejected"] = bool(x)
    n_rej = int(sum(rej[:len(usable)]))
    untested = len(at_max) - len(testable) + len(table) - len(usable)
    if not draws.size or mean is None or mean["ci90"][0] is None:
        verdict, why = "undecided", "no bootstrap resamples or no testable category, so no interval"
    elif any(rej):
        worst = min(fam, key=lambda r: r["p"])
        verdict, why = "not supported", (
            f"floors at K = {k_max} differ from the other K after Holm ({n_rej} of {len(usable)} categories"
            + (", and the mean offset" if mean["holm_rejected"] else "")
            + f"; smallest p: {worst['category']} {worst['difference']:+.4f})")
    elif -margin <= mean["ci90"][0] and mean["ci90"][1] <= margin:
        verdict, why = "supported", (f"the mean floor offset at K = {k_max} is {mean['difference']:+.4f}, its "
                                     f"{TOST_LEVEL:.0%} interval [{mean['ci90'][0]:+.4f}, {mean['ci90'][1]:+.4f}] within "
                                     f"±{margin} nats (equivalence, {len(usable)} categories, joint fit), and no "
                                     "category's offset differs after Holm")
    else:
        verdict = "undecided"
        why = (f"no offset differs after Holm; the mean offset's {TOST_LEVEL:.0%} interval [{mean['ci90'][0]:+.4f}, "
               f"{mean['ci90'][1]:+.4f}] reaches beyond ±{margin} nats: the check cannot call the floors equal")
    if untested and verdict != "not supported":
        why += (f" ({untested} categor{'y' if untested == 1 else 'ies'} not testable: too few runs, not identified "
                "or on the optimiser's bound)")
    return verdict, why, mean
