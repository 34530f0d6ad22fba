"""docs/architecture.md's recipe for a metric, followed from outside the packages: the page's
two files (the metric's module, a plug-in with its one registration line), taken from the
page. `distar eval` scores with it, and the leaderboard shows it the way its MetricInfo says
(label, arrow, decimals, bold), with nothing else edited."""
from __future__ import annotations

from typer.testing import CliRunner

from recipes import install_recipe, recipe_files  # noqa: F401  (a fixture)


def test_a_metric_is_two_files():
    assert sorted(recipe_files("Add a metric: two files")) == ["brightness.py",
                                                                "brightness_plugin.py"]


def test_a_metric_is_a_class_and_one_registration_line(tmp_path, install_recipe):
    from distar.cli import app
    # The page's two files, from a folder outside the packages, named in $DISTAR_PLUGINS.
    install_recipe("Add a metric: two files")
    out = tmp_path / "results"
    for model in ("tiny_sdxl", "tiny_sd15"):
        r = CliRunner().invoke(app, ["eval", "--model", model, "--bench", "tiny", "--limit", "2",
                                     "--metrics", "brightness", "--out", str(out)],
                               env={"COLUMNS": "300"})
        assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["leaderboard", "--results", str(out), "--out",
                                 str(tmp_path / "lb")])
    assert r.exit_code == 0, r.output
    t1 = (tmp_path / "lb" / "table1_parti_coco.md").read_text()
    table = t1.split("## tiny (version ", 1)[1].split("\n\n", 2)[1]
    header, _, *rows = table.splitlines()
    assert header.endswith("| Brightness ↓ |")
    values = [row.rsplit(" | ", 1)[1].strip("| ") for row in rows]
    assert len(values) == 2 and sum(v.startswith("**") for v in values) == 1  # the lower one
    assert all(len(v.replace("*", "").split(" ")[0].split(".")[1]) == 2 for v in values)  # 2 decimals
    assert "- Brightness ↓: `brightness` (mean pixel / 255), version `brightness-v1|none|" in t1


def test_a_metric_declares_the_hub_files_it_reads_once(tmp_path, monkeypatch):
    """A metric whose from_pretrained reads files from the hub says which on its class
    (`hub_needs`): preflight checks them and `distar fetch` plans them, with nothing else
    registered."""
    from evalsuite.metrics import METRICS
    from evalsuite.needs import HubNeed, command_needs
    from evalsuite.preflight import metric_problems

    class Hubbed:
        @classmethod
        def hub_needs(cls, name: str, options: dict) -> list:
            return [HubNeed(f"{name}: its weights", "someone/hubbed", ("w.safetensors",),
                            ("w.safetensors",), env_var="HUBBED_PATH")]

        @classmethod
        def from_pretrained(cls, **_options):
            raise AssertionError("preflight and fetch never load a metric")

    monkeypatch.setitem(METRICS._entries, "hubbed", Hubbed.from_pretrained)
    assert [(n.repo_id, n.files) for n in command_needs([], None, ["hubbed"])] == [
        ("someone/hubbed", ("w.safetensors",))]
    (problem,) = metric_problems(["hubbed"])  # offline (conftest) and not cached
    assert problem.what.startswith("hubbed: its weights: someone/hubbed/w.safetensors is not on")
    assert problem.fixes[0] == "hf download someone/hubbed w.safetensors"
    (tmp_path / "w.safetensors").write_bytes(b"local copy")
    monkeypatch.setenv("HUBBED_PATH", str(tmp_path / "w.safetensors"))
    assert metric_problems(["hubbed"]) == []
