"""Closed-form worlds for checking the DI* losses: Gaussians stay Gaussian under diffusion.

``GaussianWorld``: generator ``x0 = mu + s * z`` (diagonal ``s``), reference ``N(m, diag(tau^2))``,
one noise level ``t``. Both diffused distributions are Gaussian, so the generator's score (the
ideal assistant), the reference score, divergence (3.2) and the KL are all closed form.
Product code, not test-only: scripts/measure_estimators.py (a script users run) measures the
estimators on these worlds and prints the figures docs/maths.md quotes; the closed-form tests
(tests/test_losses_closed_form.py) check the losses against the same worlds. The two-class
mixture only the CFG tests use lives in tests/closed_form_helpers.py. float64 throughout.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from di_star.losses import score_regularizer_loss
from di_star.noise import NoiseSchedule, append_dims


def gauss_hermite_grid(dim: int, order: int = 48) -> tuple[Tensor, Tensor]:
    """Nodes ``[order^dim, dim]`` and weights ``[order^dim]`` with ``sum w f(xi) ~ E_{xi~N(0,I)} f(xi)``."""
    x, w = np.polynomial.hermite_e.hermegauss(order)
    w = w / np.sqrt(2 * np.pi)
    grids = np.meshgrid(*([x] * dim), indexing="ij")
    wgrids = np.meshgrid(*([w] * dim), indexing="ij")
    nodes = np.stack([g.ravel() for g in grids], axis=1)
    weights = np.prod(np.stack([g.ravel() for g in wgrids], axis=1), axis=1)
    return torch.from_numpy(nodes), torch.from_numpy(weights)


@dataclass
class GaussianWorld:
    mu: Tensor          # [D] generator mean
    s: Tensor           # [D] generator scale (diagonal)
    m: Tensor           # [D] reference mean
    tau: Tensor         # [D] reference std (diagonal)
    schedule: NoiseSchedule
    t: Tensor           # 0-d noise level / timestep

    @property
    def dim(self) -> int:
        return self.mu.shape[0]

    def alpha(self, t: Tensor | None = None) -> Tensor:
        """``alpha(t)`` shaped to broadcast against ``[B, D]`` (0-d for the world's own t)."""
        t = self.t if t is None else t
        return append_dims(self.schedule.alpha(t).to(torch.float64), 2)

    def sigma(self, t: Tensor | None = None) -> Tensor:
        t = self.t if t is None else t
        return append_dims(self.schedule.sigma(t).to(torch.float64), 2)

    def gen_var(self, s: Tensor | None = None, t: Tensor | None = None) -> Tensor:
        s = self.s if s is None else s
        return self.alpha(t) ** 2 * s**2 + self.sigma(t) ** 2

    def ref_var(self, t: Tensor | None = None) -> Tensor:
        return self.alpha(t) ** 2 * self.tau**2 + self.sigma(t) ** 2

    def gen_score(self, x: Tensor, mu: Tensor | None = None, s: Tensor | None = None,
                  t: Tensor | None = None) -> Tensor:
        """Score of ``p_{theta,t} = N(alpha mu, alpha^2 s^2 + sigma^2)``, differentiable in mu and s."""
        mu = self.mu if mu is None else mu
        return -(x - self.alpha(t) * mu) / self.gen_var(s, t)

    def ref_score(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        return -(x - self.alpha(t) * self.m) / self.ref_var(t)

    # ScoreModel views: the ideal assistant is the score at STOPPED theta.
    def s_psi(self, x_t: Tensor, t: Tensor, cond=None) -> Tensor:
        return self.gen_score(x_t, self.mu.detach(), self.s.detach(), t)

    def s_ref(self, x_t: Tensor, t: Tensor, cond=None) -> Tensor:
        return self.ref_score(x_t, t)

    def divergence_grad(self, dist, order: int = 48) -> Tensor:
        """Theorem 3.1's target: ``d/dtheta E_{x ~ p_{sg[theta],t}} d(s_{theta,t}(x) - s_ref(x))``.

        Sampling distribution stopped, score live; the expectation by Gauss-Hermite quadrature
        (exact for the squared distance, ~1e-12 for pseudo-Huber). Returns ``[grad_mu, grad_s]``.
        """
        mu = self.mu.detach().clone().requires_grad_(True)
        s = self.s.detach().clone().requires_grad_(True)
        xi, wq = gauss_hermite_grid(self.dim, order)
        x = self.alpha() * self.mu.detach() + self.gen_var().detach().sqrt() * xi
        y = self.gen_score(x, mu, s) - self.ref_score(x)
        value = (wq * dist(y)).sum()
        g_mu, g_s = torch.autograd.grad(value, [mu, s])
        return torch.cat([g_mu, g_s])

    def sampling_path_grad(self, dist, order: int = 48) -> Tensor:
        """The OTHER half of the total derivative: sampling distribution live, score stopped,
        ``d/dtheta E_{x ~ p_{theta,t}} d(s_{sg[theta],t}(x) - s_ref(x))``. Not Theorem 3.1's target."""
        mu = self.mu.detach().clone().requires_grad_(True)
        s = self.s.detach().clone().requires_grad_(True)
        xi, wq = gauss_hermite_grid(self.dim, order)
        x = self.alpha() * mu + self.gen_var(s).sqrt() * xi
        y = self.gen_score(x, self.mu.detach(), self.s.detach()) - self.ref_score(x)
        g_mu, g_s = torch.autograd.grad((wq * dist(y)).sum(), [mu, s])
        return torch.cat([g_mu, g_s])

    def kl(self, mu: Tensor | None = None, s: Tensor | None = None) -> Tensor:
        """``KL(p_{theta,t} || p_{ref,t})`` between the two diffused diagonal Gaussians."""
        mu = self.mu if mu is None else mu
        vp, vq = self.gen_var(s), self.ref_var()
        return 0.5 * (vp / vq + self.alpha() ** 2 * (mu - self.m) ** 2 / vq - 1 + (vq / vp).log()).sum()

    def kl_grad(self) -> Tensor:
        mu = self.mu.detach().clone().requires_grad_(True)
        s = self.s.detach().clone().requires_grad_(True)
        g_mu, g_s = torch.autograd.grad(self.kl(mu, s), [mu, s])
        return torch.cat([g_mu, g_s])

    def per_sample_params(self, n: int) -> tuple[Tensor, Tensor]:
        """theta repeated per sample, so one backward pass yields per-sample gradients ``[n, D]``."""
        mu = self.mu.detach().expand(n, self.dim).clone().requires_grad_(True)
        s = self.s.detach().expand(n, self.dim).clone().requires_grad_(True)
        return mu, s

    def draw(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        t = self.t.expand(n).clone()
        return z, eps, t

    def per_sample_grads(self, loss_fn, n: int, generator: torch.Generator, t: Tensor | None = None) -> Tensor:
        """Per-sample gradients ``[n, 2D]`` (mu then s) of ``loss_fn(x0, t, eps) -> [n]``.

        ``t`` defaults to the world's noise level for every sample; pass ``[n]`` levels to integrate over t.
        """
        z, eps, t_own = self.draw(n, generator)
        t = t_own if t is None else t
        mu, s = self.per_sample_params(n)
        loss = loss_fn(mu + s * z, t, eps)
        g_mu, g_s = torch.autograd.grad(loss.sum(), [mu, s])
        return torch.cat([g_mu, g_s], dim=1)

    def regularizer_grads(self, dist, estimator: str, n: int, generator: torch.Generator,
                          t: Tensor | None = None, **kw) -> Tensor:
        """Per-sample theta-gradients of ``score_regularizer_loss`` with the ideal assistant."""
        return self.per_sample_grads(
            lambda x0, t, eps: score_regularizer_loss(x0, t, eps, self.s_psi, self.s_ref, self.schedule, None,
                                                      dist, estimator, **kw),
            n, generator, t)

    def at(self, t: Tensor) -> "GaussianWorld":
        """The same world at another noise level."""
        return GaussianWorld(self.mu, self.s, self.m, self.tau, self.schedule, torch.as_tensor(t))


def maths_world(schedule: NoiseSchedule, t: Tensor) -> GaussianWorld:
    """The 2-D world of docs/maths.md's measured figures: generator mu = (0.6, -0.4),
    s = (1.35, 0.7), reference m = (0, 0.2), tau = (1, 0.8). s[0] = 1.35 at VE sigma = 0.8 gives
    its (s^2 + sigma^2) / sigma^2 = 3.85."""
    def v(*x):
        return torch.tensor(x, dtype=torch.float64)
    return GaussianWorld(mu=v(0.6, -0.4), s=v(1.35, 0.7), m=v(0.0, 0.2), tau=v(1.0, 0.8),
                         schedule=schedule, t=t)


class DetachedGrad:
    """A distance whose u = d'(y) is cut from the graph: the 'exact' estimator with only u
    detached (docs/maths.md's third measurement; a diagnostic, never a training option)."""

    def __init__(self, base):
        self.base = base

    def __call__(self, y):
        return self.base(y)

    def grad(self, y):
        return self.base.grad(y).detach()


def mean_and_se(g: Tensor) -> tuple[Tensor, Tensor]:
    """Monte-Carlo mean of per-sample values ``[n, k]`` and its standard error ``std / sqrt(n)``."""
    return g.mean(0), g.std(0) / g.shape[0] ** 0.5


__all__ = ["GaussianWorld", "DetachedGrad", "gauss_hermite_grid", "maths_world", "mean_and_se"]
