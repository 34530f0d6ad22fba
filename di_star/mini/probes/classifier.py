"""Train the mini attribute classifier at its default recipe and report its held-out accuracy on
fresh renders (a seed stream training never uses), then mini_attr_acc / mini_attr_frac of
ground-truth renders of the 300 mini_parti prompts (per challenge): the ceiling a generator can
reach by that metric.

    .venv/bin/python -m di_star.mini.probes.classifier --out /tmp/mini_classifier [--seed 0]
    .venv/bin/python -m di_star.mini.probes.classifier --out /tmp/mini_classifier --skip-training
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from evalsuite.metrics import load_metric
from di_star.mini.metrics import reference_renders
from di_star.mini import scene as W
from di_star.mini.classifier import (held_out_accuracy, load_attribute_classifier,
                                     train_attribute_classifier)

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=None, help="training renders (default: the recipe's)")
    ap.add_argument("--held-out", type=int, default=2000)
    ap.add_argument("--skip-training", action="store_true", help="measure the folder as it is")
    args = ap.parse_args()
    if not args.skip_training:
        t0 = time.time()
        kwargs = {"n": args.n} if args.n else {}
        train_attribute_classifier(args.out, seed=args.seed, log=print, **kwargs)
        print(f"trained in {time.time() - t0:.0f} s with {torch.get_num_threads()} threads")
    acc = held_out_accuracy(load_attribute_classifier(args.out), n=args.held_out)
    print(json.dumps(acc, indent=1))
    held = W.held_out_prompts()
    texts, challenges = [t for t, _, _ in held], np.array([c for _, _, c in held])
    truth = reference_renders(texts, seed=0)
    for name in ("mini_attr_acc", "mini_attr_frac"):
        v = load_metric(name, classifier_path=args.out).score(truth, texts)
        per = ", ".join(f"{c} {v[challenges == c].mean():.3f}" for c in W.CHALLENGES)
        print(f"{name} of mini_parti ground truth: {v.mean():.3f} ({per})")
