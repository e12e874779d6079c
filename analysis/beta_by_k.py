"""Beta by K (issue 22), a named diagnostic: one data exponent for every K against one per K (separate
learning curves with shared floors, nested), with the per-K exponents' intervals from the stratified
delete-one-seed-cluster jackknife (as the law's own, issue 21) and the finding it supports ("learning curves
flatten / steepen with K")."""
import numpy as np

from analysis.huber import huber
from analysis.inference import stratified_jackknife
from analysis.laws import (BOOT_CHUNK, BOOT_TOL, FORMS, Law, _ci, _minimize, identification, jackknife_weights,
                          minimize_starts)
from analysis.workers import run_jobs


class LawBetaK(Law):
    """Separate learning curves per K with shared floors: L = E_cat + B_K * X^-beta_K [+ A N^-alpha], X as in
    the dilution law with s fixed (at the one-beta fit's estimate); vector [log E_0.., log B_K.., beta_K..,
    (log A, alpha)]. With B_K = B and beta_K = beta it is the one-beta law at that s (nested); an amplitude
    per K too, because with B shared a wrong s would have to be absorbed by the exponents."""

    def __init__(self, n_cats, Ks, s, with_n):
        super().__init__("shared", n_cats, with_n)
        self.form, self.fixed_s, self.Ks = "dilution_beta_by_K", float(s), [int(k) for k in Ks]
        self._nk = len(self.Ks)
        self.names = ["logE"] * n_cats + [f"logB[K={k}]" for k in self.Ks] + [f"beta[K={k}]" for k in self.Ks] + \
            (["logA", "alpha"] if with_n else [])

    def unpack(self, th):
        C, nk = self.C, self._nk
        out = {"logE": th[:C], "logB": np.asarray(th[C:C + nk]), "betas": np.asarray(th[C + nk:C + 2 * nk]),
               "s": self.fixed_s}
        if self.with_n:
            out["logA"], out["alpha"] = th[C + 2 * nk], th[C + 2 * nk + 1]
        return out

    def _parts(self, th, d):
        p = self.unpack(th)
        k = np.searchsorted(self.Ks, d["K"])
        logX = self.fixed_s * np.log(d["Dc"]) + (1 - self.fixed_s) * np.log(d["D"])
        E = np.exp(p["logE"][d["cat"]])
        dterm = np.exp(p["logB"][k] - p["betas"][k] * logX)
        nterm = np.exp(p["logA"] - p["alpha"] * np.log(d["N"])) if self.with_n else 0.0
        return p, k, logX, E, dterm, nterm

    def predict(self, th, d):
        _, _, _, E, dterm, nterm = self._parts(th, d)
        return E + dterm + nterm

    def objective(self, th, d, w=None):
        p, k, logX, E, dterm, nterm = self._parts(th, d)
        pred = E + dterm + nterm
        hub, dh = huber(np.log(pred) - np.log(d["L"]))
        dh = dh / pred
        if w is not None:
            hub, dh = hub * w, dh * w
        C, nk = self.C, self._nk
        g = np.zeros_like(np.asarray(th, dtype=float))
        g[:C] = np.bincount(d["cat"], weights=dh * E, minlength=C)
        g[C:C + nk] = np.bincount(k, weights=dh * dterm, minlength=nk)
        g[C + nk:C + 2 * nk] = np.bincount(k, weights=dh * dterm * -logX, minlength=nk)
        if self.with_n:
            g[C + 2 * nk] = np.sum(dh * nterm)
            g[C + 2 * nk + 1] = np.sum(dh * nterm * -np.log(d["N"]))
        return float(hub.sum()), g

    def centre_pairs(self, d):
        """laws._minimize optimises each (log B_K, beta_K) centred at its own K's median log X, as it does the
        one-beta law's (laws._centre): uncentred, the tight per-K refits crawled along each K's ridge (most of
        a full analysis's CPU; the same or a lower minimum, the same coverage: BENCHMARKS.md, session 24)."""
        k = np.searchsorted(self.Ks, d["K"])
        logX = self.fixed_s * np.log(d["Dc"]) + (1 - self.fixed_s) * np.log(d["D"])
        C, nk = self.C, self._nk
        x0 = np.array([float(np.median(logX[k == i])) if np.any(k == i) else 0.0 for i in range(nk)])
        return np.arange(C, C + nk), np.arange(C + nk, C + 2 * nk), x0

    def grid_starts(self, d):
        """The one-beta law's grid of starts (Law.starts), every K at the same start."""
        return [self.start_from(t) for t in Law("shared", self.C, self.with_n).starts(d)]

    def bounds(self, d):
        b = Law.bounds(self, d)  # the one-beta law with s fixed: [E.., B, beta, (A, alpha)]
        C = self.C
        return b[:C] + [b[C]] * self._nk + [b[C + 1]] * self._nk + b[C + 2:]

    def start_from(self, plain_theta):
        """From the one-beta fit (s fixed): every B_K at B, every beta_K at beta — the nested model's point."""
        C = self.C
        th = list(plain_theta[:C]) + [plain_theta[C]] * self._nk + [plain_theta[C + 1]] * self._nk
        if self.with_n:
            th += list(plain_theta[-2:])
        return np.array(th, dtype=float)


