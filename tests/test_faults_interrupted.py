"""Interrupted runs: Ctrl-C (SIGINT) and SIGKILL of a real `distar eval` process on tiny_sdxl.
Ctrl-C exits 130 saying how to resume and marks the run 'interrupted'; a SIGKILLed run is
marked 'failed' by the next run on the folder and hidden from the leaderboard; rerunning keeps
every image already made; temp files are removed only when their writer is dead."""
import os
import signal
import subprocess
import sys
import time

import pytest

from evalsuite.store import ResultsStore
from fault_helpers import REPO, dead_pid, invoke

ARGS = ["eval", "--model", "tiny_sdxl", "--bench", "parti", "--limit", "12", "--batch-size", "2"]


def _start(out):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # SIGINT's default action even when the suite was started with it ignored (nohup ... &):
    # a child inherits an ignored SIGINT, and Python then installs no Ctrl-C handler.
    return subprocess.Popen([sys.executable, "-m", "distar", *ARGS, "--out", str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_images(out, n, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline and len(list(out.rglob("*.png"))) < n:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)


def _pngs(out):
    return {p.relative_to(out): p.read_bytes() for p in out.rglob("*.png")}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["sigint", "sigterm", "sigkill"])
def test_interrupted_eval_is_marked_and_resumes_losing_nothing(tmp_path, sig):
    out = tmp_path / "out"
    proc = _start(out)
    # Batch b's rows are stored after batch b+1 is generated, so the 6th PNG (batch 3) on disk
    # means batch 1 is recorded: the signal then lands with some images recorded, some not.
    _wait_for_images(out, 6, proc)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    on_disk = _pngs(out)
    assert 2 <= len(on_disk) < 12, "the signal must land part-way through"
    # Recorded images are done; a file written but not yet recorded when the signal landed is
    # regenerated (with this process's thread count, so its last bits may differ).
    recorded = set(ResultsStore(out).table("images").path)
    done = {k: v for k, v in on_disk.items() if str(k) in recorded}
    assert done
    runs = ResultsStore(out).table("runs")
    if sig != signal.SIGKILL:  # SIGTERM (timeout, kill) ends a run as Ctrl-C does
        assert proc.returncode == 128 + sig
        assert err.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
        assert "Traceback" not in err
        assert list(runs.status) == ["interrupted"]
        assert list(runs.error) == ["Ctrl-C" if sig == signal.SIGINT else "SIGTERM"]
    else:
        assert list(runs.status) == ["running"]  # nobody could write anything at a SIGKILL
    # Planted temp files: one of a dead writer (cleaned), one of a live one (this test: kept).
    folder = next(out.rglob("*.png")).parent
    host = __import__("distar.core.runlock", fromlist=["x"]).temp_tag().split("@")[1]
    dead = folder / f".00011_0.png.pid{dead_pid()}@{host}.1.tmp"
    live = folder / f".00010_0.png.pid{os.getpid()}@{host}.1.tmp"
    for f in (dead, live):
        f.write_bytes(b"partial")

    r = invoke(*ARGS, "--out", out)
    assert r.exit_code == 0, r.output
    after = _pngs(out)
    assert len(after) == 12 and all(after[k] == v for k, v in done.items()), "nothing lost"
    assert not dead.exists() and live.exists()
    runs = ResultsStore(out).table("runs").sort_values("started_at")
    assert list(runs.status) == ["failed" if sig == signal.SIGKILL else "interrupted", "complete"]
    # The resume timed only the batches it made: the leaderboard says so.
    resumed = runs.iloc[-1]
    assert resumed.n_images_timed < resumed.n_images_expected
    lb = tmp_path / "lb"
    assert invoke("leaderboard", "--results", out, "--out", lb).exit_code == 0
    tables = "\n".join(p.read_text() for p in lb.glob("*.md"))
    assert "partial timing" in tables


def test_failed_only_recipes_are_hidden_unless_asked(tmp_path):
    from evalsuite.leaderboard import label_entries, load_entries
    store = ResultsStore(tmp_path)
    base = dict(recipe_json="{}", bench="tiny", bench_version="1", n_prompts_total=12,
                n_images_expected=12, finished_at=None, git_hash=None, versions_json="{}",
                device="cpu", world_size=1, batch_size=2, latency_s_per_10=1.0,
                peak_memory_bytes=1, peak_memory_kind="cpu_peak_rss", error=None)
    store.upsert_run(run_id="a", model="crashed", recipe_hash="h1", started_at=1.0, status="running",
                     n_images_timed=None, **base)
    store.upsert_run(run_id="b", model="fine", recipe_hash="h2", started_at=2.0, status="complete",
                     n_images_timed=12, **base)
    assert store.mark_dead_runs() == 1  # (the caller holds the folder's lock: 'running' = dead)
    assert ResultsStore(tmp_path).table("runs").set_index("run_id").status.to_dict() == \
        {"a": "failed", "b": "complete"}
    ro = ResultsStore(tmp_path, readonly=True)
    assert [e.name for e in load_entries(ro)] == ["fine"]
    shown = load_entries(ro, show_failed=True)
    label_entries(shown)
    assert sorted(e.label.split(" (partial")[0] for e in shown) == ["crashed (failed run)", "fine"]
    fine = next(e for e in shown if e.name == "fine")
    assert fine.latency().note is None  # a full timing: no 'partial timing' marker
