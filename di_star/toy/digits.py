"""The `digits` world: scikit-learn's 8x8 handwritten digits (1797 images, shipped with sklearn).

Prompts are "a handwritten digit k". Everything below is trained on the CPU once and cached
(di_star.toy.cache, keyed by recipe):
- the reference: a conditional EDM denoiser (MLP), label dropout so it also knows s(x | empty);
- a digit classifier: its predictions give prompt accuracy (the CLIP-score analogue), its
  penultimate features a Frechet distance to the real digits (fidelity) and a diversity measure;
- the initial one-step generator (the DMD2 role): a regression onto the reference's
  probability-flow ODE map.
The assistant starts as a copy of the reference, as in the paper. The explicit reward is "ink",
the mean pixel brightness, a differentiable stand-in for a preference that can be hacked: the
highest-ink image is a white square, which is no digit at all.

Images in the metric functions are float arrays in [0, 1], shape [N, 8, 8] (display space);
the networks work on flat [-1, 1] vectors of 64 pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from di_star.losses import assistant_dsm_loss
from di_star.noise import sample_sigma_lognormal, ve_schedule, weight_fn
from di_star.scores import VEDenoiserScore
from di_star.toy.cache import cached_module
from di_star.toy.nets import MLPDenoiser, MLPGenerator, edm_sigmas, heun_pf_ode
from di_star.world import WORLDS, PlainWorld, WorldEntry, WorldModels
from evalsuite.metrics.fid import frechet_distance  # the one Frechet distance (also FID's)

_VERSION = 2
N_CLASSES = 10
DIM = 64
SIGMA_DATA = 0.6
REF_NET = dict(hidden=256, depth=3)
GEN_NET = dict(hidden=256, depth=3)


@dataclass(frozen=True)
class DigitsRecipe:
    """Everything that changes the cached networks (part of their cache keys)."""
    ref_steps: int = 2500
    ref_batch: int = 128
    ref_lr: float = 2e-3
    label_dropout: float = 0.15
    clf_steps: int = 1000
    gen_pairs: int = 8192
    gen_steps: int = 2000
    ode_steps: int = 18
    sigma_max: float = 20.0

    def scaled(self, f: float) -> "DigitsRecipe":
        """The same recipe with every training-step count times f (tests use tiny f)."""
        from dataclasses import replace
        if f == 1.0:
            return self
        n = lambda k: max(10, round(k * f))  # noqa: E731
        return replace(self, ref_steps=n(self.ref_steps), clf_steps=n(self.clf_steps),
                       gen_steps=n(self.gen_steps), gen_pairs=max(256, n(self.gen_pairs)),
                       ode_steps=max(4, round(self.ode_steps * min(1.0, 4 * f))))


def prompts() -> list[str]:
    return [f"a handwritten digit {k}" for k in range(N_CLASSES)]


def parse_prompts(texts: Sequence[str]) -> torch.Tensor:
    lookup = {p: i for i, p in enumerate(prompts())}
    return torch.tensor([lookup[t] for t in texts])


def load_data() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as flat [-1, 1] vectors, and their labels."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0 * 2 - 1
    return x, torch.tensor(d.target, dtype=torch.long)


def to_unit(x: torch.Tensor) -> np.ndarray:
    """Network space [-1, 1] x 64 -> display images [N, 8, 8] in [0, 1]."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).reshape(-1, 8, 8).numpy()


def from_unit(images: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(images), dtype=torch.float32).reshape(-1, DIM) * 2 - 1


# Once-trained networks.

