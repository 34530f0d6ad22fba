"""distar fetch: its plan is the list preflight checks, for every registered name; the download
path runs against a fake hub (no network)."""
import hashlib
import json

import pytest
from typer.testing import CliRunner

from distar.cli import app
from evalsuite import fetch as fe
from evalsuite.benchmarks import load_benchmark
from evalsuite.needs import bench_needs, metric_needs, model_needs

ENV_VARS = ("DISTAR_CLIP_PATH", "DISTAR_AESTHETIC_PATH", "DISTAR_AESTHETIC_CLIP_PATH",
            "DISTAR_PICKSCORE_PATH", "DISTAR_PICKSCORE_PROCESSOR_PATH", "DISTAR_IMAGEREWARD_PATH",
            "DISTAR_IMAGEREWARD_TOKENIZER", "DISTAR_HPSV20_PATH", "DISTAR_HPSV21_PATH",
            "DISTAR_HPSV2_PROMPTS", "DISTAR_INCEPTION_PATH")


@pytest.fixture
def spy(monkeypatch, tmp_path):
    """Every (repo, file, revision) preflight asks the cache / hub for; nothing is there."""
    from evalsuite import hub, preflight
    for v in ENV_VARS:
        monkeypatch.delenv(v, raising=False)
    asked = set()

    def hub_has(repo_id, filename, repo_type=None, revision=None):
        asked.add((repo_id, filename, revision))
        return False

    def hub_download(repo_id, filename, *, model, revision=None, repo_type=None, env_var=None):
        asked.add((repo_id, filename, revision))  # a stand-in file, so every one is asked for
        (tmp_path / "prompts.json").write_text('["a red cube"]')
        return str(tmp_path / "prompts.json")
    monkeypatch.setattr(preflight, "_hub_has", hub_has)
    monkeypatch.setattr(hub, "hub_download", hub_download)
    load_benchmark.cache_clear()
    yield asked
    # The benchmarks loaded here hold the stand-in prompts: later tests must not get them.
    load_benchmark.cache_clear()


def planned(needs):
    """(repo, check file, revision) of each need, after checking the file is one fetch takes."""
    out = set()
    for n in needs:
        for c in n.check:
            chosen, _ = fe.match_items(n.files, [c])
            assert chosen == [c], f"{n.repo_id}: preflight checks {c}, fetch would not take it"
            out.add((n.repo_id, c, n.revision))
    return out


def test_plan_is_what_preflight_checks_for_every_model(spy):
    from evalsuite.models.specs import MODELS, resolve_model
    from evalsuite.preflight import spec_problems
    checked = 0
    for name in MODELS.names():
        spec = resolve_model(name)
        spy.clear()
        spec_problems(spec)
        assert spy == planned(model_needs(spec)), name
        checked += bool(spy)
    assert checked >= 7  # the seven hub models


def test_plan_is_what_preflight_checks_for_every_metric(spy):
    from evalsuite.metrics import METRICS
    from evalsuite.preflight import metric_problems
    for name in METRICS.names():
        spy.clear()
        problems = metric_problems([name])
        needs = metric_needs(name)
        assert spy == planned([n for n in needs if n.repo_id]), name
        for n in needs:
            if n.url:  # a file outside the hub (Inception) is named with its URL in the fix
                assert n.files[0] in " ".join(p.what for p in problems)


def test_plan_is_what_preflight_checks_for_every_bench(spy):
    from evalsuite.benchmarks import BENCHMARKS
    from evalsuite.preflight import bench_problems
    for name in BENCHMARKS.names():
        spy.clear()
        bench_problems(name)
        assert spy == planned(bench_needs(name)), name


def test_dmd2_takes_one_unet_file_and_fp16_components_only():
    from evalsuite.models.specs import resolve_model
    base, unet = model_needs(resolve_model("dmd2_sdxl"))
    assert unet.files == ("dmd2_sdxl_1step_unet_fp16.bin",)
    listing = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
               "unet/diffusion_pytorch_model.fp16.safetensors", "vae/config.json",
               "vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
               "text_encoder/model.fp16.safetensors", "text_encoder/model.safetensors",
               "sd_xl_base_1.0.safetensors", "tokenizer/vocab.json"]
    chosen, missing = fe.match_items(base.files, listing)
    assert "unet/config.json" in chosen and "vae/diffusion_pytorch_model.fp16.safetensors" in chosen
    assert not [p for p in chosen if p.startswith("unet/diffusion") or p.endswith(
        "model.safetensors") or p.startswith("sd_xl")]
    assert "text_encoder/config.json" in missing  # a required file the listing lacks is named


