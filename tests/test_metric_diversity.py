"""Intra-prompt diversity: closed forms, the per-image values against a brute-force sum, the
k >= 4 rule, and from a results store through the runner (k images per prompt, seeds
i + 100000 k) with a tiny random mini-CLIP folder: per-image rows beside the set row, resume
between the two writes, then the mini leaderboard's paired tests and the findings' diversity
sentence on that store."""
import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from distar.core.errors import DistarError, WeightsMissingError
from evalsuite.benchmarks import image_seed
from evalsuite.generate import EvalRun
from evalsuite.metrics import load_metric
from evalsuite.metrics.diversity import (Diversity, intra_prompt_diversity,
                                         mean_pairwise_cosine_distance,
                                         per_image_cosine_distance, per_image_diversity)
from evalsuite.metrics.runner import score_run
from evalsuite.store import ImageRow, ResultsStore, ScoreRow

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_closed_forms():
    e = np.random.default_rng(0).normal(size=(1, 8))
    assert mean_pairwise_cosine_distance(np.repeat(e, 5, 0)) == pytest.approx(0.0, abs=1e-12)
    assert mean_pairwise_cosine_distance(np.eye(6)[:4]) == pytest.approx(1.0)  # orthonormal
    # two copies of e and two of -e: 2 pairs at distance 0, 4 at distance 2 -> 8 / 6
    pm = np.concatenate([e, e, -e, -e])
    assert mean_pairwise_cosine_distance(pm) == pytest.approx(4 / 3)
    scaled = np.eye(4) * np.array([1.0, 5.0, 0.1, 3.0])[:, None]  # norms do not matter
    assert mean_pairwise_cosine_distance(scaled) == pytest.approx(1.0)


def test_groups_by_prompt_and_needs_k():
    emb = np.concatenate([np.ones((4, 3)), np.eye(3), np.zeros((1, 3))])  # zero: cos 0 to all
    d = intra_prompt_diversity(emb, ["a"] * 4 + ["b"] * 4)
    assert d["a"] == pytest.approx(0.0) and d["b"] == pytest.approx(1.0)
    with pytest.raises(DistarError, match="--images-per-prompt 4"):
        intra_prompt_diversity(emb[:7], ["a"] * 4 + ["b"] * 3)


def _brute_cos_distance(a, b):
    """1 - cos with the metric's convention for a zero vector (norm floored at 1e-12: cos 0)."""
    na, nb = max(np.sqrt(sum(x * x for x in a)), 1e-12), max(np.sqrt(sum(x * x for x in b)), 1e-12)
    return 1.0 - sum(x * y for x, y in zip(a, b)) / (na * nb)


