"""di_star's plug-ins (the toy digits here, the mini world in di_star/mini/plugin.py) into the evaluation harness's registries. The entries are lazy
"module:attr" names: registering imports nothing heavy, and evalsuite resolves them only when a
toy model, bench or metric is asked for. `import di_star` runs `register()`, and so does the CLI
before any command, so `distar eval --model toy-digits:RUN --bench digits` finds them while
evalsuite itself never names di_star (tests/test_import_direction.py checks that).

A world or metric outside these packages is a plug-in the same way: a module with a
`register()` that adds its entries, named in $DISTAR_PLUGINS (comma-separated module names, on
the Python path); `register()` here calls each one once per process (docs/architecture.md,
"Add a world: three files")."""
from __future__ import annotations

import importlib
import os

from distar.core.errors import DistarError

PLUGINS_ENV = "DISTAR_PLUGINS"
REGISTERED: set[str] = set()   # the $DISTAR_PLUGINS modules whose register() has run

_TOY_METRICS = {
    "digit_acc": ("DigitAccuracy", "toy digits: classifier reads the prompt's digit (CLIP-score analogue)"),
    "digit_ink": ("DigitInk", "toy digits: ink, the toy reward"),
    "digit_fd": ("DigitFD", "toy digits: Frechet distance in classifier features (FID analogue)"),
    "digit_div": ("DigitDiversity", "toy digits: within-class diversity relative to real digits"),
}


def register() -> None:
    """Add the toy digits model kind, pipeline, benchmark and metrics, the mini world's
    plug-ins (di_star/mini/plugin.py) and those named in $DISTAR_PLUGINS (idempotent)."""
    register_builtin()
    register_external()


def register_external() -> None:
    """Call `register()` of each module named in $DISTAR_PLUGINS not yet registered."""
    for name in (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",")):
        if not name or name in REGISTERED:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise DistarError(f"{PLUGINS_ENV} names '{name}', which cannot be imported ({e}). "
                              f"Fix: put its folder on PYTHONPATH, or drop it from "
                              f"{PLUGINS_ENV}.") from None
        if not callable(getattr(module, "register", None)):
            raise DistarError(f"{PLUGINS_ENV} names '{name}', which has no register() function. "
                              f"Fix: define register() there (docs/architecture.md), or drop it "
                              f"from {PLUGINS_ENV}.")
        module.register()
        REGISTERED.add(name)


def register_builtin() -> None:
    """The toy digits and the mini world's entries (idempotent)."""
    from di_star.mini import plugin as mini_plugin
    mini_plugin.register()
    from evalsuite.benchmarks import BENCHMARKS
    from evalsuite.metrics import METRICS
    from evalsuite.models.specs import MODEL_KINDS, PIPELINE_LOADERS

    if "toy-digits" in MODEL_KINDS:
        return
    MODEL_KINDS.add("toy-digits", "di_star.toy.harness:toy_digits_spec",
                    "toy-digits:RUN_DIR, a `distar train --preset digits/...` run (or 'init')")
    PIPELINE_LOADERS.add("DigitsPipeline", "di_star.toy.harness:load_digits_pipeline",
                         "the toy digits one-step generator")
    BENCHMARKS.add("digits", "di_star.toy.harness:digits_bench",
                   "toy lab: 'a handwritten digit k', 50 prompts per digit")
    for name, (cls, description) in _TOY_METRICS.items():
        METRICS.add(name, f"di_star.toy.metrics:{cls}.from_pretrained", description)
