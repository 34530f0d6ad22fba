"""Library side of `distar train` (the typer command in distar/cli.py only forwards here)."""
from __future__ import annotations

import contextlib
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from di_star.config import SD_WORLDS, TrainConfig, load_config, validate
from distar.core.errors import DistarError


def resolve_config(preset: str | None, config: Path | None, max_steps: int | None) -> TrainConfig:
    """A preset, a config file, or a config file on top of a preset; then the step override."""
    from di_star.presets import get_preset

    if preset is None and config is None:
        raise DistarError("Give --preset NAME (see `distar train --list`) or --config FILE.toml, "
                          "or both (the file's keys then override the preset's).")
    cfg = get_preset(preset) if preset is not None else None
    if config is not None:
        cfg = load_config(config, base=cfg)
    assert cfg is not None
    if max_steps is not None:
        cfg = cfg.replace(run={"max_steps": max_steps})
    validate(cfg)
    return cfg


def default_out(cfg: TrainConfig, config: Path | None) -> Path:
    name = cfg.preset or (config.stem if config is not None else cfg.world.name)
    return Path("runs") / name


def fetch_targets(cfg: TrainConfig) -> tuple[list, str | None, list[str]]:
    """(the model specs, benchmark, reward metric) an SD run loads from outside, for `distar
    fetch --preset` (preflight checks the same roles)."""
    if cfg.world.name not in SD_WORLDS:  # the other worlds build everything locally
        return [], None, []
    from di_star.sdxl.models import resolve_spec
    from di_star.sdxl.reward import RANDOM_REWARDS, split_reward
    sd = cfg.sd
    specs = [resolve_spec(name) for name in dict.fromkeys((sd.generator, sd.reference))]
    metric, folder = split_reward(sd.reward) if sd.reward not in RANDOM_REWARDS else (None, None)
    bench = sd.prompts[len("bench:"):] if sd.prompts.startswith("bench:") else None
    return specs, bench, [metric] if metric and folder is None else []


def preflight(cfg: TrainConfig) -> None:
    """Every weight, reward and prompt source an SD run needs, checked before anything loads;
    all problems reported in one message (the other worlds build everything locally)."""
    if cfg.world.name not in SD_WORLDS:
        return
    from evalsuite.preflight import (Problem, bench_problems, metric_problems, model_problems,
                                     raise_if_any)
    from di_star.sdxl.models import resolve_spec
    sd = cfg.sd
    # Generator and reference often share a base pipeline: one problem naming both roles.
    merged: dict[str, tuple[list[str], Problem]] = {}
    for role, name in (("sd.generator", sd.generator), ("sd.reference", sd.reference)):
        use_folder = role + " = 'path:{}' in a --config file"
        for p in model_problems(name, resolve=resolve_spec, use_folder=use_folder)[1]:
            roles, _ = merged.setdefault(p.fixes[0] if p.fixes else p.what, ([], p))
            roles.append(f"{role} = {name}")
    problems = [Problem(f"{', '.join(roles)}: {p.what}", p.fixes) for roles, p in merged.values()]
    from di_star.sdxl.reward import RANDOM_REWARDS, check_reward, split_reward
    if sd.reward not in RANDOM_REWARDS:
        try:
            check_reward(sd.reward)
            metric, folder = split_reward(sd.reward)
            if folder is None:  # NAME@DIR: check_reward checked the folder
                problems += metric_problems([metric])
        except DistarError as e:
            problems.append(Problem(str(e)))
    if sd.prompts.startswith("bench:"):
        problems += bench_problems(sd.prompts[len("bench:"):])[1]
    elif not Path(sd.prompts).expanduser().is_file():
        problems.append(Problem(f"sd.prompts: prompt file {sd.prompts} does not exist."))
    if sd.optimizer == "adamw8bit":
        import importlib.util
        if importlib.util.find_spec("bitsandbytes") is None:
            problems.append(Problem("sd.optimizer = 'adamw8bit' needs bitsandbytes (GPU only).",
                                    (".venv/bin/pip install bitsandbytes",
                                     "sd.optimizer = 'adamw' in a --config file (needs more "
                                     "GPU memory)")))
    raise_if_any(problems, "nothing was trained")


def print_presets() -> None:
    from di_star.presets import PRESETS
    table = Table(title="presets (toy rows mirror the paper's Table 2; see di_star/presets.py)")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, desc in PRESETS.describe().items():
        table.add_row(name, desc)
    Console().print(table)


def train(preset: str | None = None, config: Path | None = None, max_steps: int | None = None,
          out: Path | None = None, list_presets: bool = False) -> None:
    """Train (or resume: rerun the same command) one run and print its final metrics."""
    if list_presets:
        print_presets()
        return
    from di_star.trainer import train as train_run

    cfg = resolve_config(preset, config, max_steps)
    preflight(cfg)
    out = Path(out) if out is not None else default_out(cfg, config)
    if cfg.world.name not in SD_WORLDS:
        import torch
        torch.set_num_threads(1)  # toy networks are too small for intra-op threads to pay
    # Under `accelerate launch` every process runs this; only the first one talks.
    from distar.core.runlock import secondary_rank
    quiet = secondary_rank()
    console = Console(stderr=True, quiet=quiet)
    # Plain text (markup=False, soft_wrap): paths and names print verbatim, commands unwrapped.
    console.print(f"training {cfg.preset or 'custom config'} for {cfg.run.max_steps} generator "
                  f"steps in {out} (rerun the same command to resume)", markup=False,
                  highlight=False, soft_wrap=True)
    from distar.core.runlock import out_lock
    with out_lock(out, f"distar train --preset {cfg.preset or '?'}") if not quiet \
            else contextlib.nullcontext():  # one process per run dir (rank 0 holds it)
        result = train_run(cfg, out)
    table = Table(title=Text(f"{cfg.preset or out.name}: step {result.step}, {result.ms_per_step:.1f} ms/step"))
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for k, v in result.metrics.items():
        table.add_row(k, f"{v:.4g}")
    Console(quiet=quiet).print(table)
    if cfg.world.name not in SD_WORLDS:
        from di_star.trainer import WORLDS
        evaluate = WORLDS.get(cfg.world.name).evaluate.format(out=out) or "metrics.json"
        console.print(f"run dir: {out} (config.json, stats.jsonl, metrics.json, generator.safetensors); "
                      f"evaluate: {evaluate}", markup=False, highlight=False, soft_wrap=True)
    else:  # SD worlds export a diffusers pipeline that the harness loads with path:
        # a mini-world run is judged on the mini benchmarks, by the mini metrics (the gold judge included)
        from di_star.sdxl.presets import MINI_BASE
        bench = ("mini_parti --metrics mini_pickscore,mini_gold,mini_attr_acc,mini_fd,mini_clip"
                 if cfg.sd.reference == MINI_BASE["sd"]["reference"] else "parti")
        console.print(f"run dir: {out}; evaluate: distar eval --model path:{out / 'export'} "
                      f"--bench {bench}", markup=False, highlight=False, soft_wrap=True)
