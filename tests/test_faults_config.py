"""NaN / Inf / out-of-range config values are refused before any work, naming the key.

Every numeric field of every config dataclass is found by introspection, so a field added later
is covered without touching this file (and must declare its range in NUMERIC_RANGES)."""
import math

import pytest
from typer.testing import CliRunner

from di_star.config import NUMERIC_RANGES, TrainConfig, from_dict, numeric_fields
from distar.core.errors import DistarError

FIELDS = numeric_fields()
FLOAT_FIELDS = [f for f in FIELDS if isinstance(getattr(getattr(TrainConfig(), f.split(".")[0]),
                                                        f.split(".")[1]), (float, type(None)))]


def _app():
    try:
        from distar.cli import app
    except ImportError:
        from distar.cli import app
    return app


def test_every_numeric_field_declares_a_range():
    assert FIELDS and set(FIELDS) == set(NUMERIC_RANGES)
    assert "objective.alpha_rew" in FLOAT_FIELDS and "optim.lr_g" in FLOAT_FIELDS


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", FLOAT_FIELDS)
def test_non_finite_float_is_refused_naming_the_key(where, bad):
    section, key = where.split(".")
    data = TrainConfig().to_dict()
    data[section][key] = bad
    with pytest.raises(DistarError, match=rf"{where} = .*not a finite number"):
        from_dict(data)


@pytest.mark.parametrize("where", FIELDS)
def test_just_outside_the_range_is_refused(where):
    lo, hi, lo_in, hi_in = NUMERIC_RANGES[where]
    section, key = where.split(".")
    is_int = isinstance(getattr(getattr(TrainConfig(), section), key), int)
    step = 1 if is_int else 1e-9
    bad = [v for v in ((lo - step if lo_in else lo), (hi + step if hi_in else hi))
           if math.isfinite(v)]
    for v in bad:
        data = TrainConfig().to_dict()
        data[section][key] = int(v) if is_int else float(v)
        with pytest.raises(DistarError, match=rf"{where} = .* is outside"):
            from_dict(data)


def test_all_offenders_are_named_at_once():
    data = TrainConfig().to_dict()
    data["optim"]["lr_g"] = math.nan
    data["world"]["eval_samples"] = -5
    with pytest.raises(DistarError) as e:
        from_dict(data)
    assert "optim.lr_g" in str(e.value) and "world.eval_samples" in str(e.value)


@pytest.mark.parametrize("suffix, text, needle", [
    (".toml", "[objective]\nalpha_rew = nan\n", "objective.alpha_rew = nan"),
    (".json", '{"objective": {"alpha_rew": NaN}}', "objective.alpha_rew = nan"),
    (".toml", "[optim]\nbeta1 = nan\n", "optim.beta1 = nan"),
    (".toml", "[optim]\nlr_g = inf\n", "optim.lr_g = inf"),
    (".toml", "[world]\neval_samples = -5\n", "world.eval_samples = -5"),
    (".toml", "[optim]\nbatch_size = 1000000000000\n", "optim.batch_size = 1000000000000"),
    (".json", "[1, 2, 3]", "not a table"),
])
def test_cli_refuses_the_file_before_training(tmp_path, suffix, text, needle):
    cfg = tmp_path / f"bad{suffix}"
    cfg.write_text(text)
    out = tmp_path / "run"
    r = CliRunner().invoke(_app(), ["train", "--preset", "gmm/di_star_in", "--config", str(cfg),
                                    "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.output
    assert not out.exists(), "nothing may be started for a refused config"