def test_per_image_values_against_brute_force():
    """d_i = mean over j != i of (1 - cos(e_i, e_j)), by explicit loops; each prompt's mean of
    d_i is its mean over pairs i < j; the mean over all images equals the set value (mean over
    prompts) when prompts have equal image counts, and is the size-weighted mean otherwise."""
    rng = np.random.default_rng(3)
    for sizes in ([4, 4, 4], [2, 5, 7, 4]):
        emb = rng.normal(size=(sum(sizes), 6)) * rng.uniform(0.1, 10, size=(sum(sizes), 1))
        emb[1] = 0.0  # a zero embedding: its self-distance is 1, not 0, so must be left out
        prompts = [f"p{g}" for g, n in enumerate(sizes) for _ in range(n)]
        order = rng.permutation(len(prompts))  # a prompt's images need not be adjacent
        emb, prompts = emb[order], [prompts[i] for i in order]
        got = per_image_diversity(emb, prompts, min_k=2)
        groups = {p: [i for i, q in enumerate(prompts) if q == p] for p in set(prompts)}
        brute, pair_means = np.empty(len(prompts)), {}
        for p, ix in groups.items():
            for i in ix:
                brute[i] = sum(_brute_cos_distance(emb[i], emb[j]) for j in ix if j != i) / (len(ix) - 1)
            pairs = [_brute_cos_distance(emb[i], emb[j]) for a, i in enumerate(ix) for j in ix[a + 1:]]
            pair_means[p] = sum(pairs) / len(pairs)
        np.testing.assert_allclose(got, brute, atol=1e-6, rtol=0)
        for p, ix in groups.items():
            assert got[ix].mean() == pytest.approx(pair_means[p], abs=1e-6)
            assert mean_pairwise_cosine_distance(emb[ix]) == pytest.approx(pair_means[p], abs=1e-6)
        set_value = np.mean(list(intra_prompt_diversity(emb, prompts, min_k=2).values()))
        assert set_value == pytest.approx(np.mean(list(pair_means.values())), abs=1e-6)
        weighted = sum(len(ix) * pair_means[p] for p, ix in groups.items()) / len(prompts)
        assert got.mean() == pytest.approx(weighted, abs=1e-6)
        if len(set(sizes)) == 1:
            assert got.mean() == pytest.approx(set_value, abs=1e-12)
        else:  # unequal counts: the two means differ, which is why the docs say "equal"
            assert abs(got.mean() - set_value) > 1e-3
    with pytest.raises(ValueError, match="at least 2"):
        per_image_cosine_distance(emb[:1])


class PixelEmbedder:
    name = "pixels"

    def __call__(self, images):
        return np.stack([np.asarray(im, np.float64).ravel() - 128 for im in images])


def test_injected_embedder_identical_images_score_zero():
    m = Diversity(embedder=PixelEmbedder())
    im = Image.new("RGB", (8, 8), (200, 10, 10))
    assert m.compute([im] * 4, prompts=["p"] * 4) == pytest.approx(0.0, abs=1e-12)


def test_compute_with_images_mean_is_the_set_value():
    rng = np.random.default_rng(1)
    ims = [Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)) for _ in range(12)]
    prompts = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    m = Diversity(embedder=PixelEmbedder())
    value, per = m.compute_with_images(ims, prompts=prompts)
    assert value == m.compute(ims, prompts=prompts) and per.shape == (12,)
    assert per.mean() == pytest.approx(value, abs=1e-12)
    emb = PixelEmbedder()(ims)
    expected = np.mean([mean_pairwise_cosine_distance(emb[i:i + 4]) for i in (0, 4, 8)])
    assert value == pytest.approx(expected, abs=1e-12)


def _tiny_mini_clip(folder):
    import torch
    from transformers import CLIPConfig, CLIPModel
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, vocab_size=100,
                                      max_position_embeddings=16),
                     vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8),
                     projection_dim=8)
    CLIPModel(cfg).half().save_pretrained(folder)  # fp16, as the shipped world stores it
    return folder


def _model_run(store, model, prompts, same, size=64, seed=0, k_images=4, preset=None):
    """A finished `distar eval` of `model` as the store holds it: images (k per prompt; all of a
    prompt's identical where `same(i)`), their rows and a complete run row."""
    rows, rng = [], np.random.default_rng(seed)
    recipe_hash = f"h{model}"
    for i, prompt in enumerate(prompts):
        one = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        for k in range(k_images):
            im = one if same(i) else Image.fromarray(rng.integers(0, 255, (size, size, 3),
                                                                  dtype=np.uint8))
            path = f"images/{model}/mini-v1/{i:05d}_{k}.png"
            (store.root / path).parent.mkdir(parents=True, exist_ok=True)
            im.save(store.root / path)
            rows.append(dict(prompt_index=i, k=k, prompt=prompt, seed=image_seed(i, k), path=path))
    store.add_images([ImageRow(recipe_hash, "mini", "1", r["prompt_index"], r["k"], model,
                               r["prompt"], r["seed"], r["path"], "0" * 64) for r in rows])
    recipe = {"name": model, **({"preset": preset, "seed": 0} if preset else {})}
    store.upsert_run(run_id=f"r-{model}", model=model, recipe_hash=recipe_hash,
                     recipe_json=json.dumps(recipe), bench="mini", bench_version="1",
                     n_prompts_total=len(prompts), n_images_expected=len(rows), started_at=1.0,
                     finished_at=2.0, status="complete")
    return EvalRun(store=store, model=model, recipe_hash=recipe_hash, bench="mini",
                   bench_version="1", images=pd.DataFrame(rows), device="cpu", run_id=f"r-{model}",
                   name=model)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return str(_tiny_mini_clip(tmp_path_factory.mktemp("mini") / "clip"))


