"""`distar eval --model a,b --bench x,y` (every pair into one store, all checked first) and the
process count of `accelerate launch` (honoured, or one clear error)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from distar.cli import app
from distar.core.launch import requested_processes
from evalsuite.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]


def _cli(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_every_model_on_every_bench_into_one_store(tmp_path):
    res = _cli(["eval", "--model", "mini_onestep,tiny_sdxl", "--bench", "tiny,mini_parti",
                "--limit", "2", "--out", tmp_path / "r", "--json", tmp_path / "s.json"])
    assert res.exit_code == 0, res.output
    images = ResultsStore(tmp_path / "r", readonly=True).table("images")
    pairs = images.groupby(["model", "bench"]).size().to_dict()
    assert pairs == {(m, b): 2 for m in ("mini_onestep", "tiny_sdxl") for b in ("tiny", "mini_parti")}
    summaries = json.loads((tmp_path / "s.json").read_text())
    assert [(s["model"], s["bench"]) for s in summaries] == [
        ("mini_onestep", "tiny"), ("mini_onestep", "mini_parti"), ("tiny_sdxl", "tiny"),
        ("tiny_sdxl", "mini_parti")]


def test_all_pairs_are_checked_before_the_first_image(tmp_path):
    res = _cli(["eval", "--model", "mini_onestep,nope", "--bench", "tiny,nobench",
                "--out", tmp_path / "r"])
    assert res.exit_code == 2
    assert "Unknown model 'nope'" in res.output and "Unknown benchmark 'nobench'" in res.output
    assert not list(tmp_path.rglob("*.png"))


def test_requested_processes_reads_an_accelerate_command_line():
    launch = ["/venv/bin/python", "/venv/bin/accelerate", "launch"]
    assert requested_processes(launch + ["--num_processes", "2", "--cpu", "-m", "distar"]) == 2
    assert requested_processes(launch + ["--num_processes=4", "x.py"]) == 4
    assert requested_processes(launch + ["-m", "distar"]) is None
    assert requested_processes(["/bin/bash", "-c", "--num_processes 2"]) is None


def test_accelerate_cpu_launch_that_starts_fewer_processes_is_refused(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT="29547")
    r = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2",
                        "--cpu", "--num_machines", "1", "--mixed_precision", "no",
                        "--dynamo_backend", "no", "-m", "distar", "eval", "--model",
                        "mini_onestep", "--bench", "tiny", "--limit", "2", "--out", tmp_path],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode != 0
    assert "asked for 2 processes but started 1" in r.stderr and "--multi_gpu" in r.stderr
    assert not list(tmp_path.rglob("*.png"))
