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
import pickle
import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import torch

from distar.core.dtypes import DTYPES
from distar.core.errors import DistarError, WeightsMissingError
from evalsuite.hub import local_only
from evalsuite.models.specs import PIPELINE_FAMILIES, PIPELINE_LOADERS, ModelSpec, family_of

RECIPE_FILE = "distar_recipe.json"  # written beside checkpoints by `distar train`


_DEVICE = re.compile(r"(cpu|cuda|mps)(:\d+)?")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' (a GPU when one is visible, else the CPU), 'cpu', 'cuda', 'cuda:1' or a device."""
    if not isinstance(device, torch.device) and device != "auto" and not _DEVICE.fullmatch(str(device)):
        hint = " (did you mean cuda?)" if str(device).lower() in ("gpu", "gpu:0", "nvidia") else ""
        raise DistarError(f"Unknown --device '{device}'{hint}. Use auto, cpu, cuda, cuda:N or mps.")
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DistarError(f"device '{device}' asked for, but no CUDA GPU is visible. "
                          f"Use --device cpu (device='cpu').")
    return device


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint that is a plain state dict (name -> tensor): safetensors, or a torch file
    read with weights_only=True (a {'state_dict': ...} wrapper is unwrapped). Nothing but
    tensors is ever unpickled; anything else is a DistarError naming the file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as e:
            raise DistarError(f"{path} is not a readable safetensors file ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}). Replace it with a "
                              f"good copy.") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DistarError(f"{path} holds pickled objects other than tensors or is not a torch "
                          f"checkpoint; refusing to load it (torch.load weights_only=True said: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}). "
                          f"Convert it to safetensors.") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DistarError(f"{path} is not a state dict (name -> tensor); got {type(obj).__name__}")
    return obj


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


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as e:
        raise DistarError(f"{path} is not valid JSON (line {e.lineno}: {e.msg}). Fix or remove it.")
    if not isinstance(data, dict):  # a list or a number where keys are expected
        raise DistarError(f"{path} holds a JSON {type(data).__name__}, not an object of keys. "
                          f"Fix or remove it.")
    return data


def _call_defaults(pipeline: str) -> dict:
    """The pipeline class's own __call__ defaults (num_inference_steps, guidance_scale, ...)."""
    import inspect
    try:
        cls = _pipeline_class(pipeline)
    except DistarError:
        return {}
    return {k: v.default for k, v in inspect.signature(cls.__call__).parameters.items()
            if v.default is not inspect.Parameter.empty}


# Keys of distar_recipe.json (docs/path_recipes.md); anything else is rejected by name.
RECIPE_KEYS = ("name", "scheduler", "steps", "guidance", "timesteps", "resolution", "dtype",
               "params", "arch_type", "default_batch_size", "latent_channels", "vae_scale",
               "call_kwargs", "variant", "training")


def vae_scale_from_config(vae: dict) -> tuple[int, str]:
    """(pixels per latent, where it came from), by the rule the diffusers pipeline applies to
    this kind of autoencoder in its __init__ (`self.vae_scale_factor`): a DC autoencoder (Sana,
    `AutoencoderDC`) from `encoder_block_out_channels`, one that states its ratio from
    `spatial_compression_ratio`, a KL / VQ autoencoder from `block_out_channels`; no VAE: 8.
    load_pipeline_checked compares the result with the loaded pipeline's own value."""
    if vae.get("encoder_block_out_channels"):
        return (2 ** (len(vae["encoder_block_out_channels"]) - 1),
                "vae/config.json encoder_block_out_channels (DC autoencoder)")
    if vae.get("spatial_compression_ratio"):
        return int(vae["spatial_compression_ratio"]), "vae/config.json spatial_compression_ratio"
    if vae.get("block_out_channels"):
        return 2 ** (len(vae["block_out_channels"]) - 1), "vae/config.json block_out_channels"
    return 8, "default 8"