def _without_s(base, th):
    """A one-beta vector of base without s (where s is free: [E.., B, beta, (A, alpha)], start_from's layout)."""
    if base.fixed_s is not None:
        return np.asarray(th, dtype=float)
    C = base.C
    return np.concatenate([th[:C + 2], th[C + 3:]])


def _lone_starts(lk, base, d, w, th1, r1):
    """The extra starts of a deletion that takes a K's only seed cluster: the floors lose that K's pinning and
    the refit from the point estimate stopped in another valley (objective 0.2% above, beta_1 0.039 against
    0.060, on tests/test_inference.py's one-cluster-per-K sweep), so also the nested point of this deletion's
    one-beta fit r1 (s free: enough there). With s fixed (r1 None) that point alone stayed in the point's
    valley (from th1 the shared form's one-beta refit kept beta 0.041 against the multi-start's 0.220; the
    disjoint form's found 0.036 and its nested point kept beta_1 0.039): r1 from th1 and the law's grid (as
    fit_law), and _fit_point's grid of per-K starts too (7 more starts per such deletion, only here)."""
    if r1 is not None:
        return [lk.start_from(_without_s(base, r1.x))]
    sc = max(base.objective(th1, d, w)[0], 1e-300)
    r1 = _minimize(base, d, [th1] + base.starts(d), w, tol=BOOT_TOL, scale=sc)
    return ([lk.start_from(r1.x)] if np.all(np.isfinite(r1.x)) else []) + lk.grid_starts(d)


def _refits(job):
    """The delete-one-unit refits of one chunk of weight vectors, each from the point estimate (and, where the
    deletion takes a K's only cluster, also from _fit_point's starts: _lone_starts), of the whole
    procedure: the one-beta law first (where its s is free: s moves with the deletion), then the per-K law at
    that s (which barely matters: within one K, X = D_c^s D^(1-s) is D K^-s up to the category's token share,
    so s shifts log X by a constant that B_K absorbs; the test's intervals agree to 1e-4 with s held). None: a
    refit failed. (Measured on 20 P1 sweeps: refitting s barely moves the replicates, 106 of 120 intervals
    covered against 107 with s held: BENCHMARKS.md.)"""
    law, base, d, point, th1, ws = job
    out = []
    for w in ws:
        lk = law
        if base.fixed_s is None:
            r1 = _minimize(base, d, [th1], w, tol=BOOT_TOL, scale=max(base.objective(th1, d, w)[0], 1e-300))
            if not (r1.success and np.all(np.isfinite(r1.x))):
                out.append(None)
                continue
            lk = LawBetaK(law.C, law.Ks, base.unpack(r1.x)["s"], law.with_n)
        # _minimize's tight default tolerances, not BOOT_TOL: on the per-K law's flat floor-exponent valley
        # BOOT_TOL stopped a deletion's refit near the point estimate (beta_K 0.004 short, objective 2e-4 of
        # itself too high, on the test's sweep), shrinking the jackknife's spread: beta_1's interval came out
        # 30% too narrow (tests/test_repetition.py, independent refits). Tight, from the BOOT_TOL refit, each
        # (log B_K, beta_K) centred (LawBetaK.centre_pairs; uncentred, each refit ran to maxiter). Tight
        # tolerances end some refits in an abnormal line search at the objective's precision: such a refit
        # still counts when its objective is no worse than the BOOT_TOL refit's, which converged.
        sc = max(lk.objective(point, d, w)[0], 1e-300)
        starts = [point]
        if any(w[d["K"] == k].sum() == 0 for k in law.Ks):
            starts += _lone_starts(lk, base, d, w, th1, r1 if base.fixed_s is None else None)
        r0 = _minimize(lk, d, starts, w, tol=BOOT_TOL, scale=sc)
        r = _minimize(lk, d, [r0.x], w, scale=sc)
        if r0.success and not r.success and np.all(np.isfinite(r.x)) and \
                lk.objective(r.x, d, w)[0] <= lk.objective(r0.x, d, w)[0]:
            r.success = True
        out.append(r)
    return out


