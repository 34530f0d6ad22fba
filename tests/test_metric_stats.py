"""Breakdowns and uncertainty (evalsuite/metrics/stats.py): seeded, calibrated, cluster-aware."""
import numpy as np
import pandas as pd
import pytest

from evalsuite.metrics.stats import (INTERVAL_METHODS, bootstrap_ci, chunked_means, group_means,
                                     pair_scores, paired_test, ratio_se)


def test_bootstrap_ci_is_seeded_and_has_the_normal_width():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=400)
    a, b = bootstrap_ci(x, seed=1), bootstrap_ci(x, seed=1)
    assert a == b and a.low < a.mean < a.high and a.mean == pytest.approx(x.mean())
    normal_width = 2 * 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert (a.high - a.low) == pytest.approx(normal_width, rel=0.1)
    assert bootstrap_ci(x, seed=2) != a  # another seed, another resample


def test_bca_matches_scipys_bca():
    """Same definition as scipy.stats.bootstrap(method='BCa') (z0 with ties halved, jackknife
    acceleration): on a skewed sample the ends agree to Monte-Carlo error (each end's
    bootstrap spread at 20000 resamples is ~1% of the width)."""
    from scipy.stats import bootstrap
    x = np.random.default_rng(3).lognormal(0.0, 1.0, 50)
    ours = bootstrap_ci(x, n_boot=20_000, seed=0, method="bca")
    ref = bootstrap((x,), np.mean, method="BCa", n_resamples=20_000, random_state=0)
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert abs(ours.low - ref.confidence_interval.low) < 0.04 * width
    assert abs(ours.high - ref.confidence_interval.high) < 0.04 * width
    pct = bootstrap_ci(x, n_boot=20_000, seed=0, method="percentile")
    assert ours.high > pct.high and ours.low > pct.low  # right skew moves BCa to the right


def test_studentized_interval_by_its_definition_and_its_floor():
    """Closed forms: the SE is s / sqrt(n) (and the cluster ratio SE with clusters); the
    interval contains the t interval; on normal data it covers ~95% (120 samples: 0.95 +- 0.04)
    and leans to the skewed side on lognormal data."""
    from scipy.stats import t as student_t
    rng = np.random.default_rng(5)
    x = rng.normal(size=30)
    assert ratio_se(x, np.ones(30)) == pytest.approx(x.std(ddof=1) / np.sqrt(30))
    s, c = np.array([3.0, 5.0, 1.0]), np.array([2.0, 3.0, 1.0])
    theta = 9.0 / 6.0
    assert ratio_se(s, c) == pytest.approx(np.sqrt(1.5 * np.sum((s - theta * c) ** 2)) / 6.0)
    ci = bootstrap_ci(x, n_boot=2000)
    half = student_t.ppf(0.975, 29) * x.std(ddof=1) / np.sqrt(30)
    assert ci.low <= x.mean() - half + 1e-12 and ci.high >= x.mean() + half - 1e-12
    cis = [bootstrap_ci(v, n_boot=400, seed=i) for i, v in enumerate(rng.normal(size=(120, 20)))]
    hits = sum(c.low < 0 < c.high for c in cis)
    assert 0.88 <= hits / 120 <= 1.0
    y = rng.lognormal(0.0, 1.0, 50)
    skewed = bootstrap_ci(y, n_boot=2000)
    assert skewed.high - y.mean() > y.mean() - skewed.low
    # Degenerate inputs: all equal, two units, a typo.
    flat = bootstrap_ci([2.0] * 5)
    assert (flat.low, flat.high) == (2.0, 2.0)
    two = bootstrap_ci([1.0, 2.0])
    assert np.isfinite(two.low) and two.low < 1.0 and two.high > 2.0
    with pytest.raises(ValueError, match="Choose one of"):
        bootstrap_ci(x, method="bootstrap-t")
    assert set(INTERVAL_METHODS) == {"studentized", "bca", "percentile"}


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


@pytest.mark.parametrize("method", ["permutation", "bootstrap", "wilcoxon", "t"])
def test_paired_test_detects_a_real_difference(method):
    rng = np.random.default_rng(2)
    b = rng.normal(size=150)
    a = b + 0.15 + rng.normal(0, 0.3, size=150)
    r = paired_test(a, b, method=method, n_boot=4000)
    assert r.p_value < 0.01 and r.n == 150 and r.method == method
    assert r.low < 0.15 < r.high and r.mean_diff == pytest.approx((a - b).mean())


