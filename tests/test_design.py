"""design.py: fabricated sweeps of a plan (simulate.py) analysed by analyze.py decide H3 when the K effect is
large against the noise and mostly not when the noise swamps it; the reported interval widths match the
spread of the simulated estimates. Small plan, few simulations, few resamples: the point is the wiring and
the direction, at the precision a handful of simulations gives."""
import json
import math
import os

import numpy as np
import pytest
import yaml

import design
import simulate
import sweep

PLAN = {"name": "tiny", "store": {"data_dir": "fabricated"},
        "grid": [{"model_config": ["pythia-31m"], "K": [1, 3], "seed": [0, 1, 2, 3], "token_budget": [1e6, 3e6, 9e6]},
                 {"model_config": ["pythia-31m"], "K": [1, 3], "seed": [0, 1], "init_seed": [100],
                  "token_budget": [1e6, 3e6, 9e6]}],
        "fixed": {"sampling": "balanced", "batch_size": 320, "learning_rate": 1e-3}}
LAW = "B=40,beta=0.3,s=0.5,E=2"  # reducible loss ~0.6-1.2 nats: a K = 3 effect of ~15%, large against 1% noise


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("plan") / "tiny.yaml"
    p.write_text(yaml.safe_dump(PLAN))
    return p


def test_fabricated_sweep_is_the_plans_runs_with_the_laws_losses(plan_file, tmp_path):
    plan = sweep.load_plan(plan_file)
    law = simulate.parse_law(LAW + ",E[math.AC]=3")
    rids = simulate.fabricate(plan, law, 0.0, tmp_path, np.random.default_rng(0))
    assert rids == [r for r, _ in sweep.expand(plan)]
    for rid in rids:
        rd = tmp_path / "runs" / rid
        cfg, summ, test = (json.loads((rd / n).read_text()) for n in ("run_config.json", "summary.json", "test_results.json"))
        D = cfg["token_budget_effective"]
        assert D % 32000 == 0 and D >= cfg["token_budget"]
        for c in cfg["categories"]:  # noise 0: exactly the law at the tokens the run saw
            Dc = summ["tokens_per_category"][c]
            want = law["E"][c] + 40 * (Dc ** 0.5 * D ** 0.5) ** -0.3
            assert math.isclose(test["per_category"][c]["loss"], want, rel_tol=1e-12)
    assert law["E"]["math.AC"] == 3 and law["E"]["cs.CV"] == 2


@pytest.mark.parametrize("text", ["B=1,beta=0.3,s=0.5", "B=1,beta=0.3,s=2,E=1", "B=1,beta=x,s=0.5,E=1",
                                  "B=1,beta=0.3,s=0.5,E=1,E[foo]=2", "B=1,beta=0.3,s=0.5,E=1,A=3", "Q=1"])
def test_bad_law_is_one_line_usage_error(plan_file, tmp_path, capsys, text):
    with pytest.raises(SystemExit) as e:
        design.main([str(plan_file), "--law", text, "--noise", "0.01", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --law") and "\n" not in err


# ~12 CPU-minutes (5 full analyses): over the suite's budget on 2 cores; run with RUN_SLOW=1 (notes.md: not yet
# seen to pass)
@pytest.mark.skipif(not os.environ.get("RUN_SLOW"), reason="~12 CPU-min of analyses; RUN_SLOW=1 runs it")
def test_h3_decided_at_low_noise_not_at_high_noise_and_widths_match_spread(plan_file, tmp_path):
    lo = design.main([str(plan_file), "--law", LAW, "--noise", "0.01", "--n_sim", "3", "--n_boot", "8",
                      "--no_variants", "--out", str(tmp_path / "lo")])
    hi = design.main([str(plan_file), "--law", LAW, "--noise", "0.3", "--n_sim", "2", "--n_boot", "8",
                      "--no_variants", "--out", str(tmp_path / "hi")])
    assert lo["base"]["hypotheses"]["H3 dilution law"]["p_supported"] >= 2 / 3
    assert hi["base"]["hypotheses"]["H3 dilution law"]["p_decided"] <= 0.5
    # the bootstrap's interval width against the spread of the estimates over simulations (3.92 SD): with 3
    # simulations an SD is known only to within a factor ~2-3, so the check is a factor of 3 (deterministic seeds)
    for k in ("s", "beta"):
        x = lo["base"]["params"][k]
        assert x["n_with_interval"] == 3
        assert 1 / 3 <= x["mean_ci_width"] / x["spread_of_estimates"] <= 3, (k, x)
        assert abs(x["mean_estimate"] - x["true"]) <= x["spread_of_estimates"]
    assert (tmp_path / "lo" / "design.md").is_file() and json.loads((tmp_path / "lo" / "design.json").read_text())
