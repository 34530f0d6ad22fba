"""Build a ready-to-call diffusers pipeline from a ModelSpec, loading each weight file once.

Sources, in order of what a spec asks for:
- weights='tiny': the cached tiny build of the real architecture (evalsuite.models.architectures);
- weights='random': the full-size architecture with random weights (latency / memory on a GPU
  with nothing downloaded);
- a local directory (`path:DIR`, or `repo` pointing at a folder);
- a hub id: the local Hugging Face cache first; the hub only if it answers (evalsuite.hub).
Missing weights offline raise WeightsMissingError naming the model, the file and the fix.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import torch

from distar.core.dtypes import DTYPES
from distar.core.errors import DistarError, WeightsMissingError
from distar.core.registry import Registry
from evalsuite.hub import local_only
from evalsuite.models.specs import ModelSpec

RECIPE_FILE = "distar_recipe.json"  # written beside checkpoints by `distar train`
# Pipelines that are not diffusers classes, by ModelSpec.pipeline name: a function
# `(spec, device) -> pipeline` (or its lazy "module:attr" name), added by the package that owns
# them (di_star adds the toy DigitsPipeline, see di_star/plugins.py).
PIPELINE_LOADERS: Registry = Registry("pipeline loader")
_FAMILY = {"StableDiffusionXLPipeline": "sdxl", "StableDiffusionPipeline": "sd15",
           "StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux"}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DistarError(f"--device {device} asked for, but no CUDA GPU is visible. Use --device cpu.")
    return torch.device(device)


def compute_dtype(spec: ModelSpec, device: torch.device) -> torch.dtype:
    """The recipe's dtype on GPU; float32 on CPU (half precision on CPU is slow and lossy)."""
    return DTYPES[spec.dtype] if device.type == "cuda" else torch.float32


