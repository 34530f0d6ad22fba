"""FID and KID with clean-fid's 'clean' protocol, as separate pure steps:
images -> features (`extract_features`) -> statistics (`feature_statistics`) -> distance
(`frechet_distance`, `kernel_inception_distance`).

Reference: clean-fid 0.1.35 (Parmar et al. 2022). 'clean' mode: each image as an RGB uint8 array,
an optional custom transform, then every channel resized separately as a float32 PIL image with
BICUBIC to 299 x 299 (no uint8 rounding), clipped to [0, 255], fed to the TF-ported InceptionV3
torchscript (`inception-2015-12-05.pt`), pool3 features (2048).

Resize protocol (`protocol=`), applied to generated AND reference images before clean-fid's own
resize, and part of every key:
- 'dmd2-256' (default): centre crop on the long edge, PIL LANCZOS to 256 x 256 -- DMD2's COCO-30K
  protocol (coco_evaluator.resize_and_center_crop, from GigaGAN);
- 'clean': nothing extra (clean-fid's defaults).

Reference statistics come from a folder of real images (e.g. COCO val2014), are computed once and
cached as .npz (atomic write) under a key naming the mode, sizes, protocol, feature extractor
(with its file hash) and the folder's file list with sizes (`content_hash=True` hashes the bytes).
KID is stored raw (multiply by 1e3 for the usual table unit); FID/KID go to `set_scores`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from glob import glob
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from distar.core import atomic
from distar.core.errors import DistarError, WeightsMissingError
from evalsuite.metrics.loading import provenance, sha256_file
from evalsuite.metrics.preprocess import crop_resize_lanczos
from evalsuite.metrics.base import MetricInfo, require_fp32
from evalsuite.models import resolve_device

CLEAN_SIZE = 299
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                 + INCEPTION_FILE)
IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp",
                    "JPEG", "JPG", "PNG")  # clean-fid's list, minus .npy


# Protocols -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    name: str
    crop_long_edge: bool
    lanczos_size: int | None

    def transform(self, arr: np.ndarray) -> np.ndarray:
        """clean-fid `custom_image_tranform` semantics: uint8 HxWx3 in, uint8 HxWx3 out."""
        if not self.crop_long_edge and self.lanczos_size is None:
            return arr
        img = Image.fromarray(arr)
        if self.crop_long_edge and self.lanczos_size:
            img = crop_resize_lanczos(img, self.lanczos_size)
        elif self.crop_long_edge:
            img = img.crop(_centre_square(img.size))
        else:
            img = img.resize((self.lanczos_size, self.lanczos_size), Image.LANCZOS)
        return np.array(img)

    def describe(self) -> str:
        steps = []
        if self.crop_long_edge:
            steps.append("centre crop long edge")
        if self.lanczos_size:
            steps.append(f"PIL LANCZOS {self.lanczos_size}")
        steps.append(f"clean-fid clean: per-channel float PIL BICUBIC {CLEAN_SIZE}")
        return f"{self.name}: " + ", ".join(steps)


def _centre_square(size):
    w, h = size
    s = min(w, h)
    left, top = int(round((w - s) / 2.0)), int(round((h - s) / 2.0))
    return (left, top, left + s, top + s)


PROTOCOLS = {"dmd2-256": Protocol("dmd2-256", True, 256), "clean": Protocol("clean", False, None)}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise DistarError(f"Unknown FID protocol '{name}'. Choose one of: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


# Features ------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _clean_resizer():
    from cleanfid.resize import build_resizer
    return build_resizer("clean")


def load_rgb(item) -> np.ndarray:
    """A path, PIL image or uint8 array as an RGB uint8 HxWx3 array (clean-fid's loader)."""
    if isinstance(item, np.ndarray):
        return item
    img = item if isinstance(item, Image.Image) else Image.open(item)
    return np.array(img.convert("RGB"))


def prepare(item, protocol: Protocol) -> torch.Tensor:
    """One image as the [3, 299, 299] float tensor in [0, 255] the extractor takes."""
    arr = _clean_resizer()(protocol.transform(load_rgb(item)))
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class _Prepared(torch.utils.data.Dataset):
    def __init__(self, items: Sequence, protocol: Protocol):
        self.items, self.protocol = list(items), protocol

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return prepare(self.items[i], self.protocol)


def extract_features(images: Sequence, extractor: Callable[[torch.Tensor], torch.Tensor], *,
                     protocol: Protocol | str = "dmd2-256", batch_size: int = 32,
                     num_workers: int = 0, device: str | torch.device = "cpu",
                     on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """[N, D] features of images (paths, PIL images or uint8 arrays), in order. The resizing
    runs in `num_workers` DataLoader processes, as in clean-fid."""
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    loader = torch.utils.data.DataLoader(_Prepared(images, protocol), batch_size=batch_size,
                                         shuffle=False, num_workers=num_workers)
    feats = []
    with torch.no_grad():
        for batch in loader:
            feats.append(extractor(batch.to(device)).detach().cpu().numpy())
            if on_batch:
                on_batch(len(batch))
    if not feats:
        raise DistarError("no images to compute features of")
    return np.concatenate(feats)


def feature_statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of [N, D] features, as clean-fid computes them (float64)."""
    if len(feats) < 2:
        raise DistarError(f"FID needs at least 2 images, got {len(feats)}")
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)) (Heusel et al.), computed as clean-fid's
    `frechet_distance` does (scipy's sqrtm of S1 S2; if that is not finite, of (S1 + eps I)
    (S2 + eps I)), with one difference: an imaginary part of the square root is dropped where
    clean-fid raises when it exceeds 1e-3. It appears when a covariance is singular (a collapsed
    generator: the toy digits world, tiny test sets), and the distance is still finite there.
    The one Frechet distance of the project: FID and the worlds' own FDs (di_star's plug-ins) use it."""
    import warnings

    from scipy import linalg
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products warn; the real part is still right
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real))


