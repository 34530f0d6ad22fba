"""Model recipes: everything that decides an image, one entry per model, in one place.

A recipe's hash (`ModelSpec.recipe_hash`) keys where its images live and which store rows are
its own, so any field that can change a pixel belongs here and nowhere else.

Revisions: the hub ids are the ones the DI* paper and each model card use. `revision` is the
branch or commit to load; it is 'main' until a commit is verified on a machine with hub access
(none of ours has one). Whatever revision is asked for, the commit actually loaded is resolved
from the local snapshot and written to the results store beside every run, so a number always
names the exact weights it came from.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Any

from distar.core.registry import Registry


# What a sampling recipe's numbers may be, wherever they come from (a registry entry,
# distar_recipe.json, a folder's configs, --steps / --guidance / --resolution): field ->
# (low, high, whole number). Past the highs a value is a typo (--resolution 1000000 asked
# for a 4 TB latent).
RECIPE_RANGES = {
    "steps": (1, 10_000, True),
    "guidance": (0.0, 100.0, False),
    "resolution": (8, 8192, True),
    "latent_channels": (1, 1024, True),
    "vae_scale": (1, 64, True),
    "default_batch_size": (1, 100_000, True),
}


def recipe_problems(spec: "ModelSpec", sources: dict | None = None) -> list[str]:
    """Every number and dtype name of `spec` that cannot describe a sampling run, each naming
    where it came from (`sources`: field -> origin, as path: recipes record)."""
    from distar.core.validate import dtype_problem, number_problem

    sources = sources or {}

    def origin(key):
        return f" (from {sources[key]})" if key in sources else ""

    problems = []
    for key, (lo, hi, whole) in RECIPE_RANGES.items():
        p = number_problem(getattr(spec, key), key, lo, hi, integer=whole)
        if p:
            problems.append(p + origin(key))
    for t in spec.timesteps or ():
        p = number_problem(t, "timesteps", 0, 100_000, integer=True)
        if p:
            problems.append(p + origin("timesteps"))
            break
    p = dtype_problem(spec.dtype, "dtype")
    if p:
        problems.append(p + origin("dtype"))
    return problems


@dataclass(frozen=True)
class ComponentSource:
    """Where to get a component that replaces the base pipeline's (e.g. a distilled UNet)."""
    repo: str                        # hub id or local directory
    subfolder: str | None = None     # diffusers-format folder inside repo
    filename: str | None = None      # a bare state dict (.safetensors, or .bin read weights_only)
    revision: str = "main"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    pipeline: str                    # diffusers pipeline class name
    repo: str                        # hub id or local directory of the base pipeline
    revision: str = "main"
    variant: str | None = None       # e.g. 'fp16' weight files
    unet: ComponentSource | None = None
    scheduler: str | None = None     # diffusers scheduler class; None keeps the pipeline's own
    steps: int = 50
    guidance: float = 7.5
    timesteps: tuple[int, ...] | None = None   # one-step models: the fixed timestep fed to the UNet
    dtype: str = "float16"           # on GPU; CPU always runs float32
    resolution: int = 1024
    call_kwargs: tuple[tuple[str, Any], ...] = ()   # extra pipeline __call__ kwargs
    # Leaderboard metadata (paper Table 1 columns); not part of the recipe hash.
    arch_type: str = "UNet"
    params: str = ""
    default_batch_size: int = 4
    weights: str = "pretrained"      # 'pretrained' | 'random' | 'tiny' (built locally)
    latent_channels: int = 4
    vae_scale: int = 8
    latent_dims: tuple[int, ...] | None = None   # non-image latents (the toy digits MLP: (64,))
    # Provenance that changes no pixel (e.g. a checkpoint's alpha_rew / alpha_cfg); stored
    # with each run, not hashed.
    meta: tuple[tuple[str, Any], ...] = ()
    # Display name in summaries, leaderboards and the gallery ('' = name). Not hashed: renaming
    # a run never changes which images are its own.
    label: str = ""
    # How to get this model's local folder back when it is missing (lines of a fix; a world's
    # plug-in says how to build its world). Not hashed: it changes no pixel.
    missing_fix: tuple[str, ...] = ()

    def recipe(self) -> dict[str, Any]:
        """The fields that change an image (the hash's input)."""
        d = asdict(self)
        for k in _NOT_HASHED:
            d.pop(k)
        return d

    def describe(self) -> dict[str, Any]:
        """Recipe plus leaderboard metadata, as stored in runs.recipe_json."""
        return {**self.recipe(), "arch_type": self.arch_type, "params": self.params,
                "description": self.description, "label": self.label or self.name,
                **dict(self.meta)}

    @cached_property  # the harness asks once per image; a frozen spec's hash never changes
    def recipe_hash(self) -> str:
        blob = json.dumps(self.recipe(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def latent_shape(self) -> tuple[int, ...]:
        if self.latent_dims is not None:
            return self.latent_dims
        side = self.resolution // self.vae_scale
        return (self.latent_channels, side, side)

    def with_weights(self, weights: str) -> "ModelSpec":
        return replace(self, weights=weights)


_NOT_HASHED = ("description", "arch_type", "params", "default_batch_size", "meta", "label",
               "missing_fix")

# The one table of model families: diffusers pipeline class -> family (the embedded tiny/random
# architectures, evalsuite.models.architectures, exist for exactly these).
PIPELINE_FAMILIES = {"StableDiffusionXLPipeline": "sdxl", "StableDiffusionPipeline": "sd15",
                     "StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux"}


def family_of(spec: ModelSpec) -> str | None:
    """'sdxl' | 'sd15' | 'sd3' | 'flux' for a spec of one of those pipelines, else None."""
    return PIPELINE_FAMILIES.get(spec.pipeline)


MODELS: Registry[ModelSpec] = Registry("model")


def _add(spec: ModelSpec) -> ModelSpec:
    return MODELS.add(spec.name, spec, spec.description)


SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
# DMD2 one-step: the UNet is fed the fixed timestep 399 through LCMScheduler, no CFG.
_ONE_STEP = dict(scheduler="LCMScheduler", steps=1, guidance=0.0, timesteps=(399,))

_add(ModelSpec(
    name="di_star_sdxl", description="DI*-SDXL-1step (long training), 2.6B UNet, 1 step",
    pipeline="StableDiffusionXLPipeline", repo="XDG-XHS/distar_long_1step", variant="fp16",
    params="2.6B", default_batch_size=8, **_ONE_STEP))
_add(ModelSpec(
    name="dmd2_sdxl", description="DMD2-SDXL-1step (tianweiy/DMD2 UNet on SDXL base), 1 step",
    pipeline="StableDiffusionXLPipeline", repo=SDXL, variant="fp16",
    unet=ComponentSource("tianweiy/DMD2", filename="dmd2_sdxl_1step_unet_fp16.bin"),
    params="2.6B", default_batch_size=8, **_ONE_STEP))
_add(ModelSpec(
    name="sdxl_base", description="SDXL base 1.0, 50 steps, CFG 7.5",
    pipeline="StableDiffusionXLPipeline", repo=SDXL, variant="fp16", steps=50, guidance=7.5,
    params="2.6B"))
_add(ModelSpec(
    name="sdxl_dpo", description="SDXL-DPO (mhdang/dpo-sdxl-text2image-v1 UNet), 50 steps, CFG 7.5",
    pipeline="StableDiffusionXLPipeline", repo=SDXL, variant="fp16",
    unet=ComponentSource("mhdang/dpo-sdxl-text2image-v1", subfolder="unet"),
    steps=50, guidance=7.5, params="2.6B"))
_add(ModelSpec(
    name="sd35_large", description="Stable Diffusion 3.5 Large, 28 steps, CFG 3.5",
    pipeline="StableDiffusion3Pipeline", repo="stabilityai/stable-diffusion-3.5-large",
    dtype="bfloat16", steps=28, guidance=3.5, arch_type="DiT", params="8B",
    latent_channels=16, default_batch_size=2))
_add(ModelSpec(
    name="flux_dev", description="FLUX.1-dev, 50 steps, guidance 3.5",
    pipeline="FluxPipeline", repo="black-forest-labs/FLUX.1-dev", dtype="bfloat16",
    steps=50, guidance=3.5, arch_type="DiT", params="12B", latent_channels=16,
    default_batch_size=1))
_add(ModelSpec(
    name="sd15", description="Stable Diffusion 1.5, 50 steps, CFG 7.5, 512px",
    pipeline="StableDiffusionPipeline", repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
    steps=50, guidance=7.5, resolution=512, params="0.9B"))
# Offline entries: tiny configs of the real architectures, random weights, built locally.
_add(ModelSpec(
    name="tiny_sdxl", description="Tiny SDXL architecture, random weights, built offline (tests)",
    pipeline="StableDiffusionXLPipeline", repo="tiny:sdxl", dtype="float32", weights="tiny",
    resolution=64, default_batch_size=8, params="tiny", **_ONE_STEP))
_add(ModelSpec(
    name="tiny_sd15", description="Tiny SD1.5 architecture, random weights, built offline (tests)",
    pipeline="StableDiffusionPipeline", repo="tiny:sd15", dtype="float32", weights="tiny",
    steps=2, guidance=7.5, resolution=64, default_batch_size=8, params="tiny"))
_add(ModelSpec(
    name="tiny_sd35", description="Tiny SD3.5 architecture, random weights, built offline (tests)",
    pipeline="StableDiffusion3Pipeline", repo="tiny:sd3", dtype="float32", weights="tiny",
    steps=2, guidance=3.5, resolution=64, arch_type="DiT", params="tiny", latent_channels=16,
    default_batch_size=8))
_add(ModelSpec(
    name="tiny_flux", description="Tiny FLUX.1-dev architecture, random weights, built offline (tests)",
    pipeline="FluxPipeline", repo="tiny:flux", dtype="float32", weights="tiny",
    steps=2, guidance=3.5, resolution=64, arch_type="DiT", params="tiny", latent_channels=16,
    default_batch_size=8))


# Model kinds named by a prefix, `KIND:SOURCE` -> a ModelSpec for SOURCE. `path:` is built in
# (below); other packages add theirs (di_star adds `toy-digits`, see di_star/plugins.py). An
# entry is a function `(source: str) -> ModelSpec`, or its lazy "module:attr" name.
MODEL_KINDS: Registry = Registry("model kind")
# Pipelines that are not diffusers classes, by ModelSpec.pipeline name: a function
# `(spec, device) -> pipeline` (or its lazy "module:attr" name), added by the package that owns
# them (di_star adds the toy DigitsPipeline, see di_star/plugins.py). Here, not in loading.py,
# so that registering one imports no torch (`distar models` stays fast).
PIPELINE_LOADERS: Registry = Registry("pipeline loader")
# Checks of a model's weights before it is loaded, added by the package whose models need one (a
# built world checks its folders against its manifest, see di_star/plugins.py): a function
# `(spec) -> None` raising DistarError, or its lazy "module:attr" name. Every check sees every
# spec and returns quietly for the ones that are not its own.
MODEL_CHECKS: Registry = Registry("model check")


def resolve_model(name: str, weights: str = "pretrained") -> ModelSpec:
    """Registry name, `path:DIR` (a diffusers pipeline folder or a `distar train` export) or
    `KIND:SOURCE` of a registered model kind (e.g. `toy-digits:RUN_DIR`)."""
    kind, sep, source = name.partition(":")
    if sep and kind in MODEL_KINDS:
        return MODEL_KINDS.load(kind)(source)
    if name.startswith("path:"):
        from evalsuite.models.loading import spec_from_path
        spec = spec_from_path(name[len("path:"):])
    else:
        spec = MODELS.get(name)
    if weights not in ("pretrained", "random"):
        from distar.core.errors import DistarError
        raise DistarError(f"Unknown --weights '{weights}'. Choose one of: pretrained, random")
    if weights == "random" and spec.weights == "pretrained":
        spec = spec.with_weights("random")
    return spec
