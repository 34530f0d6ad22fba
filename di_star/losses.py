"""DI* loss terms (Luo et al., ICML 2025), each a small pure function returning per-sample losses.

Every function returns an UNREDUCED loss of shape ``[B]``; callers take ``.mean()``. Sums run over
all non-batch dimensions, as in the paper's listing. Scores come through the interface in
``di_star.scores``, so the same formulas serve VE denoisers and VP eps-models; the forward process
``x_t = alpha x0 + sigma eps`` is applied INSIDE the generator-side terms from a differentiable
``x0``, so the gradient path ``dx_t/dtheta = alpha dx0/dtheta`` is always the right one.

For several terms only the GRADIENT w.r.t. the generator's parameters is meaningful: the loss
value is a surrogate whose gradient equals the gradient of the quantity named in its docstring.
Keep the frozen networks' parameters frozen (``requires_grad_(False)``): the ``exact`` estimator
backpropagates through their inputs, and unfrozen parameters would collect gradients too.
The maths, and the paper's slips these functions correct, are in docs/maths.md.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from di_star.errors import DistarError, NonFiniteLossError
from di_star.noise import NoiseSchedule, append_dims
from di_star.scores import ScoreModel


def _sum(x: Tensor) -> Tensor:
    """Per-sample sum over all non-batch dims -> ``[B]``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def _f32(x: Tensor) -> Tensor:
    """Loss arithmetic in at least fp32 (half-precision dot products over 16k latents lose the signal)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _per_sample(w: Tensor | float | None, like: Tensor) -> Tensor | float:
    """A weight as a ``[B]`` tensor (or a plain float); ``None`` means 1."""
    if w is None:
        return 1.0
    if isinstance(w, Tensor):
        return w.to(device=like.device, dtype=_f32(like).dtype)
    return float(w)


# Distances d(y) for the score divergence (3.2). Each is a per-sample d(y) -> [B] plus d'(y) -> y's shape.

class SquaredL2:
    """``d(y) = ||y||^2``, ``d'(y) = 2y`` (recovers SiD / SIM's squared loss)."""

    def __call__(self, y: Tensor) -> Tensor:
        return _sum(y.square())

    def grad(self, y: Tensor) -> Tensor:
        return 2 * y

    def __repr__(self) -> str:
        return "SquaredL2()"


class PseudoHuber:
    """``d(y) = sqrt(||y||^2 + c^2) - c``; ``d'(y) = y / sqrt(||y||^2 + c^2)`` with the norm per sample.

    ``||d'(y)|| < 1``, which is what makes the regulariser robust to a poorly fitted assistant.
    """

    def __init__(self, c: float):
        if c is None or not c > 0:
            raise ValueError(f"pseudo-Huber needs a constant c > 0, got c={c!r}")
        self.c = float(c)

    def _norm(self, y: Tensor) -> Tensor:
        return (_sum(y.square()) + self.c**2).sqrt()

    def __call__(self, y: Tensor) -> Tensor:
        return self._norm(y) - self.c

    def grad(self, y: Tensor) -> Tensor:
        return y / append_dims(self._norm(y), y.ndim)

    def __repr__(self) -> str:
        return f"PseudoHuber(c={self.c})"


class ScaledDistance:
    """``d_k(y) = d(k y)`` with a per-sample ``k``; ``d_k'(y) = k d'(k y)``.

    With ``k = sigma^2 / alpha``, ``k y`` is the difference of the two networks' x0-predictions, so
    this is the distance measured in data units, as the paper's listing does (its pseudo-Huber
    ``c`` is in x0 units). Still a proper distance at every t, so Theorem 3.1 applies unchanged.
    """

    def __init__(self, base, k: Tensor):
        self.base, self.k = base, k

    def __call__(self, y: Tensor) -> Tensor:
        return self.base(append_dims(self.k, y.ndim) * y)

    def grad(self, y: Tensor) -> Tensor:
        k = append_dims(self.k, y.ndim)
        return k * self.base.grad(k * y)


_DISTANCES = ("l2", "pseudo_huber")


def distance(name: str, c: float | None = None):
    """Distance by name: ``'l2'`` or ``'pseudo_huber'`` (needs ``c``)."""
    if name == "l2":
        return SquaredL2()
    if name == "pseudo_huber":
        if c is None:
            raise ValueError("distance 'pseudo_huber' needs its constant: pass c > 0, e.g. distance('pseudo_huber', c=0.03)")
        return PseudoHuber(c)
    raise ValueError(f"Unknown distance {name!r}; choose from {list(_DISTANCES)}")


# Assistant ("fake score") step.

def assistant_dsm_loss(s_psi: ScoreModel, x0: Tensor, t: Tensor, eps: Tensor, schedule: NoiseSchedule,
                       cond: Any, lam: Tensor | float) -> Tensor:
    """Denoising score matching on generator samples: ``lambda(t) ||s_psi(x_t) - grad log p_t(x_t|x0)||^2``.

    ``x0`` is detached here: this step trains the assistant only. Its minimiser over ``s_psi`` is
    the score of the generator's diffused distribution (tests/test_losses_closed_form.py).
    """
    x0 = x0.detach()
    x_t = schedule.perturb(x0, t, eps)
    sigma = append_dims(schedule.sigma(t), x0.ndim).to(_f32(x0).dtype)
    target = -_f32(eps) / sigma  # = -(x_t - alpha x0) / sigma^2, without the cancellation
    return _per_sample(lam, x0) * _sum((_f32(s_psi(x_t, t, cond)) - target).square())


# Generator step.

ESTIMATORS = ("exact", "x0")


def score_regularizer_loss(x0: Tensor, t: Tensor, eps: Tensor, s_psi: ScoreModel, s_ref: ScoreModel,
                           schedule: NoiseSchedule, cond: Any, dist, estimator: str = "exact",
                           w: Tensor | float | None = None, *, distance_space: str = "score") -> Tensor:
    """Score regulariser, eq. (3.4): ``-w u^T (s_psi(x_t) - grad log p_t(x_t|x0))``, ``u = d'(s_psi - s_ref)``.

    ``x0 = g_theta(z, c)`` must carry the generator's graph; ``x_t`` is formed here.

    estimator:
      'exact' -- the gradient reaches theta through ``x_t`` everywhere it appears: the inputs of the
                 frozen ``s_psi`` and, via ``u``, of the frozen ``s_ref``. Its expected gradient is
                 Theorem 3.1's, the gradient of divergence (3.2) with ``pi_t = p_{sg[theta],t}``
                 (closed-form test). Costs a backward pass through both frozen networks.
      'x0'    -- the paper's listing: networks under no_grad, gradient only through ``x0`` in the DSM
                 target. Cheap, but NOT Theorem 3.1's gradient and not a re-weighting of it
                 (docs/maths.md Slip 3; numbers in docs/estimators.md).
    The DSM target ``-eps/sigma`` is constant in theta (its ``x_t`` and ``x0`` paths cancel), so under
    'exact' only the networks' inputs carry gradient.

    distance_space: 'score' applies ``dist`` to the score difference; 'x0' to the difference of the
    x0-predictions (``sigma^2/alpha`` times it), as the listing does with its pseudo-Huber ``c``.

    The returned value is a surrogate: its mean is not the divergence (it can be negative); only its
    theta-gradient is meaningful.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"Unknown estimator {estimator!r}; choose from {list(ESTIMATORS)}")
    if distance_space == "x0":
        k = schedule.sigma(t) ** 2 / schedule.alpha(t)
        dist = ScaledDistance(dist, k.to(device=x0.device, dtype=_f32(x0).dtype))
    elif distance_space != "score":
        raise ValueError(f"Unknown distance_space {distance_space!r}; choose from ['score', 'x0']")
    w = _per_sample(w, x0)

    if estimator == "exact":
        x_t = schedule.perturb(x0, t, eps)
        s_fake, s_real = _f32(s_psi(x_t, t, cond)), _f32(s_ref(x_t, t, cond))
        u = dist.grad(s_fake - s_real)
        sigma = append_dims(schedule.sigma(t), x0.ndim).to(s_fake.dtype)
        residual = s_fake + _f32(eps) / sigma
    else:
        x_t = schedule.perturb(x0.detach(), t, eps)
        with torch.no_grad():
            s_fake, s_real = _f32(s_psi(x_t, t, cond)), _f32(s_ref(x_t, t, cond))
            u = dist.grad(s_fake - s_real)
        # Only x0 is live here: grad_{x_t} log p(x_t|x0) = -(sg[x_t] - alpha x0) / sigma^2.
        residual = s_fake - schedule.cond_score(_f32(x_t), t, _f32(x0))
    return -w * _sum(u * residual)


