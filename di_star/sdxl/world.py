"""The SDXL / SD1.5 world: DI*'s three networks on Stable Diffusion UNets, a frozen VAE and text
encoders, and a differentiable preference reward through the VAE decoder.

- generator: a one-step UNet (DMD2-SDXL-1step by default) fed pure noise at a fixed timestep;
- reference: the frozen SDXL base (or SDXL-DPO, SD1.5) UNet, eps-prediction -> VPEpsScore;
- assistant: initialised from the reference, trained by DSM on generator samples (full
  fine-tune, or LoRA through peft);
- reward: `metric.score_tensor(decode(x0), prompts)`, PickScore by default.

Everything the loop draws (prompt indices, z, t, eps) comes from the loop's CPU generator, so a
run is a function of its seed; prompts are encoded once per batch, under no_grad, on the device.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from di_star.config import TrainConfig
from di_star.noise import NoiseSchedule, vp_schedule
from di_star.scores import VPEpsScore
from di_star.sdxl.models import (EpsModel, OneStepGenerator, TextCond, encode_prompts, family_of,
                                 load_reference_pipeline, load_unet, null_condition, resolve_spec)
from di_star.sdxl.prompts import load_prompts
from di_star.sdxl import hooks
from di_star.sdxl.reward import build_reward, reward_modules
from di_star.world import WORLDS, RunContext, WorldEntry, WorldModels
from distar.core.dtypes import to_dtype
from distar.core.errors import DistarError


class SDWorld:
    """`di_star.world.World` for SDXL / SD1.5 (`name` is the family)."""

    def __init__(self, cfg: TrainConfig, device: torch.device | str | None = None):
        sd = cfg.sd
        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.spec_ref = resolve_spec(sd.reference)
        self.spec_gen = resolve_spec(sd.generator)
        self.name = family_of(self.spec_ref)
        if family_of(self.spec_gen) != self.name:
            raise DistarError(f"sd.generator '{sd.generator}' is {family_of(self.spec_gen)} but "
                              f"sd.reference '{sd.reference}' is {self.name}; they must share the "
                              f"architecture.")
        # A registered one-step generator names the timestep it was trained at (DMD2: 399; the mini
        # world's one-step init: its own); feeding it another would start DI* from a broken model.
        gen_t = self.spec_gen.timesteps
        if gen_t is not None and len(gen_t) == 1 and self.spec_gen.steps == 1 and gen_t[0] != sd.generator_timestep:
            raise DistarError(f"sd.generator_timestep = {sd.generator_timestep} but sd.generator "
                              f"'{sd.generator}' is a one-step model sampled at timestep {gen_t[0]}. "
                              f"Fix: set sd.generator_timestep = {gen_t[0]}.")
        if cfg.world.name != self.name:
            raise DistarError(f"world.name = '{cfg.world.name}' but sd.reference '{sd.reference}' is "
                              f"{self.name}. Fix: set world.name = '{self.name}'.")
        self.resolution = sd.resolution or self.spec_ref.resolution
        # mixed_precision uses accelerate's names: 'no' (fp32), 'bf16', 'fp16'
        self.frozen_dtype = to_dtype("fp32" if sd.mixed_precision == "no" else sd.mixed_precision)
        self.prompts = load_prompts(sd.prompts)
        self.options = hooks.loop_options(cfg)
        self._models: WorldModels | None = None
        self._quick_eval: hooks.QuickEval | None = None
        self.schedule: NoiseSchedule | None = None
        self.null_cond: Any = None

    # Build ---------------------------------------------------------------------------------
    def build(self) -> WorldModels:
        """Load everything once (later calls return the same modules)."""
        if self._models is not None:
            return self._models
        sd = self.cfg.sd
        dev = self.device
        pipe = load_reference_pipeline(self.spec_ref, dev)
        self.pipe = pipe
        self.vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        multiple = self.vae_scale * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
        if self.resolution % multiple:
            raise DistarError(f"sd.resolution {self.resolution} must be a multiple of {multiple}.")
        self.latent_shape = (pipe.unet.config.in_channels, self.resolution // self.vae_scale,
                             self.resolution // self.vae_scale)
        from diffusers import DDPMScheduler
        abar = DDPMScheduler.from_config(pipe.scheduler.config).alphas_cumprod
        self.schedule = vp_schedule(abar)

        # Trainable networks in fp32 (master weights); autocast does the half-precision math.
        if self.spec_gen == self.spec_ref:
            gen_unet = copy.deepcopy(pipe.unet)
        else:
            gen_unet = load_unet(self.spec_gen, dev, pipe.unet.dtype)
        generator = OneStepGenerator(gen_unet.float(), self.schedule, sd.generator_timestep)
        assistant = copy.deepcopy(pipe.unet).float()
        if sd.assistant_lora_rank > 0:
            assistant = _add_lora(assistant, sd.assistant_lora_rank, self.frozen_dtype, self.cfg.run.seed)

        # Frozen networks, stored in the mixed-precision dtype. SDXL's VAE overflows in fp16 (its
        # config says force_upcast): it stays fp32 then.
        self.vae_fp32 = self.frozen_dtype == torch.float16 and bool(pipe.vae.config.get("force_upcast"))
        encoders = [m for m in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None))
                    if m is not None]
        # The export ships the VAE and text encoders as loaded, not their mixed-precision copies.
        self.export_states = {}
        for key in ("vae", "text_encoder", "text_encoder_2"):
            m = getattr(pipe, key, None)
            target = torch.float32 if key == "vae" and self.vae_fp32 else self.frozen_dtype
            if m is not None and m.dtype != target:
                self.export_states[key] = {k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()}
        self.reference = pipe.unet.to(self.frozen_dtype)
        for m in encoders:
            m.to(self.frozen_dtype)
        pipe.vae.to(torch.float32 if self.vae_fp32 else self.frozen_dtype)
        self.vae = pipe.vae
        # Built even at alpha_rew = 0 (KL / SIM rows): it scores every run the same way.
        self.reward_model = build_reward(sd.reward, dev, self.frozen_dtype)
        frozen = [self.reference, self.vae, *encoders, *reward_modules(self.reward_model)]
        for m in frozen:
            m.requires_grad_(False).eval()
        if sd.gradient_checkpointing:
            generator.unet.enable_gradient_checkpointing()
            assistant.enable_gradient_checkpointing()
        if sd.checkpoint_frozen:  # inert under no_grad: it only acts where 'exact' / the reward backprop
            self.reference.enable_gradient_checkpointing()
            self.vae.enable_gradient_checkpointing()

        self.null_cond = null_condition(pipe, self.name, self.resolution, dev)
        schedule = self.schedule
        self._models = WorldModels(
            generator=generator, assistant=assistant,
            make_assistant_score=lambda module: VPEpsScore(EpsModel(module), schedule),
            reference_score=VPEpsScore(EpsModel(self.reference), schedule),
            frozen=frozen)
        return self._models

    # Samplers (CPU draws from the loop's generator) -------------------------------------------
    def encode(self, prompts) -> TextCond:
        return encode_prompts(self.pipe, self.name, prompts, self.resolution, self.device)

    def sample_cond(self, batch: int, generator: torch.Generator) -> TextCond:
        idx = torch.randint(len(self.prompts), (batch,), generator=generator).tolist()
        return self.encode([self.prompts[i] for i in idx])

    def sample_z(self, batch: int, generator: torch.Generator) -> Tensor:
        return torch.randn((batch, *self.latent_shape), generator=generator)

    def sample_t(self, batch: int, generator: torch.Generator) -> Tensor:
        return torch.randint(self.cfg.sd.t_min, self.cfg.sd.t_max, (batch,), generator=generator)

    def sample_eps(self, like: Tensor, generator: torch.Generator) -> Tensor:
        return torch.randn(like.shape, generator=generator)

    # Reward ----------------------------------------------------------------------------------
    def decode(self, x0: Tensor) -> Tensor:
        """Latents -> images in [0, 1] (not clamped: the metrics clamp after resizing, as PIL does),
        differentiable in x0."""
        z = x0 / self.vae.config.scaling_factor
        if self.vae.config.get("shift_factor") is not None:
            z = z + self.vae.config.shift_factor
        if self.vae_fp32:
            with torch.autocast(self.device.type, enabled=False):
                image = self.vae.decode(z.float()).sample
        else:
            image = self.vae.decode(z.to(self.vae.dtype)).sample
        return image.float() / 2 + 0.5

    def reward(self, x0: Tensor, cond: TextCond) -> Tensor:
        return self.reward_model.score_tensor(self.decode(x0), list(cond.prompts))

    def evaluate(self, generator: nn.Module, n: int, seed: int) -> dict[str, float]:
        """Mean reward of `n` images on fixed prompts and noise (the same for every run)."""
        if n < 1:
            return {}
        g = torch.Generator().manual_seed(seed)
        scores = []
        with torch.no_grad():
            for start in range(0, n, self.cfg.optim.batch_size):
                b = min(self.cfg.optim.batch_size, n - start)
                cond = self.encode([self.prompts[(start + i) % len(self.prompts)] for i in range(b)])
                z = self.sample_z(b, g).to(self.device)
                with torch.autocast(self.device.type, dtype=self.frozen_dtype,
                                    enabled=self.frozen_dtype != torch.float32):
                    scores.append(self.reward(generator(z, cond), cond).float().cpu())
        s = torch.cat(scores)
        return {"reward": s.mean().item(), "reward_std": s.std().item() if len(s) > 1 else 0.0}

    # The loop's hooks (di_star.sdxl.hooks) ------------------------------------------------------
    def after_step(self, run: RunContext, step: int) -> dict[str, float]:
        if self.cfg.sd.eval_every and (self._quick_eval is None or self._quick_eval.run_dir != run.run_dir):
            self._quick_eval = hooks.QuickEval(self.cfg, run.run_dir, self)
        return hooks.after_step(self, run, step, self._quick_eval if self.cfg.sd.eval_every else None)

    def export(self, run: RunContext, step: int) -> dict:
        return hooks.export(self, run, step)


WORLDS.add("sdxl", WorldEntry(SDWorld, hooks.loop_options), "Stable Diffusion XL UNets (generator, "
           "reference, assistant) and a reward through the VAE; tiny_sdxl and the mini world run on it")
WORLDS.add("sd15", WorldEntry(SDWorld, hooks.loop_options), "Stable Diffusion 1.5 UNets, as sdxl")


def _add_lora(unet: nn.Module, rank: int, base_dtype: torch.dtype, seed: int) -> nn.Module:
    """LoRA on the attention projections (peft); the base weights freeze in `base_dtype`. The
    adapters' random initialisation is a function of `seed` alone."""
    try:
        from peft import LoraConfig
    except ImportError:
        raise DistarError("sd.assistant_lora_rank > 0 needs peft, which is not installed. Fix: "
                          "`pip install peft`, or set sd.assistant_lora_rank = 0 (full fine-tune).") from None
    unet.requires_grad_(False).to(base_dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                    target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    for p in unet.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # LoRA weights train in fp32
    return unet
