"""What a world (something DI* trains on) gives the one training loop (di_star.trainer), and the
registry the loop finds worlds in. A world registers itself, in the module that defines it:

    WORLDS.add("gmm", GMMWorld.from_config, "2-D class-conditional Gaussian mixtures, ...")

where the entry builds the world from a TrainConfig (and the device the process trains on).
The loop asks the world for its networks (`build`), batches (`sample_cond / z / t / eps`), the
reward, the settings of the loop around them (`options`), per-step extras (`after_step`) and the
final export (`export`); the loss terms and the alternating updates are the loop's, the same for
every world (docs/maths.md). This module imports nothing heavy: listing worlds loads none.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from distar.core.registry import Registry, resolve_ref

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from di_star.config import TrainConfig
    from di_star.noise import NoiseSchedule
    from di_star.scores import ScoreModel


@dataclass
class WorldModels:
    generator: "nn.Module"                        # g_theta(z, cond) -> x0; trained
    assistant: "nn.Module"                        # the parameters psi behind s_psi; trained (a LoRA's: only its adapters)
    make_assistant_score: Callable[["nn.Module"], "ScoreModel"]   # module -> s_psi(x_t, t, cond)
    reference_score: "ScoreModel"                 # frozen s_ref(x_t, t, cond); cond=null_cond -> unconditional
    frozen: list["nn.Module"] = field(default_factory=list)       # modules behind s_ref / the reward


@dataclass(frozen=True)
class LoopOptions:
    """How the loop runs around a world's networks. The defaults are the toy worlds': one fp32
    process, Adam, no accumulation, no clipping, no trackers. The SD worlds fill them from the
    config's [sd] section (di_star.sdxl.world)."""
    mixed_precision: str = "no"        # accelerate's autocast: 'no' | 'bf16' | 'fp16'
    log_with: str | None = None        # accelerate tracker: 'tensorboard' | 'wandb' | None
    optimizer: str = "adam"            # 'adam' | 'adamw' | 'adamw8bit' (bitsandbytes)
    weight_decay: float = 0.0          # AdamW's (decoupled)
    max_grad_norm: float = 0.0         # gradient clipping of both networks; 0 = off
    grad_accum: int = 1                # micro-batches of optim.batch_size per optimizer step
    # Shards a trained module over the processes (FSDP2), or None: never sharded.
    shard: Callable[["nn.Module", str, "torch.dtype | None"], "nn.Module"] | None = None
    shard_dtype: Any = None            # the dtype sharded parameters are gathered in (None: their own)


@dataclass
class RunContext:
    """What a world's per-step and export hooks see of the running loop."""
    cfg: "TrainConfig"
    run_dir: Path
    accelerator: Any                   # accelerate.Accelerator
    generator: "nn.Module"             # the bare (unwrapped; sharded under FSDP) generator


class World(Protocol):
    name: str
    schedule: "NoiseSchedule"          # x_t = alpha(t) x0 + sigma(t) eps
    null_cond: Any                     # the "empty prompt" condition for CFG
    options: LoopOptions

    def build(self) -> WorldModels: ...
    # Samplers draw on the CPU from the loop's one torch.Generator (so a run is a function of
    # its seed, and a resumed run continues the same stream); the loop moves them to the device.
    def sample_cond(self, batch: int, generator: "torch.Generator") -> Any: ...
    def sample_z(self, batch: int, generator: "torch.Generator") -> "Tensor": ...
    def sample_t(self, batch: int, generator: "torch.Generator") -> "Tensor": ...
    def sample_eps(self, like: "Tensor", generator: "torch.Generator") -> "Tensor": ...
    def reward(self, x0: "Tensor", cond: Any) -> "Tensor": ...            # differentiable, [B]
    def evaluate(self, generator: "nn.Module", n: int, seed: int) -> dict[str, float]: ...
    # After every generator step, on every process (sample grids, quick evaluations); returns
    # scalars for the trackers.
    def after_step(self, run: RunContext, step: int) -> dict[str, float]: ...
    # The final generator (EMA weights when on), written for evaluation harnesses; every process
    # calls it (gathering a sharded generator is collective). Returns what metrics.json records.
    def export(self, run: RunContext, step: int) -> dict[str, Any]: ...


class PlainWorld:
    """The hooks of a world with nothing around the loop (the toy worlds): default options, no
    per-step extras, the generator's weights as RUN/generator.safetensors."""
    options = LoopOptions()
    EXPORT_FILE = "generator.safetensors"

    def after_step(self, run: RunContext, step: int) -> dict[str, float]:
        return {}

    def export(self, run: RunContext, step: int) -> dict[str, Any]:
        if run.accelerator.is_main_process:
            from distar.core import atomic
            atomic.save_tensors(run.generator.state_dict(), run.run_dir / self.EXPORT_FILE)
        return {}


@dataclass(frozen=True)
class WorldEntry:
    """A registered world: `entry(cfg, device=None)` builds it; `entry.options(cfg)` are its loop
    settings, known before it is built (the loop makes the accelerator, and so the device,
    first). `make` may be the lazy "module:attr" name of the factory, so a plug-in registers a
    world without importing it (torch and all). `evaluate`: the command that evaluates a
    finished run, `{out}` its folder, which `distar train` prints ('' = see metrics.json)."""
    make: Callable[..., World] | str                            # (cfg, device) -> World
    options: Callable[["TrainConfig"], LoopOptions] = lambda cfg: LoopOptions()
    evaluate: str = ""

    def __call__(self, cfg: "TrainConfig", device=None) -> World:
        make = resolve_ref(self.make) if isinstance(self.make, str) else self.make
        return make(cfg, device)


# Entries are added by the modules that define the shipped worlds (di_star.trainer imports those
# modules, WORLD_MODULES, before it looks a name up), or by a plug-in's register() (a world
# outside di_star, named in $DISTAR_PLUGINS; see di_star/plugins.py).
WORLDS: Registry[WorldEntry] = Registry("world")
WORLD_MODULES = ("di_star.toy.gmm", "di_star.toy.digits", "di_star.sdxl.world")


def load_worlds() -> Registry:
    """WORLDS with every world module imported (each registers itself)."""
    import importlib
    for module in WORLD_MODULES:
        importlib.import_module(module)
    return WORLDS
