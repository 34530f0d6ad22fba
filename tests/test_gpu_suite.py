"""scripts/gpu_suite.py: the dry run (tiny models, CPU) goes through every section of the GPU run
and writes both reports; budgets interrupt a section and the run goes on; out-of-memory and
errors are reported, not raised; the GPU plan fits its 8 minutes."""
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_suite  # noqa: E402

CPU = torch.device("cpu")


@pytest.mark.slow
def test_dry_run_measures_every_section_and_writes_both_reports(tmp_path):
    out = tmp_path / "suite"
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_suite.py"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_suite.json").read_text())
    h = report["header"]
    assert h["mode"] == "dry-run" and h["schema_version"] == gpu_suite.SCHEMA_VERSION
    assert 0 < h["wall_s"] <= time.time() - t0
    secs = {s["name"]: s for s in report["sections"]}
    assert list(secs) == list(gpu_suite.SECTIONS)
    assert {n: s["status"] for n, s in secs.items()} == {n: "ok" for n in gpu_suite.SECTIONS}, \
        {n: s["reason"] for n, s in secs.items()}

    t1 = secs["table1"]
    assert [r["model"] for r in t1["rows"]] == list(gpu_suite.TABLE1_MODELS)
    for r in t1["rows"]:
        assert r["images_timed"] >= 1 and r["s_per_10_images"] > 0 and r["peak_memory_bytes"] > 0
        assert r["peak_memory_kind"] == "cpu_peak_rss"
    # Built in the recipe's dtype, as on the GPU (test_dry_run_builds_table1_through_...).
    assert {r["model"]: r["dtype"] for r in t1["rows"]} == {
        "di_star_sdxl": "float16", "sdxl_base": "float16", "sd35_large": "bfloat16",
        "flux_dev": "bfloat16"}
    steps = {r["model"]: r["steps"] for r in t1["rows"]}
    assert steps["di_star_sdxl"] == 1 and steps["sdxl_base"] == 2  # the recipe, capped at 2 in the dry run
    ratios = t1["extra"]["sdxl_1step_vs_flux_dev"]
    by = {r["model"]: r for r in t1["rows"]}
    assert ratios["time_fraction"] == pytest.approx(by["di_star_sdxl"]["s_per_10_images"]
                                                    / by["flux_dev"]["s_per_10_images"])
    assert (ratios["paper_time_fraction"], ratios["paper_memory_fraction"]) == ("1.88%", "29.3%")

    (harness,) = secs["harness"]["rows"]
    assert harness["bare_median_img_s"] > 0 and harness["harness_median_img_s"] > 0

    scorers = {r["metric"]: r for r in secs["scorers"]["rows"]}
    assert set(scorers) == {"imagereward", "hpsv21", "pickscore", "aesthetic", "clip", "fid"}
    for r in scorers.values():
        assert r["ours_img_s"] > 0 and r["ref_img_s"] > 0
        assert r["max_abs_diff"] < 1e-3  # same weights, same images: the same scores
    assert scorers["hpsv21"]["ref_images"] < scorers["hpsv21"]["images"]

    step = {r["step"]: r for r in secs["di_star_step"]["rows"]}
    assert set(step) == {"kl", "x0", "exact", "assistant"}
    assert all(r["median_ms"] > 0 and r["rounds"] >= 1 for r in step.values())
    assert step["kl"]["ratio_to_kl_median_of_rounds"] == 1.0

    md = (out / "gpu_suite.md").read_text()
    for heading in ("## table1 (ok", "## harness (ok", "## scorers (ok", "## di_star_step (ok", "DRY RUN"):
        assert heading in md
    assert "| time |" in md and "1.88%" in md and "29.3%" in md
    assert not list(out.glob(".*.tmp"))


