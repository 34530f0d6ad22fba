"""What a launcher asked for, read from the launcher itself: `accelerate launch --cpu
--num_processes 2` without --multi_gpu starts one process and tells it nothing about the 2, so
the only place the request survives is the launcher's own command line (its parent process)."""
from __future__ import annotations

import os
from pathlib import Path


def launcher_args(pid: int | None = None) -> list[str]:
    """The command line of process `pid` (default: this process's parent); [] when unreadable
    (not Linux, or gone)."""
    try:
        raw = Path(f"/proc/{pid or os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def requested_processes(args: list[str] | None = None) -> int | None:
    """`--num_processes N` of an `accelerate launch` command line (default: the parent's);
    None when the parent is not `accelerate launch` or sets no count on its command line."""
    args = launcher_args() if args is None else args
    is_accelerate = any(Path(a).name == "accelerate" or a.startswith("accelerate.commands")
                        for a in args[:4])
    if not is_accelerate or "launch" not in args and not any("commands.launch" in a for a in args[:4]):
        return None
    for i, a in enumerate(args):
        value = None
        if a in ("--num_processes", "--num-processes") and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(("--num_processes=", "--num-processes=")):
            value = a.split("=", 1)[1]
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None
    return None
