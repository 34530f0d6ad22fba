"""The generation harness end to end on tiny_sdxl (random weights, built offline)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distar.core.errors import DistarError
from evalsuite.benchmarks import image_seed, load_benchmark
from evalsuite.generate import EvalRequest, initial_noise, run_eval
from evalsuite.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]
DISTAR = [sys.executable, "-m", "distar"]


def _images(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _run(args, **kw):
    return subprocess.run(DISTAR + args, capture_output=True, text=True, cwd=REPO, **kw)


def test_cli_eval_parti_limit_8_writes_8_images_and_rows(tmp_path):
    r = _run(["eval", "--model", "tiny_sdxl", "--bench", "parti", "--limit", "8",
              "--out", str(tmp_path)])
    assert r.returncode == 0, r.stderr
    pngs = list(tmp_path.rglob("*.png"))
    assert len(pngs) == 8
    store = ResultsStore(tmp_path)
    rows = store.table("images")
    assert sorted(rows.prompt_index) == list(range(8))
    assert list(rows.seed.sort_values()) == [image_seed(i, 0) for i in range(8)]
    parti = load_benchmark("parti")
    assert set(rows.prompt) == {parti.prompts[i].text for i in range(8)}
    run = store.table("runs").iloc[0]
    assert run.status == "complete" and run.n_images_expected == 8
    assert run.latency_s_per_10 > 0 and run.peak_memory_bytes > 0
    # The CLI's CPU default batch (distar.cli.CPU_DEFAULT_BATCH): the progress bar moves per batch.
    assert run.peak_memory_kind == "cpu_peak_rss" and run.batch_size == 2


def test_rerun_skips_done_images_and_redoes_corrupt_ones(tmp_path):
    req = EvalRequest(model="tiny_sdxl", bench="tiny", limit=4, out=tmp_path, batch_size=2)
    first = run_eval(req)
    before = _images(tmp_path)
    victim = tmp_path / first.images.path[1]
    victim.write_bytes(victim.read_bytes()[:50])  # truncate: a corrupt image
    mtimes = {p: (tmp_path / p).stat().st_mtime_ns for p in first.images.path}
    run_eval(req)
    assert _images(tmp_path) == before
    changed = [p for p in first.images.path if (tmp_path / p).stat().st_mtime_ns != mtimes[p]]
    # Only the corrupt image's batch slot is regenerated, and only the corrupt file rewritten.
    assert changed == [first.images.path[1]]
    assert len(ResultsStore(tmp_path).table("images")) == 4


def test_sigkill_then_resume_is_byte_identical_to_uninterrupted(tmp_path):
    args = ["eval", "--model", "tiny_sdxl", "--bench", "parti", "--limit", "24",
            "--batch-size", "2"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert _run(args + ["--out", str(ref)]).returncode == 0
    proc = subprocess.Popen(DISTAR + args + ["--out", str(killed)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(killed.rglob("*.png"))) < 4:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_at_kill = len(list(killed.rglob("*.png")))
    assert 4 <= n_at_kill < 24, "the kill must land part-way through"
    assert _run(args + ["--out", str(killed)]).returncode == 0
    assert _images(killed) == _images(ref)
    assert not list(killed.rglob("*.tmp")), "no partial file may survive"
    rows = ResultsStore(killed).table("images")
    assert len(rows) == 24 and rows.prompt_index.is_unique


def test_two_processes_write_each_image_exactly_once(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    args = ["eval", "--model", "tiny_sdxl", "--bench", "tiny", "--batch-size", "2"]
    # Bitwise equality needs the same numerics: one CPU thread per process in both runs
    # (float reductions depend on the thread count).
    one_thread = dict(os.environ, OMP_NUM_THREADS="1")
    assert _run(args + ["--out", str(single)], env=one_thread).returncode == 0
    env = dict(one_thread, MASTER_PORT="29533")
    r = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_cpu_threads_per_process", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "--main_process_port", "29533", "-m", "distar"] + args + ["--out", str(multi)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # The main process reports: the process count and the summary once each.
    assert r.stderr.count("processes: 2") == 1 and r.stdout.count("latency:") == 1
    rows = ResultsStore(multi).table("images")
    assert len(rows) == 12 and rows.prompt_index.is_unique
    # Slots of 2 are dealt round-robin: process 0 gets slots 0, 2, 4; process 1 gets 1, 3, 5.
    expect = {i: (i // 2) % 2 for i in range(12)}
    assert dict(zip(rows.prompt_index, rows.process_index)) == expect
    assert _images(multi) == _images(single)


def test_same_seed_same_image_and_noise_independent_of_batch(tmp_path):
    a = initial_noise([3, 7], (4, 8, 8))
    b = initial_noise([7], (4, 8, 8))
    assert torch.equal(a[1], b[0])
    r1 = run_eval(EvalRequest(model="tiny_sdxl", bench="tiny", limit=3, out=tmp_path / "a"))
    r2 = run_eval(EvalRequest(model="tiny_sdxl", bench="tiny", limit=3, out=tmp_path / "b"))
    assert list(r1.images.sha256) == list(r2.images.sha256)
    assert _images(tmp_path / "a") == _images(tmp_path / "b")


def test_path_model_loads_a_pipeline_saved_to_disk(tmp_path):
    import json

    from evalsuite.models.architectures import build_pipeline
    saved = tmp_path / "my_pipeline"
    build_pipeline("sdxl", "tiny").save_pretrained(saved)
    (saved / "distar_recipe.json").write_text(json.dumps(
        dict(scheduler="LCMScheduler", steps=1, guidance=0.0, timesteps=[399], resolution=64,
             dtype="float32")))
    via_path = run_eval(EvalRequest(model=f"path:{saved}", bench="tiny", limit=4,
                                    out=tmp_path / "p", batch_size=4))
    registered = run_eval(EvalRequest(model="tiny_sdxl", bench="tiny", limit=4,
                                      out=tmp_path / "r", batch_size=4))
    # Same weights (same seeded build) and the same sampling recipe: the same pixels.
    assert list(via_path.images.sha256) == list(registered.images.sha256)


# Bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--model", "nope", "--bench", "tiny"], "Choose one of: di_star_sdxl"),
    (["--model", "tiny_sdxl", "--bench", "nope"], "Choose one of: coco30k"),
    (["--model", "tiny_sdxl", "--bench", "tiny", "--limit", "13"], "out of range"),
    (["--model", "tiny_sdxl", "--bench", "tiny", "--limit", "0"], "out of range"),
    (["--model", "sdxl_base", "--bench", "tiny"], "sdxl_base"),
    (["--model", "tiny_sdxl", "--bench", "tiny", "--metrics", "nope"], "Unknown metric 'nope'"),
])
def test_bad_input_is_one_clear_line_not_a_traceback(tmp_path, args, needle):
    r = _run(["eval", *args, "--out", str(tmp_path)], timeout=120)
    assert r.returncode == 2
    assert needle in " ".join(r.stderr.split()), r.stderr  # rich wraps long lines
    assert "Traceback" not in r.stderr


def test_weights_missing_offline_names_model_file_and_fix(tmp_path):
    from evalsuite.models import resolve_model
    from evalsuite.models.loading import load_pipeline
    with pytest.raises(DistarError) as e:
        load_pipeline(resolve_model("dmd2_sdxl"), torch.device("cpu"))
    msg = str(e.value)
    assert "dmd2_sdxl" in msg and "stabilityai/stable-diffusion-xl-base-1.0" in msg
    assert "path:" in msg and "HF_HOME" in msg


def test_malformed_prompt_file_names_file_and_line(tmp_path):
    bad = tmp_path / "prompts.tsv"
    bad.write_text("Prompt\tCategory\na cat\tAnimals\na dog with no category\n")
    with pytest.raises(DistarError, match=r"prompts.tsv, line 3"):
        load_benchmark(f"file:{bad}")
    blank = tmp_path / "prompts.txt"
    blank.write_text("a cat\n\na dog\n")
    with pytest.raises(DistarError, match=r"prompts.txt, line 2"):
        load_benchmark(f"file:{blank}")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DistarError, match="no prompts"):
        load_benchmark(f"file:{empty}")


def test_unwritable_output_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(DistarError, match="not writable"):
        run_eval(EvalRequest(model="tiny_sdxl", bench="tiny", limit=1, out=blocker / "sub"))


def test_disk_full_leaves_nothing_half_written(tmp_path, monkeypatch):
    import errno

    from evalsuite import generate
    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(generate.os, "replace", full)
    with pytest.raises(DistarError, match="Disk full"):
        run_eval(EvalRequest(model="tiny_sdxl", bench="tiny", limit=2, out=tmp_path))
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("*.tmp"))
    assert len(ResultsStore(tmp_path).table("images")) == 0


@pytest.mark.parametrize("mode, shape", [("RGB", (64, 64, 3)), ("RGB", (5, 17, 3)), ("RGBA", (9, 4, 4)),
                                         ("L", (33, 1)), ("L", (1, 40))])
def test_png_encoder_is_lossless_and_deterministic(mode, shape):
    """Our direct PNG writer: PIL decodes every supported mode back to the exact pixels
    (extreme values included, so the Up filter's mod-256 wrap is exercised)."""
    import io

    import numpy as np
    from PIL import Image

    from evalsuite.generate import png_bytes
    rng = np.random.default_rng(sum(shape))
    arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
    arr.flat[0], arr.flat[-1] = 0, 255
    image = Image.fromarray(arr if mode != "L" else arr.reshape(shape[:2]), mode)
    data = png_bytes(image)
    back = Image.open(io.BytesIO(data))
    assert back.mode == mode and back.size == image.size
    assert np.array_equal(np.asarray(back), np.asarray(image))
    assert png_bytes(image) == data
    odd = image.convert("P")  # not encoded here: PIL's encoder, still lossless
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(odd)))), np.asarray(odd))
