"""One process per output folder, and leftovers of dead processes only.

`out_lock(folder, what)` holds an exclusive `fcntl.flock` on `folder/.distar.lock` while a
command writes there (`distar eval`, `distar train`). A second process on the same folder is
refused at once with a message naming the holder (pid, command, start time) instead of redoing
the same work beside it or deleting its in-flight files. flock, not a pid file: the kernel
drops the lock when its holder dies, however it dies (SIGKILL included), so a crashed run never
leaves a stale lock behind. (flock is advisory and may not span hosts on some network
filesystems; on those, one --out per job is the rule.)

Temp files carry their writer's host and pid (`temp_tag()`), so a cleaner removes only those of
processes that are gone (`remove_dead_temps`), never a live process's in-flight file.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from distar.core.errors import DistarError

LOCK_FILE = ".distar.lock"
_HELD: dict[str, int] = {}   # folders this process holds the lock of -> nesting depth
_TAG = re.compile(r"\.pid(\d+)@([A-Za-z0-9_-]+)\.")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"


def temp_tag() -> str:
    """`pid<pid>@<host>`: put it in a temp file's name, between dots."""
    return f"pid{os.getpid()}@{_host()}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def writer_is_dead(name: str) -> bool:
    """True when `name` is a temp file tagged by a process of this host that no longer runs.
    Untagged names and other hosts' files are never judged dead."""
    m = _TAG.search(name)
    if m is None or m.group(2) != _host():
        return False
    pid = int(m.group(1))
    return pid != os.getpid() and not pid_alive(pid)


def remove_dead_temps(folder: Path, pattern: str = ".*.tmp*") -> list[Path]:
    """Delete the temp files / folders matching `pattern` in `folder` whose writer is dead."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(pattern):
        if writer_is_dead(p.name):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def secondary_rank() -> bool:
    """Whether a launcher (torchrun, `accelerate launch`) started this process as one of several
    and not as the first: only then does it leave the --out lock and the talking to rank 0.
    RANK alone proves nothing (a stray `export RANK=1` must not skip the lock): a launcher
    also sets LOCAL_RANK, WORLD_SIZE > 1 and MASTER_ADDR."""
    env = os.environ
    try:
        ranked = int(env.get("RANK", "0")) != 0 and int(env.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False
    return ranked and "LOCAL_RANK" in env and bool(env.get("MASTER_ADDR"))


@contextmanager
def out_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold `folder`'s lock for the body, or raise DistarError naming the process that has it.
    Re-entrant within a process (the CLI holds it around generation and scoring, and the
    harness takes it again inside)."""
    folder = Path(folder)
    key = str(folder.resolve())
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a symbolic link planted as the lock must not have its target truncated.
        fh = os.fdopen(os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666),
                       "r+")
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DistarError(f"{folder / LOCK_FILE} is a symbolic link; distar does not write "
                              f"through it. Fix: delete it (rm {folder / LOCK_FILE}), or use "
                              f"another --out.") from None
        what = "is a file, not a folder" if folder.exists() and not folder.is_dir() \
            else f"is not writable ({e.strerror})"
        raise DistarError(f"Output directory {folder} {what}. Fix: pick another with --out.") from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            try:
                holder = json.loads(fh.read() or "{}")
            except json.JSONDecodeError:
                holder = {}
            since = time.strftime("%H:%M:%S", time.localtime(holder.get("started", time.time())))
            raise DistarError(
                f"{folder} is in use by another process ({holder.get('what', 'distar')}, pid "
                f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since {since}; lock "
                f"{folder / LOCK_FILE}). Two runs on one folder would do the same work twice. "
                f"Fix: wait for it to finish (rerunning then only does what is left), or use "
                f"another --out.") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": _host(), "what": what,
                             "started": time.time()}))
        fh.flush()
        _HELD[key] = 1
        try:
            yield
        finally:
            _HELD.pop(key, None)
    finally:
        fh.close()  # releases the flock
