"""What every metric provides. Implementations live one per module in this package.

Per-image metrics: `score(images, prompts) -> np.ndarray[N]` (batched internally) and, for the
ones the trainer uses as rewards, `score_tensor(images, prompts) -> Tensor[N]` differentiable,
with images as float tensors in [0, 1], shape [N, 3, H, W].
Set metrics (FID, KID): features -> statistics -> distance, each a separate function,
`compute(images) -> float`. A set metric whose number is a mean over prompts of per-image terms
(intra-prompt diversity) also has `compute_with_images(...) -> (float, array[N])`, so reports can
give it intervals and paired tests like a per-image metric.
Every number carries `info`: name, version, backbone and preprocessing, and how it is shown
(direction, short label, unit, decimals).

Every metric is built one way: `Class.from_pretrained(**options)` finds and checks the weights
(device names through evalsuite.models.resolve_device, dtype names through distar.core.dtypes)
and calls the constructor, which takes the built modules (what tests and the trainer call with
random or in-memory weights). The registry names `module:Class.from_pretrained`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch

from distar.core.dtypes import DTYPES, dtype_name
from distar.core.errors import DistarError


@dataclass(frozen=True)
class MetricInfo:
    name: str               # registry name, e.g. 'hpsv21'
    version: str            # e.g. 'HPSv2.1'; part of the results-store key
    backbone: str           # e.g. 'open_clip ViT-H-14'
    preprocessing: str      # e.g. 'bicubic resize 224, centre crop, CLIP mean/std'
    # How reports show it: the one place (stored with every score, so tables read the store
    # alone). None: no direction (no arrow, no bold). `label`: a short column head, <= 22
    # characters ('' = name); `unit`: what one unit is; `decimals`: table precision;
    # `bounds`: the range every value lies in, where there is one (a share, a [0, 1] judge):
    # intervals of a mean are clipped to it (the studentised one can leave it at a few prompts).
    higher_is_better: bool | None = True
    label: str = ""
    unit: str = ""
    decimals: int = 3
    bounds: tuple[float, float] | None = None

    @property
    def key(self) -> str:
        """The string stored as `metric_version`: changes whenever the number could."""
        return f"{self.version}|{self.backbone}|{self.preprocessing}"

    def as_dict(self) -> dict:
        return asdict(self)


def with_dtype(info: MetricInfo, dtype) -> MetricInfo:
    """`info` with its compute dtype named in the version ('HPSv2.1 bf16'), so bf16 or fp16
    scores never share a key (a column) with fp32 ones. fp32 is the unnamed default: an fp32
    key is the text it always was, so stores written before dtypes were named keep their
    columns and are not scored again (evalsuite/metrics/README.md, "Precision")."""
    name = dtype_name(dtype, short=True)
    if name == "fp32":
        return info
    return replace(info, version=f"{info.version} {name}",
                   label=f"{info.label or info.name} {name}")


def require_fp32(metric: str, dtype) -> None:
    """Refuse a dtype other than fp32 for a metric that computes in fp32 only (FID's Inception,
    the pixel and classifier metrics; their classes say `fp32_only = True`): it would run in
    fp32 anyway, and its number would be stored as if computed in the dtype asked for."""
    try:
        name = dtype_name(dtype, short=True)
    except ValueError:
        raise DistarError(f"Unknown dtype '{dtype}'. Choose one of: {', '.join(DTYPES)}") from None
    if name != "fp32":
        raise DistarError(f"metric '{metric}' computes in fp32 only; dtype '{name}' would be "
                          f"ignored. Fix: score it with dtype fp32 (distar eval "
                          f"--metric-dtype fp32, in a separate run from the {name} metrics).")


def iter_batches(n: int, batch_size: int):
    """Slices [0:b], [b:2b], ... covering range(n)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def run_batches(n: int, batch_size: int, fn: Callable[[slice], torch.Tensor]) -> torch.Tensor:
    """`fn(batch)` for each slice of iter_batches(n, batch_size), concatenated on the CPU
    (an empty float32 tensor when n == 0): the one batch loop of the metrics."""
    out = [fn(sl).cpu() for sl in iter_batches(n, batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


class EmbeddingMetric:
    """The shared `score` of the per-image embedding metrics (CLIP score, PickScore, aesthetic,
    HPS and the plug-ins' learned ones): images in batches of `batch_size`, each batch turned
    into pixels by `_pixels(images)` and scored by `_score(pixels, prompts) -> Tensor[b]`."""

    needs_prompts = True
    batch_size: int

    @classmethod
    def version_key(cls, dtype="fp32", **_options) -> str | None:
        """The `info.key` that `from_pretrained(**options)` would give, when it is known without
        loading (runner: skip a metric whose images are all scored): a class-level `info`, which
        no option but the dtype changes. None = load to know. A subclass that sets `info` per
        instance while inheriting a class-level one must override this."""
        info = getattr(cls, "info", None)
        try:
            return with_dtype(info, dtype).key if isinstance(info, MetricInfo) else None
        except ValueError:  # an unknown dtype name: loading reports it clearly
            return None

    def _pixels(self, images: Sequence) -> torch.Tensor:
        raise NotImplementedError

    def _score(self, pixels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def score(self, images: Sequence, prompts: Sequence[str] | None = None) -> np.ndarray:
        prompts = check_prompts(images, prompts, needed=self.needs_prompts)
        return run_batches(len(images), self.batch_size,
                           lambda sl: self._score(self._pixels(images[sl]), prompts[sl])
                           ).double().numpy()


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