def kernel_inception_distance(feats1: np.ndarray, feats2: np.ndarray, num_subsets: int = 100,
                              max_subset_size: int = 1000, seed: int = 0) -> float:
    """clean-fid's `kernel_distance` (unbiased MMD^2, cubic polynomial kernel, averaged over
    random subsets) with its subsets drawn from a seeded RandomState instead of numpy's global
    state: equal to clean-fid after `np.random.seed(seed)`."""
    rng = np.random.RandomState(seed)
    n = feats1.shape[1]
    m = min(min(feats1.shape[0], feats2.shape[0]), max_subset_size)
    t = 0
    for _ in range(num_subsets):
        x = feats2[rng.choice(feats2.shape[0], m, replace=False)]
        y = feats1[rng.choice(feats1.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)


# Feature extractor -----------------------------------------------------------------------------
class InceptionV3Features(torch.nn.Module):
    """clean-fid's InceptionV3W (mode 'clean': resize_inside=False) on a local torchscript file:
    input [N, 3, 299, 299] in [0, 255] -> [N, 2048].

    The file is read only from where the user put it: weights_path, $DISTAR_INCEPTION_PATH, or
    the distar cache (<cache>/inception-2015-12-05.pt); never from a shared place such as /tmp,
    where anyone can plant a TorchScript file. When none exists and HF_HUB_OFFLINE /
    DISTAR_OFFLINE are unset, it is downloaded from NVIDIA (as clean-fid does) into the distar
    cache. Its full sha256 is recorded (`provenance`) before torch.jit.load reads it; NVIDIA
    publishes no digest for it to check against."""

    def __init__(self, weights_path: str | None = None, device: str = "cpu"):
        super().__init__()
        path = self.resolve(weights_path)
        self.provenance = provenance(path, "InceptionV3 (clean-fid)")  # before the file is read
        try:
            self.base = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as e:  # not a TorchScript archive, truncated, wrong version, ...
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise DistarError(f"{path} is not a readable TorchScript {INCEPTION_FILE} "
                              f"({type(e).__name__}: {first}). Fix: download {INCEPTION_URL} "
                              f"again and point weights_path= or DISTAR_INCEPTION_PATH at it."
                              ) from None
        self.layers = getattr(self.base, "layers", None)
        if not isinstance(self.layers, torch.nn.Module):  # a foreign TorchScript module
            raise self._foreign(path, "it has no `layers` submodule")
        self.name = f"InceptionV3 {INCEPTION_FILE} sha256:{self.provenance['sha256'][:12]}"
        self.path = path
        self.to(resolve_device(device))

    @staticmethod
    def resolve(weights_path: str | None) -> Path:
        from distar.core.paths import cache_dir
        explicit = weights_path or os.environ.get("DISTAR_INCEPTION_PATH")
        if explicit:
            p = Path(explicit).expanduser()
            p = p / INCEPTION_FILE if p.is_dir() else p
            if not p.is_file():
                raise WeightsMissingError("InceptionV3 (clean-fid)", str(p),
                                          "point weights_path= or DISTAR_INCEPTION_PATH at "
                                          f"an existing {INCEPTION_FILE}")
            return p
        cached = cache_dir() / INCEPTION_FILE
        if cached.is_file():
            return cached
        offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
                      for v in ("HF_HUB_OFFLINE", "DISTAR_OFFLINE"))
        from evalsuite.hub import host_reachable
        if not offline and host_reachable("nvlabs-fi-cdn.nvidia.com"):
            from cleanfid.downloads_helper import check_download_inception
            cached.parent.mkdir(parents=True, exist_ok=True)
            return Path(check_download_inception(fpath=str(cached.parent)))
        raise WeightsMissingError(
            "InceptionV3 (clean-fid)", INCEPTION_FILE,
            f"download {INCEPTION_URL} where the network is reachable and pass weights_path= "
            f"or set DISTAR_INCEPTION_PATH=/path/to/{INCEPTION_FILE} (or put it in {cached})")

    @staticmethod
    def _foreign(path: Path, why: str) -> DistarError:
        return DistarError(f"{path} is a TorchScript file but not clean-fid's InceptionV3 "
                           f"{INCEPTION_FILE} ({why}). Fix: download {INCEPTION_URL} again and "
                           f"point weights_path= or DISTAR_INCEPTION_PATH at it.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2:] != (CLEAN_SIZE, CLEAN_SIZE):
            raise ValueError(f"expected {CLEAN_SIZE}x{CLEAN_SIZE} inputs, got {tuple(x.shape)}")
        try:
            out = self.layers.forward((x - 128) / 128)
        except Exception as e:  # a module of another architecture in the right file name
            raise self._foreign(self.path, f"{type(e).__name__}: "
                                f"{(str(e).strip().splitlines() or [''])[0][:200]}") from None
        if out.numel() != x.shape[0] * 2048:
            raise self._foreign(self.path, f"it gives {tuple(out.shape)} features for "
                                f"{x.shape[0]} images, not 2048 each")
        return out.reshape(x.shape[0], 2048)


# Reference statistics ---------------------------------------------------------------------------
@dataclass
class ReferenceStats:
    mu: np.ndarray
    sigma: np.ndarray
    feats: np.ndarray | None  # kept for KID
    key: str                  # names everything that changes the numbers
    n: int
    description: dict


def list_images(folder: str | Path) -> list[str]:
    """clean-fid's folder listing: every image file below `folder`, sorted."""
    folder = str(folder)
    return sorted({f for ext in IMAGE_EXTENSIONS
                   for f in glob(os.path.join(folder, f"**/*.{ext}"), recursive=True)})


def reference_key(files: Sequence[str], root: str | Path, protocol: Protocol,
                  extractor_name: str, content_hash: bool = False) -> tuple[str, dict]:
    """The cache key: mode, sizes, protocol, extractor (with its file hash) and the file list
    (relative names and sizes, or the bytes with content_hash=True)."""
    h = hashlib.sha256()
    for f in files:
        rel = os.path.relpath(f, root)
        h.update(f"{rel}|{os.path.getsize(f)}\n".encode())
        if content_hash:
            h.update(sha256_file(f).encode())
    desc = {"mode": "clean", "size": CLEAN_SIZE, "protocol": protocol.describe(),
            "extractor": extractor_name, "n_files": len(files),
            "files_sha256": h.hexdigest(), "content_hash": content_hash}
    key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]
    return key, desc


