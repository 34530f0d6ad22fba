"""The one DI* training loop (Algorithm 1, docs/maths.md), for every world: K_TA assistant DSM
steps on detached generator samples, then one generator step on L = L_rew + L_cfg + L_reg.
Baselines (Diff-Instruct, DI++, SIM) are the same loop with other `objective` settings
(di_star.presets).

The loop knows nothing about backbones: a world (di_star.world; toy worlds in di_star.toy, the
Stable Diffusion ones in di_star.sdxl) hands it the three networks behind the score interface
(di_star.scores), its samplers, a differentiable reward, the loop's settings (`LoopOptions`:
mixed precision, optimizer, gradient accumulation and clipping, FSDP) and its per-step and
export hooks. Everything else is here, once: accelerate (DDP, or FSDP over processes of
`accelerate launch`), the EMA, the NaN guard, stats.jsonl, checkpoints (di_star.checkpoint),
the resume check, the progress bar and SIGINT / SIGTERM.

Run directory (to resume, rerun the same command):
  config.json        the TrainConfig; a resumed run must match it (max_steps may grow)
  stats.jsonl        one line per `log_every` generator steps (cut back to the checkpoint on resume)
  ckpt-XXXXXXX/      the newest complete checkpoint (di_star.checkpoint); latest.json -> it
  metrics.json       final evaluation of the generator (EMA weights when ema > 0)
  + the world's export: generator.safetensors (toy worlds), export/ (a diffusers pipeline), and
    the SD worlds' tb/, samples/, eval/ (di_star.sdxl.world)

Batch sizes: `optim.batch_size` samples per process per micro-batch; one optimizer step sees
batch_size x grad_accum x processes samples (both networks).
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from di_star import checkpoint as ck
from di_star.config import TrainConfig, check_trainable, from_dict
from di_star.errors import DistarError, NonFiniteLossError
from di_star.losses import (assistant_dsm_loss, check_finite, distance, explicit_reward_loss, implicit_cfg_reward_loss,
                            kl_regularizer_loss, score_regularizer_loss)
from di_star.noise import weight_fn
from di_star.scores import CFGScore, ScoreModel
from di_star.world import LoopOptions, RunContext, World, WorldModels, load_worlds
from distar.core import atomic
from distar.core.errors import read_json_file
from distar.core.progress import ProgressBar
from distar.core.runlock import remove_dead_temps

__all__ = ["train", "TrainResult", "WORLDS", "World", "WorldModels", "EVAL_SEED", "assistant_step",
           "generator_terms", "make_world", "make_accelerator", "make_optimizer", "check_same_run",
           "make_run_dir", "truncate_stats"]

EVAL_SEED = 2024  # every method is evaluated on the same z, so differences are the methods'
WORLDS = load_worlds()  # every world module imported: each registers itself (di_star.world)


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    metrics: dict[str, float]
    ms_per_step: float          # wall time of one generator step incl. its K assistant steps
    wall_s: float
    cpu_ms_per_step: float = math.nan   # process CPU time per step: robust to a shared machine


def make_world(cfg: TrainConfig, device=None) -> World:
    """The registered world `cfg.world.name`, built from the config."""
    return WORLDS.get(cfg.world.name)(cfg, device)


def to_device(obj: Any, device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


# The run directory: one config per run, dead processes' temp files removed, stats cut back.

_FREE_ON_RESUME = (("run", "max_steps"), ("run", "log_every"), ("run", "ckpt_every"), ("world", "eval_samples"))


def check_same_run(run_dir: Path, cfg: TrainConfig) -> None:
    """A run dir belongs to one config. What does not change the training trajectory may differ:
    max_steps (train a run for longer), the log / checkpoint intervals and the eval sample count."""
    path = run_dir / "config.json"
    if not path.exists():
        return
    old = from_dict(read_json_file(path, f"restore {path} from a copy, or pass a new --out "
                                         "(or delete that directory) to start over")).to_dict()
    new = cfg.to_dict()
    for section, key in _FREE_ON_RESUME:
        old[section][key] = new[section][key]
    if old != new:
        diff = [f"{s}.{k}" for s in new if isinstance(new[s], dict)
                for k in new[s] if old[s].get(k) != new[s][k]] + \
               [s for s in new if not isinstance(new[s], dict) and old[s] != new[s]]
        raise DistarError(f"{run_dir} holds a run with a different config ({', '.join(diff)}). "
                          "Fix: pass a new --out, or delete that directory to start over.")


def make_run_dir(out: Path) -> Path:
    """The run directory, created; temp files and folders of dead processes in it removed
    (pid-checked: an unfinished checkpoint, export or pointer)."""
    run_dir = Path(out)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DistarError(f"Cannot create the run directory {run_dir} ({e.strerror}). "
                          "Fix: pick a writable --out.") from None
    remove_dead_temps(run_dir, ".*.tmp")
    return run_dir


def truncate_stats(path: Path, step: int) -> None:
    """Drop stats lines written after the checkpoint we resume from, so none appear twice."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text().splitlines():
        try:
            if json.loads(ln)["step"] <= step:
                keep.append(ln)
        except (ValueError, KeyError, TypeError):  # blank, or cut short by a kill mid-append
            continue
    atomic.write_bytes(path, ("\n".join(keep) + ("\n" if keep else "")).encode())


