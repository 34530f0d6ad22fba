"""The mini world's build (`distar lab build mini`) and its shipped weights.

- the shipped folder (di_star/mini/data) matches its manifest (sha256 of every file, nothing
  unlisted), stays within the 40 MB safetensors budget and is package data;
- a reduced-size build runs every stage end to end, writes the contract's layout, verifies, is
  loaded by the normal loaders (`mini_ref` / `mini_onestep` / the mini metrics through
  DISTAR_MINI_DIR) and resumes instead of retraining;
- bad input gives one clear error.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from distar.core.paths import portable_path
from di_star.mini import weights as mw

LAYOUT = ("pipeline/model_index.json", "pipeline/distar_recipe.json",
          "pipeline/unet/config.json", "pipeline/vae/config.json",
          "pipeline/text_encoder/config.json", "pipeline/text_encoder_2/config.json",
          "pipeline/tokenizer/vocab.json", "pipeline/tokenizer_2/tokenizer_config.json",
          "pipeline/scheduler/scheduler_config.json", "onestep/unet/config.json",
          "onestep/distar_recipe.json", "clip/config.json", "clip/preprocessor_config.json",
          "proxy_reward/model.safetensors", "proxy_reward/preprocessor_config.json",
          "aesthetic/model.safetensors", "aesthetic/config.json",
          "classifier/config.json", "manifest.json")


def test_shipped_world_matches_its_manifest():
    root = mw.SHIPPED_DIR
    assert (root / mw.MANIFEST).is_file(), "di_star/mini/data/manifest.json is missing"
    assert mw.verify_manifest(root) == []
    m = mw.read_manifest(root)
    for field in ("command", "git_commit", "seed", "size", "wall_s"):
        assert field in m, field
    assert m["command"].startswith("distar lab build mini")
    from dataclasses import fields

    from di_star.mini.configs import SIZES, BuildSize
    # The recorded command rebuilds it as shipped: every recorded field as in the code, and every
    # field added since at its default (a default is what builds did before the field existed).
    size = SIZES[m["size"]].__dict__
    assert {k: size[k] for k in m["sizes"]} == m["sizes"]
    assert all(size[f.name] == f.default for f in fields(BuildSize) if f.name not in m["sizes"])
    sizes = [v["bytes"] for k, v in m["files"].items() if k.endswith(".safetensors")]
    assert sum(sizes) == m["safetensors_bytes"] <= 40_000_000
    for rel in LAYOUT:
        assert (root / rel).is_file(), rel


def test_shipped_world_is_package_data():
    """pyproject's package-data glob for di_star covers every manifest file."""
    import tomllib
    py = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    globs = py["tool"]["setuptools"]["package-data"]["di_star"]
    pkg = mw.SHIPPED_DIR.parents[1]
    covered = {str(p.relative_to(pkg)) for g in globs for p in pkg.glob(g) if p.is_file()}
    listed = {f"mini/data/{rel}" for rel in mw.read_manifest(mw.SHIPPED_DIR)["files"]}
    assert listed <= covered, sorted(listed - covered)[:5]


@pytest.fixture(scope="module")
def reduced_world(tmp_path_factory):
    from di_star.mini.build import build_world
    out = tmp_path_factory.mktemp("mini") / "world"
    manifest = build_world(out, seed=3, size="reduced", quiet=True, threads=1)
    return out, manifest