_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def detect_variant(d: Path) -> str | None:
    """'fp16' (or another variant) when the folder's weight files all carry a variant
    (`model.fp16.safetensors`), as `save_pretrained(variant=...)` writes them; None when any
    plain weight file exists."""
    variants, plain = set(), False
    for f in d.glob("*/*"):
        if f.suffix not in _WEIGHT_SUFFIXES or f.name.endswith(".index.json"):
            continue
        parts = f.name.split(".")
        stem = parts[0].split("-")[0]
        if len(parts) == 3 and stem in ("model", "diffusion_pytorch_model", "pytorch_model"):
            variants.add(parts[1])
        else:
            plain = True
    return next(iter(variants)) if len(variants) == 1 and not plain else None


def read_pipeline_recipe(d: Path) -> tuple[dict, dict]:
    """(fields, sources) of the sampling recipe of the pipeline folder `d`: each field from
    distar_recipe.json when it says so, else from the folder's own configs (model_index.json,
    the VAE / UNet / transformer configs, the scheduler config), else from the pipeline class's
    __call__ defaults. `sources` names where each value came from (printed, and stored)."""
    index = _read_json(d / "model_index.json")
    cls = index.get("_class_name") if isinstance(index, dict) else None
    if not isinstance(cls, str) or not cls:
        raise DistarError(f"{d / 'model_index.json'} has no pipeline class name (a string "
                          f"'_class_name', e.g. \"StableDiffusionXLPipeline\"). Re-save the pipeline "
                          f"with diffusers' save_pretrained, or fix the file.")
    recipe = _read_json(d / RECIPE_FILE)
    unknown = sorted(set(recipe) - set(RECIPE_KEYS))
    if unknown:
        raise DistarError(f"{d / RECIPE_FILE}: unknown key(s) {', '.join(unknown)}. Known keys: "
                          f"{', '.join(RECIPE_KEYS)} (docs/path_recipes.md).")
    present = {k for k, v in index.items() if not k.startswith("_")
               and isinstance(v, list) and v and v[0] is not None}
    denoiser = "transformer" if "transformer" in present else "unet"
    den = _read_json(d / denoiser / "config.json")
    vae = _read_json(d / "vae" / "config.json")
    sched = _read_json(d / "scheduler" / "scheduler_config.json")
    call = _call_defaults(cls)
    fields: dict = {}
    sources: dict = {}

    def put(key, value, source):
        fields[key], sources[key] = value, source

    vae_scale, where = vae_scale_from_config(vae)
    put("vae_scale", vae_scale, where)
    variant = detect_variant(d)
    if variant:
        put("variant", variant, f"weight files *.{variant}.* only")
    channels = vae.get("latent_channels") or den.get("in_channels") or 4
    put("latent_channels", channels, "vae/config.json latent_channels" if vae.get("latent_channels")
        else f"{denoiser}/config.json in_channels" if den.get("in_channels") else "default 4")
    if den.get("sample_size"):
        side = den["sample_size"]
        side = side[0] if isinstance(side, (list, tuple)) else side
        put("resolution", int(side) * vae_scale, f"{denoiser}/config.json sample_size x VAE scale")
    else:  # FLUX: default_sample_size 128 in the pipeline class
        put("resolution", 128 * vae_scale, "pipeline default (128 latents x VAE scale)")
    if "num_inference_steps" in call:
        put("steps", int(call["num_inference_steps"]), f"{cls}.__call__ default")
    if "guidance_scale" in call:
        put("guidance", float(call["guidance_scale"]), f"{cls}.__call__ default")
    put("arch_type", "UNet" if denoiser == "unet" else "DiT", f"model_index.json ({denoiser})")
    if sched.get("_class_name"):
        sources["scheduler"] = f"scheduler/scheduler_config.json ({sched['_class_name']})"
    if sched.get("prediction_type"):  # shown with the recipe (not a field: the folder's own)
        sources["prediction_type"] = f"{sched['prediction_type']} (scheduler/scheduler_config.json)"
    if cls.startswith("Flux") and den and not den.get("guidance_embeds", False):
        # FluxPipeline passes guidance_scale only to a transformer with guidance embeddings.
        sources["guidance_ignored"] = f"{denoiser}/config.json has no guidance embedding"
    if call.get("use_resolution_binning"):
        # PixArt / Sana snap the size to aspect-ratio bins of 1024/512/256 px models and reject
        # other sample sizes; distar asks for a square size the latents already have.
        put("call_kwargs", {"use_resolution_binning": False}, f"{cls}: resolution binning off")
    for key in RECIPE_KEYS:
        if key in recipe and key != "training":
            put(key, recipe[key], RECIPE_FILE)
    return {**fields, "pipeline": cls, "training": recipe.get("training", {})}, sources


