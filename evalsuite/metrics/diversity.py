"""Intra-prompt diversity: for each prompt with k >= 4 images (seeds `i + 100000 k`, from
`distar eval --images-per-prompt K`), the mean pairwise cosine distance (1 - cos) of the images'
embeddings in a CLIP image space; the metric is the mean over prompts. 0 when every image of a
prompt embeds identically (mode collapse); 1 for mutually orthogonal embeddings; at most 2.

Per image too, so models can be compared paired, prompt by prompt, like every per-image metric:
image i of a prompt scores d_i, its mean cosine distance to the prompt's other images. The mean of
the d_i over a prompt's images IS the prompt's mean pairwise distance (`per_image_cosine_distance`
says why), so the set value is the mean over prompts of the per-prompt means of the per-image
values, and the mean of all per-image values equals it whenever every prompt has the same number
of images (any run of a benchmark without repeated captions).

General: `diversity` embeds with a real open_clip CLIP (by default the `clip` metric's backbone,
so one weight file serves both); another image space plugs in through `ImageEmbedder` (a world's own
CLIP, registered by its plug-in from di_star). Steps as pure functions:
embeddings -> `per_image_diversity` -> per-prompt means (`intra_prompt_diversity`) -> mean over
prompts. Images of the same prompt TEXT are pooled (a benchmark listing a caption twice gives one
larger group: the same distribution, so the same expected value).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from distar.core.errors import DistarError
from evalsuite.metrics import preprocess as pp
from evalsuite.metrics.base import MetricInfo, check_prompts, run_batches, with_dtype

MIN_K = 4


def per_image_cosine_distance(emb: np.ndarray) -> np.ndarray:
    """d_i = (1 / (k-1)) sum_{j != i} (1 - cos(e_i, e_j)) for each of k embeddings [k, D] -> [k].

    Their mean is the mean pairwise distance over the k(k-1)/2 pairs i < j: the double sum
    sum_i sum_{j != i} counts each unordered pair twice (cos is symmetric), so
    (1/k) sum_i d_i = 2 / (k(k-1)) * sum_{i<j} (1 - cos(e_i, e_j))."""
    k = len(emb)
    if k < 2:
        raise ValueError("pairwise distances need at least 2 embeddings")
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    dist = 1.0 - e @ e.T
    # The diagonal is no pair (and is 1, not 0, for a zero embedding): leave it out.
    return (dist.sum(axis=1) - np.diag(dist)) / (k - 1)


def mean_pairwise_cosine_distance(emb: np.ndarray) -> float:
    """Mean of 1 - cos(e_i, e_j) over the k(k-1)/2 pairs i < j of [k, D] embeddings."""
    return float(per_image_cosine_distance(emb).mean())


def _prompt_groups(prompts: Sequence[str], min_k: int) -> dict[str, list[int]]:
    """{prompt text: indices of its images}; one clear error when a prompt has < min_k."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    short = {p: len(ix) for p, ix in groups.items() if len(ix) < min_k}
    if short:
        p, n = next(iter(short.items()))
        raise DistarError(f"intra-prompt diversity needs >= {min_k} images per prompt; "
                          f"{len(short)} prompts have fewer (e.g. {p!r}: {n}). Generate with "
                          f"`distar eval ... --images-per-prompt {min_k}`.")
    return groups


def per_image_diversity(embeddings: np.ndarray, prompts: Sequence[str],
                        min_k: int = MIN_K) -> np.ndarray:
    """[N]: each image's mean cosine distance to the other images of its prompt (text)."""
    out = np.empty(len(prompts), np.float64)
    for ix in _prompt_groups(prompts, min_k).values():
        out[ix] = per_image_cosine_distance(embeddings[ix])
    return out


def intra_prompt_diversity(embeddings: np.ndarray, prompts: Sequence[str],
                           min_k: int = MIN_K) -> dict[str, float]:
    """{prompt: mean pairwise cosine distance of its images' embeddings}."""
    return prompt_means(per_image_diversity(embeddings, prompts, min_k), prompts)


def prompt_means(per_image: np.ndarray, prompts: Sequence[str]) -> dict[str, float]:
    """{prompt text: mean of its images' values}."""
    return {p: float(per_image[ix].mean()) for p, ix in _prompt_groups(prompts, 1).items()}