@pytest.mark.slow
def test_reduced_build_end_to_end(reduced_world, monkeypatch):
    out, manifest = reduced_world
    for rel in LAYOUT:
        assert (out / rel).is_file(), rel
    assert mw.verify_manifest(out) == []
    assert manifest["seed"] == 3 and manifest["size"] == "reduced"
    assert not (out / ".work").exists()
    assert set(manifest["wall_s"]) >= {"vae", "clip", "reference", "samples", "onestep", "proxy",
                                       "aesthetic", "classifier"}
    zs = manifest["stages"]["clip"]["zero_shot"]  # the CLIP's shape check, recorded
    assert set(zs) == {"prompt", "colour", "shape", "prompt_paraphrased", "colour_paraphrased",
                       "shape_paraphrased"} and all(0 <= v <= 1 for v in zs.values())
    vae = json.loads((out / "pipeline/vae/config.json").read_text())
    assert vae["scaling_factor"] > 0 and vae["scaling_factor"] != 1.0  # set from the latent std

    # A second run finds the verified build and trains nothing.
    from di_star.mini.build import build_world
    assert build_world(out, seed=3, size="reduced", quiet=True) == manifest

    # The registry's mini models and metrics load it through DISTAR_MINI_DIR, as a user would.
    monkeypatch.setenv(mw.ENV_VAR, str(out))
    from di_star.mini.plugin import register_models
    from evalsuite.models import specs
    from evalsuite.models import fresh_pipeline
    specs.MODELS._entries.pop("mini_ref")
    specs.MODELS._entries.pop("mini_onestep")
    try:
        register_models()
        for name in ("mini_ref", "mini_onestep"):
            spec = specs.resolve_model(name)
            assert spec.revision == f"world-{mw.manifest_digest(out)}"
            pipe = fresh_pipeline(spec, torch.device("cpu"))
            kw = {"timesteps": list(spec.timesteps)} if spec.timesteps else \
                {"num_inference_steps": 2}
            img = pipe(["a red circle"], guidance_scale=spec.guidance, height=64, width=64,
                       latents=torch.randn(1, *spec.latent_shape()), **kw).images[0]
            assert img.size == (64, 64)
    finally:
        monkeypatch.delenv(mw.ENV_VAR)
        specs.MODELS._entries.pop("mini_ref")
        specs.MODELS._entries.pop("mini_onestep")
        register_models()
    from PIL import Image

    from evalsuite.metrics import load_metric
    images = [Image.new("RGB", (64, 64), (220, 40, 40)), Image.new("RGB", (64, 64), (40, 80, 225))]
    for name in ("mini_pickscore", "mini_aesthetic", "mini_clip"):
        metric = load_metric(name, device="cpu", world_dir=str(out))
        assert metric.info.name == name
        assert mw.manifest_digest(out) in metric.info.version
        s = metric.score(images, ["a red circle", "a blue square"])
        assert s.shape == (2,) and np.isfinite(s).all()
        x = torch.rand(2, 3, 64, 64, requires_grad=True)
        metric.score_tensor(x, ["a red circle", "a blue square"]).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0  # the reward reaches the pixels


@pytest.mark.slow
def test_manifest_check_catches_changes(reduced_world, tmp_path):
    out, _ = reduced_world
    copy = tmp_path / "w"
    shutil.copytree(out, copy)
    f = copy / "aesthetic" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1] + b"\x00")
    (copy / "stray.txt").write_text("x")
    (copy / "clip" / "config.json").unlink()
    problems = mw.verify_manifest(copy)
    assert "changed: aesthetic/model.safetensors" in problems
    assert "not in manifest: stray.txt" in problems
    assert "missing: clip/config.json" in problems


def test_bad_input_is_one_clear_error(tmp_path):
    from typer.testing import CliRunner

    from distar.cli import app
    runner = CliRunner()
    cases = [(["lab", "build", "maxi", "--out", str(tmp_path / "a")], "Unknown world 'maxi'"),
             (["lab", "build", "mini", "--out", str(tmp_path / "a"), "--size", "huge"],
              "Unknown --size 'huge'"),
             (["lab", "build", "mini", "--out", str(tmp_path / "a"), "--stages", "vae,unet"],
              "Unknown stage(s) unet")]
    (tmp_path / "file").write_text("x")
    cases.append((["lab", "build", "mini", "--out", str(tmp_path / "file")], "is not a folder"))
    for args, message in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert message in " ".join(r.output.split()), r.output
        assert "Traceback" not in r.output
    cases = [(["--reuse", str(tmp_path / "nothing")], "holds no finished build")]
    for args, message in cases:
        r = runner.invoke(app, ["lab", "build", "mini", "--out", str(tmp_path / "c"), "--size",
                                "reduced", "--stages", "vae"] + args)
        assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output
    # A stage whose inputs are not built says which one to build first.
    r = runner.invoke(app, ["lab", "build", "mini", "--out", str(tmp_path / "b"), "--size",
                            "reduced", "--stages", "onestep"])
    assert r.exit_code == 2 and "stage 'reference'" in " ".join(r.output.split()), r.output


