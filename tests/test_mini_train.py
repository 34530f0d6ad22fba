"""DI* on the mini world through the SD trainer (issue 11): the `mini/*` presets, and the same
code path as di_star_sdxl on a folder in the mini world's layout (mini_contract.md) built from
tiny random configs: pipeline/ (the reference), onestep/unet/ (the init), proxy_reward/ (a
PickScore-architecture CLIPModel), read through `pickscore@DIR`."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from di_star.errors import DistarError
from di_star.presets import PRESETS, TABLE_ORDER, get_preset, world_scales
from di_star.sdxl.presets import MINI_TRAIN_PROMPTS
from di_star.trainer import train
from evalsuite.models.specs import MODELS, ComponentSource, ModelSpec

ONESTEP_T = 399


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def mini_folder(tmp_path_factory):
    """The mini world's folder layout from tiny random configs, and a registered one-step spec
    reading onestep/unet/ over pipeline/ (as the shipped `mini_onestep` does)."""
    from evalsuite.models.architectures import tiny_pipeline_dir
    from di_star.sdxl.reward import random_pickscore

    root = tmp_path_factory.mktemp("mini")
    shutil.copytree(tiny_pipeline_dir("sdxl"), root / "pipeline")
    (root / "pipeline" / "distar_recipe.json").write_text(json.dumps({"steps": 4, "guidance": 3.0, "resolution": 64}))
    shutil.copytree(root / "pipeline" / "unet", root / "onestep" / "unet")
    proxy = random_pickscore(torch.device("cpu"), "tiny", seed=3)
    for part in (proxy.model, proxy.image_processor, proxy.tokenizer):
        part.save_pretrained(root / "proxy_reward")
    name = f"test_mini_onestep_{root.name}"
    MODELS.add(name, ModelSpec(name=name, description="tiny random one-step init in the mini layout",
                               pipeline="StableDiffusionXLPipeline", repo=str(root / "pipeline"),
                               unet=ComponentSource(repo=str(root / "onestep"), subfolder="unet"),
                               scheduler="LCMScheduler", steps=1, guidance=0.0, timesteps=(ONESTEP_T,),
                               dtype="float32", resolution=64))
    return root, name


def on_folder(preset: str, root: Path, gen: str, **over):
    """A mini preset pointed at the test folder, with CPU-test sizes."""
    sd = {"reference": f"path:{root / 'pipeline'}", "generator": gen, "reward": f"pickscore@{root / 'proxy_reward'}",
          "sample_every": 0, **over.pop("sd", {})}
    cfg = get_preset(preset).replace(sd=sd, optim={"batch_size": 2, "assistant_steps_per_g_step": 1},
                                     run={"max_steps": 1, "ckpt_every": 1, "log_every": 1},
                                     world={"eval_samples": 2})
    return cfg.replace(**over) if over else cfg


def test_mini_presets_mirror_table2_and_the_frontiers():
    names = set(PRESETS.names())
    for row in TABLE_ORDER:
        assert f"mini/{row}" in names
    s = world_scales("mini")
    for reg, alphas in s.frontier.items():
        for a in alphas:
            cfg = get_preset(f"mini/frontier/{reg}/{a:g}")
            assert (cfg.objective.regulariser, cfg.objective.alpha_rew, cfg.objective.guidance) == (reg, a, "none")
    rows = {r: get_preset(f"mini/{r}").objective for r in TABLE_ORDER}
    assert (rows["kl"].regulariser, rows["kl"].alpha_rew, rows["kl"].guidance) == ("kl", 0, "none")
    assert (rows["diff_instruct"].regulariser, rows["diff_instruct"].alpha_rew, rows["diff_instruct"].guidance) == ("kl", 0, "in")
    assert (rows["di_pp"].regulariser, rows["di_pp"].alpha_rew) == ("kl", s.rewards[2])
    assert (rows["di_star_out"].guidance, rows["sim"].alpha_rew, rows["sim"].guidance) == ("out", 0, "in")
    assert [rows[r].alpha_rew for r in ("di_star_in_low", "di_star_in_mid", "di_star_in")] == list(s.rewards)
    assert rows["di_star_in_x0"].estimator == "x0" and rows["di_star_in"].estimator == "exact"
    cfg = get_preset("mini/di_star_in")
    # Only the preset differs from di_star_sdxl: the same SD world and settings, mini weights.
    assert cfg.world.name == "sdxl" == get_preset("di_star_sdxl").world.name
    assert cfg.sd.reward == "mini_pickscore"
    assert Path(cfg.sd.prompts) == MINI_TRAIN_PROMPTS and len(MINI_TRAIN_PROMPTS.read_text().splitlines()) >= 1000


def test_mini_di_star_in_trains_on_the_mini_layout_and_exports(mini_folder, tmp_path):
    root, gen = mini_folder
    cfg = on_folder("mini/di_star_in", root, gen, run={"max_steps": 2, "ckpt_every": 2})
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.step == 2 and torch.isfinite(torch.tensor(result.metrics["reward"]))
    recipe = json.loads((tmp_path / "run" / "export" / "distar_recipe.json").read_text())
    assert recipe["timesteps"] == [ONESTEP_T] and recipe["resolution"] == 64
    assert (recipe["latent_channels"], recipe["vae_scale"]) == (4, 8)
    assert recipe["training"]["reward"].startswith("pickscore@")
    from evalsuite.models.loading import spec_from_path
    spec = spec_from_path(str(tmp_path / "run" / "export"))
    assert spec.latent_shape() == (4, 8, 8)


@pytest.mark.parametrize("preset", ["mini/kl", "mini/di_star_in_noreward"])
def test_kl_and_score_paths_move_the_generator(mini_folder, preset):
    """No reward, no CFG: only the regulariser (after the assistant's DSM step) moves the generator."""
    from di_star.sdxl.world import SDWorld
    from di_star.noise import weight_fn
    from di_star.trainer import assistant_step, generator_terms

    root, gen = mini_folder
    cfg = on_folder(preset, root, gen)
    world = SDWorld(cfg)
    m = world.build()
    rng = torch.Generator().manual_seed(0)
    s_psi = m.make_assistant_score(m.assistant)
    opt = torch.optim.Adam(m.assistant.parameters(), lr=1e-3)
    for _ in range(2):  # the assistant starts as the reference: y = s_psi - s_ref is 0 until it moves
        loss = assistant_step(world, s_psi, m.generator, cfg, rng, "cpu", weight_fn("sigma2", world.schedule))
        opt.zero_grad()
        loss["assistant_dsm"].mean().backward()
        opt.step()
    m.assistant.requires_grad_(False)
    terms = generator_terms(world, m.generator, s_psi, m.reference_score, cfg, rng, "cpu",
                            weight_fn(cfg.objective.w, world.schedule))
    assert set(terms) == {"L_reg"}
    terms["L_reg"].mean().backward()
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in m.generator.parameters() if p.grad is not None))
    assert torch.isfinite(norm) and norm > 0


