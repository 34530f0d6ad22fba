"""`distar demo` end to end at a tiny size: every run trains, both tables and all figures are written."""
import re

import pytest

import di_star  # noqa: F401
from di_star.presets import TABLE_ORDER
from di_star.toy.demo import FRONTIER_ALPHAS, SEEDS, average_seeds, frontier_compare, run_demo


def test_frontier_compare_orders_dominating_curves():
    low = [(0.1, 0.5), (0.5, 0.4), (0.9, 0.1)]
    high = [(0.1, 0.9), (0.5, 0.8), (0.9, 0.6)]
    assert frontier_compare(high, low)["a_better"] == 1.0
    assert frontier_compare(low, high)["a_better"] == 0.0
    assert frontier_compare([(0.0, 1.0), (0.1, 1.0)], [(0.5, 0.0), (0.9, 0.0)])["overlap"] is None


def test_average_seeds_folds_seed_runs_and_measures_their_spread():
    runs = {"a": {"key": "a", "metrics": {"m": 1.0}, "ms_per_step": 2.0},
            "a@s1": {"key": "a@s1", "metrics": {"m": 3.0}, "ms_per_step": 4.0},
            "b": {"key": "b", "metrics": {"m": 5.0}, "ms_per_step": 1.0}}
    avg, noise = average_seeds(runs)
    assert set(avg) == {"a", "b"} and avg["a"]["metrics"]["m"] == 2.0 and avg["a"]["ms_per_step"] == 3.0
    assert avg["b"]["metrics"]["m"] == 5.0 and noise == {"m": 2.0}


def test_tiny_demo_writes_tables_and_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTAR_CACHE", str(tmp_path / "cache"))
    out = run_demo(tmp_path / "runs", tmp_path / "lb", scale=0.01, workers=1)
    gmm = (tmp_path / "lb" / "toy_gmm.md").read_text()
    digits = (tmp_path / "lb" / "toy_digits.md").read_text()
    for row in TABLE_ORDER:
        assert f"`gmm/{row}`" in gmm and f"`digits/{row}`" in digits
    n_frontier = sum(len(a) for a in FRONTIER_ALPHAS.values())
    assert len(re.findall(r"^\| (KL|score \(exact\)|score \(x0 listing\)) \|", gmm, re.M)) == n_frontier
    for text in (gmm, digits):
        assert "↑" in text and "↓" in text and "seed" in text and "{{WALL}}" not in text
        assert "run_demo(scale=0.01)" in text and "## Findings" in text
        assert "nan" not in text.split("## Findings")[1]
    for fig in ("toy_gmm_samples.png", "toy_gmm_frontier.png", "toy_digits_samples.png"):
        assert (tmp_path / "lb" / "figures" / fig).stat().st_size > 1000
    runs = [k for k in out["results"] if not k.startswith("_")]
    assert len(runs) == 2 * len(TABLE_ORDER) + n_frontier  # seeds folded into one row each
    assert len(out["results"]["_per_seed"]) == len(TABLE_ORDER) * (len(SEEDS["gmm"]) + len(SEEDS["digits"])) \
        + n_frontier * len(SEEDS["gmm"])
    cost = out["results"]["_estimator_cost"]
    assert set(cost) == {"gmm", "digits"} and all(c["exact"] > 0 and c["x0"] > 0 for c in cost.values())
    assert "Cost of one generator step" in gmm and "Cost of one generator step" in digits
