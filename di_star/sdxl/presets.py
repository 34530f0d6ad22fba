"""Presets of the SD worlds, registered into `di_star.presets.PRESETS`.

| preset            | generator init           | reference  | (alpha_rew, alpha_cfg) | notes |
|-------------------|--------------------------|------------|------------------------|-------|
| di_star_sdxl      | DMD2-SDXL-1step (t=399)  | SDXL base  | (100, 7.5), Choice 2   | the paper's best SDXL row: pseudo-Huber, PickScore |
| di_star_sdxl_dpo  | DMD2-SDXL-1step (t=399)  | SDXL-DPO   | (100, 7.5), Choice 2   | same, DPO reference |
| di_star_sdxl_fsdp | DMD2-SDXL-1step (t=399)  | SDXL base  | (100, 7.5), Choice 2   | di_star_sdxl sharded over GPUs (FSDP2), fp32 AdamW |
| di_star_sd15      | SD1.5 UNet itself (t=999)| SD1.5      | (100, 7.5), Choice 2   | no one-step SD1.5 init is registered; ours |
| tiny_sdxl         | tiny SDXL, random        | the same   | (100, 7.5), Choice 2   | the same code path offline, a few steps (tests) |
| tiny_sd15         | tiny SD1.5, random       | the same   | (100, 7.5), Choice 2   | idem |

From the paper / docs/maths.md: pseudo-Huber, (100, 7.5) with PickScore and Choice 2 ('in'),
w(t) = 1, lambda(t) = the reference's own weighting (eps-MSE, 'sigma2'), lr 5e-7 and 5 assistant
updates per generator update (DMD2's), t = 399 for the DMD2 generator. DMD2's SDXL settings as
we recall them, not verified here: AdamW betas (0.9, 0.999), weight decay 0.01, gradient
clipping at 10, t ~ U[0.02 T, 0.98 T). Ours: the pseudo-Huber constant, measured on the x0
difference as the paper's listing does, c = 0.00054 sqrt(d) (iCT's rule; d = latent size), and
the step count (the paper's is not stated). Training prompts default to COCO-2014 captions (the
ones shipped here); the paper used LAION-aesthetic > 6.25 prompts: set sd.prompts to such a file.
Memory: the full presets use bitsandbytes' 8-bit AdamW, which is what lets a full fine-tune of
both 2.6B UNets fit one 80 GB GPU (before activations 46.7 GiB vs 75.2 GiB with fp32 AdamW;
`python -m di_star.memory`, docs/training.md).
"""
from __future__ import annotations

import math
from pathlib import Path

from di_star.config import TrainConfig, from_dict, merge
from di_star.mini.weights import ONESTEP_TIMESTEP, REFERENCE_RECIPE


def _huber_c(latent_side: int, channels: int = 4) -> float:
    return round(0.00054 * math.sqrt(channels * latent_side * latent_side), 4)


_PAPER = {
    "objective": {"regulariser": "score", "distance": "pseudo_huber", "distance_space": "x0",
                  "estimator": "exact", "alpha_rew": 100.0, "alpha_cfg": 7.5, "guidance": "in",
                  "w": "one", "lam": "sigma2"},
    "optim": {"lr_g": 5e-7, "lr_psi": 5e-7, "beta1": 0.9, "beta2": 0.999,
              "assistant_steps_per_g_step": 5, "batch_size": 1},
    "run": {"max_steps": 4000, "seed": 0, "ema": 0.0, "log_every": 10, "ckpt_every": 250},
    "sd": {"generator_timestep": 399, "t_min": 20, "t_max": 980, "prompts": "bench:coco30k",
           "reward": "pickscore", "mixed_precision": "bf16", "gradient_checkpointing": True,
           "checkpoint_frozen": True,
           "optimizer": "adamw8bit", "weight_decay": 0.01, "max_grad_norm": 10.0, "grad_accum": 1,
           "sample_every": 250, "sample_images": 4, "eval_every": 0, "log_with": "tensorboard"},
}

# The tiny presets: the same code path, tiny random pipelines and reward, CPU-sized steps.
_TINY = {
    "optim": {"lr_g": 1e-4, "lr_psi": 1e-4, "assistant_steps_per_g_step": 2, "batch_size": 2},
    "run": {"max_steps": 4, "ema": 0.9, "log_every": 1, "ckpt_every": 2},
    "sd": {"prompts": "bench:tiny", "reward": "tiny:pickscore", "mixed_precision": "no", "optimizer": "adamw",
           "weight_decay": 0.0, "max_grad_norm": 0.0, "sample_every": 2, "sample_images": 2},
}

