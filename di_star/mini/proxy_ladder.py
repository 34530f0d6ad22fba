"""A ladder of proxy rewards of measured quality: `distar lab proxy-ladder`.

The shipped proxy (`mini_pickscore`, world/proxy_reward) was trained on four fixed candidate
kinds, none of them a generator's own sample, and agrees with the hard gold judge on only ~60% of
generator-sample pairs. The ladder fine-tunes it on the generators' OWN samples, relabelled by
the gold judge, with growing and increasingly on-policy data, and measures each rung:

1. samples: the one-step init (`mini_onestep`), the 15-step reference and the reference at other
   steps / guidance, and DI*-trained generators (short runs of the product's trainer, exported
   at two points each), on the world's TRAINING prompts (training data) and on all mini_parti
   prompts (the held-out evaluation; never trained on);
2. every image is scored by the hard gold judge (di_star.mini.gold);
3. pairs: images of the same prompt (training: the build's preference_pairs, near-ties 0.5;
   evaluation: only pairs whose gold scores differ by >= MIN_GAP);
4. each rung = the shipped proxy fine-tuned with the build's proxy objective (PickScore's loss,
   di_star.mini.build.train_proxy) with the token embedding frozen (shared with the shipped
   proxy, so a rung's file holds only the ~0.26M parameters it changed, fp16); a rung may
   continue from the rung below (`Rung.init`), and may use the listwise path (`Rung.dense`:
   each step takes whole prompts, every same-prompt pair's PickScore loss plus a dense per-image
   term, 1 - Pearson r of the proxy's cosine and the gold score; listwise_loss);
5. measured on held-out pairs: agreement with gold (share of pairs ordered as gold orders them,
   95% interval resampling PROMPTS) and image-level Spearman with gold (prompt-bootstrap
   interval), for every rung and for the shipped proxy, and each rung's agreement minus the
   rung below's on the same pairs (paired_agreement, prompt-bootstrap interval).

`--ship` writes the rungs and their manifest.json to di_star/mini/data/proxy_ladder/, where
`mini_proxy_r1..r3` (di_star.mini.learned_metrics.MiniProxyRung) load them over the shipped
proxy. Everything is cached under --out: a rerun resumes.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from distar.core.errors import DistarError

if TYPE_CHECKING:  # torch is imported where it is used: registering the rungs stays light
    from torch import Tensor

LADDER_DIR = Path(__file__).resolve().parent / "data" / "proxy_ladder"
MANIFEST = "manifest.json"
DELTA = "delta.safetensors"
RUNGS = ("mini_proxy_r1", "mini_proxy_r2", "mini_proxy_r3")
SHIPPED = "mini_pickscore"
MIN_GAP = 0.02
# Shared with the shipped proxy (2.37M of its 2.63M parameters): never trained, never shipped.
FROZEN = ("text_model.embeddings.token_embedding.weight",)
HELD_OUT_BENCH = "mini_parti"


@dataclass(frozen=True)
class Source:
    """A generator whose own samples are labelled: the init, the reference at (steps, guidance),
    or a DI*-trained generator (preset, seed) exported after `at` steps."""
    name: str
    kind: str                      # 'onestep' | 'reference' | 'trained'
    steps: int = 1
    guidance: float = 0.0
    preset: str = ""
    seed: int = 0
    at: int = 0


@dataclass(frozen=True)
class TrainedRun:
    preset: str
    seed: int
    checkpoints: tuple[int, ...]


@dataclass(frozen=True)
class Rung:
    """A rung's training data: the first `prompts` training prompts, the samples of `sources`
    (`images` per prompt and source), `steps` optimiser steps of batch `batch`."""
    name: str
    prompts: int
    sources: tuple[str, ...]
    images: int
    steps: int
    batch: int = 64
    lr: float = 1e-4
    seed: int = 0
    # > 0: the listwise path (train_listwise): `batch` PROMPTS a step with all their images,
    # every same-prompt pair's loss plus `dense` x (1 - Pearson r of cosine and gold per image)
    dense: float = 0.0
    init: str = ""                 # a previous rung this one continues from ('' = the shipped proxy)


@dataclass(frozen=True)
class LadderPlan:
    runs: tuple[TrainedRun, ...]
    sources: tuple[Source, ...]
    rungs: tuple[Rung, ...]
    held_out_prompts: int | None      # first N mini_parti prompts (None: all 300)
    held_out_images: int              # images per held-out prompt and source
    held_out_sources: tuple[str, ...]  # the generators judged during training: init, reference, DI*
    seed: int = 0


def trained_sources(runs: tuple[TrainedRun, ...]) -> tuple[Source, ...]:
    return tuple(Source(f"{r.preset.split('/')[-1]}_s{r.seed}@{s}", "trained", preset=r.preset,
                        seed=r.seed, at=s) for r in runs for s in r.checkpoints)


_BASE_SOURCES = (Source("onestep", "onestep"),
                 Source("ref15_cfg4", "reference", 15, 4.0),
                 Source("ref4_cfg4", "reference", 4, 4.0),
                 Source("ref15_cfg1", "reference", 15, 1.0),
                 Source("ref15_cfg8", "reference", 15, 8.0))
_RUNS = (TrainedRun("mini/di_star_in", 11, (60, 120)),
         TrainedRun("mini/di_pp", 12, (60, 120)),
         TrainedRun("mini/di_star_in_oracle", 13, (60, 120)))
_ALL = tuple(s.name for s in _BASE_SOURCES + trained_sources(_RUNS))
# the one-step generators judged during DI* training: one UNet call per image (cheap to sample)
_ON_POLICY = ("onestep",) + tuple(s.name for s in trained_sources(_RUNS))
# Tried and NOT shipped (docs/training.md): r3 continued listwise on the one-step generators'
# own samples raised image-level Spearman 0.30 -> 0.54 but not pair agreement (-0.005
# [-0.015, +0.005] paired). Add it to PLAN.rungs (and RUNGS) to rebuild and measure it.
LISTWISE_TRIAL = Rung("mini_proxy_r4", 800, _ON_POLICY, 1, 300, batch=16, dense=1.0,
                      init="mini_proxy_r3")

PLAN = LadderPlan(
    runs=_RUNS, sources=_BASE_SOURCES + trained_sources(_RUNS),
    rungs=(Rung("mini_proxy_r1", 100, ("onestep", "ref15_cfg4"), 1, 60),
           Rung("mini_proxy_r2", 400, ("onestep", "ref15_cfg4", "ref4_cfg4", "ref15_cfg1",
                                       "ref15_cfg8"), 1, 400),
           Rung("mini_proxy_r3", 1600, _ALL, 1, 2000)),
    held_out_prompts=None, held_out_images=1,
    held_out_sources=("onestep", "ref15_cfg4") + tuple(s.name for s in trained_sources(_RUNS)))

_DRY_RUNS = (TrainedRun("mini/di_star_in", 11, (1,)),)
DRY_RUN = LadderPlan(
    runs=_DRY_RUNS, sources=_BASE_SOURCES[:2] + trained_sources(_DRY_RUNS),
    rungs=(Rung("mini_proxy_r1", 2, ("onestep", "ref15_cfg4"), 2, 1, batch=4),
           Rung("mini_proxy_r2", 3, ("onestep", "ref15_cfg4"), 2, 1, batch=4),
           Rung("mini_proxy_r3", 4, ("onestep", "ref15_cfg4", "di_star_in_s11@1"), 2, 2, batch=4),
           Rung("mini_proxy_r4", 4, ("onestep", "di_star_in_s11@1"), 2, 2, batch=2, dense=1.0,
                init="mini_proxy_r3")),
    held_out_prompts=4, held_out_images=2,
    held_out_sources=("onestep", "ref15_cfg4", "di_star_in_s11@1"))


# Statistics (pure) -----------------------------------------------------------------------------
def gold_pairs(gold: np.ndarray, owner: np.ndarray, min_gap: float = MIN_GAP) -> np.ndarray:
    """[P, 2] index pairs (a, b) of images of the same prompt whose gold scores differ by at
    least `min_gap`, a before b."""
    out = []
    for p in np.unique(owner):
        ks = np.flatnonzero(owner == p)
        a, b = np.triu_indices(len(ks), 1)
        keep = np.abs(gold[ks[a]] - gold[ks[b]]) >= min_gap
        out.append(np.stack([ks[a][keep], ks[b][keep]], 1))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=int)


def pair_hits(proxy: np.ndarray, gold: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Per pair: 1 when the proxy orders it as gold does, 0 when reversed, 0.5 on a proxy tie."""
    dp = proxy[pairs[:, 0]] - proxy[pairs[:, 1]]
    dg = gold[pairs[:, 0]] - gold[pairs[:, 1]]
    return np.where(dp == 0, 0.5, (np.sign(dp) == np.sign(dg)).astype(float))


