"""CLIP score: 100 x cosine(image embedding, text embedding), batched.

Default = DMD2's `compute_clip_score` (main/coco_eval/coco_evaluator.py), because DMD2 is the
one-step SDXL baseline the DI* paper compares against on COCO, so the same protocol makes our
numbers comparable with its tables:
- backbone open_clip ViT-g-14 `laion2b_s12b_b42k`;
- image: centre crop on the long edge, PIL LANCZOS to 256 x 256, then open_clip's eval transform
  (bicubic 224, centre crop, CLIP mean/std);
- text: "A photo depicts " + prompt (Hessel et al. 2021), truncated to 77 tokens with the end
  token kept. DMD2 splices the three prefix tokens in after tokenising; that gives the same ids
  as tokenising the prefixed string (tests/test_metric_clip_score.py checks it).
Unit: DMD2's tables print the cosine (0.33); we store 100 x cosine (33), the CLIPScore convention.

No clamp at 0 by default (torchmetrics and Hessel et al. use max(100 cos, 0)): a clamp biases the
mean upwards and differs from DMD2; it only matters for unrelated image/text pairs.
`clamp_zero=True` gives the torchmetrics convention and changes `info.version`.
Any open_clip model works: `backbone='ViT-L-14', pretrained='openai'` is torchmetrics' default
network; `prefix=''` and `pre_resize=None` turn the DMD2 specifics off. All of it is recorded.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from evalsuite.metrics import preprocess as pp
from evalsuite.metrics.loading import (build_open_clip, freeze, open_clip_records,
                                        open_clip_weights, provenance, resolve_dtype)
from evalsuite.metrics.base import EmbeddingMetric, MetricInfo, check_prompts, with_dtype
from evalsuite.models import read_state_dict, resolve_device

DMD2_PREFIX = "A photo depicts "


def clip_score_info(backbone_name: str, prefix: str, pre_resize: int | None, clamp_zero: bool,
                    image_size: int, mean: tuple, std: tuple) -> MetricInfo:
    crop = f"centre crop long edge, PIL LANCZOS {pre_resize}x{pre_resize}; " if pre_resize else ""
    return MetricInfo(
        name="clip",
        version=f"CLIPScore 100cos{' clamp0' if clamp_zero else ''} prefix={prefix!r}",
        backbone=f"open_clip {backbone_name}",
        preprocessing=f"{crop}PIL bicubic short side->{image_size}, centre crop, "
                      f"mean/std {mean}/{std}",
        label="CLIP", unit="100 x cosine", decimals=2)


class ClipScore(EmbeddingMetric):
    """`score(images, prompts) -> np.ndarray[N]` (100 x cos); `score_tensor` is differentiable.

    `ClipScore.from_pretrained(...)` loads open_clip weights; the constructor wraps an already
    built open_clip model (or anything with `encode_image`, `encode_text`, `visual.image_size`)
    and its tokenizer.
    """

    def __init__(self, model, tokenizer, backbone_name: str, mean=None, std=None,
                 prefix: str = DMD2_PREFIX, pre_resize: int | None = 256,
                 clamp_zero: bool = False, device: str = "cpu", dtype: str = "fp32",
                 batch_size: int = 32, provenance: dict | None = None):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = freeze(model).to(self.device, self.dtype)
        self.tokenizer = tokenizer
        self.mean = tuple(mean or pp.OPENAI_CLIP_MEAN)
        self.std = tuple(std or pp.OPENAI_CLIP_STD)
        self.prefix, self.pre_resize, self.clamp_zero = prefix, pre_resize, clamp_zero
        self.batch_size = batch_size
        self.image_size = int(np.atleast_1d(self.model.visual.image_size)[0])
        self.provenance = provenance or {"injected": True}
        self.info = with_dtype(clip_score_info(backbone_name, prefix, pre_resize, clamp_zero,
                                               self.image_size, self.mean, self.std), self.dtype)

    @classmethod
    def hub_needs(cls, name: str, options: dict) -> list:
        """What from_pretrained reads from the hub (evalsuite.needs): the open_clip weights of
        its backbone / pretrained options."""
        from evalsuite.needs import open_clip_needs
        backbone = options.get("backbone", "ViT-g-14")
        what = "CLIP score" if name == "clip" else "CLIP image"
        return open_clip_needs(f"{name}: {what} weights ({backbone})", backbone,
                               options.get("pretrained", "laion2b_s12b_b42k"), "DISTAR_CLIP_PATH")

    @classmethod
    def from_pretrained(cls, backbone: str = "ViT-g-14", pretrained: str = "laion2b_s12b_b42k",
                        prefix: str = DMD2_PREFIX, pre_resize: int | None = 256,
                        clamp_zero: bool = False, device: str = "auto", dtype: str = "fp32",
                        batch_size: int = 32, weights_path: str | None = None,
                        revision: str | None = None) -> "ClipScore":
        """Options: backbone ('ViT-g-14'), pretrained ('laion2b_s12b_b42k'), prefix ('A photo
        depicts '), pre_resize (256; None = no crop/LANCZOS step), clamp_zero (False), device,
        dtype ('fp32'), batch_size (32), weights_path (open_clip weights file; env
        DISTAR_CLIP_PATH), revision."""
        import open_clip
        cfg = open_clip.get_pretrained_cfg(backbone, pretrained) or {}
        path = open_clip_weights(f"CLIP score {backbone}/{pretrained}", backbone, pretrained,
                                 path=weights_path, env_var="DISTAR_CLIP_PATH", revision=revision)
        prov = {"clip": provenance(path, f"CLIP score {backbone}/{pretrained}"),
                **open_clip_records(backbone)}  # its config and tokenizer vocabulary
        model = build_open_clip(backbone, read_state_dict(path),
                                quick_gelu=bool(cfg.get("quick_gelu", False)))
        return cls(model, open_clip.get_tokenizer(backbone), f"{backbone}/{pretrained}",
                   cfg.get("mean"), cfg.get("std"), prefix, pre_resize, clamp_zero, device,
                   dtype, batch_size, prov)

    def image_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, D] float32 image embeddings (not normalised) of preprocessed pixels."""
        return self.model.encode_image(pixels.to(self.device, self.dtype)).float()

    def _score(self, pixels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer([self.prefix + p for p in prompts]).to(self.device)
        img = self.image_embeddings(pixels)
        txt = self.model.encode_text(tokens).float()
        s = 100.0 * (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(-1)
        return s.clamp(min=0) if self.clamp_zero else s

    def _pil(self, im: Image.Image) -> torch.Tensor:
        if self.pre_resize:
            # DMD2 builds the 256 image from an RGB array (Image.fromarray of uint8 HxWx3).
            im = pp.crop_resize_lanczos(im.convert("RGB"), self.pre_resize)
        return pp.clip_pil(im, self.image_size, self.mean, self.std)

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self._pil(im) for im in images])

    def score_tensor(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """images: [N, 3, H, W] in [0, 1]; LANCZOS with PIL's weights, then bicubic, in torch."""
        prompts = check_prompts(images, prompts)
        x = images.float()
        if self.pre_resize:
            x = pp.crop_resize_lanczos_tensor(x, self.pre_resize)
        return self._score(pp.clip_tensor(x, self.image_size, self.mean, self.std), prompts)


# A few-layer ViT CLIP with CLIP's vocabulary and context length: the code path of ViT-g-14.
SMOKE_CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=224, layers=2, width=64, head_width=32, patch_size=32),
    text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))


