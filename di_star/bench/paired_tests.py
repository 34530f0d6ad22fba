"""Null calibration of `evalsuite.metrics.stats.paired_test`: the share of simulated no-difference
comparisons each method rejects at nominal 5%.

Two settings, as the scoring tables meet them:
- clustered: 4 images per prompt whose differences share a per-prompt effect (intra-prompt
  correlation 0.8), 30 prompts; each method with `clusters=` (prompts as units) and without
  (images as units, what t and Wilcoxon did before clusters were honoured);
- small n: 15 independent pairs.

    .venv/bin/python -m di_star.bench.paired_tests --sims 2000
"""
from __future__ import annotations

import argparse

import numpy as np

from evalsuite.metrics.stats import paired_test


def clustered_null(rng, prompts: int = 30, per_prompt: int = 4, icc: float = 0.8):
    """(a, b, prompt ids) with no true difference and correlated images within a prompt."""
    shared = rng.normal(0, np.sqrt(icc), size=prompts).repeat(per_prompt)
    d = shared + rng.normal(0, np.sqrt(1 - icc), size=prompts * per_prompt)
    b = rng.normal(size=prompts * per_prompt)
    return b + d, b, np.arange(prompts).repeat(per_prompt)


def rejection_rate(sims: int, make, method: str, use_clusters: bool, n_boot: int,
                   seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for i in range(sims):
        a, b, c = make(rng)
        r = paired_test(a, b, method=method, n_boot=n_boot, seed=i,
                        clusters=c if use_clusters else None)
        hits += r.p_value < 0.05
    return hits / sims


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=2000)
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args(argv)

    def small(rng):
        return rng.normal(size=15), rng.normal(size=15), None

    se = np.sqrt(0.05 * 0.95 / args.sims)
    print(f"rejection rate at nominal 5% ({args.sims} simulated nulls each; "
          f"binomial s.e. {se:.3f})")
    print("clustered (30 prompts x 4 images, intra-prompt correlation 0.8):")
    for method in ("t", "wilcoxon", "bootstrap", "permutation"):
        before = rejection_rate(args.sims, clustered_null, method, False, args.n_boot)
        after = rejection_rate(args.sims, clustered_null, method, True, args.n_boot)
        print(f"  {method:12s} images as units {before:6.3f}   prompts as units "
              f"(clusters=) {after:6.3f}")
    print("small n (15 independent pairs):")
    for method in ("bootstrap", "permutation", "t", "wilcoxon"):
        print(f"  {method:12s} {rejection_rate(args.sims, small, method, False, args.n_boot):6.3f}")


if __name__ == "__main__":
    main()
