"""Beta by K (issue 22), a named diagnostic: one data exponent for every K against one per K (separate
learning curves with shared floors, nested), with the per-K exponents' intervals from the seed-cluster
bootstrap and the finding it supports ("learning curves flatten / steepen with K")."""
import numpy as np

from analysis.huber import huber
from analysis.laws import (BOOT_CHUNK, BOOT_TOL, FORMS, Law, _ci, _interval, _minimize, bootstrap_weights, identification,
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


BETA_K_BOOT = 200  # resamples at most for the per-K betas: a diagnostic, refitted from one start


def _refits(job):
    """The bootstrap refits of one chunk of resamples, each from the point estimate."""
    law, d, point, ws = job
    return [_minimize(law, d, [point], w, tol=BOOT_TOL, scale=max(law.objective(point, d, w)[0], 1e-300))
            for w in ws]


def beta_by_K(d, fit, n_boot, seed, jobs=1):
    """The nested comparison of one learning curve (fit: the dilution fit on d) against one per K value
    (LawBetaK: an amplitude and an exponent per K, shared floors, the same s):
    each beta_K with its 95% interval over seed clusters (bootstrap_weights; refits from the point estimate),
    the difference beta_Kmin - beta_Kmax with its interval, and both objectives (Huber; the per-K model
    nests the one-beta model, so its objective is never larger). A finding when the difference's interval
    excludes 0: learning curves steepen (beta grows) or flatten with K."""
    Ks = sorted({int(k) for k in d["K"]})
    if len(Ks) < 2 or "s" not in fit["params"] and fit["form"] == "dilution":
        return None
    s = fit["params"]["s"]["estimate"] if "s" in fit["params"] else FORMS[fit["form"]]
    base = Law(fit["form"], len(d["categories"]), fit["_with_n"])
    law = LawBetaK(len(d["categories"]), Ks, s, fit["_with_n"])
    th0 = np.asarray(fit["_theta"], dtype=float)
    if base.fixed_s is None:  # drop s from the one-beta vector: [E.., B, beta, (A, alpha)]
        C = base.C
        th0 = np.concatenate([th0[:C + 2], th0[C + 3:]])
    # from the nested point and from the grid of starts of the law with one beta (every K at the same
    # start): a misfitting one-beta point sits in the wrong part of the floor-exponent valley. Tolerances
    # relative to the objective (_minimize's scale): unscaled, L-BFGS-B stopped 0.07 short in a poorly
    # pinned beta_K on a valley whose objective changed by 1e-7 of ~4e-4 (measured)
    starts = [law.start_from(th0)] + [law.start_from(t) for t in Law("shared", law.C, law.with_n).starts(d)]
    res = minimize_starts(law, d, starts, jobs, scale=max(min(law.objective(t, d)[0] for t in starts), 1e-300))
    point = res.x
    flat = identification(base, d)
    weights, dropped, unit = bootstrap_weights(d, n_boot, seed, with_unit=True)
    C, nk = law.C, len(Ks)
    boots = []
    chunks = [(law, d, point, weights[i:i + BOOT_CHUNK]) for i in range(0, len(weights), BOOT_CHUNK)]
    # in the bootstrap's worker processes when there are several (the same refits, in order)
    for part in (run_jobs(_refits, chunks, jobs) if jobs > 1 and len(chunks) > 1 else map(_refits, chunks)):
        for r in part:
            if r.success and np.all(np.isfinite(r.x)):
                boots.append(r.x[C + nk:C + 2 * nk])
    boots = np.array(boots).reshape(-1, nk)
    betas = [{"K": k, "estimate": float(point[C + nk + i]), "ci95": _interval(boots[:, i]),
              "n_points": int(np.sum(d["K"] == k))} for i, k in enumerate(Ks)]
    diff = float(point[C + nk] - point[C + 2 * nk - 1])
    diff_ci = _interval(boots[:, 0] - boots[:, -1]) if len(boots) else [None, None]
    obj1 = base.objective(np.asarray(fit["_theta"]), d)[0]
    objK = law.objective(point, d)[0]
    if "beta" in flat:
        finding = f"beta is not identified ({flat['beta']}): no per-K comparison"
        diff_ci = [None, None]
    elif diff_ci[0] is None:
        finding = "no interval for the difference (too few resamples)"
    elif diff_ci[0] > 0 or diff_ci[1] < 0:
        finding = (f"learning curves {'flatten' if diff > 0 else 'steepen'} with K: beta {betas[0]['estimate']:.3g} "
                   f"at K = {Ks[0]} vs {betas[-1]['estimate']:.3g} at K = {Ks[-1]} (difference {diff:.3g}, 95% "
                   f"{_ci(diff_ci, 3)}): one beta for every K misdescribes these data")
    else:
        finding = (f"no evidence that beta changes with K: beta {betas[0]['estimate']:.3g} at K = {Ks[0]} vs "
                   f"{betas[-1]['estimate']:.3g} at K = {Ks[-1]}, difference 95% {_ci(diff_ci, 3)} includes 0")
    return {"name": "dilution_beta_by_K", "of_fit": f"{fit['form']} [{fit.get('subset', 'all')}]", "s_fixed": float(s),
            "betas": betas, "difference": {"between": [Ks[0], Ks[-1]], "estimate": diff, "ci95": diff_ci},
            "objective_one_beta": obj1, "objective_beta_by_K": objK, "extra_parameters": 2 * (nk - 1),
            "converged": bool(res.success),
            "fit_error": float(np.sqrt(np.mean((np.log(law.predict(point, d)) - np.log(d["L"])) ** 2))),
            "bootstrap": {"requested": n_boot, "used": len(boots), "dropped_missing_category": dropped, "unit": unit},
            "finding": finding}
