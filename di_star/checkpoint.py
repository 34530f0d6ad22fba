"""The one checkpoint format of the training loop (every world): one folder per step,
safetensors for every tensor, written to a temp folder and renamed into place, then
`latest.json` (the pointer) rewritten atomically. A kill at any moment leaves the previous
checkpoint in force; a NaN never reaches a checkpoint.

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

from di_star.sdxl.sharding import full_optimizer_state, gather_full, is_sharded, local_part
from distar.core import atomic
from distar.core.errors import DistarError, read_json_file
from distar.core.runlock import remove_dead_temps

LATEST = "latest.json"


def optimizer_tensors(prefix: str, sd: dict) -> tuple[dict[str, Tensor], dict]:
    """Split an optimizer state dict (`opt.state_dict()`) into tensors (safetensors) and plain
    data (json)."""
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        meta["state"][str(idx)] = {}
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"{prefix}.{idx}.{k}"] = v
            else:
                meta["state"][str(idx)][k] = v
    return tensors, meta


def optimizer_state(prefix: str, tensors: dict[str, Tensor], meta: dict) -> dict:
    """Inverse of optimizer_tensors: the state dict for `opt.load_state_dict`."""
    state = {}
    for idx, extra in meta["state"].items():
        st = dict(extra)
        head = f"{prefix}.{idx}."
        st.update({k[len(head):]: v for k, v in tensors.items() if k.startswith(head)})
        state[int(idx)] = st
    return {"state": state, "param_groups": meta["param_groups"]}


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
    if not path.is_dir() and (run_dir / f"{name}.safetensors").is_file():
        # Before one loop served every world, the toy worlds wrote ckpt-N.safetensors + .json.
        raise DistarError(
            f"{run_dir} holds a checkpoint in the old toy-trainer format ({name}.safetensors + "
            f"{name}.json), which this version of distar does not resume from. Fix: train again "
            f"in a new --out (or delete {run_dir} to start it over); the old run's "
            f"generator.safetensors and metrics.json stay usable as they are.")
    if not (path / "state.json").exists():
        raise DistarError(f"{pointer} points at {path.name}, which is missing or incomplete. "
                          f"Fix: {fix}; or restore that folder.")
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


def save_run_state(accelerator, run_dir: Path, step: int, cfg_dict: dict, generator: nn.Module,
                   assistant: nn.Module, assistant_names: set[str] | None, ema: dict[str, Tensor] | None,
                   optimizers: dict[str, torch.optim.Optimizer], rng: torch.Generator) -> None:
    """Checkpoint `step` of a run (every process calls it: gathering shards and RNG states is
    collective; the main process writes). DDP replicas are checked to agree first."""
    states = rng.get_state()
    if accelerator.num_processes > 1:
        states = list(accelerator.gather(states.to(accelerator.device)[None]).cpu())
    else:
        states = [states]
    sharded = any(is_sharded(p) for p in generator.parameters())
    if accelerator.num_processes > 1 and not sharded:  # DDP replicas must agree
        checksum = torch.stack([p.detach().double().sum() for p in generator.parameters()]).sum().reshape(1)
        sums = accelerator.gather(checksum.to(accelerator.device)).cpu()
        if not torch.all(sums == sums[0]):
            raise DistarError(f"Generator replicas differ across processes at step {step} "
                              f"(checksums {sums.tolist()}); DDP lost synchronisation.")
    # Full tensors on the main process (collective gathers when sharded), then one writer.
    main = accelerator.is_main_process
    gen_full = gather_full(generator.state_dict(), main)
    psi_full = gather_full(trainable_state(assistant, assistant_names), main)
    ema_full = gather_full(ema, main) if ema is not None else None
    opt_states = {k: full_optimizer_state(opt, main) for k, opt in optimizers.items()}
    if main:
        state = {"config": cfg_dict, "world_size": accelerator.num_processes, "fsdp": sharded,
                 "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None}
        save_checkpoint(run_dir, step, generator=gen_full, assistant=psi_full, ema=ema_full,
                        optimizers=opt_states, rng_states=states, state=state)
    accelerator.wait_for_everyone()


def restore_run_state(accelerator, run_dir: Path, seed: int, generator: nn.Module, assistant: nn.Module,
                      assistant_names: set[str] | None, ema: dict[str, Tensor] | None,
                      optimizers: dict[str, torch.optim.Optimizer], rng: torch.Generator) -> int:
    """Restore the newest checkpoint of `run_dir` in place; the step it was written at (0: none).
    This process's RNG continues its stream; resumed on another number of processes, the
    streams are reseeded from (seed, step, rank), still a function of the seed."""
    last = latest_checkpoint(run_dir)
    if last is None:
        return 0
    state = load_checkpoint(last, generator=generator, assistant=assistant, assistant_names=assistant_names,
                            ema=ema, optimizers=optimizers)
    step = int(state["step"])
    rank, world_size = accelerator.process_index, accelerator.num_processes
    if len(state["rng"]) == world_size:
        rng.set_state(state["rng"][rank])
    else:
        accelerator.print(f"checkpoint written by {len(state['rng'])} processes, resuming on "
                          f"{world_size}: data streams reseeded from (seed, step, rank)")
        rng.manual_seed(seed * 1000 + rank + 7919 * step)
    if accelerator.scaler is not None and state.get("scaler"):
        accelerator.scaler.load_state_dict(state["scaler"])
    return step
