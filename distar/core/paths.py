"""Where distar keeps things it builds itself (tiny models, tokenizer files, cached stats), and
how committed files record a path (`portable_path`)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$DISTAR_CACHE, else $XDG_CACHE_HOME/distar, else ~/.cache/distar."""
    root = os.environ.get("DISTAR_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "distar"


def safe_name(text: str, keep: str = "-_.") -> str:
    """`text` as one file-name component: letters, digits and `keep` stay, anything else
    (slashes, colons, spaces, '@') becomes '_'."""
    return "".join(c if c.isalnum() or c in keep else "_" for c in text)


# The repository (or installed site-packages) folder that holds the `distar` package.
REPO_ROOT = Path(__file__).resolve().parents[2]


def portable_path(path: str | Path) -> str:
    """`path` as committed files record it (manifests, reports): relative to the repository
    when inside it, else `<outside>/NAME`, so no file carries a machine's absolute paths."""
    p = Path(path).expanduser().resolve()
    try:
        return p.relative_to(REPO_ROOT).as_posix() or "."
    except ValueError:
        return f"<outside>/{p.name}"


def project_commit(short: bool = False) -> str | None:
    """The commit of this project's own checkout (never of the folder the user stands in), or
    $DISTAR_BUILD_COMMIT where the code travelled without its .git (a copy sent to a GPU
    machine); None when neither is known. The one git helper of the project's provenance."""
    import subprocess
    env = os.environ.get("DISTAR_BUILD_COMMIT")
    if env:
        return env[:7] if short else env
    try:
        out = subprocess.run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"],
                             capture_output=True, text=True, cwd=Path(__file__).resolve().parent,
                             timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None
