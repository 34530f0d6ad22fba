"""Finding a metric's weights: an explicit option, an environment variable, or the Hugging Face
cache / hub (the hub only when it answers quickly; see evalsuite.hub). Missing weights raise
WeightsMissingError naming the model, the file, and both ways to point at a local copy.

Revisions: the hub repos these metrics use publish no tagged releases, and commit hashes could not
be verified from this machine, so the default revision is the repo's current one; pass
`revision=` to pin. The snapshot commit actually used is recorded with every score (`provenance`).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

from evalsuite.errors import DistarError, WeightsMissingError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DistarError(f"device '{device}' asked for, but no CUDA GPU is visible; use 'cpu'.")
    return device


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """fp32 unless asked otherwise; half precision only on GPU (slow and lossy on CPU)."""
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise DistarError(f"Unknown dtype '{dtype}'. Choose one of: {', '.join(table)}")
    if table[dtype] != torch.float32 and device.type != "cuda":
        raise DistarError(f"dtype '{dtype}' is only supported on a GPU; use 'fp32' on {device}.")
    return table[dtype]


def _fix_text(option: str, env_var: str | None, filename: str) -> str:
    ways = [f"pass {option}=/path/to/{filename}"]
    if env_var:
        ways.append(f"set {env_var}=/path/to/{filename}")
    return " or ".join(ways)


def resolve_file(model: str, *, repo_id: str | None, filename: str, path: str | None = None,
                 env_var: str | None = None, option: str = "weights_path",
                 revision: str | None = None) -> Path:
    """The local path of `filename`: `path` (a file, or a folder holding it), else $env_var, else
    the HF cache / hub copy of repo_id/filename."""
    explicit = path or (os.environ.get(env_var) if env_var else None)
    if explicit:
        p = Path(explicit).expanduser()
        if p.is_dir():
            p = p / filename
        if not p.is_file():
            raise WeightsMissingError(model, str(p), "point " + _fix_text(option, env_var, filename)
                                      + " at an existing file")
        return p
    if repo_id is None:
        raise WeightsMissingError(model, filename, _fix_text(option, env_var, filename))
    from evalsuite.hub import hub_download
    try:
        return Path(hub_download(repo_id, filename, model=model, revision=revision, env_var=env_var))
    except WeightsMissingError as e:
        raise WeightsMissingError(model, e.file, "download it where the hub is reachable "
                                  f"(`hf download {repo_id} {filename}`) and copy the Hugging Face "
                                  f"cache (HF_HOME) here, or {_fix_text(option, env_var, filename)}"
                                  ) from None


def resolve_pretrained_dir(model: str, *, repo_id: str, path: str | None, env_var: str,
                           option: str, revision: str | None = None,
                           must_have: tuple[str, ...] = ("config.json",)) -> str:
    """A transformers `from_pretrained` target: a local folder (option / env var) or a hub id
    whose files must already be in the HF cache when the hub is unreachable."""
    explicit = path or os.environ.get(env_var)
    if explicit:
        p = Path(explicit).expanduser()
        missing = [f for f in must_have if not (p / f).is_file()]
        if missing:
            raise WeightsMissingError(model, str(p / missing[0]),
                                      f"pass {option}=DIR or set {env_var}=DIR, a folder written by "
                                      f"save_pretrained (or a download of {repo_id})")
        return str(p)
    from huggingface_hub import snapshot_download

    from evalsuite.hub import local_only
    try:
        return snapshot_download(repo_id, revision=revision, local_files_only=local_only(),
                                 allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"])
    except Exception as e:  # LocalEntryNotFoundError, RepositoryNotFoundError, HTTP errors
        raise WeightsMissingError(
            model, f"{repo_id} ({type(e).__name__})",
            f"download it where the hub is reachable (`hf download {repo_id}`) and copy the "
            f"Hugging Face cache (HF_HOME) here, or pass {option}=DIR or set {env_var}=DIR") from None


def load_state_dict(path: str | Path) -> dict:
    """Tensors only: safetensors, or torch.load(weights_only=True); never an arbitrary pickle."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DistarError(f"{path} is not a plain tensor checkpoint (torch.load with "
                          f"weights_only=True failed: {e}). Convert it to safetensors.") from None
    return obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj


def provenance(path: str | Path, hash_file: bool = False) -> dict:
    """What to record about a weight file: its path, its hub snapshot commit when it came from
    the HF cache, and (for small files) its sha256."""
    path = Path(path)
    out = {"file": str(path)}
    m = re.search(r"/snapshots/([0-9a-f]{40})/", str(path))
    if m:
        out["hub_commit"] = m.group(1)
    if hash_file:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out["sha256"] = h.hexdigest()
    return out


def open_clip_weights(model: str, arch: str, pretrained: str, *, path: str | None,
                      env_var: str, option: str = "weights_path",
                      revision: str | None = None) -> Path:
    """The local file of open_clip's `pretrained` tag for `arch` (its hub repo's
    open_clip_model.safetensors, else open_clip_pytorch_model.bin)."""
    import open_clip
    if path or os.environ.get(env_var):
        return resolve_file(model, repo_id=None, filename="open_clip_model.safetensors",
                            path=path, env_var=env_var, option=option)
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg or not cfg.get("hf_hub"):
        raise DistarError(f"open_clip has no hub copy of {arch}/{pretrained}; pass {option}=FILE")
    repo_id = cfg["hf_hub"].rstrip("/")
    first_error = None
    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        try:
            return resolve_file(model, repo_id=repo_id, filename=filename, path=path,
                                env_var=env_var, option=option, revision=revision)
        except WeightsMissingError as e:
            first_error = first_error or e
    raise first_error


def build_open_clip(arch: str, state_dict: dict | None, *, quick_gelu: bool = False):
    """An open_clip model of `arch` holding exactly `state_dict` (strict), in eval mode, frozen."""
    import open_clip
    model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return freeze(model)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no parameter gradients (inputs can still receive gradients)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
