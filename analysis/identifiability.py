"""What a design cannot identify: the law parameters whose profile is flat on these runs (one K, one budget,
a category at too few design points, fewer than three model sizes). fit_law marks them "not identified"
and gives them no interval; H1's joint fit (analysis/floors.py) reads the same."""
import numpy as np


def identification(law, d):
    """{parameter: why} for the parameters these data cannot pin (a flat profile), from the design: s needs
    two K values (with one, D_c/D is one number and s only rescales B; with K = 1 alone D_c = D and s has no
    effect at all); beta and B need two budgets; a floor E_c needs its category at two budgets and in two
    runs; the N term (A, alpha) needs three model sizes."""
    out = {}
    d = dict(d, D=d.get("D_seen", d["D"]))  # the design's budgets, not the effective totals of a repetition fit
    Ks = np.unique(d["K"])
    budgets = np.unique(d["D"])
    if law.fixed_s is None and len(Ks) < 2:
        out["s"] = (f"every run has K = {int(Ks[0])}" + (" (D_c = D: s has no effect on any prediction)"
                                                         if Ks[0] == 1 else " (one D_c/D: s only rescales B)"))
    if len(budgets) < 2:
        out["beta"] = out["B"] = "a single budget: B and beta trade off freely"
        if law.fixed_s is None and "s" not in out:  # B D^-beta (D_c/D)^(-beta s): only beta * s is pinned
            out["s"] = "a single budget: s enters only as beta * s, and beta is not identified"
    else:
        # E_c absorbs each category's level, so beta shows only in how the loss changes between a category's
        # design points (budget, and for the forms with D_c, K): two points give one difference, which
        # B and beta can match in a continuum of ways; beta needs a category at three points, or two
        # categories at different pairs. Without it B, beta and every floor that depends on them are free.
        levels = {tuple(sorted({(D, 1 if law.fixed_s == 0.0 else K) for D, K in zip(d["D"][m], d["K"][m])}))
                  for m in (d["cat"] == i for i in range(len(d["categories"])))}
        if max(map(len, levels)) < 3 and not _two_budget_pairs(levels, law.fixed_s is None):
            why = ("each category has two design points (budget" + ("" if law.fixed_s == 0.0 else " x K") +
                   "), the same two or pairs no one K shares: B, beta and the floors trade off freely "
                   "(three budgets pin them)")
            out["beta"] = out["B"] = why
            out.update({f"E[{c}]": why for c in d["categories"]})
            if law.fixed_s is None and "s" not in out:  # as with one budget: only beta * s is pinned
                out["s"] = "beta is not identified (" + why.split(":")[0] + "): s enters only as beta * s"
    for i, c in enumerate(d["categories"]):
        m = d["cat"] == i
        nb, nr = len(np.unique(d["D"][m])), len(np.unique(d["run"][m]))
        if nb < 2 or nr < 2:
            out[f"E[{c}]"] = (f"{c} is in {nr} run(s) at {nb} budget(s): its floor and the power-law term "
                              "cannot be told apart")
    if law.with_n and len(np.unique(d["N"])) < 3:
        out["A"] = out["alpha"] = f"{len(np.unique(d['N']))} model sizes: A and alpha need three"
    return out


def _two_budget_pairs(levels, free_s):
    """Whether two two-point categories pin beta: each difference is B g (D1^-beta - D2^-beta), with g the
    share factor of its K (a free unknown when s is); two budget pairs at one K pin B and beta, the same
    pair at two K (or pairs at different K with s free, or a K contrast at one budget) do not."""
    pairs = {}
    for v in levels:
        if len(v) == 2 and v[0][0] != v[1][0] and (v[0][1] == v[1][1] or not free_s):
            pairs.setdefault(v[0][1] if free_s else 0, set()).add((v[0][0], v[1][0]))
    return any(len(b) >= 2 for b in pairs.values())