def train_reference(den: MLPDenoiser, r: DigitsRecipe, seed: int = 0) -> None:
    """EDM training (lognormal sigma, P_mean -1.2, P_std 1.2) with label dropout for CFG."""
    x, y = load_data()
    g = torch.Generator().manual_seed(seed)
    score, lam = VEDenoiserScore(den), weight_fn("edm")
    opt = torch.optim.Adam(den.parameters(), lr=r.ref_lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, r.ref_lr, total_steps=r.ref_steps, pct_start=0.05)
    for _ in range(r.ref_steps):
        i = torch.randint(0, len(x), (r.ref_batch,), generator=g)
        c = torch.where(torch.rand(r.ref_batch, generator=g) < r.label_dropout, N_CLASSES, y[i])
        t = sample_sigma_lognormal(r.ref_batch, -1.2, 1.2, generator=g)
        eps = torch.randn(r.ref_batch, DIM, generator=g)
        loss = assistant_dsm_loss(score, x[i], t, eps, ve_schedule(), c, lam(t)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


class DigitClassifier(nn.Module):
    """MLP classifier; `features` (penultimate layer) feed the Frechet distance and diversity."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(DIM, 256), nn.SiLU(), nn.Linear(256, 128), nn.SiLU())
        self.head = nn.Linear(128, N_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_classifier(clf: DigitClassifier, r: DigitsRecipe, seed: int = 0) -> None:
    """Trained with pixel noise so it still reads slightly off-manifold generator samples."""
    x, y = load_data()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(clf.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(r.clf_steps):
        i = torch.randint(0, len(x), (256,), generator=g)
        xi = x[i] + 0.15 * torch.randn(256, DIM, generator=g)
        loss = nn.functional.cross_entropy(clf(xi), y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def train_generator_init(gen: MLPGenerator, reference: MLPDenoiser, r: DigitsRecipe, seed: int = 0) -> None:
    """Regress g(z, c) onto the reference's PF-ODE map z -> x0 (Heun, EDM steps, no guidance)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, N_CLASSES, (r.gen_pairs,), generator=g)
    z = torch.randn(r.gen_pairs, DIM, generator=g)
    score = VEDenoiserScore(reference)
    x0 = torch.cat([heun_pf_ode(score, r.sigma_max * z[j:j + 2048], c[j:j + 2048],
                                edm_sigmas(r.ode_steps, 0.002, r.sigma_max).float())
                    for j in range(0, r.gen_pairs, 2048)])
    opt = torch.optim.Adam(gen.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, r.gen_steps)
    for _ in range(r.gen_steps):
        i = torch.randint(0, r.gen_pairs, (256,), generator=g)
        loss = ((gen(z[i], c[i]) - x0[i]) ** 2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def _key(r: DigitsRecipe, **extra) -> dict:
    from dataclasses import asdict
    return {"v": _VERSION, "recipe": asdict(r), "ref_net": REF_NET, "gen_net": GEN_NET,
            "sigma_data": SIGMA_DATA, **extra}


def reference_denoiser(r: DigitsRecipe = DigitsRecipe()) -> MLPDenoiser:
    return cached_module("digits-reference", _key(r),
                         lambda: MLPDenoiser(DIM, N_CLASSES, sigma_data=SIGMA_DATA, **REF_NET),
                         lambda m: train_reference(m, r))


def classifier(r: DigitsRecipe = DigitsRecipe()) -> DigitClassifier:
    return cached_module("digits-classifier", _key(r), DigitClassifier, lambda m: train_classifier(m, r))


def initial_generator(r: DigitsRecipe = DigitsRecipe()) -> MLPGenerator:
    ref = reference_denoiser(r)
    return cached_module("digits-generator", _key(r), lambda: MLPGenerator(DIM, N_CLASSES, **GEN_NET),
                         lambda m: train_generator_init(m, ref, r))


def ink_reward(x: torch.Tensor) -> torch.Tensor:
    """Mean pixel brightness in [0, 1] units, per sample; differentiable, unbounded off-range."""
    return ((x + 1) / 2).reshape(x.shape[0], -1).mean(1)


# Metrics: per-image score(images, prompts) -> np.ndarray[N]; set metrics features -> stats -> distance.

class DigitsMetrics:
    """The digits bench's scorers, all from one cached classifier."""

    def __init__(self, r: DigitsRecipe = DigitsRecipe()):
        self.clf = classifier(r).eval()
        x, y = load_data()
        self.real_feats = self.features(to_unit(x))
        self.real_labels = y.numpy()

    @torch.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        return self.clf.features(from_unit(images)).numpy().astype(np.float64)

    def reward(self, images: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """Ink (the explicit reward, measured on clamped display images)."""
        return np.asarray(images, dtype=np.float64).reshape(len(images), -1).mean(1)

    @torch.no_grad()
    def prompt_accuracy(self, images: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """1 where the classifier reads the prompt's digit."""
        pred = self.clf(from_unit(images)).argmax(1)
        return (pred == parse_prompts(texts)).float().numpy()

    def frechet_distance(self, images: np.ndarray) -> float:
        return frechet_distance(*feature_stats(self.features(images)), *feature_stats(self.real_feats))

    def diversity(self, images: np.ndarray, texts: Sequence[str]) -> float:
        """Mean within-class pairwise feature distance, relative to the real digits' (1 = as diverse)."""
        f, c = self.features(images), parse_prompts(texts).numpy()
        return within_class_spread(f, c) / within_class_spread(self.real_feats, self.real_labels)

    def all(self, images: np.ndarray, texts: Sequence[str]) -> dict[str, float]:
        return {"reward": float(self.reward(images, texts).mean()),
                "fd": self.frechet_distance(images),
                "prompt_acc": float(self.prompt_accuracy(images, texts).mean()),
                "diversity": self.diversity(images, texts)}


def feature_stats(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return f.mean(0), np.cov(f, rowvar=False)


def within_class_spread(f: np.ndarray, c: np.ndarray) -> float:
    """Mean pairwise Euclidean distance between features of the same class, averaged over classes."""
    out = []
    for k in np.unique(c):
        fk = torch.as_tensor(f[c == k])
        if len(fk) > 1:
            d = torch.cdist(fk, fk)
            out.append(float(d.sum() / (len(fk) * (len(fk) - 1))))
    return float(np.mean(out))


class DigitsWorld(PlainWorld):
    """World adapter for the training loop (see di_star.world.World)."""

    name = "digits"

    def __init__(self, recipe: DigitsRecipe = DigitsRecipe(), sigma_mean: float = -2.0, sigma_std: float = 2.0):
        self.recipe = recipe
        self.schedule = ve_schedule()
        self.null_cond = None
        self.sigma_mean, self.sigma_std = sigma_mean, sigma_std
        self.prompts = prompts()
        self._metrics: DigitsMetrics | None = None

    def initial_generator(self) -> MLPGenerator:
        return initial_generator(self.recipe)

    def load_generator(self, path) -> MLPGenerator:
        """A trained generator from a run's generator.safetensors."""
        from safetensors.torch import load_file
        gen = MLPGenerator(DIM, N_CLASSES, **GEN_NET)
        gen.load_state_dict(load_file(str(path)))
        return gen.eval()

    def build(self):
        ref = reference_denoiser(self.recipe)
        assistant = MLPDenoiser(DIM, N_CLASSES, sigma_data=SIGMA_DATA, **REF_NET)
        assistant.load_state_dict(ref.state_dict())   # the paper: assistant := copy of the reference
        return WorldModels(generator=initial_generator(self.recipe).train(), assistant=assistant.train(),
                           make_assistant_score=VEDenoiserScore, reference_score=VEDenoiserScore(ref),
                           frozen=[ref])

    def sample_cond(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, N_CLASSES, (batch,), generator=generator)

    def sample_z(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(batch, DIM, generator=generator)

    def sample_t(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return sample_sigma_lognormal(batch, self.sigma_mean, self.sigma_std, generator=generator)

    def sample_eps(self, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator)

    def reward(self, x0: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return ink_reward(x0)

    @torch.no_grad()
    def generate(self, generator: nn.Module, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
        """n images [N, 8, 8] in [0, 1], classes balanced, each a pure function of (seed, index)."""
        g = torch.Generator().manual_seed(seed)
        cond = torch.arange(n) % N_CLASSES
        z = torch.randn(n, DIM, generator=g)
        dev = next(generator.parameters()).device
        x = generator(z.to(dev), cond.to(dev))
        return to_unit(x), [self.prompts[c] for c in cond.tolist()]

    @torch.no_grad()
    def generate_for(self, generator: nn.Module, texts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """One image per (prompt, seed), each z drawn from its own seed: the harness's contract that
        an image is a pure function of (model, prompt, seed), whatever the batching."""
        z = torch.stack([torch.randn(DIM, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        dev = next(generator.parameters()).device
        return to_unit(generator(z.to(dev), parse_prompts(texts).to(dev)))

    def metrics(self) -> DigitsMetrics:
        if self._metrics is None:
            self._metrics = DigitsMetrics(self.recipe)
        return self._metrics

    def evaluate(self, generator: nn.Module, n: int, seed: int) -> dict[str, float]:
        images, texts = self.generate(generator, n, seed)
        return self.metrics().all(images, texts)


def reference_samples(n: int, seed: int, guidance: float = 1.0, recipe: DigitsRecipe = DigitsRecipe()
                      ) -> tuple[np.ndarray, list[str]]:
    """Reference diffusion samples (Heun PF-ODE, optional CFG): the multi-step row of the table."""
    from di_star.scores import CFGScore
    g = torch.Generator().manual_seed(seed)
    cond = torch.arange(n) % N_CLASSES
    z = torch.randn(n, DIM, generator=g)
    score = CFGScore(VEDenoiserScore(reference_denoiser(recipe)), guidance, None)
    x = heun_pf_ode(score, recipe.sigma_max * z, cond, edm_sigmas(recipe.ode_steps, 0.002, recipe.sigma_max).float())
    return to_unit(x), [prompts()[c] for c in cond.tolist()]


def _from_config(cfg, device=None) -> DigitsWorld:
    return DigitsWorld(DigitsRecipe().scaled(cfg.world.recipe_scale),
                       sigma_mean=cfg.objective.sigma_mean, sigma_std=cfg.objective.sigma_std)


WORLDS.add("digits", WorldEntry(_from_config, evaluate="distar eval --model toy-digits:{out} --bench digits"),
            "sklearn 8x8 digits, small cached reference diffusion")
