"""Checkpoints of the SD trainer: one folder per step, safetensors for every tensor, written to
a temp folder and renamed into place, then `latest.json` (the pointer) rewritten atomically.
A kill at any moment leaves the previous checkpoint in force; a NaN never reaches a checkpoint.

  ckpt-0000250/
    generator.safetensors   generator weights (fp32 master copy)
    assistant.safetensors   assistant weights (only the trainable ones with a LoRA assistant)
    ema.safetensors         generator EMA (when run.ema > 0)
    optimizers.safetensors  both optimizers' tensors (Adam moments, steps)
    rng.safetensors         every process's CPU generator state (rng.<rank>)
    state.json              step, config, optimizers' non-tensor state, grad scaler, world size

Every tensor is stored full (unsharded), under DDP and FSDP alike; loading reads one tensor at
a time and keeps only this process's part of it (di_star.sdxl.sharding.local_part), so a resume
never holds a second full copy of the run in host memory, and a run may resume on another
number of processes or switch between DDP and FSDP.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from di_star.sdxl.sharding import is_sharded, local_part
from di_star.trainer import optimizer_state, optimizer_tensors  # one format for both loops
from distar.core import atomic
from distar.core.errors import DistarError, read_json_file
from distar.core.runlock import remove_dead_temps

LATEST = "latest.json"


def trainable_state(module: nn.Module, names: set[str] | None) -> dict[str, Tensor]:
    """A module's state dict, or only the named parameters (a LoRA assistant's adapters; named
    once at the start, since the loop toggles requires_grad between the half-steps)."""
    if names is None:
        return module.state_dict()
    return {n: p for n, p in module.named_parameters() if n in names}


def _save(tensors: dict[str, Tensor], path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def save_checkpoint(run_dir: Path, step: int, *, generator: dict[str, Tensor], assistant: dict[str, Tensor],
                    ema: dict[str, Tensor] | None, optimizers: dict[str, dict],
                    rng_states: list[Tensor], state: dict) -> Path:
    """Write checkpoint `step` (main process only) and point latest.json at it; older ones go.
    Tensors are full ones (sharding.gather_full); `optimizers`: name -> full optimizer state dict."""
    name = f"ckpt-{step:07d}"

    def fill(tmp: Path) -> None:
        _save(generator, tmp / "generator.safetensors")
        _save(assistant, tmp / "assistant.safetensors")
        if ema is not None:
            _save(ema, tmp / "ema.safetensors")
        opt_tensors, opt_meta = {}, {}
        for key, opt_state in optimizers.items():
            t, m = optimizer_tensors(key, opt_state)
            opt_tensors.update(t)
            opt_meta[key] = m
        _save(opt_tensors, tmp / "optimizers.safetensors")
        _save({f"rng.{r}": s for r, s in enumerate(rng_states)}, tmp / "rng.safetensors")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step, "optimizers": opt_meta}))

    # A rerun that reached the same step again (e.g. after a NaN stop) replaces that checkpoint.
    final = atomic.write_dir(run_dir / name, fill, if_exists="replace")
    atomic.write_bytes(run_dir / LATEST, json.dumps({"step": step, "name": name}).encode())
    for old in run_dir.glob("ckpt-*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / LATEST
    if not pointer.exists():
        return None
    found = sorted(p.name for p in run_dir.glob("ckpt-*") if (p / "state.json").exists())
    fix = (f"delete {pointer} to start over" + (f", or point it at {found[-1]}: "
           f'{{"step": {int(found[-1][5:])}, "name": "{found[-1]}"}}' if found else ""))
    name = read_json_file(pointer, fix).get("name")
    if not isinstance(name, str) or "/" in name or not name.startswith("ckpt-"):
        raise DistarError(f"{pointer} is damaged (name = {name!r}). Fix: {fix}.")
    path = run_dir / name
    if not (path / "state.json").exists():
        raise DistarError(f"{pointer} points at {path.name}, which is missing or incomplete. "
                          f"Fix: delete {pointer} to start over, or restore that folder.")
    return path


def remove_stale_temp(run_dir: Path) -> list[Path]:
    """Temp files and folders of dead processes: a checkpoint never finished (.ckpt-*.tmp), an
    export (.export.*.tmp), a pointer (.latest.json.*.tmp). A live process's are kept."""
    return remove_dead_temps(run_dir, ".*.tmp")


def _tensors(path: Path) -> Iterator[tuple[str, Tensor]]:
    """A safetensors file's tensors, one at a time (memory-mapped reads)."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for k in f.keys():
            yield k, f.get_tensor(k)


def _load_module(module: nn.Module, path: Path, strict: bool = True) -> set[str]:
    """Load a saved full state dict into `module`, each tensor cut to this process's part."""
    like = module.state_dict()
    state = {k: local_part(v, like[k]) if k in like else v for k, v in _tensors(path)}
    module.load_state_dict(state, strict=strict)
    return set(state)


def load_checkpoint(path: Path, *, generator: nn.Module, assistant: nn.Module, assistant_names: set[str] | None,
                    ema: dict[str, Tensor] | None, optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    """Restore weights, EMA and optimizers in place (sharded modules get their shards); returns
    state.json plus the rng tensors. A damaged file raises one DistarError naming it."""
    try:
        return _load_checkpoint(path, generator=generator, assistant=assistant,
                                assistant_names=assistant_names, ema=ema, optimizers=optimizers)
    except DistarError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated safetensors, missing file, bad json, ...
        raise DistarError(
            f"Checkpoint {path} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}). "
            f"Fix: delete {path.parent / LATEST} and {path} to start this run over, or restore "
            f"{path.name} from a copy.") from None


def _load_checkpoint(path: Path, *, generator: nn.Module, assistant: nn.Module, assistant_names: set[str] | None,
                     ema: dict[str, Tensor] | None, optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    state = json.loads((path / "state.json").read_text())
    _load_module(generator, path / "generator.safetensors")
    if assistant_names is not None:
        with safe_open(str(path / "assistant.safetensors"), framework="pt") as f:
            saved = set(f.keys())
        if saved != assistant_names:
            raise DistarError(f"{path}: the assistant checkpoint holds other parameters than this run "
                              f"trains ({len(saved)} saved, {len(assistant_names)} trained; e.g. "
                              f"{sorted(saved ^ assistant_names)[:2]}).")
        _load_module(assistant, path / "assistant.safetensors", strict=False)
    else:
        _load_module(assistant, path / "assistant.safetensors")
    if ema is not None:
        for k, v in _tensors(path / "ema.safetensors"):
            if k in ema:
                ema[k].copy_(local_part(v, ema[k]))
    # Adam moments have their parameter's shape: those of sharded parameters are cut alike.
    params = {key: [p for g in opt.param_groups for p in g["params"]] for key, opt in optimizers.items()}

    def place(name: str, v: Tensor) -> Tensor:
        key, idx, _ = name.split(".", 2)
        p = params[key][int(idx)]
        return local_part(v, p) if is_sharded(p) and v.shape == p.shape else v

    tensors = {k: place(k, v) for k, v in _tensors(path / "optimizers.safetensors")}
    for key, opt in optimizers.items():
        opt.load_state_dict(optimizer_state(key, tensors, state["optimizers"][key]))
    rng = dict(_tensors(path / "rng.safetensors"))
    state["rng"] = [rng[f"rng.{r}"] for r in range(len(rng))]
    return state
