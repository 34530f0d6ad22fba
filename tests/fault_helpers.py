"""Shared bits of the fault tests (tests/test_faults_*.py): the CLI app in-process, a check
that a result is one clear error line, and a process that holds a folder's lock."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from distar.cli import app

REPO = Path(__file__).resolve().parents[1]


def invoke(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=True)


def one_clear_error(result, *needles: str) -> str:
    """Exit 2, no traceback, one line 'error: ...' containing every needle; returns it."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [ln for ln in result.output.splitlines() if ln.strip() and not ln.startswith("moved")]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    # The preflight lists every problem found under one "error:" line; the message is that block.
    text = result.output[result.output.index("error: "):]
    for n in needles:
        assert n in text, (n, text)
    return text


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding `folder`'s lock (as a running `distar eval` would), without the
    cost of importing torch: the same flock on the same file."""
    folder.mkdir(parents=True, exist_ok=True)
    code = ("import fcntl, json, os, sys, time\n"
            f"f = open({str(folder / '.distar.lock')!r}, 'a+')\n"
            "fcntl.flock(f.fileno(), fcntl.LOCK_EX)\n"
            "f.seek(0); f.truncate(); f.write(json.dumps({'pid': os.getpid(), 'host': 'h', "
            "'what': 'distar eval (other)', 'started': time.time()})); f.flush()\n"
            "print('locked', flush=True)\n"
            "time.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    time.sleep(0.05)
    return p.pid
