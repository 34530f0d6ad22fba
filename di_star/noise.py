"""Forward diffusion schedules, noise-level samplers and loss weightings.

One convention everywhere: ``x_t = alpha(t) * x0 + sigma(t) * eps`` with ``eps ~ N(0, I)``, so
``grad_{x_t} log p_t(x_t | x0) = -(x_t - alpha x0) / sigma^2 = -eps / sigma``.

- VE (EDM, the paper's listing): ``alpha = 1`` and ``t`` IS ``sigma``.
- VP (SD1.5 / SDXL): ``alpha = sqrt(abar_t)``, ``sigma = sqrt(1 - abar_t)`` from the backbone's
  discrete ``alphas_cumprod``; integer ``t`` indexes the table, a float ``t`` interpolates it
  linearly, which gives a continuous-time schedule on ``[0, T-1]``.

Per-sample quantities have shape ``[B]`` (or are 0-d for one noise level per batch, as in the
paper's listing); ``append_dims`` broadcasts them against ``[B, ...]`` tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Reshape a per-sample ``[B]`` tensor to ``[B, 1, ..., 1]`` with ``ndim`` dims (0-d passes)."""
    if v.ndim == 0 or v.ndim == ndim:
        return v
    if v.ndim != 1:
        raise ValueError(f"expected a per-sample tensor of shape [B] or a scalar, got {tuple(v.shape)}")
    return v.reshape(v.shape[0], *([1] * (ndim - 1)))


@dataclass(frozen=True, eq=False)  # eq=False: the VP table is a tensor, and tensors do not compare to bool.
class NoiseSchedule:
    """``x_t = alpha(t) * x0 + sigma(t) * eps``. Build with ``ve_schedule()`` or ``vp_schedule()``."""

    kind: str                                   # 've' or 'vp'
    alphas_cumprod: Tensor | None = None        # VP only: abar_t for integer t in [0, T)

    def __post_init__(self):
        if self.kind not in ("ve", "vp"):
            raise ValueError(f"Unknown noise schedule kind {self.kind!r}; choose from 've', 'vp'")
        if self.kind == "vp" and self.alphas_cumprod is None:
            raise ValueError("A 'vp' schedule needs alphas_cumprod; build it with vp_schedule(alphas_cumprod)")

    @property
    def num_timesteps(self) -> int | None:
        return None if self.alphas_cumprod is None else int(self.alphas_cumprod.shape[0])

    def _abar(self, t: Tensor) -> Tensor:
        table = self.alphas_cumprod.to(device=t.device)
        if not t.is_floating_point():
            return table[t]
        # Continuous time: linear interpolation between the two neighbouring table entries.
        t = t.clamp(0, table.shape[0] - 1).to(table.dtype)
        lo = t.floor().long()
        hi = (lo + 1).clamp(max=table.shape[0] - 1)
        frac = t - lo.to(t.dtype)
        return table[lo] * (1 - frac) + table[hi] * frac

    def alpha(self, t: Tensor) -> Tensor:
        if self.kind == "ve":
            return torch.ones_like(t, dtype=t.dtype if t.is_floating_point() else torch.get_default_dtype())
        return self._abar(t).sqrt()

    def sigma(self, t: Tensor) -> Tensor:
        if self.kind == "ve":
            return t
        return (1 - self._abar(t)).sqrt()

    def perturb(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``x_t = alpha x0 + sigma eps``; differentiable in ``x0``, so ``dx_t/dtheta = alpha dx0/dtheta``."""
        a = append_dims(self.alpha(t), x0.ndim).to(x0.dtype)
        s = append_dims(self.sigma(t), x0.ndim).to(x0.dtype)
        return a * x0 + s * eps

    def cond_score(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """``grad_{x_t} log p_t(x_t | x0) = -(x_t - alpha x0) / sigma^2`` (DSM target)."""
        a = append_dims(self.alpha(t), x0.ndim).to(x0.dtype)
        s = append_dims(self.sigma(t), x0.ndim).to(x0.dtype)
        return -(x_t - a * x0) / s**2


def ve_schedule() -> NoiseSchedule:
    """Variance exploding (EDM): ``alpha = 1``, ``t = sigma``."""
    return NoiseSchedule("ve")


def vp_schedule(alphas_cumprod: Tensor) -> NoiseSchedule:
    """Variance preserving with a backbone's discrete ``alphas_cumprod`` (e.g. the SD scheduler's)."""
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu()
    if abar.ndim != 1 or not bool(((abar > 0) & (abar < 1)).all()):
        raise ValueError("alphas_cumprod must be a 1-D tensor with values in (0, 1)")
    return NoiseSchedule("vp", abar)


def sd_alphas_cumprod(num_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Tensor:
    """The 'scaled_linear' beta schedule of SD1.5 / SDXL (diffusers DDPMScheduler defaults there)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


