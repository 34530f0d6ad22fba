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


def _weights_tag(folder) -> str:
    import hashlib
    from evalsuite.mini.classifier import WEIGHTS_FILE
    return hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()[:12]


def attribute_score(checks: dict[str, bool], mode: str) -> float:
    """One image's score from its prompt's attribute checks: 'all' = 1 when every asked
    attribute holds (GenEval's per-prompt correctness), 'frac' = the share that hold; NaN when
    the prompt asks nothing the mini world knows."""
    if not checks:
        return float("nan")
    values = list(checks.values())
    return float(all(values)) if mode == "all" else float(np.mean(values))


class MiniAttrAcc:
    """Attribute accuracy (GenEval-like) by the mini attribute classifier: per image, 1 when the
    classifier finds every attribute the prompt asks for (shape, colour, size, count, position,
    relation, background; see evalsuite.mini.world.request_checks), else 0.

    Options: classifier_path (a folder with model.safetensors + config.json; default
    $DISTAR_MINI_DIR/classifier, else the shipped evalsuite/data/mini/classifier), batch_size."""
    mode, name = "all", "mini_attr_acc"

    def __init__(self, classifier_path: str | None = None, batch_size: int = 256,
                 **_shared_options):
        from pathlib import Path

        from evalsuite.mini.classifier import default_folder, load_attribute_classifier
        folder = Path(classifier_path) if classifier_path else default_folder()
        self.model = load_attribute_classifier(folder)
        self.batch_size = batch_size
        cfg = self.model.cfg
        self.info = MetricInfo(self.name, f"{cfg.version} {self.mode}",
                               f"mini attribute classifier sha256:{_weights_tag(folder)}",
                               "RGB, bilinear to 64 px, 24 px cell crops")
        self.provenance = {"classifier": str(folder)}

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        from evalsuite.mini.classifier import detect
        from evalsuite.mini.world import parse_caption, request_checks
        prompts = check_prompts(images, prompts)
        scenes = detect(self.model, list(images), self.batch_size)
        return np.array([attribute_score(request_checks(s, parse_caption(p)), self.mode)
                         for s, p in zip(scenes, prompts)], np.float64)


class MiniAttrFrac(MiniAttrAcc):
    """As mini_attr_acc, but the share of the prompt's asked attributes found (partial credit)."""
    mode, name = "frac", "mini_attr_frac"