def _invoke(args, env=None):
    return CliRunner().invoke(app, args, env={"COLUMNS": "300", **(env or {})})


def test_plan_offline_names_repos_revisions_files():
    r = _invoke(["fetch", "--model", "flux_dev", "--bench", "parti", "--metrics",
                 "pickscore,imagereward,clip", "--plan"])
    assert r.exit_code == 0, r.output
    for text in ("black-forest-labs/FLUX.1-dev @ main", "GATED", "transformer/config.json",
                 "text_encoder_2/model.safetensors", "yuvalkirstain/PickScore_v1 @ main",
                 "THUDM/ImageReward @ main", "ImageReward.pt", "bert-base-uncased",
                 "laion/CLIP-ViT-g-14-laion2B-s12B-b42K", "size unknown offline"):
        assert text in r.output, text


def test_download_offline_and_bad_names_are_one_line():
    r = _invoke(["fetch", "--model", "sdxl_base"])
    assert r.exit_code == 2 and "not reachable" in r.output and "Traceback" not in r.output
    r = _invoke(["fetch", "--metrics", "clipp", "--plan"])
    assert r.exit_code == 2 and "unknown metric 'clipp'" in r.output


class FakeHub:
    """huggingface_hub's repo_info / list_repo_tree / hf_hub_download over a dict of files."""

    def __init__(self, repos):
        self.repos, self.downloads = repos, []

    def api(self):
        hub = self

        class Api:
            def repo_info(self, repo_id, revision=None, repo_type=None):
                return type("Info", (), {"sha": "c0ffee" + repo_id.replace("/", "")})()

            def list_repo_tree(self, repo_id, revision=None, recursive=False, repo_type=None):
                from huggingface_hub.hf_api import RepoFile
                for path, data in hub.repos[repo_id].items():
                    lfs = {"size": len(data), "oid": hashlib.sha256(data).hexdigest(),
                           "pointerSize": 1}
                    yield RepoFile(path=path, size=len(data), oid="x", lfs=lfs)
        return Api

    def hf_hub_download(self, repo_id, filename, revision=None, repo_type=None, cache_dir=None):
        self.downloads.append((repo_id, filename, revision))
        path = cache_dir / repo_id.replace("/", "--") / "snapshots" / revision / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.repos[repo_id][filename])
        return str(path)


