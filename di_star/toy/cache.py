"""A content-keyed cache for the toy lab's once-trained networks (digit reference diffusion,
classifier, generator initialisations). The key hashes everything that changes the weights (the
builder's config and a code version), so a changed recipe never loads stale weights. Writes are
atomic (distar.core.atomic), so a killed build never leaves a half-written entry; an entry
that fails to load is rebuilt."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file
from torch import nn

from distar.core import atomic
from distar.core.paths import cache_dir as distar_cache


def cache_dir() -> Path:
    """The toy lab's folder in distar's cache ($DISTAR_CACHE/toy, else ~/.cache/distar/toy)."""
    return distar_cache() / "toy"


def config_key(config: dict) -> str:
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_module(name: str, config: dict, make: Callable[[], nn.Module],
                  train: Callable[[nn.Module], None]) -> nn.Module:
    """Return `make()` with weights from the cache, training them with `train(module)` and
    storing them on a miss. `config` must name everything that changes the trained weights."""
    key = config_key({"name": name, **config})
    path = cache_dir() / f"{name}-{key}.safetensors"
    # Seed the initialisation from the key: the same recipe must give the same weights whatever
    # ran before in this process (fork_rng leaves the caller's global RNG untouched).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(key[:8], 16))
        module = make()
    if path.exists():
        try:
            module.load_state_dict(load_file(str(path)))
            return module.eval()
        except Exception:  # a corrupt or foreign file: rebuild rather than fail
            path.unlink(missing_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(key[8:16], 16))
        train(module)
    atomic.save_tensors(module.state_dict(), path)
    atomic.write_bytes(path.with_suffix(".json"), json.dumps({"name": name, **config}, indent=1,
                                                               default=str).encode())
    return module.eval()