def _fit_point(d, fit, jobs):
    """(per-K law, one-beta law, Ks, s, the per-K fit) on d, s fixed at the one-beta fit's estimate."""
    Ks = sorted({int(k) for k in d["K"]})
    s = fit["params"]["s"]["estimate"] if "s" in fit["params"] else FORMS[fit["form"]]
    base = Law(fit["form"], len(d["categories"]), fit["_with_n"])
    law = LawBetaK(len(d["categories"]), Ks, s, fit["_with_n"])
    th0 = _without_s(base, np.asarray(fit["_theta"], dtype=float))
    # from the nested point and from the grid of starts of the law with one beta (every K at the same
    # start): a misfitting one-beta point sits in the wrong part of the floor-exponent valley. Tolerances
    # relative to the objective (_minimize's scale): unscaled, L-BFGS-B stopped 0.07 short in a poorly
    # pinned beta_K on a valley whose objective changed by 1e-7 of ~4e-4 (measured)
    starts = [law.start_from(th0)] + law.grid_starts(d)
    sc = max(min(law.objective(t, d)[0] for t in starts), 1e-300)
    res = minimize_starts(law, d, starts, jobs, scale=sc)
    if res.status == 2 and np.all(np.isfinite(res.x)):  # tight tolerances can end in an abnormal line search at
        # the objective's precision (a beta on its bound, centred): converged if BOOT_TOL from there finds no lower,
        # converging or failing its own first line search (on test_inference's one-run-per-K sweep it did: every
        # start reached that objective to 1e-16 of itself), "lower" beyond rounding: the check starts from log B
        # mapped to log B0 and back, and landed 1e-15 of the objective lower (tests/test_repetition.py). Never an
        # iteration limit (status 1): a crawl, unconverged
        chk = _minimize(law, d, [res.x], tol=BOOT_TOL, scale=sc)
        res.success = bool(chk.status in (0, 2) and chk.fun >= res.fun * (1 - 1e-12))
    return law, base, Ks, s, res


def _jackknife(law, base, d, point, th1, jobs):
    """The stratified delete-one-seed-cluster jackknife (laws.jackknife_weights, inference.stratified_jackknife,
    as the law's own intervals) of every beta_K and of beta_Kmin - beta_Kmax: ([per-K result], difference's
    result, summary). Refused (ci95 [None, None], the reason in "note") where deleting a unit leaves beta
    unidentified, where a K has one seed cluster (deleting it leaves beta_K with no data: its refit stays at
    the estimate and the jackknife never sees that cluster's noise), or where the jackknife itself refuses."""
    weights, strata, unpinned = jackknife_weights(base, d)
    C, nk = law.C, law._nk
    chunks = [(law, base, d, point, th1, weights[i:i + BOOT_CHUNK]) for i in range(0, len(weights), BOOT_CHUNK)]
    # in worker processes when there are several (the same refits, in order)
    refits = [r for part in (run_jobs(_refits, chunks, jobs) if jobs > 1 and len(chunks) > 1 else map(_refits, chunks))
              for r in part]
    ok = lambda r: r is not None and r.success and np.all(np.isfinite(r.x))
    reps = np.array([r.x[C + nk:C + 2 * nk] if ok(r) else [np.nan] * nk for r in refits], dtype=float).reshape(-1, nk)
    est = np.asarray(point[C + nk:C + 2 * nk], dtype=float)
    lone = {k: f"K = {k} has {int((strata == k).sum())} seed cluster(s): deleting one leaves beta_K without data "
               "(an interval needs >= 2)" for k in law.Ks if (strata == k).sum() < 2}
    why = {k: lone.get(k) or (f"deleting one seed cluster leaves beta not identified ({unpinned['beta']})"
                              if "beta" in unpinned else None) for k in law.Ks}
    out = []
    for i, k in enumerate(law.Ks + [None]):
        e, r = (est[i], reps[:, i]) if k is not None else (est[0] - est[-1], reps[:, 0] - reps[:, -1])
        j = stratified_jackknife(float(e), list(r), strata)
        no = why[k] if k is not None else (why[law.Ks[0]] or why[law.Ks[-1]])
        if no:
            j.update(ci95=[None, None], note=f"no interval: {no}")
        out.append(j)
    summary = {"units": len(weights), "not_converged": int(np.isnan(reps[:, 0]).sum()),
               "strata": {int(h): int((strata == h).sum()) for h in np.unique(strata)},
               "method": "delete-one-seed-cluster jackknife, stratified by K (each stratum's variance from its own "
                         "clusters, n_h - 1 df; a stratum of one cluster pooled with the next smaller K's), "
                         "Cochran-Cox t; each deletion refits s (the one-beta law) and then every beta_K, from the "
                         "point estimate"}
    return out[:-1], out[-1], summary


