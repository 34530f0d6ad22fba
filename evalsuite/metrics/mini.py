"""Metrics of the mini world (evalsuite.mini), in the suite's metric shape so mini runs go through
the same harness, store and leaderboard as real models."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from evalsuite.metrics.base import MetricInfo, check_prompts
from evalsuite.mini import gold


class MiniGold:
    """The mini world's gold judge (evalsuite.mini.gold): the stand-in for human preference,
    per image in [0, 1]. Pure pixels, no weights."""
    info = MetricInfo("mini_gold", gold.VERSION, "none (pixel rules)",
                      "RGB as given (the world draws 64 px)")

    def __init__(self, **_shared_options):
        pass

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        return gold.gold_score(images, check_prompts(images, prompts))
