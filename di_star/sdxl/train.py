"""Algorithm 1 at SDXL scale on accelerate: K_TA assistant DSM steps, then one generator step on
L = L_rew + L_cfg + L_reg, the per-sample terms coming from the same functions as the toy lab's
loop (`di_star.trainer.assistant_step` / `generator_terms`), with what 2.6B UNets need around
them: DDP or FSDP (sd.fsdp, di_star.sdxl.sharding), bf16 / fp16 autocast, gradient
checkpointing, gradient accumulation, optional 8-bit AdamW, generator EMA, TensorBoard, sample
grids, a quick evaluation hook and a diffusers export.

Run directory (to resume, rerun the same command; `accelerate launch` for several GPUs):
  config.json          the TrainConfig; a resumed run must match it (max_steps may grow)
  stats.jsonl          one line per `log_every` generator steps
  ckpt-XXXXXXX/        the newest complete checkpoint (di_star.sdxl.checkpoint), latest.json -> it
  tb/                  TensorBoard logs (`tensorboard --logdir RUN/tb`)
  samples/             PNG sample grids, fixed prompts and noise
  eval/                quick evaluations (an evalsuite results store)
  export/              the final generator as a diffusers pipeline + distar_recipe.json
  metrics.json         final mean reward on fixed prompts and noise (EMA weights when on)

Batch sizes: `optim.batch_size` images per process per micro-batch; one optimizer step sees
batch_size x sd.grad_accum x processes images (both networks).
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from di_star.config import TrainConfig, validate
from di_star.errors import DistarError, NonFiniteLossError
from di_star.noise import weight_fn
from di_star.sdxl import checkpoint as ck
from di_star.sdxl.export import EXPORT_DIR, export_pipeline
from di_star.sdxl.reward import check_reward
from di_star.sdxl.sharding import full_optimizer_state, gather_full, is_sharded, shard_unet_module
from di_star.trainer import (EVAL_SEED, TrainResult, assistant_step, check_same_run, generator_terms,
                             make_run_dir, stopped_error, truncate_stats)
from distar.core import atomic
from distar.core.progress import ProgressBar

SD_WORLDS = ("sdxl", "sd15")
MIXED = ("no", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adamw8bit")
LOGGERS = ("tensorboard", "wandb", "none")
SAMPLE_SEED = 7  # sample grids: the same prompts and noise at every step, in every run


def validate_sd(cfg: TrainConfig) -> None:
    """The [sd] section's choices, each with its fix."""
    sd = cfg.sd
    if cfg.world.name not in SD_WORLDS:
        raise DistarError(f"world.name '{cfg.world.name}' is not a Stable Diffusion world; "
                          f"choose one of: {', '.join(SD_WORLDS)}.")
    for key, value, choices in (("sd.mixed_precision", sd.mixed_precision, MIXED),
                                ("sd.optimizer", sd.optimizer, OPTIMIZERS),
                                ("sd.log_with", sd.log_with, LOGGERS)):
        if value not in choices:
            raise DistarError(f"Unknown {key} '{value}'. Choose one of: {', '.join(choices)}")
    if not 0 <= sd.t_min < sd.t_max <= 1000:
        raise DistarError(f"sd.t_min, sd.t_max = {sd.t_min}, {sd.t_max}: need 0 <= t_min < t_max <= 1000.")
    if not 0 <= sd.generator_timestep < 1000:
        raise DistarError(f"sd.generator_timestep = {sd.generator_timestep} must be in [0, 1000).")
    for key in ("grad_accum", "sample_images", "eval_limit"):
        if getattr(sd, key) < 1:
            raise DistarError(f"sd.{key} must be >= 1, got {getattr(sd, key)}.")
    for key in ("sample_every", "eval_every", "assistant_lora_rank", "resolution"):
        if getattr(sd, key) < 0:
            raise DistarError(f"sd.{key} must be >= 0, got {getattr(sd, key)}.")
    if sd.max_grad_norm < 0 or sd.weight_decay < 0:
        raise DistarError("sd.max_grad_norm and sd.weight_decay must be >= 0.")
    if sd.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise DistarError("sd.mixed_precision = 'fp16' needs a CUDA GPU. Fix: use 'bf16' or 'no' on a CPU.")
    if sd.fsdp and sd.optimizer == "adamw8bit":
        raise DistarError("sd.fsdp = true with sd.optimizer = 'adamw8bit': bitsandbytes' 8-bit AdamW does "
                          "not step sharded (DTensor) parameters. Fix: sd.optimizer = 'adamw' (FSDP already "
                          "splits the fp32 Adam state over the GPUs), or sd.fsdp = false.")
    if sd.fsdp and sd.mixed_precision == "fp16":
        raise DistarError("sd.fsdp = true with sd.mixed_precision = 'fp16': the fp16 gradient scaler is not "
                          "wired for sharded gradients here. Fix: sd.mixed_precision = 'bf16'.")
    check_reward(sd.reward)
    if sd.log_with == "wandb":
        import importlib.util
        if importlib.util.find_spec("wandb") is None:
            raise DistarError("sd.log_with = 'wandb' but wandb is not installed. Fix: `pip install "
                              "wandb`, or use 'tensorboard' (installed) or 'none'.")


