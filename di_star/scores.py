"""One score interface for every backbone: ``s(x_t, t, cond) = grad_x log p_t(x_t | cond)``.

The DI* losses are written once against this interface; these thin wrappers convert what a
backbone predicts (an EDM denoiser ``x0_hat`` or an SD ``eps_hat``) into a score.
``cond=None`` means unconditional.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

from torch import Tensor

from di_star.noise import NoiseSchedule, append_dims


class ScoreModel(Protocol):
    def __call__(self, x_t: Tensor, t: Tensor, cond: Any) -> Tensor: ...


class VEDenoiserScore:
    """VE denoiser ``D(x_t, sigma, cond) ~ E[x0 | x_t]`` -> score ``(D - x_t) / sigma^2`` (Tweedie)."""

    def __init__(self, denoiser: Callable[[Tensor, Tensor, Any], Tensor]):
        self.denoiser = denoiser

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        sigma = append_dims(t, x_t.ndim).to(x_t.dtype)
        return (self.denoiser(x_t, t, cond) - x_t) / sigma**2


class VPEpsScore:
    """Epsilon model ``eps_hat(x_t, t, cond) ~ E[eps | x_t]`` -> score ``-eps_hat / sigma_t``."""

    def __init__(self, eps_model: Callable[[Tensor, Tensor, Any], Tensor], schedule: NoiseSchedule):
        self.eps_model, self.schedule = eps_model, schedule

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        sigma = append_dims(self.schedule.sigma(t), x_t.ndim).to(x_t.dtype)
        return -self.eps_model(x_t, t, cond) / sigma


class CFGScore:
    """Classifier-free-guided reference (Choice 2, "DI*-In"): ``s_u + scale * (s_c - s_u)``.

    This is standard CFG as Sec. 3.3 defines it. The paper's printed Choice 2,
    ``s(x|c) + alpha_cfg * s(x|empty)``, is a slip (docs/maths.md, Slip 2): it is not a guided score
    (at scale 1 it is the sum of two scores, not the conditional one).
    ``scale = 1`` gives the conditional score and skips the unconditional pass.
    """

    def __init__(self, base: ScoreModel, scale: float, null_cond: Any = None):
        self.base, self.scale, self.null_cond = base, float(scale), null_cond

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        s_c = self.base(x_t, t, cond)
        if self.scale == 1.0:
            return s_c
        s_u = self.base(x_t, t, self.null_cond)
        return s_u + self.scale * (s_c - s_u)


def x0_from_score(score: Tensor, x_t: Tensor, t: Tensor, schedule: NoiseSchedule) -> Tensor:
    """Tweedie: ``x0_hat = (x_t + sigma^2 s) / alpha``."""
    a = append_dims(schedule.alpha(t), x_t.ndim).to(x_t.dtype)
    s = append_dims(schedule.sigma(t), x_t.ndim).to(x_t.dtype)
    return (x_t + s**2 * score) / a


def eps_from_score(score: Tensor, x_t: Tensor, t: Tensor, schedule: NoiseSchedule) -> Tensor:
    """``eps_hat = -sigma s``."""
    return -append_dims(schedule.sigma(t), x_t.ndim).to(x_t.dtype) * score


__all__ = ["ScoreModel", "VEDenoiserScore", "VPEpsScore", "CFGScore", "x0_from_score", "eps_from_score"]
