"""The mini world: determinism, caption <-> parse round trip, ground truth satisfies its caption."""
import numpy as np
import pytest

from distar.core.errors import DistarError
from di_star.mini import scene as W


def _scene_satisfies(scene: W.Scene, req: W.Request) -> bool:
    """Whether a scene is a true instance of a request (the world's own semantics)."""
    if req.background and scene.background != req.background:
        return False
    matches = []
    for g in req.groups:
        m = [o for o in scene.objects
             if (g.shape is None or o.shape == g.shape) and (g.colour is None or o.colour == g.colour)
             and (g.size is None or o.size == g.size)]
        if len(m) != g.count or (g.position and not all(W.in_region(o.position, g.position)
                                                       for o in m)):
            return False
        matches.append(m)
    if req.relation:
        return all(W.relation_holds(a.position, b.position, req.relation)
                   for a in matches[0] for b in matches[1])
    return True


def test_training_pairs_deterministic_and_prefix_stable():
    a, b = W.training_pairs(20, seed=3), W.training_pairs(25, seed=3)
    for (ia, ca), (ib, cb) in zip(a, b):
        assert ca == cb and np.array_equal(np.asarray(ia), np.asarray(ib))
    c = W.training_pairs(20, seed=4)
    assert [x for _, x in a] != [x for _, x in c]
    img = a[0][0]
    assert img.size == (W.IMAGE_SIZE, W.IMAGE_SIZE) and img.mode == "RGB"


def test_parse_of_caption_is_the_requested_attributes():
    rng = np.random.default_rng(0)
    for _ in range(500):
        scene = W.sample_scene(rng)
        req = W.caption_request(scene, rng)
        assert W.parse_caption(W.request_text(req, rng)) == req
        assert _scene_satisfies(scene, req), (scene, req)


def test_parse_handles_synonyms_and_unknown_words():
    r = W.parse_caption("A picture of two big crimson discs on the left, on a gray background")
    assert r == W.Request((W.Group("circle", "red", "large", 2, "left"),), None, "grey")
    r = W.parse_caption("a small green triangle above a yellow star")
    assert r.relation == "above" and [g.shape for g in r.groups] == ["triangle", "star"]
    assert W.parse_caption("an astronaut riding a horse").empty


def test_render_for_caption_satisfies_caption():
    rng = np.random.default_rng(1)
    for text in ["three orange crosses at the bottom", "a big blue box to the right of a star",
                 "a tiny violet triangle in the upper left corner on black",
                 "two yellow discs and a red square", "a green star below a purple cross",
                 "a small star and a red shape"]:
        req = W.parse_caption(text)
        for _ in range(20):
            scene = W.scene_for_request(req, rng)
            assert _scene_satisfies(scene, req), (text, scene)
        assert W.render_for_caption(text, rng).size == (64, 64)


def test_impossible_or_empty_captions_raise_clear_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(DistarError, match="names no object"):
        W.render_for_caption("a horse", rng)
    with pytest.raises(DistarError, match="at most"):
        W.render_for_caption("three red circles and two blue stars", rng)
    with pytest.raises(DistarError, match="no placement"):
        W.render_for_caption("two red circles in the centre", rng)
    with pytest.raises(DistarError, match="inside another"):
        W.render_for_caption("a triangle and a red triangle", rng)


def test_render_draws_the_palette_colour_where_the_object_is():
    scene = W.Scene((W.Obj("square", "blue", "large", "top left"),), "white")
    arr = np.asarray(W.render(scene)).astype(int)
    cy, cx = W.CELL_CENTRES[0], W.CELL_CENTRES[0]
    assert tuple(arr[int(cy), int(cx)]) == W.PALETTE["blue"]
    assert tuple(arr[60, 60]) == W.BACKGROUND_RGB["white"]


def test_mini_benchmarks_registered_and_held_out():
    from evalsuite.benchmarks import load_benchmark
    parti = load_benchmark("mini_parti")
    assert len(parti) >= 200 and parti.group_keys == ("category", "challenge")
    challenges = {p.meta["challenge"] for p in parti.prompts}
    assert challenges == {"colour", "counting", "spatial", "shape", "composition"}
    texts = {p.text for p in parti.prompts}
    assert len(texts) == len(parti)
    rng = np.random.default_rng(0)
    for p in parti.prompts:  # every held-out prompt is checkable and has a ground truth
        req = W.parse_caption(p.text)
        assert all(W.request_checks(W.scene_for_request(req, rng), req).values()), p.text
    # Held out: no training caption equals one, although the grammar could produce them.
    train = {c for _, c in W.training_pairs(3000, seed=0)}
    assert not train & texts
    hits = 0
    for i in range(3000):  # the same draws without the exclusion do hit held-out prompts
        r = np.random.default_rng([0, i])
        scene = W.sample_scene(r)
        hits += W.request_text(W.caption_request(scene, r), r) in texts
    assert hits > 0
    hps = load_benchmark("mini_hps")
    sizes = {s: sum(p.meta["style"] == s for p in hps.prompts) for s in W.BACKGROUNDS}
    assert len(set(sizes.values())) == 4 and all(
        W.parse_caption(p.text).background == p.meta["style"] for p in hps.prompts)
    coco = load_benchmark("mini_coco")
    assert len(coco) == 1000 and all(not W.parse_caption(p.text).empty for p in coco.prompts)