class TinyRandomClipScore(ClipScore):
    """SMOKE TEST ONLY: CLIP score's whole code path (open_clip ViT, tokenizer, DMD2
    preprocessing) on a two-layer CLIP with seeded random weights, built offline in a second.
    Its numbers say nothing about image quality; they exist so `distar eval` can be tried end to
    end with no download. Its registry name (`smoke_clip`) and stored version both say
    so, and it never shares a column with the real `clip`."""

    NAME = "smoke_clip"

    @classmethod
    def hub_needs(cls, name: str, options: dict) -> list:
        return []  # built offline: nothing from the hub

    @classmethod
    def from_pretrained(cls, device: str = "auto", dtype: str = "fp32", batch_size: int = 32,
                        seed: int = 0) -> "TinyRandomClipScore":
        """Nothing pretrained: built from SMOKE_CLIP with seeded random weights."""
        import open_clip
        rng = torch.random.get_rng_state()
        torch.manual_seed(seed)
        model = open_clip.CLIP(**SMOKE_CLIP)  # open_clip's own class, a two-layer config
        torch.random.set_rng_state(rng)  # building a scorer must not move the caller's stream
        # ViT-B-32's tokenizer is CLIP's BPE, bundled with open_clip (nothing downloaded).
        self = cls(model, open_clip.get_tokenizer("ViT-B-32"), cls._backbone(seed), None, None,
                   DMD2_PREFIX, 256, False, device, dtype, batch_size, {"random_seed": seed})
        self.info = with_dtype(cls._smoke_info(self.info, seed), self.dtype)
        return self

    @classmethod
    def version_key(cls, seed: int = 0, dtype: str = "fp32", **_options) -> str | None:
        """`from_pretrained(seed=seed, dtype=dtype).info.key`, without building the model (the
        config is fixed: SMOKE_CLIP's image size, OpenAI's mean/std)."""
        info = clip_score_info(cls._backbone(seed), DMD2_PREFIX, 256, False,
                               SMOKE_CLIP["vision_cfg"]["image_size"],
                               tuple(pp.OPENAI_CLIP_MEAN), tuple(pp.OPENAI_CLIP_STD))
        try:
            return with_dtype(cls._smoke_info(info, seed), dtype).key
        except ValueError:  # an unknown dtype name: loading reports it clearly
            return None

    @staticmethod
    def _backbone(seed: int) -> str:
        return f"tiny ViT (2 layers, width 64) random seed {seed}"

    @classmethod
    def _smoke_info(cls, info: MetricInfo, seed: int) -> MetricInfo:
        return replace(info, name=cls.NAME, version=f"SMOKE TEST random tiny CLIP (seed {seed}), "
                                                    f"not a quality score")
