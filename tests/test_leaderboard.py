"""Leaderboard tables, plots and the paper's reported numbers, from a small synthetic store."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import evalsuite  # noqa: F401  (patches torchvision before anything imports it)
import numpy as np
import pytest
from PIL import Image

from distar.core.errors import DistarError
from evalsuite import leaderboard as lb
from evalsuite import paper_numbers
from evalsuite.benchmarks import HPS_STYLES
from evalsuite.metrics import stats
from evalsuite.store import ImageRow, ResultsStore, ScoreRow

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
IR = "ImageReward-v1.0|BLIP ViT-L|224 bicubic"
PICK = "PickScore-v1 cos|ViT-H-14|224 bicubic"
HPS21 = "HPSv2.1|open_clip ViT-H-14|224 bicubic"
H100 = "cuda:0 (NVIDIA H100 80GB HBM3)"
VERSIONS = json.dumps({"torch": "2.13.0", "diffusers": "0.42.1"})

PARTI_META = {0: {"category": "Animals", "challenge": "Basic"},
              1: {"category": "Animals", "challenge": "Complex"},
              2: {"category": "Arts", "challenge": "Basic"},
              3: {"category": "Arts", "challenge": "Complex"}}
HPS_META = {i: {"style": s} for i, s in enumerate(
    [s for s in HPS_STYLES for _ in range(2)])}


BENCH_META = {"parti": (PARTI_META, ("category", "challenge")), "hpsv2": (HPS_META, ("style",))}
# How each metric describes itself (its MetricInfo's label, direction, decimals, unit), stored
# with every score as evalsuite.metrics.runner stores it: the tables read it from the store.
SHOWN = {"imagereward": ("ImageReward", True, 3), "pickscore": ("PickScore", True, 4),
         "clip": ("CLIP", True, 2), "hpsv21": ("HPSv2.1", True, 2), "fid": ("FID", False, 2)}


def score_meta(metric: str) -> dict:
    label, higher, decimals = SHOWN[metric]
    return {"info": {"name": metric, "label": label, "higher_is_better": higher,
                     "decimals": decimals, "unit": ""}}


def record_bench(store: ResultsStore, bench: str, n_total: int) -> None:
    """The benchmark's prompt metadata, as `distar eval` records it with every run
    (evalsuite.generate.record_benchmark); the tables read it from the store alone."""
    meta, keys = BENCH_META.get(bench, ({}, ()))
    store.add_benchmark(bench, "1-test", f"{bench} (test)", keys,
                        [(i, f"prompt {i}", meta.get(i, {})) for i in range(n_total)])


def add_model(store: ResultsStore, *, name: str, bench: str, n_total: int, recipe: dict,
              scores: dict[str, tuple[str, list[float | None]]], latency: float | None = None,
              device: str = H100, colour=(128, 128, 128), t: float = T0, rh: str | None = None) -> str:
    """One run of `name` on `bench`: a 4x4 PNG per prompt of a solid colour, and per-image
    scores (None: that prompt not scored). Returns the recipe hash (`rh`, or one of `recipe`)."""
    recipe = {"name": name, **recipe}
    rh = rh or hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    n_img = max(len(v) for _, v in scores.values()) if scores else n_total
    record_bench(store, bench, n_total)
    run_id = f"run-{name}-{bench}-{rh[:4]}"
    store.upsert_run(run_id=run_id, model=name, recipe_hash=rh,
                     recipe_json=json.dumps(recipe, sort_keys=True), bench=bench,
                     bench_version="1-test", n_prompts_total=n_total, n_images_expected=n_img,
                     started_at=t, finished_at=t + 60.0, git_hash="abc1234", versions_json=VERSIONS,
                     device=device, world_size=1, batch_size=2, latency_s_per_10=latency,
                     peak_memory_bytes=None, peak_memory_kind=None, status="complete")
    rows = []
    for i in range(n_img):
        rel = f"images/{rh}/{bench}/{i:05d}_0.png"
        (store.root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), colour).save(store.root / rel)
        rows.append(ImageRow(recipe_hash=rh, bench=bench, bench_version="1-test", prompt_index=i,
                             k=0, model=name, prompt=f"prompt {i}", seed=i, path=rel,
                             sha256="0" * 64, run_id=run_id, created_at=t))
    store.add_images(rows)
    store.add_scores(ScoreRow(recipe_hash=rh, bench=bench, bench_version="1-test",
                              prompt_index=i, k=0, metric=m, metric_version=mv, value=v,
                              created_at=t, meta_json=json.dumps(score_meta(m)))
                     for m, (mv, values) in scores.items()
                     for i, v in enumerate(values) if v is not None)
    return rh


def build_store(root: Path) -> ResultsStore:
    store = ResultsStore(root)
    goliath = {"steps": 50, "arch_type": "DiT", "params": "12B"}
    david = {"steps": 1, "arch_type": "UNet", "params": "2.6B"}
    add_model(store, name="goliath", bench="parti", n_total=4, recipe=goliath, latency=118.64,
              scores={"imagereward": (IR, [1.0, 1.2, 0.8, 1.0]),
                      "pickscore": (PICK, [0.23] * 4)})
    add_model(store, name="david", bench="parti", n_total=4, recipe=david, latency=2.22,
              scores={"imagereward": (IR, [1.1] * 4),
                      "pickscore": (PICK, [0.231, 0.233, 0.232, 0.232])})
    add_model(store, name="dwarf", bench="parti", n_total=4, recipe=david,
              scores={"imagereward": (IR, [2.0, 2.0])})
    # Ablation checkpoints (recipes from `distar train` carry alpha_rew / alpha_cfg).
    for a_rew, ir, pick in ((0.0, 0.9, 0.224), (100.0, 1.1, 0.230)):
        add_model(store, name="ckpt", bench="parti", n_total=4,
                  recipe={**david, "train": {"alpha_rew": a_rew, "alpha_cfg": 7.5}},
                  scores={"imagereward": (IR, [ir] * 4), "pickscore": (PICK, [pick] * 4),
                          "clip": ("CLIP|ViT-L-14|224", [30.0 + a_rew / 100] * 4)})
    for name, recipe, fid, base in (("goliath", goliath, 24.77, 30.0), ("david", david, 21.15, 31.0)):
        rh = add_model(store, name=name, bench="coco30k", n_total=3, recipe=recipe,
                       scores={"clip": ("CLIP|ViT-L-14|224", [base] * 3)})
        store.add_set_score(recipe_hash=rh, bench="coco30k", bench_version="1-test",
                            metric="fid", metric_version="clean-fid|inception|clean",
                            value=fid, n_images=3, meta=score_meta("fid"))
    add_model(store, name="david", bench="hpsv2", n_total=8, recipe=david,
              scores={"hpsv21": (HPS21, [0.33, 0.34, 0.31, 0.31, 0.30, 0.30, 0.28, 0.28])})
    add_model(store, name="goliath", bench="hpsv2", n_total=8, recipe=goliath,
              scores={"hpsv21": (HPS21, [0.32, 0.32, 0.30, 0.30, 0.31, 0.31, 0.29, None])})
    return store


@pytest.fixture
def boards(tmp_path, monkeypatch):
    build_store(tmp_path / "results")
    paths = lb.write_leaderboards(tmp_path / "results", tmp_path / "lb")
    return tmp_path, {p.name: p for p in paths}


TABLE1_PARTI = """\
| model | steps ↓ | type | params ↓ | ImageReward ↑ | aesthetic | PickScore ↑ | CLIP ↑ | time / 10 images ↓ (s) |
|:---|---:|:---|---:|---:|---:|---:|---:|---:|
| goliath | 50 | DiT | 12B | 1.000 [0.541, 1.459] | — | 0.2300 [0.2300, 0.2300] | — | 118.64 |
| ckpt #c170d64f | 1 | UNet | 2.6B | **1.100** [1.100, 1.100] | — | 0.2300 [0.2300, 0.2300] | **31.00** [31.00, 31.00] | — |
| ckpt #de8124f8 | 1 | UNet | 2.6B | 0.900 [0.900, 0.900] | — | 0.2240 [0.2240, 0.2240] | 30.00 [30.00, 30.00] | — |
| david | 1 | UNet | 2.6B | **1.100** [1.100, 1.100] | — | **0.2320** [0.2297, 0.2333] | — | **2.22** |
| dwarf (partial: 2/4 prompts) | 1 | UNet | 2.6B | 2.000 [2.000, 2.000] | — | — | — | — |
"""
TABLE1_COCO = """\
| model | steps ↓ | type | params ↓ | ImageReward ↑ | aesthetic | PickScore ↑ | CLIP ↑ | time / 10 images ↓ (s) | FID ↓ |
|:---|---:|:---|---:|---:|---:|---:|---:|---:|---:|
| goliath | 50 | DiT | 12B | — | — | — | 30.00 [30.00, 30.00] | — | 24.77 |
| david | 1 | UNet | 2.6B | — | — | — | **31.00** [31.00, 31.00] | — | **21.15** |
"""
TABLE2 = """\
| model | steps | params | (α_rew, α_cfg) | ImageReward ↑ | aesthetic | PickScore ↑ | CLIP ↑ |
|:---|---:|---:|:---:|---:|---:|---:|---:|
| ckpt #de8124f8 | 1 | 2.6B | (0, 7.5) | 0.900 [0.900, 0.900] | — | 0.2240 [0.2240, 0.2240] | 30.00 [30.00, 30.00] |
| ckpt #c170d64f | 1 | 2.6B | (100, 7.5) | **1.100** [1.100, 1.100] | — | **0.2300** [0.2300, 0.2300] | **31.00** [31.00, 31.00] |
"""
# goliath's photo style has one of its two prompts scored: partial, no interval, never bold.
# Its average is HPSv2's (evaluate_benchmark): the mean over its 7 scored images, 215/7 = 30.71,
# not the mean of the four style scores (30.50); the two agree only when styles have equal sizes.
TABLE3 = """\
| model | steps | anime ↑ (n=2) | concept-art ↑ (n=2) | paintings ↑ (n=2) | photo ↑ (n=2) | average ↑ |
|:---|---:|---:|---:|---:|---:|---:|
| goliath (partial: 7/8 prompts) | 50 | 32.00 [32.00, 32.00] | 30.00 [30.00, 30.00] | **31.00** [31.00, 31.00] | 29.00 | 30.71 |
| david | 1 | **33.50** [27.15, 39.85] | **31.00** [31.00, 31.00] | 30.00 [30.00, 30.00] | 28.00 [28.00, 28.00] | 30.62 [30.50, 30.75] |
"""
BREAKDOWN = """\
| model | all (n=4) | Animals (n=2) | Arts (n=2) |
|:---|---:|---:|---:|
| goliath | 1.000 | 1.100 | 0.900 |
| ckpt #c170d64f | **1.100** | 1.100 | **1.100** |
| ckpt #de8124f8 | 0.900 | 0.900 | 0.900 |
| david | **1.100** | 1.100 | **1.100** |
| dwarf (partial: 2/4 prompts) | 2.000 | **2.000** | — |
"""


def section(text: str, heading: str) -> str:
    """The markdown table right under `heading`."""
    after = text.split(heading + "\n\n", 1)[1]
    return after.split("\n\n", 1)[0] + "\n"


def test_tables_exact(boards):
    """Arrows, bold best among comparable rows (dwarf's 2.000 covers 2 of 4 prompts: not bold;
    time bold only on one device), bootstrap intervals, the partial marker, '—' for unmeasured
    Table 1 columns, short heads (label and arrow, as the metrics recorded them in the store)."""
    _, files = boards
    t1 = files[lb.TABLE1_FILE].read_text()
    assert section(t1, "## parti (version 1-test)") == TABLE1_PARTI
    assert section(t1, "## coco30k (version 1-test)") == TABLE1_COCO
    t2 = files[lb.TABLE2_FILE].read_text()
    assert section(t2, "## parti (version 1-test)") == TABLE2
    t3 = files[lb.TABLE3_FILE].read_text()
    assert section(t3, "## HPSv2.1 ↑ on hpsv2 (version 1-test)") == TABLE3
    br = files[lb.BREAKDOWN_FILE].read_text()
    assert section(br, "## ImageReward ↑ by category, parti (version 1-test)") == BREAKDOWN
    assert "## PickScore ↑ by challenge, parti (version 1-test)" in br


def test_provenance_footer(boards):
    _, files = boards
    t1 = files[lb.TABLE1_FILE].read_text()
    footer = t1.split("\n---\n", 1)[1]
    assert "| row | bench | recipe | last run | git | device | date (UTC) | status | versions | " \
           "prompts covered |" in footer
    # Date from the stored run (finished_at = T0 + 60 s), not from the clock.
    assert ("| dwarf (partial: 2/4 prompts) | parti | `e235bc367df301e2` | run-dwarf-parti-e235 | "
            "abc1234 | cuda:0 (NVIDIA H100 80GB HBM3) | 2023-11-14 22:14 | complete | A | "
            "images 2/4; imagereward (ImageReward-v1.0) 2/4 |") in footer
    assert "- versions A: diffusers 0.42.1, torch 2.13.0" in footer
    assert "95% studentised (bootstrap-t) interval with a small-sample expansion, never " \
           "narrower than the t interval, resampling prompts (a prompt's images together; " \
           "1000 resamples, seed 0, evalsuite.metrics.stats)" in footer
    for name in (lb.TABLE1_FILE, lb.TABLE2_FILE, lb.TABLE3_FILE, lb.BREAKDOWN_FILE):
        text = files[name].read_text()
        assert "(reported)" not in text and "Podell" not in text  # no paper numbers in here


def _png_chunks(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        kinds.append(data[pos + 4:pos + 8])
        pos += 12 + n
    return kinds


def test_regeneration_is_byte_identical(boards, tmp_path):
    """Twice in this process through the CLI, and in a fresh interpreter with another hash seed:
    every markdown file and PNG is byte-identical."""
    from typer.testing import CliRunner

    from distar.cli import app
    _, files = boards
    assert {lb.LATENCY_PLOT.format(bench="parti"), lb.ABLATION_PLOT} <= set(files)
    assert lb.LATENCY_PLOT.format(bench="coco30k") not in files  # no latency measured on COCO
    first = {n: p.read_bytes() for n, p in files.items()}
    res = CliRunner().invoke(app, ["leaderboard", "--results", str(tmp_path / "results"),
                                   "--out", str(tmp_path / "lb")])
    assert res.exit_code == 0, res.output
    assert {p.name: p.read_bytes() for p in (tmp_path / "lb").iterdir()} == first
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
              "import test_leaderboard as t; from evalsuite import leaderboard as lb; "
              "from pathlib import Path; "
              f"lb.write_leaderboards(Path({str(tmp_path / 'results')!r}), "
              f"Path({str(tmp_path / 'lb2')!r}))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "MPLCONFIGDIR": str(tmp_path / "mpl")}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
    assert {p.name: p.read_bytes() for p in (tmp_path / "lb2").iterdir()} == first
    for name in first:
        if name.endswith(".png"):
            kinds = _png_chunks(tmp_path / "lb" / name)
            assert b"tIME" not in kinds and b"tEXt" not in kinds and b"iTXt" not in kinds


def test_metric_versions_are_never_mixed(tmp_path, monkeypatch):
    """PickScore cosine and another PickScore version are two columns, never one mean."""
    store = ResultsStore(tmp_path / "results")
    for name, version, values in (("a", PICK, [0.2] * 4), ("b", "PickScore-v2 cos|x|y", [0.3] * 4)):
        add_model(store, name=name, bench="parti", n_total=4, recipe={"steps": 1},
                  scores={"pickscore": (version, values)})
    lb.write_leaderboards(tmp_path / "results", tmp_path / "lb")
    t1 = (tmp_path / "lb" / lb.TABLE1_FILE).read_text()
    header = section(t1, "## parti (version 1-test)").splitlines()[0]
    assert "PickScore ↑ | PickScore ↑ #2" in header
    assert "- PickScore ↑: `pickscore`, version `PickScore-v1 cos|ViT-H-14|224 bicubic`" in t1
    assert "- PickScore ↑ #2: `pickscore`, version `PickScore-v2 cos|x|y`" in t1
    assert "| a | 1 | — | — | — | — | 0.2000 [0.2000, 0.2000] | — | — | — |" in t1
    assert "| b | 1 | — | — | — | — | — | 0.3000 [0.3000, 0.3000] | — | — |" in t1
    assert "0.2500" not in t1


def test_empty_and_missing_store(tmp_path, monkeypatch):
    with pytest.raises(DistarError, match="No results store"):
        lb.write_leaderboards(tmp_path / "nowhere", tmp_path / "lb")
    (tmp_path / "lb").mkdir()
    (tmp_path / "lb" / lb.ABLATION_PLOT).write_bytes(b"stale")
    ResultsStore(tmp_path / "results")
    paths = lb.write_leaderboards(tmp_path / "results", tmp_path / "lb")
    assert sorted(p.name for p in paths) == sorted([lb.TABLE1_FILE, lb.TABLE2_FILE,
                                                    lb.TABLE3_FILE, lb.BREAKDOWN_FILE,
                                                    lb.PAPER_FILE])
    assert not (tmp_path / "lb" / lb.ABLATION_PLOT).exists()  # stale plot removed
    assert "No measured results yet" in (tmp_path / "lb" / lb.TABLE1_FILE).read_text()


def test_row_metadata_comes_from_the_store_only(tmp_path):
    """Steps, type and params are what the runs stored (`distar eval` stores ModelSpec.describe(),
    which has them); the model registry is never consulted, so a recipe stored without them
    shows '—' even under a registry name (until issue 10 the registry filled them in)."""
    from evalsuite.models import MODELS
    spec = MODELS.get("sdxl_base")
    store = ResultsStore(tmp_path / "results")
    add_model(store, name="sdxl_base", bench="parti", n_total=4,
              recipe={"steps": spec.steps, "arch_type": spec.arch_type, "params": spec.params},
              scores={"clip": ("CLIP|ViT-L-14|224", [30.0] * 4)})
    add_model(store, name="dmd2_sdxl", bench="parti", n_total=4, recipe={"steps": 1},
              scores={"clip": ("CLIP|ViT-L-14|224", [31.0] * 4)})
    lb.write_leaderboards(tmp_path / "results", tmp_path / "lb")
    t1 = (tmp_path / "lb" / lb.TABLE1_FILE).read_text()
    assert f"| sdxl_base | {spec.steps} | {spec.arch_type} | {spec.params} |" in t1
    assert "dmd2_sdxl" in MODELS and "| dmd2_sdxl | 1 | — | — |" in t1


def test_prompt_meta_from_the_store(tmp_path):
    """A benchmark's metadata goes into the store with its runs (record_benchmark, as run_eval
    does) and the report side reads it back from there; a version or benchmark the store has
    no metadata for says so and names the fix."""
    from evalsuite.benchmarks import load_benchmark
    from evalsuite.generate import record_benchmark
    b = load_benchmark("tiny")
    store = ResultsStore(tmp_path)
    assert record_benchmark(store, b) and not record_benchmark(store, b)  # recorded once
    ro = ResultsStore(tmp_path, readonly=True)
    pm = lb.read_prompt_meta(ro, "tiny", b.version)
    assert pm.missing is None and pm.group_keys == ("category",)
    assert len(pm.meta) == len(b.prompts) and pm.meta[1]["category"] == "Animals"
    stale = lb.read_prompt_meta(ro, "tiny", "0-deadbeef")
    assert stale.meta == {} and "version 0-deadbeef" in stale.missing
    assert "rerun `distar eval --bench tiny" in stale.missing
    assert lb.read_prompt_meta(ro, "no_such_bench", "1").missing


def test_intervals():
    """Cells print the studentised interval (entries.INTERVAL), never narrower than the t one."""
    from scipy.stats import t as student_t
    ids = np.arange(4)
    # Two prompts: every resample has SE* = 0 or t* = 0, so the interval is the t one,
    # 0.5 +- t_1 * 0.5.
    half = student_t.ppf(0.975, 1) * 0.5
    assert lb.interval(np.array([0.0, 1.0]), np.arange(2)) == pytest.approx((0.5 - half,
                                                                                0.5 + half))
    # Four values 1.0, 1.2, 0.8, 1.0: the t interval is inside, and the percentile one (what
    # the cells printed before: P(mean <= 0.85) = 9/256 > 2.5% > P(mean <= 0.80)) is narrower.
    lo, hi = lb.interval(np.array([1.0, 1.2, 0.8, 1.0]), ids)
    half = student_t.ppf(0.975, 3) * np.std([1.0, 1.2, 0.8, 1.0], ddof=1) / 2
    assert lo <= 1.0 - half + 1e-12 and hi >= 1.0 + half - 1e-12
    pct = stats.bootstrap_ci([1.0, 1.2, 0.8, 1.0], 0.95, lb.N_BOOTSTRAP, lb.BOOTSTRAP_SEED,
                             method="percentile")
    assert (round(pct.low, 6), round(pct.high, 6)) == (0.85, 1.15)
    # One prompt (even with two images): no interval.
    assert lb.interval(np.array([3.0, 4.0]), np.array([7, 7])) is None
    # Prompts resampled, not images: two prompts with two identical images each behave like
    # two prompts (images resampled would give a four-value interval).
    assert lb.interval(np.array([0.0, 0.0, 1.0, 1.0]), np.array([0, 0, 1, 1])) == \
        pytest.approx(lb.interval(np.array([0.0, 1.0]), np.arange(2)))
    # Stratified: each style constant, so the mean of style means never moves...
    g = [(np.array([1.0, 1.0]), np.arange(2)), (np.array([3.0, 3.0, 3.0]), np.arange(2, 5))]
    assert lb.stratified_interval(g) == (2.0, 2.0)
    # ...and a style with one prompt gives no interval.
    assert lb.stratified_interval(g + [(np.array([5.0]), np.array([9]))]) is None


def test_hps_style_score():
    v = np.array([1.0] * 80 + [3.0] * 40)  # a full 80-image chunk and a partial one
    assert lb.hps_style_score(v) == 2.0 and abs(v.mean() - 5 / 3) < 1e-12
    assert lb.hps_style_score(np.arange(800.0)) == np.arange(800.0).mean()


# The paper's reported numbers ----------------------------------------------------------------
def _row(table, model):
    return next(r for r in table if r.model == model)


def test_paper_numbers_spot_checks():
    P = paper_numbers
    assert _row(P.TABLE1_PARTI, "DI*-SDXL (ours, long train)").values["imagereward"] == "1.140"
    assert _row(P.TABLE1_PARTI, "FLUX-dev (Lab, 2024)").values["time_s_per_10"] == "118.64"
    assert _row(P.TABLE1_PARTI, "FLUX-dev (Lab, 2024)").params == "12B"
    assert _row(P.TABLE1_COCO, "DMD2-SDXL (Yin et al., 2024)").values["fid"] == "15.80"
    assert _row(P.TABLE3_HPSV21, "DI*-SDXL (ours, longer training)").values["average"] == "31.19"
    assert P.TABLE2_ABLATION[-1].alphas == "(100, 7.5)"
    assert [len(t) for t in (P.TABLE1_PARTI, P.TABLE1_COCO, P.TABLE2_ABLATION,
                             P.TABLE3_HPSV21)] == [11, 11, 12, 10]
    # The abstract's claim follows from the transcribed times: 2.22 / 118.64 = 1.87% (~1.88%).
    flux = float(_row(P.TABLE1_PARTI, "FLUX-dev (Lab, 2024)").values["time_s_per_10"])
    assert abs(2.22 / flux - 0.0188) < 0.0002
    # Table 3's average column is the mean of its four styles (to the printed precision).
    for r in P.TABLE3_HPSV21:
        styles = [float(r.values[s]) for s in HPS_STYLES]
        assert abs(sum(styles) / 4 - float(r.values["average"])) <= 0.0051, r.model


# The paper's Tables 1-3 as printed, copied into the repository with their citation.
PAPER_MD = Path(__file__).resolve().parents[1] / "evalsuite" / "data" / "paper_tables.md"


def test_paper_numbers_match_the_paper_text():
    """Every transcribed number, row by row, against the tab-separated tables in the paper."""
    P = paper_numbers
    lines = PAPER_MD.read_text(encoding="utf-8").splitlines()

    def cells(line):
        return [c.replace(" SEC", "").strip() for c in re.sub(r"</?b>", "", line).split("\t")[1:]]

    def rows_after(header_prefix, n, skip=0):
        start = next(i for i, l in enumerate(lines) if l.startswith(header_prefix))
        out = [l for l in lines[start + 1:] if "\t" in l and re.match(r"[\d—(]", cells(l)[0])]
        return out[skip:skip + n]

    t1 = rows_after("MODEL\tSTEPS↓\tTYPE", 22)
    for line, r in zip(t1, P.TABLE1_PARTI + P.TABLE1_COCO):
        mine = [str(r.steps), r.arch_type, r.params] + list(r.values.values())
        assert [c.upper() for c in cells(line)] == [c.upper() for c in mine], line
    for line, r in zip(rows_after("MODEL\tSTEPS\tPARAMS", 12), P.TABLE2_ABLATION):
        mine = [str(r.steps), r.params] + list(r.values.values()) + [r.alphas or "—"]
        assert cells(line) == mine, line
    t3_lines = [l for l in lines[next(i for i, l in enumerate(lines)
                                      if l.startswith("MODEL\tANIMATION")) + 1:][:10]]
    for line, r in zip(t3_lines, P.TABLE3_HPSV21):
        assert cells(line) == list(r.values.values()), line
        assert re.sub(r"</?b>", "", line).startswith(f"{r.steps}STEP"), line


def test_committed_paper_table_is_regenerated():
    """leaderboards/paper_reported.md in the repository is exactly what the data module gives."""
    committed = Path(__file__).resolve().parents[1] / "leaderboards" / lb.PAPER_FILE
    assert committed.read_text(encoding="utf-8") == lb.paper_reported()
    text = lb.paper_reported()
    assert text.startswith("# Reported by the DI* paper (NOT measured by this suite)")
    assert "| DI*-SDXL (ours, long train) | 1 | UNet | 2.6B | 1.140 | 5.83 | 0.2331 | 32.75 | " \
           "2.22 |" in text
    assert "| FLUX-dev (Lab, 2024) | 50 | DiT | 12B | 1.132 | 5.90 | 0.2317 | 31.70 | 118.64 |" \
        in text


def test_reported_beside_measured(tmp_path, monkeypatch):
    """--with-reported: the paper's Table 1 number for the same registry model beside each
    measured column, never bold; nothing for unregistered models, random weights or another
    recipe; without the flag, no paper number anywhere in the measured tables."""
    from evalsuite.models import MODELS

    store = ResultsStore(tmp_path / "results")
    base = MODELS.get("sdxl_base")
    meta = {"steps": 50, "arch_type": "UNet", "params": "2.6B"}
    for rh, weights, ir in ((base.recipe_hash, "pretrained", 0.85), (base.with_weights("random").recipe_hash,
                                                                     "random", 0.10)):
        # registered_as: what run_eval records (the registry's recipe, or None for another one).
        add_model(store, name="sdxl_base", bench="parti", n_total=4,
                  recipe={**meta, "weights": weights, "registered_as": "sdxl_base" if weights == "pretrained" else None},
                  rh=rh, latency=95.0, scores={"imagereward": (IR, [ir] * 4), "pickscore": (PICK, [0.226] * 4)})
    add_model(store, name="david", bench="parti", n_total=4, recipe={"steps": 1}, latency=2.0,
              scores={"imagereward": (IR, [1.1] * 4)})
    reg = {**meta, "weights": "pretrained", "registered_as": "sdxl_base"}
    rh = add_model(store, name="sdxl_base", bench="coco30k", n_total=3, recipe=reg,
                   rh=base.recipe_hash, scores={"clip": ("CLIP|ViT-g-14|dmd2", [31.0] * 3)})
    store.add_set_score(recipe_hash=rh, bench="coco30k", bench_version="1-test", metric="fid",
                        metric_version="clean-fid|inception|clean", value=16.2, n_images=3,
                        meta=score_meta("fid"))

    add_model(store, name="sdxl_base", bench="hpsv2", n_total=8, recipe=reg,
              rh=base.recipe_hash, scores={"hpsv21": (HPS21, [0.30] * 8)})  # cosines, as stored

    plain = lb.write_leaderboards(tmp_path / "results", tmp_path / "plain")
    assert not any("(paper)" in p.read_text() for p in plain if p.suffix == ".md" and p.name != lb.PAPER_FILE)
    files = {p.name: p for p in lb.write_leaderboards(tmp_path / "results", tmp_path / "lb", with_reported=True)}
    t3 = section(files[lb.TABLE3_FILE].read_text(), "## HPSv2.1 ↑ on hpsv2 (version 1-test)")
    assert t3.splitlines()[0] == ("| model | steps | anime ↑ (n=2) | anime ↑ (paper) | concept-art ↑ (n=2) | "
                                  "concept-art ↑ (paper) | paintings ↑ (n=2) | paintings ↑ (paper) | photo ↑ (n=2) | "
                                  "photo ↑ (paper) | average ↑ | average ↑ (paper) |")
    assert t3.splitlines()[2] == ("| sdxl_base | 50 | 30.00 [30.00, 30.00] | 30.85 | 30.00 [30.00, 30.00] | 29.30 | "
                                  "30.00 [30.00, 30.00] | 28.98 | 30.00 [30.00, 30.00] | 27.05 | "
                                  "30.00 [30.00, 30.00] | 29.05 |")
    t1 = files[lb.TABLE1_FILE].read_text()
    rows = {r.split(" | ")[0].strip("| "): r.split(" | ") for r in section(t1, "## parti (version 1-test)")
            .splitlines()[2:]}
    header = section(t1, "## parti (version 1-test)").splitlines()[0].split(" | ")
    col = {h.strip("| "): i for i, h in enumerate(header)}
    pretrained = next(v for k, v in rows.items() if k.startswith("sdxl_base") and "random" not in k)
    random_w = next(v for k, v in rows.items() if "weights: random" in k)
    assert pretrained[col["ImageReward ↑ (paper)"]] == "0.887"   # T1 Parti row 1
    assert pretrained[col["PickScore ↑ (paper)"]] == "0.2274"
    # aesthetic: never measured in this store, so nothing recorded how to show it (no arrow)
    assert pretrained[col["aesthetic (paper)"]] == "5.72" and pretrained[col["CLIP ↑ (paper)"]] == "32.72"
    assert pretrained[col["time / 10 images ↓ (paper)"]].strip("| ") == "111"
    assert col["ImageReward ↑ (paper)"] == col["ImageReward ↑"] + 1
    for other in (random_w, rows["david"]):
        assert {other[col[h]].strip("| ") for h in col if h.endswith("(paper)")} == {lb.MISSING}
    assert "**" not in "".join(pretrained[col[h]] for h in col if h.endswith("(paper)"))
    coco = section(t1, "## coco30k (version 1-test)")
    assert "| FID ↓ (paper) |" in coco and coco.splitlines()[2].rstrip().endswith("| 16.20 | 15.89 |")
    assert "Columns headed '(paper)'" in t1


def test_store_from_an_older_distar_names_the_fix(tmp_path):
    """A store written before prompt metadata was recorded (no `benchmarks` / `prompts` tables)
    still gives every table, read-only; where metadata is needed they say so and name the fix."""
    import sqlite3
    build_store(tmp_path / "results")
    con = sqlite3.connect(tmp_path / "results" / "results.sqlite")
    con.executescript("DROP TABLE prompts; DROP TABLE benchmarks;")
    con.close()
    files = {p.name: p for p in lb.write_leaderboards(tmp_path / "results", tmp_path / "lb")}
    br = files[lb.BREAKDOWN_FILE].read_text()
    assert "Prompt metadata unavailable" in br and "written by an older distar" in br
    assert "Fix: rerun `distar eval --bench parti --model MODEL --out" in br
    assert "Prompt styles unavailable" in files[lb.TABLE3_FILE].read_text()
    assert section(files[lb.TABLE1_FILE].read_text(), "## parti (version 1-test)") == TABLE1_PARTI


def test_reported_fallback_for_runs_without_registered_as(tmp_path):
    """Runs recorded before `registered_as` existed: no paper number beside them (the registry
    is not consulted), and the footer names those rows and the fix."""
    from evalsuite.models import MODELS
    base = MODELS.get("sdxl_base")
    store = ResultsStore(tmp_path / "results")
    add_model(store, name="sdxl_base", bench="parti", n_total=4, rh=base.recipe_hash,
              recipe={"steps": 50, "weights": "pretrained"}, scores={"imagereward": (IR, [0.85] * 4)})
    files = {p.name: p for p in lb.write_leaderboards(tmp_path / "results", tmp_path / "lb", with_reported=True)}
    t1 = files[lb.TABLE1_FILE].read_text()
    assert "(paper)" not in section(t1, "## parti (version 1-test)")
    assert "No '(paper)' number for sdxl_base: their runs were recorded before" in t1


# How a metric is shown: described once, by its MetricInfo, recorded with its scores --------------
HEAD_CELL = re.compile(r"^\|(.*)\|\n\|[-:|]+\|$", re.MULTILINE)


def header_cells(text: str) -> list[str]:
    """Every header cell of every markdown table in `text`."""
    return [c.strip() for m in HEAD_CELL.finditer(text) for c in m.group(1).split(" | ")]


def test_heads_are_short_and_the_legend_has_the_versions(boards):
    """Heads are a label and an arrow (<= 24 characters; <= 32 with a count such as (n=2)); the
    full version key of each metric column is in the legend right under its table."""
    _, files = boards
    cells = [c for p in files.values() if p.suffix == ".md" for c in header_cells(p.read_text())]
    assert cells and max(map(len, cells)) <= 32, max(cells, key=len)
    t1 = files[lb.TABLE1_FILE].read_text()
    assert "ImageReward ↑ (ImageReward-v1.0)" not in t1
    under = t1.split("## parti (version 1-test)\n\n", 1)[1].split("\n## ", 1)[0]
    assert f"- ImageReward ↑: `imagereward`, version `{IR}`" in under
    assert f"- PickScore ↑: `pickscore`, version `{PICK}`" in under
    coco = t1.split("## coco30k (version 1-test)\n\n", 1)[1]
    assert "- FID ↓: `fid`, version `clean-fid|inception|clean`" in coco


def test_direction_and_precision_come_from_the_store(tmp_path):
    """A metric's MetricInfo as stored decides arrow, bold and decimals: the same scores stored
    as lower-is-better with 1 decimal show ↓, the lower value bold, 1 decimal; a store written
    before metrics described themselves (no label in the info) still reads, heads its column
    with the metric's name and shows no arrow and no bold."""
    def board(meta: dict | None) -> str:
        root = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
        store = ResultsStore(root)
        for name, v in (("a", 2.0), ("b", 1.0)):
            rh = add_model(store, name=name, bench="parti", n_total=4, recipe={"steps": 1},
                           scores={})
            store.add_set_score(recipe_hash=rh, bench="parti", bench_version="1-test",
                                metric="dist", metric_version="d1", value=v, n_images=4,
                                meta=meta)
        lb.write_leaderboards(root, root / "lb")
        return section((root / "lb" / lb.TABLE1_FILE).read_text(), "## parti (version 1-test)")

    t = board({"info": {"label": "Dist", "higher_is_better": False, "decimals": 1}})
    assert "| Dist ↓ |" in t.splitlines()[0]
    last = {r.split(" | ")[0].strip("| "): r.split(" | ")[-1].strip("| ") for r in t.splitlines()[2:]}
    assert last == {"a": "2.0", "b": "**1.0**"}
    old = board(None)
    assert "| dist |" in old.splitlines()[0] and "**" not in old and "1.000" in old


