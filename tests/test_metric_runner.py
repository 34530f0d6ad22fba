"""The scoring runner: registry names, per-metric options, resumable per-batch writes, set
metrics to set_scores. Real metric classes through the registry, with small weights on disk."""
import json
from pathlib import Path

import numpy as np
import pytest

from distar.core.errors import DistarError
from di_star.bench import refs as rc
from evalsuite.metrics.hps import HPSv21
from evalsuite.metrics.runner import score_run, split_options
from store_helpers import image_run


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture()
def run(tmp_path):
    return image_run(tmp_path / "results", 7, seed=4, recipe_hash="abc123", seed_offset=100)


@pytest.fixture(scope="module")
def hps_ckpt(tmp_path_factory):
    import open_clip
    rc.register_open_clip_config()
    model = rc.perturb_(open_clip.create_model(rc.TINY_OPEN_CLIP_NAME), 11)
    return str(rc.save_tiny_open_clip_checkpoint(model, tmp_path_factory.mktemp("r") / "h.pt"))


def _hps_opts(ckpt):
    return {"weights_path": ckpt, "arch": rc.TINY_OPEN_CLIP_NAME}


def test_scores_every_image_once_and_resumes(run, hps_ckpt):
    out = score_run(run, ["hpsv21"], batch_size=3, progress=False, hpsv21=_hps_opts(hps_ckpt))
    assert (out[0].scored, out[0].skipped) == (7, 0)
    scores = run.store.table("scores")
    assert len(scores) == 7 and set(scores.metric) == {"hpsv21"}
    direct = HPSv21.from_pretrained(device="cpu", **_hps_opts(hps_ckpt))
    assert scores.metric_version.iloc[0] == direct.info.key
    images = [run.store.root / p for p in run.images.path]
    from PIL import Image
    expected = direct.score([Image.open(p).convert("RGB") for p in images], list(run.images.prompt))
    got = scores.sort_values("prompt_index").value.to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    meta = json.loads(scores.meta_json.iloc[0])
    assert meta["info"]["version"] == "HPSv2.1"
    import hashlib  # the full sha256 of the weight file scored with, in every row's meta
    assert meta["provenance"]["hps"]["sha256"] == hashlib.sha256(
        Path(hps_ckpt).read_bytes()).hexdigest()
    # Run again: nothing left to do, nothing duplicated.
    again = score_run(run, ["hpsv21"], batch_size=3, progress=False, hpsv21=_hps_opts(hps_ckpt))
    assert (again[0].scored, again[0].skipped) == (0, 7) and len(run.store.table("scores")) == 7


def test_an_interrupted_run_keeps_finished_batches(run, hps_ckpt, monkeypatch):
    calls = {"n": 0}
    real = HPSv21.score

    def flaky(self, images, prompts):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, images, prompts)

    monkeypatch.setattr(HPSv21, "score", flaky)
    with pytest.raises(KeyboardInterrupt):
        score_run(run, ["hpsv21"], batch_size=3, progress=False, hpsv21=_hps_opts(hps_ckpt))
    assert len(run.store.table("scores")) == 3  # the first batch was written
    monkeypatch.setattr(HPSv21, "score", real)
    out = score_run(run, ["hpsv21"], batch_size=3, progress=False, hpsv21=_hps_opts(hps_ckpt))
    assert (out[0].scored, out[0].skipped) == (4, 3)
    assert sorted(run.store.table("scores").prompt_index) == list(range(7))


def test_set_metric_goes_to_set_scores(run, tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    for i, im in enumerate(rc.sample_images(9, seed=8)):
        im.save(ref / f"{i}.png")
    opts = {"reference_dir": str(ref), "extractor": rc.TinyExtractor(), "num_workers": 0,
            "cache_dir": str(tmp_path / "cache")}
    out = score_run(run, ["fid"], progress=False, fid=opts)
    rows = run.store.table("set_scores")
    assert len(rows) == 1 and rows.n_images.iloc[0] == 7 and rows.value.iloc[0] == out[0].value
    assert "ref=" in rows.metric_version.iloc[0] and out[0].value > 0
    again = score_run(run, ["fid"], progress=False, fid=opts)
    assert again[0].scored == 0 and again[0].value == out[0].value


def test_unknown_metric_lists_choices_before_loading_anything(run):
    with pytest.raises(DistarError) as e:
        score_run(run, ["hpsv21", "pickscroe"], progress=False)
    assert "pickscroe" in str(e.value) and "pickscore" in str(e.value) and "hpsv2" in str(e.value)


def test_unknown_option_is_a_clear_error(run, hps_ckpt):
    with pytest.raises(DistarError, match="does not take"):
        score_run(run, ["hpsv21"], progress=False,
                  hpsv21={**_hps_opts(hps_ckpt), "weight_path": "typo"})


def test_split_options():
    opts = split_options(["fid", "clip"], {"device": "cpu", "fid": {"reference_dir": "x"},
                                           "clip": {"device": "cuda"}})
    assert opts == {"fid": {"device": "cpu", "reference_dir": "x"}, "clip": {"device": "cuda"}}
