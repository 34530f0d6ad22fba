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
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from di_star.toy.cache import atomic_write_bytes
from di_star.trainer import load_optimizer, optimizer_tensors  # one format for both loops
from evalsuite.errors import DistarError

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
                    ema: dict[str, Tensor] | None, optimizers: dict[str, torch.optim.Optimizer],
                    rng_states: list[Tensor], state: dict) -> Path:
    """Write checkpoint `step` (main process only) and point latest.json at it; older ones go."""
    name = f"ckpt-{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=run_dir))
    try:
        _save(generator, tmp / "generator.safetensors")
        _save(assistant, tmp / "assistant.safetensors")
        if ema is not None:
            _save(ema, tmp / "ema.safetensors")
        opt_tensors, opt_meta = {}, {}
        for key, opt in optimizers.items():
            t, m = optimizer_tensors(key, opt)
            opt_tensors.update(t)
            opt_meta[key] = m
        _save(opt_tensors, tmp / "optimizers.safetensors")
        _save({f"rng.{r}": s for r, s in enumerate(rng_states)}, tmp / "rng.safetensors")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step, "optimizers": opt_meta}))
        for f in tmp.iterdir():  # contents on disk before the rename makes them visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final = run_dir / name
        if final.exists():  # a rerun that reached the same step again (e.g. after a NaN stop)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(run_dir / LATEST, json.dumps({"step": step, "name": name}).encode())
    for old in run_dir.glob("ckpt-*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / LATEST
    if not pointer.exists():
        return None
    path = run_dir / json.loads(pointer.read_text())["name"]
    if not (path / "state.json").exists():
        raise DistarError(f"{pointer} points at {path.name}, which is missing or incomplete. "
                          f"Fix: delete {pointer} to start over, or restore that folder.")
    return path


def remove_stale_temp(run_dir: Path) -> None:
    """Temp folders of a checkpoint that a killed process never finished."""
    for tmp in run_dir.glob(".ckpt-*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def load_checkpoint(path: Path, *, generator: nn.Module, assistant: nn.Module, assistant_names: set[str] | None,
                    ema: dict[str, Tensor] | None, optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    """Restore weights, EMA and optimizers in place; returns state.json plus the rng tensors."""
    state = json.loads((path / "state.json").read_text())
    generator.load_state_dict(load_file(str(path / "generator.safetensors")))
    a = load_file(str(path / "assistant.safetensors"))
    if assistant_names is not None:
        if set(a) != assistant_names:
            raise DistarError(f"{path}: the assistant checkpoint holds other parameters than this run "
                              f"trains ({len(a)} saved, {len(assistant_names)} trained; e.g. "
                              f"{sorted(set(a) ^ assistant_names)[:2]}).")
        assistant.load_state_dict(a, strict=False)
    else:
        assistant.load_state_dict(a)
    if ema is not None:
        saved = load_file(str(path / "ema.safetensors"))
        for k in ema:
            ema[k].copy_(saved[k])
    tensors = load_file(str(path / "optimizers.safetensors"))
    for key, opt in optimizers.items():
        load_optimizer(key, opt, tensors, state["optimizers"][key])
    rng = load_file(str(path / "rng.safetensors"))
    state["rng"] = [rng[f"rng.{r}"] for r in range(len(rng))]
    return state