def make_optimizer(params, lr: float, betas: tuple[float, float], weight_decay: float, kind: str):
    """AdamW (Adam when weight_decay = 0), or bitsandbytes' 8-bit AdamW."""
    params = list(params)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise DistarError("sd.optimizer = 'adamw8bit' needs bitsandbytes, which is not installed. "
                          "Fix: `pip install bitsandbytes` (CUDA machines), or use sd.optimizer = 'adamw'.") from None
    return bnb.optim.AdamW8bit(params, lr=lr, betas=betas, weight_decay=weight_decay)


def _accelerator(cfg: TrainConfig, run_dir: Path):
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType

    # accelerate keeps one state per process and refuses a second mixed-precision setting; a single
    # process that trains several runs (a notebook, the tests) starts each from a fresh state.
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != cfg.sd.mixed_precision and PartialState().num_processes == 1:
        AcceleratorState._reset_state()
    # Without CUDA, processes from `accelerate launch --multi_gpu` only form a (gloo) group when
    # told to use the CPU.
    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.sd.mixed_precision,
                      log_with=None if cfg.sd.log_with == "none" else cfg.sd.log_with,
                      project_dir=str(run_dir),
                      kwargs_handlers=[DistributedDataParallelKwargs(gradient_as_bucket_view=True)])
    if acc.distributed_type not in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
        raise DistarError(
            f"accelerate launched with distributed_type {acc.distributed_type}. The SD trainer is launched "
            "as plain multi-GPU processes and shards its two trained UNets itself when the training "
            "config says sd.fsdp = true (preset di_star_sdxl_fsdp): accelerate's FSDP / DeepSpeed "
            "plugins wrap one model per optimizer and cannot run DI*'s frozen-assistant generator step. "
            "Fix: `accelerate launch --config_file configs/accelerate/fsdp_1node_8gpu.yaml` (or "
            "ddp_1node_8gpu.yaml) with --preset di_star_sdxl_fsdp (docs/training.md).")
    return acc


def _all_finite(accelerator, terms: dict[str, Tensor], step: int, run_dir: Path) -> None:
    """NaN guard: stop on every process if any process has a non-finite term."""
    names = sorted(terms)
    bad = torch.tensor([0.0 if torch.isfinite(terms[n].detach()).all() else 1.0 for n in names],
                       device=accelerator.device)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, "sum")
    if bad.sum() > 0:
        raise stopped_error(NonFiniteLossError([n for n, b in zip(names, bad.tolist()) if b]), step, run_dir)


