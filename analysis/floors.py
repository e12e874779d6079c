"""H1 (EXPERIMENT_PLAN.md): do the floors E_c depend on K? One joint fit of the dilution law on all of a model's
runs with one floor per category and, per category, an offset delta_c that applies at the largest K only:
L = E_c + delta_c [K = Kmax] + B X^-beta, X = D_c^s D^(1-s). B, beta and s are pinned by every run, so each
delta_c is pinned far tighter than the difference of two separate floor fits (K = 1 runs alone and largest-K
runs alone: each fit trades its floors against its own B and beta; in P1 that check was undecided 10/10).
Each delta_c's interval is a Cochran-Cox t interval over seed clusters (the joint fit's residuals averaged per
cluster, on either side of Kmax; issue 21); the test is an equivalence test (TOST) on their mean and Holm across
categories for a difference."""
import numpy as np

from analysis.huber import huber
from analysis.inference import holm
from analysis.laws import Law, _minimize, identification

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


def h1_offsets(d, margin, n_boot, seed, model=None, subset=None):
    """H1 for one model's runs d (fit_data; on effective tokens where repetition is modelled): the joint fit
    (LawFloorOffset, Kmax = the largest K), each delta_c with its 90% (TOST) and 95% t intervals over seed
    clusters and the two-sided p of the 95% one (_cluster_interval; fewer than 2 clusters on a side: none).
    n_boot and seed are not used (the intervals need no resampling); kept for the callers.
    Supported when every category's 90% interval lies within +-margin (each one-sided test at 5%; the
    intersection-union test needs no correction); not supported when Holm (family-wise 5%) rejects
    delta_c = 0 for at least one category; undecided otherwise (too little power either way)."""
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
                    "the categories and their mean, Cochran-Cox t over seed clusters (not supported)"),
           "table": [], "n_boot": 0}
    if len(Ks) < 2 or not testable:
        out.update(verdict="undecided", why="no category is in two runs at the largest K and two below it"
                   if len(Ks) > 1 else "a single K: no floor offset to estimate")
        return out
    law = LawFloorOffset(C, k_max, testable)
    res = _minimize(law, d, law.starts(d))
    th = res.x
    flat = identification(Law("dilution", C, False), d)
    # Each offset's interval is a two-sided contrast of seed clusters: delta_c is (to first order) the mean
    # residual of category c in the Kmax clusters minus that in the clusters below Kmax, each cluster's noise
    # shared by its budgets. So its variance is var_g(cluster mean residual) / n per side, with n - 1 df
    # (Cochran-Cox t, inference.t_components). The percentile bootstrap it replaces (clusters within K, runs
    # where a category would drop) never varied a lone Kmax cluster and had 3 units otherwise: it held the
    # true 0 in 56% of the cells with one K = 11 seed under the measured clustered noise (BENCHMARKS.md).
    cluster = d["cluster"] if "cluster" in d else d["run"]
    resid = d["L"] - law.predict(th, d)
    hi_side = d["K"] == k_max
    n_max = len(np.unique(cluster[hi_side]))

    def side(c, mask):
        m = mask & (d["cat"] == c)
        return np.array([resid[m & (cluster == g)].mean() for g in np.unique(cluster[m])])

    sides = {c: (side(c, hi_side), side(c, ~hi_side)) for c in testable}
    pooled = _pooled(sides)
    lo, hi = np.array(law.bounds(d)).T
    table = []
    for i, c in enumerate(testable):
        name, est = d["categories"][c], float(th[C + 3 + i])
        ident = "beta" not in flat and f"E[{name}]" not in flat
        on_bound = bool(est <= lo[C + 3 + i] + 1e-6 or est >= hi[C + 3 + i] - 1e-6)
        row = _cluster_interval(est, [sides[c]], pooled) if ident else None
        table.append({"category": name, "difference": est, "ci90": row["ci90"] if row else [None, None],
                      "ci95": row["ci95"] if row else [None, None], "p": row["p"] if row else 1.0,
                      "n_clusters": [len(sides[c][1]), len(sides[c][0])], "identified": ident, "at_bound": on_bound,
                      **({"note": row["note"]} if row and row["note"] else {})})
    verdict, why, mean = _verdict(table, sides, pooled, testable, at_max, d, k_max, margin, n_max)
    out.update(verdict=verdict, why=why, table=table, mean=mean, n_boot=0, converged=bool(res.success),
               fit={"s": float(th[C + 2]), "beta": float(th[C + 1]), "B": float(np.exp(th[C]))},
               clusters_at_K_max=n_max, unit="seed cluster",
               p_method="per category: the joint fit's residuals averaged per seed cluster, the Kmax side's variance "
                        "var / n with n - 1 df, the side below's pooled over categories, Cochran-Cox t; the mean over "
                        "categories: per Kmax cluster its mean over the categories (their shared noise counts), "
                        "below Kmax per category; Holm across the testable categories and their mean")
    return out


