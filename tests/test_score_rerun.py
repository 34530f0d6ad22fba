"""A finished rerun of `distar eval --metrics ...` does not load a metric whose class gives its
store key without weights (`version_key`) when every score is already stored under it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evalsuite.generate import EvalRun
from evalsuite.metrics import METRICS
from evalsuite.metrics.base import MetricInfo
from evalsuite.metrics.runner import known_key, score_run
from evalsuite.store import ImageRow, ResultsStore

LOADS: list[str] = []


class CountingMetric:
    """A per-image metric that counts how often it is built; its key depends on an option."""
    needs_prompts = False

    def __init__(self, offset: float = 0.0, **_):
        LOADS.append("load")
        self.offset = offset
        self.info = MetricInfo("counting", f"counting offset={offset}", "none", "none")

    @classmethod
    def from_pretrained(cls, **options):
        return cls(**options)

    @classmethod
    def version_key(cls, offset: float = 0.0, **_) -> str:
        return MetricInfo("counting", f"counting offset={offset}", "none", "none").key

    def score(self, images, prompts=None):
        return np.full(len(images), 1.0 + self.offset)


class LyingMetric(CountingMetric):
    @classmethod
    def version_key(cls, **_) -> str:
        return "not the key"


class NoKeyMetric(CountingMetric):
    version_key = None


@pytest.fixture
def run(tmp_path, monkeypatch):
    from PIL import Image
    monkeypatch.setitem(METRICS._entries, "counting", CountingMetric.from_pretrained)
    monkeypatch.setitem(METRICS._entries, "lying", LyingMetric)
    monkeypatch.setitem(METRICS._entries, "nokey", NoKeyMetric)
    LOADS.clear()
    store = ResultsStore(tmp_path)
    rows = []
    for i in range(3):
        rel = f"images/{i}.png"
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / rel)
        rows.append(ImageRow(recipe_hash="r", bench="b", bench_version="1", prompt_index=i, k=0,
                             model="m", prompt=f"p{i}", seed=i, path=rel, sha256="0" * 64))
    store.add_images(rows)
    images = store.images("r", "b", "1")
    return EvalRun(store=store, model="m", recipe_hash="r", bench="b", bench_version="1",
                   images=images, device="cpu", run_id="x")


def test_finished_rerun_does_not_load(run):
    first = score_run(run, ["counting"], progress=False)
    assert LOADS == ["load"] and first[0].scored == 3
    again = score_run(run, ["counting"], progress=False)
    assert LOADS == ["load"]  # not loaded again
    assert (again[0].scored, again[0].skipped, again[0].metric_version) == \
        (0, 3, first[0].metric_version)
    # Another option gives another key: loaded and scored.
    other = score_run(run, ["counting"], progress=False, offset=1.0)
    assert LOADS == ["load"] * 2 and other[0].scored == 3
    # A new image: the metric must load to score it.
    run.images = pd.concat([run.images, run.images.iloc[:1].assign(prompt_index=7)])
    assert score_run(run, ["counting"], progress=False)[0].scored == 1 and len(LOADS) == 3


def test_metrics_without_a_key_load_and_a_wrong_key_is_caught(run):
    assert known_key("nokey", {}) is None and known_key("counting", {"offset": 2.0}).endswith("none")
    score_run(run, ["nokey"], progress=False)
    score_run(run, ["nokey"], progress=False)
    assert len(LOADS) == 2  # no version_key: loaded every time, as before
    with pytest.raises(RuntimeError, match="version_key"):
        score_run(run, ["lying"], progress=False)
