"""Reports on the terminal and their options (issue 24): `leaderboard` prints its main table,
`metrics --versions` the stored version and backbone, `gallery` reads --results and writes --html."""
from typer.testing import CliRunner

from distar.cli import app
from test_gallery import build_store


def _cli(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_leaderboard_prints_the_main_table(tmp_path):
    build_store(tmp_path / "results")
    res = _cli(["leaderboard", "--results", tmp_path / "results", "--out", tmp_path / "lb"])
    assert res.exit_code == 0, res.output
    table1 = (tmp_path / "lb" / "table1_parti_coco.md").read_text().rstrip()
    assert res.output.startswith(table1) and "| red_model" in res.output


def test_gallery_reads_results_and_writes_html(tmp_path):
    build_store(tmp_path / "results")
    res = _cli(["gallery", "--bench", "parti", "--results", tmp_path / "results",
                "--html", tmp_path / "page"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "page" / "index.html").is_file()
    res = _cli(["gallery", "--bench", "parti", "--results", tmp_path / "results",
                "--html", tmp_path / "a", "--out", tmp_path / "b"])
    assert res.exit_code == 2 and "old name of --html" in res.output


def test_metrics_versions_shows_version_and_backbone():
    res = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["metrics", "--versions"])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if "│ aesthetic " in line)
    assert "LAION-aesthetic-v2" in row and "open_clip ViT-L-14" in row