def test_budgets_interrupt_and_failures_are_reported_not_raised():
    status, reason = gpu_suite.guarded(lambda: time.sleep(30), 0.5, "sleeper", CPU)
    assert status == "skipped" and "budget" in reason and "sleeper" in reason

    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    status, reason = gpu_suite.guarded(oom, 5, "big", CPU)
    assert status == "skipped" and "out of memory" in reason

    status, reason = gpu_suite.guarded(lambda: {}["missing"], 5, "broken", CPU)
    assert status == "failed" and "KeyError" in reason

    # A row's budget inside a section's: the section's clock keeps running.
    def section():
        gpu_suite.guarded(lambda: None, 30, "row", CPU)
        time.sleep(30)
    t0 = time.perf_counter()
    status, _ = gpu_suite.guarded(section, 1, "section", CPU)
    assert status == "skipped" and time.perf_counter() - t0 < 15


def test_a_section_over_budget_is_skipped_and_the_next_runs(tmp_path, monkeypatch):
    def slow(plan, device, sec, deadline_at):
        sec.rows.append({"model": "first", "recipe": "r"})
        time.sleep(30)

    def quick(plan, device, sec, deadline_at):
        sec.rows.append({"metric": "m", "status": "ok"})
    monkeypatch.setattr(gpu_suite, "RUNNERS", {"table1": slow, "scorers": quick})
    plan = gpu_suite.replace(gpu_suite.DRY, budgets_s={"table1": 2.0, "scorers": 30.0}, total_budget_s=60)
    report = gpu_suite.run(plan, CPU, tmp_path, sections=("table1", "scorers"))
    first, second = report["sections"]
    assert first["status"] == "partial" and "budget" in first["reason"] and len(first["rows"]) == 1
    assert second["status"] == "ok" and second["rows"] == [{"metric": "m", "status": "ok"}]
    assert json.loads((tmp_path / "gpu_suite.json").read_text())["sections"][1]["status"] == "ok"
    assert "## table1 (partial" in (tmp_path / "gpu_suite.md").read_text()
    # Less time left than a section needs: not started, and said so.
    plan = gpu_suite.replace(plan, total_budget_s=0)
    report = gpu_suite.run(plan, CPU, tmp_path, sections=("scorers",))
    assert report["sections"][0]["status"] == "skipped" and "not started" in report["sections"][0]["reason"]


def test_the_gpu_plan_fits_eight_minutes_and_needs_a_gpu(tmp_path, capsys):
    plan = gpu_suite.GPU
    assert plan.total_budget_s <= 480 and sum(plan.budgets_s.values()) <= plan.total_budget_s
    assert sum(plan.table1_budgets_s.values()) <= plan.budgets_s["table1"]
    assert sum(plan.scorer_budgets_s.values()) <= plan.budgets_s["scorers"]
    assert set(plan.budgets_s) == set(gpu_suite.SECTIONS) == set(gpu_suite.DRY.budgets_s)
    assert set(plan.table1_budgets_s) == set(gpu_suite.TABLE1_MODELS)
    spec = plan.table1_spec("flux_dev")  # the registry's recipe, not a copy of it
    assert (spec.weights, spec.steps, spec.dtype, spec.resolution) == ("random", 50, "bfloat16", 1024)
    if not torch.cuda.is_available():
        assert gpu_suite.main(["--out", str(tmp_path)]) == 2
        assert "--dry-run" in capsys.readouterr().err
    assert gpu_suite.main(["--dry-run", "--out", str(tmp_path), "--sections", "tabel1"]) == 2


