"""docs/architecture.md's recipe for a world, followed from outside the packages: the three
files on that page (world, metric, plug-in), named in $DISTAR_PLUGINS. `distar train` runs
the one DI* loop on it from a registered preset, and `distar eval` generates with the trained
generator, scores with the world's metric and stores the scores; nothing else is edited."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from recipes import install_recipe, recipe_files  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_world_is_three_files():
    assert sorted(recipe_files("Add a world: three files")) == [
        "dots_metrics.py", "dots_plugin.py", "dots_world.py"]


def test_a_world_from_three_files_trains_and_evaluates(tmp_path, install_recipe):
    from distar.cli import app
    from evalsuite.store import ResultsStore
    install_recipe("Add a world: three files")
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--list"], env={"COLUMNS": "300"})
    assert r.exit_code == 0 and "dots/di_star_in" in r.output, r.output

    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "--preset", "dots/di_star_in", "--max-steps", "6",
                            "--out", str(run)], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert f"evaluate: distar eval --model dots:{run} --bench dots" in " ".join(r.output.split())
    config = json.loads((run / "config.json").read_text())
    assert config["world"]["name"] == "dots" and config["preset"] == "dots/di_star_in"
    assert json.loads((run / "latest.json").read_text())["step"] == 6
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert 0 <= metrics["match"] <= 1  # the world's own evaluate(), after the loop
    from safetensors.torch import load_file
    assert load_file(str(run / "generator.safetensors"))["shift"].abs().sum() > 0  # it trained

    results = tmp_path / "results"
    r = runner.invoke(app, ["eval", "--model", f"dots:{run}", "--bench", "dots",
                            "--metrics", "dots_match", "--out", str(results)],
                      env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    scores = ResultsStore(results, create=False, readonly=True).table("scores")
    assert len(scores) == 16 and set(scores["metric"]) == {"dots_match"}
    assert set(scores["value"]) <= {0.0, 1.0}


def test_a_plugin_that_cannot_be_imported_is_one_clear_line(monkeypatch):
    from distar.cli import app
    monkeypatch.setenv("DISTAR_PLUGINS", "no_such_plugin_module")
    r = CliRunner().invoke(app, ["metrics"], env={"COLUMNS": "300"})
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "DISTAR_PLUGINS names 'no_such_plugin_module', which cannot be imported" in r.output