class StatsWriter:
    """Running means of the logged scalars, one stats.jsonl line per `log_every` steps (main
    process), also sent to the accelerate trackers when there are any. Lines after the step a
    run resumes from are dropped first."""

    def __init__(self, path: Path, accelerator, trackers: bool, resume_step: int):
        self.path, self.accelerator, self.trackers = path, accelerator, trackers
        self.saved = path.with_name(".stats_window.json")
        self.window: dict[str, list[float]] = self._windows().get(str(resume_step), {}) \
            if resume_step else {}
        if accelerator.is_main_process:
            truncate_stats(path, resume_step)

    def _windows(self) -> dict:
        try:
            data = json.loads(self.saved.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def save_window(self, step: int) -> None:
        """Keep the steps logged since the last stats line with checkpoint `step` (call before
        writing it), so a run resumed there averages the same steps as one that never
        stopped. The last three checkpoints' windows are kept: whichever is in force after a
        kill mid-save finds its own."""
        if not self.accelerator.is_main_process:
            return
        windows = self._windows()
        windows[str(step)] = self.window
        keep = sorted(windows, key=int)[-3:]
        atomic.write_text(self.saved, json.dumps({k: windows[k] for k in keep}))

    def add(self, key: str, value: float) -> None:
        self.window.setdefault(key, []).append(value)

    def write(self, step: int, **extra: float) -> None:
        line = {"step": step, **{k: sum(v) / len(v) for k, v in self.window.items()}, **extra,
                "time": time.time()}
        self.window = {}
        if self.accelerator.is_main_process:
            with open(self.path, "a") as f:
                f.write(json.dumps(line) + "\n")
        if self.trackers:
            self.accelerator.log({f"train/{k}": v for k, v in line.items() if k not in ("step", "time")}, step=step)


class EMA:
    """Exponential moving average of the generator's weights (fp32), the weights evaluated and
    exported at the end. Non-float buffers are copied."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone().float() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for k, v in module.state_dict().items():
            self.state[k].lerp_(v.detach().float(), 1 - self.decay) if v.is_floating_point() \
                else self.state[k].copy_(v)


def stopped_error(err: NonFiniteLossError, step: int, run_dir: Path) -> NonFiniteLossError:
    latest = run_dir / ck.LATEST
    where = (f"the last good checkpoint is step {json.loads(latest.read_text())['step']} in {run_dir} "
             "(rerunning the same command resumes from it)") if latest.exists() else \
        "no checkpoint had been written yet"
    err.args = (f"Training stopped at generator step {step + 1}: {err.args[0]}\nNothing was saved after "
                f"the blow-up; {where}.",)
    return err


def nan_guard(accelerator, terms: dict[str, Tensor], step: int, run_dir: Path) -> None:
    """Stop on every process if any process has a non-finite term, naming the terms and the last
    good checkpoint. Runs before the backward, so nothing non-finite is applied or saved."""
    reduce = (lambda bad: accelerator.reduce(bad.to(accelerator.device), "sum")) \
        if accelerator.num_processes > 1 else None
    try:
        check_finite(terms, reduce)
    except NonFiniteLossError as e:
        raise stopped_error(e, step, run_dir) from None


# accelerate and the optimizers.

def make_accelerator(options: LoopOptions, run_dir: Path):
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType

    # accelerate keeps one state per process and refuses a second mixed-precision setting; a single
    # process that trains several runs (a notebook, the tests) starts each from a fresh state.
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != options.mixed_precision and PartialState().num_processes == 1:
        AcceleratorState._reset_state()
    # Without CUDA, processes from `accelerate launch --multi_gpu` only form a (gloo) group when
    # told to use the CPU.
    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=options.mixed_precision,
                      log_with=options.log_with, project_dir=str(run_dir),
                      kwargs_handlers=[DistributedDataParallelKwargs(gradient_as_bucket_view=True)])
    if acc.distributed_type not in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
        raise DistarError(
            f"accelerate launched with distributed_type {acc.distributed_type}. The trainer is launched "
            "as plain multi-GPU processes and shards its two trained UNets itself when the training "
            "config says sd.fsdp = true (preset di_star_sdxl_fsdp): accelerate's FSDP / DeepSpeed "
            "plugins wrap one model per optimizer and cannot run DI*'s frozen-assistant generator step. "
            "Fix: `accelerate launch --config_file configs/accelerate/fsdp_1node_8gpu.yaml` (or "
            "ddp_1node_8gpu.yaml) with --preset di_star_sdxl_fsdp (docs/training.md).")
    return acc


def make_optimizer(params, lr: float, betas: tuple[float, float], weight_decay: float, kind: str):
    """Adam (the toy worlds'), AdamW, or bitsandbytes' 8-bit AdamW."""
    params = list(params)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise DistarError("sd.optimizer = 'adamw8bit' needs bitsandbytes, which is not installed. "
                          "Fix: `pip install bitsandbytes` (CUDA machines), or use sd.optimizer = 'adamw'.") from None
    return bnb.optim.AdamW8bit(params, lr=lr, betas=betas, weight_decay=weight_decay)


def grad_step(accelerator, opt, params: list[Tensor], max_norm: float, name: str, step: int,
              run_dir: Path) -> float:
    """Clip (when asked; x1.0 otherwise, bit-exact), check the gradient is finite, step, clear.
    Returns the gradient norm."""
    from di_star.sdxl.sharding import is_sharded
    norm = accelerator.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
    norm = float(norm.full_tensor() if is_sharded(norm) else norm)
    if not math.isfinite(norm) and accelerator.scaler is None:  # fp16's scaler skips such steps itself
        raise stopped_error(NonFiniteLossError([f"{name} gradient"]), step, run_dir)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return norm


# The two half-steps of Algorithm 1.

def assistant_step(world: World, s_psi: ScoreModel, gen: nn.Module, cfg: TrainConfig, rng, device,
                   lam: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    """DSM on detached generator samples: lambda(t) |s_psi(x_t) - grad log p_t(x_t | x0)|^2."""
    b = cfg.optim.batch_size
    cond = to_device(world.sample_cond(b, rng), device)
    z = world.sample_z(b, rng).to(device)
    t = world.sample_t(b, rng).to(device)
    with torch.no_grad():
        x0 = gen(z, cond)
    eps = world.sample_eps(x0, rng).to(device)
    return {"assistant_dsm": assistant_dsm_loss(s_psi, x0, t, eps, world.schedule, cond, lam(t))}


def generator_terms(world: World, gen: nn.Module, s_psi: ScoreModel, s_ref: ScoreModel, cfg: TrainConfig,
                    rng, device, w: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    """The per-sample terms of L_DI* = L_rew + L_cfg + L_reg on fresh generator samples."""
    o = cfg.objective
    b = cfg.optim.batch_size
    cond = to_device(world.sample_cond(b, rng), device)
    z = world.sample_z(b, rng).to(device)
    t = world.sample_t(b, rng).to(device)
    x0 = gen(z, cond)
    eps = world.sample_eps(x0, rng).to(device)
    wt = w(t)
    terms: dict[str, Tensor] = {}
    if o.alpha_rew > 0:
        terms["L_rew"] = explicit_reward_loss(world.reward(x0, cond), o.alpha_rew)
    if o.guidance == "out":  # Choice 1: implicit CFG reward
        x_t = world.schedule.perturb(x0, t, eps)
        terms["L_cfg"] = implicit_cfg_reward_loss(x_t, t, s_ref, cond, world.null_cond, o.alpha_cfg,
                                                  weight_fn(o.w_cfg, world.schedule)(t))
    # Choice 2: the regulariser pulls towards the CFG-guided reference instead of the plain one.
    s_target = CFGScore(s_ref, o.alpha_cfg, world.null_cond) if o.guidance == "in" else s_ref
    if o.regulariser == "score":
        dist = distance(o.distance, o.huber_c if o.distance == "pseudo_huber" else None)
        terms["L_reg"] = score_regularizer_loss(x0, t, eps, s_psi, s_target, world.schedule, cond, dist,
                                                o.estimator, wt, distance_space=o.distance_space)
    elif o.regulariser == "kl":
        terms["L_reg"] = kl_regularizer_loss(x0, t, eps, s_psi, s_target, world.schedule, cond, wt)
    return terms


# SIGINT / SIGTERM: finish the step, write a checkpoint, stop as the signal would have.

class StopSignal:
    """While active (main thread only), the first SIGINT or SIGTERM is recorded instead of
    killing the run: the loop checkpoints at the end of the step and then raises
    KeyboardInterrupt (SIGINT; the CLI exits 130) or SystemExit(143) (SIGTERM). A second signal
    acts at once, as it would without the loop."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum
        self._restore()  # the next one stops at once

    def _restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def __exit__(self, *exc):
        self._restore()

    def agreed(self, accelerator) -> int | None:
        """The signal any process received (every process must stop at the same step: the
        checkpoint is collective)."""
        if accelerator.num_processes == 1:
            return self.received
        got = torch.tensor([float(self.received or 0)], device=accelerator.device)
        return int(accelerator.gather(got).max().item()) or None

    @staticmethod
    def stop(signum: int, step: int, run_dir: Path, talk: bool):
        message = (f"{signal.Signals(signum).name}: stopped after step {step}, checkpoint written in "
                   f"{run_dir}; rerun the same command to resume")
        if signum == signal.SIGINT:
            raise KeyboardInterrupt(message)
        if talk:
            sys.stderr.write(message + "\n")
        raise SystemExit(128 + signum)


# The loop.

def train(cfg: TrainConfig, out: Path, *, world: World | None = None,
          progress: bool = True) -> TrainResult:
    """Run (or resume) one DI* training run in `out`, evaluate and export the final generator.
    Per-step extras belong to the world (`after_step`; tests/loop_hooks.py interrupts a run
    through it)."""
    check_trainable(cfg)
    o, opt_cfg, run = cfg.objective, cfg.optim, cfg.run
    run_dir = make_run_dir(out)
    if world is None:
        factory = WORLDS.get(cfg.world.name)   # an unknown world: one error, before anything starts
    options = world.options if world is not None else factory.options(cfg)
    accelerator = make_accelerator(options, run_dir)
    if accelerator.is_main_process:
        check_same_run(run_dir, cfg)
        atomic.write_bytes(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=1).encode())
    accelerator.wait_for_everyone()

    device = accelerator.device
    world = world or factory(cfg, device)
    built_for = getattr(world, "device", None)  # a world that places its own networks (the SD ones)
    if built_for is not None and (built_for.type, built_for.index or 0) != (device.type, device.index or 0):
        raise DistarError(f"The world was built for {built_for} but this process trains on {device}. "
                          f"Fix: build it with the accelerator's device, or pass no world.")
    torch.manual_seed(run.seed)  # module initialisations (a LoRA's) are a function of the seed
    models = world.build()
    for m in models.frozen:  # the reference never trains; `exact` still backprops through its inputs
        m.requires_grad_(False).eval().to(device)
    gen, assistant = models.generator.to(device), models.assistant.to(device)
    # The assistant's trainable parameters (all of them, or a LoRA's adapters), named once here:
    # the half-steps toggle requires_grad.
    psi_names = {n for n, p in assistant.named_parameters() if p.requires_grad}
    if len(psi_names) == len(list(assistant.parameters())):
        psi_names = None
    # FSDP shards the generator and a fully trained assistant; a LoRA assistant (small, over a
    # frozen base) stays data-parallel. With one process there is nothing to shard over.
    if options.shard is not None and accelerator.num_processes > 1:
        gen = options.shard(gen, device.type, options.shard_dtype)
        if psi_names is None:
            assistant = options.shard(assistant, device.type, options.shard_dtype)
    elif options.shard is not None:
        accelerator.print("sd.fsdp = true with one process: training unsharded")
    psi_params = [p for p in assistant.parameters() if p.requires_grad]
    betas = (opt_cfg.beta1, opt_cfg.beta2)
    opt_g = make_optimizer(gen.parameters(), opt_cfg.lr_g, betas, options.weight_decay, options.optimizer)
    opt_psi = make_optimizer(psi_params, opt_cfg.lr_psi, betas, options.weight_decay, options.optimizer)
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
    ema = EMA(gen_bare, run.ema) if run.ema > 0 else None
    optimizers = {"opt_g": opt_g, "opt_psi": opt_psi}
    for opt in optimizers.values():  # a world's networks may come with gradients of their own training
        opt.zero_grad(set_to_none=True)

    # One CPU generator per process for every random draw: a run is a function of its seed.
    rng = torch.Generator().manual_seed(run.seed * 1000 + accelerator.process_index)
    step = ck.restore_run_state(accelerator, run_dir, run.seed, gen_bare, psi_bare, psi_names,
                                ema.state if ema else None, optimizers, rng)
    stats = StatsWriter(run_dir / "stats.jsonl", accelerator, options.log_with is not None, resume_step=step)
    if options.log_with is not None:
        accelerator.init_trackers("tb", config=_flat(cfg.to_dict()),
                                  init_kwargs={"tensorboard": {"purge_step": step + 1}} if step else {})
    lam, w = weight_fn(o.lam, world.schedule), weight_fn(o.w, world.schedule)
    k_ta = opt_cfg.assistant_steps_per_g_step if o.regulariser != "none" else 0
    accum = options.grad_accum
    ctx = RunContext(cfg, run_dir, accelerator, gen_bare)

    def no_sync(model, micro: int):
        return accelerator.no_sync(model) if micro < accum - 1 else contextlib.nullcontext()

    def save(at: int) -> None:
        stats.save_window(at)
        ck.save_run_state(accelerator, run_dir, at, cfg.to_dict(), gen_bare, psi_bare, psi_names,
                          ema.state if ema else None, optimizers, rng)

    t_start, steps_timed, loop_s, loop_cpu, signum = time.time(), 0, 0.0, 0.0, None
    bar = ProgressBar(cfg.preset or world.name, run.max_steps, unit="steps", completed=step,
                      disable=not (progress and accelerator.is_main_process))
    try:
        with StopSignal() as stop:
            while step < run.max_steps:
                t0, c0 = time.perf_counter(), time.process_time()
                # Assistant: K_TA DSM steps on detached generator samples, generator frozen.
                for p in psi_params:
                    p.requires_grad_(True)
                for _ in range(k_ta):
                    for micro in range(accum):
                        with no_sync(assistant, micro):
                            with accelerator.autocast():
                                terms = assistant_step(world, s_psi_train, gen, cfg, rng, device, lam)
                            nan_guard(accelerator, terms, step, run_dir)
                            accelerator.backward(terms["assistant_dsm"].mean() / accum)
                        stats.add("assistant_dsm", terms["assistant_dsm"].mean().item())
                    stats.add("grad_norm_psi", grad_step(accelerator, opt_psi, psi_params, options.max_grad_norm,
                                                         "assistant", step, run_dir))
                # Generator: one step on L_rew + L_cfg + L_reg, assistant frozen.
                for p in psi_params:
                    p.requires_grad_(False)
                for micro in range(accum):
                    with no_sync(gen, micro):
                        with accelerator.autocast():
                            terms = generator_terms(world, gen, s_psi_frozen, s_ref, cfg, rng, device, w)
                        nan_guard(accelerator, terms, step, run_dir)
                        accelerator.backward(sum(v.mean() for v in terms.values()) / accum)
                    for k, v in terms.items():
                        stats.add(k, v.mean().item())
                    if "L_rew" in terms:
                        stats.add("reward", -terms["L_rew"].mean().item() / o.alpha_rew)
                stats.add("grad_norm_g", grad_step(accelerator, opt_g, theta_params, options.max_grad_norm,
                                                   "generator", step, run_dir))
                if ema is not None:  # Update EMA.
                    ema.update(gen_bare)
                step += 1
                loop_s += time.perf_counter() - t0
                loop_cpu += time.process_time() - c0
                steps_timed += 1
                bar.update(step)

                if step % run.log_every == 0 or step == run.max_steps:
                    extra = {"ms_per_step": 1000 * loop_s / steps_timed, "cpu_ms_per_step": 1000 * loop_cpu / steps_timed,
                             "world_size": accelerator.num_processes}
                    if device.type == "cuda":
                        extra["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                    stats.write(step, **extra)
                signum = stop.agreed(accelerator)
                checkpoint = step % run.ckpt_every == 0 or step == run.max_steps
                if checkpoint or signum:
                    save(step)
                scores = world.after_step(ctx, step)
                if scores and options.log_with is not None:
                    accelerator.log(scores, step=step)
                if signum:
                    break
    except BaseException:
        for tracker in accelerator.trackers:  # flush what was logged up to the stop
            tracker.finish()
        raise
    finally:
        bar.close()
    if signum:  # after the bar's last line, so the resume hint is the last thing printed
        for tracker in accelerator.trackers:
            tracker.finish()
        StopSignal.stop(signum, step, run_dir, accelerator.is_main_process)

    # The final generator (EMA weights when on): evaluated on fixed seeds, exported.
    if ema is not None:
        gen_bare.load_state_dict(ema.state)
    gen_bare.eval()
    ms = 1000 * loop_s / steps_timed if steps_timed else _recorded(run_dir, "ms_per_step")
    cpu_ms = 1000 * loop_cpu / steps_timed if steps_timed else _recorded(run_dir, "cpu_ms_per_step")
    metrics = world.evaluate(gen_bare, cfg.world.eval_samples, EVAL_SEED)  # every process: may be collective
    exported = world.export(ctx, step)
    if accelerator.is_main_process:
        atomic.write_bytes(run_dir / "metrics.json", json.dumps(
            {"step": step, "ms_per_step": ms, "cpu_ms_per_step": cpu_ms, "metrics": metrics,
             "preset": cfg.preset, **exported}, indent=1).encode())
    accelerator.wait_for_everyone()
    accelerator.end_training()  # closes the trackers and (accelerate >= 1.x) the process group
    return TrainResult(run_dir, step, metrics, ms, time.time() - t_start, cpu_ms)


def _sharded(module: nn.Module) -> bool:
    from di_star.sdxl.sharding import is_sharded
    return any(is_sharded(p) for p in module.parameters())


def _flat(d: dict, prefix: str = "") -> dict:
    """A nested config as flat 'section.key' scalars (tracker hyperparameters)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def _recorded(run_dir: Path, key: str) -> float:
    """A timing of a run that was already complete: the last stats line's running average
    (of the session that finished it)."""
    path = run_dir / "stats.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]).get(key, math.nan) if lines else math.nan