def _pooled(sides):
    """(variance, df) of a cluster's mean residual below Kmax, pooled over the categories (deviations from each
    category's own mean: a category held by one cluster below Kmax adds no degree of freedom, its floor
    absorbs that cluster's shared noise, but its offset still varies with it)."""
    devs = [lw - lw.mean() for _, lw in sides.values() if len(lw) >= 2]
    df = sum(len(x) - 1 for x in devs)
    return (float(sum((x ** 2).sum() for x in devs)) / df, df) if df else (None, 0)


def _cluster_interval(est, sides_list, pooled):
    """90% and 95% Cochran-Cox t intervals and p of est, the mean over len(sides_list) categories' offsets,
    each category given by its (Kmax clusters' mean residuals, clusters' below Kmax) arrays; pooled: the
    low side's (variance, df) per cluster (_pooled). The Kmax side's variance is the categories' own (one
    category) or that of each Kmax cluster's mean over them (their shared noise counts once per cluster).
    Fewer than two Kmax clusters, or no low-side df: no interval (the shared noise cannot be told from an
    offset)."""
    from analysis.inference import MIN_UNITS, t_components
    k = len(sides_list)
    hs = [h for h, _ in sides_list]
    n_hi = min(len(h) for h in hs)
    none = {"ci90": [None, None], "ci95": [None, None], "p": 1.0}
    if n_hi < MIN_UNITS or not pooled[1]:
        return dict(none, note=f"undecided: {n_hi} seed cluster{'s' if n_hi != 1 else ''} at the largest K, "
                               f"{pooled[1]} df below it (an interval needs >= {MIN_UNITS} clusters on each side)")
    if len({len(h) for h in hs}) == 1:
        m = np.mean(np.stack(hs), axis=0)
        comps = [(float(np.var(m, ddof=1)) / len(m), len(m) - 1)]
    else:
        comps = [(float(np.var(h, ddof=1)) / len(h) / k ** 2, len(h) - 1) for h in hs]
    # below Kmax the categories' clusters are mostly different ones (specialists): independent per category
    comps.append((pooled[0] * sum(1.0 / len(lw) for _, lw in sides_list) / k ** 2, pooled[1]))
    r95, r90 = t_components(est, comps), t_components(est, comps, TOST_LEVEL)
    return {"ci90": r90["ci95"], "ci95": r95["ci95"], "p": r95["p"] if r95["p"] is not None else 1.0,
            "note": r95["note"]}


def _verdict(table, sides, pooled, testable, at_max, d, k_max, margin, n_max):
    """(verdict, why, the mean offset row) from the per-category offsets (h1_offsets' rules); marks each
    row's holm_rejected."""
    usable = [r for r in table if r["identified"] and not r["at_bound"] and r["ci90"][0] is not None]
    # the mean offset over the testable categories (equal weight): the statistic the equivalence test reads.
    # Per category, 3 clusters at Kmax leave each delta_c's 90% interval at ~±0.05 nats in P1 (measured), wider
    # than any margin a floor comparison needs; their mean averages the per-category noise
    cols = [testable.index(d["categories"].index(r["category"])) for r in usable]
    mean = None
    if usable:
        est = float(np.mean([r["difference"] for r in usable]))
        row = _cluster_interval(est, [sides[testable[i]] for i in cols], pooled)
        mean = {"category": "mean", "difference": est, "ci90": row["ci90"], "ci95": row["ci95"], "p": row["p"],
                "n_categories": len(usable), **({"note": row["note"]} if row["note"] else {})}
    # one family: the mean and every category (Holm, family-wise 5%): a difference anywhere is a rejection
    fam = usable + ([mean] if mean else [])
    rej = holm([r["p"] for r in fam])
    for r in table + ([mean] if mean else []):
        r["holm_rejected"] = None
    for r, x in zip(fam, rej):
        r["holm_rejected"] = bool(x)
    n_rej = int(sum(rej[:len(usable)]))
    untested = len(at_max) - len(testable) + len(table) - len(usable)
    if n_max < 2:
        verdict, why = "undecided", (f"{n_max} seed cluster at K = {k_max}: its shared noise cannot be told from a "
                                     "floor offset (an interval needs >= 2 clusters there)")
    elif mean is None or mean["ci90"][0] is None:
        verdict, why = "undecided", "no testable category with an interval" + (
            f" ({mean['note']})" if mean and mean.get("note") else "")
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
