"""PickScore parity with the recipe on yuvalkirstain/PickScore_v1's model card, on CPU, offline.

What exactly is compared: a transformers CLIPModel (PickScore's class) from a small config with
seeded random weights, saved with save_pretrained; a CLIPProcessor configured like
laion/CLIP-ViT-H-14-laion2B-s32B-b79K's (shortest edge 224, bicubic, centre crop 224, OpenAI
mean/std) whose tokenizer is built offline from open_clip's BPE vocabulary, also saved. The model
card's `calc_probs` (transcribed below, one prompt per call) runs on those objects; ours loads
both folders through its options (`weights_path=`, `processor_path=`).
"""
import numpy as np
import pytest

from distar.core.errors import WeightsMissingError
from di_star.bench import refs as rc
from evalsuite.metrics.pickscore import PickScore, PickScoreLogit

TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("pickscore")
    model = rc.tiny_hf_clip(seed=5)
    processor = rc.clip_processor(str(d / "bpe"), backend="pil")
    model.save_pretrained(d / "model")
    processor.save_pretrained(d / "processor")
    cos = PickScore.from_pretrained(device="cpu", batch_size=4, weights_path=str(d / "model"),
                                    processor_path=str(d / "processor"))
    logit = PickScoreLogit.from_pretrained(device="cpu", batch_size=4, weights_path=str(d / "model"),
                                           processor_path=str(d / "processor"))
    return model, processor, cos, logit


def test_score_matches_model_card(setup):
    model, processor, cos, logit = setup
    images, prompts = rc.sample_images(10), rc.sample_prompts(10)
    ref = [rc.pickscore_card_scores(p, [im], processor, model) for im, p in zip(images, prompts)]
    ref_cos = np.array([c[0] for c, _ in ref], dtype=np.float64)
    ref_logit = np.array([s[0] for _, s in ref], dtype=np.float64)
    assert np.ptp(ref_cos) > 0.05
    np.testing.assert_allclose(cos.score(images, prompts), ref_cos, atol=TOL, rtol=0)
    np.testing.assert_allclose(logit.score(images, prompts), ref_logit, atol=TOL * 100, rtol=0)
    # The logit unit is the cosine times exp(logit_scale) (100 for an untrained scale).
    np.testing.assert_allclose(ref_logit / ref_cos, model.logit_scale.exp().item(), rtol=1e-4)
    # What the runner may read before loading (version_key) is what loading gives.
    assert (PickScore.version_key(), PickScoreLogit.version_key()) == (cos.info.key,
                                                                      logit.info.key)


def test_many_images_one_prompt_as_in_the_model_card(setup):
    """The card scores several images against one prompt in one call."""
    model, processor, cos, _ = setup
    images = rc.sample_images(5)
    ref_cos, _ = rc.pickscore_card_scores("a cat", images, processor, model)
    np.testing.assert_allclose(cos.score(images, ["a cat"] * 5), ref_cos, atol=TOL)


def test_transformers5_default_processor_differs(setup):
    """Why the PIL image processor is pinned: transformers 5's default (torchvision) CLIP image
    processor gives different pixels, hence different scores, from the PIL one that published
    PickScore numbers were computed with."""
    from transformers import AutoProcessor
    model, processor, cos, _ = setup
    # The model card's own code under transformers 5: AutoProcessor of the processor folder
    # (saved here as laion's is configured) picks the torchvision-backed CLIPImageProcessor.
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        processor.save_pretrained(folder)
        auto = AutoProcessor.from_pretrained(folder)
    assert type(auto.image_processor).__name__ == "CLIPImageProcessor"  # not ...Pil
    images, prompts = rc.sample_images(10), rc.sample_prompts(10)
    pil_px = processor(images=images, return_tensors="pt")["pixel_values"]
    auto_px = auto(images=images, return_tensors="pt")["pixel_values"]
    pixel_gap = float((pil_px - auto_px).abs().max())  # normalised pixel units
    pil = np.array([rc.pickscore_card_scores(p, [im], processor, model)[0][0]
                    for im, p in zip(images, prompts)])
    tv = np.array([rc.pickscore_card_scores(p, [im], auto, model)[0][0]
                   for im, p in zip(images, prompts)])
    cos_gap = float(np.abs(pil - tv).max())  # cosines (the card's [0])
    # evalsuite/metrics/README.md quotes these (tiny random PickScore-architecture weights).
    print(f"\nPickScore processor gap, 10 images: max |pixel| {pixel_gap:.4f}, max |cos| "
          f"{cos_gap:.2e}, max |logit| {cos_gap * float(model.logit_scale.exp()):.2e}")
    assert pixel_gap > 1e-3 and cos_gap > 1e-6
    np.testing.assert_allclose(cos.score(images, prompts), pil, atol=TOL)


def test_padding_and_batching_are_neutral(setup):
    """Prompts of very different lengths padded together give the same scores as alone."""
    _, _, cos, _ = setup
    images, prompts = rc.sample_images(8), rc.sample_prompts(8)
    alone = np.concatenate([cos.score([im], [p]) for im, p in zip(images, prompts)])
    np.testing.assert_allclose(cos.score(images, prompts), alone, atol=1e-5)


def test_score_tensor_close_to_pil_path_with_gradients(setup):
    """Same geometry as the processor (floor-offset crop); PIL rounds to 8 bit after resizing
    (0.3 grey levels on average), which moves this random model's cosine by < 2e-3 while the
    images differ by > 5e-2."""
    _, _, cos, _ = setup
    gaps = rc.score_tensor_gaps(cos, rc.sample_images(6), rc.sample_prompts(6))
    assert max(gaps) < 2e-3, gaps


def test_info_names_the_unit(setup):
    _, _, cos, logit = setup
    assert cos.info.version == "PickScore_v1/cos" and logit.info.version == "PickScore_v1/logit"
    assert cos.info.key != logit.info.key


def test_missing_weights_offline_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("DISTAR_PICKSCORE_PATH", raising=False)
    with pytest.raises(WeightsMissingError) as e:
        PickScore.from_pretrained(device="cpu")
    assert "yuvalkirstain/PickScore_v1" in str(e.value)
    assert "DISTAR_PICKSCORE_PATH" in str(e.value) and "weights_path" in str(e.value)
