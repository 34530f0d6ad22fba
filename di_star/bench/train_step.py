#!/usr/bin/env python
"""Time one DI* generator step per regulariser estimator against a DMD2-style KL step, in the
same code (di_star.trainer.generator_terms on the SD world), and, on a GPU, the peak memory of
the full SDXL configuration.

A generator step here is what the training loop does for theta: draw prompts (encoded once),
z, t, eps; x0 = g(z, c); the loss terms; backward; AdamW step. Every variant keeps everything
else equal (reward through the VAE, CFG-enhanced reference 'in' at 7.5):
  kl     DMD2 / Diff-Instruct: w sg[s_psi - s_ref^cfg]^T x_t (both scores under no_grad)
  x0     DI* score regulariser, the paper listing's estimator (scores under no_grad)
  exact  DI* score regulariser, Theorem 3.1's estimator (backprop through both frozen UNets'
         inputs: the assistant and the guided reference, i.e. three UNet passes)
Variants are timed round-robin (one step of each in turn) so load on a shared machine hits
them alike; the table gives medians and the median of the per-round ratios to kl.

    OMP_NUM_THREADS=1 .venv/bin/python -m di_star.bench.train_step            # tiny_sdxl, CPU
    .venv/bin/python -m di_star.bench.train_step --config full                 # GPU: SDXL size

--config full uses full-size SDXL UNets / VAE / text encoders and a ViT-H/14 PickScore, all
with random weights (nothing downloaded), batch 1, bf16 autocast, gradient checkpointing; it
also measures peak GPU memory of one assistant step + one generator step with the optimizers'
states allocated (the steady state of training on one GPU).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import di_star  # noqa: F401  (patches torchvision on CPU-only torch)
from di_star.noise import weight_fn
from di_star.presets import get_preset
from di_star.trainer import assistant_step, generator_terms

VARIANTS = {
    "kl": dict(regulariser="kl", guidance="in"),
    "x0": dict(regulariser="score", estimator="x0", guidance="in"),
    "exact": dict(regulariser="score", estimator="exact", guidance="in"),
}

TARGETS = {"kl": "1.00x", "x0": "<= 1.1x", "exact": "<= 1.8x"}  # issue 14: cost relative to KL


def base_config(size: str, batch: int, reward: bool, checkpointing: str = "all"):
    if size == "tiny":
        cfg = get_preset("tiny_sdxl").replace(optim={"batch_size": batch})
    else:
        cfg = get_preset("di_star_sdxl").replace(
            optim={"batch_size": batch},
            sd={"reference": "random:sdxl_base", "generator": "random:sdxl_base",
                "reward": "random:pickscore", "prompts": "bench:tiny"})
    if not reward:
        cfg = cfg.replace(objective={"alpha_rew": 0.0})
    return cfg.replace(sd={"gradient_checkpointing": checkpointing != "none",
                           "checkpoint_frozen": checkpointing == "all"})


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variants(world, models, base, reps: int, warmup: int, assistant: bool = False,
                  on_round=None, optimizer: str = "adamw") -> tuple[dict[str, list[float]], dict[str, float]]:
    """ms per step of each variant, round-robin, and (on a GPU) each one's peak allocated GiB
    over its steps (weights, optimizer states and activations). `assistant` adds the assistant's
    DSM step (exact config) to the round; `on_round(times, peaks)` is called after each timed
    round, so a caller can keep what was measured if a later round is interrupted. `optimizer`:
    a di_star.trainer.make_optimizer kind ('adamw', or the full presets' 'adamw8bit')."""
    from di_star.trainer import make_optimizer
    device = world.device
    cuda = device.type == "cuda"
    gen = models.generator
    for m in (models.assistant, *models.frozen):
        m.requires_grad_(False)
    s_psi = models.make_assistant_score(models.assistant)
    w = weight_fn(base.objective.w, world.schedule)
    lam = weight_fn(base.objective.lam, world.schedule)
    # A real step, negligible drift.
    opt = make_optimizer(gen.parameters(), 1e-12, (0.9, 0.999), 0.0, optimizer)
    opt_psi = make_optimizer(models.assistant.parameters(), 1e-12, (0.9, 0.999), 0.0,
                             optimizer) if assistant else None
    cfgs = {k: base.replace(objective=v) for k, v in VARIANTS.items()}
    rng = torch.Generator().manual_seed(0)
    autocast = dict(device_type=device.type, dtype=world.frozen_dtype,
                    enabled=world.frozen_dtype != torch.float32)

    def generator_step(cfg):
        with torch.autocast(**autocast):
            terms = generator_terms(world, gen, s_psi, models.reference_score, cfg, rng, device, w)
        sum(v.mean() for v in terms.values()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def assistant_dsm_step():
        models.assistant.requires_grad_(True)
        with torch.autocast(**autocast):
            terms = assistant_step(world, s_psi, gen, cfgs["exact"], rng, device, lam)
        terms["assistant_dsm"].mean().backward()
        opt_psi.step()
        opt_psi.zero_grad(set_to_none=True)
        models.assistant.requires_grad_(False)

    steps = {name: (lambda c=cfg: generator_step(c)) for name, cfg in cfgs.items()}
    if assistant:
        steps["assistant"] = assistant_dsm_step
    times: dict[str, list[float]] = {k: [] for k in steps}
    peaks: dict[str, float] = {}
    for r in range(warmup + reps):
        for name, step in steps.items():
            _sync(device)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            if r >= warmup:
                times[name].append(1000 * (time.perf_counter() - t0))
                if cuda:
                    peaks[name] = max(peaks.get(name, 0.0), torch.cuda.max_memory_allocated(device) / 2**30)
        if r >= warmup and on_round is not None:
            on_round(times, peaks)
    del opt, opt_psi
    return times, peaks


def peak_memory(world, models, base, optimizer: str) -> float:
    """GiB allocated at peak over one assistant step and one generator step (exact estimator),
    both optimizers' states allocated: what one GPU holds in steady-state training."""
    from di_star.trainer import make_optimizer
    device = world.device
    gen, assistant = models.generator, models.assistant
    cfg = base.replace(objective=VARIANTS["exact"])
    o = cfg.optim
    opt_g = make_optimizer(gen.parameters(), 1e-12, (o.beta1, o.beta2), 0.0, optimizer)
    opt_psi = make_optimizer(assistant.parameters(), 1e-12, (o.beta1, o.beta2), 0.0, optimizer)
    rng = torch.Generator().manual_seed(0)
    lam, w = weight_fn(cfg.objective.lam, world.schedule), weight_fn(cfg.objective.w, world.schedule)
    autocast = dict(device_type=device.type, dtype=world.frozen_dtype,
                    enabled=world.frozen_dtype != torch.float32)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(2):  # the second round runs with both optimizers' states in memory
        assistant.requires_grad_(True)
        with torch.autocast(**autocast):
            terms = assistant_step(world, models.make_assistant_score(assistant), gen, cfg, rng, device, lam)
        terms["assistant_dsm"].mean().backward()
        opt_psi.step()
        opt_psi.zero_grad(set_to_none=True)
        assistant.requires_grad_(False)
        with torch.autocast(**autocast):
            terms = generator_terms(world, gen, models.make_assistant_score(assistant), models.reference_score,
                                    cfg, rng, device, w)
        sum(v.mean() for v in terms.values()).backward()
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    del opt_g, opt_psi
    return torch.cuda.max_memory_allocated(device) / 2**30


def build(size: str, batch: int, reward: bool, checkpointing: str = "all",
          device: torch.device | None = None):
    """The SD world of `size` ('tiny' | 'full': random-weight SDXL) and its models; seconds.
    Default device: the GPU for 'full'; for 'tiny' the GPU if there is one."""
    from di_star.sdxl.world import SDWorld
    if device is None:
        device = torch.device("cuda" if size == "full" or torch.cuda.is_available() else "cpu")
    base = base_config(size, batch, reward, checkpointing)
    world = SDWorld(base, device)
    t0 = time.time()
    models = world.build()
    return world, models, base, time.time() - t0


def summarise(times: dict[str, list[float]]) -> dict[str, dict]:
    """Medians, minimums and ratios to the KL step (per round, then the median)."""
    kl = times["kl"]
    rows = {}
    for name, ts in times.items():
        if not ts:
            continue
        ratios = [t / k for t, k in zip(ts, kl)]
        rows[name] = {"median_ms": statistics.median(ts), "min_ms": min(ts),
                      "ratio_to_kl_median_of_rounds": statistics.median(ratios),
                      "ratio_of_minimums": min(ts) / min(kl[:len(ts)]),
                      "ratio_of_medians": statistics.median(ts) / statistics.median(kl)}
    return rows


def run(size: str, batch: int, reps: int, warmup: int, reward: bool, checkpointing: str = "all") -> dict:
    world, models, base, build_s = build(size, batch, reward, checkpointing)
    device = world.device
    times, _ = time_variants(world, models, base, reps, warmup)
    out = {"config": size, "device": str(device), "batch": batch, "reps": reps, "reward": reward,
           "resolution": world.resolution, "mixed_precision": base.sd.mixed_precision,
           "gradient_checkpointing": checkpointing, "threads": torch.get_num_threads(),
           "build_s": build_s, "variants": summarise(times),
           "unet_params": sum(p.numel() for p in models.generator.parameters())}
    if device.type == "cuda" and size == "full":
        out["peak_memory_gib"] = {}
        for optimizer in ("adamw", "adamw8bit"):
            try:
                out["peak_memory_gib"][optimizer] = peak_memory(world, models, base, optimizer)
            except torch.cuda.OutOfMemoryError:
                out["peak_memory_gib"][optimizer] = "OOM"
                torch.cuda.empty_cache()
            except Exception as e:  # e.g. bitsandbytes missing
                out["peak_memory_gib"][optimizer] = f"not measured: {type(e).__name__}: {str(e)[:120]}"
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def table(res: dict) -> str:
    head = (f"### {res['config']} SDXL, {res['device']}, batch {res['batch']}, {res['resolution']}px, "
            f"reward {'on' if res['reward'] else 'off'}, mixed precision {res['mixed_precision']}, "
            f"checkpointing: {res['gradient_checkpointing']}, {res['threads']} thread(s), {res['reps']} rounds\n")
    lines = ["| estimator | median ms / generator step | min ms | ratio to KL: median of rounds | "
             "ratio of minimums | target |", "|---|---|---|---|---|---|"]
    for name, r in res["variants"].items():
        lines.append(f"| {name} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | "
                     f"{r['ratio_to_kl_median_of_rounds']:.2f}x | {r['ratio_of_minimums']:.2f}x | {TARGETS.get(name, '')} |")
    extra = ""
    if "peak_memory_gib" in res:
        extra = "\n" + "\n".join(f"peak GPU memory, {k}: " + (f"{v:.1f} GiB" if isinstance(v, float) else v)
                                 for k, v in res["peak_memory_gib"].items()) + "\n"
    return head + "\n".join(lines) + "\n" + extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=["auto", "tiny", "full"], default="auto",
                    help="auto: tiny, plus full when a GPU is visible")
    ap.add_argument("--batch", type=int, default=0, help="0: 2 for tiny, 1 for full")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--checkpointing", choices=["all", "trained", "none"], default="all",
                    help="gradient checkpointing on all UNets + VAE (the full presets), on the "
                         "trained UNets only, or off")
    args = ap.parse_args()
    sizes = ["tiny", "full"] if args.config == "auto" and torch.cuda.is_available() else \
        (["tiny"] if args.config == "auto" else [args.config])
    results = []
    for size in sizes:
        batch = args.batch or (2 if size == "tiny" else 1)
        for reward in (True, False):
            res = run(size, batch, args.reps, args.warmup, reward, args.checkpointing)
            results.append(res)
            print(table(res), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
