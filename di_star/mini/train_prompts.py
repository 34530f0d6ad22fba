"""Write the mini world's DI* training prompts (di_star/sdxl/data/mini_train_prompts.txt).

DI* needs prompts only, no images. As the paper trains on LAION prompts and evaluates on Parti
and COCO, these are fresh captions of the world's own scene distribution (di_star.mini.scene,
seed below), with every prompt of the mini benchmarks removed so no evaluation prompt is trained on.

    .venv/bin/python -m di_star.mini.train_prompts            # deterministic; rerun after the world changes
"""
from __future__ import annotations

import numpy as np

from di_star.sdxl.presets import MINI_TRAIN_PROMPTS
from distar.core.atomic import write_text
from distar.core.errors import DistarError
from evalsuite.benchmarks import load_benchmark
from di_star.mini.scene import caption, sample_scene

N, SEED = 4000, 20_261_129
BENCHES = ("mini_parti", "mini_coco", "mini_hps")


def main() -> None:
    held_out: set[str] = set()
    for name in BENCHES:
        try:
            held_out |= {p.text.strip().lower() for p in load_benchmark(name).prompts}
        except DistarError:
            print(f"{name} is not registered (yet): nothing of it to hold out")
    rng = np.random.default_rng(SEED)
    seen: set[str] = set()
    prompts = []
    while len(prompts) < N:
        text = caption(sample_scene(rng), rng)
        key = text.strip().lower()
        if key in held_out or key in seen:
            continue
        seen.add(key)
        prompts.append(text)
    write_text(MINI_TRAIN_PROMPTS, "\n".join(prompts) + "\n")
    print(f"{len(prompts)} prompts -> {MINI_TRAIN_PROMPTS} ({len(held_out)} benchmark prompts held out)")


if __name__ == "__main__":
    main()
