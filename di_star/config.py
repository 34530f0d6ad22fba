"""Typed training configs. A run is fully described by one `TrainConfig`; it is saved next to
the checkpoints (`config.json`) and a resumed run must match it.

Files are JSON or TOML with the same nesting as the dataclasses ([world], [objective], [optim],
[run]); nothing is ever eval'd. Unknown keys raise a DistarError naming the key and listing the
valid ones, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from distar.core.errors import DistarError
from distar.core.validate import number_problem

REGULARISERS = ("score", "kl", "none")
DISTANCES = ("l2", "pseudo_huber")
ESTIMATORS = ("exact", "x0")
DISTANCE_SPACES = ("score", "x0")
GUIDANCES = ("none", "out", "in")   # 'out' = Choice 1 (implicit CFG reward), 'in' = Choice 2 (CFG reference)
SD_WORLDS = ("sdxl", "sd15")        # the worlds that read the [sd] section (di_star.sdxl.world)
MIXED = ("no", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adamw8bit")
LOGGERS = ("tensorboard", "wandb", "none")


@dataclass
class WorldConfig:
    name: str = "gmm"                 # a registered world (di_star.world.WORLDS): gmm, digits, sdxl, sd15
    eval_samples: int = 2000          # samples drawn for the final metrics
    # Fraction of the once-trained (cached) networks' steps. Product, not test-only: `run_demo(scale=)`
    # shrinks a whole toy ablation with it, and a run records it in config.json so that
    # `toy-digits:RUN` rebuilds the networks that run trained against (di_star.toy.pipeline).
    recipe_scale: float = 1.0


@dataclass
class ObjectiveConfig:
    regulariser: str = "score"        # 'score' (DI*, eq. 3.4) | 'kl' (Diff-Instruct / DI++) | 'none'
    distance: str = "pseudo_huber"    # d(y) for the score regulariser: 'l2' | 'pseudo_huber'
    huber_c: float | None = 1.0       # pseudo-Huber c (score units); required with distance='pseudo_huber'
    estimator: str = "exact"          # 'exact': pathwise through frozen nets (docs/maths.md slip 3); 'x0': the paper's listing
    alpha_rew: float = 0.0            # explicit reward scale
    alpha_cfg: float = 0.0            # CFG scale: implicit-reward weight ('out') or guidance scale w ('in')
    guidance: str = "none"            # 'none' | 'out' (Choice 1, DI*-Out) | 'in' (Choice 2, DI*-In)
    sigma_mean: float = -2.0          # pi(t): sigma = exp(sigma_std * randn + sigma_mean), the listing's
    sigma_std: float = 2.0
    distance_space: str = "score"     # where d() measures: 'score' differences, or 'x0' (sigma^2 * them, the listing's)
    w_cfg: str = "sigma2"             # w(t) of the implicit CFG reward (Choice 1): the listing's cfg_vector is a
                                      # difference of denoiser outputs, i.e. sigma^2 times the score difference
    w: str = "one"                    # generator weighting w(t), a di_star.noise.weight_fn name
    lam: str = "edm"                  # assistant DSM weighting lambda(t): the reference's own (EDM)


@dataclass
class OptimConfig:
    lr_g: float = 1e-4                # generator Adam lr
    lr_psi: float = 1e-3              # assistant Adam lr
    beta1: float = 0.0                # Adam betas of the listing: (0.0, 0.999)
    beta2: float = 0.999
    assistant_steps_per_g_step: int = 2   # K_TA in Algorithm 1
    batch_size: int = 256


@dataclass
class RunConfig:
    max_steps: int = 500              # generator steps
    seed: int = 0
    ema: float = 0.0                  # generator EMA decay; 0 = off
    log_every: int = 50               # steps between stats.jsonl lines
    ckpt_every: int = 250             # steps between checkpoints (and always at the end)


@dataclass
class SDConfig:
    """The Stable Diffusion worlds ('sdxl', 'sd15'; di_star.sdxl). The toy worlds ignore it."""
    generator: str = "dmd2_sdxl"      # one-step init: an evalsuite model name or path:DIR (its UNet)
    reference: str = "sdxl_base"      # frozen reference (UNet; also VAE, text encoders): name or path:DIR
    generator_timestep: int = 399     # timestep fed to the one-step generator with pure noise (DMD2: 399)
    t_min: int = 20                   # pi(t): uniform integer t in [t_min, t_max) (DMD2: 0.02 T, 0.98 T)
    t_max: int = 980
    resolution: int = 0               # pixels; 0 = the reference recipe's (SDXL 1024, SD1.5 512)
    prompts: str = "bench:coco30k"    # a .txt / .tsv / .parquet prompt file, or bench:NAME
    reward: str = "pickscore"         # an evalsuite metric with score_tensor; 'tiny:pickscore' = random, offline
    mixed_precision: str = "no"       # 'no' | 'bf16' | 'fp16': autocast; frozen nets stored in that dtype
    gradient_checkpointing: bool = False  # on the trained UNets (generator, assistant)
    checkpoint_frozen: bool = False   # also on the frozen reference UNet and the VAE decoder ('exact' and
                                      # the reward backprop through them): less memory, their recompute
    optimizer: str = "adamw"          # 'adamw' | 'adamw8bit' (bitsandbytes)
    fsdp: bool = False                # shard generator and (full) assistant with FSDP2 over the processes
                                      # of `accelerate launch` (di_star.sdxl.sharding); frozen nets replicated
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0        # gradient clipping of both networks; 0 = off
    grad_accum: int = 1               # micro-batches of optim.batch_size per optimizer step
    assistant_lora_rank: int = 0      # 0: full fine-tune of the assistant; > 0: LoRA (needs peft)
    sample_every: int = 0             # generator steps between PNG sample grids; 0 = off
    sample_images: int = 4            # images per grid (fixed prompts and seeds)
    eval_every: int = 0               # generator steps between quick evaluations; 0 = off
    eval_bench: str = "tiny"          # evalsuite benchmark of the quick evaluation
    eval_limit: int = 4               # prompts of it
    eval_metric: str = ""             # evalsuite metric scoring it; '' = the training reward model
    log_with: str = "tensorboard"     # 'tensorboard' | 'wandb' | 'none'


@dataclass
class TrainConfig:
    preset: str = ""                  # the preset this config came from, for the record
    world: WorldConfig = field(default_factory=WorldConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sd: SDConfig = field(default_factory=SDConfig)     # only the 'sdxl' / 'sd15' worlds read it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **sections: dict[str, Any]) -> "TrainConfig":
        """A copy with some fields of some sections changed, e.g. replace(run={'max_steps': 10})."""
        return from_dict({**self.to_dict(), **{k: {**self.to_dict()[k], **v} if isinstance(v, dict) else v
                                                 for k, v in sections.items()}})


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check a loaded value against a field's type; ints are accepted where floats are expected."""
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp is str and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)  # e.g. guidance = ["out", "in"]; validate() explains why not both
    if tp is bool and isinstance(value, bool):
        return value
    raise DistarError(f"Config key '{where}' must be {getattr(tp, '__name__', tp)}, got {value!r}.")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise DistarError(f"Config section '{prefix or 'top level'}' must be a table, got {data!r}.")
    hints = get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in valid:
            raise DistarError(f"Unknown config key '{where}'. Valid keys in "
                              f"[{prefix or 'top level'}]: {', '.join(valid)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, where)
        else:
            kwargs[key] = _coerce(value, tp, where)
    return cls(**kwargs)


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build and validate a TrainConfig from nested plain data."""
    cfg = _build(TrainConfig, data, "")
    validate(cfg)
    return cfg


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict update: `over`'s leaves win (a config file on top of a preset)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """Plain data from a .json or .toml file."""
    path = Path(path)
    if not path.exists():
        raise DistarError(f"Config file {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DistarError(f"Cannot read config file {path}: {e}. Fix: pass a readable UTF-8 "
                          ".json or .toml file.") from None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise DistarError(f"{path} is not valid JSON: {e}") from None
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise DistarError(f"{path} is not valid TOML: {e}") from None
    raise DistarError(f"Config file {path} must end in .json or .toml.")


def load_config(path: Path, base: TrainConfig | None = None) -> TrainConfig:
    """A config file, optionally on top of a preset's config."""
    data = read_config_file(path)
    if not isinstance(data, dict):
        raise DistarError(f"{path} holds a {type(data).__name__}, not a table of sections. "
                          "Fix: write it as {\"optim\": {\"lr_g\": 1e-4}, ...} (JSON) or "
                          "[optim] / lr_g = 1e-4 (TOML).")
    return from_dict(merge(base.to_dict(), data) if base is not None else data)


def _choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise DistarError(f"Unknown {key} '{value}'. Choose one of: {', '.join(choices)}")


# The allowed range of every numeric config value: (low, high, low inclusive, high inclusive).
# Every int / float field of every section must be listed (tests/test_faults_config.py checks,
# by introspection, that a new field cannot be added without its range), and every value must
# be finite first: NaN compares False with everything, so `alpha_rew < 0` lets NaN through and
# `if alpha_rew > 0` then silently drops the reward term.
_BIG = 10**7          # counts and sizes: past this it is a typo, not a run (batch 10^12 = OOM)
NUMERIC_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "world.eval_samples": (1, _BIG, True, True),
    "world.recipe_scale": (0.0, 1.0, False, True),
    "objective.huber_c": (0.0, math.inf, False, False),
    "objective.alpha_rew": (0.0, math.inf, True, False),
    "objective.alpha_cfg": (0.0, math.inf, True, False),
    "objective.sigma_mean": (-math.inf, math.inf, False, False),
    "objective.sigma_std": (0.0, math.inf, True, False),
    "optim.lr_g": (0.0, math.inf, False, False),
    "optim.lr_psi": (0.0, math.inf, False, False),
    "optim.beta1": (0.0, 1.0, True, False),
    "optim.beta2": (0.0, 1.0, True, False),
    "optim.assistant_steps_per_g_step": (0, 1000, True, True),
    "optim.batch_size": (1, _BIG, True, True),
    "run.max_steps": (0, 10**9, True, True),
    "run.seed": (0, 2**31 - 1, True, True),
    "run.ema": (0.0, 1.0, True, False),
    "run.log_every": (1, 10**9, True, True),
    "run.ckpt_every": (1, 10**9, True, True),
    "sd.generator_timestep": (0, 999, True, True),
    "sd.t_min": (0, 999, True, True),
    "sd.t_max": (1, 1000, True, True),
    "sd.resolution": (0, 16384, True, True),
    "sd.weight_decay": (0.0, math.inf, True, False),
    "sd.max_grad_norm": (0.0, math.inf, True, False),
    "sd.grad_accum": (1, 10**6, True, True),
    "sd.assistant_lora_rank": (0, 10**5, True, True),
    "sd.sample_every": (0, 10**9, True, True),
    "sd.sample_images": (1, 1024, True, True),
    "sd.eval_every": (0, 10**9, True, True),
    "sd.eval_limit": (1, _BIG, True, True),
}


