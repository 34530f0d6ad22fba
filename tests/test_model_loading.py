"""Recipes that swap the base pipeline's UNet (DMD2: a bare .bin state dict; SDXL-DPO: a
diffusers `unet` subfolder), exercised on local copies of the tiny SDXL pipeline."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from evalsuite.generate import generate_batch
from evalsuite.models.architectures import tiny_pipeline_dir
from evalsuite.models.loading import load_pipeline
from evalsuite.models.specs import ComponentSource, MODELS


def _images(spec) -> np.ndarray:
    torch.set_num_threads(1)
    pipe = load_pipeline(spec, torch.device("cpu"))
    return np.stack([np.asarray(im) for im in generate_batch(pipe, spec, ["a cat", "a dog"], [1, 2],
                                                             torch.device("cpu"))])


@pytest.fixture(scope="module")
def base():
    """tiny_sdxl as if it were a hub pipeline (a local folder), and its images."""
    spec = replace(MODELS.get("tiny_sdxl"), weights="pretrained", repo=str(tiny_pipeline_dir("sdxl")))
    return spec, _images(spec)


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_bare_state_dict_unet_override(base, tmp_path, fmt):
    """DMD2's recipe: the UNet comes from a state-dict file on the base pipeline's UNet config,
    read with weights_only (.bin) or safetensors. The same weights give the same pixels; other
    weights give other pixels."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    spec, images = base
    unet = UNet2DConditionModel.from_pretrained(tiny_pipeline_dir("sdxl"), subfolder="unet")
    state = {k: v.clone().half() for k, v in unet.state_dict().items()}  # DMD2 ships fp16
    path = tmp_path / f"unet.{fmt}"
    torch.save(state, path) if fmt == "bin" else save_file(state, str(path))
    same = _images(replace(spec, unet=ComponentSource(str(tmp_path), filename=path.name)))
    assert np.abs(same.astype(int) - images.astype(int)).max() <= 2  # fp16 rounding of the weights
    state["conv_out.weight"] = torch.randn_like(state["conv_out.weight"])
    torch.save(state, path) if fmt == "bin" else save_file(state, str(path))
    load_pipeline.cache_clear()
    other = _images(replace(spec, unet=ComponentSource(str(tmp_path), filename=path.name), description="x"))
    assert np.abs(other.astype(int) - images.astype(int)).max() > 10


def test_pickled_objects_in_a_bin_are_refused(base, tmp_path):
    """weights_only=True: a .bin holding anything but tensors does not load."""
    spec, _ = base
    torch.save({"conv_out.weight": torch.zeros(1), "evil": object()}, tmp_path / "unet.bin")
    with pytest.raises(Exception, match="[Ww]eights only|weights_only|Unsupported global"):
        load_pipeline(replace(spec, unet=ComponentSource(str(tmp_path), filename="unet.bin"), description="y"),
                      torch.device("cpu"))


def test_subfolder_unet_override(base, tmp_path):
    """SDXL-DPO's recipe: a diffusers UNet folder replaces the base UNet."""
    from diffusers import UNet2DConditionModel

    spec, images = base
    unet = UNet2DConditionModel.from_pretrained(tiny_pipeline_dir("sdxl"), subfolder="unet")
    unet.save_pretrained(tmp_path / "unet")
    same = _images(replace(spec, unet=ComponentSource(str(tmp_path), subfolder="unet")))
    assert np.array_equal(same, images)


def test_variant_only_repo_loads_on_cpu(tmp_path):
    """Repos like XDG-XHS/diff_instruct_1step ship only `*.fp16.safetensors`: the recipe's
    variant is asked for on every device (CPU too, cast to fp32 on load), or nothing loads."""
    from evalsuite.models.architectures import build_pipeline

    build_pipeline("sdxl", "tiny").save_pretrained(tmp_path / "repo", variant="fp16")
    assert not list((tmp_path / "repo" / "unet").glob("diffusion_pytorch_model.safetensors"))
    spec = replace(MODELS.get("tiny_sdxl"), weights="pretrained", repo=str(tmp_path / "repo"), variant="fp16")
    pipe = load_pipeline(spec, torch.device("cpu"))
    assert pipe.unet.dtype == torch.float32
    ours = _images(spec)
    base = _images(replace(MODELS.get("tiny_sdxl"), weights="pretrained", repo=str(tiny_pipeline_dir("sdxl"))))
    assert np.abs(ours.astype(int) - base.astype(int)).max() <= 2  # the same weights, through fp16
