"""Breakdowns and uncertainty (evalsuite/metrics/stats.py): seeded, calibrated, cluster-aware."""
import numpy as np
import pandas as pd
import pytest

from evalsuite.metrics.stats import (bootstrap_ci, chunked_means, group_means, pair_scores,
                                     paired_test)


def test_bootstrap_ci_is_seeded_and_has_the_normal_width():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=400)
    a, b = bootstrap_ci(x, seed=1), bootstrap_ci(x, seed=1)
    assert a == b and a.low < a.mean < a.high and a.mean == pytest.approx(x.mean())
    normal_width = 2 * 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert (a.high - a.low) == pytest.approx(normal_width, rel=0.1)
    assert bootstrap_ci(x, seed=2) != a  # another seed, another resample


def test_bootstrap_over_prompts_widens_the_interval_for_correlated_images():
    """4 identical images per prompt carry the information of 1: resampling prompts gives an
    interval ~2x as wide as (wrongly) resampling images."""
    rng = np.random.default_rng(0)
    per_prompt = rng.normal(size=200)
    x = np.repeat(per_prompt, 4)
    prompts = np.repeat(np.arange(200), 4)
    naive = bootstrap_ci(x, seed=0)
    clustered = bootstrap_ci(x, seed=0, clusters=prompts)
    ratio = (clustered.high - clustered.low) / (naive.high - naive.low)
    assert 1.7 < ratio < 2.3
    assert clustered.mean == naive.mean


def test_group_means_match_pandas_and_add_an_all_row():
    rng = np.random.default_rng(1)
    groups = rng.choice(["animals", "food", "abstract"], size=300)
    x = rng.normal(size=300) + (groups == "food") * 2
    df = group_means(x, groups, n_boot=2000)
    assert df.group.tolist() == ["abstract", "animals", "food", "all"]
    expected = pd.Series(x).groupby(groups).mean()
    for g in ("abstract", "animals", "food"):
        row = df[df.group == g].iloc[0]
        assert row["mean"] == pytest.approx(expected[g]) and row.n == (groups == g).sum()
        assert row.low < row["mean"] < row.high
    assert df[df.group == "all"].iloc[0].n == 300


@pytest.mark.parametrize("method", ["bootstrap", "wilcoxon", "t"])
def test_paired_test_detects_a_real_difference(method):
    rng = np.random.default_rng(2)
    b = rng.normal(size=150)
    a = b + 0.15 + rng.normal(0, 0.3, size=150)
    r = paired_test(a, b, method=method, n_boot=4000)
    assert r.p_value < 0.01 and r.n == 150 and r.method == method
    assert r.low < 0.15 < r.high and r.mean_diff == pytest.approx((a - b).mean())


def test_paired_bootstrap_is_calibrated_under_the_null():
    rng = np.random.default_rng(3)
    p = [paired_test(rng.normal(size=60), rng.normal(size=60), n_boot=1000, seed=i).p_value
         for i in range(200)]
    rate = np.mean(np.array(p) < 0.05)
    assert 0.02 <= rate <= 0.10  # nominal 0.05


def test_paired_test_edge_cases():
    x = np.arange(10.0)
    r = paired_test(x, x.copy())
    assert r.mean_diff == 0 and r.p_value == 1.0
    assert paired_test(x, x.copy(), method="wilcoxon").p_value == 1.0
    with pytest.raises(ValueError, match="Unknown paired test"):
        paired_test(x, x + 1, method="sign")
    with pytest.raises(ValueError, match="length"):
        paired_test(x, x[:5])


def test_pair_scores_aligns_on_prompt_and_seed():
    a = pd.DataFrame({"prompt_index": [0, 1, 2], "k": [0, 0, 0], "value": [1.0, 2.0, 3.0]})
    b = pd.DataFrame({"prompt_index": [2, 0], "k": [0, 0], "value": [30.0, 10.0]})
    m = pair_scores(a, b).sort_values("prompt_index")
    assert m.value_a.tolist() == [1.0, 3.0] and m.value_b.tolist() == [10.0, 30.0]


def test_chunked_means():
    np.testing.assert_allclose(chunked_means(list(range(10)), 4), [1.5, 5.5, 8.5])
