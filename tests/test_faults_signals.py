"""Signals: SIGTERM stops a command as Ctrl-C does; a run interrupted while scoring is not
'complete'; worker pools stop their workers on a signal or an error and when their parent is
killed; `distar demo` leaves no process of its session within 10 s of a SIGTERM. Every child is
started with SIGINT's default action, so the tests also pass under `nohup ... &`."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalsuite.store import ResultsStore
from fault_helpers import REPO, invoke


def _popen(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen(args, cwd=REPO, env=env, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for init to reap it has ended
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _session(sid: int) -> list[int]:
    """Live processes of session `sid` (Linux /proc)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = d.joinpath("stat").read_text().split(")")[-1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(d.name))
    return pids


def _gone(pids, within: float) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


def test_a_run_interrupted_while_scoring_is_not_complete(tmp_path, monkeypatch):
    import evalsuite.metrics.runner as runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "score_run", interrupted)
    out = tmp_path / "o"
    r = invoke("eval", "--model", "tiny_sdxl", "--bench", "tiny", "--limit", "1", "--metrics",
               "smoke_clip", "--out", out)
    assert r.exit_code == 130, r.output
    runs = ResultsStore(out).table("runs")
    assert list(runs.status) == ["interrupted"] and len(list(out.rglob("*.png"))) == 1
    monkeypatch.undo()
    assert invoke("eval", "--model", "tiny_sdxl", "--bench", "tiny", "--limit", "1", "--metrics",
                  "smoke_clip", "--out", out).exit_code == 0


POOL = """
import sys, time
from distar.core.signals import process_pool
if __name__ == "__main__":
    with process_pool(2) as pool:
        futs = [pool.submit(time.sleep, 120) for _ in range(2)]
        time.sleep(1.0)
        print(" ".join(str(p) for p in pool._processes), flush=True)
        sys.stdin.readline()  # the test has seen the workers alive: only then fail or wait
        if sys.argv[1] == "raise":
            raise RuntimeError("a job failed")
        time.sleep(120)
"""


@pytest.mark.parametrize("how", ["raise", "sigkill"])
def test_pool_workers_stop_with_an_error_or_their_parents_death(tmp_path, how):
    script = tmp_path / "pool.py"
    script.write_text(POOL)
    proc = _popen([sys.executable, str(script), how], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert len(workers) == 2 and all(_alive(p) for p in workers), proc.stderr.read()
    proc.stdin.write("go\n")  # without this handshake a loaded machine could see them already stopped
    proc.stdin.flush()
    t0 = time.time()
    if how == "sigkill":
        proc.kill()
    proc.wait(timeout=30)
    assert _gone(workers, within=10), "a worker outlived its pool"
    assert time.time() - t0 < 10


DEMO = """
import sys
from di_star.mini import ablation
from distar.cli import app
if __name__ == "__main__":  # `distar demo` at a test scale (the pool spawns: guarded)
    ablation.SCALES["demo"] = ablation.Scale(
        "demo", 3, 1, 4, ("kl", "di_star_in"), False, (0,),
        {"mini_parti": 4, "mini_coco": 4, "mini_hps": 4}, 4, eval_samples=2, sample_grids=False)
    app(["demo", "--out", sys.argv[1]])
"""


@pytest.mark.slow
def test_sigterm_of_distar_demo_leaves_no_process(tmp_path):
    from evalsuite.models.specs import MODELS
    if "mini_ref" not in MODELS or not Path(MODELS.get("mini_ref").repo).is_dir():
        pytest.skip("the mini world's weights are not shipped")
    script = tmp_path / "demo.py"
    script.write_text(DEMO)
    proc = _popen([sys.executable, str(script), str(tmp_path / "demo")], stdout=subprocess.DEVNULL,
                  stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and len(_session(proc.pid)) < 3:  # the parent and 2 workers
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.2)
    members = _session(proc.pid)
    assert len(members) >= 3, "the pool never started"
    time.sleep(2)  # the workers are at work
    t0 = time.time()
    os.kill(proc.pid, signal.SIGTERM)  # the parent only, as `timeout` or `kill PID` does
    _, err = proc.communicate(timeout=30)
    assert _gone(members, within=10 - (time.time() - t0)), "a worker outlived the demo"
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
