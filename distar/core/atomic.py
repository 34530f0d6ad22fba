"""The one way distar writes a file or a folder: build it under a temporary name in the same
folder, then `os.replace` it into place, so a reader (or a rerun after a kill) sees the old
state or the whole new one, never half of it.

fsync policy (one, for every writer): by default the bytes are fsynced before the rename, so
the rename cannot land on disk before the contents after a power loss. A caller passes
`fsync=False` only for data that is verified when it is read back and is then rebuilt if bad
(the harness's images: their sha256 is in the results store and a mismatch regenerates them);
there the rename alone is enough, since a process crash still lets the page cache land.

Temp names carry the writer's pid and host (distar.core.runlock.temp_tag), so a resume removes
the leftovers of dead processes only (runlock.remove_dead_temps), never a live one's.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from distar.core.runlock import temp_tag


_UMASK = os.umask(0o022)  # read once: os.umask can only be read by setting it
os.umask(_UMASK)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextmanager
def temp_file(path: Path, fsync: bool = True) -> Iterator[Path]:
    """A temporary path beside `path`; the body writes it, then it replaces `path`. On any
    exception the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{temp_tag()}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a file follows the umask like open()'s
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write `data` to `path` atomically."""
    with temp_file(path, fsync=fsync) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path: Path, text: str, fsync: bool = True) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    write_bytes(path, text.encode("utf-8"), fsync=fsync)


def save_tensors(tensors: dict, path: Path, fsync: bool = True) -> None:
    """Save a name -> tensor dict as safetensors (detached, contiguous, on CPU) atomically."""
    from safetensors.torch import save_file

    with temp_file(path, fsync=fsync) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))


def write_dir(target: Path, fill: Callable[[Path], None], if_exists: str = "replace",
              fsync: bool = True) -> Path:
    """Build a folder with `fill(tmp_dir)` beside `target`, then rename it into place.

    if_exists: 'replace' swaps the new folder in (the old one is moved aside first, then
    removed); 'keep' keeps an existing `target` (another process that won a race built the
    same thing) and discards the new one."""
    if if_exists not in ("replace", "keep"):
        raise ValueError(f"if_exists must be 'replace' or 'keep', got {if_exists!r}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{temp_tag()}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
    try:
        fill(tmp)
        if fsync:
            for f in tmp.rglob("*"):  # contents on disk before the rename makes them visible
                if f.is_file():
                    _fsync_file(f)
        if target.exists():
            if if_exists == "keep":
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, target)
            except OSError:  # a concurrent builder renamed its folder in first
                if if_exists == "keep" and target.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
                    return target
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
