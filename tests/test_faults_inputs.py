"""Writes stay inside the folder they were given (no symlink carries them out, no name climbs
out of runs/, no empty path means the current folder); every number is checked before work
wherever it comes from (flags, distar_recipe.json, environment); prompt files are read as text
(BOM, control characters, long fields, things that are not files); output files follow the
umask; table cells are escaped."""
import json
import os
import stat

import pytest

from distar.core import atomic
from fault_helpers import invoke, one_clear_error

EVAL = ["eval", "--model", "tiny_sdxl", "--bench", "tiny", "--limit", "1", "--batch-size", "1"]


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# Confinement ---------------------------------------------------------------------------------
def test_a_symlinked_image_folder_is_refused(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "images").symlink_to(elsewhere)
    one_clear_error(invoke(*EVAL, "--out", out), str(elsewhere), "symbolic link")
    assert _tree(elsewhere) == []


def test_a_symlinked_lock_is_not_followed(tmp_path):
    out, target = tmp_path / "out", tmp_path / "precious.txt"
    out.mkdir()
    target.write_text("keep me")
    (out / ".distar.lock").symlink_to(target)
    one_clear_error(invoke(*EVAL, "--out", out), ".distar.lock", "symbolic link")
    assert target.read_text() == "keep me"


def test_a_linked_results_store_is_refused(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere.sqlite"
    out.mkdir()
    elsewhere.write_bytes(b"")
    (out / "results.sqlite").symlink_to(elsewhere)
    one_clear_error(invoke(*EVAL, "--out", out), "symbolic link")
    assert elsewhere.read_bytes() == b""


def test_report_files_replace_links_instead_of_writing_through_them(tmp_path):
    """A leaderboard table that is a link: the link is replaced, its target untouched; a
    linked gallery img/ folder is refused."""
    from evalsuite.store import ResultsStore
    results = tmp_path / "results"
    ResultsStore(results).close()
    lb, target = tmp_path / "lb", tmp_path / "target.md"
    lb.mkdir()
    target.write_text("keep me")
    (lb / "table1_parti_coco.md").symlink_to(target)
    r = invoke("leaderboard", "--results", results, "--out", lb)
    assert r.exit_code == 0, r.output
    assert target.read_text() == "keep me"
    assert not (lb / "table1_parti_coco.md").is_symlink()


@pytest.mark.parametrize("preset", ["../../escaped", "/tmp/abs", "a/../../b"])
def test_a_config_preset_cannot_leave_runs(tmp_path, preset, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"preset": preset}))
    one_clear_error(invoke("train", "--preset", "gmm/di_star_in", "--config", cfg, "--max-steps", "1"),
                    "preset", "'..'")
    assert _tree(tmp_path) == ["c.json"]


@pytest.mark.parametrize("option", ["--out", "--json"])
def test_an_empty_path_is_refused(tmp_path, monkeypatch, option):
    monkeypatch.chdir(tmp_path)
    args = EVAL + (["--out", tmp_path / "o"] if option != "--out" else []) + [option, ""]
    r = invoke(*args)
    assert r.exit_code == 2 and "empty path" in r.output and "Traceback" not in r.output, r.output
    assert _tree(tmp_path) == []


def test_json_pointing_at_a_directory_is_refused_before_work(tmp_path):
    out = tmp_path / "o"
    one_clear_error(invoke(*EVAL, "--out", out, "--json", tmp_path), "--json", "directory")
    assert not out.exists()


def test_output_files_follow_the_umask(tmp_path):
    atomic.write_text(tmp_path / "a.txt", "x")
    atomic.write_dir(tmp_path / "d", lambda d: (d / "f").write_text("y"))
    umask = atomic._UMASK
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask


# Numbers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--guidance", "nan"], "--guidance = nan is not a finite number"),
    (["--guidance", "inf"], "--guidance = inf"),
    (["--steps", "0"], "--steps = 0 is outside"),
    (["--resolution", "1000000"], "--resolution = 1000000 is outside"),
])
def test_bad_numbers_on_the_command_line_are_refused_before_work(tmp_path, args, needle):
    out = tmp_path / "o"
    one_clear_error(invoke(*EVAL, *args, "--out", out), needle)
    assert not out.exists()


@pytest.fixture(scope="module")
def tiny_pipeline():
    from evalsuite.models.architectures import tiny_pipeline_dir
    return tiny_pipeline_dir("sdxl")


@pytest.mark.parametrize("recipe, needle", [
    ({"steps": -3}, "steps = -3 is outside"),
    ({"guidance": float("nan")}, "guidance = nan is not a finite number"),
    ({"dtype": "float7"}, "'float7' is not a known dtype"),
    ({"resolution": "64"}, "resolution = '64' is not a number"),
])
def test_a_bad_distar_recipe_json_is_refused_naming_the_file(tmp_path, tiny_pipeline, recipe, needle):
    import shutil
    d = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline, d)
    (d / "distar_recipe.json").write_text(json.dumps(recipe))
    out = tmp_path / "o"
    one_clear_error(invoke("eval", "--model", f"path:{d}", "--bench", "tiny", "--limit", "1",
                           "--out", out), needle, "distar_recipe.json")
    assert not (out / "images").exists()


