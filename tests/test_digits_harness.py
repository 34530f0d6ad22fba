"""The toy lab's digits generator evaluated through the evalsuite harness, like any model:
`distar eval --model toy-digits:RUN --bench digits --metrics digit_acc,digit_ink,digit_fd,digit_div`."""
import numpy as np
import pytest

import di_star  # noqa: F401
from di_star.presets import get_preset
from di_star.toy.digits import DigitsMetrics, DigitsRecipe, DigitsWorld
from di_star.toy.pipeline import pil_to_unit
from di_star.trainer import train
from distar.core.errors import DistarError
from evalsuite.benchmarks import image_seed, load_benchmark
from evalsuite.generate import EvalRequest, initial_noise, run_eval
from evalsuite.metrics.runner import score_run

SCALE = 0.02  # cached reference / classifier / init generator at 2% of their training steps


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_run")
    cfg = get_preset("digits/di_star_in").replace(
        run={"max_steps": 2, "ckpt_every": 2, "log_every": 1},
        world={"eval_samples": 100, "recipe_scale": SCALE}, optim={"batch_size": 32})
    train(cfg, out, progress=False)
    return out


def test_digits_bench_is_balanced_and_versioned():
    bench = load_benchmark("digits")
    assert len(bench) == 500 and bench.version.startswith("1-")
    assert [p.text for p in bench.prompts[:2]] == ["a handwritten digit 0", "a handwritten digit 1"]
    assert {p.meta["category"] for p in bench.prompts} == {str(k) for k in range(10)}


def test_toy_run_goes_through_harness_store_and_metrics(digits_run, tmp_path):
    run = run_eval(EvalRequest(model=f"toy-digits:{digits_run}", bench="digits", limit=40,
                               out=tmp_path))
    assert len(run.images) == 40
    outcomes = score_run(run, ["digit_acc", "digit_ink", "digit_fd", "digit_div"],
                         progress=False, recipe_scale=SCALE)
    assert [o.scored for o in outcomes] == [40, 40, 40, 40]
    scores = run.store.table("scores")
    acc = scores[scores.metric == "digit_acc"].sort_values("prompt_index").value.to_numpy()
    # The same numbers as scoring the generator's float output directly (the harness only adds
    # 8-bit PNG rounding, which moves ink by < 1/255 and flips at most a rare prediction).
    world = DigitsWorld(DigitsRecipe().scaled(SCALE))
    gen = world.load_generator(digits_run / "generator.safetensors")
    bench = load_benchmark("digits")
    texts = [p.text for p in bench.prompts[:40]]
    z = initial_noise([image_seed(i, 0) for i in range(40)], (64,))
    from di_star.toy.digits import parse_prompts, to_unit
    direct = to_unit(gen(z, parse_prompts(texts)).detach())
    m = DigitsMetrics(DigitsRecipe().scaled(SCALE))
    assert np.mean(np.abs(acc - m.prompt_accuracy(direct, texts))) <= 0.05
    ink = scores[scores.metric == "digit_ink"].sort_values("prompt_index").value.to_numpy()
    assert np.allclose(ink, m.reward(direct, texts), atol=1 / 255)
    sets = run.store.table("set_scores").set_index("metric").value
    assert sets["digit_fd"] >= 0 and 0 < sets["digit_div"] < 5
    # Rerun: nothing regenerated, nothing rescored.
    again = score_run(run_eval(EvalRequest(model=f"toy-digits:{digits_run}", bench="digits",
                                           limit=40, out=tmp_path)),
                      ["digit_acc", "digit_fd"], progress=False, recipe_scale=SCALE)
    assert [o.scored for o in again] == [0, 0]


def test_missing_toy_run_is_a_clear_error(tmp_path):
    with pytest.raises(DistarError, match="No digits generator"):
        run_eval(EvalRequest(model=f"toy-digits:{tmp_path / 'nope'}", bench="digits", limit=2,
                             out=tmp_path / "o"))
