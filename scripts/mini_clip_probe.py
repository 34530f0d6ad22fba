"""Does the mini CLIP learn shape? Trains the build's CLIP stage (`di_star.mini.build.train_clip`)
with variants of its vision tower and its data, each at the same small CPU budget, and measures
zero-shot colour and shape accuracy on ground-truth single-object renders (chance: 1/6 colour,
1/5 shape). The shipped CLIP picks the colour every time and the shape at chance
(`scripts/mini_quality.py --conditioning`); this says which change makes shape learnable, before
a GPU rebuild spends its time on it.

    .venv/bin/python scripts/mini_clip_probe.py --steps 300 --batch 128 --variants patch8 patch4 patch8+single

Variants: `patchP` = vision patch size P (the build's is 8); `+single` = half of the training
pairs are single-object scenes (every object alone: shape must be read to match its caption).
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


def single_object_pairs(n: int, seed: int) -> list:
    """n ground-truth renders of single-object captions ('a red circle'), cycling the 30 prompts."""
    from evalsuite.mini.world import COLOURS, SHAPES, render_for_caption
    prompts = [f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s}" for s in SHAPES for c in COLOURS]
    return [(render_for_caption(prompts[i % len(prompts)], np.random.default_rng([seed, i])),
             prompts[i % len(prompts)]) for i in range(n)], prompts


@torch.no_grad()
def zero_shot(model, prompts: list[str], per_prompt: int = 4) -> dict:
    from di_star.mini.build import clip_pixels, clip_tokenizer, to_pixels, tokenize
    from evalsuite.mini.world import parse_caption
    pairs, _ = single_object_pairs(len(prompts) * per_prompt, seed=777)   # not a training seed
    def unit(out) -> torch.Tensor:  # transformers 5 returns an output object, 4 a tensor
        return F.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1)
    img = unit(model.get_image_features(pixel_values=clip_pixels(to_pixels([p[0] for p in pairs]))))
    enc = tokenize(clip_tokenizer(), prompts, max_length=32)
    txt = unit(model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))
    pick = [parse_caption(prompts[j]).groups[0] for j in (img @ txt.T).argmax(1).tolist()]
    true = [parse_caption(c).groups[0] for _, c in pairs]
    return {"colour": float(np.mean([a.colour == b.colour for a, b in zip(pick, true)])),
            "shape": float(np.mean([a.shape == b.shape for a, b in zip(pick, true)]))}


def main() -> None:
    import di_star.mini.build as build
    from di_star.mini.configs import SIZES
    from dataclasses import replace
    from evalsuite.mini.world import training_pairs

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--variants", nargs="+", default=["patch8", "patch4", "patch8+single"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/mini_clip_probe.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    scenes = training_pairs(a.n_train, seed=0)
    singles, prompts = single_object_pairs(a.n_train // 2, seed=1)
    size = replace(SIZES["full"], clip_steps=a.steps, clip_batch=a.batch)
    base_vision = dict(build.CLIP_VISION)
    report = {"steps": a.steps, "batch": a.batch, "n_train": a.n_train, "chance": {"colour": 1 / 6, "shape": 1 / 5},
              "variants": {}}
    for v in a.variants:
        patch = int(v.split("+")[0].removeprefix("patch"))
        pairs = scenes[: a.n_train // 2] + singles if v.endswith("+single") else scenes
        build.CLIP_VISION = {**base_vision, "patch_size": patch}
        t0 = time.time()
        model = build.train_clip(build.to_pixels([p[0] for p in pairs]), [p[1] for p in pairs], size, seed=0,
                                 log=build.Log(quiet=True))
        report["variants"][v] = {**zero_shot(model, prompts), "train_s": round(time.time() - t0, 1)}
        print(v, report["variants"][v], flush=True)
    build.CLIP_VISION = base_vision
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
