"""`distar score`: a folder of images made elsewhere scored into the same store, summary and
leaderboard as `distar eval`; images without a prompt listed in one error; folder-vs-folder FID."""
import json
import shutil

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from distar.cli import app
from distar.core.errors import DistarError
from evalsuite.score_folder import score_folder
from evalsuite.store import ResultsStore

EVAL = ["eval", "--model", "mini_onestep", "--bench", "mini_parti", "--limit", "4",
        "--metrics", "mini_clip"]


def _cli(args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """One `distar eval` run and its images copied out as a user's folder: two PNGs, one
    lossless WebP, the last one as named by `distar eval`."""
    tmp = tmp_path_factory.mktemp("score")
    res = _cli([*EVAL, "--out", tmp / "eval", "--json", tmp / "eval.json"])
    assert res.exit_code == 0, res.output
    folder = tmp / "mine"
    folder.mkdir()
    for i, png in enumerate(sorted((tmp / "eval").rglob("*.png"))):
        if i == 2:
            Image.open(png).save(folder / "2.webp", lossless=True)
        else:
            shutil.copy(png, folder / (png.name if i == 3 else f"{i}.png"))
    return tmp


def test_score_folder_writes_the_same_scores_and_summary_as_eval(evaluated, tmp_path):
    res = _cli(["score", "--images", evaluated / "mine", "--prompts", "mini_parti",
                "--metrics", "mini_clip", "--out", tmp_path / "r", "--json", tmp_path / "s.json"])
    assert res.exit_code == 0, res.output
    ours, theirs = (json.loads(p.read_text()) for p in (tmp_path / "s.json", evaluated / "eval.json"))
    assert ours["bench"] == theirs["bench"] and ours["bench_version"] == theirs["bench_version"]
    assert ours["n_images"] == theirs["n_images"] == 4
    assert [m | {"n": 0} for m in ours["metrics"]] == [m | {"n": 0} for m in theirs["metrics"]]
    mine = ResultsStore(tmp_path / "r", readonly=True).table("model_scores")
    ref = ResultsStore(evaluated / "eval", readonly=True).table("model_scores")
    assert mine.sort_values("prompt_index").value.tolist() == \
        pytest.approx(ref.sort_values("prompt_index").value.tolist(), abs=0)
    assert sorted(mine.prompt) == sorted(ref.prompt)
    res = _cli(["leaderboard", "--results", tmp_path / "r", "--suite", "mini", "--out", tmp_path / "lb"])
    assert res.exit_code == 0, res.output
    assert "mine" in (tmp_path / "lb" / "mini_table1.md").read_text()


def test_images_without_a_prompt_are_listed_in_one_error(evaluated, tmp_path):
    folder = tmp_path / "f"
    shutil.copytree(evaluated / "mine", folder)
    shutil.copy(folder / "0.png", folder / "holiday.png")
    shutil.copy(folder / "0.png", folder / "99999.jpg")
    res = _cli(["score", "--images", folder, "--prompts", "mini_parti", "--metrics", "mini_clip",
                "--out", tmp_path / "r"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "2 images" in res.output and "99999.jpg, holiday.png" in res.output
    assert not (tmp_path / "r").exists()  # checked before anything is written


def test_manifest_matches_prompts_by_file(evaluated, tmp_path):
    folder = evaluated / "mine"
    lines = [{"file": f.name, "prompt": "a red square" if i < 2 else "a blue circle"}
             for i, f in enumerate(sorted(folder.iterdir()))]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines))
    summary, _ = score_folder(folder, ["mini_clip"], tmp_path / "r", prompts=str(manifest))
    images = ResultsStore(tmp_path / "r", readonly=True).table("images")
    assert sorted(zip(images.prompt_index, images.k, images.prompt)) == [
        (0, 0, "a red square"), (0, 1, "a red square"), (1, 0, "a blue circle"),
        (1, 1, "a blue circle")]
    assert summary.n_images == 4 and summary.metrics[0].n == 4


def test_folder_vs_folder_kid_is_the_metrics_own(evaluated, tmp_path):
    """--ref DIR without prompts: the KID of the folder against the reference folder, as KID
    computes it directly (a small torchscript stands in for Inception, as in test_metric_fid;
    KID rather than FID: FID's 2048-dim matrix square root takes a minute on one core)."""
    from evalsuite.metrics.fid import KID

    class Base(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 37, stride=37),
                                              torch.nn.Flatten(), torch.nn.LazyLinear(2048))

        def forward(self, x):
            return self.layers(x)

    torch.manual_seed(0)
    net = Base()
    net(torch.zeros(1, 3, 299, 299))  # materialise the lazy layer
    torch.jit.script(net).save(str(tmp_path / "inception-2015-12-05.pt"))
    ref = tmp_path / "ref"
    ref.mkdir()
    for i, png in enumerate(sorted((evaluated / "eval").rglob("*.png"))):
        Image.open(png).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(ref / f"r{i}.png")
    opts = {"kid": {"weights_path": str(tmp_path), "device": "cpu", "num_workers": 0}}
    summary, _ = score_folder(evaluated / "mine", ["kid"], tmp_path / "r", ref=ref,
                              metric_options=opts)
    want = KID.from_pretrained(reference_dir=str(ref), weights_path=str(tmp_path), device="cpu",
                               num_workers=0,
                               cache_dir=str(tmp_path / "cache")).compute(
        sorted(str(p) for p in (evaluated / "mine").iterdir()))
    assert summary.metrics[0].kind == "set" and summary.metrics[0].mean == pytest.approx(want, rel=1e-6)
    with pytest.raises(DistarError, match="add --prompts"):
        score_folder(evaluated / "mine", ["mini_clip"], tmp_path / "r2")


def test_readme_python_snippet_runs(evaluated, tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (snippet,) = [s for s in re.findall(r"```py\n(.*?)```", readme, re.S) if "score_folder" in s]
    shutil.copytree(evaluated / "mine", tmp_path / "my_images")
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md score_folder snippet", "exec"), {})
    assert re.search(r"mini_clip\s+\d+\.\d+\s+\[", capsys.readouterr().out)
