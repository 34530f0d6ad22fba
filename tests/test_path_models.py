"""`path:DIR` reads the pipeline folder itself (issue 12, item 5): pipelines built here with
diffusers' own classes and tiny configs, saved with save_pretrained, no distar_recipe.json."""
import json

import pytest
import torch
from PIL import Image

from distar.core.errors import DistarError
from evalsuite.generate import EvalRequest, run_eval
from evalsuite.models.loading import describe_recipe, spec_from_path, with_overrides

CLIP_TEXT = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                 vocab_size=49408, projection_dim=32)


def _vae(n_blocks: int, latent_channels: int = 4):
    from diffusers import AutoencoderKL
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         block_out_channels=(8,) * n_blocks, layers_per_block=1,
                         norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * n_blocks,
                         up_block_types=("UpDecoderBlock2D",) * n_blocks, sample_size=32)


def _clip_text():
    from transformers import CLIPTextConfig, CLIPTextModel

    from evalsuite.models.tokenizer import build_clip_tokenizer
    return CLIPTextModel(CLIPTextConfig(**CLIP_TEXT)).eval(), build_clip_tokenizer()


def sd15_dpmsolver(vae_blocks: int = 4):
    from diffusers import (DPMSolverMultistepScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=32, attention_head_dim=4)
    te, tok = _clip_text()
    return StableDiffusionPipeline(vae=_vae(vae_blocks), text_encoder=te, tokenizer=tok, unet=unet,
                                   scheduler=DPMSolverMultistepScheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def pixart_alpha():
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from evalsuite.models.tokenizer import build_t5_tokenizer
    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=8, num_layers=1, attention_head_dim=8, num_attention_heads=2, in_channels=4,
        out_channels=8, cross_attention_dim=16, caption_channels=32, patch_size=2,
        norm_type="ada_norm_single", num_embeds_ada_norm=1000)
    t5 = T5EncoderModel(T5Config(vocab_size=256, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                 num_heads=4, relative_attention_num_buckets=8,
                                 decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)).eval()
    return PixArtAlphaPipeline(tokenizer=build_t5_tokenizer(), text_encoder=t5, vae=_vae(4),
                               transformer=transformer, scheduler=DPMSolverMultistepScheduler())


def _distar_family(family):
    # SDXL and SD3: the tiny configs of the real architectures, as diffusers objects, saved with
    # save_pretrained like any user's pipeline (no distar_recipe.json).
    from evalsuite.models.architectures import build_pipeline
    return build_pipeline(family, "tiny")


BUILDERS = {"sd15_dpm": sd15_dpmsolver, "vae2": lambda: sd15_dpmsolver(vae_blocks=2),
            "pixart": pixart_alpha, "sdxl": lambda: _distar_family("sdxl"),
            "sd3": lambda: _distar_family("sd3")}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipes")
    out = {}
    for name, build in BUILDERS.items():
        build().save_pretrained(root / name)
        out[name] = root / name
    return out


