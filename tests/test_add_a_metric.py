"""docs/architecture.md's recipe for a metric, followed from outside the packages: one class
(this module) and one registration line. `distar eval` scores with it, and the leaderboard
shows it the way its MetricInfo says (label, arrow, decimals, bold), with nothing else edited."""
from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from evalsuite.metrics.base import MetricInfo


class Brightness:
    """Mean pixel value in [0, 1]; lower is better (a dummy for the recipe)."""
    info = MetricInfo("brightness", "brightness-v1", "none", "RGB mean / 255",
                      higher_is_better=False, label="Brightness", unit="mean pixel / 255",
                      decimals=2)

    @classmethod
    def from_pretrained(cls, **_shared_options) -> "Brightness":
        return cls()

    def score(self, images, prompts) -> np.ndarray:
        return np.array([np.asarray(im.convert("RGB"), dtype=np.float64).mean() / 255
                         for im in images])


def test_a_metric_is_a_class_and_one_registration_line(tmp_path, monkeypatch):
    from distar.cli import app
    from evalsuite.metrics import METRICS
    # The registration line (METRICS.add(name, "module:Class.from_pretrained", description));
    # through monkeypatch so the registry is restored after the test.
    monkeypatch.setitem(METRICS._entries, "brightness", Brightness.from_pretrained)
    monkeypatch.setitem(METRICS._descriptions, "brightness", "mean pixel value (dummy)")
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