def test_mini_fd_is_lower_is_better(tmp_path):
    """mini_fd and mini_kd describe themselves as lower-is-better, and a mini table shows them
    so: the arrow down, the lower distance bold."""
    from di_star.mini.metrics import MiniFD, MiniKD
    fd, kd = MiniFD.from_pretrained(), MiniKD.from_pretrained()
    assert fd.info.higher_is_better is False and kd.info.higher_is_better is False
    store = ResultsStore(tmp_path / "results")
    for name, value in (("ref", 439.2), ("init", 442.7)):
        rh = add_model(store, name=name, bench="mini_coco", n_total=4, recipe={"steps": 1},
                       scores={})
        for m in (fd, kd):
            store.add_set_score(recipe_hash=rh, bench="mini_coco", bench_version="1-test",
                                metric=m.info.name, metric_version=m.info.key, value=value,
                                n_images=4, meta={"info": m.info.as_dict()})
    lb.write_leaderboards(tmp_path / "results", tmp_path / "lb", suite="mini")
    t = section((tmp_path / "lb" / "mini_table1.md").read_text(), "## mini_coco (version 1-test)")
    assert "| mini-FD ↓ | mini-KD ↓ |" in t.splitlines()[0]
    assert "| ref | 1 | — | — | — | **439.200** | **439.200** |" in t


def test_committed_leaderboards_have_short_heads():
    """The repository's leaderboards/*.md (`distar demo --update-leaderboards`): every header
    cell <= 32 characters, and mini_fd shows as lower-is-better (arrow down)."""
    root = Path(__file__).resolve().parents[1] / "leaderboards"
    cells = {p.name: header_cells(p.read_text()) for p in sorted(root.glob("*.md"))}
    long = [(n, c) for n, cs in cells.items() for c in cs if len(c) > 32]
    assert not long, long
    t1 = (root / "mini_table1.md").read_text()
    assert "mini-FD ↓" in header_cells(t1) and "- mini-FD ↓: `mini_fd`" in t1
