"""Stable Diffusion backbones behind the DI* interfaces: loading, the one-step generator, and the
eps-model call that `di_star.scores.VPEpsScore` turns into a score.

SDXL and SD1.5 UNets predict epsilon on the VP process ``x_t = alpha_t x0 + sigma_t eps`` of SD's
scaled-linear schedule. DMD2-SDXL-1step is such a UNet fed pure noise at the fixed timestep 399;
its image is the x0-prediction there, ``x0 = (z - sigma_399 eps_hat) / alpha_399``, which is also
what a 1-step LCMScheduler sampling with ``timesteps=[399]`` returns (its boundary coefficients
are 1 - 8e-9 and 2e-8 at t = 399), so an exported generator samples the same images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from di_star.noise import NoiseSchedule, append_dims
from distar.core.errors import DistarError
from evalsuite import models
from evalsuite.models import ModelSpec, resolve_model

SD_FAMILIES = ("sdxl", "sd15")  # the families whose UNets the SD trainer takes


@dataclass(frozen=True)
class TextCond:
    """A batch of prompts and their frozen text-encoder outputs (computed once per batch)."""
    prompts: tuple[str, ...]
    embeds: Tensor                    # [B, 77, D] cross-attention context
    pooled: Tensor | None = None      # SDXL: [B, P] pooled text embedding
    time_ids: Tensor | None = None    # SDXL: [B, 6] (original size, crop top-left, target size)

    def expand(self, batch: int) -> "TextCond":
        """Broadcast a one-row condition (the empty prompt) to `batch` rows."""
        if self.embeds.shape[0] == batch:
            return self
        if self.embeds.shape[0] != 1:
            raise ValueError(f"condition has {self.embeds.shape[0]} rows, batch has {batch}")
        grow = (lambda v: None if v is None else v.expand(batch, *v.shape[1:]))
        return TextCond(self.prompts * batch, grow(self.embeds), grow(self.pooled), grow(self.time_ids))


def unet_eps(unet: nn.Module, x_t: Tensor, t: Tensor, cond: TextCond) -> Tensor:
    """epsilon-hat of an SD / SDXL UNet (``unet`` may be DDP-wrapped)."""
    cond = cond.expand(x_t.shape[0])
    if t.ndim == 0:
        t = t.expand(x_t.shape[0])
    extra = {}
    if cond.pooled is not None:
        extra["added_cond_kwargs"] = {"text_embeds": cond.pooled, "time_ids": cond.time_ids}
    return unet(x_t, t, encoder_hidden_states=cond.embeds, **extra).sample


class EpsModel:
    """``(x_t, t, cond) -> eps_hat`` for one UNet; wrap with VPEpsScore for a score."""

    def __init__(self, unet: nn.Module):
        self.unet = unet

    def __call__(self, x_t: Tensor, t: Tensor, cond: TextCond) -> Tensor:
        return unet_eps(self.unet, x_t, t, cond)


class OneStepGenerator(nn.Module):
    """``g(z, c)``: the x0-prediction of a UNet fed pure noise ``z`` at a fixed timestep
    (DMD2-SDXL-1step: 399). The x0 arithmetic runs in fp32 whatever the autocast dtype."""

    def __init__(self, unet: nn.Module, schedule: NoiseSchedule, timestep: int):
        super().__init__()
        self.unet, self.schedule, self.timestep = unet, schedule, int(timestep)

    def forward(self, z: Tensor, cond: TextCond) -> Tensor:
        t = torch.full((z.shape[0],), self.timestep, device=z.device, dtype=torch.long)
        eps = unet_eps(self.unet, z, t, cond).float()
        a = append_dims(self.schedule.alpha(t), z.ndim).float()
        s = append_dims(self.schedule.sigma(t), z.ndim).float()
        return (z.float() - s * eps) / a


# Loading ---------------------------------------------------------------------------------------

def resolve_spec(name: str) -> ModelSpec:
    """An evalsuite model name or path:DIR; 'random:NAME' is NAME's architecture with random
    weights (GPU memory / speed measurements with nothing downloaded)."""
    if name.startswith("random:"):
        return resolve_model(name[len("random:"):], weights="random")
    return resolve_model(name)


def family_of(spec: ModelSpec) -> str:
    """The spec's family if the SD trainer takes it (SDXL or SD1.5 UNets), else a DistarError."""
    family = models.family_of(spec)
    if family not in SD_FAMILIES:
        taken = sorted(p for p, f in models.PIPELINE_FAMILIES.items() if f in SD_FAMILIES)
        raise DistarError(f"'{spec.name}' is a {spec.pipeline}; the SD trainer takes SDXL or SD1.5 "
                          f"UNets ({', '.join(taken)}).")
    return family


def load_unet(spec: ModelSpec, device: torch.device, dtype: torch.dtype):
    """Only the UNet of a spec the trainer takes (evalsuite.models.load_unet)."""
    family_of(spec)
    return models.load_unet(spec, device, dtype)


def load_reference_pipeline(spec: ModelSpec, device: torch.device):
    """The reference's whole pipeline (UNet, VAE, text encoders, tokenizers, scheduler) on
    `device`, in the recipe's dtype there (fp32 on CPU). Not evalsuite's cached copy: training
    moves and casts its modules."""
    family_of(spec)
    return models.fresh_pipeline(spec, device)


def encode_prompts(pipe, family: str, prompts: Sequence[str], resolution: int,
                   device: torch.device) -> TextCond:
    """Text-encoder outputs exactly as the pipeline computes them for sampling (no_grad)."""
    prompts = tuple(prompts)
    with torch.no_grad():
        if family == "sdxl":
            embeds, _, pooled, _ = pipe.encode_prompt(list(prompts), device=device,
                                                      num_images_per_prompt=1,
                                                      do_classifier_free_guidance=False)
            return TextCond(prompts, embeds, pooled, _time_ids(resolution, len(prompts), device, pooled.dtype))
        embeds, _ = pipe.encode_prompt(list(prompts), device, 1, False)
        return TextCond(prompts, embeds)


def null_condition(pipe, family: str, resolution: int, device: torch.device) -> TextCond:
    """The unconditional input the pipeline itself uses for CFG: SDXL base zeroes the empty
    prompt's embeddings (force_zeros_for_empty_prompt); SD1.5 encodes ''."""
    with torch.no_grad():
        if family == "sdxl":
            _, neg, _, neg_pooled = pipe.encode_prompt([""], device=device, num_images_per_prompt=1,
                                                       do_classifier_free_guidance=True)
            return TextCond(("",), neg, neg_pooled, _time_ids(resolution, 1, device, neg_pooled.dtype))
        _, neg = pipe.encode_prompt([""], device, 1, True)
        return TextCond(("",), neg)


def _time_ids(resolution: int, batch: int, device, dtype) -> Tensor:
    """SDXL micro-conditioning: original size, crop top-left (0, 0), target size."""
    ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=dtype, device=device)
    return ids.expand(batch, 6)

