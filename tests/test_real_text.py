"""The analysis on real arXiv text, where template text hides behaviour (issue 20, item 5): on the template
corpus the noise floor is ~0.28 in log loss and every law "fits"; on real abstracts a Kneser-Ney sweep
shows what the KN pilot (EXPERIMENT_PLAN.md 6.1) found at full size: (1) the dilution law misfits, driven by
the specialists (K = 1) whose curve bends where they repeat their category, (2) transfer is structured
(cs<->cs pairs help, math<->cs pairs interfere), (3) the noise floor is the pilot's measured one.

Fixtures (tests/conftest.py): real_kn_subset, 75 KN runs on the shipped subset data/arxiv_abstracts_subset;
real_kn_full_k11, the pilot's 33 K = 11 runs on the shared 22,000-paper corpus (skipped without it). Both
fixtures with these tests: 79 CPU-s (session 22, loaded machine; ~270 when each KN run imported torch).
Each assertion below held on two independent draws of the subset sweep's explicit-category runs (seed 0 and
seed 1) and two bootstrap seeds; its margin is noted beside it."""
import json
from pathlib import Path

import pytest

from conftest import REAL_PAIRS_CS, REAL_PAIRS_MATH_CS

# KN sweeps through sweep.py on real text, then analyze.py; on one xdist worker, so that the other does not
# wait idle on the session fixtures' lock while they are built (it did: ~5 min under load, 2026-12-06)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("test_real_text")]

ROOT = Path(__file__).resolve().parents[1]
# plans/noise_model_abstracts.json per_model.kn: SD of log test loss per (run, category), 95% interval
PILOT_KN = json.loads((ROOT / "plans" / "noise_model_abstracts.json").read_text())["per_model"]["kn"]


def cell(diag, k, budget):
    return next(c for c in diag["cells"] if c["by"] == "K x budget" and c["cell"] == [float(k), float(budget)])


def test_dilution_misfit_is_the_specialists_bend(real_kn_subset):
    """The residuals against the replicates' noise floor reject the dilution law, and the cells that drive
    it are the pilot's: K = 1 lies below the law at the smallest budget and above it at the largest, where
    it repeats its category (~2.8 epochs). Seen: RMSE 2.1x the floor 0.0063; z = +7.9 at 16k, -11.4 at 144k
    (threshold 2.9). On the template corpus the same analysis says "fits"."""
    _, fits, report = real_kn_subset
    diag = fits["diagnostics"]["dilution"]
    assert diag["verdict"] == "misfit", diag
    assert diag["rmse"] > 1.5 * diag["noise_floor"]
    z = diag["z_threshold"]
    assert cell(diag, 1, 16000)["z"] > z and cell(diag, 1, 144000)["z"] < -z, diag["cells"]
    assert "dilution: **misfit**" in report


def transfer_values(fits, pairs):
    t = {(r["i"], r["j"]): r for r in fits["transfer"]["models"]["kn3"]["t"]}
    return [t[(i, j)] for a, b in pairs for i, j in ((a, b), (b, a))]


def test_transfer_is_structured(real_kn_subset):
    """cs<->cs pairs help and math<->cs pairs interfere, as in the pilot: every t_ij of the chosen cs<->cs
    pairs exceeds every t_ij of the math<->cs pairs (seen: cs<->cs 0.27-0.71, math<->cs -0.26 to -0.11;
    other draw 0.38-1.25 vs -0.20 to +0.06), the cs<->cs mean is positive, the math<->cs mean negative, and
    every one of these t_ij has an interval around it. Not asserted any more: a cs<->cs interval above 0.
    The percentile intervals before session 22 gave one (cs.SY<-cs.NE [0.025, 2.0], a thin margin) and
    covered 87-89% in the calibration; the test-inversion intervals that cover 92-93% give [-0.93, 2.31]
    there: at this size (floor 0.0063, not the pilot's 0.0041) no single pair is decided either way."""
    _, fits, _ = real_kn_subset
    cs = transfer_values(fits, REAL_PAIRS_CS)
    mixed = transfer_values(fits, REAL_PAIRS_MATH_CS)
    lo, hi = min(r["t"] for r in cs), max(r["t"] for r in mixed)
    assert lo > hi, (cs, mixed)
    assert sum(r["t"] for r in cs) / len(cs) > 0 > sum(r["t"] for r in mixed) / len(mixed), (cs, mixed)
    for r in cs + mixed:
        a, b = r["ci95"]
        assert a is not None and float(a) < r["t"] < float(b), r  # an interval around the estimate, not a point


def test_noise_floor_is_the_pilots(real_kn_full_k11):
    """The noise floor analyze.py measures from replicate runs on the full shared corpus lies in the KN
    pilot's measured interval (SD of log test loss per run x category 0.0040 [0.0036, 0.0044]). The
    pilot's 33 K = 11 runs (rotations of one set: 330 df) give 0.0041 (the pilot's own runs, read back:
    0.00408; three-seed blocks of them 0.0040-0.0045). The shipped subset's floor is not this one (0.0063:
    a test split of 20 papers per category, ~4k tokens, and budgets 1/6 the size), hence the full corpus."""
    _, fits, _ = real_kn_full_k11
    floor = fits["noise_floor"]
    lo, hi = PILOT_KN["sd_run_category_ci"]
    assert floor["status"] == "known" and floor["df"] >= 300, floor
    assert lo <= floor["sd_log_loss"] <= hi, (floor["sd_log_loss"], (lo, hi))
