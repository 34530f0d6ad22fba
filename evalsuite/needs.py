"""The one list of files from outside that a command needs: for each model, benchmark and metric,
which hub repository, at which revision, and which of its files the loaders actually read.

Two readers, so they cannot drift: `evalsuite.preflight` checks that each need is on the machine
(its `check` files) before a job starts, and `distar fetch` (evalsuite.fetch) downloads each
need's `files`. Nothing here touches the network or loads a model.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

from distar.core.errors import DistarError


@dataclass(frozen=True)
class HubNeed:
    what: str                          # who needs it, as preflight names it
    repo_id: str | None                # hub repository (None: `url` instead)
    files: tuple[str, ...]             # what the loader reads: a file, 'a|b' (the first of
                                       # these the repo has; globs allowed), '?file' (read when
                                       # present) or a glob that may match nothing (shard index)
    check: tuple[str, ...]             # the file(s) preflight looks for (any one will do)
    revision: str | None = None        # branch or commit; None = the hub's default ('main')
    repo_type: str | None = None       # None = model, 'dataset'
    env_var: str | None = None         # a local copy the loader takes instead
    option: str = "weights_path"       # the metric option that names that local copy
    folder: bool = False               # env_var names a folder holding check[0]
    gated: bool = False                # the hub asks for a licence to be accepted first
    url: str | None = None             # a file outside the hub (clean-fid's Inception)

    @property
    def page(self) -> str:
        """The repository's page (where a gated licence is accepted)."""
        kind = "datasets/" if self.repo_type == "dataset" else ""
        return f"https://huggingface.co/{kind}{self.repo_id}"


# Models -------------------------------------------------------------------------------------
# Repositories whose licence must be accepted on their page before the hub serves a file.
GATED_REPOS = frozenset({"black-forest-labs/FLUX.1-dev", "stabilityai/stable-diffusion-3.5-large"})


def _component_names(pipeline: str) -> list[str]:
    """The components a diffusers pipeline class loads: its __init__ arguments without a default
    (the optional ones, e.g. image_encoder, are not in the repos we name)."""
    import diffusers
    cls = getattr(diffusers, pipeline)
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and p.default is inspect.Parameter.empty
            and p.kind is p.POSITIONAL_OR_KEYWORD]


def _weight_files(folder: str, stem: str, variant: str | None) -> tuple[str, ...]:
    """A component's weights of `variant` only (the loaders pass variant=, so the other
    precision is never read): one item of alternatives, 'a|b|c' (one file, or shards under
    either naming diffusers has used), and an optional glob for a shard index."""
    f = f"{folder}/{stem}"
    if variant:
        alternatives = (f"{f}.{variant}.safetensors", f"{f}.{variant}-*-of-*.safetensors",
                        f"{f}-*-of-*.{variant}.safetensors")
    else:
        alternatives = (f"{f}.safetensors", f"{f}-*-of-*.safetensors")
    return ("|".join(alternatives), f"{f}.safetensors.index*.json")


def component_files(name: str, variant: str | None) -> tuple[str, ...]:
    """The files diffusers reads for one pipeline component folder."""
    if name.startswith("tokenizer"):
        return (f"{name}/*",)  # vocab/merges or spiece/tokenizer.json, and their configs
    if name == "scheduler":
        return ("scheduler/scheduler_config.json",)
    if name == "feature_extractor":  # an image processor: its config only
        return ("feature_extractor/preprocessor_config.json",)
    # transformers models (text encoders, SD1.5's safety checker) or diffusers models.
    stem = "model" if name.startswith(("text_encoder", "safety_checker")) else "diffusion_pytorch_model"
    return (f"{name}/config.json",) + _weight_files(name, stem, variant)


def pipeline_files(pipeline: str, variant: str | None, skip: Sequence[str] = ()) -> tuple[str, ...]:
    files = ["model_index.json"]
    for name in _component_names(pipeline):
        if name not in skip:
            files += component_files(name, variant)
    return tuple(files)


