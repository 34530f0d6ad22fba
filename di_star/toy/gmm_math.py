"""Closed forms for a class-conditional 2-D Gaussian mixture under VE noising.

If x0 | c ~ sum_m pi_m N(mu_m, s_m^2 I) over the modes m of class c, then x_sigma = x0 + sigma*eps
is again a mixture, sum_m pi_m N(mu_m, (s_m^2 + sigma^2) I), so log p_sigma(x | c), its score and
the class posterior p(c | x_sigma) are exact. The unconditional density mixes the classes with a
uniform prior. This is what makes CFG exact in the toy lab: no reference network is trained.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class GMMSpec:
    n_classes: int = 4
    modes_per_class: int = 3
    radius: float = 3.5          # modes sit evenly on a ring of this radius
    mode_std: float = 0.55       # chosen so neighbouring modes (other classes) overlap a little
    reward_width: float = 3.0    # length scale of the preference bump around the preferred mode

    @property
    def n_modes(self) -> int:
        return self.n_classes * self.modes_per_class


def gmm_layout(spec: GMMSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Means [M, 2], per-mode std [M], class of each mode [M]. Mode j sits at angle 2*pi*j/M and
    belongs to class j mod C, so every class is spread around the ring and its neighbours on the
    ring are other classes (the overlap is what gives CFG something to do)."""
    m = spec.n_modes
    ang = 2 * math.pi * torch.arange(m, dtype=torch.float64) / m
    means = spec.radius * torch.stack([ang.cos(), ang.sin()], dim=1)
    stds = torch.full((m,), spec.mode_std, dtype=torch.float64)
    mode_class = torch.arange(m) % spec.n_classes
    return means, stds, mode_class


def preferred_mode(spec: GMMSpec) -> torch.Tensor:
    """Index of the mode the preference reward favours, per class: the class's first mode."""
    return torch.arange(spec.n_classes)


