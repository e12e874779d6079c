"""The saturating power law y = E + B * x^(-a) (E >= 0, B >= 0, a > 0), shared by the specialist fits of
the transfer matrix, the per-size loss curves of the IsoFLOP slices and the Hilberg fit of compression
rates; and the small statistics helpers the three share (percentile intervals that tolerate infinities,
Spearman's rank correlation).

For a fixed exponent a the law is linear in (E, B), so the fit is one-dimensional: non-negative least
squares for (E, B) inside a bounded search over a (variable projection). This is deterministic, needs
no starting point and cannot wander off to a local minimum in (E, B).
"""
import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import rankdata

A_RANGE = (1e-3, 3.0)   # exponents searched; a fit pinned at an end is flagged by the caller (at_bound)
GRID = 60               # coarse log-spaced grid over A_RANGE before the bounded refinement


def _linear_part(x, y, a, w):
    """(E, B, weighted RSS) of the best non-negative E, B for exponent a (closed-form non-negative least
    squares with two columns: the unconstrained solution, else the better of the two one-column ones)."""
    X = x ** (-a)
    sw = w.sum()
    mx, my = (w * X).sum() / sw, (w * y).sum() / sw
    var = (w * (X - mx) ** 2).sum()
    B = (w * (X - mx) * (y - my)).sum() / var if var > 0 else 0.0
    E = my - B * mx
    if B < 0 or E < 0:
        cands = [(max(my, 0.0), 0.0), (0.0, max((w * X * y).sum() / (w * X * X).sum(), 0.0))]
        E, B = min(cands, key=lambda c: (w * (y - c[0] - c[1] * X) ** 2).sum())
    return E, B, float((w * (y - E - B * X) ** 2).sum())


def _grid_rss(x, y, a, w):
    """Weighted RSS of the unconstrained (E, B) fit at each exponent of a (vectorised; a coarse search only,
    the refinement applies the non-negativity)."""
    X = x[None, :] ** (-a[:, None])
    sw = w.sum()
    mx, my = (w * X).sum(1) / sw, (w * y).sum() / sw
    Xc, yc = X - mx[:, None], y - my
    var = (w * Xc ** 2).sum(1)
    B = np.where(var > 0, (w * Xc * yc).sum(1) / np.where(var > 0, var, 1), 0.0)
    return ((w * (yc - B[:, None] * Xc) ** 2).sum(1))


def fit_power_law(x, y, w=None, a_range=A_RANGE):
    """Least-squares fit of y = E + B x^-a. Returns {"E", "B", "a", "rss", "at_bound"}; at_bound is True when
    the exponent sits at an end of a_range (the data do not pin it down). x > 0; w: optional weights
    (bootstrap multiplicities)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=float)
    lo, hi = np.log(a_range[0]), np.log(a_range[1])
    grid = np.linspace(lo, hi, GRID)
    rss = _grid_rss(x, y, np.exp(grid), w)
    k = int(np.argmin(rss))
    bracket = (grid[max(k - 1, 0)], grid[min(k + 1, GRID - 1)])
    res = minimize_scalar(lambda g: _linear_part(x, y, np.exp(g), w)[2], bounds=bracket, method="bounded",
                          options={"xatol": 1e-7})
    g = res.x if res.fun <= _linear_part(x, y, np.exp(grid[k]), w)[2] else grid[k]
    E, B, r = _linear_part(x, y, np.exp(g), w)
    step = grid[1] - grid[0]
    return {"E": float(E), "B": float(B), "a": float(np.exp(g)), "rss": r,
            "at_bound": bool(g - lo < step / 2 or hi - g < step / 2)}


def profile_interval(x, y, w=None, a_range=A_RANGE, level=0.95):
    """Profile-likelihood interval of the exponent a: the a whose best (E, B) give
    RSS(a) <= RSS_min * (1 + F(level; 1, n - 3) / (n - 3)) (the F-test inversion for one parameter of a
    least-squares fit with Gaussian errors). An end at a bound of a_range means "open on that side"."""
    from scipy.optimize import brentq
    from scipy.stats import f as f_dist
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=float)
    dof = len(x) - 3
    if dof < 1:
        return [None, None]
    best = fit_power_law(x, y, w, a_range)
    thr = best["rss"] * (1 + f_dist.ppf(level, 1, dof) / dof)
    excess = lambda g: _linear_part(x, y, np.exp(g), w)[2] - thr
    g0, ends = np.log(best["a"]), []
    for edge in (np.log(a_range[0]), np.log(a_range[1])):
        ends.append(edge if excess(edge) <= 0 else brentq(excess, min(g0, edge), max(g0, edge), xtol=1e-9))
    return [float(np.exp(ends[0])), float(np.exp(ends[1]))]


def floor_interval(x, y, w, a_ci, points=60):
    """Interval of the floor E along the ridge of best fits over the exponent's interval a_ci: the E of
    the best (E, B) for each a inside it. E and a are strongly correlated in this law, so this is close to
    E's own profile interval (it cannot be wider; slightly narrower where the ridge is not E's profile)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=float)
    if a_ci[0] is None:
        return [None, None]
    E = [_linear_part(x, y, a, w)[0] for a in np.geomspace(a_ci[0], a_ci[1], points)]
    return [float(min(E)), float(max(E))]


def predict(fit, x):
    return fit["E"] + fit["B"] * np.asarray(x, dtype=float) ** (-fit["a"])


def interval(values, level=0.95):
    """Percentile interval [lo, hi] of bootstrap replicates; order statistics, so +-inf replicates are
    kept as such (a replicate whose loss fell below the fitted floor has infinite effective data)."""
    v = np.sort(np.asarray([x for x in values if not np.isnan(x)], dtype=float))
    if len(v) == 0:
        return [None, None]
    q = (1 - level) / 2
    lo = v[int(np.floor(q * (len(v) - 1)))]
    hi = v[int(np.ceil((1 - q) * (len(v) - 1)))]
    return [float(lo), float(hi)]


def spearman(a, b):
    """Spearman's rank correlation (average ranks for ties; infinities rank at the ends); nan when either
    side is constant or fewer than 3 points."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if len(a) < 3:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def decided(ci, null=0.0):
    """'> null', '< null' or 'undecided' for an interval."""
    if ci[0] is None:
        return "undecided"
    if ci[0] > null:
        return f"> {null:g}"
    if ci[1] < null:
        return f"< {null:g}"
    return "undecided"
