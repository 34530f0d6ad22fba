"""`distar lab build mini`: train every component of the mini world on the real architectures.

Stages, in order (each writes its folder atomically and is skipped when a rerun finds it done,
so an interrupted build resumes at the first unfinished stage):
 1. vae        AutoencoderKL, 64 px RGB -> 16x16x4, L1 + MSE + a small KL; scaling_factor = 1 /
               std of the training latents (what SD did to get 0.18215).
 2. clip       CLIPModel trained contrastively (CLIP's symmetric InfoNCE) on world captions.
 3. reference  SDXL-architecture UNet2DConditionModel, denoising score matching (eps-prediction,
               min-SNR-5 weights, EMA), 10% caption dropout to zero embeddings (the unconditional
               input SDXL's pipeline uses for CFG: force_zeros_for_empty_prompt); text_encoder =
               CLIPTextModel and text_encoder_2 = CLIPTextModelWithProjection, both the trained
               CLIP text tower (SDXL reads the penultimate hidden states of both and the pooled
               projection of the second).
 4. samples    the reference's multi-step CFG samples from fixed noise (the ODE pairs).
 5. onestep    the one-step init by ODE regression (see `train_onestep`).
 6. proxy      PickScore architecture (CLIPModel from the mini CLIP) + PickScore's objective on
               synthetic preference pairs labelled by the gold judge.
 7. aesthetic  LAION aesthetic MLP on mini-CLIP image embeddings, regressing gold ratings.
 8. classifier di_star.mini.classifier.train_attribute_classifier.
Then manifest.json: sha256 of every file, the command, git commit, seed, size, wall times.

Every stage seeds torch from (seed, stage), and every random draw is made on the CPU and moved
to the device, so a build is a function of (seed, size, device) and the torch thread count (on a
GPU, up to the nondeterminism of its kernels). `--device cuda` trains the networks on a GPU;
rendering and the gold judge always run on the CPU, in `size.workers` processes.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from distar.core.atomic import write_bytes, write_dir
from distar.core.errors import DistarError
from distar.core.paths import portable_path, project_commit
from evalsuite.metrics.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from di_star.mini import weights as mw
from di_star.mini import scene as world
from di_star.mini.configs import (CLIP_TEXT, CLIP_VISION, PROJECTION_DIM, SCHEDULE, SIZES, UNET,
                                  VAE, BuildSize)

STAGES = ("vae", "clip", "reference", "samples", "onestep", "proxy", "aesthetic", "classifier")
WORK = ".work"          # intermediate stage outputs; removed when the build completes
DONE = ".done.json"     # a finished stage's record (seed, size, wall time)
CAPTION_DROPOUT = 0.1
MIN_SNR = 5.0


# Small shared pieces -----------------------------------------------------------------------------
def stage_seed(*parts) -> int:
    """A 32-bit seed named by its parts (a base seed, a stage, a source...): sha256 of 'a/b/...'."""
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def to_pixels(images) -> Tensor:
    """PIL images or [H, W, 3] uint8 arrays -> [N, 3, 64, 64] float in [-1, 1] (the VAE's range)."""
    arr = np.stack([np.asarray(im.convert("RGB") if hasattr(im, "convert") else im, dtype=np.uint8)
                    for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_pil(x: Tensor) -> list:
    """[N, 3, H, W] in [-1, 1] -> PIL images (rounded as diffusers' image processor does)."""
    from PIL import Image
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]


def clip_pixels(x: Tensor) -> Tensor:
    """[-1, 1] images -> CLIP input: [0, 1], OpenAI mean/std (what the metrics' 64 px
    preprocessing produces from the same image)."""
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return ((x + 1) / 2 - mean) / std


def fp16_round(module: torch.nn.Module) -> torch.nn.Module:
    """Round weights to fp16 and back: later stages then see exactly the shipped (fp16) weights."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())
        for b in module.buffers():
            if b.is_floating_point():
                b.copy_(b.half().float())
    return module


def index_batches(n: int, batch: int, steps: int, gen: torch.Generator):
    """`steps` index batches of size `batch` from epochs of permutations of range(n)."""
    order, pos = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=gen), 0
        yield order[pos:pos + min(batch, n)]
        pos += batch


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


def stage_step(opt, sched, loss: Tensor, step: int, total: int, log, name: str, clip=None,
                every: int = 100, what: str = "loss") -> None:
    """One optimiser step of a build stage (gradient norm clipped to 1 over `clip` when given),
    logged every `every` steps and at the last."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(clip, 1.0)
    opt.step()
    sched.step()
    if step % every == 0 or step == total - 1:
        log(f"{name} step {step + 1}/{total}: {what} {loss.item():.4f}")


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine to 10%."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0)))
    return f


def stage_optimizer(params, lr: float, steps: int, warmup: int = 50, wd: float = 0.0):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(min(warmup, max(1, steps // 5)), steps))
    return opt, sched


def drop_fast_tokenizers(folder: Path) -> None:
    """Replace tokenizer.json (3.6 MB each) by CLIP's vocab.json + merges.txt (1.5 MB), from
    which CLIPTokenizer rebuilds the same tokenizer on load."""
    from evalsuite.models.tokenizer import write_clip_vocab
    for f in folder.rglob("tokenizer.json"):
        f.unlink()
        write_clip_vocab(f.parent)


def _pool_map(fn, items: list, workers: int) -> list:
    """[fn(x) for x in items], in `workers` forked processes when workers > 1 (fn must be pure:
    the result does not depend on the worker count). Forked children only render and judge
    images with numpy/PIL; they never touch torch or CUDA."""
    if workers <= 1 or len(items) < 2 * workers:
        return [fn(x) for x in items]
    import multiprocessing as mp
    from distar.core.signals import die_with_parent
    # Pool's exit terminates its workers; die_with_parent covers a parent that is SIGKILLed.
    with mp.get_context("fork").Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        return pool.map(fn, items, chunksize=max(1, len(items) // (8 * workers)))


def _pair_pixels(job: tuple[int, int]) -> tuple[np.ndarray, str]:
    im, cap = world.training_pair(*job)
    return np.asarray(im.convert("RGB"), dtype=np.uint8), cap


def render_pairs(n: int, seed: int, workers: int = 1) -> tuple[Tensor, list[str]]:
    """world.training_pairs(n, seed) as VAE pixels [n, 3, 64, 64] in [-1, 1] and captions."""
    out = _pool_map(_pair_pixels, [(seed, i) for i in range(n)], workers)
    return to_pixels([a for a, _ in out]), [c for _, c in out]


def _gold_chunk(job: tuple[list, list]) -> np.ndarray:
    from di_star.mini.gold import gold_score
    return gold_score(*job)


def gold_scores(images: list, prompts: list[str], workers: int = 1) -> np.ndarray:
    """di_star.mini.gold.gold_score, in chunks across `workers` processes."""
    step = 256
    jobs = [(images[i:i + step], prompts[i:i + step]) for i in range(0, len(images), step)]
    return np.concatenate(_pool_map(_gold_chunk, jobs, workers)) if jobs else np.zeros(0)


class Log:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.t0 = time.time()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.time() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# 1. VAE --------------------------------------------------------------------------------------------
def object_weights(x: Tensor, extra: float) -> Tensor:
    """[N, 1, H, W] per-pixel loss weights, 1 + extra on objects. Every background of the world
    is neutral (white, black, grey, a pale grey-blue gradient: max - min channel <= 20/255) and
    every object colour saturated (>= 140/255), so saturation finds the objects; they cover ~5%
    of the pixels, and an unweighted loss let the VAE trade them away for smooth backgrounds."""
    sat = x.amax(dim=1, keepdim=True) - x.amin(dim=1, keepdim=True)  # in [-1, 1] units: 2 = full
    return 1.0 + extra * (sat / 0.6).clamp(0, 1)


def train_vae(pixels: Tensor, size: BuildSize, seed: int, log: Log, device=torch.device("cpu")):
    from diffusers import AutoencoderKL
    torch.manual_seed(stage_seed(seed, "vae"))
    vae = AutoencoderKL(**VAE, scaling_factor=1.0).to(device)
    opt, sched = stage_optimizer(vae.parameters(), 2e-3, size.vae_steps)
    gen = torch.Generator().manual_seed(stage_seed(seed, "vae-data"))
    vae.train()
    for step, idx in enumerate(index_batches(len(pixels), size.vae_batch, size.vae_steps, gen)):
        x = pixels[idx].to(device)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(device)
        rec = vae.decode(z).sample
        w = object_weights(x, size.vae_object_weight)
        # L1 keeps the flat colours' edges sharp; the KL only keeps the latent scale in check.
        err = rec - x
        loss = (w * (err.abs() + err.pow(2))).mean() / w.mean() + 1e-6 * post.kl().mean()
        stage_step(opt, sched, loss, step, size.vae_steps, log, "vae")
    vae.eval()
    fp16_round(vae)
    lat = encode_latents(vae, pixels, scale=1.0)
    # SD's recipe: scale latents to unit variance for the diffusion model.
    vae.register_to_config(scaling_factor=float(1.0 / lat.std()))
    return vae


def encode_latents(vae, pixels: Tensor, scale: float | None = None) -> Tensor:
    """Posterior means of CPU `pixels`, times the VAE's scaling factor; on the VAE's device."""
    dev = next(vae.parameters()).device
    with torch.no_grad():
        lat = torch.cat([vae.encode(pixels[i:i + 1024].to(dev)).latent_dist.mean
                         for i in range(0, len(pixels), 1024)])
    return lat * (vae.config.scaling_factor if scale is None else scale)


# 2. CLIP -------------------------------------------------------------------------------------------
def clip_tokenizer():
    from evalsuite.models.tokenizer import build_clip_tokenizer
    return build_clip_tokenizer("<|endoftext|>")


def tokenize(tok, texts: list[str], max_length: int = 77) -> dict:
    return tok(list(texts), padding="max_length", truncation=True, max_length=max_length,
               return_tensors="pt")


_SHAPE_FORMS = {form: (shape, number) for shape, pairs in world.SHAPE_WORDS.items()
                for pair in pairs for number, form in enumerate(pair)}
_SHAPE_RE = re.compile(r"\b(?:(a|an) )?(" + "|".join(sorted(map(re.escape, _SHAPE_FORMS), key=len,
                                                              reverse=True)) + r")\b")


def shape_swapped(caption: str, rng: np.random.Generator) -> str | None:
    """The caption with one of its shape words replaced by a word for another shape (same number,
    article mended), or None when it names no shape. A hard negative: it differs from the truth
    only in a shape, which in-batch negatives almost never do (their colours already differ)."""
    hits = list(_SHAPE_RE.finditer(caption))
    if not hits:
        return None
    m = hits[int(rng.integers(len(hits)))]
    shape, number = _SHAPE_FORMS[m.group(2)]
    other = world.SHAPES[int(rng.integers(len(world.SHAPES) - 1))]
    other = other if other != shape else world.SHAPES[-1]
    pairs = world.SHAPE_WORDS[other]
    word = pairs[int(rng.integers(len(pairs)))][number]
    text = f"{world.article(word)} {word}" if m.group(1) else word
    return caption[:m.start()] + text + caption[m.end():]


def _clip_loss(model, pixels: Tensor, ids: Tensor, mask: Tensor, neg_ids: Tensor | None = None,
               neg_mask: Tensor | None = None, neg_valid: Tensor | None = None) -> Tensor:
    """CLIP's symmetric InfoNCE; duplicate captions in a batch are counted as positives. With
    hard-negative captions (`neg_*`, NegCLIP's recipe), each image must also pick its caption
    over every shape-swapped caption of the batch (the image-to-text direction only)."""
    img = F.normalize(clip_features(model.get_image_features(pixel_values=pixels)), dim=-1)
    texts, text_mask = (ids, mask) if neg_ids is None else (torch.cat([ids, neg_ids]),
                                                           torch.cat([mask, neg_mask]))
    txt = F.normalize(clip_features(model.get_text_features(input_ids=texts, attention_mask=text_mask)),
                      dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T          # [images, texts]
    same = (ids[:, None, :] == texts[None, :, :]).all(-1).float()
    if neg_valid is not None:  # captions naming no shape have no negative
        valid = torch.cat([torch.ones_like(neg_valid), neg_valid])
        logits = logits.masked_fill(~valid[None, :], float("-inf"))
        same = same * valid[None, :]
    n = len(ids)
    i2t = -((same / same.sum(1, keepdim=True)) * logits.log_softmax(1).nan_to_num(neginf=0.0)).sum(1)
    t2i = -((same[:, :n] / same[:, :n].sum(0, keepdim=True)) * logits[:, :n].log_softmax(0)).sum(0)
    return 0.5 * (i2t.mean() + t2i.mean())


def clip_features(out) -> Tensor:
    return out if isinstance(out, Tensor) else out.pooler_output


def scene_labels(scenes: list) -> Tensor:
    """[n, 41] multi-hot: which of the 5 shapes, 6 colours and 30 (shape, colour) pairs each
    scene holds. What the renderer knows of an image, position aside; captions state only part
    of it (a caption may leave an object's colour out)."""
    ns, nc = len(world.SHAPES), len(world.COLOURS)
    y = torch.zeros(len(scenes), ns + nc + ns * nc)
    for row, scene in enumerate(scenes):
        for o in scene.objects:
            s, c = world.SHAPES.index(o.shape), world.COLOURS.index(o.colour)
            y[row, [s, ns + c, ns + nc + nc * s + c]] = 1.0
    return y


def pretrain_vision(tower, px: Tensor, labels: Tensor, size: BuildSize, seed: int, log: Log,
                    device=torch.device("cpu")) -> None:
    """Train a CLIP vision tower (in place) to name what each training scene holds
    (`scene_labels`: a linear head on its pooled output, binary cross-entropy); the head is
    dropped. Contrastive training alone learns shape very slowly on this world (the text towers
    then barely encode shape, and the reference draws the asked shape about a third of the
    time); with labels the tower learns it in a few thousand steps (docs/mini_build.md)."""
    head = torch.nn.Linear(tower.config.hidden_size, labels.shape[1]).to(device)
    params = list(tower.parameters()) + list(head.parameters())
    opt, sched = stage_optimizer(params, 1e-3, size.clip_vision_steps, wd=0.05)
    gen = torch.Generator().manual_seed(stage_seed(seed, "clip-vision-data"))
    tower.train()
    for step, idx in enumerate(index_batches(len(px), size.clip_batch, size.clip_vision_steps, gen)):
        logits = head(tower(pixel_values=px[idx].to(device)).pooler_output)
        loss = F.binary_cross_entropy_with_logits(logits, labels[idx].to(device))
        stage_step(opt, sched, loss, step, size.clip_vision_steps, log, "clip-vision")


def train_clip(pixels: Tensor, captions: list[str], size: BuildSize, seed: int, log: Log,
               device=torch.device("cpu"), labels: Tensor | None = None):
    """CLIP trained contrastively on (pixels, captions). With size.clip_vision_steps, the vision
    tower is first trained on the scenes' `labels` and then kept frozen while the text tower and
    both projections learn to match it (LiT's recipe: a locked image tower, a text tower tuned
    to it)."""
    from transformers import CLIPConfig, CLIPModel
    torch.manual_seed(stage_seed(seed, "clip"))
    vision = {**CLIP_VISION, "patch_size": size.clip_patch}
    model = CLIPModel(CLIPConfig(text_config=CLIP_TEXT, vision_config=vision,
                                 projection_dim=PROJECTION_DIM)).to(device)
    px = clip_pixels(pixels)
    if size.clip_vision_steps:
        if labels is None or len(labels) != len(pixels):
            raise ValueError("clip_vision_steps needs one scene_labels row per training image")
        pretrain_vision(model.vision_model, px, labels, size, seed, log, device)
        model.vision_model.requires_grad_(False)
    tok = clip_tokenizer()
    # Causal attention + pooling at the first end token: 32 tokens give exactly the 77-token
    # features for these short captions, at less than half the cost.
    enc = tokenize(tok, captions, max_length=32)
    neg = None
    if size.clip_hard_negatives:
        rng = np.random.default_rng(stage_seed(seed, "clip-negatives"))
        swapped = [shape_swapped(c, rng) for c in captions]
        neg = tokenize(tok, [s or c for s, c in zip(swapped, captions)], max_length=32)
        neg["valid"] = torch.tensor([s is not None for s in swapped])
    opt, sched = stage_optimizer([p for p in model.parameters() if p.requires_grad], 1e-3,
                                 size.clip_steps, wd=0.05)
    gen = torch.Generator().manual_seed(stage_seed(seed, "clip-data"))
    model.train()
    for step, idx in enumerate(index_batches(len(px), size.clip_batch, size.clip_steps, gen)):
        extra = {} if neg is None else dict(neg_ids=neg["input_ids"][idx].to(device),
                                            neg_mask=neg["attention_mask"][idx].to(device),
                                            neg_valid=neg["valid"][idx].to(device))
        loss = _clip_loss(model, px[idx].to(device), enc["input_ids"][idx].to(device),
                          enc["attention_mask"][idx].to(device), **extra)
        stage_step(opt, sched, loss, step, size.clip_steps, log, "clip")
    model.eval()
    return fp16_round(model).cpu()


def zero_shot(scores: np.ndarray, prompts: list[str], candidates: list[str]) -> dict:
    """Accuracy of picking the highest-scoring candidate prompt for each image: whole prompt,
    colour, shape (scores: [images, candidates]; prompts: each image's true prompt)."""
    pick = [world.parse_caption(candidates[j]).groups[0] for j in scores.argmax(1)]
    true = [world.parse_caption(p).groups[0] for p in prompts]
    return {"prompt": float(np.mean([a == b for a, b in zip(pick, true)])),
            "colour": float(np.mean([a.colour == b.colour for a, b in zip(pick, true)])),
            "shape": float(np.mean([a.shape == b.shape for a, b in zip(pick, true)]))}


@torch.no_grad()
def clip_zero_shot(model, per_prompt: int = 4, seed: int = 777) -> dict:
    """A CLIP's zero-shot accuracy on fresh ground-truth renders of the 30 single-object prompts
    (chance: colour 1/6, shape 1/5), asked plainly ('a red circle': colour, shape, prompt) and
    paraphrased ('an image of a crimson round dot': *_paraphrased). Its text tower is the
    pipeline's text encoders, so a shape it cannot tell apart is a shape the reference is not
    asked for (docs/mini_build.md)."""
    dev = next(model.parameters()).device
    out = {}
    for suffix, paraphrased in (("", False), ("_paraphrased", True)):
        prompts = world.single_object_prompts(paraphrased)
        truth = [prompts[i % len(prompts)] for i in range(len(prompts) * per_prompt)]
        images = [world.render_for_caption(p, np.random.default_rng([seed, i]))
                  for i, p in enumerate(truth)]
        img = F.normalize(clip_features(model.get_image_features(
            pixel_values=clip_pixels(to_pixels(images)).to(dev))), dim=-1)
        enc = tokenize(clip_tokenizer(), prompts, max_length=32)
        txt = F.normalize(clip_features(model.get_text_features(
            input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev))), dim=-1)
        scores = zero_shot((img @ txt.T).cpu().numpy(), truth, prompts)
        out.update({k + suffix: round(v, 4) for k, v in scores.items()})
    return out


def clip_processor():
    """The image processor every mini CLIP folder ships: 64 px, OpenAI mean/std."""
    from transformers import CLIPImageProcessor
    s = world.IMAGE_SIZE
    return CLIPImageProcessor(size={"shortest_edge": s}, crop_size={"height": s, "width": s},
                              image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD))


def save_clip(model, target: Path) -> None:
    def write(tmp: Path) -> None:
        model.half().save_pretrained(tmp)
        model.float()
        clip_tokenizer().save_pretrained(tmp)
        clip_processor().save_pretrained(tmp)
        drop_fast_tokenizers(tmp)
    write_dir(target, write)


def text_encoders(clip):
    """(CLIPTextModel, CLIPTextModelWithProjection) holding the CLIP text tower's weights."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection
    te1 = CLIPTextModel(clip.config.text_config)
    te2 = CLIPTextModelWithProjection(clip.config.text_config)
    state = clip.state_dict()
    tower = {k: v for k, v in state.items() if k.startswith("text_model.")}
    # transformers 5 names CLIPTextModel's weights without the 'text_model.' prefix
    te1.load_state_dict({k.removeprefix("text_model."): v for k, v in tower.items()}
                        if "embeddings.token_embedding.weight" in te1.state_dict() else tower)
    te2.load_state_dict({**tower, "text_projection.weight": state["text_projection.weight"]})
    return te1.eval(), te2.eval()


# 3. Reference UNet ---------------------------------------------------------------------------------
def build_pipeline(vae, clip, unet):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline

    from evalsuite.models.tokenizer import build_clip_tokenizer
    te1, te2 = text_encoders(clip)
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=te1, text_encoder_2=te2, unet=unet,
        scheduler=DPMSolverMultistepScheduler(**SCHEDULE),
        tokenizer=build_clip_tokenizer("<|endoftext|>"), tokenizer_2=build_clip_tokenizer("!"),
        force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def condition(pipe, prompts: list[str]):
    """TextCond exactly as the pipeline (and the DI* trainer) computes it, on the pipeline's
    device; computed once for all prompts (1024 at a time), then indexed per batch."""
    from di_star.sdxl.models import TextCond, encode_prompts
    dev = pipe.text_encoder.device
    parts = [encode_prompts(pipe, "sdxl", prompts[i:i + 1024], world.IMAGE_SIZE, dev)
             for i in range(0, len(prompts), 1024)]
    return TextCond(tuple(prompts), torch.cat([c.embeds for c in parts]),
                    torch.cat([c.pooled for c in parts]), torch.cat([c.time_ids for c in parts]))


def rows(cond, idx: Tensor):
    """The batch `idx` of a precomputed TextCond."""
    from di_star.sdxl.models import TextCond
    i = idx.to(cond.embeds.device)
    return TextCond(tuple(cond.prompts[int(k)] for k in idx), cond.embeds[i], cond.pooled[i],
                    cond.time_ids[i])


def _schedule():
    from di_star.noise import vp_schedule
    from diffusers import DDPMScheduler
    return vp_schedule(DDPMScheduler(**{k: v for k, v in SCHEDULE.items()
                                        if k not in ("timestep_spacing", "steps_offset")}
                                     ).alphas_cumprod)


def dsm_loss(unet, x0: Tensor, cond, t: Tensor, eps: Tensor, abar: Tensor) -> Tensor:
    """Per-sample eps-prediction DSM loss with min-SNR-gamma weights (Hang et al. 2023)."""
    from di_star.sdxl.models import unet_eps
    a = abar[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    err = (unet_eps(unet, x_t, t, cond) - eps).pow(2).mean(dim=(1, 2, 3))
    snr = abar[t] / (1 - abar[t])
    return err * snr.clamp(max=MIN_SNR) / snr


def _drop_captions(cond, keep: Tensor):
    """Zero the text condition of dropped rows (SDXL's unconditional input)."""
    from di_star.sdxl.models import TextCond
    k = keep.float()
    return TextCond(cond.prompts, cond.embeds * k.view(-1, 1, 1), cond.pooled * k.view(-1, 1),
                    cond.time_ids)


def train_reference(pipe, latents: Tensor, captions: list[str], size: BuildSize, seed: int,
                    log: Log, init: torch.nn.Module | None = None, restart: bool = False):
    """DSM training of the reference UNet from scratch, or from a copy of `init` (the warm start
    of di_star/mini/probes/reference.py's text-encoder experiment). `restart`: the second cycle
    (size.unet_restart_steps from `init`, the first cycle's weights), with its own data and noise
    stream and half the first cycle's peak learning rate, so it refines rather than re-learns."""
    from diffusers import UNet2DConditionModel
    dev = latents.device
    name, steps, lr = (("reference-restart", size.unet_restart_steps, 5e-4) if restart
                       else ("reference", size.unet_steps, 1e-3))
    torch.manual_seed(stage_seed(seed, name))
    unet = (copy.deepcopy(init).requires_grad_(True).train() if init is not None
            else UNet2DConditionModel(**UNET)).to(dev)
    pipe.unet = unet
    ema = copy.deepcopy(unet).requires_grad_(False)
    abar = _schedule().alphas_cumprod.float().to(dev)
    opt, sched = stage_optimizer(unet.parameters(), lr, steps, warmup=100)
    gen = torch.Generator().manual_seed(stage_seed(seed, f"{name}-data"))
    conds = condition(pipe, captions)
    unet.train()
    for step, idx in enumerate(index_batches(len(latents), size.unet_batch, steps, gen)):
        keep = (torch.rand(len(idx), generator=gen) >= CAPTION_DROPOUT).to(dev)
        t = torch.randint(0, abar.shape[0], (len(idx),), generator=gen).to(dev)
        eps = torch.randn(latents[idx].shape, generator=gen).to(dev)
        x0 = latents[idx.to(dev)]
        loss = dsm_loss(unet, x0, _drop_captions(rows(conds, idx), keep), t, eps, abar).mean()
        stage_step(opt, sched, loss, step, steps, log, name, clip=unet.parameters())
        # EMA with a warm-up (decay grows to 0.999) so a short build still averages.
        _ema_update(ema, unet, min(0.999, (1 + step) / (10 + step)))
    ema.eval()
    pipe.unet = fp16_round(ema)
    return pipe


def save_pipeline(pipe, target: Path) -> None:
    def write(tmp: Path) -> None:
        pipe.to(torch.float16).save_pretrained(tmp)
        pipe.to(torch.float32)
        write_bytes(tmp / "distar_recipe.json", json.dumps(mw.REFERENCE_RECIPE, indent=2).encode())
        drop_fast_tokenizers(tmp)
    write_dir(target, write)


def load_pipeline(folder: Path):
    from diffusers import StableDiffusionXLPipeline
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, torch_dtype=torch.float32,
                                                     local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# 4. Reference samples (ODE pairs) ------------------------------------------------------------------
def noise(n: int, seed: int) -> Tensor:
    shape = (UNET["in_channels"], UNET["sample_size"], UNET["sample_size"])
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def sample_reference(pipe, prompts: list[str], z: Tensor, batch: int) -> Tensor:
    """Latents (scaled, UNet space) of the multi-step CFG reference from noise z."""
    r = mw.REFERENCE_RECIPE
    out = []
    for i in range(0, len(prompts), batch):
        out.append(pipe(prompts[i:i + batch], latents=z[i:i + batch].to(pipe.device),
                        num_inference_steps=r["steps"], guidance_scale=r["guidance"],
                        height=r["resolution"], width=r["resolution"],
                        output_type="latent").images.cpu())
    return torch.cat(out)


@torch.no_grad()
def decode(vae, latents: Tensor) -> Tensor:
    """CPU pixels in [-1, 1] of CPU latents, decoded on the VAE's device."""
    dev = vae.device
    return torch.cat([vae.decode(latents[i:i + 256].to(dev) / vae.config.scaling_factor
                                 ).sample.cpu() for i in range(0, len(latents), 256)]).clamp(-1, 1)


# 5. One-step init --------------------------------------------------------------------------------
def train_onestep(pipe, z: Tensor, x_ref: Tensor, prompts: list[str], size: BuildSize, seed: int,
                  log: Log):
    """ODE regression (Luhman & Luhman 2021; DMD's regression term): g(z, c) = x0-prediction of a
    UNet fed pure noise z at t = 399 (DMD2's convention, OneStepGenerator), initialised from the
    reference, regressed onto the reference's deterministic multi-step CFG sample from the same z.
    Chosen over distilling with the project's DI* trainer because this build's job is a fixed,
    cheap starting point that is independent of the methods compared on top of it: a DMD/DI*
    distillation would already be one of those methods."""
    from di_star.sdxl.models import OneStepGenerator
    dev = pipe.device
    torch.manual_seed(stage_seed(seed, "onestep"))
    gen_net = OneStepGenerator(copy.deepcopy(pipe.unet).requires_grad_(True).train(), _schedule(),
                               mw.ONESTEP_TIMESTEP).to(dev)
    opt, sched = stage_optimizer(gen_net.parameters(), 3e-4, size.onestep_steps)
    gen = torch.Generator().manual_seed(stage_seed(seed, "onestep-data"))
    conds = condition(pipe, prompts)
    z, x_ref = z.to(dev), x_ref.to(dev)
    for step, idx in enumerate(index_batches(len(z), size.onestep_batch, size.onestep_steps, gen)):
        i = idx.to(dev)
        x0 = gen_net(z[i], rows(conds, idx))
        # pseudo-Huber (c = 0.03 per latent unit, as in improved consistency training)
        loss = ((x0 - x_ref[i]).pow(2) + 0.03 ** 2).sqrt().sub(0.03).mean()
        stage_step(opt, sched, loss, step, size.onestep_steps, log, "onestep", clip=gen_net.parameters())
    return fp16_round(gen_net.unet.eval().requires_grad_(False)).cpu()


def save_onestep(unet, target: Path) -> None:
    def write(tmp: Path) -> None:
        unet.half().save_pretrained(tmp / "unet")
        unet.float()
        write_bytes(tmp / "distar_recipe.json", json.dumps(mw.ONESTEP_RECIPE, indent=2).encode())
    write_dir(target, write)


# 6. Proxy reward -------------------------------------------------------------------------------------
def perturb_request(req, rng: np.random.Generator):
    """The request with one thing made wrong (a colour, a shape, a size or a count)."""
    from dataclasses import replace
    groups = list(req.groups)
    i = int(rng.integers(len(groups)))
    g = groups[i]
    what = rng.choice(["colour", "shape", "size", "count"])
    if what == "colour":
        g = replace(g, colour=str(rng.choice([c for c in world.COLOURS if c != g.colour])))
    elif what == "shape":
        g = replace(g, shape=str(rng.choice([s for s in world.SHAPES if s != g.shape])))
    elif what == "size":
        g = replace(g, size="small" if g.size != "small" else "large")
    else:
        total = sum(x.count for x in groups)
        g = replace(g, count=g.count + 1 if total < world.MAX_OBJECTS else max(1, g.count - 1))
    groups[i] = g
    return replace(req, groups=tuple(groups))


def degrade(img: Tensor, rng: np.random.Generator) -> Tensor:
    """Image-level flaws the gold judge dislikes: washed-out colour, or blur."""
    if rng.random() < 0.5:
        grey = img.mean(0, keepdim=True)
        w = float(rng.uniform(0.4, 0.9))
        return (1 - w) * img + w * grey
    return F.avg_pool2d(img[None], 3, 1, 1, count_include_pad=False)[0]


def candidates(prompts: list[str], ref_pixels: Tensor, seed: int) -> tuple[Tensor, list[int]]:
    """Per prompt: the reference sample, a ground-truth render, a render of a perturbed request,
    and a degraded copy of one of them. Returns images [-1, 1] and each image's prompt index."""
    from di_star.mini.scene import parse_caption, render, scene_for_request
    rng = np.random.default_rng(stage_seed(seed, "candidates"))
    images, owner = [], []
    for i, p in enumerate(prompts):
        req = parse_caption(p)
        gt = to_pixels([render(scene_for_request(req, rng), rng)])[0]
        try:
            wrong = to_pixels([render(scene_for_request(perturb_request(req, rng), rng), rng)])[0]
        except DistarError:  # the perturbation asked for an impossible placement
            wrong = gt.flip(-1)
        pick = [ref_pixels[i], gt][int(rng.integers(2))]
        for im in (ref_pixels[i], gt, wrong, degrade(pick, rng)):
            images.append(im)
            owner.append(i)
    return torch.stack(images), owner


def preference_pairs(owner: list[int], scores: np.ndarray, seed: int) -> list[tuple[int, int, float]]:
    """All pairs of candidates of one prompt: (a, b, p(a preferred)); near-ties are 0.5 as in
    Pick-a-Pic's tie label."""
    pairs = []
    by_prompt: dict[int, list[int]] = {}
    for k, i in enumerate(owner):
        by_prompt.setdefault(i, []).append(k)
    for ks in by_prompt.values():
        for x in range(len(ks)):
            for y in range(x + 1, len(ks)):
                a, b = ks[x], ks[y]
                d = scores[a] - scores[b]
                pairs.append((a, b, 0.5 if abs(d) < 0.02 else float(d > 0)))
    return pairs


def pickscore_loss(model, pixels: Tensor, ids: Tensor, mask: Tensor, a: Tensor, b: Tensor,
                   label: Tensor) -> Tensor:
    """PickScore's objective: cross-entropy between softmax(scale * [cos(t, a), cos(t, b)]) and
    the preference distribution [p, 1 - p]. Per-pair values."""
    img = F.normalize(clip_features(model.get_image_features(pixel_values=pixels)), dim=-1)
    txt = F.normalize(clip_features(model.get_text_features(input_ids=ids, attention_mask=mask)), dim=-1)
    scale = model.logit_scale.exp().clamp(max=100)
    logits = scale * torch.stack([(txt * img[a]).sum(-1), (txt * img[b]).sum(-1)], dim=-1)
    target = torch.stack([label, 1 - label], dim=-1)
    return -(target * logits.log_softmax(-1)).sum(-1)


def unit_range(images: Tensor) -> Tensor:
    """uint8 images [N, 3, H, W] (as stored) or floats in [-1, 1] -> floats in [-1, 1]."""
    return images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images


def train_proxy(clip, images: Tensor, owner: list[int], prompts: list[str], pairs, size: BuildSize,
                seed: int, log: Log, lr: float = 2e-4, frozen: tuple[str, ...] = ()):
    """PickScore's objective on preference pairs, from `clip`; `images` [N, 3, 64, 64] uint8 or
    in [-1, 1] (converted a batch at a time); parameters named in `frozen` stay fixed."""
    torch.manual_seed(stage_seed(seed, "proxy"))
    dev = clip.device
    model = copy.deepcopy(clip).train().requires_grad_(True)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    enc = {k: v.to(dev) for k, v in tokenize(clip_tokenizer(), prompts, max_length=32).items()}
    a_all = torch.tensor([p[0] for p in pairs])
    b_all = torch.tensor([p[1] for p in pairs])
    y_all = torch.tensor([p[2] for p in pairs], dtype=torch.float32)
    owner_t = torch.tensor(owner)
    opt, sched = stage_optimizer([p for p in model.parameters() if p.requires_grad], lr,
                                 size.proxy_steps, wd=0.05)
    gen = torch.Generator().manual_seed(stage_seed(seed, "proxy-data"))
    for step, idx in enumerate(index_batches(len(pairs), size.proxy_batch, size.proxy_steps, gen)):
        a, b = a_all[idx], b_all[idx]
        used = torch.unique(torch.cat([a, b]))
        remap = {int(k): j for j, k in enumerate(used)}
        ra = torch.tensor([remap[int(k)] for k in a])
        rb = torch.tensor([remap[int(k)] for k in b])
        tid = owner_t[a].to(dev)
        loss = pickscore_loss(model, clip_pixels(unit_range(images[used])).to(dev), enc["input_ids"][tid],
                              enc["attention_mask"][tid], ra.to(dev), rb.to(dev),
                              y_all[idx].to(dev)).mean()
        stage_step(opt, sched, loss, step, size.proxy_steps, log, "proxy")
    return fp16_round(model.eval().requires_grad_(False)).cpu()


@torch.no_grad()
def proxy_scores(model, images: Tensor, owner: list[int], prompts: list[str]) -> Tensor:
    """The proxy's cosine of each image with its prompt (images uint8 or in [-1, 1])."""
    enc = {k: v.to(model.device) for k, v in tokenize(clip_tokenizer(), prompts, max_length=32).items()}
    img = image_embeddings(model, images)
    txt = torch.cat([F.normalize(clip_features(model.get_text_features(
        **{k: v[i:i + 1024] for k, v in enc.items()})), dim=-1).cpu()
        for i in range(0, len(prompts), 1024)])
    return (img * txt[torch.tensor(owner)]).sum(-1)


@torch.no_grad()
def pair_accuracy(model, images: Tensor, owner: list[int], prompts: list[str], pairs) -> float:
    """Share of non-tied pairs the model orders as the gold judge does."""
    s = proxy_scores(model, images, owner, prompts)
    hits = [(s[a] > s[b]) == (y > 0.5) for a, b, y in pairs if y != 0.5]
    return float(np.mean(hits)) if hits else float("nan")


# 7. Aesthetic MLP ----------------------------------------------------------------------------------
@torch.no_grad()
def image_embeddings(clip, images: Tensor) -> Tensor:
    """L2-normalised CLIP image embeddings of CPU images [-1, 1], computed on the model's device."""
    dev = clip.device
    return torch.cat([F.normalize(clip_features(clip.get_image_features(
        pixel_values=clip_pixels(unit_range(images[i:i + 1024])).to(dev))), dim=-1).cpu()
        for i in range(0, len(images), 1024)])


def train_aesthetic(emb: Tensor, ratings: Tensor, size: BuildSize, seed: int, log: Log):
    from evalsuite.metrics.aesthetic import AestheticMLP
    torch.manual_seed(stage_seed(seed, "aesthetic"))
    mlp = AestheticMLP(emb.shape[1]).train()
    opt, sched = stage_optimizer(mlp.parameters(), 1e-3, size.aesthetic_steps)
    for step in range(size.aesthetic_steps):  # full batch: a few thousand 48-d rows
        loss = (mlp(emb).squeeze(-1) - ratings).pow(2).mean()
        stage_step(opt, sched, loss, step, size.aesthetic_steps, log, "aesthetic", every=500, what="mse")
    return fp16_round(mlp.eval().requires_grad_(False))


def save_aesthetic(mlp, target: Path, meta: dict) -> None:
    from safetensors.torch import save
    def write(tmp: Path) -> None:
        write_bytes(tmp / "model.safetensors",
                     save({k: v.half().contiguous() for k, v in mlp.state_dict().items()}))
        write_bytes(tmp / "config.json", json.dumps(
            {"input_size": mlp.input_size, "architecture": "LAION improved-aesthetic-predictor MLP",
             "embedding": "mini CLIP image features, L2-normalised", **meta}, indent=2).encode())
    write_dir(target, write)


# Manifest --------------------------------------------------------------------------------------------
def portable_command(command: str | None) -> str | None:
    """The command as typed, its absolute paths recorded as `portable_path` does."""
    if command is None:
        return None
    return " ".join(portable_path(t) if Path(t).is_absolute() else t for t in command.split(" "))


def write_manifest(out: Path, meta: dict) -> dict:
    files = {}
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = str(f.relative_to(out))
        if rel == mw.MANIFEST or any(part.startswith(".") for part in f.relative_to(out).parts):
            continue
        files[rel] = {"sha256": hashlib.sha256(f.read_bytes()).hexdigest(), "bytes": f.stat().st_size}
    manifest = {**meta, "files": files,
                "safetensors_bytes": sum(v["bytes"] for k, v in files.items()
                                         if k.endswith(".safetensors"))}
    write_bytes(out / mw.MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return manifest


# The build -------------------------------------------------------------------------------------------
# What each stage reads: its own size fields and the stages upstream of it. A stage's resume
# key is built from these only, so a change to one stage's size reruns it and what depends on
# it, and nothing else.
STAGE_INPUTS = {
    "vae": (("n_train", "vae_steps", "vae_batch", "vae_object_weight"), ()),
    "clip": (("n_train", "clip_steps", "clip_batch", "clip_patch", "clip_hard_negatives",
              "clip_vision_steps"), ()),
    "reference": (("n_train", "unet_steps", "unet_batch", "unet_restart_steps"), ("vae", "clip")),
    "samples": (("ode_pairs", "sample_batch"), ("reference",)),
    "onestep": (("onestep_steps", "onestep_batch"), ("samples",)),
    "proxy": (("proxy_prompts", "proxy_steps", "proxy_batch"), ("samples",)),
    "aesthetic": (("proxy_prompts", "aesthetic_steps"), ("samples",)),
    "classifier": (("classifier_n", "classifier_epochs"), ()),
}


def stage_keys(seed: int, sz: BuildSize) -> dict[str, dict]:
    """Each stage's inputs: the seed, its size fields and its upstream stages' keys. The size's
    name is not part of it: two sizes that agree on a stage's inputs build the same stage."""
    keys: dict[str, dict] = {}
    for stage in STAGES:  # upstream stages come first in STAGES
        names, upstream = STAGE_INPUTS[stage]
        keys[stage] = {"seed": seed, "fields": {f: getattr(sz, f) for f in names},
                       "upstream": {u: keys[u] for u in upstream}}
        if stage == "samples":
            keys[stage]["recipe"] = mw.REFERENCE_RECIPE
        if stage == "onestep":
            keys[stage]["recipe"] = mw.ONESTEP_RECIPE
    return keys


def stage_done(out: Path, stage: str, key: dict) -> dict | None:
    """The record of `stage` in the build in progress at `out` if it finished with these inputs."""
    f = out / WORK / f"{stage}{DONE}"
    if f.is_file():
        rec = json.loads(f.read_text())
        if rec.get("key") == key:
            return rec
    return None


def _mark_done(out: Path, stage: str, key: dict, wall: float, extra: dict | None = None) -> None:
    write_bytes(out / WORK / f"{stage}{DONE}",
                 json.dumps({"key": key, "wall_s": round(wall, 1), **(extra or {})}).encode())


# Where a finished build keeps each stage's output -> where a build in progress keeps it. The
# samples stage keeps nothing in a finished build, so it cannot be reused.
REUSABLE = {"vae": ("pipeline/vae", f"{WORK}/vae"), "clip": ("clip", "clip"),
            "reference": ("pipeline", "pipeline"), "onestep": ("onestep", "onestep"),
            "proxy": ("proxy_reward", "proxy_reward"), "aesthetic": ("aesthetic", "aesthetic"),
            "classifier": ("classifier", "classifier")}


def reuse_stages(out: Path, source: Path, keys: dict[str, dict]) -> list[str]:
    """Copy into the build in progress at `out` every stage that the finished, verified build
    at `source` trained from the same inputs (equal stage keys), with its record; returns their
    names. A rebuild that changes one stage (say the CLIP) then trains only that stage and what
    depends on it."""
    source = Path(source)
    if not (source / mw.MANIFEST).is_file():
        raise DistarError(f"--reuse {source} holds no finished build (no {mw.MANIFEST}); point "
                          f"it at a folder a build completed, e.g. {mw.SHIPPED_DIR}.")
    problems = mw.verify_manifest(source)
    if problems:
        raise DistarError(f"--reuse {source}: its files do not match its manifest ({problems[0]}"
                          f"{'' if len(problems) == 1 else f' and {len(problems) - 1} more'}); "
                          f"restore it or reuse another build.")
    m = mw.read_manifest(source)
    known = {f.name for f in fields(BuildSize)}
    theirs = stage_keys(m["seed"], BuildSize(**{k: v for k, v in m["sizes"].items() if k in known}))
    reused = []
    for stage, (src, dst) in REUSABLE.items():
        if theirs[stage] != keys[stage] or stage_done(out, stage, keys[stage]) is not None:
            continue
        write_dir(out / dst, lambda tmp, src=src: shutil.copytree(source / src, tmp, dirs_exist_ok=True))
        record = {k: v for k, v in m["stages"].get(stage, {}).items() if k != "reused_from"}
        _mark_done(out, stage, keys[stage], m["wall_s"].get(stage, 0.0),
                   {**record, "reused_from": portable_path(source)})
        reused.append(stage)
    # A reference with a second cycle continues from a finished reference equal to its first.
    first = first_cycle_key(keys["reference"])
    if "reference" not in reused and keys["reference"] != first and theirs["reference"] == first \
            and not (out / WORK / FIRST_CYCLE).is_dir():
        def copy_first(tmp: Path) -> None:
            shutil.copytree(source / REUSABLE["reference"][0], tmp, dirs_exist_ok=True)
            (tmp / "reused_from.json").write_text(json.dumps({"reused_from": portable_path(source)}))
        write_dir(out / WORK / FIRST_CYCLE, copy_first)
        reused.append("reference (first cycle)")
    return reused


FIRST_CYCLE = "reference_first_cycle"   # the reference's first cycle, kept until its second ends


def first_cycle_key(key: dict) -> dict:
    """The reference key of the same build without a second cycle."""
    return {**key, "fields": {**key["fields"], "unet_restart_steps": 0}}


def build_world(out: Path, seed: int = 0, size: str = "full", command: str | None = None,
                quiet: bool = False, threads: int | None = None,
                stages: tuple[str, ...] | None = None, device: str = "cpu",
                reuse: Path | None = None) -> dict | None:
    """Build (or resume building) the mini world into `out`; returns the manifest.

    `stages` runs only those stages (their inputs must be built): independent stages (vae,
    clip, classifier; then onestep, proxy, aesthetic) can run as parallel processes on the same
    `out`, each seeded as in the sequential build, so the result is the same build."""
    if size not in SIZES:
        raise DistarError(f"Unknown --size '{size}'. Choose one of: {', '.join(SIZES)}")
    unknown = sorted(set(stages or ()) - set(STAGES))
    if unknown:
        raise DistarError(f"Unknown stage(s) {', '.join(unknown)}. Choose from: {', '.join(STAGES)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DistarError(f"--out {out} exists and is not a folder; choose a folder path.")
    from evalsuite.models import resolve_device
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    if dev.type == "cuda":  # fp32 networks; TF32 matmuls are the GPU's fast fp32 path
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    sz = SIZES[size]
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    keys = stage_keys(seed, sz)
    log = Log(quiet)
    from evalsuite.models.loading import quiet_hf_logging
    quiet_hf_logging()
    if (out / mw.MANIFEST).is_file():
        done = mw.read_manifest(out)
        if (done.get("seed"), done.get("size")) == (seed, size) and not mw.verify_manifest(out):
            log(f"{out} already holds a complete, verified build (seed {seed}, size {size})")
            return done
        raise DistarError(f"{out} holds another build (seed {done.get('seed')}, size "
                          f"{done.get('size')}) or files that do not match its manifest; choose "
                          f"a new --out folder or delete that one.")
    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    if reuse is not None:
        reused = reuse_stages(out, reuse, keys)
        log(f"reused from {reuse}: {', '.join(reused) or 'nothing (no stage has the same inputs)'}")
    walls: dict[str, float] = {}
    extra: dict[str, dict] = {}
    t_all = time.time()
    todo = [s for s in STAGES if (stages is None or s in stages) and stage_done(out, s, keys[s]) is None]
    cache: dict = {}

    def training_data():
        if "pixels" not in cache:
            t0 = time.time()
            cache["pixels"], cache["captions"] = render_pairs(sz.n_train, seed, sz.workers)
            walls["render"] = round(time.time() - t0, 1)
            log(f"rendered {sz.n_train} training pairs in {walls['render']} s")
        return cache["pixels"], cache["captions"]

    def need(name: str) -> None:
        if stage_done(out, name, keys[name]) is None:
            raise DistarError(f"stage '{name}' of {out} is not built yet; run it first (or run "
                              f"the build without --stages).")

    def stage(name: str, run: Callable[[], dict | None]) -> None:
        rec = stage_done(out, name, keys[name])
        if rec is not None:
            walls[name] = rec["wall_s"]
            extra[name] = {k: v for k, v in rec.items() if k not in ("key", "wall_s")}
            return
        if name not in todo:
            return
        t = time.time()
        # where it ran: a build may be resumed on another machine (GPU stages, then CPU ones)
        info = {**(run() or {}), "device": device_name, "device_type": dev.type}
        _mark_done(out, name, keys[name], time.time() - t, info)
        walls[name] = round(time.time() - t, 1)
        extra[name] = info
        log(f"{name}: {walls[name]} s {info if info else ''}")

    from diffusers import AutoencoderKL
    from transformers import CLIPModel

    def vae():
        if "vae" not in cache:
            need("vae")
            cache["vae"] = AutoencoderKL.from_pretrained(work / "vae", torch_dtype=torch.float32
                                                         ).eval().to(dev)
        return cache["vae"]

    def clip():
        if "clip" not in cache:
            need("clip")
            cache["clip"] = CLIPModel.from_pretrained(out / "clip", dtype=torch.float32).eval().to(dev)
        return cache["clip"]

    def pipe():
        if "pipe" not in cache:
            need("reference")
            cache["pipe"] = load_pipeline(out / "pipeline").to(dev)
        return cache["pipe"]

    def run_vae():
        pixels, _ = training_data()
        model = train_vae(pixels, sz, seed, log, dev).cpu()
        write_dir(work / "vae", lambda tmp: model.half().save_pretrained(tmp))
        return {"scaling_factor": model.config.scaling_factor}
    stage("vae", run_vae)

    def run_clip():
        pixels, captions = training_data()
        labels = scene_labels([world.training_scene(seed, i) for i in range(sz.n_train)]) \
            if sz.clip_vision_steps else None
        model = train_clip(pixels, captions, sz, seed, log, dev, labels=labels)
        save_clip(model, out / "clip")
        return {"zero_shot": clip_zero_shot(model)}
    stage("clip", run_clip)

    def run_reference():
        from diffusers import UNet2DConditionModel
        zs = (stage_done(out, "clip", keys["clip"]) or {}).get("zero_shot", {})
        shape = min(zs.get("shape", 0.0), zs.get("shape_paraphrased", 0.0))
        if shape < sz.clip_min_shape:
            raise DistarError(
                f"the CLIP in {out / 'clip'} picks the right shape for only {shape:.0%} of ground-truth "
                f"renders (zero-shot, plain or paraphrased prompts; this size needs {sz.clip_min_shape:.0%}), so the reference would "
                f"not be told which shape to draw. Train the CLIP longer (raise clip_steps of this size "
                f"in di_star/mini/configs.py) and rerun the build: the clip stage and every stage after "
                f"it are rebuilt.")
        pixels, captions = training_data()
        latents = encode_latents(vae(), pixels)
        first = work / FIRST_CYCLE
        p = build_pipeline(vae(), clip(), UNet2DConditionModel(**UNET)).to(dev)
        if not sz.unet_restart_steps:
            save_pipeline(train_reference(p, latents, captions, sz, seed, log).to("cpu"),
                          out / "pipeline")
            return None
        if not first.is_dir():  # kept, so a build stopped in the second cycle resumes after the first
            save_pipeline(train_reference(p, latents, captions, sz, seed, log).to("cpu"), first)
        src = first / "reused_from.json"
        info = {"first_cycle": json.loads(src.read_text()) if src.is_file() else "trained here"}
        # Both paths continue from the saved first cycle, so a continued build equals one trained here.
        init = UNet2DConditionModel.from_pretrained(first, subfolder="unet", torch_dtype=torch.float32)
        save_pipeline(train_reference(p.to(dev), latents, captions, sz, seed, log, init=init.to(dev),
                                      restart=True).to("cpu"), out / "pipeline")
        return info
    stage("reference", run_reference)

    # Prompts for the ODE pairs and the preference data: fresh captions (not the training ones).
    sample_prompts = [c for _, c in world.training_pairs(sz.ode_pairs, seed + 1)]
    z_ode = noise(sz.ode_pairs, stage_seed(seed, "ode-noise"))

    def run_samples():
        from safetensors.torch import save
        x = sample_reference(pipe(), sample_prompts, z_ode, sz.sample_batch)
        write_bytes(work / "samples.safetensors", save({"x0": x.contiguous()}))
    stage("samples", run_samples)

    def x_ref():
        if "x_ref" not in cache:
            from safetensors.torch import load_file
            need("samples")
            cache["x_ref"] = load_file(str(work / "samples.safetensors"))["x0"]
        return cache["x_ref"]

    stage("onestep", lambda: save_onestep(
        train_onestep(pipe(), z_ode, x_ref(), sample_prompts, sz, seed, log), out / "onestep"))

    n_p = min(sz.proxy_prompts, sz.ode_pairs)

    def judged():
        """Preference candidates for the first n_p sample prompts and their gold scores."""
        if "cand" not in cache:
            ref_pixels = decode(pipe().vae, x_ref()[:n_p])
            cand, owner = candidates(sample_prompts[:n_p], ref_pixels, seed)
            cand_pil = to_pil(cand)
            cache["cand"] = (cand, owner, cand_pil,
                             gold_scores(cand_pil, [sample_prompts[i] for i in owner], sz.workers),
                             gold_scores(cand_pil, [""] * len(cand_pil), sz.workers))
        return cache["cand"]

    def run_proxy():
        cand, owner, _, gold, _ = judged()
        pref = preference_pairs(owner, gold, seed)
        split = max(1, n_p * 4 // 5)  # prompts after `split` are held out from training
        train_p = [p for p in pref if owner[p[0]] < split]
        held_p = [p for p in pref if owner[p[0]] >= split]
        model = train_proxy(clip(), cand, owner, sample_prompts[:n_p], train_p, sz, seed, log)
        save_clip(model, out / "proxy_reward")
        reloaded = CLIPModel.from_pretrained(out / "proxy_reward", dtype=torch.float32).eval().to(dev)
        return {"pairs": len(train_p), "held_out_pairs": len(held_p),
                "held_out_pair_accuracy": round(pair_accuracy(reloaded, cand, owner,
                                                              sample_prompts[:n_p], held_p), 4),
                "mini_clip_held_out_pair_accuracy": round(pair_accuracy(
                    clip(), cand, owner, sample_prompts[:n_p], held_p), 4)}
    stage("proxy", run_proxy)

    def run_aesthetic():
        # Gold ratings without a prompt are the judge's prompt-free preference part, on 1-10.
        cand, _, _, _, gold_free = judged()
        ratings = 1 + 9 * torch.from_numpy(gold_free).float()
        emb = image_embeddings(clip(), cand)
        n_train = max(1, len(emb) * 4 // 5)
        mlp = train_aesthetic(emb[:n_train], ratings[:n_train], sz, seed, log)  # CPU: tiny
        with torch.no_grad():
            pred = mlp(emb[n_train:]).squeeze(-1)
        corr = float(np.corrcoef(pred.numpy(), ratings[n_train:].numpy())[0, 1]) \
            if len(pred) > 2 else float("nan")
        save_aesthetic(mlp, out / "aesthetic", {"rating": "1 + 9 * gold preference (no prompt)"})
        return {"images": len(emb), "held_out_pearson": round(corr, 4)}
    stage("aesthetic", run_aesthetic)

    def run_classifier():
        from di_star.mini.classifier import TrainRecipe, train_attribute_classifier
        train_attribute_classifier(out / "classifier", seed=stage_seed(seed, "classifier") % 2**31,
                                   recipe=TrainRecipe(n=sz.classifier_n, epochs=sz.classifier_epochs),
                                   log=log)
    stage("classifier", run_classifier)

    if any(stage_done(out, s, keys[s]) is None for s in STAGES):
        log(f"stages done: {', '.join(s for s in STAGES if stage_done(out, s, keys[s]))}; rerun "
            f"without --stages to finish the build")
        return None
    import diffusers
    import transformers
    devices = {s: extra[s].get("device", device_name) for s in STAGES}
    # The networks' device is the one to rebuild with: a GPU if any stage trained on one.
    net_type = "cuda" if any(extra[s].get("device_type") == "cuda" for s in STAGES) else dev.type
    meta = {"world": "mini", "seed": seed, "size": size,
            # The build's command (without --stages: a stage split changes no output); the
            # command of the process that happened to finish it is kept beside it.
            "command": f"distar lab build mini --out {portable_path(out)} --seed {seed} --size {size}"
                       + (f" --threads {threads}" if threads else "")
                       + (f" --device {net_type}" if net_type != "cpu" else ""),
            "devices": devices,
            "finished_by": portable_command(command),
            "git_commit": project_commit() or "unknown", "torch": torch.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "wall_s": walls,
            "stages": extra, "sizes": sz.__dict__,
            "recipes": {"pipeline": mw.REFERENCE_RECIPE, "onestep": mw.ONESTEP_RECIPE}}
    shutil.rmtree(work, ignore_errors=True)
    manifest = write_manifest(out, meta)
    log(f"built the mini world in {out}: {manifest['safetensors_bytes'] / 1e6:.1f} MB of "
        f"safetensors, {sum(walls.values()):.0f} s of stage wall time")
    return manifest
