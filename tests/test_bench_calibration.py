"""The calibration benchmark (benchmarks/bench_calibration.py) end to end on one tiny sweep, so it cannot rot:
it fabricates, runs analyze.main, walks fits.json and tabulates; the table has rows and coverages in [0, 1]."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_calibration as bc  # noqa: E402


def test_one_tiny_sweep_gives_a_table(tmp_path, capsys):
    out = tmp_path / "calib.json"
    rows, results = bc.main(["--designs", "tiny", "--n_sweeps", "1", "--n_boot", "10", "--out", str(out)])
    names = {r["interval"] for r in rows}
    assert {"floors E_c", "B", "beta", "s", "H2 cell"} <= names, names
    for r in rows:
        assert r["n"] >= 1 and r["covered"] + r["refused"] + r["no_truth"] <= r["n"]
        assert r["coverage"] is None or 0 <= r["coverage"] <= 1
        assert r["zero_width"] == 0, r  # issue 21's acceptance: no zero-width interval in any benchmark design
    assert any(r["coverage"] is not None for r in rows)  # at least one interval was decided and scored
    assert results[0]["verdicts"]["H2 loss vs K at fixed D"]["sweeps"] == 1
    printed = capsys.readouterr().out
    assert "| tiny | floors E_c |" in printed
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(rows))


def test_unknown_design_is_one_line():
    import pytest
    with pytest.raises(SystemExit) as e:
        bc.main(["--designs", "p9"])
    assert "p9" in str(e.value) and "unknown" in str(e.value)
