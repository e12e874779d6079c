"""H7 (exploratory): Hilberg's law for each category's text, from compression curves.

For a stationary source the best code length of an n-symbol prefix grows as C(n) = h*n + A*n^beta_H
(Hilberg's conjecture: beta_H around 0.5-0.9 for natural language; 0 for a finite-state source), so the
rate r(n) = C(n) / n falls towards the entropy rate h as

    r(n) = h + A * n^(beta_H - 1).

Per category we concatenate the training text (papers in store order, joined by newlines), compress
prefixes of geometrically spaced lengths n with PPMd (pyppmd) and xz (lzma) and fit that law to each
curve. Units: bits per byte of UTF-8 text when the store was tokenized with the bundled tokenizer (the text
can be decoded); otherwise bits per token of the token-id stream (uint16) -- every result names its unit.

Intervals: the profile likelihood of beta_H (F-test inversion) and h along that profile. Nested
prefixes make the residuals of one curve correlated, so these intervals describe the fit's sensitivity to
curve-level noise, not the sampling variability of the text itself; they are labelled so.

The plan's exploratory prediction is beta_c ~ 1 - beta_H,c (the data exponent of a category's loss
curve); correlate() gives Spearman's rho across categories with an interval over categories.

The curves are costly (a few seconds per MB), so analyse() caches them as JSON keyed by the store id and
every parameter that changes them.
"""
import lzma
from pathlib import Path

import numpy as np

from analysis import inference
from analysis import powerlaw as pl
from analysis import transfer as tr

N_MIN = 1024                # shortest prefix (the compressors' fixed headers are subtracted, see below)
POINTS = 16                 # prefix lengths per curve, geometrically spaced up to the whole text
PPMD_ORDER, PPMD_MEM = 6, 256 << 20
XZ_PRESET = 6
A_RANGE = (1e-3, 0.999)     # 1 - beta_H: beta_H in (0.001, 0.999)


def _ppmd(b):
    import pyppmd
    return pyppmd.compress(b, max_order=PPMD_ORDER, mem_size=PPMD_MEM)


COMPRESSORS = {"ppmd": _ppmd, "xz": lambda b: lzma.compress(b, preset=XZ_PRESET)}


# ----------------------------------------------------------------------------------------------------
# curves

def category_stream(store, category, max_bytes, decode=None, split="train"):
    """(bytes, unit, bytes per symbol): the category's text (decoded, if decode is given) or its token ids,
    papers in store order, cut at max_bytes."""
    parts, size = [], 0
    for pid in store.papers(split, [category]):
        tok = store.paper_tokens(pid)
        b = decode(tok).encode("utf-8") + b"\n" if decode else np.asarray(tok, dtype="<u2").tobytes()
        parts.append(b)
        size += len(b)
        if size >= max_bytes:
            break
    data = b"".join(parts)[:max_bytes]
    if decode:
        return data, "bits per byte", 1
    return data[:len(data) - len(data) % 2], "bits per token", 2


def prefix_grid(total, n_min=N_MIN, points=POINTS):
    """Geometrically spaced prefix lengths (in symbols) from n_min to total; empty if total < 4 * n_min."""
    if total < 4 * n_min:
        return []
    return sorted({int(round(v)) for v in np.geomspace(n_min, total, points)})


def compression_curve(data, symbol_bytes, grid, compressor):
    """Rates r(n) = 8 * (compressed bytes - those of an empty input) / n for each prefix length n (bits per
    symbol). The container's fixed header (xz: ~60 bytes) is not the text's code length; left in, it adds
    a 1/n term that would pass for a Hilberg exponent near 0."""
    comp = COMPRESSORS[compressor]
    header = len(comp(b""))
    return [8 * (len(comp(data[:n * symbol_bytes])) - header) / n for n in grid]


# ----------------------------------------------------------------------------------------------------
# the fit

def fit_hilberg(n, r, level=0.95):
    """r(n) = h + A n^(beta_H - 1): point estimates; the profile-likelihood interval of beta_H and h's
    interval along the same profile (powerlaw.floor_interval); at_bound: 1 - beta_H sits at a bound of
    the search (beta_H is not pinned down). Least squares on relative errors (weights 1/r^2): a rate's
    noise scales with the rate, and the short prefixes have the larger rates."""
    n, r = np.asarray(n, dtype=float), np.asarray(r, dtype=float)
    w = 1 / r ** 2
    f = pl.fit_power_law(n, r, w, a_range=A_RANGE)
    a_ci = pl.profile_interval(n, r, w, A_RANGE, level)
    fitted = pl.predict(f, n)
    return {"h": f["E"], "A": f["B"], "beta_H": 1 - f["a"], "at_bound": f["at_bound"], "h_at_bound": f["E"] <= 0,
            "h_ci": pl.floor_interval(n, r, w, a_ci), "beta_H_ci": sorted(1 - v for v in a_ci),
            "rmse_relative": float(np.sqrt(np.mean((r / fitted - 1) ** 2))), "level": level}


