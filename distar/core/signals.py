"""Signals, one policy for every command: SIGTERM (`timeout`, `kill`, a batch scheduler) stops a
command the way Ctrl-C does, and worker pools never outlive the command that started them.

- `sigterm_as_interrupt()`: while active, SIGTERM raises `Terminated`, a KeyboardInterrupt, so
  every `except KeyboardInterrupt` path (finish or drop the batch, mark the run 'interrupted',
  tell how to resume) serves both; the CLI exits 128 + 15 = 143 for it, 130 for Ctrl-C.
- `process_pool(...)`: a ProcessPoolExecutor whose workers die with their parent (Linux
  PR_SET_PDEATHSIG: a SIGKILLed parent leaves no orphan computing for nobody) and which, when
  the body raises (Ctrl-C, SIGTERM, a job's error), stops its workers instead of waiting for
  them: SIGTERM (a training run checkpoints its step), then SIGKILL after a grace period.
  Workers ignore SIGINT: a Ctrl-C reaches the whole process group, and the parent alone
  decides what stops.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

GRACE_S = 4.0  # a worker's time to checkpoint after SIGTERM before it is killed


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where SIGINT raises KeyboardInterrupt."""

    exit_code = 128 + signal.SIGTERM


def exit_code(e: KeyboardInterrupt) -> int:
    """143 for SIGTERM, 130 for Ctrl-C (the shell's 128 + signal number)."""
    return getattr(e, "exit_code", 128 + signal.SIGINT)


def _raise_terminated(signum, frame):
    raise Terminated("SIGTERM")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises Terminated in the main thread for the body (elsewhere: a no-op, Python
    handles signals in the main thread only); the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def die_with_parent(parent: int | None = None) -> None:
    """A pool worker's initializer: be SIGKILLed when the parent dies (Linux; elsewhere only
    the parent's own clean-up applies), and leave Ctrl-C to the parent, which stops the pool
    (process_pool): an idle worker interrupted in its queue would print a traceback. A
    training job's own handler (di_star.trainer.StopSignal) still checkpoints on SIGTERM."""
    if sys.platform.startswith("linux"):
        import ctypes
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if parent is not None and os.getppid() != parent:  # the parent died before prctl took
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_workers(processes, grace: float = GRACE_S) -> None:
    """SIGTERM every live process, wait up to `grace` seconds in all, SIGKILL the rest."""
    procs = [p for p in processes if p.is_alive()]
    for p in procs:
        try:
            p.terminate()
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)


@contextmanager
def process_pool(workers: int, method: str = "spawn") -> Iterator:
    """A ProcessPoolExecutor of `workers` processes (see the module's docstring): on a normal
    exit it waits for its jobs as usual; when the body raises, its workers are stopped at once."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    pool = ProcessPoolExecutor(workers, mp_context=get_context(method),
                               initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        stop_workers(processes)
        raise
    pool.shutdown(wait=True)
