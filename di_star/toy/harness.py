"""The toy digits world's plug-ins for the evaluation harness: the `toy-digits:RUN_DIR` model
kind, its pipeline loader and the `digits` benchmark (its metrics are in di_star/toy/metrics.py).
di_star/plugins.py registers them into evalsuite's registries, so a toy run is evaluated like
any model (`distar eval --model toy-digits:RUN --bench digits`) while evalsuite never imports
di_star."""
from __future__ import annotations

import hashlib
from pathlib import Path

from evalsuite.benchmarks import Benchmark, Prompt, make_benchmark
from evalsuite.models.specs import ModelSpec


def toy_digits_spec(source: str) -> ModelSpec:
    """`toy-digits:RUN_DIR` (a `distar train --preset digits/...` run) or `toy-digits:init`."""
    fingerprint = source
    gen = Path(source) / "generator.safetensors" if Path(source).is_dir() else Path(source)
    if gen.is_file():  # a retrained run at the same path is a new recipe
        fingerprint = hashlib.sha256(gen.read_bytes()).hexdigest()[:12]
    label = "init" if source == "init" else f"{Path(source).name}-{fingerprint[:12]}"
    return ModelSpec(name=f"toy-digits-{label}",
                     description=f"toy digits generator ({source})", pipeline="DigitsPipeline",
                     repo=str(Path(source).resolve()) if source != "init" else "init",
                     steps=1, guidance=0.0, dtype="float32", resolution=8, weights="toy",
                     params="toy", latent_dims=(64,), default_batch_size=100,
                     meta=(("source", source),))


def load_digits_pipeline(spec: ModelSpec, device):
    """The harness's pipeline for a toy-digits spec (its repo is the run dir or 'init')."""
    from di_star.toy.pipeline import DigitsPipeline
    return DigitsPipeline.from_source(spec.repo).to(device)


def digits_bench() -> Benchmark:
    """'a handwritten digit k', 50 prompts per digit, grouped by digit."""
    from di_star.toy.digits import N_CLASSES, prompts as digit_prompts
    texts = digit_prompts()
    return make_benchmark("digits", "1", "distar toy lab digits prompts",
                          [Prompt(i, texts[i % N_CLASSES], {"category": str(i % N_CLASSES)})
                           for i in range(50 * N_CLASSES)], ("category",), "di_star.toy.digits")