def reference_statistics(folder: str | Path, extractor, *, protocol: Protocol | str = "dmd2-256",
                         cache_dir: str | Path | None = None, max_images: int | None = None,
                         content_hash: bool = False, batch_size: int = 32, num_workers: int = 0,
                         device: str | torch.device = "cpu",
                         on_batch: Callable[[int], None] | None = None) -> ReferenceStats:
    """Statistics (and features, for KID) of a folder of real images, computed once and cached
    under <cache_dir>/fid_refs/<key>.npz."""
    from distar.core.paths import cache_dir as default_cache
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    files = list_images(folder)[:max_images]
    if not files:
        raise DistarError(f"no images found under {folder} (extensions: "
                          f"{', '.join(IMAGE_EXTENSIONS)})")
    name = getattr(extractor, "name", None)
    if not name:
        raise ValueError("the feature extractor needs a `name` (it is part of the cache key)")
    key, desc = reference_key(files, folder, protocol, name, content_hash)
    path = Path(cache_dir or default_cache()) / "fid_refs" / f"{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return ReferenceStats(z["mu"], z["sigma"], z["feats"], key, int(len(z["feats"])),
                                  json.loads(str(z["description"])))
    feats = extract_features(files, extractor, protocol=protocol, batch_size=batch_size,
                             num_workers=num_workers, device=device, on_batch=on_batch)
    mu, sigma = feature_statistics(feats)
    buf = io.BytesIO()
    np.savez(buf, mu=mu, sigma=sigma, feats=feats, description=json.dumps(desc, sort_keys=True))
    atomic.write_bytes(path, buf.getvalue())  # a concurrent reader sees no file or the whole one
    return ReferenceStats(mu, sigma, feats, key, len(feats), desc)