def test_paired_bootstrap_is_calibrated_under_the_null():
    rng = np.random.default_rng(3)
    p = [paired_test(rng.normal(size=60), rng.normal(size=60), method="bootstrap", n_boot=1000,
                     seed=i).p_value
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


def _clustered_null(rng, prompts=30, per_prompt=4, icc=0.8):
    """No true difference; the 4 images of a prompt share a per-prompt effect (as images of one
    prompt from two models do)."""
    shared = rng.normal(0, np.sqrt(icc), size=prompts).repeat(per_prompt)
    d = shared + rng.normal(0, np.sqrt(1 - icc), size=prompts * per_prompt)
    b = rng.normal(size=prompts * per_prompt)
    return b + d, b, np.arange(prompts).repeat(per_prompt)


@pytest.mark.parametrize("method", ["permutation", "bootstrap", "wilcoxon", "t"])
def test_every_paired_method_is_calibrated_with_correlated_images_per_prompt(method):
    """Null calibration: 300 simulated no-difference comparisons, 30 prompts x 4 correlated
    images. With clusters= every method rejects near 5%; treating images as independent (what
    t and Wilcoxon did before, clusters ignored) rejects ~30% (the 'without' rate, asserted so
    the test shows it can fail)."""
    rng = np.random.default_rng(11)
    sims = [_clustered_null(rng) for _ in range(300)]
    with_c = np.mean([paired_test(a, b, method=method, n_boot=500, seed=i, clusters=c).p_value
                      < 0.05 for i, (a, b, c) in enumerate(sims)])
    assert 0.02 <= with_c <= 0.09, with_c
    if method in ("wilcoxon", "t"):
        without = np.mean([paired_test(a, b, method=method, n_boot=100).p_value < 0.05
                           for a, b, _ in sims])
        assert without > 0.2, without


def test_clusters_make_prompts_the_unit():
    rng = np.random.default_rng(5)
    a, b, c = _clustered_null(rng, prompts=12)
    for method in ("permutation", "wilcoxon", "t"):
        r = paired_test(a, b, method=method, clusters=c)
        assert r.n == 48 and r.n_clusters == 12
    # t and Wilcoxon on clustered data equal the tests of the per-prompt mean differences.
    from scipy.stats import ttest_1samp, wilcoxon
    means = (a - b).reshape(12, 4).mean(1)
    assert paired_test(a, b, method="t", clusters=c).p_value == pytest.approx(
        ttest_1samp(means, 0).pvalue)
    assert paired_test(a, b, method="wilcoxon", clusters=c).p_value == pytest.approx(
        wilcoxon(means).pvalue)
    with pytest.raises(ValueError, match="2 prompts"):
        paired_test(a[:4], b[:4], clusters=c[:4])


def test_sign_flip_permutation_is_exact_at_small_n():
    """15 pairs: the bootstrap p rejects 6-7% of nulls at nominal 5%; the sign-flip p (all 2^15
    sign patterns enumerated) is exact under symmetry, so at most 5% up to simulation noise."""
    rng = np.random.default_rng(7)
    p_perm, p_boot = [], []
    for i in range(1500):
        a, b = rng.normal(size=15), rng.normal(size=15)
        p_perm.append(paired_test(a, b, method="permutation", n_boot=100).p_value)
        if i < 600:
            p_boot.append(paired_test(a, b, method="bootstrap", n_boot=1000, seed=i).p_value)
    rate = np.mean(np.array(p_perm) < 0.05)
    assert 0.03 <= rate <= 0.06, rate  # binomial s.e. 0.0056 around 0.05
    # Exactness: under H0 the p-value is uniform, so P(p <= t) <= t at every level.
    for t in (0.01, 0.1, 0.25, 0.5):
        assert np.mean(np.array(p_perm) <= t) <= t + 0.025
    assert np.mean(np.array(p_boot) < 0.05) > rate - 0.01  # the bootstrap is not better


def test_sign_flip_p_by_hand():
    from evalsuite.metrics.stats import sign_flip_p
    # Three positive differences: only the all-plus and all-minus patterns reach |T| = 6.
    assert sign_flip_p(np.array([1.0, 2.0, 3.0])) == pytest.approx(2 / 8)
    # Above 16 units: Monte Carlo with the +1 correction, never 0.
    p = sign_flip_p(np.ones(40), n_perm=2000, seed=0)
    assert p == pytest.approx(1 / 2001)


def test_an_interval_is_clipped_to_the_metrics_bounds_and_only_then():
    """A share at 4 prompts: the studentised interval leaves [0, 1]; with the metric's bounds
    (MetricInfo.bounds) it ends at them; the mean is unchanged."""
    values, prompts = np.array([0.0, 0.0, 0.0, 1.0]), np.arange(4)
    free = bootstrap_ci(values, clusters=prompts)
    held = bootstrap_ci(values, clusters=prompts, bounds=(0.0, 1.0))
    assert free.low < 0.0 and held.low == 0.0 and held.high == min(free.high, 1.0)
    assert held.mean == free.mean == 0.25


def test_eval_summary_and_leaderboard_cells_keep_a_share_inside_its_range(tmp_path):
    """`distar eval` at 4 prompts prints mini_attr_acc's interval inside [0, 1] (it read
    [-0.69, 1.05] before the metric declared its bounds), and the leaderboard's cell does too."""
    from typer.testing import CliRunner

    from distar.cli import app
    from evalsuite.leaderboard.entries import interval, metric_shown
    from evalsuite.store import ResultsStore
    r = CliRunner().invoke(app, ["eval", "--model", "mini_onestep", "--bench", "mini_parti", "--limit", "4",
                                 "--metrics", "mini_attr_acc", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.strip().startswith("mini_attr_acc") and "[" in x)
    low, high = (float(x) for x in line.split("[")[1].split("]")[0].split(","))
    assert 0.0 <= low <= high <= 1.0
    scores = ResultsStore(tmp_path, readonly=True).table("scores")
    shown = metric_shown(scores)
    (key,) = [k for k in shown if k[0] == "mini_attr_acc"]
    assert shown[key].bounds == (0.0, 1.0)
    lo, hi = interval(scores.value.to_numpy(), scores.prompt_index.to_numpy(), shown[key].bounds)
    assert 0.0 <= lo <= hi <= 1.0
