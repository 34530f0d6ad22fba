"""The loop's run-dir contract: seeded runs are reproducible, kill-and-resume equals an
uninterrupted run, a changed config is refused, the NaN guard stops with the last good checkpoint."""
import json

import pytest
import torch
from safetensors.torch import load_file

import di_star  # noqa: F401
from di_star.errors import NonFiniteLossError
from di_star.presets import get_preset
from di_star.trainer import WORLDS, train
from toy_helpers import Spy, changed, tiny, tiny_cache  # noqa: F401 (autouse fixture)
from distar.core.errors import DistarError


def test_same_seed_same_params_and_other_seed_differs(tmp_path):
    a = train(tiny("gmm/di_star_in", 3), tmp_path / "a", progress=False)
    b = train(tiny("gmm/di_star_in", 3), tmp_path / "b", progress=False)
    c = train(tiny("gmm/di_star_in", 3, seed=1), tmp_path / "c", progress=False)
    ga, gb, gc = (load_file(str(r.run_dir / "generator.safetensors")) for r in (a, b, c))
    assert all(torch.equal(ga[k], gb[k]) for k in ga)
    assert any(not torch.equal(ga[k], gc[k]) for k in ga)


class Killed(Exception):
    pass


@pytest.mark.parametrize("name", ["gmm/di_star_in", "digits/di_pp"])
def test_kill_and_resume_equals_an_uninterrupted_run(name, tmp_path):
    cfg = tiny(name, 6, ckpt_every=2, ema=0.9)
    train(cfg, tmp_path / "straight", progress=False)

    def kill_at_5(step, stats):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, tmp_path / "resumed", progress=False, on_step=kill_at_5)
    assert json.loads((tmp_path / "resumed" / "latest.json").read_text())["step"] == 4
    train(cfg, tmp_path / "resumed", progress=False)  # "to resume, rerun the same command"
    for f in ("generator.safetensors", "ckpt-0000006.safetensors"):
        a, b = (load_file(str(tmp_path / d / f)) for d in ("straight", "resumed"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "resumed" / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_a_different_config(tmp_path):
    train(tiny("gmm/kl"), tmp_path, progress=False)
    with pytest.raises(DistarError, match="objective.alpha_rew"):
        train(tiny("gmm/kl").replace(objective={"alpha_rew": 1.0}), tmp_path, progress=False)
    # a longer run of the same config is a resume, not an error
    assert train(tiny("gmm/kl", 3), tmp_path, progress=False).step == 3


def test_nan_guard_stops_keeps_last_good_checkpoint_and_names_the_term(tmp_path):
    calls = {"n": 0}

    def nan_after_some_steps(world, x0, cond):
        calls["n"] += 1
        r = world.reward(x0, cond)
        return r * float("nan") if calls["n"] > 3 else r

    cfg = tiny("gmm/di_star_in", 6, ckpt_every=2)
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg, tmp_path, world=Spy(WORLDS.get("gmm")(cfg), reward=nan_after_some_steps), progress=False)
    msg = str(err.value)
    assert "L_rew" in msg and "L_reg" not in msg and "step 4" in msg and "last good checkpoint is step 2" in msg
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 2
    ckpt = load_file(str(tmp_path / "ckpt-0000002.safetensors"))
    assert all(torch.isfinite(v).all() for k, v in ckpt.items() if v.is_floating_point())
    assert not (tmp_path / "generator.safetensors").exists()