def category_result(store, category, max_bytes, decode):
    data, unit, sb = category_stream(store, category, max_bytes, decode)
    grid = prefix_grid(len(data) // sb)
    out = {"unit": unit, "symbols": len(data) // sb, "n": grid}
    for name in COMPRESSORS:
        out[name] = compression_curve(data, sb, grid, name) if grid else []
        out[f"fit_{name}"] = fit_hilberg(grid, out[name]) if len(grid) >= 6 else None
    return out


def cache_key(store, max_bytes, decoded):
    return {"store_id": store.store_id, "max_bytes": int(max_bytes), "decoded": bool(decoded), "fit": "profile-v2", "n_min": N_MIN, "points": POINTS, "ppmd": [PPMD_ORDER, PPMD_MEM],
            "xz": XZ_PRESET}


def analyse(store, cache_dir, max_bytes=16_000_000, decode=None, progress=True):
    """{"key", "per_category": {c: curves and fits}}, read from CACHE_DIR/hilberg_<store id>.json when its
    key matches, computed and written there (atomically) otherwise."""
    import store as st
    from tqdm import tqdm
    key = cache_key(store, max_bytes, decode is not None)
    path = Path(cache_dir).expanduser() / f"hilberg_{store.store_id[:16]}.json"
    if path.is_file():
        try:
            import json
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                return cached
        except (OSError, ValueError):
            pass  # unreadable cache: recompute and overwrite
    per = {c: category_result(store, c, max_bytes, decode)
           for c in tqdm(store.categories, desc="hilberg", disable=not progress, leave=False)}
    out = {"key": key, "per_category": per}
    path.parent.mkdir(parents=True, exist_ok=True)
    st.write_json_atomic(path, out, indent=1)
    return out


# ----------------------------------------------------------------------------------------------------
# exploratory correlation and the report

def correlate(hil, exponents, compressor="ppmd", n_boot=1000, seed=0, level=0.95):
    """EXPLORATORY: Spearman's rho across categories between 1 - beta_H,c (compressor's fit) and the fitted
    data exponents {c: beta_c}; interval by resampling categories. Also the mean of beta_c - (1 - beta_H,c)."""
    cats = [c for c, r in hil["per_category"].items()
            if c in exponents and r.get(f"fit_{compressor}") and exponents[c] is not None]
    out = {"exploratory": True, "compressor": compressor, "categories": cats, "n": len(cats)}
    if len(cats) < 4:
        return {**out, "rho": None, "ci": [None, None], "verdict": "too few categories"}
    x = np.array([1 - hil["per_category"][c][f"fit_{compressor}"]["beta_H"] for c in cats])
    y = np.array([exponents[c] for c in cats], dtype=float)
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, len(cats), len(cats)) for _ in range(n_boot)]
    ci = inference.guarded(pl.interval([pl.spearman(x[i], y[i]) for i in idx], level), pl.spearman(x, y))
    gap = y - x
    return {**out, "rho": pl.spearman(x, y), "ci": ci, "verdict": pl.decided(ci),
            "mean_gap": float(gap.mean()), "mean_gap_ci": pl.interval([gap[i].mean() for i in idx], level)}


def markdown_section(hil, corr=None):
    per = hil["per_category"]
    unit = next((r["unit"] for r in per.values()), "bits per byte")
    L = ["## H7 (exploratory): compression curves and Hilberg exponents", "",
         f"r(n) = h + A·n^(β_H − 1) fitted to the compression rate ({unit}) of each category's concatenated "
         "training text; intervals: profile likelihood of the fit (curve-level noise only). * : β_H at a "
         "bound of the search, or h at its bound 0 (the curve has not flattened: the text is too short).", "",
         "| category | symbols | PPMd r(max n) | PPMd h | PPMd β_H | xz r(max n) | xz h | xz β_H |", "|---|---|---|---|---|---|---|---|"]
    for c, r in per.items():
        cells = []
        for name in COMPRESSORS:
            f = r.get(f"fit_{name}")
            last = f"{r[name][-1]:.3f}" if r[name] else "n/a"
            if f is None:
                cells += [last, "n/a", "n/a"]
                continue
            star, hstar = ("*" if f["at_bound"] else ""), ("*" if f.get("h_at_bound") else "")
            cells += [last, f"{f['h']:.3f}{hstar} [{f['h_ci'][0]:.3f}, {f['h_ci'][1]:.3f}]",
                      f"{f['beta_H']:.3f}{star} [{f['beta_H_ci'][0]:.3f}, {f['beta_H_ci'][1]:.3f}]"]
        L.append(f"| {c} | {r['symbols']:,} | " + " | ".join(cells) + " |")
    if corr is not None:
        rho = "n/a" if corr["rho"] is None else f"{corr['rho']:.3f} [{corr['ci'][0]:.3f}, {corr['ci'][1]:.3f}]"
        L += ["", f"Exploratory: Spearman ρ(1 − β_H,c [{corr['compressor']}], fitted β_c) over {corr['n']} "
              f"categories: {rho} ({corr['verdict']}). Not a primary test."]
    return L


