"""One experiment runner for every multi-run experiment of the lab (the toy demo, the mini
ablation, the over-optimisation sweep): a plan becomes `Job`s; the jobs run on one worker pool;
what they evaluate into store parts is merged into one results store; a provenance record says
what ran where, at which commit of this project; a findings hook writes the tables.

- A `Job` is one unit of work with its own output folder: a training run (`cfg`) or the
  evaluation of one model (`model`) into a store part of its own (a store has one writer).
  `work(job)` runs it in a worker process and returns a JSON-able record; a record may name
  the store parts it wrote (`"parts": [folder, ...]`), which `run_experiment` merges.
- Scheduling (`run_jobs`): at most `workers` jobs are handed to the pool at a time, first
  planned first; when one finishes (FIRST_COMPLETED) the next starts, and the `after` hook may
  queue follow-up jobs (evaluate a run's export as soon as it exists), so no worker idles
  while the slowest jobs finish. After Ctrl-C or SIGTERM nothing new starts and the pool's
  workers are stopped (distar.core.signals.process_pool). A job's error stops the pool and is
  reported as one line naming the job.
- Resume: each finished job's record is kept in OUT/jobs.json with a fingerprint of what it
  ran (config, model, arguments); a rerun reuses the records of unchanged jobs whose folders
  still exist, and the jobs themselves resume what they had half done. The fingerprint covers
  what the job is given, not the files a model name points at: after rebuilding weights in
  place, delete OUT/jobs.json (or the job's folder) to run it again.
- Records come back in plan order (a job's follow-ups right after it), not completion order,
  so tables, merges and provenance do not depend on which worker was faster.

The runner names no world; experiments bring their own `work` functions and findings.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable

from di_star.config import TrainConfig
from distar.core.errors import DistarError
from distar.core.signals import process_pool

LEDGER = "jobs.json"            # finished jobs' records, for resume
PROVENANCE = "provenance.json"


@dataclass
class Job:
    key: str                               # unique in its experiment: 'gmm/kl', 'kl@s1', 'mini_ref'
    work: Callable[["Job"], dict]          # a module-level function (the pool pickles it by name)
    out: Path                              # its folder: a training run, or an evaluation's store part
    cfg: TrainConfig | None = None         # a training run's config ...
    model: str | None = None               # ... or the model an evaluation-only job scores
    args: dict[str, Any] = field(default_factory=dict)  # whatever else `work` needs (picklable)

    def fingerprint(self) -> str:
        """What the job computes: a finished record is reused only while this is unchanged."""
        what = {"work": f"{self.work.__module__}.{self.work.__qualname__}", "out": str(self.out),
                "cfg": self.cfg.to_dict() if self.cfg is not None else None, "model": self.model,
                "args": self.args}
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=_plain).encode()).hexdigest()[:16]


def _plain(x: Any) -> Any:
    """JSON for what a job's arguments hold (a scale or a plan dataclass, a path)."""
    if is_dataclass(x) and not isinstance(x, type):
        return asdict(x)
    return str(x)


def default_workers() -> int:
    """The lab's default pool: the CPU count, capped at 2 (it targets a 2-core machine)."""
    return max(1, min(2, os.cpu_count() or 1))


def _call(job: Job, threads: int) -> tuple[dict, float]:
    """In a worker (or in-process): the job with `threads` torch threads -> (record, wall s)."""
    import torch
    torch.set_num_threads(threads)
    t0 = time.time()
    return job.work(job), time.time() - t0


def _failed(job: Job, e: Exception) -> DistarError:
    """A job's error as one line that names the job; finished jobs stay reusable."""
    what = str(e) if isinstance(e, DistarError) else f"{type(e).__name__}: {e}"
    return DistarError(f"Job '{job.key}' failed: {what}\nFinished jobs are kept: fix the cause and rerun "
                       "the same command to resume.")


class Ledger:
    """OUT/jobs.json: {job key: {fingerprint, record, wall_s}}, rewritten atomically after each
    job by the parent process alone (one writer)."""

    def __init__(self, out: Path | None):
        self.path = out / LEDGER if out is not None else None
        self.entries: dict[str, dict] = {}
        if self.path is not None and self.path.exists():
            try:
                self.entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.entries = {}   # unreadable: every job runs again (and resumes its own work)

    def reusable(self, job: Job) -> dict | None:
        e = self.entries.get(job.key)
        if e and e.get("fingerprint") == job.fingerprint() and Path(job.out).exists():
            return e
        return None

    def add(self, job: Job, record: dict, wall_s: float) -> dict:
        from distar.core.atomic import write_text
        e = self.entries[job.key] = {"fingerprint": job.fingerprint(), "record": record, "wall_s": wall_s}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text(self.path, json.dumps(self.entries, indent=1, default=_plain) + "\n")
        return e