def model_needs(spec) -> list[HubNeed]:
    """What a resolved ModelSpec loads from the hub ([] for tiny / random / local builds)."""
    from pathlib import Path
    if spec.weights != "pretrained" or Path(spec.repo).expanduser().is_dir():
        return []
    gated = spec.repo in GATED_REPOS
    needs = []
    src = spec.unet
    skip = ("unet",) if src is not None else ()
    files = pipeline_files(spec.pipeline, spec.variant, skip)
    if src is not None and src.filename is not None:
        files += ("unet/config.json",)  # a bare state dict goes into the base UNet's config
    needs.append(HubNeed(f"model '{spec.name}': pipeline", spec.repo, files, ("model_index.json",),
                         revision=spec.revision, gated=gated))
    if src is not None and not Path(src.repo).expanduser().is_dir():
        if src.filename is not None:
            files, check = (src.filename,), src.filename
        else:
            sub = src.subfolder or ""
            files = (f"{sub}/config.json".lstrip("/"),) + _weight_files(sub, "diffusion_pytorch_model",
                                                                      None)
            check = f"{sub}/config.json".lstrip("/")
        needs.append(HubNeed(f"model '{spec.name}': its UNet", src.repo,
                             tuple(f.lstrip("/") for f in files), (check,),
                             revision=src.revision, gated=src.repo in GATED_REPOS))
    return needs


# Metrics ------------------------------------------------------------------------------------
# A metric declares what its `from_pretrained` reads from outside once, on its class: the class
# method `hub_needs(name, options) -> [HubNeed]` beside `from_pretrained` (which reads the same
# declaration or the same constants). preflight checks it and `distar fetch` downloads it; a
# metric class without one needs nothing from outside. The helpers below are what several
# metrics' declarations share.
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def open_clip_needs(what: str, arch: str, pretrained: str, env_var: str,
                    option: str = "weights_path") -> list[HubNeed]:
    """The hub file open_clip reads for (arch, pretrained) ([] when it is not on the hub)."""
    import open_clip
    cfg = open_clip.get_pretrained_cfg(arch, pretrained) or {}
    repo = (cfg.get("hf_hub") or "").rstrip("/") or None
    if repo is None:
        return []
    # The loader reads the first of the two that the repo has; fetch takes only that one.
    return [HubNeed(what, repo, ("|".join(OPEN_CLIP_FILES),), OPEN_CLIP_FILES, env_var=env_var,
                    option=option)]


# transformers reads a model folder's config and weights (safetensors first), the tokenizer and
# processor configs.
HF_MODEL_FILES = ("config.json", "model.safetensors|model-*-of-*.safetensors|pytorch_model.bin",
                  "model.safetensors.index*.json")
HF_CLIP_PROCESSOR_FILES = ("preprocessor_config.json", "tokenizer_config.json", "vocab.json",
                           "merges.txt", "?special_tokens_map.json", "?tokenizer.json")


def metric_needs(name: str, options: dict | None = None) -> list[HubNeed]:
    """What a registered metric loads from outside: its class's `hub_needs` ([] for a metric
    that declares none, or an unknown name)."""
    from evalsuite.metrics import METRICS
    from evalsuite.metrics.runner import metric_class
    if name not in METRICS:
        return []
    declared = getattr(metric_class(name), "hub_needs", None)
    return declared(name, options or {}) if declared is not None else []


# Benchmarks ---------------------------------------------------------------------------------
def bench_needs(name: str) -> list[HubNeed]:
    """Prompt files a benchmark reads from the hub (only hpsv2's; the others ship or are local)."""
    if name != "hpsv2":
        return []
    from evalsuite.benchmarks import HPSV2_REPO, hpsv2_prompt_files
    files = tuple(hpsv2_prompt_files())
    # DISTAR_HPSV2_PROMPTS names a folder of the four files without their benchmark/ prefix.
    return [HubNeed("bench 'hpsv2': its prompt files", HPSV2_REPO, files, files,
                    repo_type="dataset")]


def command_needs(models: Sequence, bench: str | None, metrics: Sequence[str],
                  metric_options: dict[str, dict] | None = None) -> list[HubNeed]:
    """Everything `distar eval` (or train: generator and reference) needs from outside, each
    (repo, revision) once with its files merged. `models`: resolved ModelSpecs."""
    needs: list[HubNeed] = []
    for spec in models:
        needs += model_needs(spec)
    if bench:
        needs += bench_needs(bench)
    for m in metrics:
        needs += metric_needs(m, (metric_options or {}).get(m))
    return merge_needs(needs)


def merge_needs(needs: Sequence[HubNeed]) -> list[HubNeed]:
    """One need per (repo or url, revision, type): files and checks in first-seen order."""
    from dataclasses import replace
    merged: dict[tuple, HubNeed] = {}
    for n in needs:
        key = (n.repo_id, n.url, n.revision or "main", n.repo_type)
        if key in merged:
            m = merged[key]
            merged[key] = replace(
                m, what=m.what if n.what in m.what else f"{m.what}; {n.what}",
                files=tuple(dict.fromkeys(m.files + n.files)),
                check=tuple(dict.fromkeys(m.check + n.check)))
        else:
            merged[key] = n
    return list(merged.values())