# ----------------------------------------------------------------------------------------------------
# H7 in analyze.py's report: compression curves (cached) against the specialists' data exponents

CACHE_DIR = "~/.cache/arxiv-ergodic-scaling"  # baselines.py --cache_dir's default: one cache for both


def add_arguments(p):
    """analyze.py's flags for H7."""
    p.add_argument("--hilberg", action="store_true",
                   help="compute H7's compression curves when they are not cached yet (minutes per store; "
                   "baselines.py --hilberg computes the same cache)")
    p.add_argument("--cache_dir", default=CACHE_DIR, help="where H7's compression curves are cached, by store id")


def specialist_exponents(rows):
    """({category: fitted data exponent beta_c}, model, {category: why not}) from the K = 1 runs of the model
    with the most categories fitted (each category's own curve L = E_c + B_c D^-beta_c, >= 3 budgets)."""
    recs = [r for r in tr.runs_from_rows(rows) if not r["tagged"] and len(r["categories"]) == 1]
    best = ({}, None, {})
    for m in sorted({str(r["model"]) for r in recs}):
        spec, _ = tr._design([r for r in recs if str(r["model"]) == m])
        fits, why = tr.fit_specialists(spec)
        if len(fits) > len(best[0]) or best[1] is None:
            best = ({c: f["a"] for c, f in fits.items()}, m, why)
    return best


def read_hilberg_cache(store, cache_dir):
    """The cached curves of this store (whatever parameters baselines.py used), or None."""
    import json
    path = Path(cache_dir).expanduser() / f"hilberg_{store.store_id[:16]}.json"
    try:
        hil = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return hil if (hil.get("key") or {}).get("store_id") == store.store_id else None


def h7(rows, store, store_why, args):
    """{"hilberg": curves and fits per category, "corr": the exploratory correlation} or {"why"}."""
    if store is None:
        return {"why": f"no compression curves: {store_why}"}
    hil = read_hilberg_cache(store, args.cache_dir)
    if hil is None and getattr(args, "hilberg", False):  # baselines.py --hilberg's computation, same cache
        from random_window_dataset import bundled_decoder
        hil = analyse(store, args.cache_dir, decode=bundled_decoder(store))
    if hil is None:
        return {"why": f"no compression curves cached for store {store.store_id[:16]} under {args.cache_dir}: run "
                       "`python baselines.py --data_dir <store> --hilberg` (minutes; cached by store id) or pass "
                       "--hilberg"}
    exps, model, why = specialist_exponents(rows)
    corr = correlate(hil, exps, "ppmd", n_boot=max(args.n_boot, 2), seed=args.seed)
    corr["model"], corr["exponents"], corr["not_fitted"] = model, exps, why
    return {"hilberg": hil, "corr": corr}


def h7_verdict(h, default):
    """The H7 row of the verdicts table (exploratory: the correlation's sign, or undecided); h: h7()'s."""
    if "corr" not in h:
        return default
    c = h["corr"]
    if c["rho"] is None:
        return ("undecided", f"exploratory; compression curves of {len(h['hilberg']['per_category'])} categories, "
                f"but {c['n']} with a fitted data exponent beta_c (specialists at >= {tr.MIN_BUDGETS} "
                "budgets); the correlation needs 4")
    v = {"> 0": "supported", "< 0": "not supported"}.get(c["verdict"], "undecided")
    return (v, f"exploratory: Spearman rho(1 - beta_H,c, beta_c) = {c['rho']:.3f} "
               f"[{c['ci'][0]:.3f}, {c['ci'][1]:.3f}] over {c['n']} categories")


def report_section(h):
    """The report's H7 section (one line when there are no curves)."""
    if "hilberg" not in h:
        return ["", "## H7 (exploratory): Hilberg exponents", "", f"Not analysed: {h['why']}."]
    L = [""] + markdown_section(h["hilberg"], h["corr"])
    c = h["corr"]
    if c["rho"] is None:
        L += ["", f"Exploratory correlation not computed: {c['n']} categories have both a Hilberg fit and a fitted "
              f"data exponent (specialists at >= {tr.MIN_BUDGETS} budgets); it needs 4."]
    return L


def public(h):
    """The fits.json part: the curves' fits per category and the correlation (no curves)."""
    return {"why": h["why"]} if "why" in h else {
        "key": h["hilberg"].get("key"), "corr": h["corr"],
        "per_category": {c: {k: r.get(k) for k in ("unit", "symbols", "fit_ppmd", "fit_xz")}
                         for c, r in h["hilberg"]["per_category"].items()}}
