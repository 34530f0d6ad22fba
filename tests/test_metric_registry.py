"""Metrics are built one way: every registry entry is a class's `from_pretrained`, dtype names
come from distar.core.dtypes, and the embedding metrics share one batch loop."""
import numpy as np
import pytest
import torch
from PIL import Image

import di_star  # noqa: F401  (registers the toy metrics, as the CLI does)
from distar.core.errors import DistarError
from evalsuite.metrics import METRICS, load_metric
from evalsuite.metrics.loading import resolve_dtype
from evalsuite.metrics.base import run_batches

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_every_entry_is_a_class_from_pretrained():
    for name in METRICS.names():
        factory = METRICS.load(name)
        assert factory.__name__ == "from_pretrained", name
        assert isinstance(factory.__self__, type), name  # a classmethod, bound to its class


def test_dtype_names_go_through_the_one_table():
    cpu = torch.device("cpu")
    assert resolve_dtype("bfloat16", cpu) is resolve_dtype("bf16", cpu) is torch.bfloat16
    assert resolve_dtype("float32", cpu) is resolve_dtype(torch.float32, cpu) is torch.float32
    with pytest.raises(DistarError, match="'fp16' is only supported on a GPU"):
        resolve_dtype("float16", cpu)
    with pytest.raises(DistarError, match="Unknown dtype 'fp8'"):
        resolve_dtype("fp8", cpu)


def test_shared_batch_loop_does_not_depend_on_the_batch_size():
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (40 + 8 * i, 48, 3), dtype=np.uint8))
              for i in range(5)]
    prompts = [f"a photo of {i} cats" for i in range(5)]
    one = load_metric("smoke_clip", device="cpu", batch_size=1).score(images, prompts)
    three = load_metric("smoke_clip", device="cpu", batch_size=3).score(images, prompts)
    assert one.shape == (5,) and one.dtype == np.float64 and np.ptp(one) > 0.1
    np.testing.assert_allclose(three, one, atol=1e-4, rtol=0)
    low = load_metric("smoke_clip", device="cpu", dtype="bfloat16", batch_size=3)
    assert next(low.model.parameters()).dtype == torch.bfloat16
    np.testing.assert_allclose(low.score(images, prompts), one, atol=2.0, rtol=0)  # 100 x cos
    assert load_metric("smoke_clip", device="cpu").score([], []).shape == (0,)


def test_run_batches_covers_every_item_once_in_order():
    seen = run_batches(7, 3, lambda sl: torch.arange(7)[sl] * 2)
    assert seen.tolist() == [0, 2, 4, 6, 8, 10, 12]
    assert run_batches(0, 3, lambda sl: torch.ones(1)).shape == (0,)


def test_version_key_is_the_loaded_metrics_key_where_it_is_known():
    """`Class.version_key(**options)` (runner: skip loading what is all scored) must equal
    `from_pretrained(**options).info.key`, or be None."""
    from evalsuite.metrics.aesthetic import AestheticScore
    from di_star.mini.learned_metrics import MiniAesthetic, MiniPickScore
    from evalsuite.metrics.pickscore import PickScore, PickScoreLogit
    for options in ({}, {"seed": 3}):
        cls = METRICS.load("smoke_clip").__self__
        assert cls.version_key(**options) == load_metric("smoke_clip", device="cpu",
                                                         **options).info.key
    assert cls.version_key(seed=3) != cls.version_key()
    gold = METRICS.load("mini_gold").__self__
    assert gold.version_key(device="cpu") == load_metric("mini_gold").info.key
    # The mini world's learned metrics: known from its manifest, no weights read.
    for name, cls in (("mini_aesthetic", MiniAesthetic), ("mini_pickscore", MiniPickScore)):
        assert cls.version_key(device="cpu") == load_metric(name, device="cpu").info.key
    # Class-level infos (the loaded ones are compared in test_metric_aesthetic / _pickscore).
    assert AestheticScore.version_key() == AestheticScore.info.key
    assert PickScoreLogit.version_key() != PickScore.version_key()
    # Keys that depend on the loaded model (its image size, the open_clip config) are not guessed.
    assert METRICS.load("clip").__self__.version_key() is None
    assert METRICS.load("hpsv21").__self__.version_key() is None