def _score(run, clip):
    (out,) = score_run(run, ["mini_diversity"], progress=False, mini_diversity={"clip_path": clip})
    return out


def test_from_the_store_through_the_runner(tmp_path, clip):
    """k = 4 images per prompt as the harness lays them out; identical images per prompt give 0,
    different ones more. Per-image values go to `scores` under the set row's name and key, and
    their mean per prompt is that prompt's diversity."""
    store = ResultsStore(tmp_path / "results")
    run = _model_run(store, "m", ["a red circle", "two blue squares"], same=lambda i: i == 0)
    out = _score(run, clip)
    m = load_metric("mini_diversity", clip_path=clip, device="cpu")
    paths = [str(store.root / p) for p in run.images.path]
    per = intra_prompt_diversity(m.embedder([Image.open(p) for p in paths]),
                                 list(run.images.prompt))
    assert per["a red circle"] == pytest.approx(0.0, abs=1e-6) and per["two blue squares"] > 1e-4
    assert out.value == pytest.approx(np.mean(list(per.values())), rel=1e-4)  # batch sizes differ
    stored = store.table("set_scores")
    assert stored.metric.tolist() == ["mini_diversity"] and stored.n_images.tolist() == [8]
    rows = store.table("scores")
    assert len(rows) == 8 and set(rows.metric) == {"mini_diversity"}
    assert set(rows.metric_version) == set(stored.metric_version) == {m.info.key}
    by_prompt = rows.merge(run.images, on=["prompt_index", "k"]).groupby("prompt").value.mean()
    for p, v in per.items():
        assert by_prompt[p] == pytest.approx(v, abs=1e-4)
    assert rows.value.mean() == pytest.approx(out.value, abs=1e-12)
    from evalsuite.summary import summarize  # `distar eval`'s summary: the same mean, an interval
    (s,) = summarize(run, [out]).metrics
    assert s.kind == "per-image" and s.mean == pytest.approx(out.value, abs=1e-12)
    assert s.ci_low <= s.mean <= s.ci_high and s.n == 8


def test_resume_between_the_per_image_rows_and_the_set_row(tmp_path, clip, monkeypatch):
    """Killed after the per-image rows, before the set row: the rerun computes once more and
    writes the set row, one row per image; the next rerun computes nothing. A store holding
    only the set row (scored before per-image values existed) gets its per-image rows."""
    store = ResultsStore(tmp_path / "results")
    run = _model_run(store, "m", ["a", "b"], same=lambda i: False, size=32)
    calls = {"n": 0}
    real = Diversity.compute_with_images

    def counted(self, *a, **kw):
        calls["n"] += 1
        return real(self, *a, **kw)

    monkeypatch.setattr(Diversity, "compute_with_images", counted)

    def killed(*_a, **_kw):
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(ResultsStore, "add_set_score", killed)
        with pytest.raises(KeyboardInterrupt):
            _score(run, clip)
    assert calls["n"] == 1 and len(store.table("scores")) == 8 and store.table("set_scores").empty
    first = store.table("scores").sort_values(["prompt_index", "k"]).value.to_numpy()

    out = _score(run, clip)
    assert calls["n"] == 2 and (out.scored, out.skipped) == (8, 0)
    scores, sets = store.table("scores"), store.table("set_scores")
    assert len(scores) == 8 and len(sets) == 1
    np.testing.assert_allclose(scores.sort_values(["prompt_index", "k"]).value, first, atol=1e-12)

    again = _score(run, clip)
    assert calls["n"] == 2 and (again.scored, again.skipped) == (0, 8)
    assert again.value == pytest.approx(out.value, abs=0)

    with sqlite3.connect(store.path) as con:  # as a store written before per-image values
        con.execute("DELETE FROM scores")
    fixed = _score(run, clip)
    assert calls["n"] == 3 and fixed.scored == 8 and len(store.table("scores")) == 8
    assert len(store.table("set_scores")) == 1


