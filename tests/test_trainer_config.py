"""Typed configs: files load without eval, typos and contradictions fail with the fix; the CLI
entry point resolves presets and lists them."""
import json

import pytest

import di_star  # noqa: F401
from di_star.cli import resolve_config, train
from di_star.config import TrainConfig, from_dict, load_config
from di_star.presets import get_preset
from distar.core.errors import DistarError


def test_toml_on_top_of_a_preset(tmp_path):
    f = tmp_path / "over.toml"
    f.write_text('[objective]\nalpha_rew = 2\nestimator = "x0"\n[run]\nseed = 7\n')
    cfg = resolve_config("gmm/di_star_in", f, max_steps=11)
    assert cfg.objective.alpha_rew == 2.0 and isinstance(cfg.objective.alpha_rew, float)
    assert cfg.objective.estimator == "x0" and cfg.run.seed == 7 and cfg.run.max_steps == 11
    assert cfg.objective.guidance == "in"  # untouched preset keys survive


def test_json_round_trip(tmp_path):
    cfg = get_preset("digits/di_pp")
    f = tmp_path / "c.json"
    f.write_text(json.dumps(cfg.to_dict()))
    assert load_config(f) == cfg


def test_unknown_key_names_it_and_lists_valid_keys(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[objective]\nalpha_rw = 1.0\n")
    with pytest.raises(DistarError) as e:
        load_config(f)
    assert "objective.alpha_rw" in str(e.value) and "alpha_rew" in str(e.value) and "huber_c" in str(e.value)
    with pytest.raises(DistarError, match="Unknown config key 'optimiser'"):
        from_dict({"optimiser": {}})


def test_wrong_type_is_refused():
    with pytest.raises(DistarError, match="optim.batch_size"):
        from_dict({"optim": {"batch_size": "256"}})


def test_files_are_parsed_never_evaluated(tmp_path):
    f = tmp_path / "evil.toml"
    f.write_text('[run]\nseed = "__import__(\'os\').system(\'true\')"\n')
    with pytest.raises(DistarError, match="run.seed"):
        load_config(f)


@pytest.mark.parametrize("objective, words", [
    ({"guidance": "out,in", "alpha_cfg": 2.0}, ["Choice 1", "Choice 2", "Fix"]),
    ({"guidance": ["in", "out"], "alpha_cfg": 2.0}, ["Choice 1", "Choice 2"]),
    ({"distance": "pseudo_huber", "huber_c": None}, ["huber_c", "Fix"]),
    ({"guidance": "none", "alpha_cfg": 7.5}, ["alpha_cfg", "Fix"]),
    ({"guidance": "in", "alpha_cfg": 0.0}, ["alpha_cfg", "Fix"]),
    ({"guidance": "in", "alpha_cfg": 2.0, "regulariser": "none"}, ["regulariser", "Fix"]),
    ({"regulariser": "fisher"}, ["score, kl, none"]),
    ({"estimator": "listing"}, ["exact, x0"]),
])
def test_contradictory_or_unknown_options(objective, words):
    with pytest.raises(DistarError) as e:
        from_dict({"objective": objective})
    for w in words:
        assert w in str(e.value)


def test_default_config_is_valid():
    from_dict(TrainConfig().to_dict())


def test_unknown_preset_lists_choices(capsys):
    with pytest.raises(DistarError) as e:
        train(preset="gmm/di_star_inn")
    assert "gmm/di_star_in" in str(e.value) and "digits/kl" in str(e.value)
    with pytest.raises(DistarError, match="--preset"):
        train()
    train(list_presets=True)
    out = capsys.readouterr().out
    assert "gmm/sim" in out and "digits/di_star_in_x0" in out