def _dir_fingerprint(d: Path) -> str:
    """Names, sizes and mtimes of a folder's files: changes when a checkpoint is rewritten."""
    h = hashlib.sha256()
    for f in sorted(p for p in d.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(d)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def spec_from_path(directory: str) -> ModelSpec:
    """A spec for a local diffusers pipeline folder (or a `distar train` export)."""
    d = Path(directory).expanduser()
    index = d / "model_index.json"
    if not index.is_file():
        raise DistarError(f"path:{directory} is not a diffusers pipeline folder (no "
                          f"model_index.json). Point at a folder written by save_pretrained "
                          f"or by `distar train` (its export/ subfolder).")
    cls = json.loads(index.read_text())["_class_name"]
    recipe = json.loads((d / RECIPE_FILE).read_text()) if (d / RECIPE_FILE).is_file() else {}
    unet_cfg = d / "unet" / "config.json"
    res = recipe.get("resolution")
    if res is None and unet_cfg.is_file():
        res = json.loads(unet_cfg.read_text()).get("sample_size", 128) * 8
    fields = dict(name=f"path-{d.name}-{_dir_fingerprint(d)}",
                  description=f"local pipeline at {d}", pipeline=cls, repo=str(d.resolve()),
                  dtype=recipe.get("dtype", "float16"), resolution=int(res or 1024),
                  params=recipe.get("params", ""))
    for key in ("scheduler", "steps", "guidance", "arch_type", "default_batch_size", "latent_channels",
                "vae_scale"):
        if key in recipe:
            fields[key] = recipe[key]
    if recipe.get("timesteps") is not None:
        fields["timesteps"] = tuple(recipe["timesteps"])
    # A checkpoint's sampling recipe is part of what decides its images.
    meta = tuple(sorted((k, json.dumps(v) if isinstance(v, (dict, list)) else v)
                        for k, v in recipe.get("training", {}).items()))
    return ModelSpec(**fields, call_kwargs=tuple(sorted(recipe.get("call_kwargs", {}).items())),
                     meta=meta)


def _pipeline_class(name: str):
    import diffusers
    try:
        return getattr(diffusers, name)
    except AttributeError:
        raise DistarError(f"diffusers {diffusers.__version__} has no pipeline class '{name}'.")


def _from_pretrained(loader, spec: ModelSpec, what: str, **kwargs):
    """Call a from_pretrained, turning 'not in cache and no hub' into a clear error."""
    is_local = Path(kwargs.get("pretrained_model_name_or_path", "")).expanduser().is_dir()
    try:
        return loader(local_files_only=is_local or local_only(), **kwargs)
    except (OSError, EnvironmentError, ValueError) as e:
        src = kwargs.get("pretrained_model_name_or_path")
        raise WeightsMissingError(
            spec.name, f"{what} from {src} ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
            f"download it where the hub is reachable (`hf download {src}`) and copy the "
            f"Hugging Face cache (HF_HOME) here, or save the pipeline to a folder and use "
            f"--model path:/that/folder (distar eval) or sd.reference / sd.generator = "
            f"'path:/that/folder' in a --config file (distar train)")


def _load_unet_override(spec: ModelSpec, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel
    src = spec.unet
    if src.filename is None:
        return _from_pretrained(UNet2DConditionModel.from_pretrained, spec, "UNet",
                                pretrained_model_name_or_path=src.repo, subfolder=src.subfolder,
                                revision=src.revision, torch_dtype=dtype)
    # A bare state dict on the base pipeline's UNet config (DMD2 ships a .bin).
    local = Path(src.repo).expanduser() / src.filename
    if not local.is_file():
        from evalsuite.hub import hub_download
        local = Path(hub_download(src.repo, src.filename, model=spec.name, revision=src.revision))
    if local.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(local)
    else:  # never unpickle arbitrary objects
        state = torch.load(local, map_location="cpu", weights_only=True)
    config = _from_pretrained(UNet2DConditionModel.load_config, spec, "UNet config",
                              pretrained_model_name_or_path=spec.repo, subfolder="unet",
                              revision=spec.revision)
    from accelerate import init_empty_weights
    with init_empty_weights():  # no random init of 2.6B parameters that the state dict replaces
        unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(state, assign=True)
    return unet.to(dtype).eval()


def quiet_hf_logging() -> None:
    """Our own progress bar reports progress; silence the libraries' per-load bars and the
    expected 'first timestep is 399' notice of one-step recipes."""
    import warnings

    import diffusers
    import transformers
    # diffusers 0.42 renamed torch_dtype -> dtype; we keep torch_dtype for older releases.
    warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@lru_cache(maxsize=2)
def load_pipeline(spec: ModelSpec, device: torch.device):
    """The pipeline for `spec` on `device`, scheduler swapped as the recipe says. Cached, so a
    process that evaluates several benchmarks loads each model once."""
    quiet_hf_logging()
    if spec.pipeline in PIPELINE_LOADERS:
        return PIPELINE_LOADERS.load(spec.pipeline)(spec, device)
    dtype = compute_dtype(spec, device)
    if spec.weights in ("tiny", "random"):
        from evalsuite.models.architectures import build_pipeline, tiny_pipeline_dir
        family = _FAMILY.get(spec.pipeline)
        if family is None:
            raise DistarError(f"--weights random is not available for '{spec.name}' "
                              f"({spec.pipeline}); embedded architectures: "
                              f"{', '.join(sorted(_FAMILY))}.")
        if spec.weights == "tiny":
            cls = _pipeline_class(spec.pipeline)
            pipe = cls.from_pretrained(tiny_pipeline_dir(family), local_files_only=True,
                                       torch_dtype=dtype)
        else:
            pipe = build_pipeline(family, "full", dtype=dtype)
    else:
        cls = _pipeline_class(spec.pipeline)
        kwargs = dict(pretrained_model_name_or_path=spec.repo, revision=spec.revision,
                      torch_dtype=dtype)
        if spec.variant:  # on every device: some repos ship only the variant's files (fp16-only
            kwargs["variant"] = spec.variant  # DI* / Diff-Instruct repos); torch_dtype casts on load
        if spec.unet is not None:
            # Skip the base UNet (saves reading 5 GB); the override replaces it.
            pipe = _from_pretrained(cls.from_pretrained, spec, "pipeline", unet=None, **kwargs)
            pipe.register_modules(unet=_load_unet_override(spec, dtype))
        else:
            pipe = _from_pretrained(cls.from_pretrained, spec, "pipeline", **kwargs)
    if spec.scheduler:
        import diffusers
        pipe.scheduler = getattr(diffusers, spec.scheduler).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def loaded_revision(pipe) -> str | None:
    """The commit of the snapshot a hub pipeline was read from (recorded in the store)."""
    path = getattr(getattr(pipe, "config", None), "_name_or_path", None) or ""
    parts = Path(path).parts
    if "snapshots" in parts:
        i = parts.index("snapshots")
        return parts[i + 1] if i + 1 < len(parts) else None
    return None


def with_resolution(spec: ModelSpec, resolution: int) -> ModelSpec:
    return replace(spec, resolution=resolution)
