"""The tests' hook into the one training loop: `hook(step)` after every generator step, called
from the world's own per-step hook (`World.after_step`: after the step's checkpoint, before a
signal stops the loop), so the product's `train()` carries no parameter only tests use."""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Callable, Iterator


def hooked(world, hook: Callable[[int], None]):
    """`world`, its after_step followed by hook(step)."""
    after_step = world.after_step

    def after_step_then_hook(run, step):
        scores = after_step(run, step)
        hook(step)
        return scores

    world.after_step = after_step_then_hook
    return world


@contextmanager
def step_hook(name: str, hook: Callable[[int], None]) -> Iterator[None]:
    """Within: the registered world `name` is built hooked (for `train(cfg, out)`, which builds
    its world itself, on the accelerator's device)."""
    from di_star.world import WORLDS
    entry = WORLDS.get(name)
    WORLDS._entries[name] = dataclasses.replace(
        entry, make=lambda cfg, device=None: hooked(entry(cfg, device), hook))
    try:
        yield
    finally:
        WORLDS._entries[name] = entry
