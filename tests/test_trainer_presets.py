"""Every toy preset runs through the one alternating loop: generator and assistant train, the
reference stays bit-identical; presets mirror the paper's Table 2."""
import pytest
import torch

import di_star  # noqa: F401
from di_star.presets import PRESETS, TABLE_ORDER, get_preset
from di_star.trainer import WORLDS, train


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


TOY_PRESETS = [n for n in PRESETS.names() if n.split("/")[0] in ("gmm", "digits")]


@pytest.mark.parametrize("name", TOY_PRESETS)
def test_every_preset_trains_generator_and_assistant_but_never_the_reference(name, tmp_path):
    cfg = tiny(name)
    spy = Spy(WORLDS.get(cfg.world.name)(cfg))
    result = train(cfg, tmp_path, world=spy, progress=False)
    assert result.step == 2
    assert changed(spy.before["generator"], spy.models.generator)
    assert changed(spy.before["assistant"], spy.models.assistant)
    assert spy.models.frozen, "a world must declare the modules behind its reference"
    for before, module in zip(spy.before["frozen"], spy.models.frozen):
        assert not changed(before, module)
        assert all(not p.requires_grad for p in module.parameters())
    assert set(result.metrics) and all(isinstance(v, float) for v in result.metrics.values())
    for f in ("config.json", "stats.jsonl", "metrics.json", "generator.safetensors", "latest.json"):
        assert (tmp_path / f).exists(), f


def test_presets_mirror_table2():
    for world in ("gmm", "digits"):
        assert [n.split("/")[1] for n in TOY_PRESETS if n.startswith(world + "/")] == sorted(TABLE_ORDER)
        o = {r: get_preset(f"{world}/{r}").objective for r in TABLE_ORDER}
        assert (o["kl"].regulariser, o["kl"].alpha_rew, o["kl"].guidance) == ("kl", 0, "none")
        assert o["diff_instruct"].guidance == "in" and o["diff_instruct"].alpha_rew == 0
        assert o["di_pp"].regulariser == "kl" and o["di_pp"].alpha_rew > 0
        assert o["di_star_out"].guidance == "out" and o["di_star_in"].guidance == "in"
        assert o["di_star_in_low"].alpha_rew < o["di_star_in_mid"].alpha_rew < o["di_star_in"].alpha_rew
        assert o["di_star_in_x0"].estimator == "x0" and o["di_star_in"].estimator == "exact"
        assert (o["sim"].regulariser, o["sim"].alpha_rew) == ("score", 0)
        # the paper compares DI++ and DI* at the same scales
        assert (o["di_pp"].alpha_rew, o["di_pp"].alpha_cfg) == (o["di_star_in"].alpha_rew, o["di_star_in"].alpha_cfg)
