"""The gmm world's closed forms and metrics."""
import math

import numpy as np
import pytest
import torch

import di_star  # noqa: F401  (patches torchvision before anything imports it)
from di_star.toy.gmm import GMMWorld, gmm_metrics, reference_metrics
from di_star.toy.gmm_math import GMMDensity, GMMSpec, preference_reward, sliced_wasserstein


@pytest.fixture(scope="module")
def density():
    return GMMDensity(GMMSpec()).double()


@pytest.mark.parametrize("cond", [None, torch.tensor([0, 1, 2, 3, 1, 0])])
def test_score_is_gradient_of_log_density(density, cond):
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(6, 2, generator=g, dtype=torch.float64)).requires_grad_(True)
    sigma = torch.rand(6, generator=g, dtype=torch.float64) * 2
    (grad,) = torch.autograd.grad(density.log_prob(x, sigma, cond).sum(), x)
    assert torch.allclose(grad, density.score(x, sigma, cond), atol=1e-10)


def test_log_density_integrates_to_one(density):
    # Riemann sum of p_sigma(x | c) on a grid that holds all of the mass.
    h = 0.05
    ax = torch.arange(-9, 9, h, dtype=torch.float64)
    xx, yy = torch.meshgrid(ax, ax, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    for cond in (None, torch.tensor(2)):
        p = density.log_prob(pts, torch.full((len(pts),), 0.7, dtype=torch.float64), cond).exp()
        assert abs(float(p.sum()) * h * h - 1) < 1e-3


def test_unconditional_score_is_the_class_mixture(density):
    """s(x) = sum_c p(c | x) s(x | c): what makes CFG exact in this world."""
    x = torch.randn(5, 2, dtype=torch.float64) * 3
    sigma = torch.full((5,), 0.4, dtype=torch.float64)
    post = density.class_log_posterior(x, sigma).exp()
    mix = sum(post[:, c:c + 1] * density.score(x, sigma, torch.tensor(c)) for c in range(4))
    assert torch.allclose(mix, density.score(x, sigma, None), atol=1e-10)


def test_reward_is_differentiable_and_peaks_at_the_preferred_mode(density):
    cond = torch.tensor([1, 1])
    x = torch.stack([density.means[1], density.means[5]]).clone().requires_grad_(True)
    r = preference_reward(x, cond, density)
    rv = r.detach()
    assert float(rv[0]) == pytest.approx(1.0) and float(rv[1]) < float(rv[0])
    (g,) = torch.autograd.grad(r.sum(), x)
    assert torch.isfinite(g).all() and g[1].norm() > 0


def test_metrics_tell_reference_from_collapse(density):
    d = GMMDensity(GMMSpec())
    ref = reference_metrics(d, 2000, seed=0)
    assert ref["mode_coverage"] == 1.0 and ref["mode_entropy"] > 0.98 and ref["prompt_acc"] > 0.85
    # Every sample of a class on its preferred mode: full reward, one mode of three, far in SW.
    c = torch.arange(2000) % 4
    x = (d.means[c] + 0.05 * torch.randn(2000, 2)).numpy()
    col = gmm_metrics(x, [f"class {k}" for k in c.tolist()], d)
    assert col["reward"] > 0.99 and col["mode_coverage"] == pytest.approx(1 / 3)
    assert col["mode_entropy"] < 0.05 and col["sw"] > 2 * ref["sw"]


def test_sliced_wasserstein_zero_on_identical_sets():
    a = np.random.default_rng(0).normal(size=(300, 2))
    assert sliced_wasserstein(a, a) == 0.0
    assert sliced_wasserstein(a, a + 1.0) == pytest.approx(math.sqrt(1.0), rel=0.3)


def test_generation_is_a_pure_function_of_the_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTAR_CACHE", str(tmp_path))
    w = GMMWorld(recipe_scale=0.01)
    gen = w.initial_generator()
    a, ta = w.generate(gen, 64, seed=3)
    b, tb = w.generate(gen, 64, seed=3)
    assert np.array_equal(a, b) and ta == tb and ta[:4] == ["class 0", "class 1", "class 2", "class 3"]
    # A second world finds the cached weights instead of retraining.
    assert len(list(tmp_path.glob("toy/gmm-generator-*.safetensors"))) == 1
    assert torch.equal(GMMWorld(recipe_scale=0.01).initial_generator().net[0].weight, gen.net[0].weight)


def test_cached_networks_do_not_depend_on_prior_rng_use(tmp_path, monkeypatch):
    """A fresh cache must rebuild the same weights, whatever the process did before."""
    weights = []
    for i, sub in enumerate(("a", "b")):
        monkeypatch.setenv("DISTAR_CACHE", str(tmp_path / sub))
        torch.manual_seed(i)
        torch.randn(100 * (i + 1))  # disturb the global RNG differently each time
        state = torch.get_rng_state()
        weights.append(GMMWorld(recipe_scale=0.01).initial_generator().net[0].weight.detach().clone())
        assert torch.equal(torch.get_rng_state(), state)  # and leave the caller's RNG alone
    assert torch.equal(*weights)
