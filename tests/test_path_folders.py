"""`path:DIR` on folders built outside the project (issue 24): a DC-autoencoder (Sana) VAE
scale factor as the pipeline computes it, an SDXL folder without text_encoder_2, an
fp16-variant-only folder, local-folder errors without a download hint, the first image's size
checked, prediction_type shown and FLUX guidance without a guidance embedding shown as ignored.
Every pipeline is built here by diffusers directly (tiny configs, random weights)."""
import json
import shutil

import pytest
import torch
from PIL import Image

from distar.core.errors import DistarError
from evalsuite.generate import EvalRequest, check_image_size, run_eval
from evalsuite.models.loading import describe_recipe, read_pipeline_recipe, spec_from_path


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    from evalsuite.models.architectures import build_pipeline
    root = tmp_path_factory.mktemp("sdxl")
    pipe = build_pipeline("sdxl", "tiny")
    pipe.save_pretrained(root / "full")
    pipe.save_pretrained(root / "fp16", variant="fp16")
    return root


def test_sana_dc_autoencoder_scale_is_the_pipelines(tmp_path):
    """A Sana folder: the VAE scale factor is 2 ** (len(encoder_block_out_channels) - 1), as
    SanaPipeline.__init__ computes it (checked on the pipeline object itself), not the KL
    rule's default 8."""
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaPipeline, \
        SanaTransformer2DModel
    vae = AutoencoderDC(in_channels=3, latent_channels=4, attention_head_dim=4,
                        encoder_block_types="ResBlock", decoder_block_types="ResBlock",
                        encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8),
                        encoder_layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1),
                        encoder_qkv_multiscales=((), (), ()), decoder_qkv_multiscales=((), (), ()),
                        decoder_norm_types="rms_norm", decoder_act_fns="silu")
    transformer = SanaTransformer2DModel(in_channels=4, out_channels=4, num_attention_heads=2,
                                         attention_head_dim=4, num_layers=1,
                                         num_cross_attention_heads=2, cross_attention_head_dim=4,
                                         cross_attention_dim=8, caption_channels=8, sample_size=8)
    pipe = SanaPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                        scheduler=FlowMatchEulerDiscreteScheduler())
    vae.save_config(tmp_path / "vae")
    transformer.save_config(tmp_path / "transformer")
    pipe.scheduler.save_config(tmp_path / "scheduler")
    _write(tmp_path / "model_index.json", {"_class_name": "SanaPipeline",
                                           "vae": ["diffusers", "AutoencoderDC"],
                                           "transformer": ["diffusers", "SanaTransformer2DModel"],
                                           "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]})
    fields, sources = read_pipeline_recipe(tmp_path)
    assert fields["vae_scale"] == pipe.vae_scale_factor == 4
    assert fields["resolution"] == 8 * 4
    assert "encoder_block_out_channels" in sources["vae_scale"]


def test_sdxl_without_text_encoder_2_is_one_line_naming_the_folder(sdxl_folder, tmp_path):
    d = tmp_path / "no_te2"
    shutil.copytree(sdxl_folder / "full", d)
    shutil.rmtree(d / "text_encoder_2")
    shutil.rmtree(d / "tokenizer_2")
    index = json.loads((d / "model_index.json").read_text())
    index.update(text_encoder_2=[None, None], tokenizer_2=[None, None])
    (d / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(DistarError) as e:
        run_eval(EvalRequest(model=f"path:{d}", bench="tiny", limit=1, out=tmp_path / "r"))
    msg = str(e.value)
    assert "\n" not in msg and str(d) in msg and "text_encoder_2" in msg
    assert "feature_extractor" not in msg  # optional everywhere, not the cause


def test_fp16_variant_only_folder_loads(sdxl_folder, tmp_path):
    spec = spec_from_path(str(sdxl_folder / "fp16"))
    assert spec.variant == "fp16" and spec_from_path(str(sdxl_folder / "full")).variant is None
    assert "variant fp16" in describe_recipe(spec)
    run = run_eval(EvalRequest(model=f"path:{sdxl_folder / 'fp16'}", bench="tiny", limit=1,
                               out=tmp_path, steps=1))
    assert len(run.images) == 1
    # --variant: the fp16 files of a folder that has both, or the plain ones of this one (absent).
    both = tmp_path / "both"
    shutil.copytree(sdxl_folder / "full", both)
    for f in (sdxl_folder / "fp16").glob("*/*.fp16.*"):
        shutil.copy(f, both / f.parent.name / f.name)
    run = run_eval(EvalRequest(model=f"path:{both}", bench="tiny", limit=1, out=tmp_path / "b",
                               steps=1, variant="fp16"))
    assert run.images.path[0].split("/")[1].endswith(with_variant_hash(both, "fp16"))
    with pytest.raises(DistarError, match="variant"):
        run_eval(EvalRequest(model=f"path:{sdxl_folder / 'fp16'}", bench="tiny", limit=1,
                             out=tmp_path / "c", steps=1, variant=""))


def with_variant_hash(folder, variant):
    from evalsuite.models.loading import with_overrides
    return with_overrides(with_overrides(spec_from_path(str(folder)), steps=1),
                          variant=variant).recipe_hash


def test_damaged_local_folder_never_suggests_a_download(sdxl_folder, tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(sdxl_folder / "full", d)
    weights = d / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(DistarError) as e:
        run_eval(EvalRequest(model=f"path:{d}", bench="tiny", limit=1, out=tmp_path / "r"))
    msg = str(e.value)
    assert str(d) in msg and "download" not in msg and "\n" not in msg


def test_first_image_size_and_pipeline_scale_are_checked(sdxl_folder):
    spec = spec_from_path(str(sdxl_folder / "full"))
    check_image_size(spec, Image.new("RGB", (spec.resolution,) * 2))  # agrees: no error
    with pytest.raises(DistarError, match="made a 16x16 image"):
        check_image_size(spec, Image.new("RGB", (16, 16)))

    class Pipe:
        vae_scale_factor = 32
    with pytest.raises(DistarError, match='"vae_scale": 32'):
        check_image_size(spec, Image.new("RGB", (spec.resolution,) * 2), Pipe())


def test_recipe_shows_prediction_type_and_ignored_flux_guidance(sdxl_folder, tmp_path):
    assert "prediction_type epsilon" in describe_recipe(spec_from_path(str(sdxl_folder / "full")))
    _write(tmp_path / "model_index.json", {"_class_name": "FluxPipeline",
                                           "transformer": ["diffusers", "FluxTransformer2DModel"],
                                           "vae": ["diffusers", "AutoencoderKL"]})
    _write(tmp_path / "transformer" / "config.json", {"in_channels": 64, "guidance_embeds": False})
    _write(tmp_path / "vae" / "config.json", {"block_out_channels": [8, 8, 8, 8],
                                              "latent_channels": 16})
    line = describe_recipe(spec_from_path(str(tmp_path)))
    assert "guidance 3.5 (ignored: transformer/config.json has no guidance embedding)" in line
    _write(tmp_path / "transformer" / "config.json", {"in_channels": 64, "guidance_embeds": True})
    assert "ignored" not in describe_recipe(spec_from_path(str(tmp_path)))
