"""The SD trainer (di_star.sdxl) end to end on the tiny_sdxl preset: the code path of
di_star_sdxl with tiny random SDXL / SD1.5 pipelines and a tiny random PickScore, on CPU."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from di_star.config import TrainConfig
from di_star.errors import DistarError, NonFiniteLossError
from di_star.presets import get_preset
from di_star.trainer import generator_terms, train

from loop_hooks import hooked
from sd_helpers import ckpt_tensors, launch_tiny_sdxl

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: 2 threads on a shared 2-core machine are ~100x slower
    yield
    torch.set_num_threads(n)


def tiny(name: str = "tiny_sdxl", **sections) -> TrainConfig:
    return get_preset(name).replace(**sections) if sections else get_preset(name)


def _snapshot(modules) -> list[dict[str, torch.Tensor]]:
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two generator steps of tiny_sdxl, with before/after snapshots of every network."""
    from di_star.sdxl.world import SDWorld

    cfg = tiny(run={"max_steps": 2, "ckpt_every": 2})
    world = SDWorld(cfg)
    models = world.build()
    before = {"generator": _snapshot([models.generator])[0], "assistant": _snapshot([models.assistant])[0],
              "frozen": _snapshot(models.frozen)}
    out = tmp_path_factory.mktemp("sdxl") / "run"
    result = train(cfg, out, world=world, progress=False)
    return cfg, world, models, before, out, result


