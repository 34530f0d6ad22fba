"""The digits world's scorers (the digits bench's metrics) and its generation contract."""
import numpy as np
import pytest
import torch

import di_star  # noqa: F401
from di_star.toy.digits import (DigitsMetrics, DigitsRecipe, DigitsWorld, frechet_distance, load_data,
                                prompts, to_unit)

RECIPE = DigitsRecipe().scaled(0.2)


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("DISTAR_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield DigitsMetrics(RECIPE)
    mp.undo()


def test_scorers_tell_real_digits_from_a_collapsed_blob(metrics):
    x, y = load_data()
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:500]
    real, texts = to_unit(x[idx]), [prompts()[k] for k in y[idx].tolist()]
    good = metrics.all(real, texts)
    assert good["prompt_acc"] > 0.8 and 0.8 < good["diversity"] < 1.2
    blob = np.ones_like(real) * 0.9  # the ink reward's hack: every image the same bright square
    bad = metrics.all(blob, texts)
    assert bad["reward"] > good["reward"] and bad["diversity"] < 0.01
    assert bad["fd"] > 10 * good["fd"] and bad["prompt_acc"] < 0.3
    assert metrics.reward(real, texts).shape == metrics.prompt_accuracy(real, texts).shape == (500,)


def test_frechet_distance_is_zero_for_equal_statistics():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(400, 8))
    mu, cov = f.mean(0), np.cov(f, rowvar=False)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(mu, cov, mu + 1, cov) == pytest.approx(8, rel=1e-6)


def test_each_image_is_a_pure_function_of_prompt_and_seed(metrics):
    world = DigitsWorld(DigitsRecipe().scaled(0.01))  # purity needs no quality: a tiny recipe
    gen = world.initial_generator()
    texts = [prompts()[k] for k in (3, 7, 3)]
    batch = world.generate_for(gen, texts, [11, 12, 13])
    alone = world.generate_for(gen, texts[1:2], [12])
    assert batch.shape == (3, 8, 8) and 0 <= batch.min() and batch.max() <= 1
    assert np.allclose(batch[1], alone[0], atol=1e-6)
    assert not np.allclose(batch[0], batch[2])
