"""The DI* training loop (Algorithm 1): K assistant DSM steps on detached generator samples, then
one generator step on L = L_rew + L_cfg + L_reg. Baselines (Diff-Instruct, DI++, SIM) are the
same loop with other `objective` settings (di_star.presets).

The loop knows nothing about backbones: a `World` adapter hands it the three networks behind the
score interface (di_star.scores), a prompt/noise sampler and a differentiable reward. The toy
worlds live in di_star.toy; an SDXL world plugs in the same way.

Run directory (to resume, rerun the same command):
  config.json        the TrainConfig; a resumed run must match it (max_steps may grow)
  stats.jsonl        one line per `log_every` generator steps
  ckpt-XXXXXXX.*     safetensors (weights, Adam state, EMA, RNG) + json (step, config)
  latest.json        points at the newest complete checkpoint; written last, atomically
  metrics.json       final evaluation of the generator (EMA weights when ema > 0)
  generator.safetensors  the final generator weights, for evaluation harnesses
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from di_star.config import TrainConfig, from_dict
from di_star.errors import DistarError, NonFiniteLossError
from di_star.losses import (assistant_dsm_loss, check_finite, distance, explicit_reward_loss,
                            implicit_cfg_reward_loss, kl_regularizer_loss, score_regularizer_loss)
from di_star.noise import NoiseSchedule, weight_fn
from di_star.scores import CFGScore, ScoreModel
from distar.core import atomic
from distar.core.progress import ProgressBar
from distar.core.errors import read_json_file
from distar.core.registry import Registry
from distar.core.runlock import remove_dead_temps


# The World protocol: what a backbone adapter gives the loop.

@dataclass
class WorldModels:
    generator: nn.Module                          # g_theta(z, cond) -> x0; trained
    assistant: nn.Module                          # the parameters psi behind s_psi; trained
    make_assistant_score: Callable[[nn.Module], ScoreModel]   # module -> s_psi(x_t, t, cond)
    reference_score: ScoreModel                   # frozen s_ref(x_t, t, cond); cond=null_cond -> unconditional
    frozen: list[nn.Module] = field(default_factory=list)     # modules behind s_ref / the reward


class World(Protocol):
    name: str
    schedule: NoiseSchedule          # x_t = alpha(t) x0 + sigma(t) eps
    null_cond: Any                   # the "empty prompt" condition for CFG

    def build(self) -> WorldModels: ...
    # Samplers draw on the CPU from the loop's one torch.Generator (so a run is a function of
    # its seed, and a resumed run continues the same stream); the loop moves them to the device.
    def sample_cond(self, batch: int, generator: torch.Generator) -> Any: ...
    def sample_z(self, batch: int, generator: torch.Generator) -> Tensor: ...
    def sample_t(self, batch: int, generator: torch.Generator) -> Tensor: ...
    def sample_eps(self, like: Tensor, generator: torch.Generator) -> Tensor: ...
    def reward(self, x0: Tensor, cond: Any) -> Tensor: ...            # differentiable, [B]
    def evaluate(self, generator: nn.Module, n: int, seed: int) -> dict[str, float]: ...


def _gmm_world(cfg: TrainConfig) -> World:
    from di_star.toy.gmm import GMMWorld
    return GMMWorld(sigma_mean=cfg.objective.sigma_mean, sigma_std=cfg.objective.sigma_std,
                    recipe_scale=cfg.world.recipe_scale)


def _digits_world(cfg: TrainConfig) -> World:
    from di_star.toy.digits import DigitsRecipe, DigitsWorld
    return DigitsWorld(DigitsRecipe().scaled(cfg.world.recipe_scale),
                       sigma_mean=cfg.objective.sigma_mean, sigma_std=cfg.objective.sigma_std)


WORLDS: Registry[Callable[[TrainConfig], World]] = Registry("world")
WORLDS.add("gmm", _gmm_world, "2-D class-conditional Gaussian mixtures, exact scores")
WORLDS.add("digits", _digits_world, "sklearn 8x8 digits, small cached reference diffusion")


# Stable Diffusion worlds ('sdxl', 'sd15') train in di_star.sdxl.train (DDP, autocast, EMA,
# export), which builds its SDWorld itself; train() dispatches there before WORLDS is asked.

EVAL_SEED = 2024  # every method is evaluated on the same z, so differences are the methods'


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    metrics: dict[str, float]
    ms_per_step: float          # wall time of one generator step incl. its K assistant steps
    wall_s: float
    cpu_ms_per_step: float = math.nan   # process CPU time per step: robust to a shared machine


def to_device(obj: Any, device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


# Checkpoints: tensors in safetensors, everything else in json, both atomic.

def optimizer_tensors(prefix: str, sd: dict) -> tuple[dict[str, Tensor], dict]:
    """Split an optimizer state dict (`opt.state_dict()`) into tensors (safetensors) and plain
    data (json)."""
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        meta["state"][str(idx)] = {}
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"{prefix}.{idx}.{k}"] = v
            else:
                meta["state"][str(idx)][k] = v
    return tensors, meta


def optimizer_state(prefix: str, tensors: dict[str, Tensor], meta: dict) -> dict:
    """Inverse of optimizer_tensors: the state dict for `opt.load_state_dict`."""
    state = {}
    for idx, extra in meta["state"].items():
        st = dict(extra)
        head = f"{prefix}.{idx}."
        st.update({k[len(head):]: v for k, v in tensors.items() if k.startswith(head)})
        state[int(idx)] = st
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir: Path, step: int, cfg: TrainConfig, gen: nn.Module, assistant: nn.Module,
                    opt_g, opt_psi, ema: dict[str, Tensor] | None, rng: torch.Generator) -> Path:
    tensors = {f"generator.{k}": v for k, v in gen.state_dict().items()}
    tensors.update({f"assistant.{k}": v for k, v in assistant.state_dict().items()})
    t_g, m_g = optimizer_tensors("opt_g", opt_g.state_dict())
    t_p, m_p = optimizer_tensors("opt_psi", opt_psi.state_dict())
    tensors.update(t_g)
    tensors.update(t_p)
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.items()})
    tensors["rng"] = rng.get_state()
    name = f"ckpt-{step:07d}"
    atomic.save_tensors(tensors, run_dir / f"{name}.safetensors")
    meta = {"step": step, "config": cfg.to_dict(), "opt_g": m_g, "opt_psi": m_p}
    atomic.write_bytes(run_dir / f"{name}.json", json.dumps(meta).encode())
    # The pointer is written last: a kill at any moment leaves the previous checkpoint in force.
    atomic.write_bytes(run_dir / "latest.json", json.dumps({"step": step, "name": name}).encode())
    for old in run_dir.glob("ckpt-*"):
        if not old.name.startswith(name):
            old.unlink(missing_ok=True)
    return run_dir / f"{name}.safetensors"


def load_checkpoint(run_dir: Path, gen: nn.Module, assistant: nn.Module, opt_g, opt_psi,
                    ema: dict[str, Tensor] | None, rng: torch.Generator) -> int:
    """Restore everything a run's future depends on; returns the step, 0 when there is none.
    A damaged pointer or checkpoint raises one DistarError naming the file and the fix."""
    latest = run_dir / "latest.json"
    if not latest.exists():
        return 0
    found = sorted(p.stem for p in run_dir.glob("ckpt-*.safetensors") if p.with_suffix(".json").exists())
    fix = f"delete {latest} to start over" + (
        f", or point it at {found[-1]}: {{\"step\": {int(found[-1][5:])}, \"name\": \"{found[-1]}\"}}"
        if found else "")
    name = read_json_file(latest, fix).get("name")
    if not isinstance(name, str) or "/" in name or not name.startswith("ckpt-"):
        raise DistarError(f"{latest} is damaged (name = {name!r}). Fix: {fix}.")
    for f in (run_dir / f"{name}.safetensors", run_dir / f"{name}.json"):
        if not f.exists():
            raise DistarError(f"{latest} points at {f.name}, which is missing. Fix: {fix}.")
    try:
        tensors = load_file(str(run_dir / f"{name}.safetensors"))
        meta = json.loads((run_dir / f"{name}.json").read_text())
        return _restore(tensors, meta, gen, assistant, opt_g, opt_psi, ema, rng)
    except Exception as e:  # noqa: BLE001 - truncated safetensors, bad json, wrong shapes, ...
        raise DistarError(
            f"Checkpoint {run_dir / name}.safetensors/.json is damaged ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}). Fix: delete {latest} and "
            f"{name}.* to start this run over, or restore them from a copy.") from None


def _restore(tensors: dict[str, Tensor], meta: dict, gen: nn.Module, assistant: nn.Module, opt_g, opt_psi,
             ema: dict[str, Tensor] | None, rng: torch.Generator) -> int:
    gen.load_state_dict({k[len("generator."):]: v for k, v in tensors.items() if k.startswith("generator.")})
    assistant.load_state_dict({k[len("assistant."):]: v for k, v in tensors.items() if k.startswith("assistant.")})
    opt_g.load_state_dict(optimizer_state("opt_g", tensors, meta["opt_g"]))
    opt_psi.load_state_dict(optimizer_state("opt_psi", tensors, meta["opt_psi"]))
    if ema is not None:
        for k in ema:
            ema[k].copy_(tensors[f"ema.{k}"])
    rng.set_state(tensors["rng"])
    return int(meta["step"])


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
    """The run directory, created; temp files of dead processes in it removed (pid-checked)."""
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


def stopped_error(err: NonFiniteLossError, step: int, run_dir: Path) -> NonFiniteLossError:
    latest = run_dir / "latest.json"
    where = (f"the last good checkpoint is step {json.loads(latest.read_text())['step']} in {run_dir} "
             "(rerunning the same command resumes from it)") if latest.exists() else \
        "no checkpoint had been written yet"
    err.args = (f"Training stopped at generator step {step + 1}: {err.args[0]}\nNothing was saved after "
                f"the blow-up; {where}.",)
    return err


def train(cfg: TrainConfig, out: Path, *, world: World | None = None, progress: bool = True,
          on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Run (or resume) one DI* training run in `out` and evaluate the final generator.
    `on_step(step, stats)` is called after every generator step (tests use it to interrupt)."""
    if cfg.world.name in ("sdxl", "sd15"):  # the same algorithm, with what 2.6B UNets need around it
        from di_star.sdxl.train import train as train_sd
        return train_sd(cfg, out, world=world, progress=progress, on_step=on_step)
    from accelerate import Accelerator

    o, opt_cfg, run = cfg.objective, cfg.optim, cfg.run
    run_dir = make_run_dir(out)
    check_same_run(run_dir, cfg)
    atomic.write_bytes(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=1).encode())

    accelerator = Accelerator()
    device = accelerator.device
    world = world or WORLDS.get(cfg.world.name)(cfg)
    torch.manual_seed(run.seed)
    models = world.build()
    for m in models.frozen:  # the reference never trains; `exact` still backprops through its inputs
        m.requires_grad_(False).eval().to(device)
    gen, assistant = models.generator.to(device), models.assistant.to(device)
    betas = (opt_cfg.beta1, opt_cfg.beta2)
    opt_g = torch.optim.Adam(gen.parameters(), lr=opt_cfg.lr_g, betas=betas)
    opt_psi = torch.optim.Adam(assistant.parameters(), lr=opt_cfg.lr_psi, betas=betas)
    gen, assistant, opt_g, opt_psi = accelerator.prepare(gen, assistant, opt_g, opt_psi)
    # DSM goes through the prepared (possibly DDP-wrapped) assistant so its gradients sync; the
    # generator step uses the bare module, whose parameters are frozen then.
    s_psi_train = models.make_assistant_score(assistant)
    s_psi_frozen = models.make_assistant_score(accelerator.unwrap_model(assistant))
    s_ref = models.reference_score
    ema = {k: v.detach().clone() for k, v in accelerator.unwrap_model(gen).state_dict().items()} \
        if run.ema > 0 else None

    # One RNG for every random draw: a run is a function of its seed, per process.
    rng = torch.Generator().manual_seed(run.seed * 1000 + accelerator.process_index)
    step = load_checkpoint(run_dir, accelerator.unwrap_model(gen), accelerator.unwrap_model(assistant),
                           opt_g, opt_psi, ema, rng)
    stats_path = run_dir / "stats.jsonl"
    truncate_stats(stats_path, step)
    lam, w = weight_fn(o.lam, world.schedule), weight_fn(o.w, world.schedule)

    t_start, steps_timed, loop_s, loop_cpu = time.time(), 0, 0.0, 0.0
    window: dict[str, list[float]] = {}
    bar = ProgressBar(f"{cfg.preset or cfg.world.name}", run.max_steps, unit="steps", completed=step,
                      disable=not (progress and accelerator.is_main_process))
    try:
        while step < run.max_steps:
            t0, c0 = time.perf_counter(), time.process_time()
            # Assistant: K_TA DSM steps with the generator frozen.
            assistant.requires_grad_(True)
            for _ in range(opt_cfg.assistant_steps_per_g_step if o.regulariser != "none" else 0):
                terms = assistant_step(world, s_psi_train, gen, cfg, rng, device, lam)
                try:
                    check_finite(terms)
                except NonFiniteLossError as e:
                    raise stopped_error(e, step, run_dir) from None
                opt_psi.zero_grad(set_to_none=True)
                accelerator.backward(terms["assistant_dsm"].mean())
                opt_psi.step()
                window.setdefault("assistant_dsm", []).append(terms["assistant_dsm"].mean().item())
            # Generator: one step on L_rew + L_cfg + L_reg with the assistant frozen.
            assistant.requires_grad_(False)
            terms = generator_terms(world, gen, s_psi_frozen, s_ref, cfg, rng, device, w)
            try:
                check_finite(terms)
            except NonFiniteLossError as e:
                raise stopped_error(e, step, run_dir) from None
            loss = sum(v.mean() for v in terms.values())
            opt_g.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt_g.step()
            if ema is not None:  # Update EMA.
                with torch.no_grad():
                    for k, v in accelerator.unwrap_model(gen).state_dict().items():
                        ema[k].lerp_(v.detach(), 1 - run.ema) if v.is_floating_point() else ema[k].copy_(v)
            step += 1
            loop_s += time.perf_counter() - t0
            loop_cpu += time.process_time() - c0
            steps_timed += 1
            for k, v in terms.items():
                window.setdefault(k, []).append(v.mean().item())
            bar.update(step)
            if step % run.log_every == 0 or step == run.max_steps:
                line = {"step": step, **{k: sum(v) / len(v) for k, v in window.items()},
                        "ms_per_step": 1000 * loop_s / max(steps_timed, 1),
                        "cpu_ms_per_step": 1000 * loop_cpu / max(steps_timed, 1), "time": time.time()}
                window = {}
                if accelerator.is_main_process:
                    with open(stats_path, "a") as f:
                        f.write(json.dumps(line) + "\n")
            if (step % run.ckpt_every == 0 or step == run.max_steps) and accelerator.is_main_process:
                save_checkpoint(run_dir, step, cfg, accelerator.unwrap_model(gen),
                                accelerator.unwrap_model(assistant), opt_g, opt_psi, ema, rng)
            if on_step is not None:
                on_step(step, {k: v.mean().item() for k, v in terms.items()})
    finally:
        bar.close()

    # Evaluate the final generator (EMA weights when on) on fixed eval seeds.
    final = accelerator.unwrap_model(gen)
    if ema is not None:
        final.load_state_dict(ema)
    final.eval()
    metrics = world.evaluate(final, cfg.world.eval_samples, EVAL_SEED)
    ms = 1000 * loop_s / steps_timed if steps_timed else _recorded(run_dir, "ms_per_step")
    cpu_ms = 1000 * loop_cpu / steps_timed if steps_timed else _recorded(run_dir, "cpu_ms_per_step")
    result = TrainResult(run_dir, step, metrics, ms, time.time() - t_start, cpu_ms)
    if accelerator.is_main_process:
        atomic.save_tensors(final.state_dict(), run_dir / "generator.safetensors")
        atomic.write_bytes(run_dir / "metrics.json", json.dumps(
            {"step": step, "ms_per_step": ms, "cpu_ms_per_step": cpu_ms, "metrics": metrics, "preset": cfg.preset},
            indent=1).encode())
    return result


def _recorded(run_dir: Path, key: str) -> float:
    """A timing of a run that was already complete: the last stats line's running average
    (of the session that finished it)."""
    path = run_dir / "stats.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1]).get(key, math.nan) if lines else math.nan
