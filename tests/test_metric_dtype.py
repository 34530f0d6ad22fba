"""The scorer's dtype is part of what a number is: bf16 / fp16 scores get their own key (their
own column), fp32 keys keep the text they always had, `distar eval --metric-dtype` chooses it,
and a dtype a metric does not compute in is refused, not ignored."""
import json

import numpy as np
import pytest

import di_star  # noqa: F401  (registers the toy metrics, as the CLI does)
from di_star.bench import refs as rc
from distar.core.errors import DistarError
from evalsuite.leaderboard.markdown import Shown
from evalsuite.metrics import METRICS, load_metric
from evalsuite.metrics.base import MetricInfo, with_dtype
from evalsuite.metrics.runner import score_run
from evalsuite.preflight import metric_dtype_problems
from store_helpers import image_run
from fault_helpers import invoke, one_clear_error

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture()
def run(tmp_path):
    return image_run(tmp_path / "results", 5, seed=2, recipe_hash="abc")


def test_bf16_and_fp32_scores_of_the_same_images_get_two_keys_and_columns(run, tmp_path):
    import open_clip
    rc.register_open_clip_config()
    model = rc.perturb_(open_clip.create_model(rc.TINY_OPEN_CLIP_NAME), 11)
    ckpt = str(rc.save_tiny_open_clip_checkpoint(model, tmp_path / "h.pt"))
    opts = {"weights_path": ckpt, "arch": rc.TINY_OPEN_CLIP_NAME}
    fp32 = score_run(run, ["hpsv21"], progress=False, dtype="fp32", hpsv21=opts)[0]
    bf16 = score_run(run, ["hpsv21"], progress=False, dtype="bf16", hpsv21=opts)[0]
    assert (fp32.scored, bf16.scored) == (5, 5)  # bf16 did not count the fp32 rows as done
    scores = run.store.table("scores")
    keys = sorted(set(scores.metric_version))
    assert keys == sorted([fp32.metric_version, bf16.metric_version]) and len(keys) == 2
    # fp32 keeps the key text stores were written with; bf16 names itself where tables look.
    assert fp32.metric_version.startswith("HPSv2.1|")
    assert bf16.metric_version.startswith("HPSv2.1 bf16|")
    headers = {Shown.from_info("hpsv21", json.loads(m)["info"]).header for m in scores.meta_json}
    assert len(headers) == 2 and any("bf16" in h for h in headers)
    by = {k: g.sort_values("prompt_index").value.to_numpy() for k, g in
          scores.groupby("metric_version")}
    assert not np.array_equal(by[fp32.metric_version], by[bf16.metric_version])
    np.testing.assert_allclose(by[fp32.metric_version], by[bf16.metric_version], atol=0.05)
    dtypes = {json.loads(m)["dtype"] for m in scores.meta_json}
    assert dtypes == {"fp32", "bf16"}


def test_every_dtype_taking_metric_names_bf16_in_its_key():
    base = MetricInfo("x", "v1", "b", "p")
    assert with_dtype(base, "fp32") == base and with_dtype(base, "float32") == base
    assert with_dtype(base, "bfloat16").version == "v1 bf16"
    assert with_dtype(base, "fp16").key != with_dtype(base, "bf16").key
    for name in ("smoke_clip", "mini_pickscore", "mini_aesthetic", "mini_clip"):
        fp32 = load_metric(name, device="cpu").info.key
        bf16 = load_metric(name, device="cpu", dtype="bf16").info.key
        assert fp32 != bf16 and " bf16|" in bf16 and "bf16" not in fp32, name
    # Class-level infos: the key known without loading follows the dtype too.
    for name in ("pickscore", "pickscore_logit", "aesthetic", "smoke_clip"):
        cls = METRICS.load(name).__self__
        assert cls.version_key(dtype="bf16") != cls.version_key(), name
    assert METRICS.load("smoke_clip").__self__.version_key(dtype="bf16") == \
        load_metric("smoke_clip", device="cpu", dtype="bf16").info.key


FP32_ONLY = ("fid", "kid", "mini_gold", "mini_attr_acc", "mini_attr_frac", "mini_fd", "mini_kd",
             "mini_diversity", "digit_acc", "digit_ink", "digit_fd", "digit_div")


@pytest.mark.parametrize("name", FP32_ONLY)
def test_a_dtype_a_metric_does_not_compute_in_is_refused(name):
    assert getattr(METRICS.load(name).__self__, "fp32_only", False)
    for dtype in ("bf16", "float16"):
        with pytest.raises(DistarError, match=f"'{name}' computes in fp32 only"):
            load_metric(name, dtype=dtype)  # before any weight or reference is looked for


def test_preflight_reports_every_dtype_problem_at_once():
    assert metric_dtype_problems(["fid", "hpsv21"], "fp32", "cpu") == []
    assert metric_dtype_problems(["hpsv21", "clip"], "bf16", "cpu") == []
    problems = metric_dtype_problems(["fid", "hpsv21", "mini_gold"], "fp16", "cpu")
    assert len(problems) == 2
    assert "GPU only" in problems[0].what and "fid, mini_gold" in problems[1].what
    assert "Unknown --metric-dtype 'fp8'" in metric_dtype_problems(["clip"], "fp8")[0].what


def test_cli_refuses_fp16_on_cpu_before_generating(tmp_path):
    out = tmp_path / "res"
    r = invoke("eval", "--model", "tiny_sdxl", "--bench", "tiny", "--limit", "1", "--device",
               "cpu", "--metrics", "smoke_clip", "--metric-dtype", "fp16", "--out", out)
    one_clear_error(r, "--metric-dtype fp16 runs on a GPU only")
    assert not (out / "images").exists()


def test_the_eval_summary_names_a_bf16_score():
    from evalsuite.summary import EvalSummary, MetricSummary, render
    s = EvalSummary("m", "m", "tiny", "1", "abc", 2, 0, "img", "store", "cpu", None, None, None,
                    None, [MetricSummary("clip", "CLIPScore 100cos bf16|b|p", 30.0, 29.0, 31.0, 2),
                           MetricSummary("clip", "CLIPScore 100cos|b|p", 30.5, 29.5, 31.5, 2)])
    lines = [ln.split()[:2] for ln in render(s).splitlines() if ln.strip().startswith("clip")]
    assert lines == [["clip", "(bf16)"], ["clip", "30.5"]]  # fp32: no tag
