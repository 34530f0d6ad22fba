"""Mini world figures: render speed, the gold judge's shape calibration and separation.

    .venv/bin/python -m di_star.mini.probes.world_speed              # speed + gold separation
    .venv/bin/python -m di_star.mini.probes.world_speed --calibrate  # gold.SHAPE_STATS from renders

Separation: for the 300 mini_parti prompts, the gold score of a ground-truth render of the prompt
vs a ground-truth render of ANOTHER prompt, a blank background and uniform noise; reports means,
the share of pairs the judge ranks right, and the same per challenge.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from di_star.mini import gold, scene as W


def render_speed(n: int = 2000) -> float:
    W.training_pairs(50, seed=99)  # warm caches
    t0 = time.perf_counter()
    W.training_pairs(n, seed=0)
    return n / (time.perf_counter() - t0)


def calibrate(n: int = 1000) -> None:
    rng = np.random.default_rng(0)
    feats: dict[str, list] = {s: [] for s in W.SHAPES}
    radii: dict[tuple, list] = {}
    for i in range(n):
        s, z = W.SHAPES[i % len(W.SHAPES)], W.SIZES[(i // len(W.SHAPES)) % 2]
        scene = W.Scene((W.Obj(s, W.COLOURS[int(rng.integers(6))], z,
                               W.POSITIONS[int(rng.integers(9))]),),
                        W.BACKGROUNDS[int(rng.integers(4))])
        blobs = gold.analyse(W.render(scene, rng)).blobs
        if len(blobs) == 1:
            feats[s].append(blobs[0].descriptors)
            radii.setdefault((z, s), []).append(blobs[0].radius)
    for s, f in feats.items():
        f = np.array(f)
        print(f"{s:9s} n={len(f)} mean={np.round(f.mean(0), 3).tolist()} "
              f"std={np.round(f.std(0), 3).tolist()}")
    for (z, s), r in sorted(radii.items()):
        print(f"radius {z:5s} {s:9s} min={min(r):.2f} max={max(r):.2f}")


def separation() -> None:
    rng = np.random.default_rng(1)
    held = W.held_out_prompts()
    captions, challenges = [t for t, _, _ in held], np.array([c for _, _, c in held])
    n = len(captions)
    own = [W.render_for_caption(c, rng) for c in captions]
    other = own[1:] + own[:1]
    blank = [Image.new("RGB", (64, 64), W.BACKGROUND_RGB["grey"])] * n
    noise = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]
    t0 = time.perf_counter()
    s_own = gold.gold_score(own, captions)
    speed = n / (time.perf_counter() - t0)
    print(f"gold judge: {speed:.0f} images/s")
    print(f"gold(own caption's ground truth) mean {s_own.mean():.3f} (min {s_own.min():.3f})")
    for name, imgs in (("another caption's ground truth", other), ("blank", blank),
                       ("noise", noise)):
        s = gold.gold_score(imgs, captions)
        print(f"gold({name}) mean {s.mean():.3f}; own > it in {np.mean(s_own > s):.3f} of pairs")
        if name.startswith("another"):
            for ch in W.CHALLENGES:
                m = challenges == ch
                print(f"  {ch:12s} own {s_own[m].mean():.3f} vs other {s[m].mean():.3f}; "
                      f"own > other in {np.mean(s_own[m] > s[m]):.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--calibrate", action="store_true")
    args = ap.parse_args()
    if args.calibrate:
        calibrate()
    else:
        print(f"render: {render_speed():.0f} images/s (training_pairs, one process)")
        separation()
