"""The memory plan of one DI* step on one GPU, before activations: arithmetic on parameter counts
and dtypes, no GPU needed. scripts/gpu_suite.py prints it beside what it measures.

    python -m di_star.memory              # the full-SDXL plan of the di_star_sdxl preset

What one process holds in steady state (di_star/sdxl/world.py, di_star/trainer.py):
- generator and assistant: trained, fp32 master weights (autocast does the half-precision math);
- frozen reference UNet, both text encoders, the VAE and the reward model: in the mixed-precision
  dtype (the VAE stays fp32 under fp16, SDXL's VAE overflows in it);
- gradients: fp32, of the network being updated only (they are freed after each step); under DDP
  both networks' gradient buckets stay allocated;
- optimizer states, per trained parameter: AdamW 8 bytes (two fp32 moments); bitsandbytes' 8-bit
  AdamW 2 bytes plus one fp32 absmax per block of 256 and per moment, and fp32 moments for tensors
  under 4096 elements (bitsandbytes' min_8bit_size); AdamW with bf16 moments 4 bytes;
- a generator EMA, when run.ema > 0: one more fp32 copy of the generator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

GIB = 2**30
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
BNB_BLOCK, BNB_MIN_8BIT = 256, 4096
OPTIMIZERS = ("adamw", "adamw8bit", "adamw_bf16")   # adamw_bf16: arithmetic only, a fallback


def optimizer_state_bytes(numels: Sequence[int], kind: str) -> float:
    """Bytes of the two Adam moments for parameters of these tensor sizes."""
    if kind == "adamw":
        return 8.0 * sum(numels)
    if kind == "adamw_bf16":
        return 4.0 * sum(numels)
    if kind == "adamw8bit":
        total = 0.0
        for n in numels:
            if n < BNB_MIN_8BIT:
                total += 8.0 * n
            else:
                blocks = -(-n // BNB_BLOCK)
                total += 2.0 * n + 2 * 4.0 * blocks
        return total
    raise ValueError(f"unknown optimizer {kind!r}; one of {OPTIMIZERS}")


@dataclass(frozen=True)
class Counts:
    """Parameter counts of the networks one DI* step holds."""
    unet: Sequence[int]          # tensor sizes of one UNet (generator = assistant = reference)
    text_encoders: int
    vae: int
    reward: int


def step_memory(c: Counts, optimizer: str, mixed_precision: str = "bf16", *,
                ddp: bool = False, ema: bool = False) -> dict[str, float]:
    """Bytes per part of one process's steady state, and their 'total' (before activations)."""
    unet = float(sum(c.unet))
    frozen = DTYPE_BYTES["fp32" if mixed_precision == "no" else mixed_precision]
    vae_bytes = 4 if mixed_precision in ("fp16", "no") else frozen
    parts = {
        "generator weights (fp32)": 4 * unet,
        "assistant weights (fp32)": 4 * unet,
        "gradients (fp32)": 4 * unet * (2 if ddp else 1),
        "optimizer states": 2 * optimizer_state_bytes(c.unet, optimizer),
        "reference UNet (frozen)": frozen * unet,
        "text encoders (frozen)": frozen * float(c.text_encoders),
        "VAE (frozen)": vae_bytes * float(c.vae),
        "reward model (frozen)": frozen * float(c.reward),
    }
    if ema:
        parts["generator EMA (fp32)"] = 4 * unet
    parts["total"] = sum(parts.values())
    return parts


def plan_rows(c: Counts, mixed_precision: str = "bf16", ddp: bool = False) -> dict[str, dict]:
    """step_memory for every optimizer, in GiB."""
    return {o: {k: v / GIB for k, v in step_memory(c, o, mixed_precision, ddp=ddp).items()}
            for o in OPTIMIZERS}


def sdxl_counts() -> Counts:
    """Full SDXL's counts, from the architectures built on the meta device (no memory)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from di_star.sdxl.reward import VIT_H14
    from evalsuite.models.architectures import build_pipeline
    pipe = build_pipeline("sdxl", "full", device="meta")
    with torch.device("meta"):
        reward = CLIPModel(CLIPConfig(**VIT_H14))

    def n(m):
        return sum(p.numel() for p in m.parameters())
    return Counts(unet=[p.numel() for p in pipe.unet.parameters()],
                  text_encoders=n(pipe.text_encoder) + n(pipe.text_encoder_2),
                  vae=n(pipe.vae), reward=n(reward))


def world_counts(world, models) -> Counts:
    """The counts of an SD world as built (di_star.sdxl.world.SDWorld and its WorldModels)."""
    from di_star.sdxl.reward import reward_modules

    def n(m):
        return sum(p.numel() for p in m.parameters()) if m is not None else 0
    pipe = world.pipe
    return Counts(unet=[p.numel() for p in models.generator.parameters()],
                  text_encoders=n(getattr(pipe, "text_encoder", None))
                  + n(getattr(pipe, "text_encoder_2", None)),
                  vae=n(world.vae), reward=sum(n(m) for m in reward_modules(world.reward_model)))


def render(rows: dict[str, dict], title: str) -> str:
    parts = [k for k in next(iter(rows.values()))]
    lines = [title, "", "| part (GiB) | " + " | ".join(rows) + " |",
             "|---|" + "---|" * len(rows)]
    for p in parts:
        lines.append(f"| {p} | " + " | ".join(f"{rows[o][p]:.3g}" for o in rows) + " |")
    return "\n".join(lines)


def main() -> None:
    from di_star.presets import get_preset
    sd = get_preset("di_star_sdxl").sd
    c = sdxl_counts()
    print(f"UNet {sum(c.unet) / 1e9:.3f} B, text encoders {c.text_encoders / 1e9:.3f} B, "
          f"VAE {c.vae / 1e6:.1f} M, reward (PickScore ViT-H/14) {c.reward / 1e9:.3f} B parameters")
    for ddp in (False, True):
        print()
        print(render(plan_rows(c, sd.mixed_precision, ddp),
                     f"di_star_sdxl step, {sd.mixed_precision} frozen nets, full assistant, "
                     f"{'DDP (both gradients held)' if ddp else 'one process'}; before activations; "
                     f"the preset's optimizer: {sd.optimizer}"))


if __name__ == "__main__":
    main()