def load_reference_npz(path: str | Path) -> ReferenceStats:
    """Precomputed statistics: an .npz with mu and sigma (and feats for KID)."""
    path = Path(path)
    with np.load(path) as z:
        feats = z["feats"] if "feats" in z else None
        desc = json.loads(str(z["description"])) if "description" in z else {"file": str(path)}
        return ReferenceStats(z["mu"], z["sigma"], feats, f"npz:{sha256_file(path)[:16]}",
                              len(feats) if feats is not None else -1, desc)


# Set metrics ----------------------------------------------------------------------------------
class FID:
    """FID of an image set against reference statistics. `compute(images) -> float`.
    `FID.from_pretrained(...)` loads Inception and the reference; the constructor takes a
    feature extractor (with a `name`) and ReferenceStats already built."""

    metric = "fid"
    fp32_only = True  # Inception runs in fp32: a bf16 / fp16 request is refused, not ignored
    decimals = 2

    def __init__(self, extractor, reference: ReferenceStats, protocol: str | Protocol = "dmd2-256",
                 device: str = "cpu", batch_size: int = 32, num_workers: int | None = None):
        self.device = resolve_device(device)
        self.protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
        self.batch_size = batch_size
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
        self.extractor, self.reference = extractor, reference
        self.info = MetricInfo(
            name=self.metric, version=f"{self._version()} ref={self.reference.key}",
            backbone=self.extractor.name, preprocessing=self.protocol.describe(),
            higher_is_better=False, label=self.metric.upper(), decimals=self.decimals)
        self.provenance = {"reference": self.reference.description,
                           "inception": getattr(self.extractor, "provenance", "injected")}

    def _version(self) -> str:
        return "FID clean-fid clean"

    @classmethod
    def hub_needs(cls, name: str, options: dict) -> list:
        """What from_pretrained reads from outside (evalsuite.needs): Inception's weights, a
        file outside the hub (preflight's own check, _fid, also asks for the references)."""
        from evalsuite.needs import HubNeed
        return [HubNeed(f"{name}: InceptionV3 weights", None, (INCEPTION_FILE,), (INCEPTION_FILE,),
                        env_var="DISTAR_INCEPTION_PATH", url=INCEPTION_URL)]

    @classmethod
    def from_pretrained(cls, reference_dir: str | None = None, reference_stats: str | None = None,
                        protocol: str = "dmd2-256", max_reference_images: int | None = None,
                        content_hash: bool = False, weights_path: str | None = None,
                        device: str = "auto", batch_size: int = 32,
                        num_workers: int | None = None, cache_dir: str | None = None,
                        extractor=None, dtype: str = "fp32", **options) -> "FID":
        """Options: reference_dir (folder of real images; env DISTAR_FID_REFERENCE_DIR) or
        reference_stats (.npz with mu, sigma[, feats]); protocol ('dmd2-256' | 'clean');
        max_reference_images; content_hash (False); weights_path (Inception torchscript; env
        DISTAR_INCEPTION_PATH); device ('auto'); batch_size (32); num_workers (resize processes,
        default min(4, cpus)); cache_dir (default the distar cache); extractor (an injected
        feature extractor with a `name`, for tests); dtype (taken with the shared options;
        Inception runs in fp32, so anything else is refused); the subclass's own options
        (KID's)."""
        require_fp32(cls.metric, dtype)
        device = resolve_device(device)
        protocol = get_protocol(protocol)
        num_workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
        extractor = extractor or InceptionV3Features(weights_path, device=str(device))
        reference_dir = reference_dir or os.environ.get("DISTAR_FID_REFERENCE_DIR")
        if reference_stats:
            reference = load_reference_npz(reference_stats)
        elif reference_dir:
            reference = reference_statistics(
                reference_dir, extractor, protocol=protocol, cache_dir=cache_dir,
                max_images=max_reference_images, content_hash=content_hash,
                batch_size=batch_size, num_workers=num_workers, device=device)
        else:
            raise DistarError(f"{cls.metric.upper()} needs real images to compare with: pass "
                              "reference_dir=FOLDER (e.g. COCO val2014 images) or "
                              "reference_stats=FILE.npz, or set DISTAR_FID_REFERENCE_DIR.")
        return cls(extractor, reference, protocol, device, batch_size, num_workers, **options)

    def features(self, images: Sequence, on_batch=None) -> np.ndarray:
        return extract_features(images, self.extractor, protocol=self.protocol,
                                batch_size=self.batch_size, num_workers=self.num_workers,
                                device=self.device, on_batch=on_batch)

    def from_features(self, feats: np.ndarray) -> float:
        mu, sigma = feature_statistics(feats)
        return frechet_distance(mu, sigma, self.reference.mu, self.reference.sigma)

    def compute(self, images: Sequence, on_batch=None) -> float:
        return self.from_features(self.features(images, on_batch))


