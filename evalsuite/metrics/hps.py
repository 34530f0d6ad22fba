"""Human Preference Score v2.0 and v2.1 (Wu et al. 2023), batched.

Reference: the hpsv2 package (1.2.0). `hpsv2.img_score.score` builds open_clip ViT-H-14, loads
`HPS_v2_compressed.pt` or `HPS_v2.1_compressed.pt` (xswu/HPSv2) with load_state_dict, and returns
per image the cosine of the normalised image and text embeddings (no logit scale);
`hpsv2.evaluation.evaluate_benchmark` multiplies the same cosine by 100 and, per style, averages
the means of consecutive 80-image chunks (`hps_benchmark_summary` below reproduces it).

Per-image values here are in `hpsv2.score`'s unit (cosine, ~0.27); benchmark summaries are in the
benchmark's unit (x100, ~27). The version ('HPSv2.0' / 'HPSv2.1') is in every key.

Preprocessing is hpsv2's `preprocess_val`: RGB to a float tensor first, resize on the tensor so
the long side is 224 (bicubic, antialias), zero-pad to a centred square, normalise. Because the
reference resizes a float tensor, `score_tensor` runs the very same ops and matches `score`.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from evalsuite.benchmarks import HPS_CHUNK
from evalsuite.metrics import preprocess as pp
from evalsuite.metrics.loading import (build_open_clip, freeze, open_clip_records, provenance,
                                        resolve_dtype, resolve_file)
from evalsuite.metrics.base import EmbeddingMetric, MetricInfo, check_prompts, with_dtype
from evalsuite.metrics.stats import chunked_means
from evalsuite.models import read_state_dict, resolve_device

HPS_REPO = "xswu/HPSv2"


class HPS(EmbeddingMetric):
    """`score(images, prompts) -> np.ndarray[N]` (cosine); `score_tensor` is differentiable.
    The registered variants below fix the checkpoint and the resize; `from_pretrained(...)`
    loads the checkpoint, the constructor wraps an already built open_clip model holding an HPS
    state dict and its tokenizer.
    """

    name: str
    version: str
    filename: str
    env_var: str
    # hpsv2 resizes with torchvision's default antialias, True since torchvision 0.17 and False
    # before, so its published numbers depend on the torchvision it ran with. Both are offered,
    # under different names and keys: antialias=True (the default here) and the '_noaa' variants.
    antialias: bool = True

    def __init__(self, model, tokenizer, arch: str = "ViT-H-14", device: str = "cpu",
                 dtype: str = "fp32", batch_size: int = 32, provenance: dict | None = None):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = freeze(model).to(self.device, self.dtype)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.image_size = int(np.atleast_1d(self.model.visual.image_size)[0])
        self.provenance = provenance or {"injected": True}
        resize = "bicubic antialias" if self.antialias else "bicubic without antialias"
        self.info = with_dtype(MetricInfo(
            name=self.name, version=self.version,
            backbone=f"open_clip {arch} + {self.filename}",
            preprocessing=f"RGB float tensor, long side->{self.image_size} {resize} "
                          f"(torchvision), zero pad to square, CLIP mean/std",
            label=self.version, unit="cosine (x 100 in Table 3)", decimals=2), self.dtype)

    @classmethod
    def hub_needs(cls, name: str, options: dict) -> list:
        """What from_pretrained reads from the hub (evalsuite.needs): the checkpoint."""
        from evalsuite.needs import HubNeed
        return [HubNeed(f"{name}: {cls.version.removesuffix(' noaa')} weights", HPS_REPO, (cls.filename,),
                        (cls.filename,), revision=options.get("revision"), env_var=cls.env_var)]

    @classmethod
    def from_pretrained(cls, device: str = "auto", dtype: str = "fp32", batch_size: int = 32,
                        weights_path: str | None = None, revision: str | None = None,
                        arch: str = "ViT-H-14") -> "HPS":
        """Options: device ('auto'), dtype ('fp32'; half only on GPU), batch_size (32),
        weights_path (the HPS checkpoint; env DISTAR_HPSV20_PATH / DISTAR_HPSV21_PATH),
        revision, arch ('ViT-H-14'; any open_clip config whose state dict the checkpoint
        matches)."""
        import open_clip
        need, = cls.hub_needs(cls.name, {"revision": revision})
        path = resolve_file(cls.version, repo_id=need.repo_id, filename=need.files[0],
                            path=weights_path, env_var=need.env_var, revision=need.revision)
        prov = {"hps": provenance(path, cls.version),  # checked before it is read
                **open_clip_records(arch)}  # its config and tokenizer vocabulary
        model = build_open_clip(arch, read_state_dict(path))
        return cls(model, open_clip.get_tokenizer(arch), arch, device, dtype, batch_size, prov)

    def _score(self, pixels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts).to(self.device)
        img = self.model.encode_image(pixels.to(self.device, self.dtype)).float()
        txt = self.model.encode_text(tokens).float()
        return (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(-1)

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([pp.hps_pil(im, self.image_size, antialias=self.antialias)
                            for im in images])

    def score_tensor(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """images: [N, 3, H, W] in [0, 1]; the same tensor ops as the PIL path."""
        prompts = check_prompts(images, prompts)
        x = pp.resize_longest_and_pad(images.float(), self.image_size, self.antialias)
        return self._score(pp.TF.normalize(x, pp.OPENAI_CLIP_MEAN, pp.OPENAI_CLIP_STD), prompts)


class HPSv20(HPS):
    name, version, filename, env_var = "hpsv2", "HPSv2.0", "HPS_v2_compressed.pt", \
        "DISTAR_HPSV20_PATH"


class HPSv21(HPS):
    name, version, filename, env_var = "hpsv21", "HPSv2.1", "HPS_v2.1_compressed.pt", \
        "DISTAR_HPSV21_PATH"


class HPSv20NoAA(HPSv20):
    """HPSv2.0 resized without antialias: hpsv2 run with torchvision < 0.17."""
    name, version, antialias = "hpsv2_noaa", "HPSv2.0 noaa", False


class HPSv21NoAA(HPSv21):
    """HPSv2.1 resized without antialias: hpsv2 run with torchvision < 0.17."""
    name, version, antialias = "hpsv21_noaa", "HPSv2.1 noaa", False


def hps_benchmark_summary(values: Sequence[float], styles: Sequence[str],
                          order: Sequence[int] | None = None, scale: float = 100.0,
                          chunk: int = HPS_CHUNK) -> dict[str, dict[str, float]]:
    """HPSv2's benchmark numbers from per-image scores, as hpsv2.evaluation.evaluate_benchmark
    computes them: per style, the images in prompt order (`order`), scaled by 100, cut into
    consecutive chunks of 80; the style's score is the mean of the chunk means and its spread
    the (population) std of the chunk means. 'Average' is the mean over all images (not the
    mean of the style scores). Returns {style: {'mean', 'std', 'n'}, 'Average': {'mean', 'n'}}."""
    if len(values) != len(styles):
        raise ValueError(f"{len(values)} values but {len(styles)} styles")
    order = range(len(values)) if order is None else order
    by_style: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for v, s, o in zip(values, styles, order):
        by_style[s].append((o, scale * float(v)))
    out: dict[str, dict[str, float]] = {}
    every: list[float] = []
    for style in sorted(by_style):
        res = [v for _, v in sorted(by_style[style], key=lambda t: t[0])]
        chunk_means = chunked_means(res, chunk)
        out[style] = {"mean": float(np.mean(chunk_means)), "std": float(np.std(chunk_means)),
                      "n": len(res)}
        every.extend(res)
    out["Average"] = {"mean": float(np.mean(every)), "n": len(every)}
    return out

