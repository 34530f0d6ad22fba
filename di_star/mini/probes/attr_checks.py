"""Which of mini_attr_acc's strict checks (di_star.mini.scene.request_checks) a generator's
images pass, per kind of check (shape, colour, size, count, position, relation, only_asked,
background), beside chance for the words a generator could ignore: position and relation (the
detected objects in every placement on distinct cells, equally likely) and background (1 / 4).
Images of a results store, as the attribute classifier reads them; prompts are the units (each
prompt's images averaged, 95% studentised bootstrap over prompts).

    .venv/bin/python -m di_star.mini.probes.attr_checks --results runs/attr_eval [--bench mini_parti]
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from itertools import permutations
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from evalsuite.metrics.stats import bootstrap_ci
from evalsuite.store import ResultsStore
from di_star.mini import scene as W
from di_star.mini.classifier import default_folder, detect, load_attribute_classifier

def kind(check: str) -> str:
    """'0.position' -> 'position'."""
    return check.split(".")[-1]


def chance(scene: W.Scene, req: W.Request) -> dict[str, float]:
    """Pass rates of the position / relation checks over every placement of the scene's objects
    on distinct cells (at most 9P3 = 504), and of the background check for a random background."""
    out: dict[str, list[float]] = defaultdict(list)
    for cells in permutations(W.POSITIONS, len(scene.objects)):
        moved = W.Scene(tuple(replace(o, position=c) for o, c in zip(scene.objects, cells)),
                        scene.background)
        for k, ok in W.request_checks(moved, req).items():
            if kind(k) in ("position", "relation"):
                out[kind(k)].append(float(ok))
    rates = {k: float(np.mean(v)) for k, v in out.items()}
    if req.background:
        rates["background"] = 1 / len(W.BACKGROUNDS)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True, type=Path, help="a `distar eval --out` folder")
    ap.add_argument("--bench", default="mini_parti")
    args = ap.parse_args()
    store = ResultsStore(args.results, create=False, readonly=True)
    images = store.table("images", "WHERE bench=?", (args.bench,))
    model = load_attribute_classifier(default_folder())
    for name, sub in images.groupby("model"):
        scenes = detect(model, [Image.open(store.root / p) for p in sub.path])
        seen = defaultdict(lambda: defaultdict(list))    # kind -> prompt -> pass values
        base = defaultdict(lambda: defaultdict(list))    # kind -> prompt -> chance rates
        for scene, i, text in zip(scenes, sub.prompt_index, sub.prompt):
            req = W.parse_caption(text)
            for k, ok in W.request_checks(scene, req).items():
                seen[kind(k)][i].append(float(ok))
            for k, rate in chance(scene, req).items():
                base[k][i].append(rate)
        print(f"## {name} ({len(sub)} images)")
        for k in sorted(seen):
            v = [np.mean(x) for x in seen[k].values()]
            ci = bootstrap_ci(v)
            line = f"  {k:<11} {ci.mean:.2f} [{max(ci.low, 0):.2f}, {min(ci.high, 1):.2f}] (prompts {len(v)})"
            if k in base:
                c = bootstrap_ci([np.mean(x) for x in base[k].values()])
                line += f"; chance {c.mean:.2f} [{max(c.low, 0):.2f}, {min(c.high, 1):.2f}]"
            print(line)


if __name__ == "__main__":
    main()