def beta_by_K(d, fit, n_boot, jobs=1):
    """The nested comparison of one learning curve (fit: the dilution fit on d) against one per K value
    (LawBetaK: an amplitude and an exponent per K, shared floors, the same s): each beta_K with its 95%
    interval, the difference beta_Kmin - beta_Kmax with its interval (none with n_boot 0: point estimates
    only), and both objectives (Huber; the per-K model nests the one-beta model, so its objective is never
    larger). A finding when the difference's interval excludes 0: learning curves steepen (beta grows) or
    flatten with K. The intervals: the stratified jackknife over seed clusters (_jackknife), as the law's
    own (issue 21: one method, t with the strata's df, a refusal where a K has one seed cluster). On 40
    fabricated P1 sweeps (3 seed clusters at K = 11; benchmarks/bench_beta_by_k.py, BENCHMARKS.md, session
    23 after the review's fix; session 24's centred refits: the same tallies) it covered each beta_K
    97.5-100% and the difference 92.5% (the percentile bootstrap within K it replaces: 92.5-97.5%, 87.5%)."""
    if len({int(k) for k in d["K"]}) < 2 or "s" not in fit["params"] and fit["form"] == "dilution":
        return None
    law, base, Ks, s, res = _fit_point(d, fit, jobs)
    point, C, nk = res.x, law.C, len(Ks)
    flat = identification(base, d)
    jk, dj, summary = _jackknife(law, base, d, point, np.asarray(fit["_theta"], dtype=float), jobs) if n_boot else \
        (None, None, None)
    betas = [{"K": k, "estimate": float(point[C + nk + i]), "ci95": jk[i]["ci95"] if jk else [None, None],
              "n_points": int(np.sum(d["K"] == k))} for i, k in enumerate(Ks)]
    for b, j in zip(betas, jk or []):
        b.update(se=j["se"], note=j["note"])
    diff = float(point[C + nk] - point[C + 2 * nk - 1])
    diff_ci = dj["ci95"] if dj else [None, None]
    if "beta" in flat:
        finding = f"beta is not identified ({flat['beta']}): no per-K comparison"
        diff_ci = [None, None]
    elif diff_ci[0] is None:  # the refusal's note already begins "no interval: "; say it once
        why = (dj["note"] or "").removeprefix("no interval: ") if dj else "--n_boot 0: point estimates only"
        finding = f"no interval for the difference: {why}"
    elif diff_ci[0] > 0 or diff_ci[1] < 0:
        finding = (f"learning curves {'flatten' if diff > 0 else 'steepen'} with K: beta {betas[0]['estimate']:.3g} "
                   f"at K = {Ks[0]} vs {betas[-1]['estimate']:.3g} at K = {Ks[-1]} (difference {diff:.3g}, 95% "
                   f"{_ci(diff_ci, 3)}): one beta for every K misdescribes these data")
    else:
        finding = (f"no evidence that beta changes with K: beta {betas[0]['estimate']:.3g} at K = {Ks[0]} vs "
                   f"{betas[-1]['estimate']:.3g} at K = {Ks[-1]}, difference 95% {_ci(diff_ci, 3)} includes 0")
    return {"name": "dilution_beta_by_K", "of_fit": f"{fit['form']} [{fit.get('subset', 'all')}]", "s_fixed": float(s),
            "betas": betas, "difference": {"between": [Ks[0], Ks[-1]], "estimate": diff, "ci95": diff_ci,
                                           "se": dj["se"] if dj else None, "note": dj["note"] if dj else None},
            "objective_one_beta": base.objective(np.asarray(fit["_theta"]), d)[0],
            "objective_beta_by_K": law.objective(point, d)[0], "extra_parameters": 2 * (nk - 1),
            "converged": bool(res.success),
            "fit_error": float(np.sqrt(np.mean((np.log(law.predict(point, d)) - np.log(d["L"])) ** 2))),
            "jackknife": summary, "finding": finding}