def test_mini_reward_and_timestep_errors_are_clear(mini_folder, tmp_path):
    from di_star.config import validate_sd
    from di_star.sdxl.world import SDWorld

    root, gen = mini_folder
    with pytest.raises(DistarError, match="weights folder .*nowhere does not exist"):
        validate_sd(on_folder("mini/di_star_in", root, gen, sd={"reward": f"pickscore@{tmp_path / 'nowhere'}"}))
    with pytest.raises(DistarError, match="Unknown reward 'pickscor'"):
        validate_sd(on_folder("mini/di_star_in", root, gen, sd={"reward": "pickscor"}))
    with pytest.raises(DistarError, match=f"Fix: set sd.generator_timestep = {ONESTEP_T}"):
        SDWorld(on_folder("mini/di_star_in", root, gen, sd={"generator_timestep": 250}))


@pytest.mark.slow
def test_ablation_driver_trains_evaluates_and_writes_the_mini_tables(mini_folder, tmp_path):
    """scripts/mini_ablation.py's code on the tiny folder: training runs, `distar eval` of the
    reference, init and exports, `distar leaderboard --suite mini --baseline`, findings, figures."""
    from di_star.mini.ablation import Scale, run_ablation

    root, gen = mini_folder
    ref = f"path:{root / 'pipeline'}"
    sd = {"reference": ref, "generator": gen, "reward": f"pickscore@{root / 'proxy_reward'}"}
    scale = Scale("test", 1, 1, 2, ("kl", "di_star_in"), False, (0, 1), {"tiny": 2}, 2, eval_samples=2,
                  sample_grids=False)
    r = run_ablation(tmp_path / "abl", tmp_path / "lb", scale, workers=1, sd=sd, reference=ref, init=gen,
                     metrics=["mini_gold"], benches=("tiny",))
    names = {p.name for p in r["files"]}
    assert {"mini_table1.md", "mini_table2_ablation.md", "mini_paired_tests.md", "mini_findings.md",
            "mini_samples.png"} <= names
    t2 = (tmp_path / "lb" / "mini_table2_ablation.md").read_text()
    # Rows carry the display names (a training export is named after its run folder).
    assert "| kl " in t2 and "| di_star_in@s1 " in t2 and "| score | in | exact |" in t2
    paired = (tmp_path / "lb" / "mini_paired_tests.md").read_text()
    assert f"against `{gen}`" in paired and "p=" in paired
