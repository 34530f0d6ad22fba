"""Unit checks of the DI* building blocks: distances, adapters, schedules, errors, shapes."""
from __future__ import annotations

import pytest
import torch

from di_star.errors import NonFiniteLossError
from di_star.losses import (PseudoHuber, SquaredL2, assistant_dsm_loss, check_finite, distance, explicit_reward_loss,
                            implicit_cfg_reward_loss, kl_regularizer_loss, score_regularizer_loss)
from di_star.noise import (append_dims, sample_sigma_lognormal, sample_t_uniform, sd_alphas_cumprod, ve_schedule,
                           vp_schedule, weight_fn)
from di_star.scores import CFGScore, VEDenoiserScore, VPEpsScore, eps_from_score, x0_from_score
from distar.core.errors import DistarError

F64 = torch.float64


@pytest.mark.parametrize("dist", [SquaredL2(), PseudoHuber(0.5), PseudoHuber(1e-3)], ids=repr)
def test_distance_grad_is_autograd_of_distance(dist):
    y = torch.randn(6, 3, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    value = dist(y)
    assert value.shape == (6,) and bool((value >= 0).all())
    (auto,) = torch.autograd.grad(value.sum(), y)
    torch.testing.assert_close(dist.grad(y.detach()), auto, rtol=1e-12, atol=1e-14)


def test_pseudo_huber_matches_its_formula_and_is_bounded():
    y = torch.randn(5, 7, dtype=F64) * 10
    c = 0.3
    torch.testing.assert_close(PseudoHuber(c)(y), (y.square().sum(1) + c**2).sqrt() - c)
    assert bool((PseudoHuber(c).grad(y).norm(dim=1) < 1).all())
    torch.testing.assert_close(PseudoHuber(c)(torch.zeros(2, 3, dtype=F64)), torch.zeros(2, dtype=F64))


@pytest.mark.parametrize("bad", [0.0, -1.0, None])
def test_pseudo_huber_rejects_bad_c(bad):
    with pytest.raises(ValueError, match="c > 0"):
        PseudoHuber(bad)


def test_distance_registry():
    assert isinstance(distance("l2"), SquaredL2)
    assert distance("pseudo_huber", c=0.1).c == 0.1
    with pytest.raises(ValueError, match="pass c > 0"):
        distance("pseudo_huber")
    with pytest.raises(ValueError, match="'l2', 'pseudo_huber'"):
        distance("huber")


def gaussian_logpdf(x, mean, var):
    return torch.distributions.Normal(mean, var.sqrt()).log_prob(x).sum(-1)


def test_vp_eps_adapter_gives_exact_score():
    """An exact eps-model for x0 ~ N(mu, s^2): E[eps | x_t] = sigma (x_t - alpha mu) / V (Gaussian conditioning).
    Its VPEpsScore must equal the score of N(alpha mu, V) from autograd of the log-density."""
    sched = vp_schedule(sd_alphas_cumprod())
    mu, s = torch.tensor([0.5, -1.0], dtype=F64), torch.tensor([1.2, 0.4], dtype=F64)
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 1000, (64,), generator=g)
    a, sig = append_dims(sched.alpha(t), 2), append_dims(sched.sigma(t), 2)
    V = a**2 * s**2 + sig**2

    def eps_model(x, t_, cond):
        return sig * (x - a * mu) / V

    x = torch.randn(64, 2, dtype=F64, generator=g) * 1.5
    xg = x.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(gaussian_logpdf(xg, a * mu, V).sum(), xg)
    torch.testing.assert_close(VPEpsScore(eps_model, sched)(x, t, None), score)
    # Tweedie round trips through the same interface.
    torch.testing.assert_close(eps_from_score(score, x, t, sched), eps_model(x, t, None))
    x0_hat = x0_from_score(score, x, t, sched)
    torch.testing.assert_close(x0_hat, mu + (a * s**2 / V) * (x - a * mu))


def test_ve_denoiser_adapter_gives_exact_score():
    mu, s = torch.tensor([0.5, -1.0], dtype=F64), torch.tensor([1.2, 0.4], dtype=F64)
    sigma = torch.tensor([0.1, 0.8, 3.0], dtype=F64)
    sig = append_dims(sigma, 2)

    def denoiser(x, t_, cond):   # E[x0 | x_t] for a Gaussian
        return mu + s**2 / (s**2 + sig**2) * (x - mu)

    x = torch.randn(3, 2, dtype=F64)
    xg = x.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(gaussian_logpdf(xg, mu, s**2 + sig**2).sum(), xg)
    torch.testing.assert_close(VEDenoiserScore(denoiser)(x, sigma, None), score)


