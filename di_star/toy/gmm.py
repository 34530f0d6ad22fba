"""The `gmm` world: class-conditional 2-D Gaussian mixtures with exact diffused scores.

Prompts are "class 0" .. "class 3"; each class owns 3 modes on a ring, interleaved with the other
classes' modes. The reference score (conditional and unconditional, hence CFG) is closed form;
the generator starts from a regression onto the reference's exact probability-flow ODE map (the
DMD2 role: a good one-step model of the reference, found once and cached); the assistant starts
from denoising score matching on that generator's samples.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Sequence

import numpy as np
import torch
from torch import nn

from di_star.losses import assistant_dsm_loss
from di_star.noise import sample_sigma_lognormal, ve_schedule, weight_fn
from di_star.scores import VEDenoiserScore
from di_star.toy.cache import cached_module
from di_star.toy.gmm_math import (GMMDensity, GMMSpec, mode_coverage, mode_entropy, mode_histogram,
                                  preference_reward, sliced_wasserstein)
from di_star.toy.nets import MLPDenoiser, MLPGenerator, edm_sigmas, heun_pf_ode
from di_star.world import WORLDS, PlainWorld, WorldEntry, WorldModels

_VERSION = 2            # bump when the recipe below changes the cached weights
SIGMA_DATA = 2.5        # ~ per-coordinate std of the ring (EDM preconditioning)
GEN_NET = dict(hidden=128, depth=3)
ASSISTANT_NET = dict(hidden=128, depth=3)


def prompts(spec: GMMSpec) -> list[str]:
    return [f"class {c}" for c in range(spec.n_classes)]


def parse_prompts(texts: Sequence[str], spec: GMMSpec) -> torch.Tensor:
    lookup = {p: i for i, p in enumerate(prompts(spec))}
    return torch.tensor([lookup[t] for t in texts])


def make_generator(spec: GMMSpec) -> MLPGenerator:
    return MLPGenerator(2, spec.n_classes, **GEN_NET)


def make_assistant(spec: GMMSpec) -> MLPDenoiser:
    return MLPDenoiser(2, spec.n_classes, sigma_data=SIGMA_DATA, **ASSISTANT_NET)


def ode_pairs(density: GMMDensity, n: int, seed: int, steps: int = 32, sigma_max: float = 40.0):
    """(z, c, x0) with x0 = the exact PF-ODE solution started at sigma_max * z: a deterministic
    noise-to-data map of the reference for the generator to regress onto."""
    g = torch.Generator().manual_seed(seed)
    cond = torch.randint(0, density.spec.n_classes, (n,), generator=g)
    z = torch.randn(n, 2, generator=g)
    dens = density.double()
    x0 = heun_pf_ode(dens, (sigma_max * z).double(), cond, edm_sigmas(steps, 0.002, sigma_max))
    density.float()
    return z, cond, x0.float()


def train_generator_init(gen: nn.Module, density: GMMDensity, steps: int, seed: int) -> None:
    """Regress g(z, c) onto the reference's ODE map (the one-step model post-training starts from)."""
    z, c, x0 = ode_pairs(density, 32768, seed)
    opt = torch.optim.Adam(gen.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        i = torch.randint(0, len(z), (256,), generator=g)
        loss = ((gen(z[i], c[i]) - x0[i]) ** 2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def train_assistant_init(den: MLPDenoiser, gen: nn.Module, spec: GMMSpec, steps: int, seed: int,
                         sigma_mean: float, sigma_std: float) -> None:
    """DSM on the initial generator's samples, so s_psi starts as that generator's score (the
    paper copies the reference into the assistant; here the reference is a formula, not a net)."""
    g = torch.Generator().manual_seed(seed)
    score = VEDenoiserScore(den)
    lam = weight_fn("edm")
    opt = torch.optim.Adam(den.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        c = torch.randint(0, spec.n_classes, (256,), generator=g)
        with torch.no_grad():
            x0 = gen(torch.randn(256, 2, generator=g), c)
        t = sample_sigma_lognormal(256, sigma_mean, sigma_std, generator=g)
        eps = torch.randn(256, 2, generator=g)
        # Label dropout, so the assistant also knows the unconditional score.
        c_in = torch.where(torch.rand(256, generator=g) < 0.1, torch.full_like(c, spec.n_classes), c)
        loss = assistant_dsm_loss(score, x0, t, eps, ve_schedule(), c_in, lam(t)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


class GMMWorld(PlainWorld):
    """World adapter for the training loop (see di_star.world.World)."""

    name = "gmm"

    def __init__(self, spec: GMMSpec = GMMSpec(), sigma_mean: float = -2.0, sigma_std: float = 2.0,
                 recipe_scale: float = 1.0):
        self.spec = spec
        self.schedule = ve_schedule()
        self.null_cond = None
        self.sigma_mean, self.sigma_std = sigma_mean, sigma_std
        self.init_steps = max(20, round(2000 * recipe_scale))   # steps of each cached warm start
        self.density = GMMDensity(spec)
        self.prompts = prompts(spec)

    # Models.
    def initial_generator(self) -> MLPGenerator:
        cfg = {"v": _VERSION, "spec": asdict(self.spec), "net": GEN_NET, "steps": self.init_steps}
        return cached_module("gmm-generator", cfg, lambda: make_generator(self.spec),
                             lambda m: train_generator_init(m, self.density, self.init_steps, seed=0))

    def initial_assistant(self, generator: nn.Module) -> MLPDenoiser:
        cfg = {"v": _VERSION, "spec": asdict(self.spec), "net": ASSISTANT_NET, "gen_steps": self.init_steps,
               "steps": self.init_steps, "sigma": [self.sigma_mean, self.sigma_std]}
        return cached_module("gmm-assistant", cfg, lambda: make_assistant(self.spec),
                             lambda m: train_assistant_init(m, generator, self.spec, self.init_steps, 1,
                                                            self.sigma_mean, self.sigma_std))

    def load_generator(self, path) -> MLPGenerator:
        """A trained generator from a run's generator.safetensors."""
        from safetensors.torch import load_file
        gen = make_generator(self.spec)
        gen.load_state_dict(load_file(str(path)))
        return gen.eval()

    def build(self):
        gen = self.initial_generator()
        assistant = self.initial_assistant(gen)
        return WorldModels(generator=gen.train(), assistant=assistant.train(),
                           make_assistant_score=VEDenoiserScore, reference_score=self.density,
                           frozen=[self.density])

    # Sampling.
    def sample_cond(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.spec.n_classes, (batch,), generator=generator)

    def sample_z(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(batch, 2, generator=generator)

    def sample_t(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return sample_sigma_lognormal(batch, self.sigma_mean, self.sigma_std, generator=generator)

    def sample_eps(self, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator)

    def reward(self, x0: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return preference_reward(x0, cond, self.density)

    # Evaluation.
    @torch.no_grad()
    def generate(self, generator: nn.Module, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
        """n samples, classes balanced, every sample a pure function of (seed, index)."""
        g = torch.Generator().manual_seed(seed)
        cond = torch.arange(n) % self.spec.n_classes
        z = torch.randn(n, 2, generator=g)
        dev = next(generator.parameters()).device
        x = generator(z.to(dev), cond.to(dev)).float().cpu().numpy()
        return x, [self.prompts[c] for c in cond.tolist()]

    def evaluate(self, generator: nn.Module, n: int, seed: int) -> dict[str, float]:
        x, texts = self.generate(generator, n, seed)
        return gmm_metrics(x, texts, self.density)


# Per-sample metrics, shaped score(samples, prompts) -> np.ndarray[N].

def reward_score(x: np.ndarray, texts: Sequence[str], density: GMMDensity) -> np.ndarray:
    c = parse_prompts(texts, density.spec)
    return preference_reward(torch.as_tensor(x, dtype=torch.float32), c, density).numpy()


def loglik_score(x: np.ndarray, texts: Sequence[str], density: GMMDensity) -> np.ndarray:
    """Exact log p_ref(x0 | c): realism; it rewards collapse onto a mode centre, hence SW below."""
    c = parse_prompts(texts, density.spec)
    xt = torch.as_tensor(x, dtype=torch.float32)
    return density.log_prob(xt, torch.zeros(len(xt)), c).numpy()


def prompt_accuracy_score(x: np.ndarray, texts: Sequence[str], density: GMMDensity) -> np.ndarray:
    """1 where the exact posterior argmax_c p(c | x0) is the prompt's class (the CLIP-score analogue)."""
    c = parse_prompts(texts, density.spec)
    xt = torch.as_tensor(x, dtype=torch.float32)
    return (density.class_log_posterior(xt, torch.zeros(len(xt))).argmax(1) == c).float().numpy()


def gmm_metrics(x: np.ndarray, texts: Sequence[str], density: GMMDensity, seed: int = 12345) -> dict[str, float]:
    spec = density.spec
    c = parse_prompts(texts, spec)
    modes = density.mode_of(torch.as_tensor(x, dtype=torch.float32), c).numpy()
    hist = mode_histogram(modes, c.numpy(), spec)
    ref = density.sample(c, torch.Generator().manual_seed(seed)).numpy()
    sw = np.mean([sliced_wasserstein(x[c.numpy() == k], ref[c.numpy() == k]) for k in range(spec.n_classes)])
    return {
        "reward": float(reward_score(x, texts, density).mean()),
        "loglik": float(loglik_score(x, texts, density).mean()),
        "sw": float(sw),
        "mode_coverage": mode_coverage(hist),
        "mode_entropy": mode_entropy(hist),
        "prompt_acc": float(prompt_accuracy_score(x, texts, density).mean()),
    }


def reference_metrics(density: GMMDensity, n: int, seed: int) -> dict[str, float]:
    """The same metrics for exact reference samples: the row every method is measured against."""
    c = torch.arange(n) % density.spec.n_classes
    x = density.sample(c, torch.Generator().manual_seed(seed)).numpy()
    return gmm_metrics(x, [f"class {k}" for k in c.tolist()], density)


def _from_config(cfg, device=None) -> GMMWorld:
    return GMMWorld(sigma_mean=cfg.objective.sigma_mean, sigma_std=cfg.objective.sigma_std,
                    recipe_scale=cfg.world.recipe_scale)


WORLDS.add("gmm", WorldEntry(_from_config), "2-D class-conditional Gaussian mixtures, exact scores")
