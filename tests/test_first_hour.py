"""A new user's first hour (issue 12): everything checked before the first image, one message
for everything missing, a summary on success, an offline smoke scorer that says what it is."""
import json
import re

import pytest
from typer.testing import CliRunner

from distar.cli import app


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """No weights in the Hugging Face cache, and no hub (conftest sets HF_HUB_OFFLINE)."""
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for var in ("DISTAR_CLIP_PATH", "DISTAR_PICKSCORE_PATH", "DISTAR_IMAGEREWARD_PATH",
                "DISTAR_FID_REFERENCE_DIR", "DISTAR_INCEPTION_PATH"):
        monkeypatch.delenv(var, raising=False)


def _invoke(args, monkeypatch=None):
    # Wide terminal: the test reads commands out of the message, which must not be wrapped.
    return CliRunner().invoke(app, args, env={"COLUMNS": "300"})


def test_misspelt_metric_fails_before_any_image(tmp_path, empty_hf_cache):
    out = tmp_path / "res"
    r = _invoke(["eval", "--model", "tiny_sdxl", "--bench", "tiny", "--limit", "2",
                 "--metrics", "clipp", "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "'clipp'" in r.output and "smoke_clip" in r.output  # the choices, smoke included
    assert "Traceback" not in r.output
    assert not out.exists()  # nothing generated, not even the store


def test_all_missing_metric_weights_in_one_message(tmp_path, empty_hf_cache):
    out = tmp_path / "res"
    r = _invoke(["eval", "--model", "tiny_sdxl", "--bench", "tiny", "--limit", "2",
                 "--metrics", "pickscore,imagereward,clip,fid", "--out", str(out)])
    assert r.exit_code == 2, r.output
    text = r.output
    for name in ("pickscore:", "imagereward:", "clip:", "fid:"):
        assert name in text, name
    # copy-pasteable fixes, whole on their lines
    assert "hf download yuvalkirstain/PickScore_v1\n" in text
    assert "hf download THUDM/ImageReward ImageReward.pt\n" in text
    assert "export DISTAR_CLIP_PATH=/path/to/open_clip_model.safetensors\n" in text
    assert "--fid-ref /path/to/real/images" in text
    assert "weights_path=" not in text  # the CLI has no such option
    assert not out.exists()


def test_missing_model_weights_and_unknown_bench_reported_together(tmp_path, empty_hf_cache):
    r = _invoke(["eval", "--model", "dmd2_sdxl", "--bench", "partii", "--metrics", "pickscore",
                 "--out", str(tmp_path / "res")])
    assert r.exit_code == 2
    assert "stabilityai/stable-diffusion-xl-base-1.0" in r.output      # base pipeline
    assert "tianweiy/DMD2/dmd2_sdxl_1step_unet_fp16.bin" in r.output   # UNet override
    assert "Unknown benchmark 'partii'" in r.output
    assert "PickScore_v1" in r.output
    assert re.search(r"^error: 5 problems", r.output, re.M), r.output


def test_train_preflight_names_every_weight_of_the_preset(tmp_path, empty_hf_cache):
    r = _invoke(["train", "--preset", "di_star_sdxl", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    for needed in ("sd.generator", "tianweiy/DMD2", "sd.reference",
                   "stabilityai/stable-diffusion-xl-base-1.0", "PickScore_v1"):
        assert needed in r.output, needed
    # the base pipeline the generator and reference share is named once, not twice
    assert r.output.count("hf download stabilityai/stable-diffusion-xl-base-1.0\n") == 1
    assert not (tmp_path / "run").exists()


def test_smoke_eval_summary_json_and_nothing_to_do(tmp_path, empty_hf_cache):
    out, js = tmp_path / "res", tmp_path / "summary.json"
    args = ["eval", "--model", "tiny_sd15", "--bench", "tiny", "--limit", "3",
            "--metrics", "smoke_clip", "--out", str(out), "--json", str(js)]
    r = _invoke(args)
    assert r.exit_code == 0, r.output
    assert re.search(r"metric\s+mean\s+95% CI\s+n", r.output)
    row = re.search(r"smoke_clip\s+(\S+)\s+\[(\S+), (\S+)\]\s+3", r.output)
    assert row, r.output
    assert "smoke-test scorer" in r.output and "latency:" in r.output
    # progress on a non-terminal stderr: phases and plain lines (CliRunner's stderr is no tty)
    assert "loading StableDiffusionPipeline ..." in r.output and "warm-up batch" in r.output
    assert re.search(r"tiny_sd15 on tiny: 3/3 \(100%\), [\d.]+ img/s", r.output), r.output
    assert "recipe of tiny_sd15 (StableDiffusionPipeline): steps 2" in r.output
    assert "peak memory:" in r.output and f"store: {out / 'results.sqlite'}" in r.output
    s = json.loads(js.read_text())
    (m,) = s["metrics"]
    assert m["metric"] == "smoke_clip" and m["n"] == 3
    assert m["version"].startswith("SMOKE TEST")
    assert float(row.group(1)) == pytest.approx(m["mean"], rel=1e-3)
    assert m["ci_low"] <= m["mean"] <= m["ci_high"]
    assert s["generated_now"] == 3 and s["latency_s_per_10"] > 0
    assert len(list((out / "images").rglob("*.png"))) == 3
    # the scores equal the store's
    from evalsuite.store import ResultsStore
    stored = ResultsStore(out).table("model_scores")
    assert set(stored.model) == {"tiny_sd15"}
    assert stored.value.mean() == pytest.approx(m["mean"])

    again = _invoke(args)
    assert again.exit_code == 0
    assert "nothing to do" in again.output
    assert json.loads(js.read_text())["metrics"][0]["mean"] == pytest.approx(m["mean"])


def test_smoke_scorer_never_shares_the_real_clip_column():
    from evalsuite.metrics import load_metric
    smoke = load_metric("smoke_clip", device="cpu")
    assert smoke.info.name == "smoke_clip"
    assert smoke.info.key.startswith("SMOKE TEST")
    from PIL import Image
    a = smoke.score([Image.new("RGB", (64, 64), "red")], ["a red square"])
    b = load_metric("smoke_clip", device="cpu").score([Image.new("RGB", (64, 64), "red")],
                                                            ["a red square"])
    assert a == pytest.approx(b)  # seeded: the same number on every build


def test_every_metric_needing_weights_has_a_preflight_check(empty_hf_cache):
    """Every registered metric that needs weights is refused before generation when they are
    missing (its class's declared hub files, `hub_needs`, or its own METRIC_CHECKS entry), so
    none fails after the images are made."""
    from evalsuite.metrics import METRICS
    from evalsuite.preflight import metric_problems
    local = {"smoke_clip", "digit_acc", "digit_ink", "digit_fd", "digit_div"}
    local |= {n for n in METRICS.names() if n.startswith("mini_")}  # shipped in the repo
    unchecked = [n for n in METRICS.names() if n not in local and not metric_problems([n])]
    assert not unchecked and len(set(METRICS.names()) - local) >= 12, unchecked


def test_demo_writes_to_out_unless_asked(tmp_path, monkeypatch):
    import di_star.mini.ablation as ablation
    import di_star.toy.demo as demo
    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda out, leaderboards: calls.append(("toy", out, leaderboards)))
    monkeypatch.setattr(ablation, "run_ablation",
                        lambda out, leaderboards, scale: calls.append(("mini", out, leaderboards, scale)))
    assert _invoke(["demo", "--out", str(tmp_path / "d")]).exit_code == 0  # the mini world by default
    assert _invoke(["demo", "--out", str(tmp_path / "d"), "--update-leaderboards"]).exit_code == 0
    assert _invoke(["demo", "--out", str(tmp_path / "d"), "--world", "toy"]).exit_code == 0
    r = _invoke(["demo", "--world", "moon"])
    assert r.exit_code == 2 and "Unknown demo world 'moon'" in r.output and "Traceback" not in r.output
    from pathlib import Path
    assert calls == [("mini", tmp_path / "d" / "mini", tmp_path / "d" / "leaderboards", "demo"),
                     ("mini", tmp_path / "d" / "mini", Path("leaderboards"), "demo"),
                     ("toy", tmp_path / "d", tmp_path / "d" / "leaderboards")]


def test_version_and_flags_shown_as_flags():
    r = _invoke(["--version"])
    assert r.exit_code == 0 and re.fullmatch(r"distar \S+\n", r.output)
    help_text = _invoke(["train", "--help"]).output
    assert re.search(r"--list\s+List presets", help_text), help_text  # no '<bool>' metavar


def test_full_size_random_weights_on_cpu_refused_without_force(tmp_path):
    r = _invoke(["eval", "--model", "sdxl_base", "--bench", "tiny", "--weights", "random",
                 "--limit", "1", "--device", "cpu", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2
    assert "at least 10 GB" in r.output and "--force" in r.output and "--model tiny_sdxl" in r.output
    assert not (tmp_path / "r").exists()


def test_table2_hint_names_the_export_folder(tmp_path):
    from evalsuite.leaderboard import table2
    assert "path:RUN_DIR/export" in table2([])
