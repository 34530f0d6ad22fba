"""Everyday commands stay fast: listing models / benchmarks / metrics imports no torch, and a
finished rerun loads no metric (issue 24; the times are in the issue's report, measured with
`/usr/bin/time`)."""
import subprocess
import sys
from pathlib import Path

import pytest

from evalsuite.generate import EvalRequest, run_eval
from evalsuite.metrics import runner

REPO = Path(__file__).resolve().parents[1]
MINI = ["mini_clip", "mini_pickscore", "mini_aesthetic", "mini_gold"]


@pytest.mark.parametrize("command", ["models", "benches", "metrics"])
def test_listing_imports_no_torch(command):
    code = ("import sys; from typer.testing import CliRunner; from distar.cli import app; "
            f"r = CliRunner().invoke(app, [{command!r}]); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'torchvision', 'diffusers', 'pandas') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_finished_rerun_loads_no_metric(tmp_path, monkeypatch):
    run = run_eval(EvalRequest(model="mini_onestep", bench="mini_parti", limit=2, out=tmp_path))
    first = runner.score_run(run, MINI, progress=False, device="cpu")
    assert all(o.scored == 2 for o in first)

    def no_load(name, options):
        raise AssertionError(f"{name} was loaded on a finished rerun")
    monkeypatch.setattr(runner, "_load", no_load)
    again = runner.score_run(run, MINI, progress=False, device="cpu")
    assert [(o.metric_version, o.skipped) for o in again] == [(o.metric_version, 2) for o in first]
