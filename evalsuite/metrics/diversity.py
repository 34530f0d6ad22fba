"""Intra-prompt diversity: for each prompt with k >= 4 images (seeds `i + 100000 k`, from
`distar eval --images-per-prompt K`), the mean pairwise cosine distance (1 - cos) of the images'
embeddings in a CLIP image space; the metric is the mean over prompts. 0 when every image of a
prompt embeds identically (mode collapse); 1 for mutually orthogonal embeddings; at most 2.

General: `diversity` embeds with a real open_clip CLIP (by default the `clip` metric's backbone,
so one weight file serves both); `mini_diversity` with the mini world's CLIP image tower
(transformers CLIPModel in the built world's clip/ folder). Steps as pure functions:
embeddings -> per-prompt `mean_pairwise_cosine_distance` -> mean over prompts. Images of the
same prompt TEXT are pooled (a benchmark listing a caption twice gives one larger group: the
same distribution, so the same expected value).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from distar.core.errors import DistarError, WeightsMissingError
from evalsuite.metrics import _preprocess as pp
from evalsuite.metrics.base import MetricInfo, check_prompts, iter_batches

MIN_K = 4


def mean_pairwise_cosine_distance(emb: np.ndarray) -> float:
    """Mean of 1 - cos(e_i, e_j) over the k(k-1)/2 pairs i < j of [k, D] embeddings."""
    k = len(emb)
    if k < 2:
        raise ValueError("pairwise distances need at least 2 embeddings")
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    cos = e @ e.T
    return float((1.0 - cos)[np.triu_indices(k, 1)].mean())


def intra_prompt_diversity(embeddings: np.ndarray, prompts: Sequence[str],
                           min_k: int = MIN_K) -> dict[str, float]:
    """{prompt: mean pairwise cosine distance of its images' embeddings}."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    short = {p: len(ix) for p, ix in groups.items() if len(ix) < min_k}
    if short:
        p, n = next(iter(short.items()))
        raise DistarError(f"intra-prompt diversity needs >= {min_k} images per prompt; "
                          f"{len(short)} prompts have fewer (e.g. {p!r}: {n}). Generate with "
                          f"`distar eval ... --images-per-prompt {min_k}`.")
    return {p: mean_pairwise_cosine_distance(embeddings[ix]) for p, ix in groups.items()}


class Diversity:
    """Set metric: `compute(images, prompts=...) -> float` (mean over prompts).

    Options: backbone / pretrained / weights_path (as the `clip` metric; env DISTAR_CLIP_PATH),
    min_k (4), device, dtype, batch_size, embedder (an injected images -> [N, D] callable with a
    `name`, for tests or other spaces)."""
    needs_prompts = True
    name = "diversity"

    def __init__(self, backbone: str = "ViT-g-14", pretrained: str = "laion2b_s12b_b42k",
                 weights_path: str | None = None, min_k: int = MIN_K, device: str = "auto",
                 dtype: str = "fp32", batch_size: int = 32,
                 embedder: Callable[[Sequence[Image.Image]], np.ndarray] | None = None):
        if embedder is None:
            from evalsuite.metrics.clip_score import ClipScore
            clip = ClipScore(backbone=backbone, pretrained=pretrained, weights_path=weights_path,
                             device=device, dtype=dtype, batch_size=batch_size)
            embedder = _OpenClipImages(clip, batch_size)
            self.provenance = clip.provenance
        else:
            self.provenance = {"injected": True}
        self._setup(embedder, min_k)

    def _setup(self, embedder, min_k: int) -> None:
        if min_k < 2:
            raise DistarError(f"min_k must be >= 2 (pairs of images), got {min_k}")
        self.embedder, self.min_k = embedder, min_k
        self.info = MetricInfo(self.name, f"intra-prompt mean pairwise cosine distance "
                               f"min_k={min_k}", embedder.name,
                               getattr(embedder, "preprocessing", "injected"))

    def compute(self, images: Sequence, on_batch=None, prompts: Sequence[str] = ()) -> float:
        prompts = check_prompts(images, list(prompts))
        opened = [_open(im) for im in images]
        emb = np.asarray(self.embedder(opened), np.float64)
        if on_batch is not None:
            on_batch(len(images))
        return float(np.mean(list(intra_prompt_diversity(emb, prompts, self.min_k).values())))


def _open(item) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    with Image.open(item) as im:
        return im.convert("RGB")


class _OpenClipImages:
    """open_clip image embeddings with the `clip` metric's model and CLIP preprocessing."""

    def __init__(self, clip, batch_size: int):
        self.clip, self.batch_size = clip, batch_size
        self.name = clip.info.backbone
        self.preprocessing = (f"PIL bicubic short side->{clip.image_size}, centre crop, "
                              f"mean/std {clip.mean}/{clip.std}")

    @torch.inference_mode()
    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = []
        for sl in iter_batches(len(images), self.batch_size):
            x = torch.stack([pp.clip_pil(im, self.clip.image_size, self.clip.mean, self.clip.std)
                             for im in images[sl]]).to(self.clip.device, self.clip.dtype)
            out.append(self.clip.model.encode_image(x).float().cpu())
        return torch.cat(out).numpy()


class _HFClipImages:
    """Image embeddings (get_image_features) of a transformers CLIPModel folder."""

    def __init__(self, folder: Path, device: str, batch_size: int):
        from transformers import CLIPModel

        from evalsuite.models.loading import resolve_device
        self.device = resolve_device(device)
        # fp32 whatever the stored dtype (the shipped world stores fp16 to fit its size budget)
        self.model = CLIPModel.from_pretrained(str(folder), use_safetensors=True,
                                               dtype=torch.float32).eval()
        self.model.to(self.device)
        self.batch_size = batch_size
        cfg_file = folder / "preprocessor_config.json"
        proc = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        self.size = int(self.model.config.vision_config.image_size)
        self.mean = tuple(proc.get("image_mean", pp.OPENAI_CLIP_MEAN))
        self.std = tuple(proc.get("image_std", pp.OPENAI_CLIP_STD))
        import hashlib
        weights = folder / "model.safetensors"
        tag = hashlib.sha256(weights.read_bytes()).hexdigest()[:12] if weights.is_file() else "?"
        self.name = f"mini CLIP image tower sha256:{tag}"
        self.preprocessing = (f"PIL bicubic short side->{self.size}, centre crop, "
                              f"mean/std {self.mean}/{self.std}")

    @torch.inference_mode()
    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = []
        for sl in iter_batches(len(images), self.batch_size):
            x = torch.stack([pp.clip_pil(im, self.size, self.mean, self.std)
                             for im in images[sl]]).to(self.device)
            feats = self.model.get_image_features(pixel_values=x)
            feats = getattr(feats, "pooler_output", feats)  # a tensor, or an output object
            out.append(feats.float().cpu())
        return torch.cat(out).numpy()


def mini_clip_folder(path: str | None = None) -> Path:
    """The mini CLIP folder: `path`, else $DISTAR_MINI_DIR/clip, else the shipped copy."""
    if path:
        return Path(path)
    root = os.environ.get("DISTAR_MINI_DIR")
    return (Path(root) if root else Path(__file__).resolve().parents[1] / "data" / "mini") / "clip"


class MiniDiversity(Diversity):
    """`diversity` in the mini world's CLIP image space. Options: clip_path (a CLIPModel
    folder; default $DISTAR_MINI_DIR/clip, else evalsuite/data/mini/clip), min_k, device,
    batch_size."""
    name = "mini_diversity"

    def __init__(self, clip_path: str | None = None, min_k: int = MIN_K, device: str = "auto",
                 batch_size: int = 64, **_shared_options):
        folder = mini_clip_folder(clip_path)
        if not (folder / "config.json").is_file():
            raise WeightsMissingError(
                "mini CLIP (mini_diversity)", str(folder / "config.json"),
                "build the mini world (`distar lab build mini --out DIR`) and pass "
                "clip_path=DIR/clip or set DISTAR_MINI_DIR=DIR")
        self.provenance = {"clip": str(folder)}
        self._setup(_HFClipImages(folder, device, batch_size), min_k)