def test_download_to_folder_writes_manifest(monkeypatch, tmp_path):
    import huggingface_hub as hh

    from evalsuite import hub
    from evalsuite.metrics.imagereward import HUB_REPO
    fake = FakeHub({HUB_REPO: {"ImageReward.pt": b"w" * 10, "med_config.json": b"{}",
                               "other.bin": b"unused"},
                    "bert-base-uncased": {"vocab.txt": b"[PAD]", "tokenizer_config.json": b"{}",
                                          "config.json": b"{}", "model.safetensors": b"big"}})
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    monkeypatch.setattr(hh, "HfApi", fake.api())
    monkeypatch.setattr(hh, "hf_hub_download", fake.hf_hub_download)
    r = _invoke(["fetch", "--metrics", "imagereward", "--to", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert sorted(f for _, f, _ in fake.downloads) == ["ImageReward.pt", "config.json",
                                                         "med_config.json", "tokenizer_config.json",
                                                         "vocab.txt"]
    assert {rev for *_, rev in fake.downloads} == {"c0ffeeTHUDMImageReward", "c0ffeebert-base-uncased"}
    rows = json.loads((tmp_path / fe.MANIFEST).read_text())
    row = next(r for r in rows if r["file"] == "ImageReward.pt")
    assert row["sha256"] == hashlib.sha256(b"w" * 10).hexdigest() and row["bytes"] == 10
    assert row["local"].startswith("hub/") and (tmp_path / row["local"]).is_file()
    sums = (tmp_path / fe.SUMS).read_text().splitlines()
    assert f"{row['sha256']}  {row['local']}" in sums and len(sums) == 5
    assert "HF_HOME=" in r.output
    assert "ImageReward.pt  [10 B]" in r.output and "commit c0ffeeTHUDMImageReward" in r.output
    assert "other.bin" not in r.output and "model.safetensors" not in r.output


def test_a_file_the_loader_reads_missing_on_the_hub_stops_before_any_download(monkeypatch, tmp_path):
    import huggingface_hub as hh

    from evalsuite import hub
    from evalsuite.metrics.imagereward import HUB_REPO
    fake = FakeHub({HUB_REPO: {"ImageReward.pt": b"w"},   # med_config.json is missing
                    "bert-base-uncased": {"vocab.txt": b"x"}})
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    monkeypatch.setattr(hh, "HfApi", fake.api())
    monkeypatch.setattr(hh, "hf_hub_download", fake.hf_hub_download)
    r = _invoke(["fetch", "--metrics", "imagereward", "--to", str(tmp_path)])
    assert r.exit_code == 2 and "lacks med_config.json" in r.output and "MISSING" in r.output
    assert fake.downloads == []


def test_download_sha_mismatch_and_gated_repo(monkeypatch, tmp_path):
    import huggingface_hub as hh
    from huggingface_hub import errors

    from evalsuite import hub
    from evalsuite.metrics.hps import HPS_REPO
    fake = FakeHub({HPS_REPO: {"HPS_v2.1_compressed.pt": b"abc"}})

    def corrupt(*a, **k):
        path = fake.hf_hub_download(*a, **k)
        open(path, "wb").write(b"abd")
        return path
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    monkeypatch.setattr(hh, "HfApi", fake.api())
    monkeypatch.setattr(hh, "hf_hub_download", corrupt)
    r = _invoke(["fetch", "--metrics", "hpsv21", "--to", str(tmp_path)])
    assert r.exit_code == 2 and "differs from the hub's" in r.output

    def gated(*a, **k):
        e = errors.GatedRepoError.__new__(errors.GatedRepoError)
        Exception.__init__(e, "403 Client Error: access to this repo is restricted")
        raise e
    monkeypatch.setattr(hh, "hf_hub_download", gated)
    r = _invoke(["fetch", "--metrics", "hpsv21", "--to", str(tmp_path)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "accept its licence" in r.output and "HF_TOKEN" in r.output
    assert f"https://huggingface.co/{HPS_REPO}" in r.output


def test_pipeline_plans_name_every_component_the_class_loads():
    from evalsuite.models.specs import resolve_model
    (sd15,) = model_needs(resolve_model("sd15"))
    chosen, missing = fe.match_items(sd15.files, [
        "model_index.json", "safety_checker/config.json", "safety_checker/model.safetensors",
        "feature_extractor/preprocessor_config.json", "unet/diffusion_pytorch_model.safetensors"])
    assert "safety_checker/model.safetensors" in chosen and "unet/config.json" in missing
    (sd35,) = model_needs(resolve_model("sd35_large"))
    assert sd35.gated and "tokenizer_3/*" in sd35.files and "text_encoder_3/config.json" in sd35.files


def test_preset_plan_is_what_train_preflight_checks(spy):
    from di_star.cli import fetch_targets, preflight, resolve_config
    from di_star.presets import PRESETS
    from distar.core.errors import DistarError
    from evalsuite.needs import command_needs
    sd_presets = [p for p in PRESETS.names() if p.startswith(("di_star_sd", "tiny_sd"))]
    assert "di_star_sdxl" in sd_presets
    for name in sd_presets:
        cfg = resolve_config(name, None, None)
        spy.clear()
        try:
            preflight(cfg)
        except DistarError:
            pass  # nothing is on this machine: the problems are the point
        specs, bench, metrics = fetch_targets(cfg)
        needs = [n for n in command_needs(specs, bench, metrics) if n.repo_id]
        assert spy == planned(needs), name
    r = _invoke(["fetch", "--preset", "di_star_sdxl", "--plan"])
    assert r.exit_code == 0, r.output
    for text in ("stabilityai/stable-diffusion-xl-base-1.0 @ main", "tianweiy/DMD2 @ main",
                 "dmd2_sdxl_1step_unet_fp16.bin", "yuvalkirstain/PickScore_v1"):
        assert text in r.output
