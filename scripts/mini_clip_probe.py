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
from mini_quality import single_object_prompts, zero_shot  # scripts/ is on sys.path


def single_object_pairs(n: int, seed: int) -> list:
    """n ground-truth renders of single-object captions ('a red circle'), cycling the 30 prompts."""
    from evalsuite.mini.world import render_for_caption
    prompts = single_object_prompts()
    return [(render_for_caption(prompts[i % len(prompts)], np.random.default_rng([seed, i])),
             prompts[i % len(prompts)]) for i in range(n)]


@torch.no_grad()
def probe(model, per_prompt: int = 4) -> dict:
    """mini_quality.zero_shot of `model` on fresh single-object renders (a seed no run trains on)."""
    from di_star.mini.build import clip_pixels, clip_tokenizer, to_pixels, tokenize
    prompts = single_object_prompts()
    pairs = single_object_pairs(len(prompts) * per_prompt, seed=777)

    def unit(out) -> torch.Tensor:  # transformers 5 returns an output object, 4 a tensor
        return F.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1)
    img = unit(model.get_image_features(pixel_values=clip_pixels(to_pixels([p[0] for p in pairs]))))
    enc = tokenize(clip_tokenizer(), prompts, max_length=32)
    txt = unit(model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))
    scores = zero_shot((img @ txt.T).numpy(), [c for _, c in pairs], prompts)
    return {"colour": scores["colour"], "shape": scores["shape"]}


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
    singles = single_object_pairs(a.n_train // 2, seed=1)
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
        report["variants"][v] = {**probe(model), "train_s": round(time.time() - t0, 1)}
        print(v, report["variants"][v], flush=True)
    build.CLIP_VISION = base_vision
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