def test_cfg_score_scale_one_skips_unconditional_pass():
    calls = []

    def base(x, t, cond):
        calls.append(cond)
        return x * (2.0 if cond is not None else 1.0)

    x = torch.ones(2, 3)
    CFGScore(base, 1.0)(x, torch.ones(2), "c")
    assert calls == ["c"]
    torch.testing.assert_close(CFGScore(base, 3.0)(x, torch.ones(2), "c"), x * (1 + 3 * (2 - 1)))


def test_vp_schedule_interpolates_and_perturbs():
    abar = sd_alphas_cumprod()
    sched = vp_schedule(abar)
    t = torch.tensor([0, 10, 999])
    torch.testing.assert_close(sched.alpha(t) ** 2 + sched.sigma(t) ** 2, torch.ones(3, dtype=F64))
    torch.testing.assert_close(sched.alpha(t.to(F64)), sched.alpha(t))        # float t at integers = table
    mid = sched.alpha(torch.tensor([10.5], dtype=F64)) ** 2
    torch.testing.assert_close(mid, (abar[10:11] + abar[11:12]) / 2)
    x0, eps = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    x_t = sched.perturb(x0, t, eps)
    assert x_t.dtype == torch.float32 and x_t.shape == x0.shape
    torch.testing.assert_close(x_t[2], (sched.alpha(t[2]) * x0[2] + sched.sigma(t[2]) * eps[2]).float())
    with pytest.raises(ValueError, match="alphas_cumprod"):
        vp_schedule(torch.tensor([1.5, 0.5]))


def test_samplers():
    g = torch.Generator().manual_seed(2)
    n = 200_000
    log_sigma = sample_sigma_lognormal(n, generator=g, dtype=F64).log()
    # log sigma ~ N(-2, 2^2): SE of the mean is 2/sqrt(n), of the std ~ 2/sqrt(2n).
    assert abs(log_sigma.mean().item() + 2) < 4.5 * 2 / n**0.5
    assert abs(log_sigma.std().item() - 2) < 4.5 * 2 / (2 * n) ** 0.5
    ti = sample_t_uniform(1000, 20, 980, generator=g)
    assert ti.dtype == torch.long and ti.min() >= 20 and ti.max() < 980
    tf = sample_t_uniform(1000, 0.002, 80.0, generator=g)
    assert tf.is_floating_point() and tf.min() >= 0.002 and tf.max() < 80
    with pytest.raises(ValueError):
        sample_t_uniform(4, 5, 5)


def test_weight_fn_registry():
    sigma = torch.tensor([0.5, 2.0], dtype=F64)
    torch.testing.assert_close(weight_fn("one")(sigma), torch.ones(2, dtype=F64))
    torch.testing.assert_close(weight_fn("sigma2")(sigma), sigma**2)
    vp = vp_schedule(sd_alphas_cumprod())
    t = torch.tensor([100, 900])
    torch.testing.assert_close(weight_fn("snr", vp)(t), vp.alpha(t) ** 2 / vp.sigma(t) ** 2)
    with pytest.raises(ValueError, match="choose from .*'one'.*'sigma2'"):
        weight_fn("karras")


def test_weightings_reproduce_the_backbones_losses():
    """lambda='sigma2' turns score-space DSM into eps-MSE, lambda='x0' into x0-MSE (VP)."""
    sched = vp_schedule(sd_alphas_cumprod())
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(5, 3, dtype=F64, generator=g), torch.randn(5, 3, dtype=F64, generator=g)
    t = torch.tensor([1, 50, 300, 700, 999])
    eps_hat = torch.randn(5, 3, dtype=F64, generator=g)
    s_psi = VPEpsScore(lambda x, t_, c: eps_hat, sched)
    torch.testing.assert_close(assistant_dsm_loss(s_psi, x0, t, eps, sched, None, weight_fn("sigma2", sched)(t)),
                               (eps_hat - eps).square().sum(1))
    x_t = sched.perturb(x0, t, eps)
    x0_hat = x0_from_score(s_psi(x_t, t, None), x_t, t, sched)
    torch.testing.assert_close(assistant_dsm_loss(s_psi, x0, t, eps, sched, None, weight_fn("x0", sched)(t)),
                               (x0_hat - x0).square().sum(1))