class Diversity:
    """Set metric: `compute(images, prompts=...) -> float` (mean over prompts), and per image:
    `compute_with_images(...) -> (that float, [N] per-image values)`, which the runner stores
    in `scores` beside the set row (evalsuite.metrics.runner).

    `Diversity.from_pretrained(...)` embeds with an open_clip CLIP; the constructor takes any
    `embedder`: an images -> [N, D] callable with a `name` (tests, other spaces)."""
    needs_prompts = True
    name, label = "diversity", "Diversity"

    def __init__(self, embedder: Callable[[Sequence[Image.Image]], np.ndarray],
                 min_k: int = MIN_K, provenance: dict | None = None):
        if min_k < 2:
            raise DistarError(f"min_k must be >= 2 (pairs of images), got {min_k}")
        self.embedder, self.min_k = embedder, min_k
        self.provenance = provenance or {"injected": True}
        self.info = with_dtype(MetricInfo(self.name, f"intra-prompt mean pairwise cosine distance "
                                          f"min_k={min_k}", embedder.name,
                                          getattr(embedder, "preprocessing", "injected"),
                                          higher_is_better=None, label=self.label,
                                          unit="1 - cosine"),
                               getattr(embedder, "dtype", "fp32"))

    @classmethod
    def hub_needs(cls, name: str, options: dict) -> list:
        """The `clip` metric's, whose image tower from_pretrained builds."""
        from evalsuite.metrics.clip_score import ClipScore
        return ClipScore.hub_needs(name, options)

    @classmethod
    def from_pretrained(cls, backbone: str = "ViT-g-14", pretrained: str = "laion2b_s12b_b42k",
                        weights_path: str | None = None, min_k: int = MIN_K,
                        device: str = "auto", dtype: str = "fp32", batch_size: int = 32
                        ) -> "Diversity":
        """Options: backbone / pretrained / weights_path (as the `clip` metric; env
        DISTAR_CLIP_PATH), min_k (4), device, dtype, batch_size."""
        from evalsuite.metrics.clip_score import ClipScore
        clip = ClipScore.from_pretrained(backbone=backbone, pretrained=pretrained,
                                         weights_path=weights_path, device=device, dtype=dtype,
                                         batch_size=batch_size)
        return cls(ImageEmbedder(clip), min_k, clip.provenance)

    def compute_with_images(self, images: Sequence, on_batch=None, prompts: Sequence[str] = ()
                            ) -> tuple[float, np.ndarray]:
        """(mean over prompts of their diversity, per-image values aligned with `images`)."""
        prompts = check_prompts(images, list(prompts))
        opened = [_open(im) for im in images]
        emb = np.asarray(self.embedder(opened), np.float64)
        if on_batch is not None:
            on_batch(len(images))
        per_image = per_image_diversity(emb, prompts, self.min_k)
        return float(np.mean(list(prompt_means(per_image, prompts).values()))), per_image

    def compute(self, images: Sequence, on_batch=None, prompts: Sequence[str] = ()) -> float:
        return self.compute_with_images(images, on_batch, prompts)[0]


def _open(item) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    with Image.open(item) as im:
        return im.convert("RGB")


class ImageEmbedder:
    """Image embeddings [N, D] (float32, not normalised) from a ClipScore's model: CLIP
    preprocessing (PIL bicubic, centre crop, its mean/std; never CLIP score's DMD2 pre-resize)
    and the metrics' one batch loop."""

    def __init__(self, clip, name: str | None = None):
        self.clip = clip
        self.dtype = clip.dtype  # named in the diversity key (base.with_dtype)
        self.name = name or clip.info.backbone
        self.preprocessing = (f"PIL bicubic short side->{clip.image_size}, centre crop, "
                              f"mean/std {clip.mean}/{clip.std}")

    @torch.inference_mode()
    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        c = self.clip
        return run_batches(len(images), c.batch_size, lambda sl: c.image_embeddings(torch.stack(
            [pp.clip_pil(im, c.image_size, c.mean, c.std) for im in images[sl]]))).numpy()
