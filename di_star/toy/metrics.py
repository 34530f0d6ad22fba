"""Metrics of the toy `digits` bench (di_star.toy.digits), in the suite's metric shape so toy runs
go through the same harness, store and leaderboard as real models (registered into
evalsuite.metrics.METRICS by di_star/plugins.py). All come from one classifier
trained once on sklearn's digits and cached: prompt accuracy is the CLIP-score analogue, the
Frechet distance in its features is the FID analogue."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from PIL import Image

from evalsuite.metrics.base import MetricInfo, require_fp32

_BACKBONE = "distar digits classifier (cached, sklearn digits)"


def _digits_metrics(recipe_scale: float):
    """`recipe_scale` < 1: the classifier trained with fewer steps (a scaled run's or demo's)."""
    from di_star.toy.digits import DigitsMetrics, DigitsRecipe
    return DigitsMetrics(DigitsRecipe().scaled(recipe_scale))


def _unit(paths_or_images) -> np.ndarray:
    from di_star.toy.pipeline import pil_to_unit
    images = [Image.open(p) if isinstance(p, str) else p for p in paths_or_images]
    return pil_to_unit(images)


class _DigitsMetric:
    """Built from the digits classifier (`DigitsMetrics`); `from_pretrained` trains it once
    and caches it."""

    fp32_only = True  # the classifier runs in fp32: a bf16 / fp16 request is refused

    def __init__(self, metrics):
        self.m = metrics

    @classmethod
    def from_pretrained(cls, recipe_scale: float = 1.0, dtype: str = "fp32", **_shared_options):
        """Options: recipe_scale (< 1: the classifier of a scaled run), dtype (fp32 only);
        other shared ones (device, ...) are ignored."""
        require_fp32(cls.info.name, dtype)
        return cls(_digits_metrics(recipe_scale))


class DigitAccuracy(_DigitsMetric):
    """1 when the classifier reads the prompt's digit (per image)."""
    info = MetricInfo("digit_acc", "digit-acc-v1", _BACKBONE, "8x8 greyscale in [0,1]",
                      label="Digit acc.", unit="share of images")

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        return self.m.prompt_accuracy(_unit(images), prompts)


class DigitInk(_DigitsMetric):
    """The toy's explicit reward, mean brightness (per image)."""
    info = MetricInfo("digit_ink", "ink-v1", "none", "8x8 greyscale in [0,1]", label="Ink",
                      unit="mean brightness")

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        return self.m.reward(_unit(images), prompts)


class _SetMetric(_DigitsMetric):
    needs_prompts = True
    _fn: Callable

    def compute(self, paths: Sequence[str], on_batch=None, prompts: Sequence[str] = ()) -> float:
        images = _unit(paths)
        if on_batch is not None:
            on_batch(len(paths))
        return float(type(self)._fn(self.m, images, list(prompts)))


class DigitFD(_SetMetric):
    """Frechet distance to the 1797 real digits in classifier features (lower is better)."""
    info = MetricInfo("digit_fd", "digit-fd-v1", _BACKBONE, "8x8 greyscale in [0,1]",
                      higher_is_better=False, label="Digit FD")
    _fn = staticmethod(lambda m, x, p: m.frechet_distance(x))


class DigitDiversity(_SetMetric):
    """Within-class feature spread relative to the real digits' (1 = as diverse as the data)."""
    info = MetricInfo("digit_div", "digit-div-v1", _BACKBONE, "8x8 greyscale in [0,1]",
                      higher_is_better=None, label="Digit diversity",
                      unit="relative to the real digits' spread")
    _fn = staticmethod(lambda m, x, p: m.diversity(x, p))
