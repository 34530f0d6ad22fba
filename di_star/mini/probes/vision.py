"""Can the mini CLIP's vision tower see shape at all? Trains the build's CLIP vision tower
(`CLIPVisionModel`, `di_star.mini.configs.CLIP_VISION` at patch size P) *supervised*: a linear
head on its pooled output classifies the shape of single-object world scenes, with the CLIP
stage's optimiser, steps and batch. Scored on the same 120 fresh ground-truth renders as
`di_star.mini.build.clip_zero_shot`. If it learns shape quickly, the contrastive training (not
the architecture) is what is slow (docs/mini_build.md).

    .venv/bin/python -m di_star.mini.probes.vision --steps 600 --batch 128 --patches 8 4
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import evalsuite  # noqa: F401  (environment fixes before torch / transformers)
import numpy as np
import torch
import torch.nn.functional as F

import di_star.mini.build as build
from di_star.mini.configs import CLIP_VISION
from di_star.mini import scene as world


def main() -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--patches", type=int, nargs="+", default=[8, 4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/mini_vision_probe.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    px, caps = build.render_pairs(a.n_train, seed=0)  # the CLIP probe's training pairs
    groups = [world.parse_caption(c).groups for c in caps]
    keep = [i for i, g in enumerate(groups) if len(g) == 1 and g[0].count == 1]
    x = build.clip_pixels(px[keep])
    y = torch.tensor([world.SHAPES.index(groups[i][0].shape) for i in keep])
    prompts = world.single_object_prompts()
    truth = [prompts[i % len(prompts)] for i in range(len(prompts) * 4)]  # clip_zero_shot's renders
    test = build.clip_pixels(build.to_pixels([world.render_for_caption(p, np.random.default_rng([777, i]))
                                              for i, p in enumerate(truth)]))
    test_y = torch.tensor([world.SHAPES.index(world.parse_caption(p).groups[0].shape) for p in truth])
    report = {"steps": a.steps, "batch": a.batch, "train_images": len(keep), "chance": 1 / len(world.SHAPES),
              "patches": {}}
    for patch in a.patches:
        torch.manual_seed(0)
        tower = CLIPVisionModel(CLIPVisionConfig(**{**CLIP_VISION, "patch_size": patch}))
        head = torch.nn.Linear(CLIP_VISION["hidden_size"], len(world.SHAPES))
        params = list(tower.parameters()) + list(head.parameters())
        opt, sched = build.stage_optimizer(params, 1e-3, a.steps, wd=0.05)
        gen = torch.Generator().manual_seed(0)
        t0 = time.time()
        tower.train()
        for step, idx in enumerate(build.index_batches(len(x), a.batch, a.steps, gen)):
            loss = F.cross_entropy(head(tower(pixel_values=x[idx]).pooler_output), y[idx])
            build.stage_step(opt, sched, loss, step, a.steps, build.Log(quiet=True), "vision")
        tower.eval()
        with torch.no_grad():
            acc = float((head(tower(pixel_values=test).pooler_output).argmax(1) == test_y).float().mean())
        report["patches"][str(patch)] = {"shape_accuracy": round(acc, 4), "train_s": round(time.time() - t0, 1)}
        print(patch, report["patches"][str(patch)], flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
