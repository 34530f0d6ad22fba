"""Is the text encoder what keeps the mini reference from drawing the asked shape? A controlled
A/B on the CPU (docs/mini_build.md, "Why the shapes are soft"):

    .venv/bin/python -m di_star.mini.probes.reference --clip runs/clip_models/patch4 --steps 400 --per-combo 8

Both arms start from the shipped reference UNet (or, with --from-scratch, from the build's fresh
initialisation) and train it with the build's own reference stage (`di_star.mini.build.train_reference`: DSM, min-SNR, caption dropout, EMA) for the same
steps on the same training pairs and seed; they differ only in the CLIP whose text towers are the
pipeline's two text encoders: (a) the shipped CLIP, (b) each CLIP in --clip (one trained to tell
shapes apart, e.g. by `di_star/mini/probes/clip.py --save`). Each arm, and the shipped reference
untouched, then samples the 30 single-object prompts x --per-combo noises with the reference's
recipe (DPM-Solver++ 15 steps, CFG 4; for every arm the noises of di_star/mini/quality.py, so the
untouched arm at --per-combo 4 reproduces its figure), and the world's attribute classifier reads
them: strict accuracy (one object, asked colour and shape), and how often the asked colour /
shape is drawn. Each fine-tuned arm is compared with the fine-tuned control image by image
(same prompt, same noise): the mean paired difference in 'asked shape drawn' with a 95% interval. If (b) draws the asked shape far more often than (a), the text
encoder was the bottleneck, and a rebuild must train the CLIP first.
Writes --out (JSON) and a sample grid beside it (rows: prompts; columns: arms).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import evalsuite  # noqa: F401  (environment fixes before torch / diffusers)
import numpy as np
import torch
from di_star.mini.quality import attribute_accuracy, noise_for, per_attribute

import di_star.mini.build as build
from di_star.mini.configs import SIZES
from di_star.mini import weights as mw
from di_star.mini.classifier import detect, load_attribute_classifier
from di_star.mini import scene as world
from di_star.mini.scene import single_object_prompts


def sample(pipe, prompts: list[str], z: torch.Tensor) -> list:
    return build.to_pil(build.decode(pipe.vae, build.sample_reference(pipe, prompts, z, batch=64)))


def main() -> None:
    from transformers import CLIPModel
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, nargs="+", required=True,
                    help="candidate CLIP folders (transformers), one fine-tuned arm each")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--n-train", type=int, default=12000)
    ap.add_argument("--per-combo", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--from-scratch", action="store_true",
                    help="train each arm's UNet from a fresh initialisation, as the build does (with --steps "
                         "2000 --n-train 30000: the shipped reference's recipe), instead of fine-tuning the "
                         "shipped one")
    ap.add_argument("--no-control", action="store_true",
                    help="skip arm (a); arms are then compared with the untouched shipped reference (the "
                         "committed 400-step run found arm (a) equal to it: docs/mini_build.md)")
    ap.add_argument("--out", type=Path, default=Path("runs/mini_reference_probe.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    root = mw.mini_dir()
    shipped = build.load_pipeline(root / "pipeline")
    clf = load_attribute_classifier(root / "classifier")
    t0 = time.time()
    pixels, captions = build.render_pairs(a.n_train, seed=0)
    latents = build.encode_latents(shipped.vae, pixels)
    single = single_object_prompts()
    prompts = single * a.per_combo
    from evalsuite.models.specs import resolve_model
    z = noise_for(resolve_model("mini_ref"), len(single), a.per_combo)
    size = replace(SIZES["large"], unet_steps=a.steps, unet_batch=a.batch)
    report = {"from_scratch": a.from_scratch, "steps": a.steps, "batch": a.batch, "n_train": a.n_train, "per_combo": a.per_combo,
              "world": mw.manifest_digest(root), "render_s": round(time.time() - t0, 1), "arms": {}}
    grid = {}

    asked = [world.parse_caption(p).groups[0].shape for p in prompts]
    hits = {}

    def score(name: str, pipe, clip, train_s: float | None) -> None:
        images = sample(pipe, prompts, z)
        scenes = detect(clf, images)
        hits[name] = np.array([any(o.shape == s for o in sc.objects) for sc, s in zip(scenes, asked)], float)
        report["arms"][name] = {"clip_zero_shot": build.clip_zero_shot(clip),
                                "attr_acc": attribute_accuracy(scenes, prompts),
                                **per_attribute(scenes, prompts), "train_s": train_s}
        control = "shipped reference" if a.no_control else "fine-tuned, shipped CLIP"
        if name != control and control in hits:
            d = hits[name] - hits[control]
            half = 1.96 * d.std(ddof=1) / len(d) ** 0.5
            report["arms"][name]["shape_present_vs_control"] = {"control": control,
                "mean": round(float(d.mean()), 4), "ci95": [round(float(d.mean() - half), 4),
                                                            round(float(d.mean() + half), 4)]}
        grid[name] = images
        print(name, json.dumps(report["arms"][name]), flush=True)

    shipped_clip = CLIPModel.from_pretrained(root / "clip", dtype=torch.float32).eval()
    score("shipped reference", shipped, shipped_clip, None)
    arms = [] if a.no_control else [("fine-tuned, shipped CLIP", root / "clip")]
    arms += [(f"fine-tuned, CLIP {c.name}", c) for c in a.clip]
    for name, folder in arms:
        clip = CLIPModel.from_pretrained(folder, dtype=torch.float32).eval()
        pipe = build.build_pipeline(shipped.vae, clip, shipped.unet)
        t = time.time()
        pipe = build.train_reference(pipe, latents, captions, size, seed=0, log=build.Log(),
                                     init=None if a.from_scratch else shipped.unet)
        score(name, pipe, clip, round(time.time() - t, 1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    from PIL import Image
    rows = list(range(0, len(single), 3))
    tile = 64
    img = Image.new("RGB", (len(grid) * tile, len(rows) * tile), (255, 255, 255))
    for c, images in enumerate(grid.values()):
        for r, i in enumerate(rows):
            img.paste(images[i], (c * tile, r * tile))
    img.resize((img.width * 2, img.height * 2), Image.NEAREST).save(a.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
