"""Shared by the toy trainer tests: a private tiny cache, tiny configs, a world spy."""
import pytest
import torch

from di_star.presets import get_preset


@pytest.fixture(scope="module", autouse=True)
def tiny_cache(tmp_path_factory):
    """Cached networks trained at 1% of their recipe, in a private cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DISTAR_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def tiny(name: str, steps: int = 2, **run):
    cfg = get_preset(name)
    return cfg.replace(run={"max_steps": steps, "ckpt_every": steps, "log_every": 1, **run},
                       world={"eval_samples": 100, "recipe_scale": 0.01}, optim={"batch_size": 32})


class Spy:
    """Wraps a world to keep the models the trainer got, and a snapshot of them before training."""

    def __init__(self, world, reward=None):
        self.world, self.models, self.before = world, None, None
        self._reward = reward

    def __getattr__(self, name):
        return getattr(self.world, name)

    def build(self):
        self.models = self.world.build()
        snap = lambda m: {k: v.detach().clone() for k, v in m.state_dict().items()}  # noqa: E731
        self.before = {"generator": snap(self.models.generator), "assistant": snap(self.models.assistant),
                       "frozen": [snap(m) for m in self.models.frozen]}
        return self.models

    def reward(self, x0, cond):
        return self._reward(self.world, x0, cond) if self._reward else self.world.reward(x0, cond)


def changed(before: dict, module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())