def sample_sigma_lognormal(batch: int, mean: float = -2.0, std: float = 2.0, generator: torch.Generator | None = None,
                           device=None, dtype: torch.dtype | None = None) -> Tensor:
    """``sigma = exp(std * randn + mean)``; the defaults are the paper's listing, ``exp(2 randn - 2)``."""
    n = torch.randn(batch, generator=generator, device=device, dtype=dtype)
    return (n * std + mean).exp()


def sample_t_uniform(batch: int, t_min: float | int, t_max: float | int, generator: torch.Generator | None = None,
                     device=None, dtype: torch.dtype | None = None) -> Tensor:
    """Uniform ``t`` on ``[t_min, t_max)``: long timesteps when both ends are ints (VP), floats otherwise."""
    if t_max <= t_min:
        raise ValueError(f"need t_min < t_max, got t_min={t_min}, t_max={t_max}")
    if isinstance(t_min, int) and isinstance(t_max, int):
        return torch.randint(t_min, t_max, (batch,), generator=generator, device=device)
    u = torch.rand(batch, generator=generator, device=device, dtype=dtype)
    return t_min + (t_max - t_min) * u


# Loss weightings w(t) / lambda(t). All multiply a SCORE-space quantity, e.g. the assistant's
# lambda(t) * ||s_psi - grad log p(x_t|x0)||^2. Since s - grad log p(x_t|x0) = -(eps_hat - eps) / sigma
# = (alpha / sigma^2) (x0_hat - x0), the backbones' usual losses are:
#   'sigma2' -> eps-prediction MSE (SD's own training weighting; VE DSM lambda = sigma^2)
#   'x0'     -> x0-prediction MSE  (sigma^4 / alpha^2)
#   'edm'    -> EDM's weighted x0 MSE, lambda_edm = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2, sigma_data = 0.5
#   'snr'    -> alpha^2 / sigma^2
#   'one'    -> 1 (the paper's generator weighting w(t) = 1)
_SIGMA_DATA = 0.5
_WEIGHTS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "one": lambda a, s: torch.ones_like(s),
    "sigma2": lambda a, s: s**2,
    "x0": lambda a, s: s**4 / a**2,
    "edm": lambda a, s: (s**4 / a**2) * (s**2 + _SIGMA_DATA**2) / (s * _SIGMA_DATA) ** 2,
    "snr": lambda a, s: a**2 / s**2,
}


def weight_fn(name: str, schedule: NoiseSchedule | None = None) -> Callable[[Tensor], Tensor]:
    """Look up a weighting by name; returns ``t -> weight`` of the same shape (VE unless a schedule is given)."""
    if name not in _WEIGHTS:
        raise ValueError(f"Unknown weighting {name!r}; choose from {sorted(_WEIGHTS)}")
    schedule = schedule or ve_schedule()
    f = _WEIGHTS[name]

    def w(t: Tensor) -> Tensor:
        a, s = schedule.alpha(t), schedule.sigma(t)
        if not s.is_floating_point():
            s = s.to(torch.get_default_dtype())
        return f(a.to(s.dtype), s)

    w.__name__ = f"weight_{name}"
    return w


__all__ = [
    "NoiseSchedule", "append_dims", "ve_schedule", "vp_schedule", "sd_alphas_cumprod",
    "sample_sigma_lognormal", "sample_t_uniform", "weight_fn",
]
