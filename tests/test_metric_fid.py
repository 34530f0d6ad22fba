"""FID / KID parity with clean-fid 0.1.35, on CPU, offline.

What exactly is compared: clean-fid's public `compute_fid(fdir1, fdir2, mode="clean",
custom_feat_extractor=...)` (and `compute_kid`, whose extractor builder is monkeypatched because it
takes no custom extractor) against ours on the same two folders, with the same small seeded random
conv net standing in for Inception (the real torchscript cannot be downloaded here). DMD2's
protocol is passed to clean-fid the way DMD2 passes it: as `custom_image_tranform` (transcribed
from coco_evaluator.resize_and_center_crop). Our Inception wrapper is checked against clean-fid's
InceptionV3W on a small torchscript file with the same layout.
"""
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as transforms
from PIL import Image

from distar.core.errors import DistarError, WeightsMissingError
from di_star.bench import refs as rc
from evalsuite.metrics.fid import (FID, KID, InceptionV3Features, extract_features,
                                   feature_statistics, frechet_distance,
                                   kernel_inception_distance, list_images)
from store_helpers import save_inception_standin

TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def dmd2_transform(image_np, resize_size=256):
    """DMD2 coco_evaluator.compute_fid's resize_and_center_crop (patch_fid=False)."""
    image_pil = Image.fromarray(image_np)
    image_pil = transforms.functional.center_crop(image_pil, min(image_pil.size))
    if resize_size is not None:
        image_pil = image_pil.resize((resize_size, resize_size), Image.LANCZOS)
    return np.array(image_pil)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid")
    gen, ref = root / "gen", root / "ref"
    (ref / "sub").mkdir(parents=True)
    gen.mkdir()
    rng = np.random.default_rng(0)
    for i, im in enumerate(rc.sample_images(20, seed=1)):
        im.save(gen / f"{i:03d}.png")
    for i, im in enumerate(rc.sample_images(24, seed=2)):
        # a brighter, smoother set, in jpg and png, one level down too
        arr = np.clip(np.asarray(im.convert("RGB"), np.float32) * 0.7 + 60
                      + rng.normal(0, 3, (im.size[1], im.size[0], 3)), 0, 255).astype(np.uint8)
        target = ref / "sub" if i % 3 == 0 else ref
        Image.fromarray(arr).save(target / f"r{i:03d}.{'jpg' if i % 2 else 'png'}")
    return gen, ref


def clean_fid_value(gen, ref, ext, transform):
    from cleanfid import fid
    return fid.compute_fid(str(gen), str(ref), mode="clean", custom_feat_extractor=ext,
                           custom_image_tranform=transform, num_workers=0, batch_size=8,
                           device=torch.device("cpu"), verbose=False, use_dataparallel=False)


@pytest.mark.parametrize("protocol,transform", [("dmd2-256", dmd2_transform), ("clean", None)])
def test_fid_matches_clean_fid(folders, tmp_path, protocol, transform):
    gen, ref = folders
    ext = rc.TinyExtractor()
    expected = clean_fid_value(gen, ref, ext, transform)
    ours = FID.from_pretrained(reference_dir=str(ref), protocol=protocol, extractor=ext, device="cpu",
                               num_workers=0, batch_size=5, cache_dir=str(tmp_path))
    got = ours.compute(list_images(gen))
    assert expected > 0.01
    assert abs(got - expected) < TOL * max(1.0, abs(expected)), (got, expected)
    assert ours.reference.n == 24 and protocol in ours.info.key
    assert not ours.info.higher_is_better


def test_kid_matches_clean_fid(folders, tmp_path, monkeypatch):
    from cleanfid import fid
    gen, ref = folders
    ext = rc.TinyExtractor()
    monkeypatch.setattr(fid, "build_feature_extractor", lambda *a, **k: ext)
    np.random.seed(3)
    expected = fid.compute_kid(str(ref), str(gen), mode="clean", num_workers=0, batch_size=8,
                               device=torch.device("cpu"), verbose=False)
    ours = KID.from_pretrained(reference_dir=str(ref), protocol="clean", extractor=ext, device="cpu",
                               num_workers=0, cache_dir=str(tmp_path), seed=3)
    got = ours.compute(list_images(gen))
    assert abs(got - expected) < 1e-6 * max(1.0, abs(expected)) and abs(expected) > 1e-4


