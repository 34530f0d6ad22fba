"""Small networks shared by the toy worlds: an EDM-preconditioned MLP denoiser and an MLP
one-step generator. Conditioning is a class index; `cond=None` means unconditional (the
null token, learned with label dropout), which is how CFG asks for s(x | empty)."""
from __future__ import annotations

import math

import torch
from torch import nn


def _null_aware(cond: torch.Tensor | None, batch: int, n_classes: int, device) -> torch.Tensor:
    """Class indices with `None` mapped to the null token `n_classes`."""
    if cond is None:
        return torch.full((batch,), n_classes, dtype=torch.long, device=device)
    return cond.to(device=device, dtype=torch.long).expand(batch)


class FourierEmbedding(nn.Module):
    """Random Fourier features of a scalar (EDM's noise embedding)."""

    def __init__(self, dim: int, scale: float = 4.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(dim // 2, generator=g) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * x[:, None] * self.freqs[None, :]
        return torch.cat([f.cos(), f.sin()], dim=1)


def mlp(d_in: int, d_out: int, hidden: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.SiLU()]
        d = hidden
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


class MLPDenoiser(nn.Module):
    """D(x, sigma, c) ~ E[x0 | x_sigma, c] with EDM preconditioning (Karras et al. 2022, Table 1),
    so one network is well scaled at every noise level of the VE process x = x0 + sigma * eps."""

    def __init__(self, dim: int, n_classes: int, hidden: int = 256, depth: int = 3,
                 sigma_data: float = 0.5, emb: int = 64):
        super().__init__()
        self.dim, self.n_classes, self.sigma_data = dim, n_classes, sigma_data
        self.noise_emb = FourierEmbedding(emb)
        self.class_emb = nn.Embedding(n_classes + 1, emb)  # last row = null token
        self.net = mlp(dim + 2 * emb, dim, hidden, depth)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        sigma = sigma.to(x.dtype).reshape(-1).expand(x.shape[0])
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        c_in = 1 / (sigma ** 2 + sd2).sqrt()
        c_noise = sigma.log() / 4
        c = _null_aware(cond, x.shape[0], self.n_classes, x.device)
        h = torch.cat([c_in[:, None] * x, self.noise_emb(c_noise), self.class_emb(c)], dim=1)
        return c_skip[:, None] * x + c_out[:, None] * self.net(h)


class MLPGenerator(nn.Module):
    """One-step generator x0 = g_theta(z, c)."""

    def __init__(self, dim: int, n_classes: int, hidden: int = 256, depth: int = 3, emb: int = 32):
        super().__init__()
        self.dim, self.n_classes = dim, n_classes
        self.class_emb = nn.Embedding(n_classes, emb)
        self.net = mlp(dim + emb, dim, hidden, depth)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, self.class_emb(cond.long())], dim=1))


def edm_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM's time discretisation, decreasing from sigma_max to sigma_min, then 0."""
    i = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
    s = (sigma_max ** (1 / rho) + i * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def heun_pf_ode(score, x_T: torch.Tensor, cond, sigmas: torch.Tensor) -> torch.Tensor:
    """Integrate the VE probability-flow ODE dx/dsigma = -sigma * score(x, sigma) (Heun, EDM
    Alg. 1 without churn) from x_T ~ N(0, sigma_max^2 I) down to sigma = 0."""
    x = x_T
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        st = torch.full((x.shape[0],), s, dtype=x.dtype, device=x.device)
        d = -s * score(x, st, cond)
        x_next = x + (s_next - s) * d
        if s_next > 0:
            st2 = torch.full((x.shape[0],), s_next, dtype=x.dtype, device=x.device)
            d2 = -s_next * score(x_next, st2, cond)
            x_next = x + (s_next - s) * 0.5 * (d + d2)
        x = x_next
    return x
