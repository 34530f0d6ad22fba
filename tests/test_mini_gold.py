"""The gold judge prefers a caption's own ground truth to other captions' truth, blanks, noise."""
import numpy as np
from PIL import Image

from di_star.mini import gold, scene as W


def _captions(n=40):
    return [c for _, c in W.training_pairs(n, seed=777)]


def test_ground_truth_beats_other_caption_blank_and_noise():
    rng = np.random.default_rng(0)
    caps = _captions()
    own = [W.render_for_caption(c, rng) for c in caps]
    s_own = gold.gold_score(own, caps)
    others = {"other caption": own[1:] + own[:1],
              "blank": [W.render(W.Scene((), str(b))) for b in np.resize(W.BACKGROUNDS, len(caps))],
              "noise": [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
                        for _ in caps]}
    for name, imgs in others.items():
        s = gold.gold_score(imgs, caps)
        assert s_own.mean() > s.mean() + 0.3, name
        assert np.mean(s_own > s) >= 0.95, name
    assert ((s_own >= 0) & (s_own <= 1)).all()


def test_per_sample_and_pure():
    caps = _captions(6)
    imgs = [im for im, _ in W.training_pairs(6, seed=777)]
    batch = gold.gold_score(imgs, caps)
    assert np.array_equal(batch, gold.gold_score(imgs[::-1], caps[::-1])[::-1])
    assert batch[2] == gold.gold_score(imgs[2:3], caps[2:3])[0]


def test_attribute_errors_cost():
    """Each wrong attribute lowers the score: colour, shape, count, size, position."""
    right = W.Scene((W.Obj("circle", "red", "large", "centre"),), "white")
    caption = "a large red circle in the centre"
    base = gold.gold_score([W.render(right)], [caption])[0]
    for wrong in (W.Obj("circle", "blue", "large", "centre"), W.Obj("star", "red", "large", "centre"),
                  W.Obj("circle", "red", "small", "centre"), W.Obj("circle", "red", "large", "left")):
        s = gold.gold_score([W.render(W.Scene((wrong,), "white"))], [caption])[0]
        assert s < base - 0.1, wrong
    two = W.Scene((W.Obj("circle", "red", "large", "centre"), W.Obj("circle", "red", "large", "top")),
                  "white")
    assert gold.gold_score([W.render(two)], [caption])[0] < base - 0.1


def test_preference_part_prefers_centred_and_large_when_unasked():
    caption = "a red circle"
    small_corner = W.Scene((W.Obj("circle", "red", "small", "top left"),), "white")
    large_centre = W.Scene((W.Obj("circle", "red", "large", "centre"),), "white")
    s = gold.gold_score([W.render(small_corner), W.render(large_centre)], [caption] * 2)
    assert s[1] > s[0]


def test_registered_as_a_metric():
    from evalsuite.metrics import load_metric
    m = load_metric("mini_gold", device="cpu", batch_size=4)
    pairs = W.training_pairs(3, seed=1)
    imgs, caps = [p[0] for p in pairs], [p[1] for p in pairs]
    assert np.array_equal(m.score(imgs, caps), gold.gold_score(imgs, caps))
    assert m.info.key.startswith(gold.VERSION)
