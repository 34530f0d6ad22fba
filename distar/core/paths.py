"""Where distar keeps things it builds itself (tiny models, tokenizer files, cached stats)."""
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