class GMMDensity(nn.Module):
    """Exact log p_sigma(x | c), score grad_x log p_sigma(x | c) and class posterior.
    `cond=None` is the unconditional mixture (uniform class prior)."""

    def __init__(self, spec: GMMSpec):
        super().__init__()
        self.spec = spec
        means, stds, mode_class = gmm_layout(spec)
        self.register_buffer("means", means.float())
        self.register_buffer("stds", stds.float())
        self.register_buffer("mode_class", mode_class)

    def _component_logits(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log N(x; mu_m, (s_m^2 + sigma^2) I) + log pi_m for every mode, [B, M]; pi_m is uniform
        within a class and classes are equally likely, so pi_m = 1/M for the joint."""
        var = self.stds[None, :] ** 2 + sigma.reshape(-1, 1).to(x.dtype) ** 2       # [B, M]
        d2 = ((x[:, None, :] - self.means[None, :, :]) ** 2).sum(-1)                 # [B, M]
        return -0.5 * d2 / var - torch.log(2 * math.pi * var) - math.log(self.spec.n_modes)

    def _mask(self, cond: torch.Tensor | None, batch: int, device) -> torch.Tensor | None:
        if cond is None:
            return None
        cond = cond.to(device=device, dtype=torch.long).expand(batch)
        return self.mode_class[None, :] == cond[:, None]

    def log_prob(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """log p_sigma(x | c), per sample [B]."""
        logits = self._component_logits(x, sigma)
        mask = self._mask(cond, x.shape[0], x.device)
        if mask is None:
            return torch.logsumexp(logits, dim=1)
        # p(x | c) = p(x, c) / p(c) with p(c) = 1/C
        return torch.logsumexp(logits.masked_fill(~mask, -math.inf), dim=1) + math.log(self.spec.n_classes)

    def score(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """grad_x log p_sigma(x | c) = sum_m r_m(x) (mu_m - x) / (s_m^2 + sigma^2)."""
        logits = self._component_logits(x, sigma)
        mask = self._mask(cond, x.shape[0], x.device)
        if mask is not None:
            logits = logits.masked_fill(~mask, -math.inf)
        resp = torch.softmax(logits, dim=1)                                            # [B, M]
        var = self.stds[None, :] ** 2 + sigma.reshape(-1, 1).to(x.dtype) ** 2
        return ((resp / var)[:, :, None] * (self.means[None] - x[:, None, :])).sum(1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.score(x, sigma, cond)

    def class_log_posterior(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log p(c | x_sigma), [B, C], by Bayes with a uniform class prior."""
        logits = self._component_logits(x, sigma)
        onehot = torch.nn.functional.one_hot(self.mode_class, self.spec.n_classes).bool()  # [M, C]
        per_class = logits[:, :, None].masked_fill(~onehot[None], -math.inf).logsumexp(1)  # [B, C]
        return per_class - per_class.logsumexp(1, keepdim=True)

    def mode_of(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The prompt class's mode each sample most likely came from (index into all modes)."""
        logits = self._component_logits(x, torch.zeros(x.shape[0], device=x.device))
        mask = self._mask(cond, x.shape[0], x.device)
        return logits.masked_fill(~mask, -math.inf).argmax(1)

    def sample(self, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact samples x0 ~ p(x0 | c) for a batch of class indices."""
        k = self.spec.modes_per_class
        pick = torch.randint(0, k, cond.shape, generator=generator)
        mode = cond.long() + self.spec.n_classes * pick          # modes of class c: c, c+C, c+2C
        eps = torch.randn(cond.shape[0], 2, generator=generator)
        return self.means[mode] + self.stds[mode, None] * eps


def preference_reward(x: torch.Tensor, cond: torch.Tensor, density: GMMDensity) -> torch.Tensor:
    """r(x, c) = exp(-|x - mu_pref(c)|^2 / (2 l^2)) in [0, 1]: a smooth, differentiable preference
    for one mode of each class, wide enough (l = 3) that its pull reaches the class's other modes,
    which is what tempts a regularised generator to drop them."""
    mu = density.means[preferred_mode(density.spec).to(cond.device)[cond.long()]]
    d2 = ((x - mu) ** 2).sum(-1)
    return torch.exp(-0.5 * d2 / density.spec.reward_width ** 2)


# Metrics: per-sample functions return arrays [N]; set metrics return one float.

def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_proj: int = 64, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two equal-size 2-D point sets (sorted 1-D
    projections), which, unlike log-likelihood, penalises collapse onto a mode."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, np.pi, n_proj)
    dirs = np.stack([np.cos(theta), np.sin(theta)], 1)
    n = min(len(a), len(b))
    pa = np.sort(a[:n] @ dirs.T, axis=0)
    pb = np.sort(b[:n] @ dirs.T, axis=0)
    return float(np.sqrt(((pa - pb) ** 2).mean()))


def mode_histogram(modes: np.ndarray, cond: np.ndarray, spec: GMMSpec) -> np.ndarray:
    """Share of each class's samples in each of its modes, [C, K]."""
    k = spec.modes_per_class
    hist = np.zeros((spec.n_classes, k))
    for c in range(spec.n_classes):
        m = modes[cond == c]
        if len(m):
            hist[c] = np.bincount(m // spec.n_classes, minlength=k)[:k] / len(m)
    return hist


def mode_coverage(hist: np.ndarray, min_share: float = 0.05) -> float:
    """Fraction of modes that receive at least `min_share` of their class's samples (a mode the
    reference fills with 1/3 of the mass counts as dropped below 5%)."""
    return float((hist >= min_share).mean())


def mode_entropy(hist: np.ndarray) -> float:
    """Mean over classes of the entropy of the mode shares, divided by log K (1 = all modes equal)."""
    p = np.clip(hist, 1e-12, 1)
    ent = -(hist * np.log(p)).sum(1) / np.log(hist.shape[1])
    return float(ent.mean())
