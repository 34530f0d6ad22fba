"""Architecture configs of the registered pipelines, embedded so that `--weights random` and the
offline `tiny_*` models can be built with nothing downloaded.

Full-size configs are those of the published checkpoints (SDXL base 1.0, SD1.5, SD3.5 Large,
FLUX.1-dev; tests/test_architectures.py checks their parameter counts against the published
ones); tiny configs keep every structural feature of the real ones (SDXL: two text encoders,
`text_time` added conditioning, linear attention projections; SD1.5: one text encoder, 4 down
blocks; SD3: three text encoders, joint attention, 16 latent channels; FLUX: CLIP + T5, packed
2x2 latents, rotary axes, guidance embedding) at a size that runs a step in ~0.1 s on a CPU.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from distar.core import atomic
from distar.core.errors import DistarError
from distar.core.paths import cache_dir
from evalsuite.models.specs import PIPELINE_FAMILIES

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

# SD3.5 Large and FLUX.1-dev (the published transformer / VAE / text-encoder configs). Both VAEs
# are 16-channel without quant convs; both pipelines read T5-XXL's encoder.
SD35_LARGE_TRANSFORMER = dict(
    sample_size=128, patch_size=2, in_channels=16, num_layers=38, attention_head_dim=64,
    num_attention_heads=38, joint_attention_dim=4096, caption_projection_dim=2432,
    pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192, qk_norm="rms_norm")
FLUX_DEV_TRANSFORMER = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
    guidance_embeds=True, axes_dims_rope=(16, 56, 56))
VAE16 = dict(SDXL_VAE, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False)
SD3_VAE = dict(VAE16, scaling_factor=1.5305, shift_factor=0.0609)
FLUX_VAE = dict(VAE16, scaling_factor=0.3611, shift_factor=0.1159)
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
              relative_attention_max_distance=128, layer_norm_epsilon=1e-6)
SD3_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)
FLUX_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                      max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)

# Tiny versions. The CLIP encoders are TINY_TEXT (32 wide): SD3 concatenates two of them (64),
# zero-pads that to T5's width (64 here, 4096 in the real one) and pools 32 + 32 = 64; FLUX pools
# one (32). Head dims fit the rotary axes (FLUX: 4 + 6 + 6 = 16).
TINY_T5 = dict(T5_XXL, vocab_size=256, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
               relative_attention_num_buckets=8)
TINY_SD3_TRANSFORMER = dict(
    SD35_LARGE_TRANSFORMER, sample_size=8, num_layers=2, attention_head_dim=8, num_attention_heads=4,
    joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64, pos_embed_max_size=16)
TINY_FLUX_TRANSFORMER = dict(
    FLUX_DEV_TRANSFORMER, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
    joint_attention_dim=64, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))
TINY_VAE16 = dict(TINY_VAE, latent_channels=16, use_quant_conv=False, use_post_quant_conv=False)

FAMILIES = tuple(PIPELINE_FAMILIES.values())  # ("sdxl", "sd15", "sd3", "flux")

# Bump when a tiny config changes so cached builds are rebuilt.
TINY_BUILD_VERSION = "1"


def _text_encoders(text_cfg: dict, with_projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(CLIPTextConfig(**text_cfg))


def _t5(cfg: dict):
    from transformers import T5Config, T5EncoderModel
    return T5EncoderModel(T5Config(**cfg, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))


@contextmanager
def created_on(device: torch.device | str, dtype: torch.dtype):
    """Every parameter and buffer created inside is allocated on `device` in `dtype` and
    initialised there (torch's default device and default dtype), so a random build never holds
    an fp32 copy on the host first: full FLUX.1-dev (transformer + T5-XXL, 17B parameters) was
    68 GB of host memory in fp32 and minutes of CPU initialisation before its cast."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _networks(family: str, tiny: bool) -> dict[str, torch.nn.Module]:
    """The pipeline's networks (random init), keyed by pipeline component name."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel

    if family == "sdxl":
        return dict(unet=UNet2DConditionModel(**(TINY_SDXL_UNET if tiny else SDXL_UNET)),
                    vae=AutoencoderKL(**(TINY_VAE if tiny else SDXL_VAE)),
                    text_encoder=_text_encoders(TINY_TEXT if tiny else CLIP_L_TEXT, with_projection=False),
                    text_encoder_2=_text_encoders(TINY_TEXT if tiny else CLIP_BIGG_TEXT, with_projection=True))
    if family == "sd15":
        return dict(unet=UNet2DConditionModel(**(TINY_SD15_UNET if tiny else SD15_UNET)),
                    vae=AutoencoderKL(**(dict(TINY_VAE, scaling_factor=0.18215) if tiny else SD15_VAE)),
                    text_encoder=_text_encoders(TINY_TEXT if tiny else CLIP_L_TEXT, with_projection=False))
    # SD3.5 Large ('sd3') or FLUX.1-dev ('flux'): a flow-matching transformer, a 16-channel VAE,
    # CLIP encoder(s) and T5-XXL's encoder.
    t5 = _t5(TINY_T5 if tiny else T5_XXL)
    if family == "sd3":
        return dict(
            transformer=SD3Transformer2DModel(**(TINY_SD3_TRANSFORMER if tiny else SD35_LARGE_TRANSFORMER)),
            vae=AutoencoderKL(**(dict(TINY_VAE16, scaling_factor=1.5305, shift_factor=0.0609) if tiny else SD3_VAE)),
            text_encoder=_text_encoders(TINY_TEXT if tiny else CLIP_L_TEXT, with_projection=True),
            text_encoder_2=_text_encoders(TINY_TEXT if tiny else CLIP_BIGG_TEXT, with_projection=True),
            text_encoder_3=t5)
    return dict(
        transformer=FluxTransformer2DModel(**(TINY_FLUX_TRANSFORMER if tiny else FLUX_DEV_TRANSFORMER)),
        vae=AutoencoderKL(**(dict(TINY_VAE16, scaling_factor=0.3611, shift_factor=0.1159) if tiny else FLUX_VAE)),
        text_encoder=_text_encoders(TINY_TEXT if tiny else CLIP_L_TEXT, with_projection=False),
        text_encoder_2=t5)


def _assemble(family: str, nets: dict[str, torch.nn.Module]):
    """The diffusers pipeline around `nets`, with its scheduler and tokenizers (host objects,
    built outside `created_on` so their tensors stay on the CPU as diffusers expects)."""
    from diffusers import (EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, FluxPipeline,
                           StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline)
    from evalsuite.models.tokenizer import build_clip_tokenizer, build_t5_tokenizer

    # SD's training noise schedule (scaled-linear betas), shared by SD1.5 and SDXL.
    sd_scheduler = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                        timestep_spacing="leading", steps_offset=1)
    if family == "sdxl":
        return StableDiffusionXLPipeline(
            **nets, scheduler=EulerDiscreteScheduler(**sd_scheduler),
            tokenizer=build_clip_tokenizer("<|endoftext|>"), tokenizer_2=build_clip_tokenizer("!"))
    if family == "sd15":
        return StableDiffusionPipeline(
            **nets, scheduler=EulerDiscreteScheduler(**sd_scheduler),
            tokenizer=build_clip_tokenizer("<|endoftext|>"), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
    if family == "sd3":
        return StableDiffusion3Pipeline(
            **nets, scheduler=FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER),
            tokenizer=build_clip_tokenizer("<|endoftext|>"), tokenizer_2=build_clip_tokenizer("!"),
            tokenizer_3=build_t5_tokenizer())
    return FluxPipeline(
        **nets, scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        tokenizer=build_clip_tokenizer("<|endoftext|>"), tokenizer_2=build_t5_tokenizer())


def build_pipeline(family: str, size: str, dtype: torch.dtype = torch.float32, seed: int = 0,
                   device: torch.device | str = "cpu"):
    """A diffusers pipeline of `family` (one of FAMILIES) at `size` ('tiny' | 'full') with random
    weights drawn from `seed` (so every build of the same family, size and device is identical),
    every module in eval mode (T5 has dropout). The networks are created directly on `device`
    in `dtype` (see `created_on`): peak memory is the pipeline's own size, on the device."""
    if size not in ("tiny", "full"):
        raise ValueError(f"Unknown size '{size}'")
    if family not in FAMILIES:
        raise DistarError(f"No embedded architecture for '{family}'. Choose one of: {', '.join(FAMILIES)}")
    torch.manual_seed(seed)  # seeds the CPU and every CUDA generator
    with created_on(device, dtype):
        nets = _networks(family, size == "tiny")
    device = torch.device(device)
    for module in nets.values():
        # Tensors a constructor made with an explicit dtype or device (SD3's fp32 positional
        # table) join the rest, as a cast and move of the whole pipeline would take them.
        if any((t.is_floating_point() and t.dtype != dtype) or t.device.type != device.type
               for t in (*module.parameters(), *module.buffers())):
            module.to(device=device, dtype=dtype)
        module.eval()
    return _assemble(family, nets)


def tiny_pipeline_dir(family: str) -> Path:
    """Build the tiny pipeline once and cache it as a normal diffusers folder (atomic)."""
    target = cache_dir() / "tiny" / f"{family}-v{TINY_BUILD_VERSION}"
    if (target / "model_index.json").exists():
        return target
    # Another process may win the race to build it; theirs is identical, so keep it.
    return atomic.write_dir(target, lambda tmp: build_pipeline(family, "tiny").save_pretrained(tmp),
                            if_exists="keep")
