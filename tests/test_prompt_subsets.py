"""`--limit N --spread`: N prompts evenly spaced over a benchmark stored in blocks, each keeping
its index and so its seeds (the images are those of a run over the first prompts)."""
from typer.testing import CliRunner

from distar.cli import app
from evalsuite.benchmarks import load_benchmark
from evalsuite.generate import select_prompts
from evalsuite.store import ResultsStore


def _eval(out, *extra):
    return CliRunner().invoke(app, ["eval", "--model", "mini_onestep", "--bench", "mini_parti",
                                    "--batch-size", "1", "--metrics", "mini_clip", "--out", str(out),
                                    *extra])


def test_a_spread_subset_covers_every_challenge_and_a_first_n_one_does_not():
    bench = load_benchmark("mini_parti")
    spread = select_prompts(bench, 48, spread=True)
    idx = [p.index for p in spread]
    assert len(set(idx)) == 48 and idx == sorted(idx) and idx[0] == 0
    challenges = {p.meta["challenge"] for p in bench.prompts}
    assert {p.meta["challenge"] for p in spread} == challenges and len(challenges) == 5
    assert {p.meta["challenge"] for p in select_prompts(bench, 48)} == {"colour"}
    assert [p.index for p in select_prompts(bench, len(bench), spread=True)] == list(range(len(bench)))


def test_spread_prompts_keep_their_seeds_and_images(tmp_path):
    assert _eval(tmp_path / "first", "--limit", "1").exit_code == 0
    res = _eval(tmp_path / "spread", "--limit", "3", "--spread")
    assert res.exit_code == 0, res.output
    first = ResultsStore(tmp_path / "first", readonly=True).table("images")
    spread = ResultsStore(tmp_path / "spread", readonly=True).table("images").sort_values("prompt_index")
    assert spread.prompt_index.tolist() == [0, 100, 200]
    row0 = spread[spread.prompt_index == 0].iloc[0]
    assert row0.seed == first.iloc[0].seed and row0.sha256 == first.iloc[0].sha256


def test_spread_without_limit_is_one_clear_line(tmp_path):
    res = _eval(tmp_path, "--spread")
    assert res.exit_code == 2 and "--spread spreads the --limit N prompts" in res.output
    assert "Traceback" not in res.output


def test_a_set_metric_is_recomputed_for_another_subset_of_as_many_images(tmp_path):
    """mini_fd over the first 3 prompts, then over 3 spread ones (as many images, other
    prompts): the second is computed for its own images, not read back from the first; the
    same subset again is read back."""
    def fd(*extra):
        res = CliRunner().invoke(app, ["eval", "--model", "mini_onestep", "--bench", "mini_parti",
                                       "--metrics", "mini_fd", "--out", str(tmp_path), "--limit", "3",
                                       *extra])
        assert res.exit_code == 0, res.output
        sets = ResultsStore(tmp_path, readonly=True).table("set_scores")
        return float(sets[sets.metric == "mini_fd"].value.iloc[0])
    first = fd()
    spread = fd("--spread")
    assert spread != first
    assert fd("--spread") == spread