@pytest.mark.parametrize("value", ["abc", "nan", "-1"])
def test_a_bad_progress_interval_is_one_clear_line(tmp_path, value):
    one_clear_error(invoke(*EVAL, "--out", tmp_path / "o", env={"DISTAR_PROGRESS_EVERY": value}),
                    "DISTAR_PROGRESS_EVERY")


def test_a_missing_mini_dir_is_named(tmp_path):
    """A fresh process: the mini models are registered from $DISTAR_MINI_DIR on import."""
    import subprocess
    import sys
    missing = tmp_path / "nowhere"
    r = subprocess.run([sys.executable, "-m", "distar", "eval", "--model", "mini_onestep",
                        "--bench", "tiny", "--limit", "1", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "DISTAR_MINI_DIR": str(missing), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{missing}/pipeline" in r.stderr and "does not exist" in r.stderr, r.stderr


# Prompt files --------------------------------------------------------------------------------
def test_a_bom_is_not_part_of_the_first_prompt(tmp_path):
    from evalsuite.benchmarks import read_tsv_prompts, read_txt_prompts
    txt, tsv = tmp_path / "p.txt", tmp_path / "p.tsv"
    txt.write_bytes("\ufeffa red cube\r\nblue\r\n".encode())
    tsv.write_bytes("\ufeffPrompt\tCategory\na red cube\tshapes\n".encode())
    assert [p.text for p in read_txt_prompts(txt)] == ["a red cube", "blue"]
    assert [p.text for p in read_tsv_prompts(tsv)] == ["a red cube"]


@pytest.mark.parametrize("suffix", [".txt", ".tsv"])
@pytest.mark.parametrize("bad", ["\x00", "\x1b[31m", "\x7f"])
def test_control_characters_are_refused_with_the_line(tmp_path, suffix, bad):
    f = tmp_path / f"p{suffix}"
    head = "Prompt\n" if suffix == ".tsv" else ""
    f.write_text(f"{head}fine\nred{bad}cube\n")
    line = 3 if suffix == ".tsv" else 2
    one_clear_error(invoke(*EVAL[:3], "--bench", f"file:{f}", "--out", tmp_path / "o"),
                    f"line {line}", "control character")


def test_a_long_tsv_field_is_read(tmp_path):
    from evalsuite.benchmarks import read_tsv_prompts
    f = tmp_path / "p.tsv"
    f.write_text("Prompt\n" + "a" * 200_000 + "\n")
    assert len(read_tsv_prompts(f)[0].text) == 200_000


def test_things_that_are_not_files_are_named(tmp_path):
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    for path, what in ((tmp_path, "is a directory"), (fifo, "is a named pipe"),
                       (tmp_path / "none.txt", "does not exist"), ("/dev/null", "character device")):
        one_clear_error(invoke(*EVAL[:3], "--bench", f"file:{path}", "--out", tmp_path / "o"), what)


def test_html_in_table_cells_is_escaped():
    from evalsuite.leaderboard.markdown import md_table
    text = md_table(["category", "x"], [["<script>alert(1)</script> & a|b", "1"]])
    assert "<script>" not in text and "&lt;script&gt;" in text and "&amp;" in text and "a\\|b" in text


# Shipped weights -----------------------------------------------------------------------------
def test_mini_weights_are_checked_against_their_manifest(tmp_path):
    """A changed weight file of the mini world is refused by name before it scores anything
    under the genuine world's version; a second check of unchanged files hashes nothing."""
    import shutil

    from distar.core.errors import DistarError
    from di_star.mini import weights as mw
    if not (mw.SHIPPED_DIR / mw.MANIFEST).is_file():
        pytest.skip("the mini world is not shipped")
    world = tmp_path / "world"
    world.mkdir()
    shutil.copy(mw.SHIPPED_DIR / mw.MANIFEST, world / mw.MANIFEST)
    shutil.copytree(mw.SHIPPED_DIR / "aesthetic", world / "aesthetic")
    assert mw.component_dir("aesthetic", world) == world / "aesthetic"
    hashed = len(mw._VERIFIED)
    mw.component_dir("aesthetic", world)
    assert len(mw._VERIFIED) == hashed, "unchanged files are not hashed again"
    f = world / "aesthetic" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(DistarError, match="aesthetic/model.safetensors does not match"):
        mw.component_dir("aesthetic", world)


@pytest.mark.parametrize("damage, needle", [
    ("int8", "not floating point"),
    ("nan", "non-finite values"),
    ("missing", "missing from"),
    ("unexpected", "its config does not have"),
])
def test_bad_path_weights_are_refused_before_the_first_image(tmp_path, tiny_pipeline, damage, needle):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file
    d = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline, d)
    f = next((d / "unet").glob("*.safetensors"))
    sd = load_file(str(f))
    key = sorted(sd)[0]
    if damage == "int8":
        sd = {k: v.to(torch.int8) for k, v in sd.items()}
    elif damage == "nan":
        sd[key] = torch.full_like(sd[key], float("nan"))
    elif damage == "missing":
        del sd[key]
    else:
        sd["extra.weight"] = torch.zeros(2)
    save_file(sd, str(f))
    out = tmp_path / "o"
    one_clear_error(invoke("eval", "--model", f"path:{d}", "--bench", "tiny", "--limit", "1",
                           "--out", out), "unet", needle)
    assert not list(out.rglob("*.png"))
