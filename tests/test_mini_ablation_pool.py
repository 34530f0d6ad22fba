"""The mini ablation's 2-process pool on the shipped world (what `distar demo` runs), at a tiny
scale: each evaluation writes its own store part, merged into one; Ctrl-C ends the whole pool
within seconds; the rerun resumes and gives exactly the numbers of an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalsuite.models.specs import MODELS

REPO = Path(__file__).resolve().parents[1]
SCRIPT = """
import sys
from pathlib import Path

from di_star.mini.ablation import Scale, run_ablation

if __name__ == "__main__":  # the pool spawns: its workers import this file again
    scale = Scale("test", 3, 1, 4, ("kl", "di_star_in"), False, (0,),
                  {"mini_parti": 4, "mini_coco": 4, "mini_hps": 4}, 4, eval_samples=2, sample_grids=False)
    out = Path(sys.argv[1])
    run_ablation(out, out / "lb", scale, workers=2, metrics=["mini_gold", "mini_pickscore"])
"""

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    "mini_ref" not in MODELS or not Path(MODELS.get("mini_ref").repo).is_dir(),
    reason="the mini world's weights are not built / shipped")]


def _start(script: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # Its own process group (so the test can Ctrl-C all of it), with SIGINT's default action
    # even when the test runner was started with SIGINT ignored.
    return subprocess.Popen([sys.executable, str(script), str(out)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _group_gone(pgid: int, within: float) -> bool:
    """Whether every process of the group has ended (a worker that outlived its parent is
    reaped by init, which can take a second or two)."""
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


def _scores(out: Path) -> dict:
    """{(bench, metric): sorted per-image values}: run folders differ between two ablations, so
    models are matched by what they scored, not by name."""
    from evalsuite.store import ResultsStore
    s = ResultsStore(out / "results", readonly=True).table("scores")
    return {k: sorted(round(v, 9) for v in g.value) for k, g in s.groupby(["bench", "metric"])}


def test_pool_merges_parts_and_a_ctrl_c_stops_it_at_once_then_resumes_exactly(tmp_path):
    script = tmp_path / "ablation.py"
    script.write_text(SCRIPT)
    plain = _start(script, tmp_path / "plain")
    _, err = plain.communicate(timeout=900)
    assert plain.returncode == 0, err[-3000:]
    parts = sorted(p.name for p in (tmp_path / "plain" / "parts").iterdir())
    assert parts == ["init", "reference", "run-di_star_in", "run-kl"]
    want = _scores(tmp_path / "plain")
    # 4 models x 3 benchmarks x 4 prompts x 4 images, two metrics
    assert sorted(want) == [(b, m) for b in ("mini_coco", "mini_hps", "mini_parti")
                            for m in ("mini_gold", "mini_pickscore")]
    assert all(len(v) == 4 * 4 * 4 for v in want.values())
    assert "| kl " in (tmp_path / "plain" / "lb" / "mini_table2_ablation.md").read_text()

    run = _start(script, tmp_path / "cut")
    seen = []
    for line in run.stderr:  # Ctrl-C once the init is evaluated: the reference's evaluation
        seen.append(line)     # and the first training run are in flight, the second waits
        if line.strip().startswith("evaluated init"):
            break
    else:
        pytest.fail("the ablation ended before the init was evaluated:\n" + "".join(seen)[-3000:])
    t0 = time.time()
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode != 0 and "KeyboardInterrupt" in err, err[-3000:]
    assert time.time() - t0 < 60, "the pool kept running after Ctrl-C"
    assert _group_gone(run.pid, within=15), "a worker outlived the Ctrl-C"
    assert not (tmp_path / "cut" / "lb").exists()
    assert not (tmp_path / "cut" / "runs" / "di_star_in").exists(), "a job started after the Ctrl-C"

    again = _start(script, tmp_path / "cut")
    _, err = again.communicate(timeout=900)
    assert again.returncode == 0, err[-3000:]
    assert _scores(tmp_path / "cut") == want
