"""The digits world's one-step generator behind the harness's pipeline call, so a toy run is
evaluated exactly like an SDXL checkpoint: `distar eval --model toy-digits:RUN_DIR --bench digits`.

The harness draws each image's noise from its seed (evalsuite.generate.initial_noise) and calls
`pipe(prompt=[...], latents=[B, 64], ...)`; diffusion-only arguments (steps, guidance, size) do
not apply to a one-step MLP and are ignored.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from di_star.toy import digits
from distar.core.errors import DistarError


class DigitsPipeline:
    def __init__(self, generator: torch.nn.Module):
        self.generator = generator.eval()

    @classmethod
    def from_source(cls, source: str) -> "DigitsPipeline":
        """'init' (the distilled starting generator) or a `distar train` digits run dir."""
        if source == "init":
            return cls(digits.DigitsWorld().initial_generator())
        path = Path(source) / "generator.safetensors"
        if not path.is_file():
            raise DistarError(f"No digits generator at {path}. Train one with "
                              f"`distar train --preset digits/di_star_in --out RUN` and pass "
                              f"--model toy-digits:RUN.")
        return cls(digits.DigitsWorld(digits.DigitsRecipe().scaled(run_recipe_scale(source)))
                   .load_generator(path))

    def set_progress_bar_config(self, **_) -> None:
        pass

    def to(self, device):
        self.generator.to(device)
        return self

    @torch.no_grad()
    def __call__(self, prompt: list[str], latents: torch.Tensor, **_ignored):
        cond = digits.parse_prompts(prompt).to(latents.device)
        x = self.generator(latents.float(), cond)
        pixels = np.round(digits.to_unit(x.cpu()) * 255).astype(np.uint8)  # [N, 8, 8]
        return SimpleNamespace(images=[Image.fromarray(p, mode="L") for p in pixels])


def run_recipe_scale(run_dir: str | Path) -> float:
    """The recipe scale a digits run was trained with (its cached networks depend on it)."""
    import json
    cfg = Path(run_dir) / "config.json"
    if not cfg.is_file():
        return 1.0
    return float(json.loads(cfg.read_text()).get("world", {}).get("recipe_scale", 1.0))


def pil_to_unit(images) -> np.ndarray:
    """PIL 8x8 greyscale images -> float array [N, 8, 8] in [0, 1] (the metrics' input)."""
    return np.stack([np.asarray(im.convert("L"), dtype=np.float64) / 255.0 for im in images])
