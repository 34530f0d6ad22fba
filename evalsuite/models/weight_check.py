"""Weights of a local pipeline folder (`--model path:DIR`), checked before the first image:
every component's safetensors files hold floating-point weights, diffusers models (UNet, VAE,
transformer) have exactly the keys their config asks for, and once loaded every parameter is
finite. Without this an int8 or all-NaN UNet generated black images, and a UNet missing one key
ended in "Cannot copy out of meta tensor". Problems come back as one sentence per component.

Only file headers are read before loading (safetensors: an 8-byte length, then JSON), and the
expected keys come from the model class built on the meta device: no weight is read twice."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from distar.core.errors import DistarError

_FLOAT = {"F16", "BF16", "F32", "F64"}


def safetensors_header(path: Path) -> dict[str, str]:
    """{tensor name: dtype name ('F16', 'I8', ...)} of a safetensors file, from its header."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100 * 2**20:
            raise ValueError("header larger than 100 MB")
        header = json.loads(f.read(n))
    return {k: v["dtype"] for k, v in header.items() if k != "__metadata__"}


def _expected_keys(library: str, cls_name: str, folder: Path) -> set[str] | None:
    """State-dict keys of a diffusers model built from `folder`'s config on the meta device;
    None for anything else (transformers text encoders tie and drop keys by design)."""
    if library != "diffusers":
        return None
    import diffusers
    from accelerate import init_empty_weights
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not hasattr(cls, "load_config") or not (folder / "config.json").is_file():
        return None
    try:
        config = cls.load_config(folder)
        with init_empty_weights():
            model = cls.from_config(config)
    except Exception:  # noqa: BLE001 - a config the class cannot build is reported at load time
        return None
    return set(model.state_dict())


def component_problems(folder: Path, name: str, library: str, cls_name: str) -> list[str]:
    """What is wrong with component `name` in `folder` (its safetensors files), if anything."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return []  # .bin weights are read (weights_only) by the loader, which checks them
    tensors: dict[str, str] = {}
    for f in files:
        try:
            tensors.update(safetensors_header(f))
        except (OSError, ValueError, struct.error) as e:
            return [f"{name}: {f} is not a readable safetensors file ({e})"]
    problems = []
    ints = sorted(k for k, dt in tensors.items() if dt not in _FLOAT and k.endswith((".weight", ".bias")))
    if ints:
        problems.append(f"{name}: {len(ints)} weight(s) are not floating point (e.g. {ints[0]} is "
                        f"{tensors[ints[0]]}; quantized checkpoints are not supported)")
    expected = _expected_keys(library, cls_name, folder)
    if expected is not None:
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        if missing:
            problems.append(f"{name}: {len(missing)} weight(s) missing from {folder} (e.g. "
                            f"{missing[0]})")
        if unexpected:
            problems.append(f"{name}: {len(unexpected)} weight(s) its config does not have "
                            f"(e.g. {unexpected[0]}; a checkpoint of another architecture?)")
    return problems


def check_pipeline_folder(root: Path, skip: tuple[str, ...] = ()) -> None:
    """Every component of the diffusers pipeline folder `root` but those in `skip` (replaced
    by an override), before loading; one DistarError naming each component with a problem."""
    try:
        index = json.loads((root / "model_index.json").read_text())
    except (OSError, ValueError):
        return  # the recipe reader already refused a missing or damaged model_index.json
    problems = []
    for name, entry in index.items():
        if name.startswith("_") or name in skip or not isinstance(entry, list) \
                or len(entry) != 2 or not all(isinstance(e, str) for e in entry):
            continue
        if (root / name).is_dir():
            problems += component_problems(root / name, name, *entry)
    if problems:
        raise DistarError(f"The weights in {root} cannot be used: " + "; ".join(problems)
                          + ". Fix: re-save the pipeline with diffusers' save_pretrained in "
                          "float16/float32, or point --model path: at a complete folder.")


def check_loaded(pipe, where: str) -> None:
    """After loading: every parameter of every component is finite (a NaN or inf weight makes
    black or noise images, silently)."""
    for name, module in getattr(pipe, "components", {}).items():
        if not isinstance(module, torch.nn.Module):
            continue
        for key, p in module.named_parameters():
            if p.is_floating_point() and p.device.type != "meta" and not torch.isfinite(p).all():
                raise DistarError(f"The weights in {where}: component {name} has non-finite "
                                  f"values (NaN or inf) in {key}. Fix: re-save the pipeline from "
                                  f"a good checkpoint (a training run's last good checkpoint).")