def kl_regularizer_loss(x0: Tensor, t: Tensor, eps: Tensor, s_psi: ScoreModel, s_ref: ScoreModel,
                        schedule: NoiseSchedule, cond: Any, w: Tensor | float | None = None) -> Tensor:
    """Integral-KL regulariser (Diff-Instruct / DI++): ``w sg[s_psi(x_t) - s_ref(x_t)]^T x_t``.

    Its gradient ``E[w (s_psi - s_ref)^T dx_t/dtheta]`` is the gradient of
    ``KL(p_{theta,t} || p_{ref,t})`` when ``s_psi`` is the generator's score (the score-function
    term ``E[d/dtheta log p_theta]`` vanishes); the plus sign makes descent reduce the KL.
    Surrogate value: only the theta-gradient is meaningful.
    """
    x_t = schedule.perturb(x0, t, eps)
    with torch.no_grad():
        x_sg = x_t.detach()
        diff = _f32(s_psi(x_sg, t, cond)) - _f32(s_ref(x_sg, t, cond))
    return _per_sample(w, x0) * _sum(diff * _f32(x_t))


def explicit_reward_loss(reward: Tensor, alpha_rew: float) -> Tensor:
    """``-alpha_rew * r(x0, c)``; ``reward`` is per-sample ``[B]`` and must be differentiable in x0."""
    return -alpha_rew * _f32(reward)


