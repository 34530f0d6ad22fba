"""Every toy preset runs through the one alternating loop: generator and assistant train, the
reference stays bit-identical; presets mirror the paper's Table 2."""
import pytest
import torch

import di_star  # noqa: F401
from di_star.presets import PRESETS, TABLE_ORDER, get_preset
from di_star.trainer import WORLDS, train
from toy_helpers import Spy, changed, tiny, tiny_cache  # noqa: F401 (autouse fixture)


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