def test_shape_swapped_changes_one_shape_and_nothing_else():
    from dataclasses import replace

    from di_star.mini.build import shape_swapped
    from di_star.mini.scene import parse_caption, training_pairs
    rng = np.random.default_rng(0)
    swapped = 0
    for _, caption in training_pairs(200, seed=3):
        neg = shape_swapped(caption, rng)
        req = parse_caption(caption)
        if all(g.shape is None for g in req.groups):
            assert neg is None
            continue
        wrong = parse_caption(neg)
        assert len(wrong.groups) == len(req.groups) and wrong.relation == req.relation
        diff = [(a, b) for a, b in zip(req.groups, wrong.groups) if a != b]
        assert len(diff) == 1, (caption, neg)
        a, b = diff[0]
        assert a.shape != b.shape and replace(b, shape=a.shape) == a, (caption, neg)
        swapped += 1
    assert swapped > 150
    assert shape_swapped("a big shape on white", rng) is None


def test_clip_loss_with_no_valid_negative_is_plain_infonce():
    """Masked-out hard negatives leave CLIP's loss exactly as without them; valid ones raise it
    (more competitors for each image)."""
    from transformers import CLIPConfig, CLIPModel

    from di_star.mini.build import _clip_loss, clip_tokenizer, tokenize
    from di_star.mini.configs import CLIP_TEXT, CLIP_VISION, PROJECTION_DIM
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=CLIP_TEXT, vision_config=CLIP_VISION, projection_dim=PROJECTION_DIM))
    caps = ["a red circle", "a blue star", "a red circle", "two green squares"]
    negs = ["a red cross", "a blue disc", "a red box", "two green stars"]
    tok = clip_tokenizer()
    enc, neg = tokenize(tok, caps, 32), tokenize(tok, negs, 32)
    px = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        plain = _clip_loss(model, px, enc["input_ids"], enc["attention_mask"])
        masked = _clip_loss(model, px, enc["input_ids"], enc["attention_mask"], neg["input_ids"],
                            neg["attention_mask"], torch.zeros(4, dtype=torch.bool))
        hard = _clip_loss(model, px, enc["input_ids"], enc["attention_mask"], neg["input_ids"],
                          neg["attention_mask"], torch.ones(4, dtype=torch.bool))
    assert torch.allclose(plain, masked, atol=1e-6)
    assert hard > plain


def test_reference_stage_refuses_a_clip_that_cannot_tell_shapes(tmp_path, monkeypatch):
    """The gate before the most expensive stage: a CLIP below the size's zero-shot shape floor
    stops the build with one clear error, and the built CLIP is kept."""
    from dataclasses import replace

    from distar.core.errors import DistarError
    import di_star.mini.build as build
    out = tmp_path / "w"
    build.build_world(out, seed=3, size="reduced", quiet=True, stages=("vae", "clip"))
    monkeypatch.setitem(build.SIZES, "reduced", replace(build.SIZES["reduced"], clip_min_shape=1.01))
    with pytest.raises(DistarError, match="right shape for only .* needs 101%"):
        build.build_world(out, seed=3, size="reduced", quiet=True, stages=("reference",))
    assert (out / "clip" / "model.safetensors").is_file() and not (out / "pipeline").exists()


def test_training_scene_is_the_scene_of_the_training_pair():
    """The labels the CLIP's vision tower learns from are the scene the image was rendered from:
    every shape and colour its caption names is in that scene, and the scene renders to the
    same pixels."""
    from di_star.mini import scene as world
    from di_star.mini.build import scene_labels
    scenes = [world.training_scene(5, i) for i in range(200)]
    y = scene_labels(scenes).numpy()
    ns, nc = len(world.SHAPES), len(world.COLOURS)
    for i, scene in enumerate(scenes):
        image, caption = world.training_pair(5, i)
        rng = np.random.default_rng([5, i])
        assert world.sample_scene(rng) == scene
        assert np.array_equal(np.asarray(world.render(scene, rng)), np.asarray(image))
        for g in world.parse_caption(caption).groups:
            if g.shape:
                assert y[i, world.SHAPES.index(g.shape)] == 1, caption
            if g.colour:
                assert y[i, ns + world.COLOURS.index(g.colour)] == 1, caption
        kinds = {(o.shape, o.colour) for o in scene.objects}
        assert y[i].sum() == len({o.shape for o in scene.objects}) + \
            len({o.colour for o in scene.objects}) + len(kinds)
        for s, c in kinds:
            assert y[i, ns + nc + nc * world.SHAPES.index(s) + world.COLOURS.index(c)] == 1