def spec_from_path(directory: str) -> ModelSpec:
    """A spec for a local diffusers pipeline folder (or a `distar train` export); see
    read_pipeline_recipe for where each sampling setting comes from."""
    d = Path(directory).expanduser()
    index = d / "model_index.json"
    if not index.is_file():
        raise DistarError(f"path:{directory} is not a diffusers pipeline folder (no "
                          f"model_index.json). Point at a folder written by save_pretrained "
                          f"or by `distar train` (its export/ subfolder).")
    rec, sources = read_pipeline_recipe(d)
    training = rec.pop("training")
    # Display name: the recipe's, else a training export's run folder, else the folder's name.
    label = rec.pop("name", None) or (d.resolve().parent.name if training and d.name == "export"
                                      else d.resolve().name)
    fields = dict(name=f"path-{d.name}-{_dir_fingerprint(d)}",
                  description=f"local pipeline at {d}", pipeline=rec.pop("pipeline"),
                  repo=str(d.resolve()), dtype=rec.pop("dtype", "float16"), label=label)
    if rec.get("timesteps") is not None:
        rec["timesteps"] = tuple(rec["timesteps"])
    call_kwargs = tuple(sorted(rec.pop("call_kwargs", {}).items()))
    fields.update({k: v for k, v in rec.items() if v is not None})
    # A checkpoint's training recipe is provenance (Table 2 groups by its alphas), and where
    # each sampling setting came from is recorded with every run.
    meta = tuple(sorted((k, json.dumps(v) if isinstance(v, (dict, list)) else v)
                        for k, v in training.items()))
    meta += (("recipe_sources", json.dumps(sources, sort_keys=True)),)
    return ModelSpec(**fields, call_kwargs=call_kwargs, meta=meta)


def with_overrides(spec: ModelSpec, steps: int | None = None, guidance: float | None = None,
                   resolution: int | None = None, name: str | None = None,
                   variant: str | None = None) -> ModelSpec:
    """`--steps --guidance --resolution --name --variant` on top of a recipe."""
    changes: dict = {}
    if variant is not None:  # weight files `*.<variant>.safetensors` (e.g. fp16); '' = plain
        changes["variant"] = variant.strip() or None
    if steps is not None:
        if steps < 1:
            raise DistarError(f"--steps {steps}: must be >= 1.")
        changes["steps"] = steps
    if guidance is not None:
        changes["guidance"] = guidance
    if resolution is not None:
        step = spec.vae_scale * (2 if spec.pipeline.startswith("Flux") else 1)
        if resolution < step or resolution % step:
            raise DistarError(f"--resolution {resolution}: must be a positive multiple of {step} "
                              f"for {spec.pipeline} (its VAE scale factor is {spec.vae_scale}).")
        changes["resolution"] = resolution
    if name is not None:
        if not name.strip():
            raise DistarError("--name must not be empty.")
        changes["label"] = name.strip()
    if changes and spec.meta and any(k == "recipe_sources" for k, _ in spec.meta):
        sources = json.loads(dict(spec.meta)["recipe_sources"])
        sources.update({("name" if k == "label" else k): "command line" for k in changes})
        changes["meta"] = tuple((k, json.dumps(sources, sort_keys=True) if k == "recipe_sources"
                                 else v) for k, v in spec.meta)
    return replace(spec, **changes) if changes else spec


