"""Architectures and training sizes of the mini world's components (the real classes, tiny).

Sizes are set by the 40 MB shipping budget and by a CPU shared with other jobs: the text towers
keep CLIP's full 49408-token vocabulary (the pipeline's tokenizers are CLIP's), so their width
(48) decides most of the bytes; weights are stored in fp16 (the loaders cast to fp32 on CPU).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from di_star.mini.scene import IMAGE_SIZE

TEXT_WIDTH = 48            # CLIP text hidden size = each SDXL text encoder's width
PROJECTION_DIM = 48        # CLIP joint embedding = SDXL's pooled text embedding
LATENT_CHANNELS = 4
VAE_DOWN = 4               # 64 px -> 16 x 16 x 4 latents
TIME_EMBED_DIM = 16        # SDXL's addition_time_embed_dim (256 in SDXL)

CLIP_TEXT = dict(vocab_size=49408, hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH,
                 num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=77,
                 hidden_act="gelu", projection_dim=PROJECTION_DIM,
                 # pooled at the first end-of-text token (ids from evalsuite's CLIP tokenizer)
                 bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
CLIP_VISION = dict(image_size=IMAGE_SIZE, patch_size=8, num_channels=3, hidden_size=64,
                   intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                   hidden_act="gelu", projection_dim=PROJECTION_DIM)

# No mid-block attention: the encoder is then fully convolutional and cheap at 64 px.
VAE = dict(in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS,
           down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
           # 32-64 channels: at 16-32 the decoder could not keep the small saturated objects
           # (a 200-step build reconstructed them as grey blobs; docs/mini_build.md)
           block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16,
           sample_size=IMAGE_SIZE, mid_block_add_attention=False, force_upcast=False)

# SDXL's UNet structure (DownBlock2D then cross-attention blocks, linear projections,
# `text_time` added conditioning on the pooled text embedding + 6 micro-conditioning ids,
# cross-attention on the two text encoders' concatenated hidden states), at 1.8M parameters.
UNET = dict(sample_size=IMAGE_SIZE // VAE_DOWN, in_channels=LATENT_CHANNELS,
            out_channels=LATENT_CHANNELS, layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(32, 64, 64), transformer_layers_per_block=(1, 1, 1),
            attention_head_dim=(2, 4, 4), cross_attention_dim=2 * TEXT_WIDTH,
            use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=PROJECTION_DIM + 6 * TIME_EMBED_DIM,
            norm_num_groups=16)

# SD's training noise schedule (scaled-linear betas), as SDXL base ships it.
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                beta_schedule="scaled_linear", timestep_spacing="trailing", steps_offset=0,
                prediction_type="epsilon")


@dataclass(frozen=True)
class BuildSize:
    """How much of everything the build trains (steps are optimiser steps)."""
    n_train: int             # (image, caption) pairs rendered for the VAE, CLIP and the UNet
    vae_steps: int
    vae_batch: int
    clip_steps: int
    clip_batch: int
    unet_steps: int
    unet_batch: int
    ode_pairs: int           # reference samples (noise -> multi-step CFG latent) for the one-step
    onestep_steps: int
    onestep_batch: int
    proxy_prompts: int       # prompts whose candidates make the preference pairs
    proxy_steps: int
    proxy_batch: int
    aesthetic_steps: int
    classifier_n: int
    classifier_epochs: int
    sample_batch: int = 64
    clip_patch: int = 8                 # the CLIP vision tower's patch size (px)
    clip_hard_negatives: bool = False   # shape-swapped captions as extra negatives (NegCLIP)
    clip_vision_steps: int = 0          # steps training the vision tower on the renderer's scene
                                        # labels before the contrastive steps, which keep it frozen
    clip_min_shape: float = 0.0         # the reference stage refuses a CLIP whose zero-shot shape
                                        # accuracy on ground truth is lower (docs/mini_build.md)
    unet_restart_steps: int = 0         # a second DSM cycle of the reference (warm restart: fresh
                                        # optimiser, LR schedule at half the peak, EMA), continued from
                                        # the first cycle's weights; --reuse continues a finished build's
                                        # reference, whose first cycle it equals
    vae_object_weight: float = 10.0   # extra reconstruction weight on object (saturated) pixels
    workers: int = 1         # processes rendering / judging (outputs do not depend on it)


SIZES = {
    # The test size: every stage runs end to end in well under a minute.
    "reduced": BuildSize(n_train=96, vae_steps=4, vae_batch=8, clip_steps=4, clip_batch=16,
                         unet_steps=4, unet_batch=8, ode_pairs=8, onestep_steps=3,
                         onestep_batch=4, proxy_prompts=8, proxy_steps=3, proxy_batch=8,
                         aesthetic_steps=10, classifier_n=64, classifier_epochs=1,
                         sample_batch=8, clip_vision_steps=2),
    # Sized for a 2-core machine shared with other jobs (docs/mini_build.md): the shipped
    # world was built with ~0.1-0.3 of a core.
    "full": BuildSize(n_train=4000, vae_steps=200, vae_batch=16, clip_steps=250, clip_batch=96,
                      unet_steps=450, unet_batch=32, ode_pairs=256, onestep_steps=150,
                      onestep_batch=16, proxy_prompts=256, proxy_steps=120, proxy_batch=32,
                      aesthetic_steps=1500, classifier_n=4000, classifier_epochs=4),
    # The shipped world: sized for one GPU in ~5 minutes (`--device cuda`); the same command
    # on a CPU takes hours. 30-36x the samples of 'full' for the VAE, CLIP and the reference.
    "large": BuildSize(n_train=30000, vae_steps=1800, vae_batch=64, clip_steps=1200,
                       clip_batch=256, unet_steps=2000, unet_batch=256, ode_pairs=2048,
                       onestep_steps=1000, onestep_batch=128, proxy_prompts=2048,
                       proxy_steps=600, proxy_batch=128, aesthetic_steps=3000,
                       classifier_n=4000, classifier_epochs=4, sample_batch=512, workers=12),
}
# 'large' with a CLIP that tells shapes apart: its vision tower first learns the renderer's scene
# labels and is then frozen (LiT), and the reference stage refuses a CLIP below 0.8 zero-shot shape
# accuracy (docs/mini_build.md). VAE and classifier inputs equal 'large''s, so a rebuild from the
# shipped world reuses them (`distar lab build mini --size large_lit --reuse di_star/mini/data`).
SIZES["large_lit"] = replace(SIZES["large"], clip_vision_steps=3000, clip_min_shape=0.8)
# 'large_lit' whose reference trains a second cycle of 2000 DSM steps from the first's weights
# (docs/mini_build.md): the first cycle's loss was still falling. `--reuse` a finished large_lit
# build and only the second cycle and the stages after it run.
SIZES["large_lit_restart"] = replace(SIZES["large_lit"], unet_restart_steps=2000)