def agreement(proxy: np.ndarray, gold: np.ndarray, owner: np.ndarray, min_gap: float = MIN_GAP,
              n_boot: int = 2000) -> dict:
    """Share of same-prompt pairs (gold gap >= min_gap) the proxy orders as gold does, with a
    95% bootstrap interval resampling prompts (a prompt's pairs share images)."""
    from evalsuite.metrics.stats import bootstrap_ci
    proxy, gold, owner = np.asarray(proxy, float), np.asarray(gold, float), np.asarray(owner)
    pairs = gold_pairs(gold, owner, min_gap)
    if len(pairs) == 0:
        return {"agreement": float("nan"), "agreement_ci": [float("nan")] * 2, "pairs": 0,
                "prompts": 0}
    hits = pair_hits(proxy, gold, pairs)
    ci = bootstrap_ci(hits, n_boot=n_boot, clusters=owner[pairs[:, 0]])
    return {"agreement": float(hits.mean()),
            "agreement_ci": [float(np.clip(ci.low, 0, 1)), float(np.clip(ci.high, 0, 1))],
            "pairs": int(len(pairs)), "prompts": int(len(np.unique(owner[pairs[:, 0]])))}


def paired_agreement(proxy_a: np.ndarray, proxy_b: np.ndarray, gold: np.ndarray, owner: np.ndarray,
                     min_gap: float = MIN_GAP, n_boot: int = 2000) -> dict:
    """Proxy a's agreement minus proxy b's on the SAME held-out pairs, with a 95% bootstrap
    interval resampling prompts (paired: each pair counts for both)."""
    from evalsuite.metrics.stats import bootstrap_ci
    gold, owner = np.asarray(gold, float), np.asarray(owner)
    pairs = gold_pairs(gold, owner, min_gap)
    d = pair_hits(np.asarray(proxy_a, float), gold, pairs) - pair_hits(np.asarray(proxy_b, float), gold, pairs)
    ci = bootstrap_ci(d, n_boot=n_boot, clusters=owner[pairs[:, 0]])
    return {"diff": round(float(d.mean()), 4), "diff_ci": [round(ci.low, 4), round(ci.high, 4)],
            "pairs": int(len(pairs))}


