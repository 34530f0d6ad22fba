"""The one loop's run-dir contract, for every kind of world (the toy worlds gmm and digits, and
tiny_sdxl on the Stable Diffusion code path): seeded runs are reproducible, a killed-and-resumed
run equals an uninterrupted one bit for bit, SIGINT / SIGTERM checkpoint before stopping, a
changed config is refused, an old-format checkpoint is one clear error, the NaN guard stops with
the last good checkpoint."""
import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

import di_star  # noqa: F401
from di_star.errors import NonFiniteLossError
from di_star.presets import get_preset
from di_star.trainer import WORLDS, train
from loop_hooks import step_hook
from sd_helpers import ckpt_tensors
from toy_helpers import Spy, tiny, tiny_cache  # noqa: F401 (autouse fixture)
from distar.core.errors import DistarError


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _sd(**run):
    # Gradient accumulation (2 micro-batches of 1) and the EMA ride along; sample grids too.
    return get_preset("tiny_sdxl").replace(run={"max_steps": 4, "ckpt_every": 2, **run}, optim={"batch_size": 1},
                                           sd={"grad_accum": 2})


# world -> (config, the step a kill lands on, the checkpoint in force then, the exported generator)
WORLD_CASES = {
    "gmm": (lambda **run: tiny("gmm/di_star_in", 6, **{"ckpt_every": 2, "ema": 0.9, **run}), 5, 4,
            "generator.safetensors"),
    "digits": (lambda **run: tiny("digits/di_pp", 6, **{"ckpt_every": 2, "ema": 0.9, **run}), 5, 4,
               "generator.safetensors"),
    "sdxl": (_sd, 3, 2, "export/unet/diffusion_pytorch_model.safetensors"),
}


def _same_tensors(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def _stats(run) -> list[dict]:
    """stats.jsonl without its timing columns."""
    return [{k: v for k, v in json.loads(ln).items() if k not in ("time", "ms_per_step", "cpu_ms_per_step")}
            for ln in (run / "stats.jsonl").read_text().splitlines()]


def _assert_same_run(straight, resumed, export: str, max_steps: int) -> None:
    a, b = ckpt_tensors(straight), ckpt_tensors(resumed)
    assert any(k.startswith("ema/") for k in a) and any(k.startswith("optimizers/") for k in a)
    assert _same_tensors(a, b) == []
    assert _same_tensors(load_file(str(straight / export)), load_file(str(resumed / export))) == []
    assert [s["step"] for s in _stats(resumed)] == list(range(1, max_steps + 1))
    assert _stats(straight) == _stats(resumed)


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def straight_runs(tmp_path_factory):
    """One uninterrupted run per world, shared by the interruption tests."""
    root = tmp_path_factory.mktemp("straight")
    return {name: train(make(), root / name, progress=False).run_dir for name, (make, *_) in WORLD_CASES.items()}


@pytest.mark.parametrize("world", list(WORLD_CASES))
def test_kill_and_resume_equals_an_uninterrupted_run(world, straight_runs, tmp_path):
    make, kill_at, in_force, export = WORLD_CASES[world]
    cfg = make()

    def kill(step):  # as a SIGKILL would: nothing after the last checkpoint is written
        if step == kill_at:
            raise Killed

    with step_hook(cfg.world.name, kill), pytest.raises(Killed):
        train(cfg, tmp_path, progress=False)
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == in_force
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == [f"ckpt-{in_force:07d}"]
    train(cfg, tmp_path, progress=False)  # "to resume, rerun the same command"
    _assert_same_run(straight_runs[world], tmp_path, export, cfg.run.max_steps)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
@pytest.mark.parametrize("world", ["gmm", "sdxl"])
def test_a_signal_checkpoints_the_step_then_stops_as_the_signal_would(world, sig, straight_runs, tmp_path):
    """SIGINT -> KeyboardInterrupt (the CLI exits 130), SIGTERM -> exit 143, each after writing
    a checkpoint of the step in progress; rerunning continues bit for bit."""
    make, _, _, export = WORLD_CASES[world]
    cfg = make(ckpt_every=100)  # no scheduled checkpoint before the end

    def send(step):
        if step == 1:
            os.kill(os.getpid(), sig)  # handled between steps: the loop stops after step 2

    before = signal.getsignal(sig)  # SIG_IGN for SIGINT when the suite runs under nohup
    with pytest.raises(KeyboardInterrupt if sig == signal.SIGINT else SystemExit) as stopped:
        with step_hook(cfg.world.name, send):
            train(cfg, tmp_path, progress=False)
    if sig == signal.SIGTERM:
        assert stopped.value.code == 143
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 2
    assert signal.getsignal(sig) == before, "handlers restored"
    train(cfg, tmp_path, progress=False)
    _assert_same_run(straight_runs[world], tmp_path, export, cfg.run.max_steps)


def test_same_seed_same_params_and_other_seed_differs(tmp_path):
    a = train(tiny("gmm/di_star_in", 3), tmp_path / "a", progress=False)
    b = train(tiny("gmm/di_star_in", 3), tmp_path / "b", progress=False)
    c = train(tiny("gmm/di_star_in", 3, seed=1), tmp_path / "c", progress=False)
    ga, gb, gc = (load_file(str(r.run_dir / "generator.safetensors")) for r in (a, b, c))
    assert all(torch.equal(ga[k], gb[k]) for k in ga)
    assert any(not torch.equal(ga[k], gc[k]) for k in ga)


def test_resume_refuses_a_different_config(tmp_path):
    train(tiny("gmm/kl"), tmp_path, progress=False)
    with pytest.raises(DistarError, match="objective.alpha_rew"):
        train(tiny("gmm/kl").replace(objective={"alpha_rew": 1.0}), tmp_path, progress=False)
    # a longer run of the same config is a resume, not an error
    assert train(tiny("gmm/kl", 3), tmp_path, progress=False).step == 3


def test_an_old_format_checkpoint_is_one_clear_error(tmp_path):
    """Before one loop served every world, toy runs wrote ckpt-N.safetensors + ckpt-N.json."""
    cfg = tiny("gmm/kl")
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "ckpt-0000002.safetensors").write_bytes(b"old")
    (tmp_path / "ckpt-0000002.json").write_text("{}")
    (tmp_path / "latest.json").write_text(json.dumps({"step": 2, "name": "ckpt-0000002"}))
    with pytest.raises(DistarError, match=r"old toy-trainer format \(ckpt-0000002.safetensors.*Fix: train again "
                                          r"in a new --out"):
        train(cfg, tmp_path, progress=False)
    assert (tmp_path / "ckpt-0000002.safetensors").read_bytes() == b"old", "nothing deleted"


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
    ckpt = ckpt_tensors(tmp_path)
    assert all(torch.isfinite(v).all() for k, v in ckpt.items() if v.is_floating_point())
    assert not (tmp_path / "generator.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"])