def numeric_fields(cls: type = None, prefix: str = "") -> list[str]:  # type: ignore[assignment]
    """'section.key' of every int / float (or optional float) field, by introspection."""
    cls = cls or TrainConfig
    out = []
    for f, tp in ((f, get_type_hints(cls)[f.name]) for f in fields(cls)):
        where = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(tp):
            out += numeric_fields(tp, where)
            continue
        args = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)
        if any(a in (int, float) for a in args) and bool not in args:
            out.append(where)
    return out


def check_numbers(cfg: TrainConfig) -> None:
    """Every numeric value finite and in its declared range; all offenders named at once."""
    problems = []
    for where in numeric_fields():
        section, key = where.split(".", 1)
        value = getattr(getattr(cfg, section), key)
        if value is None:  # optional values (huber_c) are checked where they are needed
            continue
        if where not in NUMERIC_RANGES:  # a programming error, caught by the tests
            raise KeyError(f"config field {where} has no entry in NUMERIC_RANGES")
        lo, hi, lo_in, hi_in = NUMERIC_RANGES[where]
        problem = number_problem(value, where, lo, hi, lo_open=not lo_in, hi_open=not hi_in)
        if problem:
            problems.append(problem)
    if problems:
        raise DistarError("Invalid config value(s): " + "; ".join(problems) +
                          ". Fix: set each to a finite number in its range (di_star/config.py "
                          "NUMERIC_RANGES lists them).")


