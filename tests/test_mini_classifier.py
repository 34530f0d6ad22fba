"""Mini attribute classifier: the checks' semantics (oracle scenes), training writes a loadable
safetensors folder, the metrics load from it, missing weights give one clear error."""
from dataclasses import replace

import numpy as np
import pytest

from distar.core.errors import WeightsMissingError
from evalsuite.metrics import load_metric
from di_star.mini.metrics import attribute_score
from di_star.mini import classifier as C, scene as W

TINY = C.ClassifierConfig(width=4, cell_dim=8)


def test_checks_pass_on_ground_truth_and_fail_on_a_changed_attribute():
    rng = np.random.default_rng(0)
    caps = [c for _, c in W.training_pairs(60, seed=5)]
    for cap in caps:
        req = W.parse_caption(cap)
        scene = W.scene_for_request(req, rng)
        checks = W.request_checks(scene, req)
        assert attribute_score(checks, "all") == 1.0, (cap, checks)
        g = req.groups[0]
        if g.colour:  # recolour every object of group 0: its colour check must fail
            other = W.COLOURS[(W.COLOURS.index(g.colour) + 1) % len(W.COLOURS)]
            bad = W.Scene(tuple(replace(o, colour=other) if o.colour == g.colour else o
                                for o in scene.objects), scene.background)
            checks = W.request_checks(bad, req)
            assert not checks["0.colour"] and attribute_score(checks, "all") == 0.0
            assert attribute_score(checks, "frac") < 1.0
    assert np.isnan(attribute_score(W.request_checks(W.Scene((), "white"),
                                                     W.parse_caption("a horse")), "all"))


def test_count_and_position_and_relation_checks():
    req = W.parse_caption("two red circles on the left")
    two = W.Scene((W.Obj("circle", "red", "small", "top left"),
                   W.Obj("circle", "red", "large", "bottom left")), "white")
    assert all(W.request_checks(two, req).values())
    three = replace(two, objects=two.objects + (W.Obj("circle", "red", "small", "left"),))
    assert not W.request_checks(three, req)["0.count"]
    moved = replace(two, objects=(two.objects[0], replace(two.objects[1], position="bottom")))
    assert not W.request_checks(moved, req)["0.position"]
    rel = W.parse_caption("a blue star above a green cross")
    up = W.Scene((W.Obj("star", "blue", "small", "top"), W.Obj("cross", "green", "small", "centre")),
                 "grey")
    down = W.Scene((W.Obj("star", "blue", "small", "bottom"),
                    W.Obj("cross", "green", "small", "centre")), "grey")
    assert W.request_checks(up, rel)["relation"] and not W.request_checks(down, rel)["relation"]


RED_CIRCLE = W.Obj("circle", "red", "small", "top left")
# (caption, scene, strict checks that fail, share of checks that hold): each scene passed the
# lenient rules before CHECKS_VERSION strict-v2 (a single object's count and extra objects
# were not checked) and fails the strict ones.
STRICT_CASES = [
    ("a red circle", (RED_CIRCLE,), set(), 1.0),
    # extra object: shape, colour, count hold; only_asked fails
    ("a red circle", (RED_CIRCLE, W.Obj("square", "blue", "large", "right")), {"only_asked"}, 3 / 4),
    # wrong count: two red circles where one was asked
    ("a red circle", (RED_CIRCLE, replace(RED_CIRCLE, position="bottom right")), {"0.count"}, 3 / 4),
    # wrong position by an extra copy: both copies on the left (the lenient position check held)
    ("a red circle on the left", (RED_CIRCLE, replace(RED_CIRCLE, position="bottom left")),
     {"0.count"}, 4 / 5),
    # two asked, three drawn, one of them a stray object beside the relation
    ("a blue star above a green cross",
     (W.Obj("star", "blue", "small", "top"), W.Obj("cross", "green", "small", "centre"),
      W.Obj("circle", "red", "small", "bottom left")), {"only_asked"}, 7 / 8),
    # the asked count of alike objects plus one different object
    ("two red circles", (RED_CIRCLE, replace(RED_CIRCLE, position="top right"),
                         W.Obj("triangle", "yellow", "small", "centre")), {"only_asked"}, 3 / 4),
]