# Samples ------------------------------------------------------------------------------------------
def train_prompts() -> list[str]:
    from di_star.sdxl.presets import MINI_TRAIN_PROMPTS
    return [t for t in MINI_TRAIN_PROMPTS.read_text().splitlines() if t.strip()]


def held_out_prompts(limit: int | None) -> list[str]:
    from evalsuite.benchmarks import load_benchmark
    return [p.text for p in load_benchmark(HELD_OUT_BENCH).prompts][:limit]


def train_generator(run: TrainedRun, out: Path, log) -> None:
    """The product's trainer (di_star.trainer.train) on `run.preset` with `run.seed`, exported
    at each checkpoint into out/runs/<preset>_s<seed>/at/step<N> (resumes: the trainer continues
    a run for longer along the same trajectory)."""
    from di_star.config import from_dict
    from di_star.presets import get_preset
    from di_star.trainer import train
    from distar.core.paths import safe_name
    run_dir = out / "runs" / safe_name(f"{run.preset}_s{run.seed}")
    base = get_preset(run.preset).replace(sd={"sample_every": 0}, world={"eval_samples": 1})
    for step in run.checkpoints:
        at = run_dir / "at" / f"step{step}"
        if (at / "model_index.json").is_file():
            continue
        t0 = time.time()
        # ckpt_every and log_every stay fixed across stages: the trainer resumes the same run
        cfg = base.replace(run={"seed": run.seed, "max_steps": step, "ckpt_every": min(run.checkpoints),
                                "log_every": max(1, max(run.checkpoints) // 5)})
        train(from_dict(cfg.to_dict()), run_dir / "train", progress=False)
        tmp = at.with_name(at.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(run_dir / "train" / "export", tmp)
        tmp.replace(at)
        log(f"trained {run.preset} seed {run.seed} to step {step} ({time.time() - t0:.0f} s)")


def trained_unet_dir(out: Path, src: Source) -> Path:
    from distar.core.paths import safe_name
    return out / "runs" / safe_name(f"{src.preset}_s{src.seed}") / "at" / f"step{src.at}" / "unet"


class Generators:
    """The shipped reference pipeline (text encoders, VAE, UNet) plus one-step UNets, loaded once."""

    def __init__(self, out: Path):
        from di_star.mini import build as B
        from di_star.mini import weights as mw
        self.out, self.B = out, B
        self.onestep_dir = mw.component_dir("onestep") / "unet"

    @cached_property
    def pipe(self):
        """Loaded on the first sample: a rerun that finds every sample cached never loads it."""
        from di_star.mini import weights as mw
        return self.B.load_pipeline(mw.component_dir("pipeline"))

    def one_step(self, folder: Path):
        import torch
        from diffusers import UNet2DConditionModel
        from di_star.mini import weights as mw
        from di_star.sdxl.models import OneStepGenerator
        unet = UNet2DConditionModel.from_pretrained(folder, torch_dtype=torch.float32).eval()
        return OneStepGenerator(unet, self.B._schedule(), mw.ONESTEP_TIMESTEP)

    def sample(self, src: Source, prompts: list[str], z: Tensor, batch: int = 64) -> np.ndarray:
        """uint8 images [N, 64, 64, 3] (as a PNG of the sample holds them)."""
        import torch
        with torch.no_grad():
            return self._sample(src, prompts, z, batch)

    def _sample(self, src: Source, prompts: list[str], z: Tensor, batch: int) -> np.ndarray:
        import torch
        B = self.B
        if src.kind == "reference":
            lat = torch.cat([self.pipe(prompts[i:i + batch], latents=z[i:i + batch],
                                       num_inference_steps=src.steps, guidance_scale=src.guidance,
                                       height=64, width=64, output_type="latent").images
                             for i in range(0, len(prompts), batch)])
        else:
            gen = self.one_step(self.onestep_dir if src.kind == "onestep"
                                else trained_unet_dir(self.out, src))
            lat = torch.cat([gen(z[i:i + batch], B.condition(self.pipe, prompts[i:i + batch]))
                             for i in range(0, len(prompts), batch)])
        px = B.decode(self.pipe.vae, lat)
        return ((px + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def sample_file(out: Path, split: str, src: str) -> Path:
    from distar.core.paths import safe_name
    return out / "samples" / split / f"{safe_name(src)}.safetensors"


def make_samples(gens: Generators, src: Source, split: str, prompts: list[str], images: int,
                 out: Path, seed: int, log) -> None:
    """`images` samples per prompt of `src` (image k of prompt i in row k * len(prompts) + i),
    their gold scores, cached in out/samples/<split>/<source>.safetensors. A cached file with
    at least as many prompts is kept; one image per prompt for fewer prompts is extended (the
    noise of row i does not depend on how many rows are drawn)."""
    import torch
    from safetensors.torch import load_file
    from distar.core.atomic import save_tensors
    from di_star.mini.gold import gold_score
    from di_star.mini.build import to_pil
    f = sample_file(out, split, src.name)
    old = load_file(str(f)) if f.is_file() else None
    if old is not None and int(old["prompts"]) >= len(prompts) and int(old["images"]) >= images:
        return
    keep = int(old["prompts"]) if old is not None and images == int(old["images"]) == 1 else 0
    t0 = time.time()
    texts = prompts * images
    z = gens.B.noise(len(texts), gens.B.stage_seed(seed, split, src.name))[keep:]
    px = gens.sample(src, texts[keep:], z)
    gold = gold_score(to_pil(torch.from_numpy(px).permute(0, 3, 1, 2).float() / 127.5 - 1), texts[keep:])
    if keep:
        px = np.concatenate([old["pixels"].numpy(), px])
        gold = np.concatenate([old["gold"].numpy(), gold])
    save_tensors({"pixels": torch.from_numpy(px).contiguous(), "gold": torch.tensor(gold),
                  "prompts": torch.tensor(len(prompts)), "images": torch.tensor(images)}, f)
    log(f"{split}/{src.name}: {len(texts)} samples, gold mean {np.mean(gold):.3f} "
        f"({time.time() - t0:.0f} s)")


def load_split(out: Path, split: str, sources: tuple[str, ...], prompts: int, images: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(uint8 images, gold, owner = prompt index, source per image) of the first `prompts`
    prompts and `images` images per prompt of each source."""
    from safetensors.torch import load_file
    px, gold, owner, names = [], [], [], []
    for s in sources:
        d = load_file(str(sample_file(out, split, s)))
        n = int(d["prompts"])
        rows = np.concatenate([k * n + np.arange(prompts) for k in range(images)])
        px.append(d["pixels"].numpy()[rows])
        gold.append(d["gold"].numpy()[rows])
        owner.append(rows % n)
        names += [s] * len(rows)
    return np.concatenate(px), np.concatenate(gold), np.concatenate(owner), names


def source_needs(plan: LadderPlan, out: Path | None = None) -> dict[str, tuple[int, int]]:
    """Per source: (training prompts, images per prompt) the rungs that use it need; a rung whose
    fit `out` already holds (rung_cached) needs none."""
    needs: dict[str, tuple[int, int]] = {}
    for r in plan.rungs:
        if out is not None and rung_cached(r, out):
            continue
        for s in r.sources:
            p, k = needs.get(s, (0, 0))
            needs[s] = (max(p, r.prompts), max(k, r.images))
    return needs


def collect(plan: LadderPlan, out: Path, log, kinds: tuple[str, ...] = ("onestep", "reference", "trained")
            ) -> None:
    """Every source's training samples (as many as the rungs need) and held-out samples, gold
    labelled (cached)."""
    gens = Generators(out)
    needs = source_needs(plan, out)
    train_p, held_p = train_prompts(), held_out_prompts(plan.held_out_prompts)
    for src in plan.sources:
        if src.kind not in kinds:
            continue
        if src.name in needs:
            n, k = needs[src.name]
            make_samples(gens, src, "train", train_p[:n], k, out, plan.seed, log)
        if src.name in plan.held_out_sources:
            make_samples(gens, src, "heldout", held_p, plan.held_out_images, out, plan.seed, log)


# Rungs -------------------------------------------------------------------------------------------
def shipped_proxy():
    """The shipped proxy's CLIPModel (fp32), every rung's starting point."""
    from di_star.mini import weights as mw
    from di_star.mini.learned_metrics import load_clip_model
    return load_clip_model(mw.component_dir("proxy_reward"))


def _chw(px: np.ndarray) -> Tensor:
    import torch
    return torch.from_numpy(px).permute(0, 3, 1, 2)


def listwise_loss(cos: Tensor, gold: Tensor, scale: Tensor, dense: float) -> Tensor:
    """[P, S] cosines (proxy) and gold scores of P prompts' S images each: PickScore's loss on
    every same-prompt pair (near-ties, |gold gap| < MIN_GAP, labelled 0.5) plus `dense` x
    (1 - Pearson r of cosine and gold over all P * S images). The dense term gives every image a
    target (a pair label near a tie carries little), and is scale-free: the cosine needs no
    extra head, so what ships is still the proxy's own cosine."""
    import torch
    import torch.nn.functional as F
    i, j = torch.triu_indices(cos.shape[1], cos.shape[1], 1)
    d = gold[:, i] - gold[:, j]
    y = torch.where(d.abs() < MIN_GAP, torch.full_like(d, 0.5), (d > 0).float())
    z = scale * (cos[:, i] - cos[:, j])  # 2-way softmax cross-entropy = logistic loss on z
    pair = -(y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z)).mean()
    c, g = cos.flatten() - cos.mean(), gold.flatten() - gold.mean()
    r = (c * g).sum() / (c.norm() * g.norm()).clamp(min=1e-8)
    return pair + dense * (1 - r)


def prompt_groups(owner: np.ndarray) -> np.ndarray:
    """[prompts, images per prompt] row indices of each prompt's images (every prompt has as
    many: each source contributes `images` per prompt)."""
    order = np.argsort(owner, kind="stable")
    return order.reshape(len(np.unique(owner)), -1)


def train_listwise(clip, images: Tensor, gold: np.ndarray, owner: np.ndarray, prompts: list[str],
                   rung: Rung, log):
    """`clip` trained with listwise_loss: each step `rung.batch` prompts with all their images;
    token embedding frozen (as every rung)."""
    import copy

    import torch
    import torch.nn.functional as F
    from di_star.mini import build as B
    torch.manual_seed(B.stage_seed(rung.seed, "proxy"))
    model = copy.deepcopy(clip).train().requires_grad_(True)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in FROZEN)
    enc = B.tokenize(B.clip_tokenizer(), prompts, max_length=32)
    groups = torch.from_numpy(prompt_groups(owner))
    gold_t = torch.tensor(gold, dtype=torch.float32)
    opt, sched = B.stage_optimizer([p for p in model.parameters() if p.requires_grad], rung.lr,
                                   rung.steps, wd=0.05)
    gen = torch.Generator().manual_seed(B.stage_seed(rung.seed, "proxy-data"))
    for step, idx in enumerate(B.index_batches(len(groups), rung.batch, rung.steps, gen)):
        rows = groups[idx]                                     # [P, S]
        img = F.normalize(B.clip_features(model.get_image_features(
            pixel_values=B.clip_pixels(B.unit_range(images[rows.flatten()])))), dim=-1)
        txt = F.normalize(B.clip_features(model.get_text_features(
            input_ids=enc["input_ids"][idx], attention_mask=enc["attention_mask"][idx])), dim=-1)
        cos = (img.view(*rows.shape, -1) * txt[:, None]).sum(-1)
        loss = listwise_loss(cos, gold_t[rows], model.logit_scale.exp().clamp(max=100), rung.dense)
        B.stage_step(opt, sched, loss, step, rung.steps, log, "proxy (listwise)", every=50)
    return B.fp16_round(model.eval().requires_grad_(False)).cpu()


def rung_start(rung: Rung, out: Path):
    """The model a rung starts from: the shipped proxy, or the fitted delta of `rung.init` (built
    earlier in the same plan, in the same --out) over it."""
    from safetensors.torch import load_file
    if not rung.init:
        return shipped_proxy()
    f = out / "ladder" / rung.init / DELTA
    if not f.is_file():
        raise DistarError(f"{rung.name} continues from {rung.init}, which {out} does not hold. "
                          f"Fix: list {rung.init} before {rung.name} in the plan.")
    return apply_delta(shipped_proxy(), load_file(str(f)))


def fit_rung(rung: Rung, out: Path, log) -> tuple[object, dict]:
    """The rung's start (rung_start) fine-tuned on its pairs, token embedding frozen: PickScore's
    loss on sampled pairs (build.train_proxy, near-ties 0.5), or, with `rung.dense` > 0, the
    listwise path (train_listwise). Returns (model, training-data record)."""
    from di_star.mini import build as B
    from di_star.mini.configs import SIZES
    px, gold, owner, _ = load_split(out, "train", rung.sources, rung.prompts, rung.images)
    prompts = train_prompts()[:rung.prompts]
    pairs = B.preference_pairs(list(owner), gold, rung.seed)
    if rung.dense > 0:
        model = train_listwise(rung_start(rung, out), _chw(px), gold, owner, prompts, rung, log)
    else:
        size = replace(SIZES["full"], proxy_steps=rung.steps, proxy_batch=rung.batch)
        model = B.train_proxy(rung_start(rung, out), _chw(px), [int(o) for o in owner], prompts,
                              pairs, size, rung.seed, log, lr=rung.lr, frozen=FROZEN)
    data = {"prompts": rung.prompts, "sources": list(rung.sources), "images_per_source": rung.images,
            "samples": int(len(px)), "pairs": len(pairs),
            "pairs_gap_ge_min": int(sum(1 for p in pairs if p[2] != 0.5)),
            "steps": rung.steps, "batch": rung.batch, "lr": rung.lr, "seed": rung.seed,
            "frozen": list(FROZEN)}
    if rung.dense > 0:
        data.update(loss="listwise", dense=rung.dense, batch_unit="prompts")
    if rung.init:
        data.update(init=rung.init, init_sha256=_sha256(out / "ladder" / rung.init / DELTA))
    return model, data


def delta_state(model, base) -> dict[str, Tensor]:
    """The fp16 tensors of `model` that differ from `base` (the frozen ones never do)."""
    import torch
    ref = base.state_dict()
    return {k: v.detach().half().contiguous() for k, v in model.state_dict().items()
            if v.is_floating_point() and k not in FROZEN and not torch.equal(v.half(), ref[k].half())}


def apply_delta(base, delta: dict[str, Tensor]):
    """`base` (a CLIPModel) with a rung's tensors loaded over it, in its own dtype."""
    own = base.state_dict()
    bad = sorted(k for k, v in delta.items() if k not in own or own[k].shape != v.shape)
    if bad:
        raise DistarError(f"The proxy-ladder weights name tensors the proxy does not have or with "
                          f"other shapes ({', '.join(bad[:3])}). Fix: rebuild them with "
                          f"`distar lab proxy-ladder --ship` over the shipped proxy.")
    base.load_state_dict({k: v.to(own[k].dtype) for k, v in delta.items()}, strict=False)
    return base


def held_scores(model, held: tuple, prompts: list[str]) -> np.ndarray:
    """The proxy's score of every held-out image."""
    from di_star.mini import build as B
    px, _, owner, _ = held
    return B.proxy_scores(model, _chw(px), [int(o) for o in owner], prompts).numpy().astype(float)


def measure(s: np.ndarray, held: tuple) -> dict:
    """Agreement with gold of the held-out scores `s` on held-out pairs (prompt-bootstrap
    interval) and image-level Spearman with gold (prompt-bootstrap interval)."""
    from di_star.mini.oracle_check import spearman_ci
    px, gold, owner, _ = held
    agr = agreement(s, gold, owner)
    rho = spearman_ci(gold, s, owner)
    return {"agreement": round(agr["agreement"], 4), "agreement_ci": [round(x, 4) for x in agr["agreement_ci"]],
            "spearman": round(rho["rho"], 4), "spearman_ci": [round(rho["low"], 4), round(rho["high"], 4)],
            "pairs_heldout": agr["pairs"], "prompts_heldout": agr["prompts"],
            "images_heldout": int(len(px))}


def rung_cached(rung: Rung, out: Path) -> bool:
    """Whether out/ladder/<rung> holds a fit of exactly this Rung (its train.json records it)."""
    f = out / "ladder" / rung.name / DELTA
    record = f.with_name("train.json")
    if not (f.is_file() and record.is_file()):
        return False
    rec = json.loads(record.read_text())
    if rung.init:  # a continued rung is stale once the rung it continues from was refitted
        start = out / "ladder" / rung.init / DELTA
        if not start.is_file() or rec["data"].get("init_sha256") != _sha256(start):
            return False
    return rec.get("rung") == repr(rung)


def ensure_rung(rung: Rung, out: Path, log) -> tuple[object, dict, Path]:
    """The rung fitted (or its cached fit, when out/ladder/<rung>/train.json records the same
    Rung): (the shipped proxy with the saved fp16 delta over it, training record, delta file)."""
    from safetensors.torch import load_file
    from distar.core.atomic import save_tensors, write_text
    f = out / "ladder" / rung.name / DELTA
    record = f.with_name("train.json")
    if not rung_cached(rung, out):
        t1 = time.time()
        model, data = fit_rung(rung, out, log)
        data["wall_s"] = round(time.time() - t1, 1)
        save_tensors(delta_state(model, shipped_proxy()), f)
        write_text(record, json.dumps({"rung": repr(rung), "data": data}, indent=1) + "\n")
    # measured as it ships: the fp16 delta over the shipped proxy
    return (apply_delta(shipped_proxy(), load_file(str(f))),
            json.loads(record.read_text())["data"], f)


def _sha256(f: Path) -> str:
    return hashlib.sha256(f.read_bytes()).hexdigest()


def run_ladder(out: Path, plan: LadderPlan = PLAN, ship: Path | None = None,
               command: str | None = None, log=None) -> dict:
    """Train the generators, sample and label, fit and measure every rung; write
    out/ladder/<rung>/delta.safetensors and out/ladder/manifest.json (and copy them to `ship`)."""
    from distar.core.atomic import write_dir, write_text
    from distar.core.paths import project_commit
    from di_star.mini import weights as mw
    from di_star.mini.build import Log
    log = log or Log()
    t0 = time.time()
    for run in plan.runs:
        train_generator(run, out, log)
    collect(plan, out, log)
    held_p = held_out_prompts(plan.held_out_prompts)
    names = plan.held_out_sources
    held = load_split(out, "heldout", names, len(held_p), plan.held_out_images)
    scores = {SHIPPED: held_scores(shipped_proxy(), held, held_p)}
    proxies = {SHIPPED: {"name": SHIPPED, **measure(scores[SHIPPED], held),
                         "train": "the shipped proxy (di_star/mini/build.py, proxy stage)"}}
    log(f"{SHIPPED}: {proxies[SHIPPED]}")
    ladder = out / "ladder"
    for rung in plan.rungs:
        model, data, f = ensure_rung(rung, out, log)
        scores[rung.name] = held_scores(model, held, held_p)
        proxies[rung.name] = {"name": rung.name, **measure(scores[rung.name], held), "train": data,
                              "file": f"{rung.name}/{DELTA}", "sha256": _sha256(f),
                              "bytes": f.stat().st_size}
        below = list(scores)[-2]  # the rung below (or the shipped proxy), on the same pairs
        proxies[rung.name]["vs_below"] = {"proxy": below, **paired_agreement(
            scores[rung.name], scores[below], held[1], held[2])}
        e = proxies[rung.name]
        log(f"{rung.name}: agreement {e['agreement']} {e['agreement_ci']}, spearman {e['spearman']} "
            f"{e['spearman_ci']}; minus {below}: {e['vs_below']['diff']} {e['vs_below']['diff_ci']}")
    rungs = [proxies[r.name]["agreement"] for r in plan.rungs]
    manifest = {
        "what": "proxy rewards fine-tuned from the shipped proxy (mini_pickscore) on gold-labelled "
                "generator samples; each file holds only the tensors it changed (fp16), loaded over "
                "the shipped proxy",
        # this invocation's wall time: stages a rerun finds done (runs, samples, rungs) are reused
        "command": command, "commit": project_commit(), "wall_s_this_call": round(time.time() - t0, 1),
        "base": {"proxy_reward/model.safetensors":
                 _sha256(mw.component_dir("proxy_reward") / "model.safetensors")},
        "min_gap": MIN_GAP, "held_out": {"bench": HELD_OUT_BENCH, "prompts": len(held_p),
                                         "images_per_source": plan.held_out_images,
                                         "sources": list(names)},
        "generators": [vars(s) for s in plan.sources],
        "trained_runs": [{"preset": r.preset, "seed": r.seed, "checkpoints": list(r.checkpoints)}
                         for r in plan.runs],
        "span": round(max(rungs) - min(rungs), 4), "proxies": proxies,
    }
    write_text(ladder / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    if ship is not None:
        def fill(tmp: Path) -> None:
            for r in plan.rungs:
                (tmp / r.name).mkdir(parents=True)
                shutil.copyfile(ladder / r.name / DELTA, tmp / r.name / DELTA)
            shutil.copyfile(ladder / MANIFEST, tmp / MANIFEST)
        write_dir(Path(ship), fill)
    return manifest


# Loading the shipped rungs (di_star.mini.learned_metrics.MiniProxyRung) ---------------------------
def ladder_manifest(folder: Path = LADDER_DIR) -> dict:
    from distar.core.errors import WeightsMissingError
    f = folder / MANIFEST
    if not f.is_file():
        raise WeightsMissingError("mini proxy ladder", str(f), "build it with `distar lab "
                                  "proxy-ladder --ship` (writes di_star/mini/data/proxy_ladder)")
    try:
        return json.loads(f.read_text())
    except ValueError as e:
        raise DistarError(f"{f} is damaged ({e}). Fix: git checkout {folder}, or rebuild with "
                          f"`distar lab proxy-ladder --ship`.") from None


def rung_entry(name: str, folder: Path = LADDER_DIR) -> dict:
    """The rung's record in the ladder manifest (its measured agreement, file, sha256)."""
    proxies = ladder_manifest(folder).get("proxies", {})
    if name not in proxies or "file" not in proxies[name]:
        raise DistarError(f"{folder / MANIFEST} lists no rung '{name}'. Fix: rebuild the ladder "
                          f"with `distar lab proxy-ladder --ship`.")
    return proxies[name]


def rung_label(name: str) -> str:
    """A table label naming the rung's measured agreement: 'Proxy r1 (agr 0.71)'."""
    try:
        return f"Proxy {name[-2:]} (agr {rung_entry(name)['agreement']:.2f})"
    except DistarError:
        return f"Proxy {name[-2:]}"


def rung_description(name: str) -> str:
    """The registry's one-line description, with the measured agreement when the ladder is there."""
    head = f"mini world: proxy-ladder rung {name[-1]} (the shipped proxy fine-tuned on gold-labelled generator samples"
    try:
        e = rung_entry(name)
    except DistarError:
        return head + "; not built)"
    lo, hi = e["agreement_ci"]
    return (head + f"; agreement with gold {e['agreement']:.3f} [{lo:.3f}, {hi:.3f}] on "
                   f"{e['pairs_heldout']} held-out pairs, Spearman {e['spearman']:.2f})")


def verify_ladder(folder: Path = LADDER_DIR) -> list[str]:
    """Problems comparing the ladder manifest's sha256 with its files (empty = all good)."""
    problems = []
    for name, e in ladder_manifest(folder).get("proxies", {}).items():
        if "file" not in e:
            continue
        f = folder / e["file"]
        if not f.is_file():
            problems.append(f"missing: {e['file']}")
        elif _sha256(f) != e["sha256"]:
            problems.append(f"changed: {e['file']}")
    return problems


def rung_delta(name: str, root: Path, folder: Path = LADDER_DIR) -> dict[str, Tensor]:
    """The rung's tensors, checked: its file matches the ladder manifest, and the world's proxy
    (in `root`) is the one the rung was fine-tuned from."""
    from safetensors.torch import load_file
    e = rung_entry(name, folder)
    base = ladder_manifest(folder)["base"]
    for rel, sha in base.items():
        if _sha256(Path(root) / rel) != sha:
            raise DistarError(f"{name} was fine-tuned from the shipped proxy, but the mini world in "
                              f"{root} has another {rel}. Fix: unset DISTAR_MINI_DIR (the shipped "
                              f"world), or rebuild the ladder over this world with `distar lab "
                              f"proxy-ladder --ship`.")
    f = folder / e["file"]
    if not f.is_file() or _sha256(f) != e["sha256"]:
        raise DistarError(f"{f} is missing or does not match {folder / MANIFEST}. Fix: git checkout "
                          f"{folder}, or rebuild with `distar lab proxy-ladder --ship`.")
    return load_file(str(f))


def markdown_table(manifest: dict) -> str:
    """The ladder as docs show it: agreement [95% interval], Spearman [interval], training data."""
    rows = ["| proxy | agreement with gold [95% CI] | minus the row above, paired [95% CI] | "
            "Spearman [95% CI] | fine-tuned on |", "|---|---|---|---|---|"]
    for name, e in manifest["proxies"].items():
        t = e["train"]
        data = t if isinstance(t, str) else (
            f"{t['pairs']} pairs ({t['pairs_gap_ge_min']} with gap >= {manifest['min_gap']:g}) "
            f"from {t['samples']} samples of {len(t['sources'])} generators on {t['prompts']} "
            f"training prompts; {t['steps']} steps x {t['batch']}"
            + (f" prompts (listwise, dense {t['dense']:g})" if t.get("loss") == "listwise" else "")
            + (f", continuing {t['init']}" if t.get("init") else ""))
        v = e.get("vs_below")
        gain = f"{v['diff']:+.3f} [{v['diff_ci'][0]:+.3f}, {v['diff_ci'][1]:+.3f}]" if v else ""
        rows.append(f"| `{name}` | {e['agreement']:.3f} [{e['agreement_ci'][0]:.3f}, "
                    f"{e['agreement_ci'][1]:.3f}] | {gain} | {e['spearman']:.2f} [{e['spearman_ci'][0]:.2f}, "
                    f"{e['spearman_ci'][1]:.2f}] | {data} |")
    return "\n".join(rows)