def validate(cfg: TrainConfig) -> None:
    """Reject non-finite or out-of-range numbers, unknown choices and options that contradict
    each other, each with its fix."""
    check_numbers(cfg)
    if cfg.preset:  # it names the default run folder runs/<preset>
        from distar.core.validate import check_name
        check_name(cfg.preset, "preset", "use a preset name from `distar train --list` (no "
                   "leading '/' and no '..'); choose where the run goes with --out.", nested=True)
    o, opt, run = cfg.objective, cfg.optim, cfg.run
    _choice(o.regulariser, REGULARISERS, "objective.regulariser")
    _choice(o.distance, DISTANCES, "objective.distance")
    _choice(o.estimator, ESTIMATORS, "objective.estimator")
    _choice(o.distance_space, DISTANCE_SPACES, "objective.distance_space")
    parts = {p.strip() for p in o.guidance.replace("+", ",").split(",") if p.strip()}
    if {"out", "in"} <= parts or o.guidance.strip() == "both":
        raise DistarError(
            "objective.guidance asks for Choice 1 ('out': implicit CFG reward) and Choice 2 ('in': "
            "CFG-enhanced reference) at once, which applies classifier-free guidance twice. "
            "Fix: set guidance = 'out' or guidance = 'in'.")
    _choice(o.guidance, GUIDANCES, "objective.guidance")
    if o.regulariser == "score" and o.distance == "pseudo_huber" and (o.huber_c is None or o.huber_c <= 0):
        raise DistarError("distance 'pseudo_huber' needs a positive objective.huber_c "
                          "(d(y) = sqrt(|y|^2 + c^2) - c). Fix: set huber_c, e.g. huber_c = 1.0, "
                          "or use distance = 'l2'.")
    if o.guidance == "none" and o.alpha_cfg != 0:
        raise DistarError(f"alpha_cfg = {o.alpha_cfg} but guidance = 'none', so the CFG scale would be "
                          "ignored. Fix: set guidance = 'in' (Choice 2) or 'out' (Choice 1), or alpha_cfg = 0.")
    if o.guidance != "none" and o.alpha_cfg <= 0:
        raise DistarError(f"guidance = '{o.guidance}' needs alpha_cfg > 0. "
                          "Fix: set alpha_cfg (the paper uses 7.5) or guidance = 'none'.")
    if o.guidance == "in" and o.regulariser == "none":
        raise DistarError("guidance = 'in' (Choice 2) guides the reference inside the regulariser, but "
                          "regulariser = 'none'. Fix: use regulariser 'score' or 'kl', or guidance = 'out'.")
    if o.regulariser == "none" and o.alpha_rew == 0 and o.guidance == "none":
        raise DistarError("Nothing to optimise: regulariser 'none', alpha_rew = 0 and no guidance. "
                          "Fix: pick a regulariser, a reward scale or guidance.")
    if o.alpha_rew < 0:
        raise DistarError(f"alpha_rew must be >= 0 (got {o.alpha_rew}); the reward is maximised.")
    for key, value in (("optim.lr_g", opt.lr_g), ("optim.lr_psi", opt.lr_psi)):
        if value <= 0:
            raise DistarError(f"{key} must be > 0, got {value}.")
    if opt.assistant_steps_per_g_step < 1 and o.regulariser != "none":
        raise DistarError("optim.assistant_steps_per_g_step must be >= 1 when a regulariser needs the "
                          "assistant score.")
    if opt.batch_size < 1 or run.max_steps < 0:
        raise DistarError("optim.batch_size must be >= 1 and run.max_steps >= 0.")
    if not 0 <= run.ema < 1:
        raise DistarError(f"run.ema must be in [0, 1), got {run.ema}.")
    if not 0 < cfg.world.recipe_scale <= 1:
        raise DistarError(f"world.recipe_scale must be in (0, 1], got {cfg.world.recipe_scale}.")
    if run.ckpt_every < 1 or run.log_every < 1:
        raise DistarError("run.ckpt_every and run.log_every must be >= 1.")


