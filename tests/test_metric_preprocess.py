"""Preprocessing: the PIL paths equal the references' own transforms; the tensor paths
(differentiable) have the same geometry and differ only by PIL's 8-bit rounding."""
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from evalsuite.metrics import preprocess as pp
from di_star.bench import refs as rc

MEAN = torch.tensor(pp.OPENAI_CLIP_MEAN)[:, None, None]
STD = torch.tensor(pp.OPENAI_CLIP_STD)[:, None, None]


@pytest.fixture(scope="module")
def images():
    return rc.sample_images(10)


def test_clip_pil_is_open_clip_and_openai_clip_transform(images):
    import clip.clip
    import open_clip
    oc = open_clip.image_transform(224, is_train=False)
    oa = clip.clip._transform(224)
    for im in images:
        ours = pp.clip_pil(im)
        assert torch.equal(ours, oc(im)) and torch.equal(ours, oa(im))


def test_hps_pil_is_hpsv2_preprocess_val(images):
    rc.import_hpsv2()  # first: hpsv2's package import needs the BPE redirect
    from hpsv2.src.open_clip.transform import image_transform
    ref = image_transform(224, is_train=False, resize_longest_max=True)
    for im in images:
        assert torch.equal(pp.hps_pil(im), ref(im)), im.size


def test_lanczos_matrix_is_pil_lanczos_in_float():
    rng = np.random.default_rng(0)
    for h, w in [(300, 500), (1024, 1024), (200, 180), (64, 64), (257, 257)]:
        a = rng.random((h, w)).astype(np.float32) * 255
        ref = np.asarray(Image.fromarray(a, mode="F").resize((256, 256), Image.LANCZOS))
        ours = pp.resize_lanczos(torch.from_numpy(a)[None, None].double(), 256)[0, 0].numpy()
        assert np.abs(ref - ours).max() < 1e-4  # grey levels (PIL computes in float32)


def _grey_levels(a, b):
    d = ((a * STD + MEAN) - (b * STD + MEAN)).abs() * 255
    return d.mean().item(), d.max().item()


def test_tensor_paths_differ_from_pil_paths_by_8_bit_rounding_only(images):
    """Measured on these images: 0.27-0.32 grey levels on average for the bicubic paths,
    0.36-0.40 for LANCZOS + bicubic; the largest single pixel is ~4 for downscales and ~10
    for a 3.5x upscale of noise (PIL clips the 8-bit result of each pass)."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    hf = CLIPImageProcessorPil()
    for im in images:
        x = TF.to_tensor(im.convert("RGB"))[None]
        pairs = {
            "clip": (pp.clip_pil(im), pp.clip_tensor(x)[0]),
            "hf": (torch.from_numpy(np.array(hf(images=[im])["pixel_values"][0])),
                   pp.clip_tensor(x, crop="hf")[0]),
            "dmd2": (pp.clip_pil(pp.crop_resize_lanczos(im.convert("RGB"), 256)),
                     pp.clip_tensor(pp.crop_resize_lanczos_tensor(x, 256))[0]),
        }
        for name, (a, b) in pairs.items():
            assert a.shape == b.shape == (3, 224, 224)
            mean, mx = _grey_levels(a, b)
            assert mean < 0.5 and mx < 12, (name, im.size, mean, mx)


def test_hf_crop_uses_floor_offsets():
    x = torch.arange(7.0).view(1, 1, 1, 7).expand(1, 1, 7, 7)
    assert pp.center_crop_hf(x, 4)[0, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0]  # floor(3/2) = 1
    assert TF.center_crop(x, [4, 4])[0, 0, 0].tolist() == [2.0, 3.0, 4.0, 5.0]  # round(1.5) = 2


def test_tensor_paths_are_differentiable():
    x = torch.rand(2, 3, 300, 200, requires_grad=True)
    y = pp.clip_tensor(pp.crop_resize_lanczos_tensor(x, 256)).sum() \
        + pp.resize_longest_and_pad(x, 224).sum()
    y.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