@pytest.mark.slow
def test_dry_run_builds_table1_through_the_gpu_runs_function(monkeypatch):
    """Both modes build every Table 1 model with evalsuite's random_pipeline (what `distar eval
    --weights random` runs) in the recipe's dtype; only the size differs. The GPU plan's builds
    are made here on the meta device: the full architectures, no memory."""
    from distar.core.dtypes import to_dtype
    from evalsuite.models import architectures, loading
    assert gpu_suite.random_pipeline is loading.random_pipeline
    calls = []
    real = architectures.build_pipeline

    def spy(family, size, dtype=torch.float32, seed=0, device="cpu"):
        calls.append((family, size, dtype, torch.device(device).type))
        return real(family, size, dtype=dtype, seed=seed, device=device)
    monkeypatch.setattr(architectures, "build_pipeline", spy)

    for name in gpu_suite.TABLE1_MODELS:  # the GPU run's builds, on meta
        spec = gpu_suite.GPU.table1_spec(name)
        pipe = gpu_suite.GPU.build(spec, torch.device("meta"))
        net = getattr(pipe, "unet", None) or pipe.transformer
        assert {p.dtype for p in net.parameters()} == {to_dtype(spec.dtype)}, name
    gpu_calls, calls[:] = list(calls), []
    assert [c[1] for c in gpu_calls] == ["full"] * 4
    assert [c[2] for c in gpu_calls] == [torch.float16, torch.float16, torch.bfloat16, torch.bfloat16]

    # The dry run's Table 1 (two rows, one image each): the same calls at size 'tiny' on the CPU,
    # generating in the recipe's dtype.
    monkeypatch.setattr(gpu_suite, "TABLE1_MODELS", ("di_star_sdxl", "flux_dev"))
    plan = replace(gpu_suite.DRY, table1_images={"di_star_sdxl": 1, "flux_dev": 1}, table1_batch=1)
    sec = gpu_suite.Section("table1", 300)
    gpu_suite.section_table1(plan, CPU, sec, time.perf_counter() + 300)
    assert [(r["model"], r["status"], r["dtype"]) for r in sec.rows] == [
        ("di_star_sdxl", "ok", "float16"), ("flux_dev", "ok", "bfloat16")]
    assert calls == [("sdxl", "tiny", torch.float16, "cpu"), ("flux", "tiny", torch.bfloat16, "cpu")]
    assert [c[2] for c in calls] == [c[2] for c in gpu_calls[::3]]  # same dtypes as the GPU run's


def test_temp_files_go_under_out_and_are_removed_also_on_failure(tmp_path, monkeypatch):
    import os
    import tempfile
    made = []

    def writes_then_fails(plan, device, sec, deadline_at):
        made.append(Path(tempfile.mkdtemp(prefix="fid-")))  # as the scorers' references do
        (made[-1] / "img.png").write_bytes(b"x")
        made.append(Path(tempfile.gettempdir()))
        import multiprocessing.util  # its sockets stay in the system temp (path length limit)
        assert not Path(multiprocessing.util.get_temp_dir()).is_relative_to(out)
        raise RuntimeError("a reference package failed")
    monkeypatch.setattr(gpu_suite, "RUNNERS", {"table1": writes_then_fails})
    out = tmp_path / "suite"
    (out / ".tmp-999999999").mkdir(parents=True)  # left by a killed run
    n_threads, tempdir_before = torch.get_num_threads(), tempfile.gettempdir()
    try:
        assert gpu_suite.main(["--dry-run", "--out", str(out), "--sections", "table1"]) == 0
    finally:
        torch.set_num_threads(n_threads)
    assert made[0].parent == made[1] == out / f".tmp-{os.getpid()}"
    assert not made[1].exists() and not list(out.glob(".tmp-*"))
    assert tempfile.gettempdir() == tempdir_before
    assert json.loads((out / "gpu_suite.json").read_text())["sections"][0]["status"] == "failed"

    def crashes(*a, **k):  # an error that escapes the run itself
        made.append(Path(tempfile.mkdtemp()))
        raise KeyboardInterrupt
    monkeypatch.setattr(gpu_suite, "run", crashes)
    with pytest.raises(KeyboardInterrupt):
        gpu_suite.main(["--dry-run", "--out", str(out), "--sections", "table1"])
    torch.set_num_threads(n_threads)
    assert made[-1].parent.parent == out and not made[-1].parent.exists()


def test_the_step_is_timed_with_the_presets_optimizer_when_it_can(monkeypatch):
    import importlib.metadata
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    opt, why = gpu_suite.step_optimizer("adamw8bit", torch.device("cuda"))
    assert opt == "adamw" and "fallback" in why and "not installed" in why
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.50.2")
    assert gpu_suite.step_optimizer("adamw8bit", torch.device("cuda")) == (
        "adamw8bit", "the preset's (bitsandbytes 0.50.2)")
    opt, why = gpu_suite.step_optimizer("adamw8bit", CPU)
    assert opt == "adamw" and "CUDA" in why
    assert gpu_suite.step_optimizer("adamw", CPU) == ("adamw", "the preset's")
