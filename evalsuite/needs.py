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
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _open_clip(what: str, arch: str, pretrained: str, env_var: str,
               option: str = "weights_path") -> list[HubNeed]:
    import open_clip
    cfg = open_clip.get_pretrained_cfg(arch, pretrained) or {}
    repo = (cfg.get("hf_hub") or "").rstrip("/") or None
    if repo is None:
        return []
    # The loader reads the first of the two that the repo has; fetch takes only that one.
    return [HubNeed(what, repo, ("|".join(OPEN_CLIP_FILES),), OPEN_CLIP_FILES, env_var=env_var,
                    option=option)]


def _clip_needs(metric: str, o: dict) -> list[HubNeed]:
    backbone = o.get("backbone", "ViT-g-14")
    what = "CLIP score" if metric == "clip" else "CLIP image"
    return _open_clip(f"{metric}: {what} weights ({backbone})", backbone,
                      o.get("pretrained", "laion2b_s12b_b42k"), "DISTAR_CLIP_PATH")


def _aesthetic_needs(o: dict) -> list[HubNeed]:
    from evalsuite.metrics.aesthetic import MLP_FILE, MLP_REPO
    return ([HubNeed("aesthetic: LAION aesthetic MLP", MLP_REPO, (MLP_FILE,), (MLP_FILE,),
                     env_var="DISTAR_AESTHETIC_PATH")]
            + _open_clip("aesthetic: OpenAI CLIP ViT-L/14", "ViT-L-14", "openai",
                         "DISTAR_AESTHETIC_CLIP_PATH", option="clip_weights_path"))


# transformers reads a model folder's config and weights (safetensors first), the tokenizer and
# processor configs.
HF_MODEL_FILES = ("config.json", "model.safetensors|model-*-of-*.safetensors|pytorch_model.bin",
                  "model.safetensors.index*.json")
HF_CLIP_PROCESSOR_FILES = ("preprocessor_config.json", "tokenizer_config.json", "vocab.json",
                           "merges.txt", "?special_tokens_map.json", "?tokenizer.json")


def _pickscore_needs(metric: str, o: dict) -> list[HubNeed]:
    from evalsuite.metrics.pickscore import MODEL_REPO, PROCESSOR_REPO
    return [HubNeed(f"{metric}: PickScore_v1 model", MODEL_REPO, HF_MODEL_FILES, ("config.json",),
                    revision=o.get("revision"), env_var="DISTAR_PICKSCORE_PATH", folder=True),
            HubNeed(f"{metric}: its CLIP processor/tokenizer", PROCESSOR_REPO,
                    HF_CLIP_PROCESSOR_FILES, ("preprocessor_config.json",),
                    revision=o.get("processor_revision"),
                    env_var="DISTAR_PICKSCORE_PROCESSOR_PATH", option="processor_path",
                    folder=True)]


def _imagereward_needs(o: dict) -> list[HubNeed]:
    from evalsuite.metrics import imagereward as ir
    return [HubNeed("imagereward: ImageReward v1.0 weights", ir.HUB_REPO,
                    (ir.WEIGHTS_FILE, ir.CONFIG_FILE), (ir.WEIGHTS_FILE,), env_var=ir.WEIGHTS_ENV),
            HubNeed("imagereward: its BERT tokenizer", ir.TOKENIZER_ID,
                    ("vocab.txt", "?tokenizer_config.json", "?config.json"), ("vocab.txt",),
                    env_var=ir.TOKENIZER_ENV, option="tokenizer_path", folder=True)]


HPS_FILES = {"hpsv2": ("HPSv2.0", "HPS_v2_compressed.pt", "DISTAR_HPSV20_PATH"),
             "hpsv21": ("HPSv2.1", "HPS_v2.1_compressed.pt", "DISTAR_HPSV21_PATH")}


def _hps_needs(metric: str, o: dict) -> list[HubNeed]:
    from evalsuite.metrics.hps import HPS_REPO
    version, filename, env_var = HPS_FILES[metric.removesuffix("_noaa")]
    return [HubNeed(f"{metric}: {version} weights", HPS_REPO, (filename,), (filename,),
                    revision=o.get("revision"), env_var=env_var)]


def _fid_needs(metric: str, o: dict) -> list[HubNeed]:
    from evalsuite.metrics.fid import INCEPTION_FILE, INCEPTION_URL
    return [HubNeed(f"{metric}: InceptionV3 weights", None, (INCEPTION_FILE,), (INCEPTION_FILE,),
                    env_var="DISTAR_INCEPTION_PATH", url=INCEPTION_URL)]


def metric_needs(name: str, options: dict | None = None) -> list[HubNeed]:
    """What a registered metric loads from outside ([] for the offline / world / smoke ones)."""
    o = options or {}
    if name in ("clip", "diversity"):
        return _clip_needs(name, o)
    if name == "aesthetic":
        return _aesthetic_needs(o)
    if name in ("pickscore", "pickscore_logit"):
        return _pickscore_needs(name, o)
    if name == "imagereward":
        return _imagereward_needs(o)
    if name.removesuffix("_noaa") in HPS_FILES:
        return _hps_needs(name, o)
    if name in ("fid", "kid"):
        return _fid_needs(name, o)
    return []


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