def test_kid_subset_order_is_clean_fids_reference_statistics_call(folders, tmp_path, monkeypatch):
    """KID draws each subset pair in an order: clean-fid's kernel_distance(feats1, feats2) draws
    from feats2 first. Ours equals `compute_kid(gen_dir, dataset_name=..., dataset_split=
    'custom')` (reference statistics: kernel_distance(ref, gen)) after np.random.seed(seed),
    i.e. also `compute_kid(ref_dir, gen_dir)`, but NOT `compute_kid(gen_dir, ref_dir)`, which
    draws the other way round (same expectation, another value)."""
    from cleanfid import fid
    gen, ref = folders
    ext = rc.TinyExtractor()
    monkeypatch.setattr(fid, "build_feature_extractor", lambda *a, **k: ext)
    ours = KID.from_pretrained(reference_dir=str(ref), protocol="clean", extractor=ext, device="cpu",
                               num_workers=0, cache_dir=str(tmp_path), seed=5)
    ref_feats = ours.reference.feats
    monkeypatch.setattr(fid, "get_reference_statistics",
                        lambda *a, **k: ref_feats)  # what make_custom_stats would have stored
    kw = dict(mode="clean", num_workers=0, batch_size=8, device=torch.device("cpu"),
              verbose=False)
    np.random.seed(5)
    stats_call = fid.compute_kid(str(gen), dataset_name="myref", dataset_res="na",
                                 dataset_split="custom", **kw)
    np.random.seed(5)
    gen_first = fid.compute_kid(str(gen), str(ref), **kw)
    got = ours.compute(list_images(gen))
    assert abs(got - stats_call) < 1e-6 * max(1.0, abs(stats_call))
    assert abs(got - gen_first) > 1e-3 * abs(stats_call)


def test_statistics_and_distance_are_clean_fids(folders):
    from cleanfid.fid import fid_from_feats
    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(50, 6)), rng.normal(0.3, 1.2, size=(40, 6))
    np.testing.assert_allclose(frechet_distance(*feature_statistics(f1), *feature_statistics(f2)),
                               fid_from_feats(f1, f2), rtol=1e-10)
    assert frechet_distance(*feature_statistics(f1), *feature_statistics(f1)) < 1e-6
    with pytest.raises(DistarError):
        feature_statistics(f1[:1])
    # KID is seeded: same seed same value, another seed another value.
    a, b = kernel_inception_distance(f1, f2, seed=0), kernel_inception_distance(f1, f2, seed=0)
    assert a == b and a != kernel_inception_distance(f1, f2, num_subsets=10, max_subset_size=20,
                                                      seed=1)


def test_reference_statistics_are_cached_under_a_key_naming_their_inputs(folders, tmp_path):
    gen, ref = folders
    ext = rc.TinyExtractor()
    first = FID.from_pretrained(reference_dir=str(ref), extractor=ext, device="cpu", num_workers=0,
                                cache_dir=str(tmp_path))
    assert ext.seen == 24
    again = FID.from_pretrained(reference_dir=str(ref), extractor=ext, device="cpu", num_workers=0,
                                cache_dir=str(tmp_path))
    assert ext.seen == 24  # loaded from the .npz, not recomputed
    np.testing.assert_array_equal(first.reference.sigma, again.reference.sigma)
    files = list((tmp_path / "fid_refs").iterdir())
    assert [f.suffix for f in files] == [".npz"]  # no temp file left behind
    other = FID.from_pretrained(reference_dir=str(ref), protocol="clean", extractor=ext, device="cpu",
                                num_workers=0, cache_dir=str(tmp_path))
    subset = FID.from_pretrained(reference_dir=str(ref), max_reference_images=10, extractor=ext, device="cpu",
                                 num_workers=0, cache_dir=str(tmp_path))
    assert len({first.reference.key, other.reference.key, subset.reference.key}) == 3
    assert first.reference.key in first.info.key


