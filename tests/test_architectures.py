"""The embedded architectures: full-size configs match the published models' sizes, and the
tiny SD3.5 / FLUX pipelines (three text encoders and joint attention; packed latents and a
guidance embedding) run through the harness like the real ones would."""
import numpy as np
import pytest
import torch

from evalsuite.generate import EvalRequest, initial_noise, pipeline_latents, run_eval
from evalsuite.models.architectures import (FLUX_DEV_TRANSFORMER, SD15_UNET, SD35_LARGE_TRANSFORMER, SDXL_UNET,
                                            T5_XXL, build_pipeline)
from evalsuite.models.loading import load_pipeline
from evalsuite.models.specs import MODELS


def _count(cls, **cfg) -> int:
    with torch.device("meta"):  # no memory, no random init; tied weights stay tied
        return sum(p.numel() for p in cls(**cfg).parameters())


@pytest.mark.parametrize("what, expected_billions", [
    # Published sizes: SDXL UNet 2.567B, SD1.5 UNet 0.860B, SD3.5 Large MMDiT 8.06B,
    # FLUX.1-dev transformer 11.90B, T5-XXL encoder 4.76B.
    ("sdxl_unet", 2.567), ("sd15_unet", 0.860), ("sd35_transformer", 8.06), ("flux_transformer", 11.90),
    ("t5_xxl", 4.76),
])
def test_full_size_configs_have_the_published_parameter_counts(what, expected_billions):
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    counts = {
        "sdxl_unet": lambda: _count(UNet2DConditionModel, **SDXL_UNET),
        "sd15_unet": lambda: _count(UNet2DConditionModel, **SD15_UNET),
        "sd35_transformer": lambda: _count(SD3Transformer2DModel, **SD35_LARGE_TRANSFORMER),
        "flux_transformer": lambda: _count(FluxTransformer2DModel, **FLUX_DEV_TRANSFORMER),
        "t5_xxl": lambda: _count(lambda **c: T5EncoderModel(T5Config(**c)), **T5_XXL),
    }
    n = counts[what]() / 1e9
    assert n == pytest.approx(expected_billions, rel=0.01), f"{what}: {n:.3f}B"


@pytest.mark.parametrize("model", ["tiny_sd35", "tiny_flux"])
def test_tiny_flow_models_generate_through_the_harness(model, tmp_path):
    torch.set_num_threads(1)
    run = run_eval(EvalRequest(model=model, bench="tiny", limit=3, out=tmp_path / "a"))
    from PIL import Image
    assert len(run.images) == 3
    assert {Image.open(run.store.root / p).size for p in run.images.path} == {(64, 64)}
    again = run_eval(EvalRequest(model=model, bench="tiny", limit=3, out=tmp_path / "b"))
    assert list(run.images.sha256) == list(again.images.sha256)  # seeded noise, eval-mode nets


def test_flux_noise_is_packed_as_flux_packs_its_own():
    """The harness draws (B, 16, H/8, W/8) noise per image and packs it into FLUX's 2x2-patch
    token layout: the images equal FLUX's own sampling with one generator per image seeded
    alike (it draws the same shape and packs it the same way). Unpacked noise does not run."""
    spec = MODELS.get("tiny_flux")
    pipe = load_pipeline(spec, torch.device("cpu"))
    noise = initial_noise([5, 9], spec.latent_shape())
    packed = pipeline_latents(pipe, noise)
    assert packed.shape == (2, 4 * 4, 16 * 4)
    # Token (i, j) of image b holds the 2x2 patch at rows 2i..2i+1, cols 2j..2j+1, channel-major.
    assert torch.equal(packed[1, 1 * 4 + 2].reshape(16, 2, 2), noise[1, :, 2:4, 4:6])
    kw = dict(prompt=["a cat", "a dog"], num_inference_steps=2, guidance_scale=3.5, height=64, width=64,
              output_type="np")
    own = pipe(**kw, generator=[torch.Generator().manual_seed(s) for s in (5, 9)]).images
    ours = pipe(**kw, latents=packed).images
    assert np.array_equal(own, ours)
    with pytest.raises(RuntimeError):
        pipe(prompt=["a cat", "a dog"], num_inference_steps=1, height=64, width=64, latents=noise)


def test_builds_are_seeded_and_in_eval_mode():
    a, b = build_pipeline("sd3", "tiny"), build_pipeline("sd3", "tiny")
    assert not a.text_encoder_3.training and not a.transformer.training
    sa, sb = a.transformer.state_dict(), b.transformer.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_random_builds_allocate_on_the_device_in_the_dtype(family):
    """Every parameter is created on the requested device in the requested dtype (the meta
    device stands in for a GPU): a random build never holds an fp32 host copy before a cast,
    which for full FLUX.1-dev was 68 GB of host memory. The default dtype is restored."""
    created = []
    hook = torch.nn.modules.module.register_module_parameter_registration_hook(
        lambda module, name, param: created.append((param.device.type, param.dtype)))
    try:
        pipe = build_pipeline(family, "tiny", dtype=torch.bfloat16, device="meta")
    finally:
        hook.remove()
    assert len(created) > 20 and set(created) == {("meta", torch.bfloat16)}
    tensors = [t for m in pipe.components.values() if isinstance(m, torch.nn.Module)
               for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()]
    assert {(t.device.type, t.dtype) for t in tensors} == {("meta", torch.bfloat16)}
    assert torch.get_default_dtype() == torch.float32
    cpu = build_pipeline(family, "tiny", dtype=torch.bfloat16)
    assert {p.dtype for m in cpu.components.values() if isinstance(m, torch.nn.Module)
            for p in m.parameters()} == {torch.bfloat16}