def test_distar_train_process_checkpoints_on_a_signal_and_exits_as_it_would(sig, code, tmp_path):
    """A real `distar train` process: the signal lands mid-run; the process writes a checkpoint,
    says how to resume and exits 130 / 143 without a traceback; the same command then finishes."""
    import subprocess
    import sys
    import time

    from fault_helpers import REPO

    toml = tmp_path / "run.toml"
    toml.write_text("[world]\nrecipe_scale = 0.01\neval_samples = 100\n[run]\nlog_every = 1\nckpt_every = 100000\n"
                    "[optim]\nbatch_size = 32\n")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "distar", "train", "--preset", "gmm/di_star_in", "--config", str(toml),
           "--max-steps", "100000", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"),  # Ctrl-C works under nohup too
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and not ((out / "stats.jsonl").exists() and (out / "stats.jsonl").read_text()):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert "rerun the same command to resume" in err.strip().splitlines()[-1]
    step = json.loads((out / "latest.json").read_text())["step"]
    assert step >= 1 and [json.loads(ln)["step"] for ln in (out / "stats.jsonl").read_text().splitlines()][-1] == step
    r = subprocess.run([*cmd[:-4], "--max-steps", str(step + 1), "--out", str(out)], cwd=REPO,
                       capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "metrics.json").read_text())["step"] == step + 1


def test_a_resume_between_two_stats_lines_writes_the_same_stats(tmp_path):
    """Checkpoints every 2 steps, a stats line every 3: a run killed at step 5 resumes from
    step 4 with steps 4's window (step 4) restored, so its step-6 line averages steps 4-6 as an
    uninterrupted run's does."""
    cfg = tiny("gmm/di_star_in", 6, ckpt_every=2, log_every=3)
    straight = train(cfg, tmp_path / "straight", progress=False).run_dir

    def kill(step):
        if step == 5:
            raise Killed

    with step_hook(cfg.world.name, kill), pytest.raises(Killed):
        train(cfg, tmp_path / "cut", progress=False)
    train(cfg, tmp_path / "cut", progress=False)
    assert [s["step"] for s in _stats(straight)] == [3, 6]
    assert _stats(tmp_path / "cut") == _stats(straight)