class KID(FID):
    """KID (raw; x1e3 is the usual table unit) against the reference features, clean-fid's
    estimator with seeded subsets. Extra options: num_subsets (100), max_subset_size (1000),
    seed (0)."""

    metric = "kid"
    decimals = 4

    def __init__(self, extractor, reference: ReferenceStats, protocol: str | Protocol = "dmd2-256",
                 device: str = "cpu", batch_size: int = 32, num_workers: int | None = None,
                 num_subsets: int = 100, max_subset_size: int = 1000, seed: int = 0):
        if reference.feats is None:
            raise DistarError("KID needs reference features; the reference .npz has only "
                              "mu/sigma. Use reference_dir= instead.")
        self.num_subsets, self.max_subset_size, self.seed = num_subsets, max_subset_size, seed
        super().__init__(extractor, reference, protocol, device, batch_size, num_workers)

    def _version(self) -> str:
        return (f"KID clean-fid clean subsets={self.num_subsets}x{self.max_subset_size} "
                f"seed={self.seed}")

    def from_features(self, feats: np.ndarray) -> float:
        # clean-fid's compute_kid(fdir, dataset stats) order: kernel_distance(ref, generated).
        return kernel_inception_distance(self.reference.feats, feats, self.num_subsets,
                                         self.max_subset_size, self.seed)