def toy_scores():
    def s_psi(x, t, c):
        return -x / (1 + append_dims(t, x.ndim) ** 2)

    def s_ref(x, t, c):
        shift = 0.0 if c is None else 0.5
        return -(x - shift - 0.3) / (1.2 + append_dims(t, x.ndim) ** 2)

    return s_psi, s_ref


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_every_term_is_per_sample(dtype):
    b = 4
    sched = ve_schedule()
    s_psi, s_ref = toy_scores()
    x0 = torch.randn(b, 4, 8, 8).to(dtype).requires_grad_(True)
    eps = torch.randn(b, 4, 8, 8).to(dtype)
    t = sample_sigma_lognormal(b, generator=torch.Generator().manual_seed(4))
    terms = {
        "reg_exact": score_regularizer_loss(x0, t, eps, s_psi, s_ref, sched, "c", PseudoHuber(0.1), "exact"),
        "reg_x0": score_regularizer_loss(x0, t, eps, s_psi, s_ref, sched, "c", SquaredL2(), "x0", torch.ones(b),
                                         distance_space="x0"),
        "kl": kl_regularizer_loss(x0, t, eps, s_psi, s_ref, sched, "c", 2.0),
        "cfg": implicit_cfg_reward_loss(sched.perturb(x0, t, eps), t, s_ref, "c", None, 7.5, torch.ones(b)),
        "rew": explicit_reward_loss(x0.float().mean((1, 2, 3)), 100.0),
        "dsm": assistant_dsm_loss(s_psi, x0, t, eps, sched, "c", t**2),
    }
    for name, v in terms.items():
        assert v.shape == (b,), name
        assert v.dtype == torch.float32, name   # loss arithmetic in fp32 even for fp16 inputs
    check_finite(terms)
    sum(v.mean() for k, v in terms.items() if k != "dsm").backward()
    assert x0.grad is not None and bool(torch.isfinite(x0.grad).all())


def test_estimators_share_the_loss_value():
    """The two estimators differ only in where the gradient flows, not in the forward value."""
    sched = ve_schedule()
    s_psi, s_ref = toy_scores()
    x0, eps, t = torch.randn(5, 3, dtype=F64), torch.randn(5, 3, dtype=F64), torch.rand(5, dtype=F64) + 0.1
    a = score_regularizer_loss(x0, t, eps, s_psi, s_ref, sched, None, PseudoHuber(0.2), "exact")
    b = score_regularizer_loss(x0, t, eps, s_psi, s_ref, sched, None, PseudoHuber(0.2), "x0")
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="'exact', 'x0'"):
        score_regularizer_loss(x0, t, eps, s_psi, s_ref, sched, None, SquaredL2(), "pathwise")


def test_x0_estimator_in_x0_space_is_the_listing():
    """With distance_space='x0' (VE), the 'x0' estimator is the listing's line in denoiser units,
    ``w * sg[u_D]^T (x0 - sg[D_psi(x_t)])`` with ``u_D = (D_psi - D_ref) / sqrt(|D_psi - D_ref|^2 + c^2)``,
    i.e. the listing with its residual read as ``x0 - D_psi`` (the reading under which descent
    pulls the generator towards the reference)."""
    sched = ve_schedule()
    s_psi, s_ref = toy_scores()
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(6, 3, dtype=F64, generator=g).requires_grad_(True)
    eps, sigma = torch.randn(6, 3, dtype=F64, generator=g), torch.rand(6, dtype=F64, generator=g) * 2 + 0.05
    w, c = torch.rand(6, dtype=F64, generator=g), 0.03
    ours = score_regularizer_loss(x0, sigma, eps, s_psi, s_ref, sched, None, PseudoHuber(c), "x0", w,
                                  distance_space="x0")
    x_t = (x0 + append_dims(sigma, 2) * eps).detach()
    D_psi, D_ref = x0_from_score(s_psi(x_t, sigma, None), x_t, sigma, sched), x0_from_score(s_ref(x_t, sigma, None), x_t, sigma, sched)
    diff = D_psi - D_ref
    u_D = diff / (diff.square().sum(1, keepdim=True) + c**2).sqrt()
    listing = w * (u_D * (x0 - D_psi)).sum(1)
    torch.testing.assert_close(ours, listing)
    torch.testing.assert_close(torch.autograd.grad(ours.sum(), x0)[0], torch.autograd.grad(listing.sum(), x0)[0])


def test_check_finite_names_the_term():
    good = torch.zeros(3)
    check_finite({"L_rew": good})
    with pytest.raises(NonFiniteLossError, match="L_reg") as err:
        check_finite({"L_rew": good, "L_reg": torch.tensor([0.0, float("nan"), 1.0]), "L_cfg": good})
    assert err.value.terms == ["L_reg"] and isinstance(err.value, DistarError)
    with pytest.raises(NonFiniteLossError, match="L_cfg, L_rew"):
        check_finite({"L_cfg": torch.tensor([float("inf")]), "L_rew": torch.tensor([float("-inf")])})

