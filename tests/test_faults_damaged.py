"""Damaged files: each gives exit 2 and one line naming the file and the fix, and nothing
already computed is lost (images and checkpoints stay on disk; a damaged store is rebuilt from
the images without regenerating them)."""
import json
import os

import pytest
import torch
from torch import nn

from distar.core.errors import DistarError
from evalsuite.store import STORE_FILENAME, ResultsStore
from fault_helpers import invoke, one_clear_error

EVAL = ["eval", "--model", "tiny_sdxl", "--bench", "tiny", "--limit", "2", "--batch-size", "2"]


def _pngs(root):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def good_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("good")
    r = invoke(*EVAL, "--out", out)
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_store_is_named_and_repaired_from_the_images(good_store, tmp_path, damage):
    import shutil
    out = tmp_path / "out"
    shutil.copytree(good_store, out)
    for extra in ("-wal", "-shm"):
        (out / (STORE_FILENAME + extra)).unlink(missing_ok=True)
    db = out / STORE_FILENAME
    db.write_bytes(db.read_bytes()[:2000] if damage == "truncate" else b"not a database" * 50)
    before = _pngs(out)
    assert len(before) == 2
    for cmd in (EVAL + ["--out", out], ["leaderboard", "--results", out, "--out", tmp_path / "lb"],
                ["gallery", "--bench", "tiny", "--results", out, "--out", tmp_path / "gal"]):
        one_clear_error(invoke(*cmd), str(db), "--repair-store", "images")
    assert _pngs(out) == before, "images must survive"
    r = invoke(*EVAL, "--out", out, "--repair-store")
    assert r.exit_code == 0, r.output
    assert list(out.glob(f"{STORE_FILENAME}.damaged-*")), "the damaged file is kept aside"
    assert _pngs(out) == before, "repaired from the PNGs: none regenerated (same bytes and mtimes)"
    rows = ResultsStore(out).table("images")
    assert sorted(rows.prompt_index) == [0, 1]


def test_leaderboard_opens_the_store_read_only(good_store, tmp_path):
    db = good_store / STORE_FILENAME
    before = db.read_bytes()
    store = ResultsStore(good_store, readonly=True)
    import sqlite3
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store._connect().execute("DELETE FROM runs")
    r = invoke("leaderboard", "--results", good_store, "--out", tmp_path / "lb")
    assert r.exit_code == 0, r.output
    assert db.read_bytes() == before


@pytest.mark.parametrize("args, needle", [
    (["--batch-size", "-1"], "--batch-size -1"),
    (["--batch-size", str(10**12)], "--batch-size 1000000000000"),
    (["--images-per-prompt", str(10**12)], "--images-per-prompt"),
    (["--device", "gpu"], "did you mean cuda"),
    (["--device", "tpu9"], "Unknown --device 'tpu9'"),
    (["--skip-generation"], "--skip-generation"),
])
def test_bad_eval_options(tmp_path, args, needle):
    one_clear_error(invoke(*EVAL, *args, "--out", tmp_path / "o"), needle)


# Trainers ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "run"
    r = invoke("train", "--preset", "gmm/di_star_in", "--max-steps", "2", "--out", out)
    assert r.exit_code == 0, r.output
    return out


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage, file, needle", [
    ("latest_garbage", "latest.json", "not valid JSON"),
    ("latest_dangling", "latest.json", "missing"),
    ("ckpt_truncated", "ckpt-0000002", "damaged"),
    ("config_garbage", "config.json", "not valid JSON"),
])
def test_damaged_toy_run_dir(toy_run, tmp_path, damage, file, needle):
    d = _copy(toy_run, tmp_path / "run")
    if damage == "latest_garbage":
        (d / "latest.json").write_text("{oops")
    elif damage == "latest_dangling":
        (d / "latest.json").write_text(json.dumps({"step": 9, "name": "ckpt-0000009"}))
    elif damage == "ckpt_truncated":
        f = d / "ckpt-0000002" / "generator.safetensors"
        f.write_bytes(f.read_bytes()[:100])
    else:
        (d / "config.json").write_text("[1, 2")
    # config.json is rewritten (max_steps grew) before the checkpoint is read; all else must stay
    kept = {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file() and p.name not in (".distar.lock", "config.json")}
    line = one_clear_error(invoke("train", "--preset", "gmm/di_star_in", "--max-steps", "3",
                                  "--out", d), str(d), file, needle, "Fix:")
    assert "ckpt-0000002" in line or damage == "config_garbage"
    assert {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file() and p.name not in (".distar.lock", "config.json")} == kept, \
        "nothing may be deleted or rewritten by a refused resume"


def test_damaged_sd_checkpoint_names_the_file(tmp_path):
    """The checkpoint folder (every world's): a corrupt pointer, a dangling one, a truncated file."""
    from di_star import checkpoint as ck
    gen, psi = nn.Linear(2, 2), nn.Linear(2, 2)
    opts = {"opt_g": torch.optim.Adam(gen.parameters()), "opt_psi": torch.optim.Adam(psi.parameters())}
    ck.save_checkpoint(tmp_path, 2, generator=gen.state_dict(), assistant=psi.state_dict(), ema=None,
                       optimizers={k: o.state_dict() for k, o in opts.items()},
                       rng_states=[torch.Generator().get_state()], state={})
    (tmp_path / "latest.json").write_text("{oops")
    with pytest.raises(DistarError, match=r"latest.json is damaged.*Fix: delete .*ckpt-0000002"):
        ck.latest_checkpoint(tmp_path)
    (tmp_path / "latest.json").write_text(json.dumps({"step": 9, "name": "ckpt-0000009"}))
    with pytest.raises(DistarError, match="ckpt-0000009, which is missing"):
        ck.latest_checkpoint(tmp_path)
    (tmp_path / "latest.json").write_text(json.dumps({"step": 2, "name": "ckpt-0000002"}))
    f = tmp_path / "ckpt-0000002" / "generator.safetensors"
    f.write_bytes(f.read_bytes()[:50])
    with pytest.raises(DistarError, match=r"ckpt-0000002 is damaged.*Fix:"):
        ck.load_checkpoint(ck.latest_checkpoint(tmp_path), generator=gen, assistant=psi,
                           assistant_names=None, ema=None, optimizers=opts)
    assert (tmp_path / "ckpt-0000002" / "state.json").exists(), "nothing deleted"


def test_unwritable_train_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    one_clear_error(invoke("train", "--preset", "gmm/di_star_in", "--max-steps", "1",
                           "--out", blocker / "sub"), str(blocker / "sub"), "--out")


def test_stats_line_cut_by_a_kill_does_not_block_resume(toy_run, tmp_path):
    d = _copy(toy_run, tmp_path / "run")
    with open(d / "stats.jsonl", "a") as f:
        f.write('{"step": 3, "assist')  # a kill mid-append
    r = invoke("train", "--preset", "gmm/di_star_in", "--max-steps", "3", "--out", d)
    assert r.exit_code == 0, r.output
    steps = [json.loads(ln)["step"] for ln in (d / "stats.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 3


@pytest.mark.parametrize("content, says", [("{not json", "not valid JSON"),
                                           ('{"unet": ["diffusers", "UNet2DConditionModel"]}', "_class_name"),
                                           ('{"_class_name": ["a", "b"]}', "_class_name")])
def test_damaged_model_index_names_the_file(tmp_path, content, says):
    from evalsuite.models.loading import read_pipeline_recipe
    (tmp_path / "model_index.json").write_text(content)
    with pytest.raises(DistarError) as e:
        read_pipeline_recipe(tmp_path)
    assert "model_index.json" in str(e.value) and says in str(e.value)
