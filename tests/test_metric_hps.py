"""HPSv2 / HPSv2.1 parity with the hpsv2 package (1.2.0), on CPU, offline.

What exactly is compared: hpsv2's own model class (its bundled open_clip), built with a small ViT
config through hpsv2's create_model_and_transforms exactly as img_score.initialize_model builds
ViT-H-14 (pretrained=None: nothing downloaded), with seeded random weights. Its state dict is saved
as an HPS checkpoint ({'state_dict': ...}); our scorer loads that file through its normal
`weights_path=` path into open_clip 3.x. The reference numbers come from hpsv2's public per-image
scorer `hpsv2.img_score.score(..., cp=checkpoint)` (its model cache pre-filled with the random
model, so `initialize_model` does not download) and from `hpsv2.evaluation.evaluate_benchmark`
(the function `hpsv2.evaluate` calls after downloading prompts and weights).
"""
import json
import re

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from distar.core.errors import WeightsMissingError
from di_star.bench import refs as rc
from evalsuite.metrics.hps import HPSv20, HPSv21, hps_benchmark_summary

TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model, preprocess_val = rc.hpsv2_reference_model(seed=1)
    ckpt = rc.save_tiny_open_clip_checkpoint(model, tmp_path_factory.mktemp("hps") / "hps.pt")
    _, img_score, evaluation = rc.import_hpsv2()
    return model, preprocess_val, ckpt, img_score, evaluation


@pytest.fixture(scope="module")
def ours(reference):
    _, _, ckpt, _, _ = reference
    return HPSv21.from_pretrained(weights_path=str(ckpt), arch=rc.TINY_OPEN_CLIP_NAME, device="cpu",
                                  batch_size=4)


def test_score_matches_hpsv2_img_score(reference, ours, monkeypatch):
    model, preprocess_val, ckpt, img_score, _ = reference
    monkeypatch.setattr(img_score, "model_dict", {"model": model, "preprocess_val": preprocess_val})
    images, prompts = rc.sample_images(10), rc.sample_prompts(10)
    ref = np.array([img_score.score([im], p, cp=str(ckpt), hps_version="v2.1")[0]
                    for im, p in zip(images, prompts)], dtype=np.float64)
    got = ours.score(images, prompts)
    assert got.shape == (10,)
    assert np.ptp(ref) > 0.05  # the random model separates the images: the check has teeth
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)


def test_benchmark_aggregation_matches_evaluate_benchmark(reference, ours, tmp_path, capsys,
                                                          monkeypatch):
    """Two styles with 170 and 85 prompts (three and two 80-image chunks), one image missing."""
    model, preprocess_val, _, _, evaluation = reference
    from di_star.bench.refs import import_hpsv2
    hps_open_clip, _, _ = import_hpsv2()
    tokenizer = hps_open_clip.get_tokenizer(rc.TINY_OPEN_CLIP_NAME)
    rng = np.random.default_rng(0)
    img_root, meta = tmp_path / "imgs" / "mymodel", tmp_path / "meta"
    meta.mkdir(parents=True)
    ours_by_style = {}
    from PIL import Image
    for style, n in (("anime", 170), ("photo", 85)):
        (img_root / style).mkdir(parents=True)
        prompts = [f"{style} prompt {i} " + "word " * int(rng.integers(0, 30)) for i in range(n)]
        (meta / f"{style}.json").write_text(json.dumps(prompts))
        for i in range(n):
            if style == "photo" and i == 7:
                continue  # hpsv2 skips a missing image (and shifts later chunks)
            a = rng.integers(0, 255, size=(40, 56, 3), dtype=np.uint8)
            Image.fromarray(a).save(img_root / style / f"{i:05d}.jpg")
        present = [i for i in range(n) if (img_root / style / f"{i:05d}.jpg").exists()]
        imgs = [Image.open(img_root / style / f"{i:05d}.jpg") for i in present]
        ours_by_style[style] = (ours.score(imgs, [prompts[i] for i in present]), present)

    class RecordingNumpy:
        """numpy, recording the mean/std results evaluate_benchmark prints rounded."""
        def __init__(self):
            self.calls = []

        def __getattr__(self, name):
            return getattr(np, name)

        def mean(self, x, *a, **k):
            r = np.mean(x, *a, **k)
            self.calls.append(("mean", len(x), float(r)))
            return r

        def std(self, x, *a, **k):
            r = np.std(x, *a, **k)
            self.calls.append(("std", len(x), float(r)))
            return r

    rec = RecordingNumpy()
    monkeypatch.setattr(evaluation, "np", rec)
    evaluation.evaluate_benchmark(str(meta), str(img_root), model, 20, preprocess_val,
                                  tokenizer, "cpu")
    printed = capsys.readouterr().out
    style_order = re.findall(r"^mymodel (\S+)\s", printed, flags=re.M)
    assert style_order[-1] == "Average"
    # Per style: chunk means..., mean(chunk means), std(chunk means); finally mean(all).
    ref, calls = {}, list(rec.calls)
    for style in style_order[:-1]:
        i = next(j for j, c in enumerate(calls) if c[0] == "std")
        ref[style] = {"mean": calls[i - 1][2], "std": calls[i][2]}
        calls = calls[i + 1:]
    ref["Average"] = calls[-1][2]

    values = np.concatenate([v for v, _ in ours_by_style.values()])
    styles = [s for s, (v, _) in ours_by_style.items() for _ in v]
    order = [i for _, (_, present) in ours_by_style.items() for i in present]
    got = hps_benchmark_summary(values, styles, order)
    assert got["anime"]["n"] == 170 and got["photo"]["n"] == 84
    for style in ("anime", "photo"):
        assert abs(got[style]["mean"] - ref[style]["mean"]) < 100 * TOL  # x100 unit
        assert abs(got[style]["std"] - ref[style]["std"]) < 100 * TOL
    assert abs(got["Average"]["mean"] - ref["Average"]) < 100 * TOL
    # The style score is the mean of chunk means, which is not the plain mean here.
    anime = 100 * ours_by_style["anime"][0]
    assert abs(got["anime"]["mean"] - anime.mean()) > 1e-6


