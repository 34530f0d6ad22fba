"""CLIP score parity with DMD2's compute_clip_score, on CPU, offline.

What exactly is compared: DMD2 (tianweiy/DMD2, main/coco_eval/coco_evaluator.py) is not a
package, so its `compute_clip_score` loop is transcribed in di_star/bench/refs.py (`dmd2_cosines`), returning the per-image cosines it
averages: open_clip's `create_model_and_transforms` model + preprocess (a small ViT config with
seeded random weights instead of ViT-g-14/laion2b_s12b_b42k), images as RGB uint8 arrays through
CenterCropLongEdge + LANCZOS 256, OpenAI `clip.tokenize(truncate=True)` with the "A photo depicts"
tokens spliced in. Ours loads the model's state dict from a file (`weights_path=`).
"""
import numpy as np
import pytest
import torch

from di_star.bench import refs as rc
from di_star.bench.refs import dmd2_cosines, dmd2_tokens
from evalsuite.metrics.clip_score import ClipScore

TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import open_clip
    rc.register_open_clip_config()
    torch.manual_seed(7)
    clip, _, preprocess = open_clip.create_model_and_transforms(rc.TINY_OPEN_CLIP_NAME)
    clip = rc.perturb_(clip, 7).eval().float()
    path = tmp_path_factory.mktemp("clip") / "clip.pt"
    torch.save(clip.state_dict(), path)
    ours = ClipScore.from_pretrained(backbone=rc.TINY_OPEN_CLIP_NAME, pretrained="random", weights_path=str(path),
                                     device="cpu", batch_size=4)
    return clip, preprocess, ours, path


def test_score_matches_dmd2(setup):
    clip, preprocess, ours, _ = setup
    images, prompts = rc.sample_images(10), rc.sample_prompts(10)
    ref = dmd2_cosines([np.array(im.convert("RGB")) for im in images], prompts, clip,
                       preprocess).astype(np.float64)
    assert np.ptp(ref) > 0.05
    np.testing.assert_allclose(ours.score(images, prompts), 100 * ref, atol=100 * TOL, rtol=0)


def test_prefix_splice_equals_prefixed_string():
    """DMD2 splices the prefix tokens after tokenising; we tokenise the prefixed string."""
    import open_clip
    tok = open_clip.get_tokenizer("ViT-g-14")
    prompts = rc.SAMPLE_PROMPTS + ["word " * 74, "word " * 73, "word " * 72, "a" * 300]
    np.testing.assert_array_equal(tok(["A photo depicts " + p for p in prompts]).numpy(),
                                  dmd2_tokens(prompts).numpy())


def test_options_change_the_key_and_the_number(setup):
    clip, _, ours, path = setup
    images, prompts = rc.sample_images(4), rc.sample_prompts(4)
    plain = ClipScore.from_pretrained(backbone=rc.TINY_OPEN_CLIP_NAME, pretrained="random",
                                      weights_path=str(path), device="cpu", prefix="", pre_resize=None)
    clamped = ClipScore.from_pretrained(backbone=rc.TINY_OPEN_CLIP_NAME, pretrained="random",
                                        weights_path=str(path), device="cpu", clamp_zero=True)
    keys = {ours.info.key, plain.info.key, clamped.info.key}
    assert len(keys) == 3
    a, b, c = ours.score(images, prompts), plain.score(images, prompts), clamped.score(images,
                                                                                      prompts)
    assert np.abs(a - b).max() > 1e-3
    np.testing.assert_allclose(c, np.maximum(a, 0), atol=1e-5)
    # prefix='' and pre_resize=None is open_clip's own recipe: encode(preprocess(img)).
    import open_clip
    _, _, preprocess = open_clip.create_model_and_transforms(rc.TINY_OPEN_CLIP_NAME)
    tok = open_clip.get_tokenizer(rc.TINY_OPEN_CLIP_NAME)
    with torch.no_grad():
        f = torch.nn.functional.normalize
        img = f(clip.encode_image(torch.stack([preprocess(im) for im in images])), dim=-1)
        txt = f(clip.encode_text(tok(prompts)), dim=-1)
    np.testing.assert_allclose(b, 100 * (img * txt).sum(-1).numpy(), atol=100 * TOL)


def test_score_tensor_close_to_pil_path_with_gradients(setup):
    """LANCZOS (PIL's weights, as a matrix) then bicubic, in float; PIL rounds to 8 bit after
    each resize (0.4 grey levels on average). Through this random model: < 0.3 on the 100 x cos
    scale, where the images differ by > 5."""
    _, _, ours, _ = setup
    gaps = rc.score_tensor_gaps(ours, rc.sample_images(6), rc.sample_prompts(6))
    assert max(gaps) < 0.3, gaps
