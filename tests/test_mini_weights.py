"""DI* from the shipped mini weights (issue 11): a few steps of `mini/di_star_in` raise the proxy
reward beyond noise while the gold judge does not fall by more than a stated bound, and the
harness loads every mini model as a user would."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from di_star.presets import get_preset
from evalsuite.models.specs import MODELS

REPO = Path(__file__).resolve().parents[1]


def _shipped() -> bool:
    if "mini_ref" not in MODELS or "mini_onestep" not in MODELS:
        return False
    return Path(MODELS.get("mini_ref").repo).is_dir()


pytestmark = pytest.mark.skipif(not _shipped(), reason="the mini world's weights are not built / shipped")

GOLD_DROP_BOUND = 0.02   # the gold judge (0..1) may not fall by more than this over the few steps


def _per_sample(world, gen, prompts, zs) -> tuple[torch.Tensor, list]:
    with torch.no_grad():
        cond = world.encode(prompts)
        x0 = gen(zs, cond)
        return world.reward(x0, cond).float(), world.decode(x0).clamp(0, 1)


def _pil(x: torch.Tensor) -> list:
    """Decoded images in [0, 1] -> 8-bit PIL images, by the build's one converter."""
    from di_star.mini.build import to_pil
    return to_pil(x * 2 - 1)


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="not true of the shipped world (large_lit_restart): 12 steps at K_TA 2 "
                   "move the proxy by +0.022 with a paired SE of 0.020 on 48 prompts; DI* on this world needs "
                   "hundreds of steps (600 steps: 2.7-3.3 paired SEs per seed, docs/training.md), more than a "
                   "test affords")
def test_few_steps_of_di_star_in_raise_the_proxy_beyond_noise_and_keep_the_gold(tmp_path):
    from di_star.sdxl.world import SDWorld
    from di_star.trainer import train
    from di_star.mini.gold import gold_score

    torch.set_num_threads(1)
    cfg = get_preset("mini/di_star_in").replace(run={"max_steps": 12, "ckpt_every": 12, "log_every": 4},
                                                optim={"assistant_steps_per_g_step": 2},
                                                sd={"sample_every": 0}, world={"eval_samples": 8})
    world = SDWorld(cfg)
    models = world.build()
    g = torch.Generator().manual_seed(123)
    prompts = [world.prompts[i] for i in range(48)]
    zs = world.sample_z(len(prompts), g)
    init = copy.deepcopy(models.generator)
    r0, x0 = _per_sample(world, init, prompts, zs)
    train(cfg, tmp_path / "run", world=world, progress=False)
    r1, x1 = _per_sample(world, models.generator, prompts, zs)
    d = r1 - r0
    se = d.std() / len(d) ** 0.5
    assert d.mean() > 3 * se, f"proxy change {d.mean():.4f} within noise (paired SE {se:.4f})"

    g0, g1 = gold_score(_pil(x0), prompts), gold_score(_pil(x1), prompts)
    assert g1.mean() - g0.mean() > -GOLD_DROP_BOUND, (g0.mean(), g1.mean())


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mini_ref", "mini_onestep"])
def test_the_harness_loads_every_mini_model_as_a_user_would(model, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "distar", "eval", "--model", model, "--bench", "mini_parti",
                        "--limit", "8", "--metrics", "mini_pickscore,mini_gold,mini_attr_acc", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    from evalsuite.store import ResultsStore
    scores = ResultsStore(tmp_path).table("scores")
    assert set(scores.metric) >= {"mini_pickscore", "mini_gold", "mini_attr_acc"} and len(scores) >= 24


@pytest.mark.slow
def test_a_mini_training_run_prints_an_eval_command_that_works(tmp_path):
    """The end of `distar train` on the mini world names the mini benchmark and metrics (the gold
    judge included), and that command, run as printed, scores the exported generator."""
    import shlex

    from typer.testing import CliRunner

    from distar.cli import app

    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--preset", "mini/di_star_in", "--max-steps", "1", "--out", str(run)],
                           env={"COLUMNS": "400", "OMP_NUM_THREADS": "1"})
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if "evaluate: distar eval" in ln)
    cmd = shlex.split(line.split("evaluate: distar ", 1)[1])
    assert cmd[cmd.index("--bench") + 1] == "mini_parti" and "mini_gold" in cmd[cmd.index("--metrics") + 1]
    e = CliRunner().invoke(app, [*cmd, "--limit", "2", "--out", str(tmp_path / "res")], env={"COLUMNS": "400"})
    assert e.exit_code == 0, e.output
    from evalsuite.store import ResultsStore
    assert {"mini_pickscore", "mini_gold"} <= set(ResultsStore(tmp_path / "res").table("scores").metric)


LONG_FD_BOUND = 4.0       # the trained generator's mini_fd may be at most this multiple of the init's
LONG_GOLD_DROP_BOUND = 0.05


@pytest.mark.long
def test_the_presets_600_steps_of_di_star_in_raise_the_proxy_and_the_gold_does_not_follow(tmp_path):
    """The issue's claim at the length where it holds (docs/training.md; 19 min on one CPU thread,
    `pytest -m long`): the preset's own run of mini/di_star_in raises the proxy on all held-out
    mini_parti prompts by more than 3 paired standard errors, the gold judge does not fall by more
    than a stated bound, and mini_fd stays within a stated multiple of the init's. Measured at this
    length (docs/training.md): proxy +0.03 to +0.05, gold -0.04 to +0.00, mini_fd about 3x."""
    from di_star.sdxl.world import SDWorld
    from di_star.trainer import train
    from evalsuite.benchmarks import load_benchmark
    from di_star.mini.metrics import MiniFD
    from di_star.mini.gold import gold_score

    torch.set_num_threads(1)
    cfg = get_preset("mini/di_star_in").replace(sd={"sample_every": 0}, world={"eval_samples": 8})
    assert cfg.run.max_steps == 600, "the preset's length changed: re-measure docs/training.md"
    world = SDWorld(cfg)
    models = world.build()
    prompts = [p.text for p in load_benchmark("mini_parti").prompts]
    zs = world.sample_z(len(prompts), torch.Generator().manual_seed(2024))

    def judge(gen):
        rewards, images = [], []
        for i in range(0, len(prompts), 50):
            r, x = _per_sample(world, gen, prompts[i:i + 50], zs[i:i + 50])
            rewards.append(r)
            images += _pil(x)
        return torch.cat(rewards), gold_score(images, prompts), images

    r0, g0, im0 = judge(copy.deepcopy(models.generator).eval())
    train(cfg, tmp_path / "run", world=world, progress=False)
    r1, g1, im1 = judge(models.generator.eval())
    d = r1 - r0
    se = d.std() / len(d) ** 0.5
    assert d.mean() > 3 * se, f"proxy change {d.mean():.4f} within noise (paired SE {se:.4f})"
    assert g1.mean() - g0.mean() > -LONG_GOLD_DROP_BOUND, (g0.mean(), g1.mean())
    fd = MiniFD.from_pretrained()
    fd0, fd1 = fd.compute(im0, prompts=prompts), fd.compute(im1, prompts=prompts)
    assert fd1 < LONG_FD_BOUND * fd0, (fd0, fd1)
