"""A closed-form world only the tests use (tests/test_losses_closed_form.py's CFG terms); the
single-Gaussian worlds that scripts/measure_estimators.py also measures are in
di_star/closed_form.py."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from di_star.noise import NoiseSchedule, append_dims


@dataclass
class GaussianMixtureWorld:
    """Two classes, ``p(c) = 1/2``, ``x0 | c ~ N(m_c, tau^2 I)``; ``cond`` is 0 or 1, ``None`` = unconditional."""

    means: Tensor       # [2, D]
    tau: float
    schedule: NoiseSchedule

    def _var(self, t: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
        a = append_dims(self.schedule.alpha(t).to(torch.float64), ndim)
        s = append_dims(self.schedule.sigma(t).to(torch.float64), ndim)
        return a, a**2 * self.tau**2 + s**2

    def log_prob(self, x: Tensor, t: Tensor, cond) -> Tensor:
        """``log p_ref,t(x | cond)`` per sample, from the densities (not from the scores)."""
        a, v = self._var(t, x.ndim)
        d = x.shape[-1]
        comps = torch.stack([
            -0.5 * ((x - a * mk) ** 2 / v).sum(-1) - 0.5 * d * torch.log(2 * torch.pi * v.reshape(-1))
            for mk in self.means])                               # [2, B]
        if cond is None:
            return torch.logsumexp(comps, 0) - np.log(2.0)
        return comps[cond]

    def score(self, x: Tensor, t: Tensor, cond) -> Tensor:
        """Closed-form score: the class's Gaussian score, or the responsibility-weighted mixture."""
        a, v = self._var(t, x.ndim)
        comp_scores = torch.stack([-(x - a * mk) / v for mk in self.means])     # [2, B, D]
        if cond is not None:
            return comp_scores[cond]
        logits = torch.stack([-0.5 * ((x - a * mk) ** 2 / v).sum(-1) for mk in self.means])
        resp = torch.softmax(logits, 0).unsqueeze(-1)
        return (resp * comp_scores).sum(0)

    def __call__(self, x_t: Tensor, t: Tensor, cond=None) -> Tensor:
        return self.score(x_t, t, cond)
