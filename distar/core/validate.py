"""One validation for every value a user hands distar, wherever it comes from (a CLI flag, a
`distar_recipe.json`, a config file, an environment variable): numbers are finite and in range,
dtype names are known, names that become path components cannot leave their folder, and writes
stay inside the folder they were given. Each check returns a problem sentence (or raises one
DistarError), so a caller can report every problem at once before its first expensive step."""
from __future__ import annotations

import math
import os
from pathlib import Path

from distar.core.errors import DistarError


def range_text(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> str:
    """'[0, 1)', '(0, inf)': a range as a sentence shows it."""
    left = f"{'(' if lo_open else '['}{lo:g}" if lo != -math.inf else "(-inf"
    right = f"{hi:g}{')' if hi_open else ']'}" if hi != math.inf else "inf)"
    return f"{left}, {right}"


def number_problem(value, where: str, lo: float = -math.inf, hi: float = math.inf,
                   integer: bool = False, lo_open: bool = False,
                   hi_open: bool = False) -> str | None:
    """None when `value` is a finite number (an int when `integer`) in [lo, hi] (an end
    excluded when `lo_open` / `hi_open`); else a sentence naming `where`, the value and the
    range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{where} = {value!r} is not a number"
    if not math.isfinite(value):
        return f"{where} = {value} is not a finite number"
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        return f"{where} = {value!r} is not a whole number"
    if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
        return f"{where} = {value} is outside {range_text(lo, hi, lo_open, hi_open)}"
    return None


def check_number(value, where: str, fix: str, **rng) -> None:
    """number_problem as one DistarError ending in `fix`."""
    problem = number_problem(value, where, **rng)
    if problem:
        raise DistarError(f"{problem}. Fix: {fix}")


def env_number(name: str, default: float, lo: float = -math.inf, hi: float = math.inf,
               integer: bool = False, lo_open: bool = False) -> float:
    """The number in environment variable `name` (default when unset or empty), checked."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise DistarError(f"Environment variable {name}={raw!r} is not a "
                          f"{'whole ' if integer else ''}number. Fix: set it to one in "
                          f"{range_text(lo, hi, lo_open)}, or unset it (default {default}).") from None
    check_number(value, f"environment variable {name}", f"set it to a number in "
                 f"{range_text(lo, hi, lo_open)}, or unset it (default {default}).",
                 lo=lo, hi=hi, integer=integer, lo_open=lo_open)
    return value


def dtype_problem(name, where: str) -> str | None:
    """None when `name` is a dtype name distar knows (distar.core.dtypes), else a sentence."""
    from distar.core.dtypes import DTYPES
    if isinstance(name, str) and name in DTYPES:
        return None
    return f"{where} = {name!r} is not a known dtype (choose one of {', '.join(sorted(DTYPES))})"


def name_problem(name, where: str) -> str | None:
    """None when `name` can be one path component (a preset, a run name); a name holding a
    path separator, '..', a NUL or nothing at all could put files outside their folder."""
    if not isinstance(name, str) or not name.strip():
        return f"{where} is empty"
    if "/" in name or "\\" in name or "\x00" in name or name in (".", "..") or ".." in name.split("/"):
        return f"{where} = {name!r} holds a path separator or '..'"
    return None


def relpath_problem(name, where: str) -> str | None:
    """None when `name` is a relative path of plain components ('gmm/di_star_in': presets
    name their run folder runs/<preset>); an absolute path, '..', '.', an empty component, a
    backslash or a NUL could put files outside their folder."""
    if not isinstance(name, str) or not name.strip():
        return f"{where} is empty"
    parts = name.split("/")
    if "\\" in name or "\x00" in name or any(p in ("", ".", "..") for p in parts):
        return f"{where} = {name!r} is not a plain relative name (no leading '/', '..' or '//')"
    return None


def check_name(name, where: str, fix: str, nested: bool = False) -> None:
    """name_problem (relpath_problem when `nested`) as one DistarError ending in `fix`."""
    problem = (relpath_problem if nested else name_problem)(name, where)
    if problem:
        raise DistarError(f"{problem}. Fix: {fix}")


def inside(root: Path, path: Path) -> Path:
    """`path`, once its real location (symbolic links resolved, for the part that exists) is
    checked to be inside `root`'s: a link inside an output folder must not carry a write out of
    it. Check before creating folders below `path` (mkdir follows links too)."""
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if real != real_root and real_root not in real.parents:
        raise DistarError(f"{path} leads to {real}, outside {root} (a symbolic link?). distar "
                          f"writes only inside the folder it is given. Fix: remove the link (or "
                          f"replace it with a real folder), or choose another output folder.")
    return Path(path)


def not_a_file(path: Path) -> str | None:
    """None when `path` is a regular file (or a link to one); else what it is instead ('does
    not exist', 'is a directory', 'is a named pipe (FIFO)', ...), found with stat alone: opening
    a FIFO to look would block."""
    import stat
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    for test, what in ((stat.S_ISREG, None), (stat.S_ISDIR, "is a directory"),
                       (stat.S_ISFIFO, "is a named pipe (FIFO)"),
                       (stat.S_ISCHR, "is a character device"), (stat.S_ISBLK, "is a block device"),
                       (stat.S_ISSOCK, "is a socket")):
        if test(mode):
            return what
    return "is not a regular file"


def control_char(text: str, allowed: str = "") -> str | None:
    """The first control character of `text` (NUL, ESC, DEL, C1 ...) not in `allowed`, as its
    repr, or None: such bytes in user text would be stored and printed as terminal codes."""
    import unicodedata
    for c in text:
        if c not in allowed and unicodedata.category(c) == "Cc":
            return repr(c)
    return None