def test_clip_vision_steps_train_the_tower_then_freeze_it(monkeypatch):
    """With clip_vision_steps, the vision tower moves during its labelled steps and not at all
    during the contrastive ones (LiT's locked tower); without labels the CLIP stage refuses to
    start."""
    from dataclasses import replace
    import di_star.mini.build as build
    from di_star.mini import scene as world
    size = replace(build.SIZES["reduced"], clip_vision_steps=3, clip_steps=3, clip_batch=8)
    px, caps = build.render_pairs(16, seed=1)
    labels = build.scene_labels([world.training_scene(1, i) for i in range(16)])
    seen = {}
    real = build.pretrain_vision

    def spy(tower, *args, **kw):
        seen["before"] = {k: v.clone() for k, v in tower.state_dict().items()}
        real(tower, *args, **kw)
        seen["after"] = {k: v.clone() for k, v in tower.state_dict().items()}
    monkeypatch.setattr(build, "pretrain_vision", spy)
    model = build.train_clip(px, caps, size, seed=1, log=build.Log(quiet=True), labels=labels)
    w = "embeddings.patch_embedding.weight"
    assert not torch.equal(seen["before"][w], seen["after"][w])
    final = model.vision_model.state_dict()
    # the saved CLIP is fp16-rounded: frozen weights equal the pretrained ones up to that rounding
    assert all(torch.equal(final[k], v.half().float()) for k, v in seen["after"].items())
    with pytest.raises(ValueError, match="scene_labels"):
        build.train_clip(px, caps, size, seed=1, log=build.Log(quiet=True))


@pytest.mark.slow
def test_rebuild_reuses_exactly_the_stages_whose_inputs_did_not_change(reduced_world, tmp_path,
                                                                       monkeypatch):
    """`--reuse` copies a finished build's stages whose inputs (seed, size fields, upstream
    stages) are unchanged and retrains the rest: a new CLIP recipe keeps the VAE and the
    classifier and retrains the CLIP and everything downstream of it."""
    from dataclasses import replace

    import di_star.mini.build as build
    from distar.core.errors import DistarError
    source, _ = reduced_world
    monkeypatch.setitem(build.SIZES, "reduced", replace(build.SIZES["reduced"], clip_steps=5))
    out = tmp_path / "rebuilt"
    build.build_world(out, seed=3, size="reduced", quiet=True, threads=1, stages=("clip",),
                      reuse=source)
    keys = build.stage_keys(3, build.SIZES["reduced"])
    done = {s for s in build.STAGES if build.stage_done(out, s, keys[s])}
    assert done == {"vae", "classifier", "clip"}
    assert build.stage_done(out, "vae", keys["vae"])["reused_from"] == portable_path(source)
    assert "reused_from" not in build.stage_done(out, "clip", keys["clip"])
    vae = out / build.WORK / "vae" / "diffusion_pytorch_model.safetensors"
    assert vae.read_bytes() == (source / "pipeline" / "vae" / vae.name).read_bytes()
    # a failed or changed source is refused before anything is copied
    (source / "stray.txt").write_text("x")
    try:
        with pytest.raises(DistarError, match="not in manifest: stray.txt"):
            build.build_world(tmp_path / "other", seed=3, size="reduced", quiet=True, reuse=source)
    finally:
        (source / "stray.txt").unlink()


@pytest.mark.slow
def test_a_second_reference_cycle_continues_a_finished_reference(reduced_world, tmp_path, monkeypatch):
    """`unet_restart_steps` trains a second DSM cycle from the first cycle's weights. `--reuse`
    of a build whose reference equals the first cycle trains only the second cycle, and gives
    the very reference that training both cycles from scratch gives."""
    from dataclasses import replace

    import di_star.mini.build as build
    source, _ = reduced_world
    monkeypatch.setitem(build.SIZES, "reduced", replace(build.SIZES["reduced"], unet_restart_steps=2))
    keys = build.stage_keys(3, build.SIZES["reduced"])
    continued, scratch = tmp_path / "continued", tmp_path / "scratch"
    build.build_world(continued, seed=3, size="reduced", quiet=True, threads=1,
                      stages=("reference",), reuse=source)
    assert build.stage_done(continued, "reference", keys["reference"])["first_cycle"] == \
        {"reused_from": portable_path(source)}
    build.build_world(scratch, seed=3, size="reduced", quiet=True, threads=1,
                      stages=("vae", "clip", "reference"))
    assert build.stage_done(scratch, "reference", keys["reference"])["first_cycle"] == "trained here"
    unet = Path("pipeline/unet/diffusion_pytorch_model.safetensors")
    assert (continued / unet).read_bytes() == (scratch / unet).read_bytes()
    assert (continued / unet).read_bytes() != (source / unet).read_bytes()  # the second cycle trained