def describe_recipe(spec: ModelSpec) -> str:
    """One line: the effective sampling recipe, and where each value came from (path: models)."""
    sources = json.loads(dict(spec.meta).get("recipe_sources", "{}")) if spec.meta else {}

    def item(key, value):
        src = sources.get(key)
        return f"{key} {value}" + (f" ({src})" if src else "")
    c, *hw = spec.latent_shape()
    guidance = item("guidance", spec.guidance)
    if sources.get("guidance_ignored"):
        guidance = f"guidance {spec.guidance} (ignored: {sources['guidance_ignored']})"
    parts = [item("steps", spec.steps), guidance,
             item("resolution", spec.resolution),
             item("latent_channels", c) + f" -> latents {tuple(spec.latent_shape())}",
             item("vae_scale", spec.vae_scale),
             "packing 2x2 (FLUX)" if spec.pipeline.startswith("Flux") else "packing none",
             item("arch_type", spec.arch_type),
             item("scheduler", spec.scheduler or "the pipeline's own")]
    if sources.get("prediction_type"):
        parts.append(f"prediction_type {sources['prediction_type']}")
    if spec.variant:
        parts.append(item("variant", spec.variant))
    if spec.timesteps:
        parts.append(item("timesteps", list(spec.timesteps)))
    if spec.call_kwargs:
        parts.append(item("call_kwargs", dict(spec.call_kwargs)))
    return f"recipe of {spec.label or spec.name} ({spec.pipeline}): " + ", ".join(parts)


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
    except pickle.UnpicklingError as e:
        raise DistarError(
            f"Refused to load the {what} of '{spec.name}' from "
            f"{kwargs.get('pretrained_model_name_or_path')}: one of its weight files is a pickle "
            f"holding more than plain tensors (torch.load weights_only=True: "
            f"{str(e).splitlines()[0][:160]}); nothing in it was run. Fix: replace it with the "
            f"original files or a .safetensors copy.") from None
    except DistarError:
        raise
    except Exception as e:  # noqa: BLE001 - a local folder: whatever failed, one line, no download
        src = kwargs.get("pretrained_model_name_or_path")
        if not is_local:
            if isinstance(e, (OSError, ValueError)):
                _missing_from_hub(spec, what, src, e)
            raise
        raise DistarError(local_folder_error(Path(src).expanduser(), what, e,
                                             spec.variant)) from None


def local_folder_error(d: Path, what: str, e: Exception, variant: str | None = None) -> str:
    """A local pipeline folder that does not load, as one line: the folder, the exception, and
    a fix that never suggests a download (the folder is the user's)."""
    text = " ".join(str(e).split())[:300]
    absent = absent_components(d)
    hint = (f"model_index.json lists {', '.join(absent)} as absent; the class may need them"
            if absent else "check the folder's files (re-save it with save_pretrained)")
    if "no file named" in text and not variant:
        hint += ("; if its weights are saved as a variant (model.fp16.safetensors), pass "
                 "--variant fp16 or set \"variant\" in distar_recipe.json")
    return (f"Cannot load the {what} from the folder {d} ({type(e).__name__}: {text}). Fix: "
            f"{hint}.")


