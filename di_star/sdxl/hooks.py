"""What the SD worlds add around the one training loop (di_star.trainer): the loop's settings
from the [sd] section (`loop_options`: DDP or FSDP via di_star.sdxl.sharding, bf16 / fp16
autocast, gradient accumulation and clipping, 8-bit AdamW, TensorBoard), PNG sample grids, a
quick evaluation through evalsuite, and the final diffusers export. SDWorld (di_star.sdxl.world)
calls them from its `after_step` / `export` hooks.

Besides the loop's files, an SD run directory holds:
  tb/                  TensorBoard logs (`tensorboard --logdir RUN/tb`)
  samples/             PNG sample grids, fixed prompts and noise
  eval/                quick evaluations (an evalsuite results store); eval_scores.jsonl their scores
  export/              the final generator as a diffusers pipeline + distar_recipe.json
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from torch import Tensor

from di_star.config import TrainConfig
from di_star.sdxl.export import EXPORT_DIR, export_pipeline
from di_star.sdxl.sharding import gather_full, shard_unet_module
from di_star.world import LoopOptions, RunContext
from distar.core import atomic
from distar.core.dtypes import to_dtype

SAMPLE_SEED = 7  # sample grids: the same prompts and noise at every step, in every run


def loop_options(cfg: TrainConfig) -> LoopOptions:
    sd = cfg.sd
    return LoopOptions(
        mixed_precision=sd.mixed_precision, log_with=None if sd.log_with == "none" else sd.log_with,
        optimizer=sd.optimizer, weight_decay=sd.weight_decay, max_grad_norm=sd.max_grad_norm,
        grad_accum=sd.grad_accum, shard=shard_unet_module if sd.fsdp else None,
        # sharded parameters are gathered in the mixed-precision dtype; master weights stay fp32
        shard_dtype=to_dtype(sd.mixed_precision) if sd.mixed_precision != "no" else None)


def sample_grid(world, generator, n: int, path: Path, write: bool) -> Tensor:
    """Decode n images from fixed prompts and noise and save them as one PNG row grid. Every
    process calls it (a sharded generator's forward is collective); those with write=False
    only compute."""
    from PIL import Image

    g = torch.Generator().manual_seed(SAMPLE_SEED)
    cond = world.encode([world.prompts[i % len(world.prompts)] for i in range(n)])
    z = world.sample_z(n, g).to(world.device)
    with torch.no_grad(), torch.autocast(world.device.type, dtype=world.frozen_dtype,
                                         enabled=world.frozen_dtype != torch.float32):
        images = world.decode(generator(z, cond)).clamp(0, 1).float().cpu()
    grid = torch.cat(list(images), dim=2)  # [3, H, n W]
    if not write:
        return grid
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    atomic.write_bytes(path, buf.getvalue())
    return grid


class QuickEval:
    """Export the current generator, generate a small benchmark with evalsuite, score it."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, world):
        self.cfg, self.run_dir, self.world = cfg, run_dir, world
        self.metric = None

    def __call__(self, accelerator, generator_unet, step: int) -> dict[str, float]:
        """Every process calls it (gathering a sharded generator is collective)."""
        from PIL import Image

        from evalsuite.generate import EvalRequest, run_eval
        from evalsuite.models.loading import load_pipeline

        sd = self.cfg.sd
        model_dir = self.run_dir / "eval_model"
        state = gather_full(generator_unet.state_dict(), keep=accelerator.is_main_process)
        if accelerator.is_main_process:
            export_pipeline(self.world, generator_unet.config, state, self.cfg, step, model_dir)
        del state
        accelerator.wait_for_everyone()
        run = run_eval(EvalRequest(model=f"path:{model_dir}", bench=sd.eval_bench, limit=sd.eval_limit,
                                   out=self.run_dir / "eval", device=str(self.world.device)))
        load_pipeline.cache_clear()  # each export is a new recipe; keep no stale pipeline alive
        if not accelerator.is_main_process:
            return {}
        if self.metric is None:
            if sd.eval_metric:
                from evalsuite.metrics import load_metric
                self.metric = load_metric(sd.eval_metric, device=str(self.world.device))
            else:
                self.metric = self.world.reward_model
        images = [Image.open(run.store.root / p).convert("RGB") for p in run.images.path]
        scores = self.metric.score(images, list(run.images.prompt))
        name = sd.eval_metric or sd.reward
        return {f"eval/{name}": float(scores.mean())}


def after_step(world, run: RunContext, step: int, quick_eval: QuickEval | None) -> dict[str, float]:
    """Sample grids every sd.sample_every steps (and at the end), quick evaluations every
    sd.eval_every steps; returns the evaluation scores (main process)."""
    sd, acc, main = run.cfg.sd, run.accelerator, run.accelerator.is_main_process
    if sd.sample_every and (step % sd.sample_every == 0 or step == run.cfg.run.max_steps):
        grid = sample_grid(world, run.generator, sd.sample_images, run.run_dir / "samples" / f"step-{step:07d}.png",
                           write=main)
        if sd.log_with == "tensorboard" and main:
            acc.get_tracker("tensorboard", unwrap=True).add_image("samples", grid, step)
    if quick_eval is None or step % sd.eval_every:
        return {}
    scores = quick_eval(acc, run.generator.unet, step)
    if scores and main:
        with open(run.run_dir / "eval_scores.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **scores}) + "\n")
    return scores


def export(world, run: RunContext, step: int) -> dict:
    """The final generator as a diffusers pipeline in RUN/export (skipped when that step's export
    is already there: a rerun of a finished run)."""
    out = run.run_dir / EXPORT_DIR
    if _export_step(out) != step:
        state = gather_full(run.generator.unet.state_dict(), keep=run.accelerator.is_main_process)
        if run.accelerator.is_main_process:
            export_pipeline(world, run.generator.unet.config, state, run.cfg, step, out)
        del state
    return {"export": str(out)}


def _export_step(export: Path) -> int | None:
    from evalsuite.models.loading import RECIPE_FILE
    f = export / RECIPE_FILE
    try:
        return json.loads(f.read_text())["training"]["step"] if f.exists() else None
    except (OSError, ValueError, KeyError, TypeError):  # damaged: export again
        return None
