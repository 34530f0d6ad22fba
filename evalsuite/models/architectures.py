"""Architecture configs of the registered pipelines, embedded so that `--weights random` and the
offline `tiny_*` models can be built with nothing downloaded.

Full-size configs are those of the published checkpoints (SDXL base 1.0, SD1.5); tiny configs
keep every structural feature of the real ones (SDXL: two text encoders, `text_time` added
conditioning, linear attention projections; SD1.5: one text encoder, 4 down blocks) at a size
that runs a step in ~0.1 s on a CPU.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from evalsuite.errors import DistarError
from evalsuite.paths import cache_dir

SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816)
SDXL_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=1024, layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), scaling_factor=0.13025, force_upcast=True)
CLIP_L_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                   num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                   hidden_act="quick_gelu", projection_dim=768)
CLIP_BIGG_TEXT = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120,
                      num_hidden_layers=32, num_attention_heads=20, max_position_embeddings=77,
                      hidden_act="gelu", projection_dim=1280)
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8, cross_attention_dim=768)
SD15_VAE = dict(SDXL_VAE, sample_size=512, scaling_factor=0.18215, force_upcast=False)

# Tiny versions: same block types and conditioning, small widths. The text encoders' hidden
# sizes are chosen so SDXL's concatenated context (32 + 32 = 64) and pooled + time ids
# (32 + 6 * 8 = 80) keep the real structure.
TINY_SDXL_UNET = dict(
    SDXL_UNET, sample_size=8, layers_per_block=1, block_out_channels=(32, 64, 64),
    transformer_layers_per_block=(1, 1, 1), attention_head_dim=(2, 4, 4), cross_attention_dim=64,
    addition_time_embed_dim=8, projection_class_embeddings_input_dim=80, norm_num_groups=32)
TINY_VAE = dict(SDXL_VAE, sample_size=64, layers_per_block=1, block_out_channels=(32, 32, 32, 32),
                norm_num_groups=32)
TINY_TEXT = dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu",
                 projection_dim=32)
TINY_SD15_UNET = dict(
    SD15_UNET, sample_size=8, layers_per_block=1, block_out_channels=(32, 32, 64, 64),
    attention_head_dim=4, cross_attention_dim=32, norm_num_groups=32)

# Bump when a tiny config changes so cached builds are rebuilt.
TINY_BUILD_VERSION = "1"


def _text_encoders(text_cfg: dict, with_projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(CLIPTextConfig(**text_cfg))


def build_pipeline(family: str, size: str, dtype: torch.dtype = torch.float32, seed: int = 0):
    """A diffusers pipeline of `family` ('sdxl' | 'sd15') at `size` ('tiny' | 'full') with random
    weights drawn from `seed` (so every build of the same family and size is identical)."""
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline,
                           StableDiffusionXLPipeline, UNet2DConditionModel)
    from evalsuite.models.tokenizer import build_clip_tokenizer

    torch.manual_seed(seed)
    tiny = size == "tiny"
    if size not in ("tiny", "full"):
        raise ValueError(f"Unknown size '{size}'")
    # SD's training noise schedule (scaled-linear betas), shared by SD1.5 and SDXL.
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", timestep_spacing="leading",
                                       steps_offset=1)
    if family == "sdxl":
        unet = UNet2DConditionModel(**(TINY_SDXL_UNET if tiny else SDXL_UNET))
        vae = AutoencoderKL(**(TINY_VAE if tiny else SDXL_VAE))
        te1 = _text_encoders(TINY_TEXT if tiny else CLIP_L_TEXT, with_projection=False)
        te2 = _text_encoders(TINY_TEXT if tiny else CLIP_BIGG_TEXT, with_projection=True)
        pipe = StableDiffusionXLPipeline(
            vae=vae, text_encoder=te1, text_encoder_2=te2, unet=unet, scheduler=scheduler,
            tokenizer=build_clip_tokenizer("<|endoftext|>"), tokenizer_2=build_clip_tokenizer("!"))
    elif family == "sd15":
        unet = UNet2DConditionModel(**(TINY_SD15_UNET if tiny else SD15_UNET))
        vae = AutoencoderKL(**(dict(TINY_VAE, scaling_factor=0.18215) if tiny else SD15_VAE))
        te = _text_encoders(TINY_TEXT if tiny else CLIP_L_TEXT, with_projection=False)
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=te, tokenizer=build_clip_tokenizer("<|endoftext|>"), unet=unet,
            scheduler=scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
    else:
        raise DistarError(f"No embedded architecture for '{family}'. Choose one of: sdxl, sd15")
    return pipe.to(dtype=dtype)


def tiny_pipeline_dir(family: str) -> Path:
    """Build the tiny pipeline once and cache it as a normal diffusers folder (atomic)."""
    target = cache_dir() / "tiny" / f"{family}-v{TINY_BUILD_VERSION}"
    if (target / "model_index.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=target.parent))
    build_pipeline(family, "tiny").save_pretrained(tmp)
    try:
        os.replace(tmp, target)  # another process may have won the race; theirs is identical
    except OSError:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return target
