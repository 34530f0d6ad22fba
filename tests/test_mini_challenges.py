"""Per-challenge means (di_star.mini.challenges, `distar lab challenges`): prompts as units, the
latest stored metric version only, one clear line for a folder without a store; chance of the
position / relation words (the attr_checks probe); the findings' seed sentence (paired tests, no
seed spread)."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from distar.cli import app
from evalsuite.store import ImageRow, ResultsStore, ScoreRow

CHALLENGE = {0: "colour", 1: "colour", 2: "colour", 3: "spatial", 4: "spatial", 5: "spatial"}
# model -> per (prompt, k) strict accuracy: prompt means colour (1, 0.5, 0), spatial (0, 0, 0.5)
VALUES = {"ref": [[1, 1], [1, 0], [0, 0], [0, 0], [0, 0], [0, 1]]}


# As the runner stores it with every score: the metric's MetricInfo, bounds included.
INFO = json.dumps({"info": {"name": "mini_attr_acc", "bounds": [0.0, 1.0]}})


def _store(root, old_value=None):
    store = ResultsStore(root)
    store.add_benchmark("mini_parti", "1", "", ("challenge",),
                        [(i, f"p{i}", {"challenge": c}) for i, c in CHALLENGE.items()])
    imgs, scores = [], []
    for model, per_prompt in VALUES.items():
        for i, vs in enumerate(per_prompt):
            for k, v in enumerate(vs):
                imgs.append(ImageRow(model, "mini_parti", "1", i, k, model, f"p{i}", k, "x.png", ""))
                if old_value is not None:  # an older definition's score, stored first
                    scores.append(ScoreRow(model, "mini_parti", "1", i, k, "mini_attr_acc",
                                           "lenient", old_value, created_at=1.0))
                scores.append(ScoreRow(model, "mini_parti", "1", i, k, "mini_attr_acc", "strict",
                                       float(v), INFO, created_at=2.0))
    store.add_images(imgs)
    store.add_scores(scores)
    return root


def test_per_challenge_means_use_the_latest_version_and_prompts_as_units(tmp_path):
    r = CliRunner().invoke(app, ["lab", "challenges", "--results", str(_store(tmp_path, 1.0))])
    assert r.exit_code == 0, r.output
    row = next(line for line in r.output.splitlines() if line.startswith("| ref |"))
    cells = [c.strip() for c in row.split("|")[2:-1]]
    # columns: colour, spatial, all; the lenient 1.0 scores are not mixed in
    assert [c.split(" [")[0] for c in cells] == ["0.50", "0.17", "0.33"]
    assert [c.split("(n=")[1][:-1] for c in cells] == ["3", "3", "6"]
    for c in cells:  # an interval inside [0, 1] around the mean
        low, high = (float(x) for x in c.split("[")[1].split("]")[0].split(", "))
        assert 0.0 <= low <= float(c.split(" ")[0]) <= high <= 1.0
    assert "Version: `strict`" in r.output


def test_challenge_means_closed_form():
    import pandas as pd
    from di_star.mini.challenges import challenge_means
    rows = [(i, v) for i, vs in enumerate(VALUES["ref"]) for v in vs]
    out = challenge_means(pd.DataFrame(rows, columns=["prompt_index", "value"]), CHALLENGE)
    assert out.group.tolist() == ["colour", "spatial", "all"]
    assert np.allclose(out["mean"], [0.5, 1 / 6, 1 / 3]) and out.n.tolist() == [3, 3, 6]


def test_no_store_is_one_clear_line(tmp_path):
    r = CliRunner().invoke(app, ["lab", "challenges", "--results", str(tmp_path / "none")])
    assert r.exit_code == 2 and "holds no results store" in r.output and "distar eval" in r.output


def test_chance_of_position_and_relation_words_closed_form():
    """Chance = every placement of the objects on distinct cells: 'left' holds in 3 of 9 cells,
    a corner in 1 of 9; 'above' in 27 of the 72 ordered pairs of distinct cells."""
    from di_star.mini import scene as W
    from di_star.mini.probes.attr_checks import chance
    circle, cross = W.Obj("circle", "red", "small", "centre"), W.Obj("cross", "blue", "small", "top")
    one = W.Scene((circle,), "white")
    assert chance(one, W.parse_caption("a red circle on the left"))["position"] == 3 / 9
    assert chance(one, W.parse_caption("a red circle in the top left corner on white")) == {
        "position": 1 / 9, "background": 1 / 4}
    two = W.Scene((circle, cross), "white")
    assert chance(two, W.parse_caption("a red circle above a blue cross")) == {"relation": 27 / 72}


def test_findings_seed_sentence_names_paired_tests_and_no_seed_spread():
    from di_star.mini.findings import seeds_sentence
    c = {"diff": 0.03, "low": 0.01, "high": 0.05, "p": 0.001, "n": 256}
    text = seeds_sentence([(0, c), (1, None), (2, c)], c, "proxy")
    assert "seed 0: proxy +0.0300 [+0.0100, +0.0500], p=0.001 (higher)" in text
    assert "seed 1" not in text and "the 2 seeds pooled" in text
    assert "paired" in text and "standard deviation" not in text and " SD" not in text
    assert seeds_sentence([(0, c)], c, "proxy") == ""  # one seed: its test is the main one


def test_findings_pool_seeds_within_prompts_closed_form():
    """Two seeds' runs against one base on the same (prompt, k): the pooled change is the mean
    of all pairs, over the prompts as units."""
    import pandas as pd
    from di_star.mini.findings import compare_pooled

    class Run:  # the one Entry method compare_pooled reads
        def __init__(self, values):
            self.df = pd.DataFrame({"prompt_index": range(len(values)), "k": 0, "value": values})

        def image_scores(self, metric, version):
            return self.df

    base = Run([0.5, 0.6, 0.7, 0.4])
    seeds = [Run([0.6, 0.7, 0.8, 0.5]), Run([0.5, 0.6, 0.7, 0.4])]   # +0.1 each, and 0
    c = compare_pooled(seeds, base, ("m", "v"))
    assert c["diff"] == pytest.approx(0.05) and c["n"] == 8
    assert compare_pooled([], base, ("m", "v")) is None and compare_pooled(seeds, None, ("m", "v")) is None


def test_keep_latest_versions_drops_an_older_definition(tmp_path):
    from di_star.mini.challenges import keep_latest_versions
    store = ResultsStore(_store(tmp_path, 1.0), create=False)
    scores = store.table("model_scores")
    assert set(scores.metric_version) == {"lenient", "strict"}
    kept = keep_latest_versions(scores)
    assert set(kept.metric_version) == {"strict"} and len(kept) == 12