def run_jobs(jobs: list[Job], workers: int, *, ledger_dir: Path | None = None,
             after: Callable[[Job, dict], list[Job]] | None = None, threads: int | None = None,
             ) -> dict[str, dict]:
    """Run `jobs` (and the follow-ups `after(job, record)` returns) on `workers` processes, one
    at a time in this process when `workers` is 1 (tests register models and benchmarks that a
    spawned process would not see). `threads`: torch and BLAS threads per job (default: the
    CPUs shared among the workers). Returns {key: {"record", "wall_s", "reused"}} in plan order."""
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    ledger = Ledger(ledger_dir)
    done: dict[str, dict] = {}
    children: dict[str, list[str]] = {}
    todo = list(jobs)

    def finish(job: Job, entry: dict, reused: bool) -> None:
        done[job.key] = {**entry, "reused": reused}
        follow = after(job, entry["record"]) if after else []
        children[job.key] = [f.key for f in follow]
        todo.extend(follow)

    def next_to_run() -> Job | None:
        """The next job that needs a worker; finished ones met on the way are reused."""
        while todo:
            job = todo.pop(0)
            entry = ledger.reusable(job)
            if entry is None:
                return job
            finish(job, entry, True)
        return None

    if workers == 1:
        import torch
        caller_threads = torch.get_num_threads()   # the caller's setting comes back after
        try:
            while (job := next_to_run()) is not None:
                try:
                    record, wall = _call(job, threads)
                except Exception as e:
                    raise _failed(job, e) from e
                finish(job, ledger.add(job, record, wall), False)
        finally:
            torch.set_num_threads(caller_threads)
    else:
        # Jobs wait here, not in the pool's queue: at most `workers` are ever handed over, so
        # after Ctrl-C nothing new starts and the command ends in seconds. process_pool stops
        # its workers on Ctrl-C, SIGTERM or a job's error, and they die with this process.
        with blas_threads(threads), process_pool(workers) as pool:
            running: dict = {}
            while True:
                while len(running) < workers and (job := next_to_run()) is not None:
                    running[pool.submit(_call, job, threads)] = job
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in finished:
                    job = running.pop(f)
                    try:
                        record, wall = f.result()
                    except Exception as e:
                        raise _failed(job, e) from e
                    finish(job, ledger.add(job, record, wall), False)
    order: list[str] = []

    def visit(key: str) -> None:
        order.append(key)
        for c in children.get(key, []):
            visit(c)
    for j in jobs:
        visit(j.key)
    return {k: done[k] for k in order}


@contextmanager
def blas_threads(n: int):
    """Spawned workers start with numpy's BLAS limited to `n` threads (read once, at import).
    OpenBLAS otherwise starts a thread per core in every worker: on 2 busy cores mini_kd's 300
    small matrix products took 3.4 s instead of 0.29 s."""
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({k: str(n) for k in names})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def stderr_to(log: Path):
    """Everything written to stderr (file descriptor 2: Python and C alike) goes to `log`
    (appended) while inside; restored on the way out, also on an exception. Two workers'
    progress bars would interleave on the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(log, "ab") as f:
            os.dup2(f.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def merge_parts(parts: list[Path], results: Path, what: str = "the experiment") -> None:
    """The evaluation parts, in the given order, into the one store the tables read."""
    from distar.core.runlock import out_lock
    from evalsuite.store import merge_store
    with out_lock(results, f"{what}'s merge of its evaluation parts"):
        for part in parts:
            merge_store(part, results)


def provenance(name: str, plan: Any, done: dict[str, dict], workers: int, device: str) -> dict:
    """What ran, where and from which code: the plan, each job's wall time, the device, the
    machine and this project's git commit (distar.core.paths.project_commit: the project's
    own checkout, never the folder the user stands in)."""
    import torch

    from distar.core.paths import project_commit
    argv = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv)) if sys.argv else ""
    return {"experiment": name, "git": project_commit(short=True) or "unknown", "argv": argv,
            "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
            "workers": workers, "device": device, "date": time.strftime("%Y-%m-%d %H:%M"),
            "plan": json.loads(json.dumps(plan, default=_plain)),
            "jobs": {k: {"wall_s": e["wall_s"], "reused": e["reused"]} for k, e in done.items()}}


def run_experiment(name: str, out: Path, plan: Any, jobs: list[Job], workers: int, *,
                   after: Callable[[Job, dict], list[Job]] | None = None, threads: int | None = None,
                   device: str = "cpu", results: Path | None = None,
                   findings: Callable[[dict[str, dict], dict], Any] | None = None) -> tuple[dict, dict, Any]:
    """Run the jobs (`run_jobs`), merge the store parts their records name into `results`, then
    call `findings(records, provenance)` (tables, figures; it may add to the provenance) and
    write OUT/provenance.json. Returns ({key: record} in plan order, provenance, findings' value)."""
    from distar.core.atomic import write_text
    t0 = time.time()
    out = Path(out)
    done = run_jobs(jobs, workers, ledger_dir=out, after=after, threads=threads)
    records = {k: e["record"] for k, e in done.items()}
    parts = [Path(p) for r in records.values() for p in r.get("parts", [])]
    if parts and results is not None:
        merge_parts(parts, results, name)
    prov = provenance(name, plan, done, workers, device)
    prov["jobs_s"] = time.time() - t0
    found = findings(records, prov) if findings else None
    prov["wall_s"] = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / PROVENANCE, json.dumps(prov, indent=1, default=_plain) + "\n")
    return records, prov, found
