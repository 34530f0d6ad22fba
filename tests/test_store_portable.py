"""Reports are a pure function of the results store: a results folder copied to another machine
(another environment, model registry and benchmark files) gives byte-identical leaderboards and
gallery. Real pieces: `distar eval`'s library calls generate and score into the store."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from evalsuite import leaderboard as lb
from evalsuite.gallery import write_gallery
from evalsuite.generate import EvalRequest, run_eval
from evalsuite.metrics.runner import score_run
from evalsuite.models import MODELS
from evalsuite.store import ResultsStore

STYLE_PROMPTS = {"anime": ["a fox in a forest", "a dragon over a city"],
                 "concept-art": ["a castle on a cliff"],
                 "paintings": ["a bowl of fruit", "a harbour at dawn"],
                 "photo": ["a red bicycle"]}
TSV = "Prompt\tCategory\tChallenge\na cat\tAnimals\tBasic\na dog\tAnimals\tComplex\na vase\tArts\tBasic\n"


def outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def reports(results: Path, out: Path) -> dict[str, bytes]:
    lb.write_leaderboards(results, out / "lb", with_reported=True, baseline="tiny_sdxl")
    for bench in sorted(ResultsStore(results, readonly=True).table("images").bench.unique()):
        write_gallery(results, bench, None, out / f"gallery-{bench}")
    return outputs(out)


@pytest.mark.slow
def test_copied_store_gives_identical_reports(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    hpdv2 = tmp_path / "hpdv2"
    hpdv2.mkdir()
    for style, prompts in STYLE_PROMPTS.items():
        (hpdv2 / f"{style}.json").write_text(json.dumps(prompts))
    monkeypatch.setenv("DISTAR_HPSV2_PROMPTS", str(hpdv2))
    tsv = tmp_path / "prompts" / "mine.tsv"
    tsv.parent.mkdir()
    tsv.write_text(TSV)
    results = tmp_path / "results"
    for model in ("tiny_sdxl", "tiny_sd15"):
        for bench in ("hpsv2", f"file:{tsv}"):
            run = run_eval(EvalRequest(model=model, bench=bench, out=results, device="cpu"))
            score_run(run, ["smoke_clip"], progress=False, device="cpu")
    here = reports(results, tmp_path / "here")
    assert {"lb/table3_hpsv21.md", "lb/category_breakdown.md"} <= set(here)
    breakdown = here["lb/category_breakdown.md"].decode()
    assert "by category" in breakdown and "Animals (n=2)" in breakdown  # metadata was there
    assert '<select data-key="style">' in here["gallery-hpsv2/index.html"].decode()
    assert "| tiny_sdxl (weights: tiny) | 1 | UNet | tiny |" in here["lb/table1_parti_coco.md"].decode()

    # Another machine: the folder copied elsewhere; no HPSv2 prompt files, the prompt file
    # edited (so its installed version and categories differ), another model registry, an
    # empty Hugging Face cache.
    moved = tmp_path / "elsewhere" / "results"
    shutil.copytree(results, moved)
    shutil.rmtree(results)
    shutil.rmtree(hpdv2)
    monkeypatch.delenv("DISTAR_HPSV2_PROMPTS")
    tsv.write_text(TSV.replace("Animals", "Pets").replace("a cat", "a lion"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("DISTAR_CACHE", str(tmp_path / "empty-cache"))
    spec = MODELS.get("tiny_sdxl")
    monkeypatch.setitem(MODELS._entries, "tiny_sdxl",
                        dataclasses.replace(spec, params="99B", arch_type="DiT", steps=7))
    from evalsuite.benchmarks import load_benchmark
    load_benchmark.cache_clear()  # what a fresh process on the other machine would see
    # Reports beside the copy as they were beside the original: the gallery links each
    # thumbnail to its full image by a path relative to the results folder.
    there = reports(moved, moved.parent / "here")
    assert there == here
