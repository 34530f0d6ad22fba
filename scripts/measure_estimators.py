#!/usr/bin/env python
"""Measure the score regulariser's two gradient estimators against Theorem 3.1's closed form.

World (di_star.closed_form.GaussianWorld): generator x0 = mu + s * z in 2-D with diagonal s,
reference N(m, diag(tau^2)), the assistant replaced by the generator's exact diffused score.
Prints markdown tables:
  1. per distance, at one noise level: the closed-form gradient of divergence (3.2) with
     pi_t = p_{sg[theta],t}; the 'exact' and 'x0' estimators (mean +- standard error); the variant
     that detaches only u = d'(y); and the other half of the total derivative (sampling path);
  2. the x0/closed-form ratios across noise levels, against (alpha^2 s^2 + sigma^2) / sigma^2;
  3. wall-clock per generator step of each estimator with small frozen MLP score networks.

    .venv/bin/python scripts/measure_estimators.py            # ~1 min on 2 CPU cores
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from di_star.closed_form import DetachedGrad, GaussianWorld, maths_world, mean_and_se
from di_star.losses import PseudoHuber, SquaredL2, score_regularizer_loss
from di_star.noise import ve_schedule

F64 = torch.float64
PARAMS = ["mu[0]", "mu[1]", "s[0]", "s[1]"]


def world_at(sigma: float) -> GaussianWorld:
    return maths_world(ve_schedule(), torch.tensor(sigma, dtype=F64))


def fmt(mean, se=None):
    return f"{mean:+.4f}" if se is None else f"{mean:+.4f} ± {se:.4f}"


def gradient_table(world: GaussianWorld, dist, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    truth = world.divergence_grad(dist)
    ex, ex_se = mean_and_se(world.regularizer_grads(dist, "exact", n, g))
    x0, x0_se = mean_and_se(world.regularizer_grads(dist, "x0", n, g))
    du, du_se = mean_and_se(world.regularizer_grads(DetachedGrad(dist), "exact", n, g))
    other = world.sampling_path_grad(dist)
    print(f"\n### {dist!r}, sigma = {world.sigma().item():g}, n = {n:,}\n")
    print("| param | closed form (Thm 3.1) | exact | (exact-cf)/SE | x0 (listing) | x0 / cf | u detached | u-det / cf "
          "| sampling-path half |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, p in enumerate(PARAMS):
        print(f"| {p} | {fmt(truth[i])} | {fmt(ex[i], ex_se[i])} | {(ex[i] - truth[i]) / ex_se[i]:+.2f} "
              f"| {fmt(x0[i], x0_se[i])} | {x0[i] / truth[i]:.3f} | {fmt(du[i], du_se[i])} "
              f"| {du[i] / truth[i]:.3f} | {fmt(other[i])} |")


def ratio_sweep(dist, sigmas, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    print(f"\n### x0 / closed-form ratio across noise levels, {dist!r}, coordinate 0, n = {n:,}\n")
    print("| sigma | V/sigma^2 | x0/cf for mu[0] | x0/cf for s[0] | V/(2 sigma^2) | (exact-cf)/SE, mu[0] and s[0] |")
    print("|---|---|---|---|---|---|")
    for sigma in sigmas:
        w = world_at(sigma)
        truth = w.divergence_grad(dist)
        x0, _ = mean_and_se(w.regularizer_grads(dist, "x0", n, g))
        ex, ex_se = mean_and_se(w.regularizer_grads(dist, "exact", n, g))
        v = (w.gen_var()[0] / w.sigma() ** 2).item()
        z = (ex - truth) / ex_se
        print(f"| {sigma:g} | {v:.3f} | {x0[0] / truth[0]:.3f} | {x0[2] / truth[2]:.3f} | {v / 2:.3f} "
              f"| {z[0]:+.2f}, {z[2]:+.2f} |")


def mlp(dim: int, width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim + 1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                         nn.Linear(width, width), nn.SiLU(), nn.Linear(width, dim))


def cost_table(dim: int, width: int, batch: int, iters: int) -> None:
    """Seconds per generator step (forward + backward) with frozen MLP scores standing in for the UNets."""
    torch.manual_seed(0)
    gen = nn.Linear(dim, dim)
    nets = [mlp(dim, width).requires_grad_(False) for _ in range(2)]
    scores = [lambda x, t, c, f=f: f(torch.cat([x, t.log().unsqueeze(1)], 1)) for f in nets]
    sched, dist = ve_schedule(), PseudoHuber(1.0)
    print(f"\n### cost per generator step: frozen 3-hidden-layer MLPs (width {width}), dim {dim}, batch {batch}, "
          f"{torch.get_num_threads()} CPU threads\n")
    print("| estimator | ms / step | relative |")
    print("|---|---|---|")
    times = {}
    for est in ("x0", "exact"):
        for i in range(iters + 3):
            if i == 3:
                start = time.perf_counter()
            z, eps = torch.randn(batch, dim), torch.randn(batch, dim)
            t = torch.full((batch,), 0.8)
            loss = score_regularizer_loss(gen(z), t, eps, scores[0], scores[1], sched, None, dist, est).mean()
            gen.zero_grad(set_to_none=True)
            loss.backward()
        times[est] = (time.perf_counter() - start) / iters * 1e3
    for est, ms in times.items():
        print(f"| {est} | {ms:.1f} | {ms / times['x0']:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=4_000_000, help="Monte-Carlo samples for the main table")
    ap.add_argument("--sweep-samples", type=int, default=500_000, help="samples per noise level in the sweep")
    ap.add_argument("--sigma", type=float, default=0.8)
    ap.add_argument("--c", type=float, default=0.3, help="pseudo-Huber c (score units)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-cost", action="store_true")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, float64, seed {a.seed}")
    for dist in (SquaredL2(), PseudoHuber(a.c)):
        gradient_table(world_at(a.sigma), dist, a.samples, a.seed)
    for dist in (SquaredL2(), PseudoHuber(a.c)):
        ratio_sweep(dist, (0.05, 0.2, 0.8, 2.0, 5.0), a.sweep_samples, a.seed + 1)
    if not a.skip_cost:
        cost_table(dim=64, width=512, batch=1024, iters=20)


if __name__ == "__main__":
    main()
