"""Odd designs found by review (session 19): parameters that such designs cannot pin must be marked not
identified, and a verdict needs at least one unit to compare."""
import numpy as np

import simulate
from analysis import hypotheses, identifiability, laws
from analysis.law_data import fit_data
from analysis.runs import collect_runs, run_rows


def split_categories_sweep(root):
    """Two budgets; five categories only as specialists (K = 1), six only in K = 2 runs: every category has
    two design points, at its own K. Each difference is B g(K) (D1^-beta - D2^-beta), so B, beta (and s,
    which enters as beta * s) trade off freely: the profile of the fit's objective in beta is flat."""
    rng = np.random.default_rng(0)
    P = simulate.PERM
    for D in (10e6, 90e6):
        for i in range(5):
            simulate.make_run(root, simulate.rid_of("pythia-31m", 1, i, D), [P[i]], D, i, rng)
        for j, seed in enumerate((5, 7, 9)):
            cats = [P[5 + 2 * j], P[min(6 + 2 * j, 10)]]
            simulate.make_run(root, simulate.rid_of("pythia-31m", 2, seed, D, cats=cats), cats, D, seed, rng)
    return fit_data(run_rows(collect_runs(root)))


def test_two_budgets_with_categories_split_across_k_leave_beta_and_s_unidentified(tmp_path):
    d = split_categories_sweep(tmp_path)
    flat = identifiability.identification(laws.Law("dilution", len(d["categories"]), False), d)
    assert {"beta", "B", "s"} <= set(flat) and all(f"E[{c}]" in flat for c in d["categories"])
    # the disjoint form has no free share factor, but its B and beta still trade off
    assert {"beta", "B"} <= set(identifiability.identification(laws.Law("disjoint", len(d["categories"]), False), d))


def test_two_budget_pairs_at_one_k_still_pin_beta(tmp_path):
    """Categories at (10M, 30M) and at (30M, 90M), all specialists: two different differences at one K."""
    rng = np.random.default_rng(1)
    for i, budgets in enumerate([(10e6, 30e6)] * 3 + [(30e6, 90e6)] * 3):
        for D in budgets:
            simulate.make_run(tmp_path, simulate.rid_of("pythia-31m", 1, i, D), [simulate.PERM[i]], D, i, rng)
    d = fit_data(run_rows(collect_runs(tmp_path)))
    assert "beta" not in identifiability.identification(laws.Law("shared", len(d["categories"]), False), d)


def test_h1_with_no_shared_category_is_undecided():
    """Specialists and the largest-K fit sharing no category: H1 said 'supported' (every one of zero
    intervals lies within the margin)."""
    a = {"subset": "K == 1", "params": {"E[x]": {"estimate": 1.0}}, "_boot": [{"E[x]": 1.0}] * 5}
    b = {"subset": "K == 2", "params": {"E[y]": {"estimate": 1.0}}, "_boot": [{"E[y]": 1.0}] * 5}
    h = hypotheses.h1_floors(a, b, 0.02)
    assert h["verdict"] == "undecided" and "no category" in h["why"]


def test_one_run_at_k_above_one_decides_no_form():
    """Specialists of four categories at three budgets and ONE K = 3 run (90M), dilution truth s = 0.5: the
    held-out comparison named 'shared' the better form than dilution (decided), all on one run's K contrast
    predicted from fits that had only K = 1 (s extrapolated from its start). No interval without two K
    values held out in >= 2 runs each."""
    import tempfile
    from analysis import forms
    root = tempfile.mkdtemp()
    rng = np.random.default_rng(0)
    for D in (10e6, 90e6, 810e6):
        for s in range(4):
            simulate.make_run(root, simulate.rid_of("pythia-31m", 1, s, D), [simulate.PERM[s]], D, s, rng)
    simulate.make_run(root, simulate.rid_of("pythia-31m", 3, 0, 90e6), simulate.select(3, 0), 90e6, 0, rng)
    d = fit_data(run_rows(collect_runs(root)))
    c = forms.compare_forms(d, ["dilution", "disjoint", "shared"], False, 100, 0)
    assert all(p["better"] == "undecided" and p["ci95"] == [None, None] for p in c["pairs"])
    assert "no K contrast" in c["why_no_interval"]
