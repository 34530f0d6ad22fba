"""scripts/gpu_suite.py: the dry run (tiny models, CPU) goes through every section of the GPU run
and writes both reports; budgets interrupt a section and the run goes on; out-of-memory and
errors are reported, not raised; the GPU plan fits its 8 minutes."""
import json
import subprocess
import sys
import time
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
        assert r["peak_memory_kind"] == "cpu_peak_rss" and r["dtype"] == "float32"
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