def _grad_step(accelerator, opt, params: list[Tensor], max_norm: float, name: str, step: int,
               run_dir: Path) -> float:
    """Clip (when asked), check the gradient is finite, step, clear."""
    norm = accelerator.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
    norm = float(norm.full_tensor() if is_sharded(norm) else norm)
    if not math.isfinite(norm) and accelerator.scaler is None:  # fp16's scaler skips such steps itself
        raise stopped_error(NonFiniteLossError([f"{name} gradient"]), step, run_dir)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return norm


def _sample_grid(world, generator, n: int, path: Path, write: bool) -> Tensor:
    """Decode n images from fixed prompts and noise and save them as one PNG row grid. Every
    process calls it (a sharded generator's forward is collective); those with write=False
    only compute."""
    from PIL import Image

    g = torch.Generator().manual_seed(SAMPLE_SEED)
    cond = world.encode([world.prompts[i % len(world.prompts)] for i in range(n)])
    z = world.sample_z(n, g).to(world.device)
    with torch.no_grad(), torch.autocast(world.device.type, dtype=world.frozen_dtype,
                                         enabled=world.frozen_dtype != torch.float32):
        images = world.decode(generator(z, cond)).clamp(0, 1).float().cpu()
    grid = torch.cat(list(images), dim=2)  # [3, H, n W]
    if not write:
        return grid
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    import io
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    atomic.write_bytes(path, buf.getvalue())
    return grid