@pytest.mark.parametrize("name, cls, steps, guidance, res, channels, vae_scale, arch", [
    ("sd15_dpm", "StableDiffusionPipeline", 50, 7.5, 64, 4, 8, "UNet"),
    ("vae2", "StableDiffusionPipeline", 50, 7.5, 16, 4, 2, "UNet"),
    ("pixart", "PixArtAlphaPipeline", 20, 4.5, 64, 4, 8, "DiT"),
    ("sd3", "StableDiffusion3Pipeline", 28, 7.0, 64, 16, 8, "DiT"),
    ("sdxl", "StableDiffusionXLPipeline", 50, 5.0, 64, 4, 8, "UNet"),
])
def test_recipe_read_from_the_folder(folders, name, cls, steps, guidance, res, channels,
                                     vae_scale, arch):
    spec = spec_from_path(str(folders[name]))
    assert (spec.pipeline, spec.steps, spec.guidance, spec.resolution) == (cls, steps, guidance, res)
    assert (spec.latent_channels, spec.vae_scale, spec.arch_type) == (channels, vae_scale, arch)
    assert spec.latent_shape() == (channels, res // vae_scale, res // vae_scale)
    assert spec.label == name  # the folder's name, not a hash
    line = describe_recipe(spec)
    assert f"steps {steps} ({cls}.__call__ default)" in line
    if name == "sd15_dpm":
        assert "DPMSolverMultistepScheduler" in line


def test_recipe_file_and_overrides_win(folders, tmp_path):
    spec = spec_from_path(str(folders["sd15_dpm"]))
    o = with_overrides(spec, steps=3, guidance=2.0, resolution=32, name="mine")
    assert (o.steps, o.guidance, o.resolution, o.label) == (3, 2.0, 32, "mine")
    assert "steps 3 (command line)" in describe_recipe(o)
    assert o.recipe_hash != spec.recipe_hash
    assert with_overrides(spec, name="other").recipe_hash == spec.recipe_hash  # a label only
    with pytest.raises(DistarError, match="multiple of 8"):
        with_overrides(spec, resolution=30)
    (folders["vae2"] / "distar_recipe.json").write_text(json.dumps({"steps": 4, "bogus": 1}))
    try:
        with pytest.raises(DistarError, match="unknown key.*bogus"):
            spec_from_path(str(folders["vae2"]))
    finally:
        (folders["vae2"] / "distar_recipe.json").unlink()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd15_dpm", "vae2", "pixart", "sd3"])
def test_generates_at_the_recorded_size(folders, name, tmp_path):
    run = run_eval(EvalRequest(model=f"path:{folders[name]}", bench="tiny", limit=2,
                               out=tmp_path, steps=2, device="cpu"))
    spec = with_overrides(spec_from_path(str(folders[name])), steps=2)
    recorded = json.loads(run.store.table("runs").iloc[0].recipe_json)
    assert recorded["resolution"] == spec.resolution and recorded["label"] == name
    for rel in run.images.path:
        with Image.open(run.store.root / rel) as im:
            assert im.size == (spec.resolution, spec.resolution)


def test_pipeline_exception_is_one_line_naming_the_class(folders, tmp_path):
    recipe = folders["sd15_dpm"] / "distar_recipe.json"
    recipe.write_text(json.dumps({"latent_channels": 3}))  # the UNet takes 4
    try:
        with pytest.raises(DistarError) as e:
            run_eval(EvalRequest(model=f"path:{folders['sd15_dpm']}", bench="tiny", limit=1,
                                 out=tmp_path, steps=1, device="cpu"))
    finally:
        recipe.unlink()
    msg = str(e.value)
    assert "StableDiffusionPipeline" in msg and "RuntimeError" in msg
    assert "latent_channels" in msg and len(msg.splitlines()) == 1


def test_training_export_is_named_after_its_run(tmp_path):
    export = tmp_path / "my_run" / "export"
    export.mkdir(parents=True)
    (export / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline",
                                                          "unet": ["diffusers", "UNet2DConditionModel"]}))
    (export / "distar_recipe.json").write_text(json.dumps({"steps": 1, "training": {"alpha_rew": 1.0}}))
    spec = spec_from_path(str(export))
    assert spec.label == "my_run" and spec.name.startswith("path-export-")  # hash kept for identity


def test_names_in_tables_and_file_benchmarks_keep_their_columns(tmp_path):
    from evalsuite.benchmarks import load_benchmark
    from evalsuite.leaderboard import write_leaderboards
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "prompts.tsv").write_text(
            "Prompt\tCategory\tChallenge\n"
            f"a red cube {sub}\tObjects\tColor\na blue ball {sub}\tObjects\tColor\n"
            f"a dog {sub}\tAnimals\tSimple\n")
    a, b = (load_benchmark(f"file:{tmp_path / s / 'prompts.tsv'}") for s in ("a", "b"))
    assert a.name != b.name and a.name.startswith("file-prompts-")
    assert a.group_keys == ("category", "challenge")
    from evalsuite.metrics.runner import score_run
    req = EvalRequest(model="tiny_sd15", bench=f"file:{tmp_path / 'a' / 'prompts.tsv'}",
                      out=tmp_path / "res", name="my model", steps=1, device="cpu")
    assert run_eval(req).generated == 3
    run = run_eval(req)
    assert run.generated == 0 and run.name == "my model"
    score_run(run, ["smoke_clip"], progress=False)
    files = write_leaderboards(tmp_path / "res", tmp_path / "lb")
    table1 = next(f for f in files if f.name.startswith("table1")).read_text()
    assert "| my model" in table1 and "path-" not in table1
    breakdown = next(f for f in files if "breakdown" in f.name).read_text()
    assert "by category" in breakdown and "Animals (n=1)" in breakdown
    assert "by challenge" in breakdown
