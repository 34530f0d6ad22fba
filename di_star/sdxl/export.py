"""Export a trained generator as a diffusers pipeline folder that `distar eval --model path:DIR`
loads: the reference's VAE, text encoders and tokenizers, the generator's UNet, an LCMScheduler,
and `distar_recipe.json` (1 step at the generator's fixed timestep, no CFG, plus the training
settings the leaderboard's Table 2 groups by).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import Tensor, nn

from di_star.config import TrainConfig
from distar.core import atomic
from distar.core.dtypes import DTYPES, dtype_name
from evalsuite.models.loading import RECIPE_FILE

EXPORT_DIR = "export"


def recipe(cfg: TrainConfig, step: int, resolution: int, dtype: str, params: str) -> dict:
    o = cfg.objective
    return {
        "scheduler": "LCMScheduler", "steps": 1, "guidance": 0.0,
        "timesteps": [cfg.sd.generator_timestep], "resolution": resolution, "dtype": dtype,
        "params": params, "arch_type": "UNet",
        "training": {"alpha_rew": o.alpha_rew, "alpha_cfg": o.alpha_cfg, "guidance": o.guidance,
                     "regulariser": o.regulariser, "estimator": o.estimator, "distance": o.distance,
                     "reward": cfg.sd.reward, "reference": cfg.sd.reference,
                     "generator_init": cfg.sd.generator, "preset": cfg.preset, "seed": cfg.run.seed,
                     "step": step},
    }


def _params(unet: nn.Module, spec_params: str) -> str:
    if spec_params and spec_params != "tiny":
        return spec_params
    n = sum(p.numel() for p in unet.parameters())
    return f"{n / 1e9:.1f}B" if n >= 1e8 else f"{n / 1e6:.1f}M"


def unet_from_state(world, config, state: dict[str, Tensor], dtype: torch.dtype) -> nn.Module:
    """The generator's UNet rebuilt on the CPU from its config and a full state dict (the trained
    module itself may be sharded over processes)."""
    from accelerate import init_empty_weights

    with init_empty_weights():  # no random initialisation of 2.6B parameters only to overwrite them
        unet = type(world.reference).from_config(config)
    unet.load_state_dict({k: v.to("cpu", dtype) for k, v in state.items()}, assign=True)
    return unet.eval()


def export_pipeline(world, unet_config, unet_state: dict[str, Tensor], cfg: TrainConfig, step: int, out: Path,
                    dtype: torch.dtype | None = None) -> Path:
    """Write the pipeline folder `out` atomically (temp folder, then rename over any old one).
    `unet_config`, `unet_state`: the generator UNet's config and full state dict (main process).
    `dtype`: the saved weights' dtype; default the reference recipe's (SDXL fp16, tiny fp32)."""
    from diffusers import LCMScheduler


    pipe = world.pipe
    dtype = dtype or DTYPES.get(world.spec_ref.dtype, torch.float32)
    unet = unet_from_state(world, unet_config, unet_state, dtype)
    components = {k: v for k, v in pipe.components.items()}
    components["unet"] = unet
    components["scheduler"] = LCMScheduler.from_config(pipe.scheduler.config)
    for k in ("vae", "text_encoder", "text_encoder_2"):
        if components.get(k) is not None:
            module = copy.deepcopy(components[k]).to("cpu", torch.float32)
            if k in getattr(world, "export_states", {}):  # the weights as loaded, not autocast copies
                module.load_state_dict(world.export_states[k])
            if k == "vae":
                module.disable_gradient_checkpointing()
            components[k] = module.to(dtype)
    extra = {"requires_safety_checker": False} if "safety_checker" in components else {}
    exported = type(pipe)(**components, **extra)
    rec = recipe(cfg, step, world.resolution, dtype_name(dtype), _params(unet, world.spec_ref.params))
    # The harness draws noise of the latent shape the recipe names (defaults: 4 channels, 8x VAE).
    rec["latent_channels"], rec["vae_scale"] = int(unet.config.in_channels), int(world.vae_scale)

    def fill(tmp: Path) -> None:
        exported.save_pretrained(tmp)
        (tmp / RECIPE_FILE).write_text(json.dumps(rec, indent=1))

    out = atomic.write_dir(Path(out), fill, if_exists="replace")
    return out
