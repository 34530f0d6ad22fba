"""Planted files: a malicious pickle in a pipeline folder is refused without running it; text
that looks like rich markup prints verbatim; another process's or the user's files are never
deleted (live temp files, gallery output folder)."""
import json
import os
import pickle
import shutil

import pytest
from PIL import Image

from distar.core.runlock import remove_dead_temps, temp_tag
from fault_helpers import dead_pid, invoke, one_clear_error


class _Bomb:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_text_encoder_is_refused_and_not_run(tmp_path):
    from evalsuite.models.architectures import tiny_pipeline_dir
    d = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline_dir("sdxl"), d)
    for f in (d / "text_encoder").glob("*.safetensors"):
        f.unlink()
    marker = tmp_path / "PWNED"
    (d / "text_encoder" / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Bomb(marker)}))
    one_clear_error(invoke("eval", "--model", f"path:{d}", "--bench", "tiny", "--limit", "1",
                           "--out", tmp_path / "o"), "Refused", str(d), "Fix:")
    assert not marker.exists()


@pytest.mark.parametrize("args, verbatim", [
    (["eval", "--model", "path:/nonexistent/[/x]", "--bench", "tiny"], "path:/nonexistent/[/x]"),
    (["eval", "--model", "tiny_sdxl", "--bench", "file:/nonexistent/[bold]x[/x].txt"],
     "/nonexistent/[bold]x[/x].txt"),
])
def test_markup_like_text_prints_verbatim(tmp_path, args, verbatim):
    one_clear_error(invoke(*args, "--out", tmp_path / "o"), verbatim)


def test_config_key_in_brackets_prints_verbatim(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[optim]\n"[optim]" = 1\n')
    one_clear_error(invoke("train", "--preset", "gmm/di_star_in", "--config", cfg, "--out",
                           tmp_path / "o"), "'optim.[optim]'", "[optim]:")


def test_long_fix_is_not_wrapped(tmp_path):
    """A command or path inside a message stays on one line whatever the terminal width."""
    deep = tmp_path / ("a" * 60) / ("b" * 60)
    r = invoke("leaderboard", "--results", deep, "--out", tmp_path / "lb", env={"COLUMNS": "40"})
    one_clear_error(r, str(deep / "results.sqlite"))


def test_only_dead_writers_temp_files_are_removed(tmp_path):
    host = temp_tag().split("@")[1]
    dead = tmp_path / f".x.png.pid{dead_pid()}@{host}.1.tmp"
    live = tmp_path / f".y.png.{temp_tag()}.1.tmp"
    parent_live = tmp_path / f".z.png.pid{os.getppid()}@{host}.1.tmp"
    other_host = tmp_path / f".w.png.pid{dead_pid()}@some-other-host.1.tmp"
    untagged = tmp_path / ".v.png.1234.tmp"
    dead_dir = tmp_path / f".export.pid{dead_pid()}@{host}.abc.tmp"
    for f in (dead, live, parent_live, other_host, untagged):
        f.write_bytes(b"")
    dead_dir.mkdir()
    (dead_dir / "unet.safetensors").write_bytes(b"x")
    removed = remove_dead_temps(tmp_path, ".*.tmp")
    assert sorted(removed) == sorted([dead, dead_dir])
    assert live.exists() and parent_live.exists() and other_host.exists() and untagged.exists()


def test_trainer_resume_cleans_dead_temps(tmp_path):
    from di_star.trainer import make_run_dir
    host = temp_tag().split("@")[1]
    pid = dead_pid()
    planted = [tmp_path / f".ckpt-0000002.safetensors.pid{pid}@{host}.q.tmp",
               tmp_path / f".latest.json.pid{pid}@{host}.r.tmp"]
    for f in planted:
        f.write_bytes(b"partial")
    ckpt_dir = tmp_path / f".ckpt-0000004.pid{pid}@{host}.s.tmp"
    ckpt_dir.mkdir()
    live = tmp_path / f".latest.json.{temp_tag()}.t.tmp"
    live.write_bytes(b"")
    make_run_dir(tmp_path)
    assert not any(f.exists() for f in planted) and not ckpt_dir.exists() and live.exists()


def test_gallery_deletes_only_what_it_wrote(tmp_path, monkeypatch):
    from evalsuite.gallery import IMG_DIR, write_gallery
    from evalsuite.store import ImageRow, ResultsStore
    res = tmp_path / "results"
    store = ResultsStore(res)
    rows = []
    for i, colour in enumerate([(200, 0, 0), (0, 200, 0)]):
        rel = f"images/m/tiny/{i:05d}_0.png"
        (res / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), colour).save(res / rel)
        rows.append(ImageRow(recipe_hash="m" * 12, bench="tiny", bench_version="1", prompt_index=i,
                             k=0, model="m", prompt=f"p{i}", seed=i, path=rel, sha256="0" * 64))
    store.add_images(rows)
    out = tmp_path / "gallery"
    users = out / IMG_DIR / "holiday_256.jpg"   # the user's file, named like a thumbnail
    users.parent.mkdir(parents=True)
    users.write_bytes(b"mine")
    write_gallery(res, "tiny", None, out)
    first = set(json.loads((out / ".distar-gallery.json").read_text())["thumbnails"])
    assert len(first) == 2
    # One image changes: its old thumbnail (ours) goes, the user's file stays.
    Image.new("RGB", (32, 32), (0, 0, 200)).save(res / rows[0].path)
    write_gallery(res, "tiny", None, out)
    second = set(json.loads((out / ".distar-gallery.json").read_text())["thumbnails"])
    assert len(second) == 2 and len(first - second) == 1
    assert not (out / IMG_DIR / (first - second).pop()).exists()
    assert users.read_bytes() == b"mine"