class _QuickEval:
    """Export the current generator, generate a small benchmark with evalsuite, score it."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, world):
        self.cfg, self.run_dir, self.world = cfg, run_dir, world
        self.metric = None

    def __call__(self, accelerator, generator_unet, step: int) -> dict[str, float]:
        """Every process calls it (gathering a sharded generator is collective)."""
        from PIL import Image

        from evalsuite.generate import EvalRequest, run_eval
        from evalsuite.models.loading import load_pipeline

        sd = self.cfg.sd
        model_dir = self.run_dir / "eval_model"
        state = gather_full(generator_unet.state_dict(), keep=accelerator.is_main_process)
        if accelerator.is_main_process:
            export_pipeline(self.world, generator_unet.config, state, self.cfg, step, model_dir)
        del state
        accelerator.wait_for_everyone()
        run = run_eval(EvalRequest(model=f"path:{model_dir}", bench=sd.eval_bench, limit=sd.eval_limit,
                                   out=self.run_dir / "eval", device=str(self.world.device)))
        load_pipeline.cache_clear()  # each export is a new recipe; keep no stale pipeline alive
        if not accelerator.is_main_process:
            return {}
        if self.metric is None:
            if sd.eval_metric:
                from evalsuite.metrics import load_metric
                self.metric = load_metric(sd.eval_metric, device=str(self.world.device))
            else:
                self.metric = self.world.reward_model
        images = [Image.open(run.store.root / p).convert("RGB") for p in run.images.path]
        scores = self.metric.score(images, list(run.images.prompt))
        name = sd.eval_metric or sd.reward
        return {f"eval/{name}": float(scores.mean())}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def train(cfg: TrainConfig, out: Path, *, world=None, progress: bool = True,
          on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Run (or resume) one DI* run of an SD world in `out`; export the generator at the end.
    `on_step(step, stats)` is called after every generator step (tests use it to interrupt)."""
    from di_star.sdxl.world import SDWorld

    validate(cfg)
    validate_sd(cfg)
    o, opt_cfg, run, sd = cfg.objective, cfg.optim, cfg.run, cfg.sd
    run_dir = make_run_dir(out)
    accelerator = _accelerator(cfg, run_dir)
    if accelerator.is_main_process:
        check_same_run(run_dir, cfg)
        atomic.write_bytes(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=1).encode())
        ck.remove_stale_temp(run_dir)
    accelerator.wait_for_everyone()

    device = accelerator.device
    world = world or SDWorld(cfg, device)
    if (world.device.type, world.device.index or 0) != (device.type, device.index or 0):
        raise DistarError(f"The world was built for {world.device} but this process trains on {device}. "
                          f"Fix: SDWorld(cfg, device) with the accelerator's device, or pass no world.")
    torch.manual_seed(run.seed)  # module initialisations (a LoRA's) are a function of the seed
    models = world.build()
    gen, assistant = models.generator, models.assistant
    # FSDP shards the generator and a fully trained assistant; a LoRA assistant (small, over a
    # frozen base) stays data-parallel. With one process there is nothing to shard over.
    fsdp = sd.fsdp and accelerator.num_processes > 1
    if sd.fsdp and not fsdp:
        accelerator.print("sd.fsdp = true with one process: training unsharded")
    if fsdp:
        param_dtype = world.frozen_dtype if sd.mixed_precision != "no" else None
        gen = shard_unet_module(gen, device.type, param_dtype)
        if sd.assistant_lora_rank == 0:
            assistant = shard_unet_module(assistant, device.type, param_dtype)
    # The assistant's trainable parameters (all of them, or a LoRA's adapters), named once here.
    psi_names = {n for n, p in assistant.named_parameters() if p.requires_grad} \
        if sd.assistant_lora_rank > 0 else None
    psi_params = [p for p in assistant.parameters() if p.requires_grad]
    betas = (opt_cfg.beta1, opt_cfg.beta2)
    opt_g = make_optimizer(gen.parameters(), opt_cfg.lr_g, betas, sd.weight_decay, sd.optimizer)
    opt_psi = make_optimizer(psi_params, opt_cfg.lr_psi, betas, sd.weight_decay, sd.optimizer)
    opt_g, opt_psi = accelerator.prepare(opt_g, opt_psi)
    if not _sharded(gen):
        gen = accelerator.prepare(gen)  # DDP (or nothing, in one process)
    if not _sharded(assistant):
        assistant = accelerator.prepare(assistant)
    gen_bare, psi_bare = accelerator.unwrap_model(gen), accelerator.unwrap_model(assistant)
    # DSM goes through the prepared (DDP / FSDP) assistant so its gradients sync; the generator
    # step uses the bare module (the sharded one under FSDP), whose parameters are frozen then.
    s_psi_train = models.make_assistant_score(assistant)
    s_psi_frozen = models.make_assistant_score(psi_bare)
    s_ref = models.reference_score
    theta_params = [p for p in gen_bare.parameters() if p.requires_grad]
    ema = {k: v.detach().clone().float() for k, v in gen_bare.state_dict().items()} if run.ema > 0 else None

    # One CPU generator per process for every random draw: a run is a function of its seed.
    rank, world_size = accelerator.process_index, accelerator.num_processes
    rng = torch.Generator().manual_seed(run.seed * 1000 + rank)
    step = 0
    last = ck.latest_checkpoint(run_dir)
    if last is not None:
        state = ck.load_checkpoint(last, generator=gen_bare, assistant=psi_bare, assistant_names=psi_names,
                                   ema=ema, optimizers={"opt_g": opt_g, "opt_psi": opt_psi})
        step = int(state["step"])
        if len(state["rng"]) == world_size:
            rng.set_state(state["rng"][rank])
        else:  # resumed on another number of processes: a fresh, still seed-determined stream
            accelerator.print(f"checkpoint written by {len(state['rng'])} processes, resuming on "
                              f"{world_size}: data streams reseeded from (seed, step, rank)")
            rng.manual_seed(run.seed * 1000 + rank + 7919 * step)
        if accelerator.scaler is not None and state.get("scaler"):
            accelerator.scaler.load_state_dict(state["scaler"])
    stats_path = run_dir / "stats.jsonl"
    if accelerator.is_main_process:
        truncate_stats(stats_path, step)
    if sd.log_with != "none":
        accelerator.init_trackers("tb", config=_flat(cfg.to_dict()),
                                  init_kwargs={"tensorboard": {"purge_step": step + 1}} if step else {})
    lam, w = weight_fn(o.lam, world.schedule), weight_fn(o.w, world.schedule)
    k_ta = opt_cfg.assistant_steps_per_g_step if o.regulariser != "none" else 0
    accum = sd.grad_accum
    quick_eval = _QuickEval(cfg, run_dir, world) if sd.eval_every else None

    def no_sync(model, micro: int):
        return accelerator.no_sync(model) if micro < accum - 1 else contextlib.nullcontext()

    t_start, steps_timed, loop_s = time.time(), 0, 0.0
    window: dict[str, list[float]] = {}
    bar = ProgressBar(cfg.preset or world.name, run.max_steps, unit="steps", completed=step,
                      disable=not (progress and accelerator.is_main_process))
    try:
        while step < run.max_steps:
            t0 = time.perf_counter()
            # Assistant: K_TA DSM steps on detached generator samples, generator frozen.
            for p in psi_params:
                p.requires_grad_(True)
            for _ in range(k_ta):
                for micro in range(accum):
                    with no_sync(assistant, micro):
                        with accelerator.autocast():
                            terms = assistant_step(world, s_psi_train, gen, cfg, rng, device, lam)
                        _all_finite(accelerator, terms, step, run_dir)
                        accelerator.backward(terms["assistant_dsm"].mean() / accum)
                    window.setdefault("assistant_dsm", []).append(terms["assistant_dsm"].mean().item())
                window.setdefault("grad_norm_psi", []).append(
                    _grad_step(accelerator, opt_psi, psi_params, sd.max_grad_norm, "assistant", step, run_dir))
            # Generator: one step on L_rew + L_cfg + L_reg, assistant frozen.
            for p in psi_params:
                p.requires_grad_(False)
            for micro in range(accum):
                with no_sync(gen, micro):
                    with accelerator.autocast():
                        terms = generator_terms(world, gen, s_psi_frozen, s_ref, cfg, rng, device, w)
                    _all_finite(accelerator, terms, step, run_dir)
                    accelerator.backward(sum(v.mean() for v in terms.values()) / accum)
                for k, v in terms.items():
                    window.setdefault(k, []).append(v.mean().item())
                if "L_rew" in terms:
                    window.setdefault("reward", []).append(-terms["L_rew"].mean().item() / o.alpha_rew)
            window.setdefault("grad_norm_g", []).append(
                _grad_step(accelerator, opt_g, theta_params, sd.max_grad_norm, "generator", step, run_dir))
            if ema is not None:  # Update EMA.
                with torch.no_grad():
                    for k, v in gen_bare.state_dict().items():
                        ema[k].lerp_(v.detach().float(), 1 - run.ema) if v.is_floating_point() else ema[k].copy_(v)
            step += 1
            loop_s += time.perf_counter() - t0
            steps_timed += 1
            bar.update(step)

            if step % run.log_every == 0 or step == run.max_steps:
                line = {"step": step, **{k: sum(v) / len(v) for k, v in window.items()},
                        "ms_per_step": 1000 * loop_s / max(steps_timed, 1), "world_size": world_size,
                        "time": time.time()}
                if device.type == "cuda":
                    line["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                window = {}
                if accelerator.is_main_process:
                    with open(stats_path, "a") as f:
                        f.write(json.dumps(line) + "\n")
                if sd.log_with != "none":
                    accelerator.log({f"train/{k}": v for k, v in line.items() if k not in ("step", "time")}, step=step)
            if step % run.ckpt_every == 0 or step == run.max_steps:
                _save(accelerator, run_dir, step, cfg, gen_bare, psi_bare, psi_names, ema,
                      {"opt_g": opt_g, "opt_psi": opt_psi}, rng)
            if sd.sample_every and (step % sd.sample_every == 0 or step == run.max_steps):
                grid = _sample_grid(world, gen_bare, sd.sample_images, run_dir / "samples" / f"step-{step:07d}.png",
                                    write=accelerator.is_main_process)
                if sd.log_with == "tensorboard" and accelerator.is_main_process:
                    accelerator.get_tracker("tensorboard", unwrap=True).add_image("samples", grid, step)
            if quick_eval is not None and step % sd.eval_every == 0:
                scores = quick_eval(accelerator, gen_bare.unet, step)
                if scores and sd.log_with != "none":
                    accelerator.log(scores, step=step)
                if scores and accelerator.is_main_process:
                    with open(run_dir / "eval_scores.jsonl", "a") as f:
                        f.write(json.dumps({"step": step, **scores}) + "\n")
            if on_step is not None:
                on_step(step, {k: v.mean().item() for k, v in terms.items()})
    except BaseException:
        for tracker in accelerator.trackers:  # flush what was logged up to the stop
            tracker.finish()
        raise
    finally:
        bar.close()

    # Final generator (EMA weights when on): fixed-seed reward, export.
    if ema is not None:
        gen_bare.load_state_dict(ema)
    gen_bare.eval()
    result_ms = 1000 * loop_s / steps_timed if steps_timed else _recorded_ms(run_dir)
    metrics = world.evaluate(gen_bare, cfg.world.eval_samples, EVAL_SEED)  # every process: see _sample_grid
    export = run_dir / EXPORT_DIR
    if _export_step(export) != step:
        state = gather_full(gen_bare.unet.state_dict(), keep=accelerator.is_main_process)
        if accelerator.is_main_process:
            export_pipeline(world, gen_bare.unet.config, state, cfg, step, export)
        del state
    if accelerator.is_main_process:
        atomic.write_bytes(run_dir / "metrics.json", json.dumps(
            {"step": step, "ms_per_step": result_ms, "metrics": metrics, "preset": cfg.preset,
             "export": str(export)}, indent=1).encode())
    accelerator.wait_for_everyone()
    accelerator.end_training()  # closes the trackers and (accelerate >= 1.x) the process group
    return TrainResult(run_dir, step, metrics, result_ms, time.time() - t_start)


def _save(accelerator, run_dir: Path, step: int, cfg: TrainConfig, gen_bare, psi_bare, psi_names,
          ema, optimizers: dict, rng: torch.Generator) -> None:
    """Gather every process's RNG state, check the replicas agree, write on the main process."""
    states = rng.get_state()
    if accelerator.num_processes > 1:
        states = accelerator.gather(states.to(accelerator.device)[None]).cpu()
        states = list(states)
    else:
        states = [states]
    if accelerator.num_processes > 1 and not _sharded(gen_bare):  # DDP replicas must agree
        checksum = torch.stack([p.detach().double().sum() for p in gen_bare.parameters()]).sum().reshape(1)
        sums = accelerator.gather(checksum.to(accelerator.device)).cpu()
        if not torch.all(sums == sums[0]):
            raise DistarError(f"Generator replicas differ across processes at step {step} "
                              f"(checksums {sums.tolist()}); DDP lost synchronisation.")
    # Full tensors on the main process (collective gathers when sharded), then one writer.
    main = accelerator.is_main_process
    generator = gather_full(gen_bare.state_dict(), main)
    assistant = gather_full(ck.trainable_state(psi_bare, psi_names), main)
    ema_full = gather_full(ema, main) if ema is not None else None
    opt_states = {k: full_optimizer_state(opt, main) for k, opt in optimizers.items()}
    if main:
        state = {"config": cfg.to_dict(), "world_size": accelerator.num_processes, "fsdp": _sharded(gen_bare),
                 "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None}
        ck.save_checkpoint(run_dir, step, generator=generator, assistant=assistant, ema=ema_full,
                           optimizers=opt_states, rng_states=states, state=state)
    accelerator.wait_for_everyone()


def _sharded(module) -> bool:
    return any(is_sharded(p) for p in module.parameters())


def _export_step(export: Path) -> int | None:
    from evalsuite.models.loading import RECIPE_FILE
    f = export / RECIPE_FILE
    try:
        return json.loads(f.read_text())["training"]["step"] if f.exists() else None
    except (OSError, ValueError, KeyError, TypeError):  # damaged: export again
        return None


def _recorded_ms(run_dir: Path) -> float:
    path = run_dir / "stats.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]).get("ms_per_step", math.nan) if lines else math.nan
