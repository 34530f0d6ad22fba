"""Two processes on one --out: the second is refused at once with a message naming the holder
and the lock file (the first keeps its work; nothing is done twice). flock is released by the
kernel when its holder dies, so a killed run never leaves a stale lock."""
import pytest

from distar.core.errors import DistarError
from distar.core.runlock import LOCK_FILE, out_lock
from fault_helpers import hold_lock, invoke, one_clear_error


@pytest.mark.parametrize("cmd", [
    ["eval", "--model", "tiny_sdxl", "--bench", "tiny", "--limit", "1"],
    ["train", "--preset", "gmm/di_star_in", "--max-steps", "1"],
], ids=["eval", "train"])
@pytest.mark.parametrize("env", [None, {"RANK": "1"}], ids=["plain", "stray-RANK"])
def test_second_process_on_the_same_out_is_refused(tmp_path, cmd, env):
    """A stray RANK=1 (no launcher: no LOCAL_RANK, WORLD_SIZE, MASTER_ADDR) still locks."""
    out = tmp_path / "out"
    holder = hold_lock(out)
    try:
        one_clear_error(invoke(*cmd, "--out", out, env=env), str(out), f"pid {holder.pid}",
                        LOCK_FILE, "another --out")
        assert not list(out.rglob("*.png")) and not (out / "results.sqlite").exists()
        assert not (out / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone (killed): its lock went with it.
    with out_lock(out, "test"):
        pass


def test_lock_is_reentrant_in_one_process_and_exclusive_across(tmp_path):
    with out_lock(tmp_path, "outer"):
        with out_lock(tmp_path, "inner"):  # the CLI holds it around the harness, which takes it again
            pass
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(DistarError, match="in use by another process"):
            with out_lock(tmp_path, "second"):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_only_a_launcher_makes_a_secondary_rank(monkeypatch):
    from distar.core.runlock import secondary_rank
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RANK", "1")
    assert not secondary_rank()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert secondary_rank()
    monkeypatch.setenv("RANK", "0")
    assert not secondary_rank()
