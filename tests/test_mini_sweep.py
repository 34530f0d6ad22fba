"""The over-optimisation sweep (di_star.mini.sweep) and its report (di_star.mini.overopt_report)."""
from __future__ import annotations

import json

import numpy as np

import pytest
from typer.testing import CliRunner

from di_star.mini.sweep import DRY_RUN, SweepPlan, plan_runs
from distar.cli import app


def by_key_reward(runs) -> set[str]:
    return {r.cfg["sd"].get("reward", "mini_oracle") for r in runs if r.reward != "none"}


def test_full_plan_is_the_issue_matrix_with_distinct_seeds():
    runs = plan_runs(SweepPlan())
    # {oracle, shipped proxy, 3 ladder rungs, reward-free} x {score, kl} x 3 seeds
    # + the alpha_cfg ladder (0, 2; its 4 is the preset's: the matrix's run) x 3 seeds
    assert len(runs) == 6 * 2 * 3 + 2 * 3
    assert by_key_reward(runs) >= {"mini_oracle", "mini_pickscore", "mini_proxy_r1", "mini_proxy_r2", "mini_proxy_r3"}
    by_key = {r.key: r.cfg for r in runs}
    assert by_key["score/mini_oracle/s0"]["sd"]["reward"] == "mini_oracle"
    assert by_key["kl/mini_pickscore/s1"]["objective"]["regulariser"] == "kl"
    assert by_key["score/none/s2"]["objective"]["alpha_rew"] == 0
    assert [by_key[f"score/mini_oracle/cfg{c}/s0"]["objective"]["alpha_cfg"] for c in (0, 2)] == [0, 2]
    assert by_key["score/mini_oracle/s0"]["objective"]["alpha_cfg"] == 4
    # each seed its own training draws (noise and prompt order come from run.seed)
    assert {by_key[f"score/mini_oracle/s{s}"]["run"]["seed"] for s in (0, 1, 2)} == {0, 1, 2}
    assert all(c["run"]["max_steps"] == 600 for c in by_key.values())


def test_bad_reward_is_one_line_before_anything_runs(tmp_path):
    r = CliRunner().invoke(app, ["lab", "sweep", "--dry-run", "--out", str(tmp_path), "--rewards", "pickscor"])
    assert r.exit_code == 2 and "Unknown reward 'pickscor'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_dry_run_then_report(tmp_path):
    """The whole path on a CPU (~1-2 min): tiny runs trained in stages, evaluated with every
    metric, merged into one store; then the report from that store."""
    out = tmp_path / "sweep"
    r = CliRunner().invoke(app, ["lab", "sweep", "--dry-run", "--out", str(out), "--seeds", "0",
                                 "--regularisers", "score", "--rewards", "mini_oracle", "--no-reward-free",
                                 "--workers", "1"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "sweep.json").read_text())
    assert [run["key"] for run in rec["runs"]] == ["score/mini_oracle/s0"]
    assert set(rec["runs"][0]["models"]) == {str(s) for s in DRY_RUN.checkpoints if s > 0}
    r = CliRunner().invoke(app, ["lab", "overopt-report", "--sweep", str(out), "--out", str(tmp_path / "lb")])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "lb" / "mini_overoptimization.md").read_text()
    assert "| DI*-In, reward mini_oracle, alpha_cfg 4 | 2 | 1 |" in md
    assert "Best one-step run vs the 15-step reference" in md
    assert (tmp_path / "lb" / "figures" / "mini_overoptimization.png").stat().st_size > 1000


def test_report_quotes_each_ladder_rungs_measured_agreement(tmp_path):
    """The proxy ladder's manifest numbers reach the report, rungs the sweep optimised marked;
    no manifest, no paragraph."""
    from di_star.mini.overopt_report import ladder_lines
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"proxies": {
        "mini_proxy_r1": {"name": "mini_proxy_r1", "agreement": 0.612, "agreement_ci": [0.58, 0.64], "spearman": 0.31},
        "mini_proxy_r3": {"name": "mini_proxy_r3", "agreement": 0.871, "agreement_ci": [0.85, 0.89], "spearman": 0.78}}}))
    text = "\n".join(ladder_lines(manifest, ("mini_oracle", "mini_proxy_r3")))
    assert "`mini_proxy_r1` 0.612 [0.580, 0.640] (Spearman 0.31)" in text
    assert "`mini_proxy_r3` 0.871 [0.850, 0.890] (Spearman 0.78; optimised here)" in text
    assert ladder_lines(tmp_path / "absent.json", ()) == []


def test_report_counts_a_model_once_when_its_recipe_was_rehashed():
    """A store resumed in another clone holds a model under two recipe hashes: the report keeps
    the newest, so paired tests see each image once."""
    import pandas as pd

    from di_star.mini.overopt_report import latest_recipes
    images = pd.DataFrame({"model": ["a", "a", "b", "a"], "recipe_hash": ["old", "old", "hb", "new"],
                           "created_at": [1.0, 2.0, 1.5, 3.0]})
    assert latest_recipes(images) == {"new", "hb"}


from di_star.mini.overopt_presets import ORACLE, ORACLES, preset_name
from di_star.mini.proxy_ladder import RUNGS
