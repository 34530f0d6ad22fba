"""Train the mini attribute classifier at its default recipe and report its held-out accuracy on
fresh renders (a seed stream training never uses).

    .venv/bin/python scripts/train_mini_classifier.py --out /tmp/mini_classifier [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from evalsuite.mini.classifier import (held_out_accuracy, load_attribute_classifier,
                                       train_attribute_classifier)

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=None, help="training renders (default: the recipe's)")
    ap.add_argument("--held-out", type=int, default=2000)
    args = ap.parse_args()
    t0 = time.time()
    kwargs = {"n": args.n} if args.n else {}
    train_attribute_classifier(args.out, seed=args.seed, log=print, **kwargs)
    print(f"trained in {time.time() - t0:.0f} s with {torch.get_num_threads()} threads")
    acc = held_out_accuracy(load_attribute_classifier(args.out), n=args.held_out)
    print(json.dumps(acc, indent=1))