def test_score_tensor_equals_pil_path_and_has_gradients(ours):
    """hpsv2 resizes a float tensor, so the tensor path is the same computation."""
    gaps = rc.score_tensor_gaps(ours, rc.sample_images(4), rc.sample_prompts(4))
    assert max(gaps) < 1e-5, gaps
    assert all(not p.requires_grad for p in ours.model.parameters())


def test_batching_does_not_change_scores(ours):
    images, prompts = rc.sample_images(6), rc.sample_prompts(6)
    one = np.concatenate([ours.score([im], [p]) for im, p in zip(images, prompts)])
    np.testing.assert_allclose(ours.score(images, prompts), one, atol=1e-5)


def test_versions_are_distinct_keys(reference):
    _, _, ckpt, _, _ = reference
    a = HPSv20.from_pretrained(weights_path=str(ckpt), arch=rc.TINY_OPEN_CLIP_NAME, device="cpu")
    b = HPSv21.from_pretrained(weights_path=str(ckpt), arch=rc.TINY_OPEN_CLIP_NAME, device="cpu")
    assert a.info.version == "HPSv2.0" and b.info.version == "HPSv2.1"
    assert a.info.key != b.info.key and "HPS_v2.1_compressed.pt" in b.info.key


def test_no_antialias_variant_matches_hpsv2_under_old_torchvision(reference, ours, monkeypatch):
    """hpsv2 resizes with torchvision's default antialias (False before 0.17, True since).
    'hpsv21_noaa' reproduces hpsv2 run with the old default (emulated by making its resize
    call pass antialias=False), under its own name and key; 'hpsv21' is the new default."""
    import hpsv2.src.open_clip.transform as hps_transform

    from evalsuite.metrics import load_metric
    model, preprocess_val, ckpt, img_score, _ = reference
    monkeypatch.setattr(img_score, "model_dict", {"model": model, "preprocess_val": preprocess_val})
    noaa = load_metric("hpsv21_noaa", weights_path=str(ckpt), arch=rc.TINY_OPEN_CLIP_NAME,
                       device="cpu")
    images, prompts = rc.sample_images(6), rc.sample_prompts(6)
    new_default = np.array([img_score.score([im], p, cp=str(ckpt), hps_version="v2.1")[0]
                            for im, p in zip(images, prompts)])

    class OldTorchvision:
        def __getattr__(self, name):
            return getattr(TF, name)

        @staticmethod
        def resize(img, size, interpolation, **kw):
            return TF.resize(img, size, interpolation, antialias=False)

    monkeypatch.setattr(hps_transform, "F", OldTorchvision())
    old_default = np.array([img_score.score([im], p, cp=str(ckpt), hps_version="v2.1")[0]
                            for im, p in zip(images, prompts)])
    np.testing.assert_allclose(noaa.score(images, prompts), old_default, atol=TOL, rtol=0)
    np.testing.assert_allclose(ours.score(images, prompts), new_default, atol=TOL, rtol=0)
    assert np.abs(old_default - new_default).max() > 10 * TOL  # the two really differ
    assert noaa.info.name == "hpsv21_noaa" and noaa.info.key != ours.info.key
    assert "without antialias" in noaa.info.key and "noaa" in noaa.info.version
    # The differentiable path follows the variant too.
    x = TF.to_tensor(images[0].convert("RGB"))[None]
    assert abs(noaa.score_tensor(x, prompts[:1]).item() - old_default[0]) < 1e-5


def test_missing_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("DISTAR_HPSV21_PATH", raising=False)
    with pytest.raises(WeightsMissingError) as e:
        HPSv21.from_pretrained(device="cpu")
    msg = str(e.value)
    assert "HPS_v2.1_compressed.pt" in msg and "DISTAR_HPSV21_PATH" in msg and "weights_path" in msg
    with pytest.raises(WeightsMissingError, match="nothing.pt"):
        HPSv21.from_pretrained(weights_path=str(tmp_path / "nothing.pt"), device="cpu")


def test_pad_when_long_side_already_224(ours):
    """hpsv2 skips padding here and then fails; we pad (documented deviation)."""
    from PIL import Image
    im = Image.fromarray(np.full((100, 224, 3), 128, np.uint8))
    assert np.isfinite(ours.score([im], ["x"])).all()
    x = torch.rand(1, 3, 100, 224)
    assert ours.score_tensor(x, ["x"]).shape == (1,)