# The mini world (di_star.mini; its weights are built by `distar lab build mini` and shipped in
# di_star/mini/data/): the same SDXL code path at 64 px. The Table 2 rows and the alpha_rew
# frontiers are registered as `mini/<row>` by di_star.presets from these scales. How the paper's
# SDXL setting was scaled to this world (docs/training.md, "The mini world"):
# - kept: score regulariser, pseudo-Huber on the x0 difference, the `exact` estimator, w(t) = 1,
#   lambda(t) = the reference's eps-MSE weighting, K_TA = 5, Choice 2, DMD2's t ~ U[20, 980);
# - alpha_cfg = the mini reference's own sampling CFG scale (the paper: "the best CFG scale for
#   DI* is the same as the best CFG scale for sampling from the reference", 7.5 for SDXL);
# - reward: `mini_pickscore`, the PickScore class on the mini proxy's weights (proxy_reward/);
# - alpha_rew: the paper's 1 / 10 / 100 are for PickScore cosines whose per-image spread is
#   ~0.01; the mini proxy reward is the same architecture and unit, so the ratios 1:10:100 are
#   kept and the scale is set by the same rule: the best row's reward gradient is the largest
#   before the gold judge falls (MINI_REWARDS, measured in scripts/mini_ablation.py);
# - lr: 5e-7 is for fine-tuning 2.6B parameters for thousands of steps; the mini UNet is ~1000x
#   smaller and a CPU affords hundreds of steps, so the lr is the mini reference's fine-tuning scale;
# - length: 600 generator steps, the shortest measured at which every seed's proxy gain is about
#   3 paired standard errors on the shipped world (300 steps: 1.9-3.2, 600: 2.7-3.3; docs/training.md);
#   13-16 minutes on one CPU thread (1.3-1.6 s per step). The demo and tests override it.
# - huber_c by the same rule as SDXL's (iCT: 0.00054 sqrt(d), d = the latent size);
# - batch 8 prompts per step instead of DMD2's large batches; fp32 Adam, no clipping changes.
MINI_TRAIN_PROMPTS = Path(__file__).resolve().parent / "data" / "mini_train_prompts.txt"
MINI_ALPHA_CFG = float(REFERENCE_RECIPE["guidance"])   # mini_ref's own sampling CFG scale (4.0)
MINI_REWARDS = (1.0, 10.0, 100.0)
MINI_FRONTIER = {"kl": (10.0, 30.0, 100.0, 300.0), "score": (10.0, 30.0, 100.0, 300.0)}
MINI_LATENT_SIDE = 16  # 64 px through the mini VAE (scale 4)
MINI_BASE = {
    "world": {"name": "sdxl", "eval_samples": 32},
    "objective": {"regulariser": "score", "distance": "pseudo_huber", "distance_space": "x0",
                  "huber_c": _huber_c(MINI_LATENT_SIDE), "estimator": "exact", "w": "one", "lam": "sigma2"},
    "optim": {"lr_g": 2e-5, "lr_psi": 2e-5, "beta1": 0.9, "beta2": 0.999, "assistant_steps_per_g_step": 5,
              "batch_size": 8},
    "run": {"max_steps": 600, "seed": 0, "ema": 0.0, "log_every": 10, "ckpt_every": 100},
    "sd": {"generator": "mini_onestep", "reference": "mini_ref", "generator_timestep": ONESTEP_TIMESTEP,
           "t_min": 20, "t_max": 980, "prompts": str(MINI_TRAIN_PROMPTS),
           "reward": "mini_pickscore", "mixed_precision": "no",
           "optimizer": "adamw", "weight_decay": 0.0, "max_grad_norm": 10.0, "sample_every": 100,
           "sample_images": 8, "eval_every": 0, "log_with": "none"},
}

SD_PRESETS: dict[str, tuple[dict, str]] = {
    "di_star_sdxl": (merge(_PAPER, {
        "world": {"name": "sdxl", "eval_samples": 64},
        "objective": {"huber_c": _huber_c(128)},
        "sd": {"generator": "dmd2_sdxl", "reference": "sdxl_base"}}),
        "DI*-SDXL-1step: DMD2 init, SDXL base reference, PickScore, (100, 7.5) Choice 2, pseudo-Huber"),
    "di_star_sdxl_dpo": (merge(_PAPER, {
        "world": {"name": "sdxl", "eval_samples": 64},
        "objective": {"huber_c": _huber_c(128)},
        "sd": {"generator": "dmd2_sdxl", "reference": "sdxl_dpo"}}),
        "DI*-SDXL-1step against SDXL-DPO, otherwise as di_star_sdxl"),
    "di_star_sdxl_fsdp": (merge(_PAPER, {
        "world": {"name": "sdxl", "eval_samples": 64},
        "objective": {"huber_c": _huber_c(128)},
        "sd": {"generator": "dmd2_sdxl", "reference": "sdxl_base", "fsdp": True, "optimizer": "adamw"}}),
        "di_star_sdxl with generator and assistant sharded over the GPUs (FSDP2) and fp32 AdamW "
        "(configs/accelerate/fsdp_1node_8gpu.yaml)"),
    "di_star_sd15": (merge(_PAPER, {
        "world": {"name": "sd15", "eval_samples": 64},
        "objective": {"huber_c": _huber_c(64)},
        "optim": {"batch_size": 4},
        "sd": {"generator": "sd15", "reference": "sd15", "generator_timestep": 999}}),
        "DI* on SD1.5 (512px): generator initialised from the reference UNet at t=999"),
    "tiny_sdxl": (merge(merge(_PAPER, _TINY), {
        "world": {"name": "sdxl", "eval_samples": 4},
        "objective": {"huber_c": _huber_c(8)},
        "sd": {"generator": "tiny_sdxl", "reference": "tiny_sdxl"}}),
        "tiny random SDXL + tiny random PickScore: the di_star_sdxl code path offline (tests)"),
    "tiny_sd15": (merge(merge(_PAPER, _TINY), {
        "world": {"name": "sd15", "eval_samples": 4},
        "objective": {"huber_c": _huber_c(8)},
        "sd": {"generator": "tiny_sd15", "reference": "tiny_sd15", "generator_timestep": 999}}),
        "tiny random SD1.5 + tiny random PickScore: the di_star_sd15 code path offline (tests)"),
}


def register(registry) -> None:
    """Add the SD presets to a preset registry (di_star.presets.PRESETS)."""
    for name, (over, desc) in SD_PRESETS.items():
        data = merge(TrainConfig().to_dict(), {**over, "preset": name})
        registry.add(name, lambda data=data: from_dict(data), desc)