def test_features_accept_paths_pil_and_arrays_in_order(folders):
    gen, _ = folders
    ext = rc.TinyExtractor()
    paths = list_images(gen)[:4]
    pils = [Image.open(p) for p in paths]
    arrays = [np.array(Image.open(p).convert("RGB")) for p in paths]
    a = extract_features(paths, ext, batch_size=3)
    close = dict(rtol=0, atol=1e-5)  # batch size changes float summation order only
    np.testing.assert_allclose(a, extract_features(pils, ext, batch_size=2), **close)
    np.testing.assert_allclose(a, extract_features(arrays, ext, batch_size=4), **close)
    np.testing.assert_allclose(a[::-1], extract_features(paths[::-1], ext, batch_size=1), **close)


def test_inception_wrapper_matches_clean_fid_wrapper(tmp_path):
    """Our InceptionV3Features and clean-fid's InceptionV3W on one torchscript file with the
    same layout as inception-2015-12-05.pt (a `layers` module mapping normalised input to
    2048 features)."""
    from cleanfid.inception_torchscript import InceptionV3W

    class Layers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2048, 37, stride=37)

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))

    torch.manual_seed(0)
    save_inception_standin(tmp_path, Layers())
    x = torch.rand(2, 3, 299, 299) * 255
    ref = InceptionV3W(str(tmp_path), download=False)(x)
    ours = InceptionV3Features(weights_path=str(tmp_path), device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref, rtol=0, atol=0)
    assert "sha256:" in ours.name
    # The full digest is recorded, checked against nothing (NVIDIA publishes none) and said so.
    assert ours.provenance["sha256"] == hashlib.sha256(
        (tmp_path / "inception-2015-12-05.pt").read_bytes()).hexdigest()
    assert ours.provenance["verified"] == "no published sha256"


def test_missing_inception_offline_is_a_clear_error(monkeypatch):
    """Also with a file planted in /tmp, clean-fid's world-writable download place: it is
    never read (a planted TorchScript file runs its own code when loaded)."""
    planted = Path("/tmp/inception-2015-12-05.pt")
    ours_to_remove = not planted.exists()
    if ours_to_remove:
        planted.write_bytes(b"planted")
    try:
        monkeypatch.delenv("DISTAR_INCEPTION_PATH", raising=False)
        assert os.environ.get("HF_HUB_OFFLINE") == "1"
        with pytest.raises(WeightsMissingError) as e:
            InceptionV3Features(device="cpu")
    finally:
        if ours_to_remove:
            planted.unlink(missing_ok=True)
    assert "inception-2015-12-05.pt" in str(e.value) and "DISTAR_INCEPTION_PATH" in str(e.value)
    assert "/tmp/inception" not in str(e.value)


def test_fid_without_reference_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DISTAR_FID_REFERENCE_DIR", raising=False)
    with pytest.raises(DistarError, match="reference_dir"):
        FID.from_pretrained(extractor=rc.TinyExtractor(), device="cpu")


class _Foreign(torch.nn.Module):
    """A TorchScript module that is not Inception: no `layers`, or layers of the wrong width."""

    def __init__(self, width: int = 0):
        super().__init__()
        if width:
            self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                              torch.nn.Linear(3, width))
        self.proj = torch.nn.Linear(3, 3)

    def forward(self, x):
        return self.proj(x)


@pytest.mark.parametrize("width, needle", [(0, "no `layers`"), (1000, "not 2048 each")])
def test_a_foreign_torchscript_inception_is_one_error_naming_the_file(tmp_path, width, needle):
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(_Foreign(width)).save(str(path))
    with pytest.raises(DistarError) as e:
        with torch.no_grad():
            InceptionV3Features(weights_path=str(path), device="cpu")(
                torch.zeros(2, 3, 299, 299))
    assert str(path) in str(e.value) and needle in str(e.value)
    assert "not clean-fid's InceptionV3" in str(e.value)
    path.write_bytes(b"damaged")  # not a TorchScript archive at all
    with pytest.raises(DistarError, match="is not a readable TorchScript"):
        InceptionV3Features(weights_path=str(path), device="cpu")


def test_fid_in_half_precision_is_refused_not_ignored():
    for dtype in ("float16", "bf16"):
        with pytest.raises(DistarError, match="'fid' computes in fp32 only"):
            FID.from_pretrained(extractor=rc.TinyExtractor(), device="cpu", dtype=dtype)