def validate_sd(cfg: TrainConfig) -> None:
    """The [sd] section's choices and what this machine must have for them, each with its fix."""
    sd = cfg.sd
    if cfg.world.name not in SD_WORLDS:
        raise DistarError(f"world.name '{cfg.world.name}' is not a Stable Diffusion world; "
                          f"choose one of: {', '.join(SD_WORLDS)}.")
    for key, value, choices in (("sd.mixed_precision", sd.mixed_precision, MIXED),
                                ("sd.optimizer", sd.optimizer, OPTIMIZERS),
                                ("sd.log_with", sd.log_with, LOGGERS)):
        _choice(value, choices, key)
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
    import torch
    if sd.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise DistarError("sd.mixed_precision = 'fp16' needs a CUDA GPU. Fix: use 'bf16' or 'no' on a CPU.")
    if sd.fsdp and sd.optimizer == "adamw8bit":
        raise DistarError("sd.fsdp = true with sd.optimizer = 'adamw8bit': bitsandbytes' 8-bit AdamW does "
                          "not step sharded (DTensor) parameters. Fix: sd.optimizer = 'adamw' (FSDP already "
                          "splits the fp32 Adam state over the GPUs), or sd.fsdp = false.")
    if sd.fsdp and sd.mixed_precision == "fp16":
        raise DistarError("sd.fsdp = true with sd.mixed_precision = 'fp16': the fp16 gradient scaler is not "
                          "wired for sharded gradients here. Fix: sd.mixed_precision = 'bf16'.")
    from di_star.sdxl.reward import check_reward
    check_reward(sd.reward)
    if sd.log_with == "wandb":
        import importlib.util
        if importlib.util.find_spec("wandb") is None:
            raise DistarError("sd.log_with = 'wandb' but wandb is not installed. Fix: `pip install "
                              "wandb`, or use 'tensorboard' (installed) or 'none'.")


def check_trainable(cfg: TrainConfig) -> None:
    """Everything the training loop checks of a config before it starts: `validate`, and the
    [sd] section (with what this machine must have for it) for the Stable Diffusion worlds."""
    validate(cfg)
    if cfg.world.name in SD_WORLDS:
        validate_sd(cfg)
