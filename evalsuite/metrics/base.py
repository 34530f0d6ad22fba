"""What every metric provides. Implementations live one per module in this package.

Per-image metrics: `score(images, prompts) -> np.ndarray[N]` (batched internally) and, for the
ones the trainer uses as rewards, `score_tensor(images, prompts) -> Tensor[N]` differentiable,
with images as float tensors in [0, 1], shape [N, 3, H, W].
Set metrics (FID, KID): features -> statistics -> distance, each a separate function.
Every number carries `info`: name, version, backbone and preprocessing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence


@dataclass(frozen=True)
class MetricInfo:
    name: str               # registry name, e.g. 'hpsv21'
    version: str            # e.g. 'HPSv2.1'; part of the results-store key
    backbone: str           # e.g. 'open_clip ViT-H-14'
    preprocessing: str      # e.g. 'bicubic resize 224, centre crop, CLIP mean/std'
    higher_is_better: bool = True

    @property
    def key(self) -> str:
        """The string stored as `metric_version`: changes whenever the number could."""
        return f"{self.version}|{self.backbone}|{self.preprocessing}"

    def as_dict(self) -> dict:
        return asdict(self)


def iter_batches(n: int, batch_size: int):
    """Slices [0:b], [b:2b], ... covering range(n)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def check_prompts(images: Sequence, prompts: Sequence[str] | None, needed: bool = True) -> list:
    """Prompts as a list aligned with images (one prompt per image)."""
    if prompts is None:
        if needed:
            raise ValueError("this metric needs one prompt per image")
        return [""] * len(images)
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, one per image, not a str")
    if len(prompts) != len(images):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    return list(prompts)


# Torch CLIP preprocessing, for differentiable paths of any metric (see _preprocess for details).
from evalsuite.metrics._preprocess import (  # noqa: E402
    OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, clip_tensor, resize_shortest)
