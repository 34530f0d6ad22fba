"""The experiment runner (di_star.experiment) on its own: jobs and their follow-ups scheduled
on the pool, records in plan order, a rerun reusing finished work, a failing job stopping the
pool with one line that names it."""
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from di_star.experiment import LEDGER, PROVENANCE, Job, run_experiment, run_jobs
from distar.core.errors import DistarError


def _work(job: Job) -> dict:
    """A job: sleeps `args['sleep']` s, counts its calls in OUT/calls, fails if asked."""
    job.out.mkdir(parents=True, exist_ok=True)
    with open(job.out / "calls", "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(job.args.get("sleep", 0))
    if job.args.get("fail"):
        raise ValueError("boom")
    (job.out / "done").write_text("")
    return {"key": job.key, "pid": os.getpid(), "value": job.args.get("value", 0)}


def _calls(folder: Path) -> int:
    return len((folder / "calls").read_text().split()) if (folder / "calls").exists() else 0


def _jobs(root: Path, **args) -> list[Job]:
    return [Job(k, _work, root / k, args={"value": i, **args}) for i, k in enumerate(("a", "b", "c"))]


def _follow(root: Path):
    def after(job: Job, r: dict) -> list[Job]:  # 'a' queues an evaluation of its output
        return [Job(f"{job.key}/eval", _work, root / f"{job.key}-eval")] if job.key == "a" else []
    return after


def test_pool_runs_every_job_and_follow_up_in_workers_records_in_plan_order(tmp_path):
    done = run_jobs(_jobs(tmp_path, sleep=0.5), 2, after=_follow(tmp_path), threads=1)
    assert list(done) == ["a", "a/eval", "b", "c"]  # plan order, a's follow-up right after it
    assert all(e["reused"] is False and e["wall_s"] >= 0 for e in done.values())
    pids = {e["record"]["pid"] for e in done.values()}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # in the pool's (two) workers
    assert [done[k]["record"]["value"] for k in "abc"] == [0, 1, 2]


def test_rerun_reuses_finished_jobs_and_reruns_what_changed(tmp_path, monkeypatch):
    from distar.core.paths import project_commit
    out = tmp_path / "exp"
    monkeypatch.chdir(tmp_path)  # the provenance names this project's commit, not the cwd's
    first, prov, found = run_experiment("test", out, {"n": 3}, _jobs(out), 1, after=_follow(out),
                                        findings=lambda records, prov: sorted(records))
    assert found == ["a", "a/eval", "b", "c"] and prov["plan"] == {"n": 3}
    assert prov["git"] == (project_commit(short=True) or "unknown")
    assert json.loads((out / PROVENANCE).read_text())["jobs"]["b"]["reused"] is False
    again, prov, _ = run_experiment("test", out, {"n": 3}, _jobs(out), 1, after=_follow(out))
    assert again == first and all(j["reused"] for j in prov["jobs"].values())
    assert [_calls(out / k) for k in ("a", "a-eval", "b", "c")] == [1, 1, 1, 1]  # nothing ran again
    changed = _jobs(out)
    changed[1].args["value"] = 7                       # b computes something else now
    shutil.rmtree(out / "c")                           # c's folder lost: rerun it
    third, prov, _ = run_experiment("test", out, {"n": 3}, changed, 1, after=_follow(out))
    assert third["b"]["value"] == 7 and _calls(out / "b") == 2 and _calls(out / "c") == 1
    assert [prov["jobs"][k]["reused"] for k in ("a", "a/eval", "b", "c")] == [True, True, False, False]
    assert set(json.loads((out / LEDGER).read_text())) == {"a", "a/eval", "b", "c"}


def test_failing_job_stops_the_pool_with_one_line_naming_it(tmp_path):
    jobs = [Job("slow", _work, tmp_path / "slow", args={"sleep": 30}),
            Job("bad", _work, tmp_path / "bad", args={"fail": True, "sleep": 2}),
            Job("later", _work, tmp_path / "later")]
    t0 = time.time()
    with pytest.raises(DistarError) as e:
        run_jobs(jobs, 2, ledger_dir=tmp_path, threads=1)
    assert time.time() - t0 < 25, "the pool waited for the slow job"
    assert str(e.value).splitlines()[0] == "Job 'bad' failed: ValueError: boom"
    assert "rerun the same command to resume" in str(e.value)
    assert not (tmp_path / "later").exists(), "a job started after the failure"
    assert not (tmp_path / "slow" / "done").exists()
    assert not (tmp_path / LEDGER).exists()  # nothing finished, nothing recorded as finished
    with pytest.raises(DistarError, match="Job 'bad' failed: ValueError: boom"):  # in-process too
        run_jobs(jobs[1:2], 1, threads=1)