def test_steps_train_generator_and_assistant_and_leave_frozen_bit_identical(trained):
    cfg, world, models, before, out, result = trained
    assert result.step == 2
    assert not _same(before["generator"], models.generator.state_dict())
    assert not _same(before["assistant"], models.assistant.state_dict())
    # Reference UNet, VAE, both text encoders and the reward model: not one bit moved.
    assert len(models.frozen) >= 5
    for snap, module in zip(before["frozen"], models.frozen):
        assert _same(snap, module.state_dict()), type(module).__name__
        assert all(p.grad is None for p in module.parameters())
    lines = [json.loads(ln) for ln in (out / "stats.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [1, 2]
    assert all(np.isfinite(ln[k]) for ln in lines for k in ("L_rew", "L_reg", "assistant_dsm", "reward"))
    assert list((out / "tb").rglob("events.out.tfevents.*")), "TensorBoard logs"
    assert (out / "samples" / "step-0000002.png").is_file()
    assert set(json.loads((out / "metrics.json").read_text())["metrics"]) == {"reward", "reward_std"}


def test_export_loads_with_distar_eval_and_samples_the_trained_generator(trained, tmp_path):
    """`distar eval --model path:RUN/export` runs, and its images are the trained generator's
    (EMA weights), decoded from the same initial noise."""
    from PIL import Image

    from evalsuite.benchmarks import image_seed, load_benchmark
    from evalsuite.generate import EvalRequest, initial_noise, run_eval

    cfg, world, models, _, out, _ = trained
    recipe = json.loads((out / "export" / "distar_recipe.json").read_text())
    assert recipe["timesteps"] == [399] and recipe["steps"] == 1 and recipe["scheduler"] == "LCMScheduler"
    assert recipe["training"]["alpha_rew"] == 100.0 and recipe["training"]["alpha_cfg"] == 7.5
    assert recipe["training"]["step"] == 2 and recipe["training"]["preset"] == "tiny_sdxl"
    run = run_eval(EvalRequest(model=f"path:{out / 'export'}", bench="tiny", limit=2, out=tmp_path))
    assert len(run.images) == 2
    described = json.loads(run.store.table("runs").iloc[0].recipe_json)
    assert described["alpha_rew"] == 100.0 and described["alpha_cfg"] == 7.5  # Table 2 groups by these
    prompts = [p.text for p in load_benchmark("tiny").prompts[:2]]
    z = initial_noise([image_seed(i, 0) for i in range(2)], world.latent_shape)
    with torch.no_grad():
        ours = world.decode(models.generator(z, world.encode(prompts))).clamp(0, 1)
    ours = (ours.permute(0, 2, 3, 1).numpy() * 255).round()
    for i, rel in enumerate(run.images.path):
        theirs = np.asarray(Image.open(run.store.root / rel).convert("RGB"), dtype=np.float64)
        assert np.abs(theirs - ours[i]).max() <= 1.0


# Kill-and-resume of the SD world: tests/test_trainer_resume.py, with every world's.


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    from di_star.sdxl.world import SDWorld

    cfg = tiny(run={"max_steps": 4, "ckpt_every": 2})
    world = SDWorld(cfg)
    poisoned = {"on": False}
    clean_reward = world.reward

    def reward(x0, cond):
        r = clean_reward(x0, cond)
        return r * float("nan") if poisoned["on"] else r

    world.reward = reward

    def poison_after_2(step):
        poisoned["on"] = step >= 2

    with pytest.raises(NonFiniteLossError) as e:
        train(cfg, tmp_path, world=hooked(world, poison_after_2), progress=False)
    msg = str(e.value)
    assert "L_rew" in msg and "step 3" in msg and "last good checkpoint is step 2" in msg
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 2
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == ["ckpt-0000002"]
    assert all(torch.isfinite(v).all() for k, v in ckpt_tensors(tmp_path).items() if v.is_floating_point())
    assert not (tmp_path / "export").exists()


def test_two_process_gloo_run(tmp_path):
    launch_tiny_sdxl(tmp_path, 2, "29541")
    lines = [json.loads(ln) for ln in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [1, 2] and {ln["world_size"] for ln in lines} == {2}
    state = json.loads((tmp_path / "ckpt-0000002" / "state.json").read_text())
    assert state["world_size"] == 2
    rng = load_file(str(tmp_path / "ckpt-0000002" / "rng.safetensors"))
    assert set(rng) == {"rng.0", "rng.1"} and not torch.equal(rng["rng.0"], rng["rng.1"])
    assert (tmp_path / "export" / "model_index.json").is_file()


@pytest.mark.parametrize("objective", [
    dict(regulariser="score", estimator="exact", guidance="in"),
    dict(regulariser="score", estimator="x0", guidance="in"),
    dict(regulariser="score", estimator="exact", guidance="out", distance="l2"),
    dict(regulariser="kl", guidance="in"),
    dict(regulariser="none", guidance="out"),
    dict(regulariser="score", guidance="none", alpha_cfg=0.0, alpha_rew=0.0),
])
def test_every_objective_backpropagates_into_the_generator_only(trained, objective):
    """Regularisers, estimators, CFG modes and distances of the loss library on SDXL UNets."""
    _, world, models, _, _, _ = trained
    cfg = tiny(objective=objective)
    from di_star.noise import weight_fn
    gen = models.generator
    for m in (models.assistant, *models.frozen):
        m.requires_grad_(False)
    gen.zero_grad(set_to_none=True)
    s_psi = models.make_assistant_score(models.assistant)
    terms = generator_terms(world, gen, s_psi, models.reference_score, cfg, torch.Generator().manual_seed(0),
                            world.device, weight_fn("one", world.schedule))
    want = {"L_reg"} if objective["regulariser"] != "none" else set()
    want |= {"L_rew"} if objective.get("alpha_rew", 100.0) > 0 else set()
    want |= {"L_cfg"} if objective["guidance"] == "out" else set()
    assert set(terms) == want
    sum(v.mean() for v in terms.values()).backward()
    grads = [p.grad for p in gen.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    for m in (models.assistant, *models.frozen):
        assert all(p.grad is None for p in m.parameters())
    gen.zero_grad(set_to_none=True)


def test_tiny_sd15_same_code_path(tmp_path):
    result = train(tiny("tiny_sd15", run={"max_steps": 1, "ckpt_every": 1}, sd={"sample_every": 0}),
                   tmp_path, progress=False)
    assert result.step == 1 and np.isfinite(result.metrics["reward"])
    recipe = json.loads((tmp_path / "export" / "distar_recipe.json").read_text())
    assert recipe["timesteps"] == [999]
    assert json.loads((tmp_path / "export" / "model_index.json").read_text())["_class_name"] == \
        "StableDiffusionPipeline"


def test_config_file_on_top_of_a_preset(tmp_path):
    from di_star.cli import resolve_config
    f = tmp_path / "run.toml"
    f.write_text('[objective]\nalpha_rew = 10.0\nestimator = "x0"\n\n[sd]\ngrad_accum = 2\n'
                 'prompts = "bench:parti"\n')
    cfg = resolve_config("tiny_sdxl", f, None)
    assert (cfg.objective.alpha_rew, cfg.objective.estimator) == (10.0, "x0")
    assert (cfg.sd.grad_accum, cfg.sd.prompts, cfg.sd.reference) == (2, "bench:parti", "tiny_sdxl")
    f.write_text("[sd]\ngrad_acum = 2\n")
    with pytest.raises(DistarError, match="Unknown config key 'sd.grad_acum'.*grad_accum"):
        resolve_config("tiny_sdxl", f, None)


def test_bad_sd_options_are_clear_errors(tmp_path):
    from di_star.config import validate_sd
    from di_star.trainer import make_optimizer
    with pytest.raises(DistarError, match="mixed_precision 'bf8'"):
        validate_sd(tiny(sd={"mixed_precision": "bf8"}))
    with pytest.raises(DistarError, match="t_min < t_max"):
        validate_sd(tiny(sd={"t_min": 500, "t_max": 400}))
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(DistarError, match="pip install bitsandbytes"):
            make_optimizer([torch.nn.Parameter(torch.zeros(1))], 1e-3, (0.9, 0.999), 0.0, "adamw8bit")
    with pytest.raises(DistarError, match="no differentiable path"):
        train(tiny(sd={"reward": "fid"}, run={"max_steps": 1}), tmp_path / "fid", progress=False)
    with pytest.raises(DistarError, match="sd.optimizer = 'adamw'"):
        validate_sd(tiny(sd={"fsdp": True, "optimizer": "adamw8bit"}))
    assert get_preset("di_star_sdxl_fsdp").sd.fsdp and get_preset("di_star_sdxl_fsdp").sd.optimizer == "adamw"
    validate_sd(get_preset("di_star_sdxl_fsdp"))


def test_accelerate_fsdp_or_deepspeed_launch_points_at_sd_fsdp(tmp_path, monkeypatch):
    """accelerate's own FSDP / DeepSpeed plugins are refused with the launch that works."""
    import accelerate
    from accelerate.utils import DistributedType

    from di_star.sdxl.hooks import loop_options
    from di_star.trainer import make_accelerator

    class FakeAccelerator:
        def __init__(self, **kwargs):
            self.distributed_type = DistributedType.FSDP

    monkeypatch.setattr(accelerate, "Accelerator", FakeAccelerator)
    with pytest.raises(DistarError, match="fsdp_1node_8gpu.yaml.*di_star_sdxl_fsdp"):
        make_accelerator(loop_options(tiny()), tmp_path)


def test_accelerate_configs_load(tmp_path):
    """Every shipped accelerate config parses with accelerate's own loader."""
    from accelerate.commands.config.config_args import load_config_from_file

    files = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
    assert {f.name for f in files} >= {"ddp_1node_8gpu.yaml", "fsdp_1node_8gpu.yaml", "fsdp_2node_16gpu.yaml"}
    for f in files:
        c = load_config_from_file(str(f))
        assert c.num_processes >= 2, f



def test_bf16_autocast_eval_hook_and_export_of_the_loaded_frozen_weights(tmp_path):
    """bf16 mixed precision (CPU autocast) with the quick evaluation hook; the export carries the
    VAE and text encoders as loaded, not their bf16 working copies."""
    from evalsuite.models.architectures import tiny_pipeline_dir

    cfg = tiny(run={"max_steps": 1, "ckpt_every": 1},
               sd={"mixed_precision": "bf16", "eval_every": 1, "eval_limit": 2, "sample_every": 0})
    result = train(cfg, tmp_path, progress=False)
    assert result.step == 1 and np.isfinite(result.metrics["reward"])
    scores = [json.loads(ln) for ln in (tmp_path / "eval_scores.jsonl").read_text().splitlines()]
    assert scores[0]["step"] == 1 and np.isfinite(scores[0]["eval/tiny:pickscore"])
    assert len(list((tmp_path / "eval").rglob("*.png"))) == 2
    src = tiny_pipeline_dir("sdxl")
    for sub, f in (("vae", "diffusion_pytorch_model.safetensors"), ("text_encoder_2", "model.safetensors")):
        a, b = load_file(str(tmp_path / "export" / sub / f)), load_file(str(src / sub / f))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub


def test_lora_assistant_trains_adapters_only_and_resumes(tmp_path):
    pytest.importorskip("peft")
    cfg = tiny(run={"max_steps": 2, "ckpt_every": 1, "ema": 0.0}, sd={"assistant_lora_rank": 4, "sample_every": 0})
    from di_star.sdxl.world import SDWorld
    world = SDWorld(cfg)
    models = world.build()
    base = {n: p.detach().clone() for n, p in models.assistant.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in models.assistant.named_parameters() if p.requires_grad}
    assert lora and all("lora" in n for n in lora)
    train(cfg, tmp_path / "straight", world=world, progress=False)
    after = dict(models.assistant.named_parameters())
    assert all(torch.equal(base[n], after[n]) for n in base)
    assert any(not torch.equal(lora[n], after[n]) for n in lora)
    saved = load_file(str(tmp_path / "straight" / "ckpt-0000002" / "assistant.safetensors"))
    assert set(saved) == set(lora)
    train(cfg.replace(run={"max_steps": 1}), tmp_path / "resumed", progress=False)
    train(cfg, tmp_path / "resumed", progress=False)  # the same run, trained for longer
    a, b = ckpt_tensors(tmp_path / "straight"), ckpt_tensors(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_without_peft_is_a_clear_error(monkeypatch):
    from di_star.sdxl.world import _add_lora
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    with pytest.raises(DistarError, match="needs peft.*assistant_lora_rank = 0"):
        _add_lora(torch.nn.Linear(2, 2), 4, torch.float32, seed=0)