@pytest.mark.parametrize("caption, objects, failing, frac", STRICT_CASES)
def test_strict_checks_closed_form(caption, objects, failing, frac):
    checks = W.request_checks(W.Scene(objects, "white"), W.parse_caption(caption))
    assert {k for k, ok in checks.items() if not ok} == failing, checks
    assert attribute_score(checks, "all") == float(not failing)
    assert attribute_score(checks, "frac") == pytest.approx(frac)


def test_strict_metrics_on_renders_of_the_hand_built_scenes():
    """The shipped classifier reads clean renders of the scenes above as built, so the metrics
    give the closed-form values; the version key names the strict checks."""
    rng = np.random.default_rng(0)
    imgs = [W.render(W.Scene(objs, "white"), rng) for _, objs, _, _ in STRICT_CASES]
    caps = [c for c, _, _, _ in STRICT_CASES]
    acc, frac = load_metric("mini_attr_acc"), load_metric("mini_attr_frac")
    assert acc.score(imgs, caps).tolist() == [float(not f) for _, _, f, _ in STRICT_CASES]
    assert frac.score(imgs, caps) == pytest.approx([f for *_, f in STRICT_CASES])
    assert W.CHECKS_VERSION in acc.info.version and W.CHECKS_VERSION in frac.info.version


def test_train_save_load_and_metric(tmp_path):
    recipe = C.TrainRecipe(n=120, epochs=1, batch_size=64)
    out = C.train_attribute_classifier(tmp_path / "clf", seed=0, cfg=TINY, recipe=recipe)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    model = C.load_attribute_classifier(out)
    assert model.cfg == TINY and not any(p.requires_grad for p in model.parameters())
    pairs = W.training_pairs(5, seed=2)
    imgs, caps = [p[0] for p in pairs], [p[1] for p in pairs]
    logits = model(C.to_tensor(imgs))
    assert logits["shape"].shape == (5, 9, 1 + len(W.SHAPES))
    assert model.features(C.to_tensor(imgs)).shape == (5, 9 * TINY.cell_dim)
    acc = load_metric("mini_attr_acc", classifier_path=str(out), device="cpu", batch_size=4)
    frac = load_metric("mini_attr_frac", classifier_path=str(out), device="cpu", batch_size=4)
    a, f = acc.score(imgs, caps), frac.score(imgs, caps)
    assert set(a.tolist()) <= {0.0, 1.0} and ((f >= a) & (f <= 1)).all()
    assert acc.info.key != frac.info.key and "sha256:" in acc.info.backbone
    # The same seed gives the same weights (deterministic training).
    again = C.train_attribute_classifier(tmp_path / "clf2", seed=0, cfg=TINY, recipe=recipe)
    assert (again / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_missing_classifier_is_one_clear_error(tmp_path):
    with pytest.raises(WeightsMissingError, match="lab build mini"):
        load_metric("mini_attr_acc", classifier_path=str(tmp_path / "nowhere"))


def test_mini_fd_kd_against_ground_truth_renders(tmp_path):
    """Ground truth of the same prompts is closer than blank images; references are
    deterministic; a prompt the world cannot render is one clear error."""
    from distar.core.errors import DistarError
    from di_star.mini.metrics import reference_renders
    recipe = C.TrainRecipe(n=120, epochs=1, batch_size=64)
    out = C.train_attribute_classifier(tmp_path / "clf", seed=0, cfg=TINY, recipe=recipe)
    caps = [c for _, c in W.training_pairs(40, seed=9)]
    refs = reference_renders(caps, seed=0)
    assert [np.asarray(a).tobytes() for a in refs[:3]] == \
        [np.asarray(b).tobytes() for b in reference_renders(caps[:3], seed=0)]
    truth = reference_renders(caps, seed=1)  # other draws of the same prompts
    blank = [W.render(W.Scene((), "grey"))] * len(caps)
    for name in ("mini_fd", "mini_kd"):
        m = load_metric(name, classifier_path=str(out), device="cpu")
        assert not hasattr(m, "score") and m.info.higher_is_better is False
        good, bad = m.compute(truth, prompts=caps), m.compute(blank, prompts=caps)
        assert good < bad, (name, good, bad)
    assert "mini-FD" in load_metric("mini_fd", classifier_path=str(out)).info.key
    with pytest.raises(DistarError, match="cannot render"):
        m.compute(blank[:2], prompts=["a horse", "a cat"])