def absent_components(d: Path) -> list[str]:
    """Components that model_index.json lists as null (saved without them)."""
    try:
        index = json.loads((d / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return sorted(k for k, v in index.items() if not k.startswith("_") and isinstance(v, list)
                  and (not v or v[0] is None))


def _missing_from_hub(spec: ModelSpec, what: str, src, e: Exception):
    """A hub pipeline that is neither cached nor reachable -> WeightsMissingError with the fix."""
    raise WeightsMissingError(
        spec.name, f"{what} from {src} ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
        f"download it where the hub is reachable (`hf download {src}`) and copy the "
        f"Hugging Face cache (HF_HOME) here, or save the pipeline to a folder and use "
        f"--model path:/that/folder (distar eval) or sd.reference / sd.generator = "
        f"'path:/that/folder' in a --config file (distar train)") from None


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
    state = read_state_dict(local)  # never unpickle arbitrary objects
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


def load_unet(spec: ModelSpec, device: torch.device, dtype: torch.dtype):
    """Only the UNet of a spec (its own, or its `unet` override such as DMD2's state dict), for
    a trainer that does not need the rest of the pipeline in this form."""
    from diffusers import UNet2DConditionModel

    from evalsuite.models.architectures import build_pipeline, tiny_pipeline_dir

    quiet_hf_logging()
    family = family_of(spec)
    if spec.weights in ("tiny", "random") and family is None:
        raise DistarError(f"'{spec.name}' is a {spec.pipeline}, which has no embedded "
                          f"architecture; embedded: {', '.join(sorted(PIPELINE_FAMILIES))}.")
    if spec.weights == "tiny":
        unet = UNet2DConditionModel.from_pretrained(tiny_pipeline_dir(family), subfolder="unet",
                                                    local_files_only=True, torch_dtype=dtype)
    elif spec.weights == "random":
        unet = build_pipeline(family, "full", dtype=dtype, device=device).unet
    elif spec.unet is not None:
        unet = _load_unet_override(spec, dtype)
    else:
        kwargs = dict(pretrained_model_name_or_path=spec.repo, subfolder="unet",
                      revision=spec.revision, torch_dtype=dtype)
        if spec.variant:  # on every device: some repos ship only the variant's files (fp16-only
            kwargs["variant"] = spec.variant  # DI* / Diff-Instruct repos); torch_dtype casts on load
        unet = _from_pretrained(UNet2DConditionModel.from_pretrained, spec, "UNet", **kwargs)
    return unet.to(device)


@lru_cache(maxsize=2)
def load_pipeline(spec: ModelSpec, device: torch.device):
    """The pipeline for `spec` on `device`, scheduler swapped as the recipe says. Cached, so a
    process that evaluates several benchmarks loads each model once (`load_pipeline.cache_clear()`
    drops it); `fresh_pipeline` builds an uncached copy that the caller may move and cast."""
    return fresh_pipeline(spec, device)


def fresh_pipeline(spec: ModelSpec, device: torch.device):
    """`load_pipeline` without the cache: a new pipeline object every call."""
    quiet_hf_logging()
    if spec.pipeline in PIPELINE_LOADERS:
        return PIPELINE_LOADERS.load(spec.pipeline)(spec, device)
    dtype = compute_dtype(spec, device)
    if spec.weights == "random":
        return random_pipeline(spec, device)
    if spec.weights == "tiny":
        from evalsuite.models.architectures import tiny_pipeline_dir
        cls = _pipeline_class(spec.pipeline)
        pipe = cls.from_pretrained(tiny_pipeline_dir(_embedded_family(spec)),
                                   local_files_only=True, torch_dtype=dtype)
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
    return _as_recipe(pipe, spec, device)


def _as_recipe(pipe, spec: ModelSpec, device: torch.device):
    """The recipe's scheduler, no progress bar, on `device`."""
    if spec.scheduler:
        import diffusers
        pipe.scheduler = getattr(diffusers, spec.scheduler).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _embedded_family(spec: ModelSpec) -> str:
    family = family_of(spec)
    if family is None:
        raise DistarError(f"--weights random is not available for '{spec.name}' "
                          f"({spec.pipeline}); embedded architectures: "
                          f"{', '.join(sorted(PIPELINE_FAMILIES))}.")
    return family


def random_pipeline(spec: ModelSpec, device: torch.device, size: str = "full",
                    dtype: torch.dtype | None = None):
    """The recipe's architecture with random weights, every network created directly on
    `device` in `dtype` (default: the recipe's compute dtype there), nothing read from disk.
    `--weights random` builds size 'full'; scripts/gpu_suite.py builds through here in both its
    modes ('full' on the GPU, 'tiny' in its CPU dry run), so the dry run tests the GPU's code."""
    from evalsuite.models.architectures import build_pipeline
    dtype = dtype if dtype is not None else compute_dtype(spec, device)
    pipe = build_pipeline(_embedded_family(spec), size, dtype=dtype, device=device)
    return _as_recipe(pipe, spec, device)


def loaded_revision(pipe) -> str | None:
    """The commit of the snapshot a hub pipeline was read from (recorded in the store)."""
    path = getattr(getattr(pipe, "config", None), "_name_or_path", None) or ""
    parts = Path(path).parts
    if "snapshots" in parts:
        i = parts.index("snapshots")
        return parts[i + 1] if i + 1 < len(parts) else None
    return None

