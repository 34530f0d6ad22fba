"""Does the mini CLIP learn shape? Trains the build's CLIP stage (`di_star.mini.build.train_clip`)
with variants of its vision tower and its data, each at the same small CPU budget, and measures
zero-shot colour and shape accuracy on ground-truth single-object renders (chance: 1/6 colour,
1/5 shape). The shipped CLIP picks the colour every time and the shape at chance
(`di_star/mini/quality.py --conditioning`); this says which change makes shape learnable, before
a GPU rebuild spends its time on it.

    .venv/bin/python -m di_star.mini.probes.clip --steps 300 --batch 128 --variants patch8 patch4 patch8+single

Variants: `patchP` = vision patch size P (the build's `clip_patch`); `+single` = half of the
training pairs replaced by renders of the 30 probe prompts themselves (the world's own scenes are
already 45% single objects; this adds the probe's exact wording, on other renders); `+neg` =
shape-swapped captions as hard negatives (the build's `clip_hard_negatives`); `+visionS` = the
vision tower first trained S steps on the renderer's scene labels and then frozen (the build's
`clip_vision_steps`). Every variant is scored by the build's own check,
`di_star.mini.build.clip_zero_shot`.

    .venv/bin/python -m di_star.mini.probes.clip --n-train 30000 --steps 600 --variants patch8+vision3000
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import evalsuite  # noqa: F401  (environment fixes before torch / transformers)
import numpy as np
import torch

from di_star.mini import scene as world
from di_star.mini.scene import render_for_caption, single_object_prompts


def single_object_pairs(n: int, seed: int) -> list:
    """n ground-truth renders of single-object captions ('a red circle'), cycling the 30 prompts."""
    prompts = single_object_prompts()
    return [(render_for_caption(prompts[i % len(prompts)], np.random.default_rng([seed, i])),
             prompts[i % len(prompts)]) for i in range(n)]


def main() -> None:
    import di_star.mini.build as build
    from di_star.mini.configs import SIZES
    from dataclasses import replace

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--variants", nargs="+", default=["patch8", "patch4", "patch8+single"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="where the CLIPs train: cpu, cuda, cuda:1 (rendering and "
                    "scoring data stay on the CPU)")
    ap.add_argument("--workers", type=int, default=1, help="processes rendering the training pairs")
    ap.add_argument("--out", type=Path, default=Path("runs/mini_clip_probe.json"))
    ap.add_argument("--save", type=Path, default=None,
                    help="also save each variant's CLIP as a transformers folder under this one")
    ap.add_argument("--load", type=Path, default=None,
                    help="score the CLIPs an earlier run saved under this folder (one per variant) "
                         "instead of training them")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from evalsuite.models import resolve_device
    device = resolve_device(a.device)
    if not a.load:  # the build's own rendering: world.training_pairs(n_train, seed 0) as pixels
        px_world, cap_world = build.render_pairs(a.n_train, seed=0, workers=a.workers)
        single = single_object_pairs(a.n_train // 2, seed=1)
        px_single, cap_single = build.to_pixels([im for im, _ in single]), [c for _, c in single]
    report = {"steps": a.steps, "batch": a.batch, "n_train": a.n_train, "device": str(device),
              "chance": {"colour": 1 / 6, "shape": 1 / 5}, "variants": {}}
    for v in a.variants:
        parts = v.split("+")
        vision = [p for p in parts[1:] if p.startswith("vision") and p[6:].isdigit()]
        if parts[0][:5] != "patch" or not set(parts[1:]) - set(vision) <= {"single", "neg"} or len(vision) > 1:
            ap.error(f"unknown variant {v!r}: patchP[+single][+neg][+visionS]")
        size = replace(SIZES["full"], clip_steps=a.steps, clip_batch=a.batch,
                       clip_patch=int(parts[0].removeprefix("patch")), clip_hard_negatives="neg" in parts,
                       clip_vision_steps=int(vision[0][6:]) if vision else 0)
        if a.load:
            from transformers import CLIPModel
            model = CLIPModel.from_pretrained(a.load / v, dtype=torch.float32).eval()
            how = {"loaded_from": str(a.load / v)}
        else:
            t0 = time.time()
            half = a.n_train // 2
            px, caps = (torch.cat([px_world[:half], px_single]), cap_world[:half] + cap_single) \
                if "single" in parts else (px_world, cap_world)
            labels = None
            if size.clip_vision_steps:  # the renderer's labels of the same images
                if "single" in parts:
                    ap.error("+vision needs scene labels, which +single's renders do not keep")
                labels = build.scene_labels([world.training_scene(0, i) for i in range(a.n_train)])
            model = build.train_clip(px, caps, size, seed=0, log=build.Log(quiet=True), device=device,
                                     labels=labels)
            how = {"train_s": round(time.time() - t0, 1)}
        # the build's own check, on renders no run trains on, plain and paraphrased prompts
        report["variants"][v] = {**build.clip_zero_shot(model), **how}
        print(v, report["variants"][v], flush=True)
        if a.save:
            build.save_clip(model, a.save / v)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