def implicit_cfg_reward_loss(x_t: Tensor, t: Tensor, s_ref: ScoreModel, cond: Any, null_cond: Any,
                             alpha_cfg: float, w: Tensor | float | None = None) -> Tensor:
    """Implicit CFG reward (Choice 1, "DI*-Out"): ``-alpha_cfg w sg[s_ref(x_t|c) - s_ref(x_t|null)]^T x_t``.

    Its gradient is ``-alpha_cfg`` times the gradient of the implicit reward
    ``w(t) [log p_ref(x_t|c) - log p_ref(x_t)]``, so descent RAISES the reward. The paper prints a
    plus sign (eq. 3.5, A.14, the listing), which would push samples away from the prompt
    (docs/maths.md Slip 1; settled by a test). ``x_t`` must be ``schedule.perturb(x0, t, eps)`` with a live x0.
    """
    with torch.no_grad():
        x_sg = x_t.detach()
        direction = _f32(s_ref(x_sg, t, cond)) - _f32(s_ref(x_sg, t, null_cond))
    return -alpha_cfg * _per_sample(w, x_t) * _sum(direction * _f32(x_t))


def check_finite(terms: dict[str, Tensor], reduce: Callable[[Tensor], Tensor] | None = None) -> None:
    """Raise ``NonFiniteLossError`` naming every term that holds a NaN or Inf (one device sync).
    `reduce` sums the per-term flags over processes (the training loop's NaN guard), so every
    process stops at the same step."""
    if not terms:
        return
    names = list(terms)
    bad = torch.stack([(~torch.isfinite(terms[n].detach())).any() for n in names]).float()
    if reduce is not None:
        bad = reduce(bad)
    flags = bad.tolist()
    if any(flags):
        raise NonFiniteLossError([n for n, b in zip(names, flags) if b])


__all__ = [
    "SquaredL2", "PseudoHuber", "ScaledDistance", "distance", "ESTIMATORS",
    "assistant_dsm_loss", "score_regularizer_loss", "kl_regularizer_loss",
    "explicit_reward_loss", "implicit_cfg_reward_loss", "check_finite",
]