def _findings_store(tmp_path, clip):
    """init (distinct images), DI*-In (identical images per prompt: collapsed) and DI++
    (distinct), 10 prompts x 4 images each, mini_diversity through the runner and a synthetic
    proxy reward (findings need one)."""
    store = ResultsStore(tmp_path / "results")
    prompts = [f"prompt {i}" for i in range(10)]
    runs = [_model_run(store, "init", prompts, lambda i: False, 32, seed=1),
            _model_run(store, "di_star_in", prompts, lambda i: True, 32, seed=2,
                       preset="mini/di_star_in"),
            _model_run(store, "di_pp", prompts, lambda i: False, 32, seed=3, preset="mini/di_pp")]
    rng = np.random.default_rng(0)
    for run in runs:
        _score(run, clip)
        store.add_scores([ScoreRow(run.recipe_hash, "mini", "1", int(p), int(k), "mini_pickscore",
                                   "proxy|test", float(rng.normal()))
                          for p, k in zip(run.images.prompt_index, run.images.k)])
    return store


def test_paired_tests_and_findings_compare_diversity(tmp_path, clip):
    from di_star.mini.findings import findings
    from evalsuite.leaderboard import load_entries
    from evalsuite.leaderboard.tables import write_leaderboards

    store = _findings_store(tmp_path, clip)
    files = write_leaderboards(store.root, tmp_path / "lb", suite="mini", baseline="init")
    paired = next(p for p in files if p.name == "mini_paired_tests.md").read_text()
    header = next(line for line in paired.splitlines() if line.startswith("| model"))
    assert "Diversity (mini)" in header  # the label its MetricInfo recorded; no direction
    assert "- Diversity (mini): `mini_diversity`" in paired  # the legend under the table
    col = header.split(" | ").index("Diversity (mini)")
    row = next(line for line in paired.splitlines() if line.startswith("| di_star_in "))
    cell = row.split(" | ")[col]
    assert cell.startswith("-") and "p=" in cell  # collapsed vs distinct: lower, paired
    table1 = next(p for p in files if p.name == "mini_table1.md").read_text()
    div_rows = [line for line in table1.splitlines() if line.startswith("| di_star_in ")]
    assert div_rows and "[" in div_rows[0]  # every cell, diversity included, has its interval

    line = next(f for f in findings(load_entries(store), "ref", "init", main_bench="mini") if "Diversity" in f)
    assert "not measured" not in line
    assert "DI*-In vs init -" in line and "DI++ (KL) vs init " in line and "DI*-In vs DI++ -" in line
    assert line.count("(lower)") == 2 and "KL keeps MORE diversity" in line

    with sqlite3.connect(store.path) as con:  # only set values: nothing to pair, and it says why
        con.execute("DELETE FROM scores WHERE metric='mini_diversity'")
    line = next(f for f in findings(load_entries(store), "ref", "init", main_bench="mini") if "Diversity" in f)
    assert "DI*-In vs init: not measured" in line and "no per-image values" in line


def test_missing_mini_clip_is_one_clear_error(tmp_path):
    with pytest.raises(WeightsMissingError, match="lab build mini"):
        load_metric("mini_diversity", clip_path=str(tmp_path / "none"))
