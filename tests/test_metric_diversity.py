"""Intra-prompt diversity: closed forms, the k >= 4 rule, and from a results store through the
runner (k images per prompt, seeds i + 100000 k) with a tiny random mini-CLIP folder."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from distar.core.errors import DistarError, WeightsMissingError
from evalsuite.benchmarks import image_seed
from evalsuite.generate import EvalRun
from evalsuite.metrics import load_metric
from evalsuite.metrics.diversity import (Diversity, intra_prompt_diversity,
                                         mean_pairwise_cosine_distance)
from evalsuite.metrics.runner import score_run
from evalsuite.store import ResultsStore


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


class PixelEmbedder:
    name = "pixels"

    def __call__(self, images):
        return np.stack([np.asarray(im, np.float64).ravel() - 128 for im in images])


def test_injected_embedder_identical_images_score_zero():
    m = Diversity(embedder=PixelEmbedder())
    im = Image.new("RGB", (8, 8), (200, 10, 10))
    assert m.compute([im] * 4, prompts=["p"] * 4) == pytest.approx(0.0, abs=1e-12)


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


def test_from_the_store_through_the_runner(tmp_path):
    """k = 4 images per prompt as the harness lays them out; identical images per prompt give 0,
    different ones more."""
    clip = _tiny_mini_clip(tmp_path / "clip")
    store = ResultsStore(tmp_path / "results")
    rows, rng = [], np.random.default_rng(0)
    for i, prompt in enumerate(["a red circle", "two blue squares"]):
        same = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        for k in range(4):
            im = same if i == 0 else Image.fromarray(rng.integers(0, 255, (64, 64, 3),
                                                                  dtype=np.uint8))
            path = f"images/m/mini-v1/{i:05d}_{k}.png"
            (store.root / path).parent.mkdir(parents=True, exist_ok=True)
            im.save(store.root / path)
            rows.append(dict(prompt_index=i, k=k, prompt=prompt, seed=image_seed(i, k), path=path))
    run = EvalRun(store=store, model="m", recipe_hash="abc", bench="mini", bench_version="1",
                  images=pd.DataFrame(rows), device="cpu", run_id="r1")
    (out,) = score_run(run, ["mini_diversity"], progress=False,
                       mini_diversity={"clip_path": str(clip)})
    m = load_metric("mini_diversity", clip_path=str(clip), device="cpu")
    paths = [str(store.root / r["path"]) for r in rows]
    per = intra_prompt_diversity(m.embedder([Image.open(p) for p in paths]),
                                 [r["prompt"] for r in rows])
    assert per["a red circle"] == pytest.approx(0.0, abs=1e-6) and per["two blue squares"] > 1e-4
    assert out.value == pytest.approx(np.mean(list(per.values())), rel=1e-4)  # batch sizes differ
    stored = store.table("set_scores")
    assert stored.metric.tolist() == ["mini_diversity"] and stored.n_images.tolist() == [8]


def test_missing_mini_clip_is_one_clear_error(tmp_path):
    with pytest.raises(WeightsMissingError, match="lab build mini"):
        load_metric("mini_diversity", clip_path=str(tmp_path / "none"))
