"""What every metric provides. Implementations live one per module in this package.

Per-image metrics: `score(images, prompts) -> np.ndarray[N]` (batched internally) and, for the
ones the trainer uses as rewards, `score_tensor(images, prompts) -> Tensor[N]` differentiable,
with images as float tensors in [0, 1], shape [N, 3, H, W].
Set metrics (FID, KID): features -> statistics -> distance, each a separate function.
Every number carries `info`: name, version, backbone and preprocessing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from PIL import Image


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


@runtime_checkable
class ImageMetric(Protocol):
    info: MetricInfo

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class DifferentiableMetric(ImageMetric, Protocol):
    def score_tensor(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor: ...
