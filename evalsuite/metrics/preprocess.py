"""Image preprocessing for the metrics, each step named as its reference implementation does it.

Every metric has two paths:
- PIL path (`score`): the reference's own transform, step for step, so numbers match it to float
  precision (the parity tests check this).
- Tensor path (`score_tensor`): the same geometry in torch on float images in [0, 1], so gradients
  reach the generator. Where the reference resizes an 8-bit PIL image, PIL rounds the result to
  uint8 and uses fixed-point weights; the tensor path does not, so the two differ by up to about
  one grey level per pixel (tests/test_metric_preprocess.py measures it).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from PIL import Image


class _LazyTorchvisionTF:
    """torchvision.transforms.functional, imported on first use: importing torchvision costs
    seconds (it pulls in torch._dynamo), and a finished rerun needs a metric's class, never its
    preprocessing (evalsuite.metrics.runner.known_key)."""

    def __getattr__(self, name: str):
        import torchvision.transforms.functional as tf
        return getattr(tf, name)


TF = _LazyTorchvisionTF()


def _bicubic():
    from torchvision.transforms import InterpolationMode
    return InterpolationMode.BICUBIC

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# PIL path -------------------------------------------------------------------------------------
def clip_pil(img: Image.Image, size: int = 224, mean=OPENAI_CLIP_MEAN,
             std=OPENAI_CLIP_STD) -> torch.Tensor:
    """open_clip's eval transform (resize_mode 'shortest'), identical to OpenAI clip's
    `_transform`: bicubic resize of the short side (PIL), centre crop, RGB, to [0,1], normalise."""
    img = TF.resize(img, size, interpolation=_bicubic())
    img = TF.center_crop(img, [size, size])
    return TF.normalize(TF.to_tensor(img.convert("RGB")), mean, std)


def hps_pil(img: Image.Image, size: int = 224, mean=OPENAI_CLIP_MEAN,
            std=OPENAI_CLIP_STD, antialias: bool = True) -> torch.Tensor:
    """HPSv2's `preprocess_val` (image_transform(resize_longest_max=True)): to a float tensor
    FIRST, then resize on the tensor, so its PIL path and our tensor path are the same code.
    RGBA is converted to RGB (hpsv2 keeps the alpha channel and its model then fails)."""
    x = TF.to_tensor(img.convert("RGB"))
    return TF.normalize(resize_longest_and_pad(x[None], size, antialias)[0], mean, std)


def center_crop_long_edge(img: Image.Image) -> Image.Image:
    """BigGAN/GigaGAN/DMD2 `CenterCropLongEdge`: the largest centred square."""
    return TF.center_crop(img, min(img.size))


def crop_resize_lanczos(img: Image.Image, size: int) -> Image.Image:
    """DMD2's COCO protocol (coco_evaluator.resize_and_center_crop): centre-crop the long edge,
    then PIL LANCZOS to size x size."""
    return center_crop_long_edge(img).resize((size, size), Image.LANCZOS)


# Tensor path ----------------------------------------------------------------------------------
def resize_shortest(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic (antialiased, PIL's a=-0.5 kernel) resize of the short side, long side
    int(size * long / short) exactly as torchvision and transformers compute it for PIL."""
    return TF.resize(x, size, interpolation=_bicubic(), antialias=True)


def center_crop_hf(x: torch.Tensor, size: int) -> torch.Tensor:
    """transformers' centre crop: offsets floor((H - size) / 2). torchvision rounds half to even
    instead, which differs by one pixel when H - size is odd."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def clip_tensor(x: torch.Tensor, size: int = 224, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
                crop: str = "torchvision") -> torch.Tensor:
    """Tensor twin of `clip_pil` (crop='torchvision') or of transformers' CLIPImageProcessor
    (crop='hf'). x: [N, 3, H, W] in [0, 1]."""
    x = resize_shortest(x, size).clamp(0, 1)  # PIL clips its 8-bit result
    x = center_crop_hf(x, size) if crop == "hf" else TF.center_crop(x, [size, size])
    return TF.normalize(x, mean, std)


def resize_longest_and_pad(x: torch.Tensor, size: int, antialias: bool = True) -> torch.Tensor:
    """hpsv2 `ResizeMaxSize`: scale so the long side is `size` (Python round() of each side,
    bicubic on the tensor), then zero-pad to a centred square, left/top getting the floor half.
    hpsv2 calls torchvision's resize without `antialias`, whose default for tensors is True
    since torchvision 0.17 and was False before: `antialias` picks one explicitly.
    hpsv2 skips the pad when no resize is needed (a non-square image whose long side is already
    `size` then crashes its model); we pad in that case too."""
    h, w = x.shape[-2:]
    scale = size / float(max(h, w))
    if scale != 1.0:
        new_h, new_w = round(h * scale), round(w * scale)
        x = TF.resize(x, [new_h, new_w], interpolation=_bicubic(), antialias=antialias)
    else:
        new_h, new_w = h, w
    pad_h, pad_w = size - new_h, size - new_w
    if pad_h or pad_w:
        x = TF.pad(x, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    return x


def center_crop_long_edge_tensor(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    return TF.center_crop(x, [min(h, w), min(h, w)])


def _lanczos(x: np.ndarray, a: float = 3.0) -> np.ndarray:
    return np.where(np.abs(x) < a, np.sinc(x) * np.sinc(x / a), 0.0)


@lru_cache(maxsize=32)
def _pil_lanczos_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """PIL's resampling weights (Resample.c precompute_coeffs) for LANCZOS as a dense
    [out, in] matrix: support widened by the downscale factor, weights normalised per row."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    m = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        xs = np.arange(lo, hi)
        wts = _lanczos((xs - center + 0.5) / filterscale)
        m[i, lo:hi] = wts / wts.sum()
    return torch.from_numpy(m)


def resize_lanczos(x: torch.Tensor, size: int) -> torch.Tensor:
    """Differentiable PIL-LANCZOS resize of a square-or-not [N, C, H, W] to size x size (a
    separable matrix product with PIL's own weights; PIL additionally rounds 8-bit images)."""
    h, w = x.shape[-2:]
    mh = _pil_lanczos_matrix(h, size).to(x.device, x.dtype)
    mw = _pil_lanczos_matrix(w, size).to(x.device, x.dtype)
    # PIL resizes horizontally first, then vertically; in float the order does not matter.
    return torch.einsum("oh,nchw,pw->ncop", mh, x, mw)


def crop_resize_lanczos_tensor(x: torch.Tensor, size: int) -> torch.Tensor:
    """Tensor twin of `crop_resize_lanczos` (DMD2's COCO protocol)."""
    return resize_lanczos(center_crop_long_edge_tensor(x), size).clamp(0, 1)  # as PIL clips
