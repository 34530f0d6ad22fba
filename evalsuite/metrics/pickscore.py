"""PickScore v1 (Kirstain et al. 2023), batched.

Reference: the model card of yuvalkirstain/PickScore_v1: a transformers CLIPModel (ViT-H/14
fine-tuned on Pick-a-Pic) with the processor of laion/CLIP-ViT-H-14-laion2B-s32B-b79K; image and
text embeddings are L2-normalised and the score is `logit_scale.exp() * (text @ image)`.

Two units, both registered, named in `info.version` so tables never mix them:
- `PickScore` ('pickscore'): the cosine, as the DI* paper reports it (0.23xx);
- `PickScoreLogit` ('pickscore_logit'): logit_scale * cosine, the model card's unit (~22).

Image preprocessing is transformers' PIL CLIP image processor (CLIPImageProcessorPil: PIL bicubic
short side -> 224, centre crop with floor offsets, rescale, normalise), which is what
`CLIPProcessor` was before transformers 5 and therefore what published PickScore numbers used.
transformers 5's default CLIPImageProcessor resizes with torchvision instead, which moves scores
slightly (tests/test_metric_pickscore.py measures it).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from distar.core.errors import DistarError, WeightsMissingError
from evalsuite.metrics import preprocess as pp
from evalsuite.metrics.preprocess import TF  # torchvision, imported on first use
from evalsuite.metrics.loading import (WEIGHT_SUFFIXES, folder_records, freeze, provenance,
                                        resolve_dtype)
from evalsuite.metrics.base import EmbeddingMetric, MetricInfo, check_prompts, with_dtype
from evalsuite.models import resolve_device

MODEL_REPO = "yuvalkirstain/PickScore_v1"
PROCESSOR_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"


def _pretrained(what: str, repo_id: str, path: str | None, env_var: str, option: str,
                revision: str | None, load):
    """Call `load(source, local_files_only)` on a local folder or a hub id; offline misses
    become WeightsMissingError."""
    from evalsuite.hub import local_only
    source = path or os.environ.get(env_var) or repo_id
    local = source != repo_id or local_only()
    try:
        return load(source, revision=None if source != repo_id else revision,
                    local_files_only=local)
    except OSError as e:  # transformers raises OSError for every "cannot find the files" case
        raise WeightsMissingError(
            what, f"{source} ({str(e).splitlines()[0][:160]})",
            f"pass {option}=DIR or set {env_var}=DIR (a folder holding a download of "
            f"{repo_id}), or copy the Hugging Face cache (HF_HOME) from a machine that has it"
        ) from None


def _folder(local: str | None, repo_id: str, revision: str | None) -> Path | None:
    """The folder a from_pretrained source reads: the local one, or the cached hub snapshot
    (None when the hub copy is not cached yet)."""
    if local:
        return Path(local).expanduser()
    from huggingface_hub import try_to_load_from_cache
    cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return Path(cached).parent if isinstance(cached, str) else None


def _weights_provenance(folder: Path | None, what: str) -> dict:
    """Check and record every weight file in a from_pretrained folder (see loading.provenance),
    and record its other files (config.json, ...) by path, sha256 and revision."""
    if folder is None or not folder.is_dir():
        return {}  # a missing folder is reported by the loader, with its fix
    files = sorted(f for f in folder.iterdir() if f.suffix in WEIGHT_SUFFIXES and f.is_file())
    return {**{f.name: provenance(f, f"{what} {f.name}") for f in files},
            **folder_records(folder)}


def load_clip_model_strict(source: str, what: str, **kwargs):
    """transformers CLIPModel.from_pretrained that refuses a checkpoint lacking any parameter
    (transformers would fill it with random values and only log it) or holding tensors of the
    wrong shape or unknown names."""
    from transformers import CLIPModel
    try:
        model, info = CLIPModel.from_pretrained(source, output_loading_info=True, **kwargs)
    except OSError:
        raise  # files not found: _pretrained turns this into WeightsMissingError
    except Exception as e:  # a pickle refused by weights_only, a damaged safetensors file, ...
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise DistarError(f"{what} weights at {source} cannot be loaded ({type(e).__name__}: "
                          f"{first}); nothing in them was run. Fix: point weights_path= at a "
                          f"folder written by save_pretrained of the published model "
                          f"(model.safetensors).") from None
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing {sorted(info['missing_keys'])}")
    if info.get("mismatched_keys"):
        problems.append(f"wrong shape {sorted(str(k) for k in info['mismatched_keys'])}")
    unexpected = [k for k in info.get("unexpected_keys", ()) if not k.endswith("position_ids")]
    if unexpected:  # position_ids: a buffer older transformers saved, harmless to drop
        problems.append(f"unexpected {sorted(unexpected)}")
    if problems:
        raise DistarError(f"{what} checkpoint at {source} does not match CLIPModel: "
                          f"{'; '.join(problems)}. Fix: point weights_path= at a complete "
                          f"PickScore_v1 folder (save_pretrained of the published model).")
    return model


def _embeds(out) -> torch.Tensor:
    """get_*_features returns a tensor in transformers 4, an output object in 5."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class PickScore(EmbeddingMetric):
    """`score(images, prompts) -> np.ndarray[N]`; `score_tensor` is differentiable.

    `PickScore.from_pretrained(...)` loads PickScore_v1 and its processor; the constructor wraps
    an already built CLIPModel, image processor and tokenizer.
    """

    unit = "cos"
    info = MetricInfo(
        name="pickscore", version="PickScore_v1/cos",
        backbone="transformers CLIPModel yuvalkirstain/PickScore_v1 (ViT-H-14)",
        preprocessing="CLIPImageProcessorPil: PIL bicubic short side->224, centre crop 224 "
                      "(floor offsets), CLIP mean/std; text truncated to 77 tokens",
        label="PickScore", unit="cosine", decimals=4)

    def __init__(self, model, image_processor, tokenizer, device: str = "cpu",
                 dtype: str = "fp32", batch_size: int = 32, provenance: dict | None = None):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = freeze(model).to(self.device, self.dtype)
        self.image_processor, self.tokenizer = image_processor, tokenizer
        self.batch_size = batch_size
        ip = image_processor  # the tensor path reads its geometry from the processor's config
        self.resize_to, self.crop_to = int(ip.size["shortest_edge"]), int(ip.crop_size["height"])
        self.mean, self.std = tuple(ip.image_mean), tuple(ip.image_std)
        self.provenance = provenance or {"injected": True}
        self.info = with_dtype(type(self).info, self.dtype)

    @classmethod
    def hub_needs(cls, name: str, options: dict) -> list:
        """What from_pretrained reads from the hub (evalsuite.needs): the model, then the
        processor / tokenizer folder."""
        from evalsuite.needs import HF_CLIP_PROCESSOR_FILES, HF_MODEL_FILES, HubNeed
        return [HubNeed(f"{name}: PickScore_v1 model", MODEL_REPO, HF_MODEL_FILES, ("config.json",),
                        revision=options.get("revision"), env_var="DISTAR_PICKSCORE_PATH",
                        folder=True),
                HubNeed(f"{name}: its CLIP processor/tokenizer", PROCESSOR_REPO,
                        HF_CLIP_PROCESSOR_FILES, ("preprocessor_config.json",),
                        revision=options.get("processor_revision"),
                        env_var="DISTAR_PICKSCORE_PROCESSOR_PATH", option="processor_path",
                        folder=True)]

    @classmethod
    def from_pretrained(cls, device: str = "auto", dtype: str = "fp32", batch_size: int = 32,
                        weights_path: str | None = None, processor_path: str | None = None,
                        revision: str | None = None, processor_revision: str | None = None
                        ) -> "PickScore":
        """Options: device ('auto'), dtype ('fp32'; half only on GPU), batch_size (32),
        weights_path (a PickScore_v1 folder; env DISTAR_PICKSCORE_PATH), processor_path (a
        folder with the laion ViT-H-14 tokenizer + preprocessor config; env
        DISTAR_PICKSCORE_PROCESSOR_PATH), revision / processor_revision (hub revisions)."""
        from transformers import CLIPTokenizer
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        weights_path = weights_path or os.environ.get("DISTAR_PICKSCORE_PATH")
        processor_path = processor_path or os.environ.get("DISTAR_PICKSCORE_PROCESSOR_PATH")
        # Weight files are checked before they are read when they are already on disk.
        folder = _folder(weights_path, MODEL_REPO, revision)
        prov = {"model": _weights_provenance(folder, "PickScore_v1")}
        # No trust_remote_code anywhere: CLIPModel is a transformers class.
        model = _pretrained("PickScore_v1", MODEL_REPO, weights_path, "DISTAR_PICKSCORE_PATH",
                            "weights_path", revision,
                            lambda src, **kw: load_clip_model_strict(src, "PickScore_v1", **kw))
        if folder is None:  # just downloaded from the hub
            prov["model"] = _weights_provenance(_folder(None, MODEL_REPO, revision),
                                                "PickScore_v1")
        image_processor = _pretrained(
            "PickScore processor", PROCESSOR_REPO, processor_path,
            "DISTAR_PICKSCORE_PROCESSOR_PATH", "processor_path", processor_revision,
            CLIPImageProcessorPil.from_pretrained)
        tokenizer = _pretrained(
            "PickScore tokenizer", PROCESSOR_REPO, processor_path,
            "DISTAR_PICKSCORE_PROCESSOR_PATH", "processor_path", processor_revision,
            CLIPTokenizer.from_pretrained)
        # The tokenizer and image processor files, each by sha256 (the processor class is named in
        # `info.preprocessing`: CLIPImageProcessorPil, see the module docstring).
        processor_folder = _folder(processor_path, PROCESSOR_REPO, processor_revision)
        prov["processor"] = folder_records(processor_folder) if processor_folder else {}
        return cls(model, image_processor, tokenizer, device, dtype, batch_size, prov)

    def _text(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(prompts, padding=True, truncation=True, max_length=77,
                             return_tensors="pt").to(self.device)
        return F.normalize(_embeds(self.model.get_text_features(**tok)).float(), dim=-1)

    def _score(self, pixels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        img = _embeds(self.model.get_image_features(pixel_values=pixels.to(self.device,
                                                                           self.dtype)))
        cos = (F.normalize(img.float(), dim=-1) * self._text(prompts)).sum(-1)
        return cos * self.model.logit_scale.exp().float() if self.unit == "logit" else cos

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def score_tensor(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """images: [N, 3, H, W] in [0, 1]; same geometry as the processor, in torch."""
        prompts = check_prompts(images, prompts)
        x = pp.resize_shortest(images.float(), self.resize_to).clamp(0, 1)  # PIL clips to 8 bit
        x = pp.center_crop_hf(x, self.crop_to)
        return self._score(TF.normalize(x, self.mean, self.std), prompts)


class PickScoreLogit(PickScore):
    """PickScore in the model card's unit: logit_scale.exp() * cosine."""

    unit = "logit"
    info = MetricInfo(
        name="pickscore_logit", version="PickScore_v1/logit",
        backbone=PickScore.info.backbone, preprocessing=PickScore.info.preprocessing,
        label="PickScore logit", unit="logit_scale x cosine", decimals=2)
