"""Metrics of the mini world (di_star.mini), in the suite's metric shape so mini runs go through
the same harness, store and leaderboard as real models."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from evalsuite.metrics.loading import folder_records
from evalsuite.metrics.base import (MetricInfo, check_prompts, require_fp32,
                                    run_batches)
from di_star.mini import gold
from di_star.mini.scene import CHECKS_VERSION


class MiniGold:
    """The mini world's gold judge (di_star.mini.gold): the stand-in for human preference,
    per image in [0, 1]. Pure pixels, no weights."""
    info = MetricInfo("mini_gold", gold.VERSION, "none (pixel rules)",
                      "RGB as given (the world draws 64 px)", label="Gold judge",
                      unit="gold score in [0, 1]", bounds=(0.0, 1.0))
    fp32_only = True  # numpy pixel rules: a bf16 / fp16 request is refused, not ignored

    @classmethod
    def version_key(cls, **_options) -> str:
        """`from_pretrained(...).info.key`: the judge has no weights and no options."""
        return cls.info.key

    @classmethod
    def from_pretrained(cls, dtype: str = "fp32", **_shared_options) -> "MiniGold":
        """Nothing to load; dtype must be fp32; other shared options (device, batch_size,
        ...) are ignored."""
        require_fp32(cls.info.name, dtype)
        return cls()

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        return gold.gold_score(images, check_prompts(images, prompts))


def _weights_tag(folder) -> str:
    import hashlib
    from di_star.mini.classifier import WEIGHTS_FILE
    return hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()[:12]


def attribute_score(checks: dict[str, bool], mode: str) -> float:
    """One image's score from its prompt's strict attribute checks (scene.request_checks):
    'all' = 1 when every check holds (GenEval's per-prompt correctness), 'frac' = the share that
    hold; NaN when the prompt asks nothing the mini world knows."""
    if not checks:
        return float("nan")
    values = list(checks.values())
    return float(all(values)) if mode == "all" else float(np.mean(values))


class _WithClassifier:
    """A metric reading images with the mini attribute classifier; `info` names its weights'
    sha256. The constructor takes the loaded classifier and the folder it came from."""
    name, version_suffix, label, unit = "", "", "", ""
    bounds: tuple[float, float] | None = None   # MetricInfo.bounds of its values
    fp32_only = True  # the classifier runs in fp32: a bf16 / fp16 request is refused

    def __init__(self, model, folder: Path, batch_size: int = 256):
        self.model = model
        self.batch_size = batch_size
        self.info = MetricInfo(self.name, f"{self.model.cfg.version} {self.version_suffix}",
                               f"mini attribute classifier sha256:{_weights_tag(folder)}",
                               "RGB, bilinear to 64 px, 24 px cell crops", label=self.label,
                               unit=self.unit, bounds=self.bounds)
        self.provenance = {"classifier": folder_records(folder, skip_weights=False)}

    @classmethod
    def from_pretrained(cls, classifier_path: str | None = None, batch_size: int = 256,
                        dtype: str = "fp32", **_shared_options):
        """Options: classifier_path (a folder with model.safetensors + config.json; default
        $DISTAR_MINI_DIR/classifier, else the shipped di_star/mini/data/classifier),
        batch_size, dtype (fp32 only); other shared ones (device) are ignored."""
        require_fp32(cls.name, dtype)
        return cls(*_load_classifier(classifier_path), batch_size)


def _load_classifier(classifier_path: str | None):
    from di_star.mini.classifier import default_folder, load_attribute_classifier
    folder = Path(classifier_path) if classifier_path else default_folder()
    return load_attribute_classifier(folder), folder


class MiniAttrAcc(_WithClassifier):
    """Strict attribute accuracy (GenEval-like) by the mini attribute classifier: per image, 1
    when the classifier sees exactly the asked objects (no others), each with the asked shape,
    colour and size, the asked count, the asked region or relation, and the asked background
    (di_star.mini.scene.request_checks), else 0."""
    mode = "all"
    # The checks' version is in the key: scores stored under the lenient rules are never reused.
    version_suffix = f"{CHECKS_VERSION} all"
    name, label, unit = "mini_attr_acc", "Attribute acc.", "share of images"
    bounds = (0.0, 1.0)

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        from di_star.mini.classifier import detect
        from di_star.mini.scene import parse_caption, request_checks
        prompts = check_prompts(images, prompts)
        scenes = detect(self.model, list(images), self.batch_size)
        return np.array([attribute_score(request_checks(s, parse_caption(p)), self.mode)
                         for s, p in zip(scenes, prompts)], np.float64)


class MiniAttrFrac(MiniAttrAcc):
    """As mini_attr_acc, but the share of its strict checks that hold (partial credit): one
    extra object or a wrong count costs one check, not the whole image."""
    mode = "frac"
    version_suffix = f"{CHECKS_VERSION} frac"
    name, label, unit = "mini_attr_frac", "Attribute frac.", "share of strict checks"


def reference_renders(prompts: Sequence[str], seed: int = 0) -> list[Image.Image]:
    """One ground-truth render per prompt occurrence: the j-th occurrence of a prompt text gets
    the generator seeded by (seed, sha256(text), j), so references do not depend on the order,
    batch or benchmark the prompts come from."""
    import hashlib

    from distar.core.errors import DistarError
    from di_star.mini.scene import render_for_caption
    seen: dict[str, int] = {}
    out = []
    for p in prompts:
        j = seen[p] = seen.get(p, -1) + 1
        h = int.from_bytes(hashlib.sha256(p.encode()).digest()[:8], "little")
        try:
            out.append(render_for_caption(p, np.random.default_rng([seed, h, j])))
        except DistarError as e:
            raise DistarError(f"mini_fd/mini_kd compare with ground-truth renders of the same "
                              f"prompts, and the mini world cannot render {p!r}: {e} Use them on "
                              f"mini_* benchmarks.") from None
    return out


class MiniFD(_WithClassifier):
    """Frechet distance between generated images and ground-truth renders of the SAME prompts
    (one reference per image), in the mini attribute classifier's per-cell embedding space
    (9 x cell_dim). Not Inception FID: the key names the classifier and says 'mini-FD'.
    Why this space and not the mini CLIP's image tower: it exists without the built world's
    CLIP, it is trained on exactly the world's attributes and positions (cell by cell), and it
    is not the network whose text tower conditions the generator.
    Steps: fid.feature_statistics -> fid.frechet_distance (clean-fid's). Options:
    classifier_path, reference_seed (0), batch_size (`from_pretrained`)."""
    name, label, unit = "mini_fd", "mini-FD", "classifier cell-embedding distance"
    needs_prompts = True

    def __init__(self, model, folder: Path, batch_size: int = 256, reference_seed: int = 0):
        super().__init__(model, folder, batch_size)
        self.reference_seed = reference_seed
        self.info = MetricInfo(self.name, f"{self._kind()} ground-truth renders of the same "
                               f"prompts seed={reference_seed}", self.info.backbone,
                               self.info.preprocessing, higher_is_better=False,
                               label=self.label, unit=self.unit)

    @classmethod
    def from_pretrained(cls, classifier_path: str | None = None, reference_seed: int = 0,
                        batch_size: int = 256, dtype: str = "fp32", **_shared_options
                        ) -> "MiniFD":
        require_fp32(cls.name, dtype)
        return cls(*_load_classifier(classifier_path), batch_size, reference_seed)

    def _kind(self) -> str:
        return "mini-FD"

    def features(self, images: Sequence) -> np.ndarray:
        import torch

        from di_star.mini.classifier import to_tensor
        with torch.no_grad():
            feats = run_batches(len(images), self.batch_size,
                                lambda sl: self.model.features(to_tensor(images[sl])))
        return feats.numpy().astype(np.float64)

    def distance(self, feats: np.ndarray, ref: np.ndarray) -> float:
        from evalsuite.metrics.fid import feature_statistics, frechet_distance
        return frechet_distance(*feature_statistics(feats), *feature_statistics(ref))

    def compute(self, images: Sequence, on_batch=None, prompts: Sequence[str] = ()) -> float:
        prompts = check_prompts(images, list(prompts))
        feats = self.features(list(images))
        if on_batch is not None:
            on_batch(len(images))
        return self.distance(feats, self.features(reference_renders(prompts,
                                                                    self.reference_seed)))


class MiniKD(MiniFD):
    """Kernel distance (KID's unbiased MMD^2, cubic kernel, seeded subsets) in the same space and
    against the same references as mini_fd; raw units."""
    name, label = "mini_kd", "mini-KD"

    def _kind(self) -> str:
        return "mini-KD subsets=100x1000 seed=0"

    def distance(self, feats: np.ndarray, ref: np.ndarray) -> float:
        from evalsuite.metrics.fid import kernel_inception_distance
        return kernel_inception_distance(ref, feats, num_subsets=100, max_subset_size=1000,
                                         seed=0)
