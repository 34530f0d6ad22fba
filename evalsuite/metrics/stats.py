"""Breakdowns and uncertainty for per-image scores: pure functions of arrays, seeded.

- `bootstrap_ci`: bootstrap interval of a mean, by default the studentised (bootstrap-t) one
  with a small-sample expansion (`studentized_interval`); 'bca' and 'percentile' on request.
  With several images per prompt (`clusters=` prompt ids) it resamples prompts, not images,
  because images of one prompt are correlated and resampling them independently would give too
  narrow an interval. Why studentised: on skewed data the percentile interval under-covers at
  small n (0.90 at n = 50 on a lognormal) and BCa barely helps; docs/estimators.md has the
  coverage table (scripts/interval_coverage.py).
- `group_means`: per group (Parti category / challenge, HPS style) n, mean and interval.
- `paired_test`: two models on the same prompts and seeds: mean difference with its bootstrap
  interval and a p-value (sign-flip permutation, paired bootstrap, Wilcoxon signed-rank, or
  paired t), every one of them with prompts as the independent unit when `clusters=` is given.
- `chunked_means`: means of consecutive chunks (HPSv2's per-style aggregation).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def as_dict(self) -> dict:
        return asdict(self)


def _cluster_index(values: np.ndarray, clusters: Sequence | None):
    """(per-cluster sums, per-cluster counts) so a resample of clusters is two bincounts."""
    if clusters is None:
        return values, np.ones_like(values)
    codes, uniq = pd.factorize(pd.Series(list(clusters)), sort=False)
    return (np.bincount(codes, weights=values, minlength=len(uniq)),
            np.bincount(codes, minlength=len(uniq)).astype(float))


def _resample_index(k: int, n_boot: int, seed: int):
    """Blocks of bootstrap indices [b, k] (seeded; the same draws as bootstrap_means), bounding
    memory at ~32 MB of indices."""
    rng = np.random.default_rng(seed)
    block = max(1, 4_000_000 // k)
    for start in range(0, n_boot, block):
        yield rng.integers(0, k, size=(min(block, n_boot - start), k))


def bootstrap_means(values: Sequence[float], n_boot: int = 10_000, seed: int = 0,
                    clusters: Sequence | None = None) -> np.ndarray:
    """Means of `n_boot` bootstrap resamples (of clusters when given)."""
    values = np.asarray(values, dtype=np.float64)
    if clusters is not None and len(clusters) != len(values):
        raise ValueError(f"{len(values)} values but {len(clusters)} cluster ids")
    return _boot_means(*_cluster_index(values, clusters), n_boot, seed)


def _boot_means(sums: np.ndarray, counts: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    return np.concatenate([sums[i].sum(1) / counts[i].sum(1)
                           for i in _resample_index(len(sums), n_boot, seed)])


INTERVAL_METHODS = ("studentized", "bca", "percentile")
# What each method's interval is, in words, for table legends.
INTERVAL_TEXT = {
    "studentized": "studentised (bootstrap-t) interval with a small-sample expansion, never "
                   "narrower than the t interval",
    "bca": "BCa (bias-corrected and accelerated) bootstrap interval",
    "percentile": "percentile-bootstrap interval",
}


def bootstrap_ci(values: Sequence[float], level: float = 0.95, n_boot: int = 10_000,
                 seed: int = 0, clusters: Sequence | None = None,
                 method: str = "studentized", bounds: Sequence[float] | None = None) -> Interval:
    """Mean and bootstrap interval (`method`: one of INTERVAL_METHODS), resampling clusters when
    given, clipped to `bounds` (the range every value lies in, if any: so does their mean, and
    clipping loses no coverage). Fewer than two units: NaN bounds."""
    if method not in INTERVAL_METHODS:
        raise ValueError(f"Unknown interval '{method}'. Choose one of: "
                         f"{', '.join(INTERVAL_METHODS)}")
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("no values")
    if clusters is not None and len(clusters) != len(values):
        raise ValueError(f"{len(values)} values but {len(clusters)} cluster ids")
    sums, counts = _cluster_index(values, clusters)
    mean = float(values.mean())
    if len(sums) < 2:
        return Interval(mean, float("nan"), float("nan"), len(values), level)
    fn = {"studentized": studentized_interval, "bca": bca_interval,
          "percentile": percentile_interval}[method]
    lo, hi = fn(sums, counts, level, n_boot, seed)
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return Interval(mean, float(lo), float(hi), len(values), level)


def ratio_se(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Standard error of the ratio mean sum(sums) / sum(counts) over the last axis (units):
    the linearised (delta-method) cluster SE, sqrt(k / (k - 1) * sum((S_j - theta C_j)^2)) /
    sum(C_j); with one value per unit it is the usual s / sqrt(n)."""
    k = sums.shape[-1]
    total = counts.sum(-1)
    theta = sums.sum(-1) / total
    resid = sums - theta[..., None] * counts
    return np.sqrt(k / (k - 1) * (resid ** 2).sum(-1)) / total


def percentile_interval(sums, counts, level: float, n_boot: int, seed: int):
    """Quantiles of the bootstrap means."""
    boots = _boot_means(sums, counts, n_boot, seed)
    return tuple(np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]))


def bca_interval(sums, counts, level: float, n_boot: int, seed: int):
    """Efron's BCa: percentile levels moved by the bias correction z0 (share of bootstrap means
    below the estimate) and the acceleration a (skewness of the leave-one-unit-out jackknife)."""
    from scipy.stats import norm
    theta = sums.sum() / counts.sum()
    boots = _boot_means(sums, counts, n_boot, seed)
    z0 = norm.ppf((np.sum(boots < theta) + 0.5 * np.sum(boots == theta)) / len(boots))
    jack = (sums.sum() - sums) / (counts.sum() - counts)
    d = jack.mean() - jack
    denom = 6.0 * (d ** 2).sum() ** 1.5
    a = (d ** 3).sum() / denom if denom > 0 else 0.0
    z = norm.ppf([(1 - level) / 2, (1 + level) / 2])
    levels = norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    return tuple(np.quantile(boots, np.nan_to_num(levels, nan=0.5)))


def studentized_interval(sums, counts, level: float, n_boot: int, seed: int):
    """Bootstrap-t: theta - q * SE with q the quantiles of (theta* - theta) / SE* over resamples
    (SE: `ratio_se`), so the interval follows the data's skew. Two small-sample corrections,
    without which it still under-covers on skewed data at n = 50 (docs/estimators.md):
    the quantiles are expanded by sqrt(k / (k-1)) * t_{k-1} / z (a resample's plug-in spread is
    too small by about sqrt((k-1)/k), and the t quantile is the normal one's small-sample
    price; Hesterberg's expanded percentile applied to bootstrap-t), and neither end comes
    inside the t interval theta +- t_{k-1} SE. Resamples with SE* = 0 (all units equal) are
    dropped; when too few remain the ends are the t interval's."""
    from scipy.stats import norm, t as student_t
    k = len(sums)
    theta = sums.sum() / counts.sum()
    se = float(ratio_se(sums, counts))
    t_stats = []
    for i in _resample_index(k, n_boot, seed):
        s_i, c_i = sums[i], counts[i]
        se_i = ratio_se(s_i, c_i)
        ok = se_i > 0
        t_stats.append((s_i.sum(1)[ok] / c_i.sum(1)[ok] - theta) / se_i[ok])
    t_stats = np.concatenate(t_stats)
    alpha = (1 - level) / 2
    t_q = float(student_t.ppf(1 - alpha, k - 1))
    t_low, t_high = theta - t_q * se, theta + t_q * se
    if len(t_stats) < 0.5 * n_boot or se == 0:
        return t_low, t_high
    expand = np.sqrt(k / (k - 1)) * t_q / norm.ppf(1 - alpha)
    q_low, q_high = expand * np.quantile(t_stats, [alpha, 1 - alpha])
    return min(theta - q_high * se, t_low), max(theta - q_low * se, t_high)


def replicate_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean of a few replications (training seeds
    of a set statistic such as FD, which has no per-prompt values); (x, nan, nan) for one."""
    from scipy.stats import t as student_t
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    h = float(student_t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - h, m + h


def group_means(values: Sequence[float], groups: Sequence, level: float = 0.95,
                n_boot: int = 10_000, seed: int = 0,
                clusters: Sequence | None = None, bounds: Sequence[float] | None = None) -> pd.DataFrame:
    """One row per group (sorted) plus 'all': group, n, mean, low, high (clipped to `bounds`,
    the values' range, if any)."""
    df = pd.DataFrame({"v": np.asarray(values, dtype=np.float64), "g": list(groups),
                       "c": list(clusters) if clusters is not None else range(len(values))})
    rows = []
    for g, sub in sorted(df.groupby("g", sort=False), key=lambda t: str(t[0])):
        ci = bootstrap_ci(sub.v, level, n_boot, seed, sub.c if clusters is not None else None,
                          bounds=bounds)
        rows.append({"group": g, **ci.as_dict()})
    ci = bootstrap_ci(df.v, level, n_boot, seed, df.c if clusters is not None else None, bounds=bounds)
    rows.append({"group": "all", **ci.as_dict()})
    return pd.DataFrame(rows)[["group", "n", "mean", "low", "high", "level"]]


@dataclass(frozen=True)
class PairedResult:
    mean_diff: float   # mean of (a - b) over all pairs
    low: float         # (cluster) bootstrap interval of mean_diff
    high: float
    p_value: float     # two-sided, H0: no difference
    n: int             # pairs
    method: str
    n_clusters: int | None = None  # independent units the p-value treats as such (None: n)

    def as_dict(self) -> dict:
        return asdict(self)


PAIRED_METHODS = ("permutation", "bootstrap", "wilcoxon", "t")
EXACT_PERMUTATION_MAX = 16  # up to 2^16 sign patterns are enumerated: an exact p-value


def _cluster_sums(d: np.ndarray, clusters: Sequence | None) -> tuple[np.ndarray, np.ndarray]:
    """(per-cluster sums, per-cluster counts) of the differences; singletons without clusters."""
    if clusters is not None and len(clusters) != len(d):
        raise ValueError(f"{len(d)} values but {len(clusters)} cluster ids")
    return _cluster_index(d, clusters)


def sign_flip_p(sums: np.ndarray, n_perm: int = 10_000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of T = sum(sums) (the mean difference times N).

    Under H0 each unit's difference (a cluster's sum: all images of one prompt flip together) is
    symmetric about 0, so every sign pattern is equally likely and the p-value is exact: all
    2^k patterns when k <= 16, else `n_perm` random ones with p = (1 + hits) / (1 + n_perm), which
    is never below the exact p's level either (Phipson & Smyth 2010)."""
    k = len(sums)
    obs = abs(sums.sum())
    tol = 1e-9 * (np.abs(sums).sum() + 1e-300)  # ties up to float error count as ties
    if k <= EXACT_PERMUTATION_MAX:
        totals = np.zeros(1)
        for x in sums:  # the 2^k signed totals, doubling once per unit
            totals = np.concatenate([totals + x, totals - x])
        return float(np.mean(np.abs(totals) >= obs - tol))
    rng = np.random.default_rng(seed)
    hits, block = 0, max(1, 2_000_000 // k)
    for start in range(0, n_perm, block):
        signs = rng.choice([-1.0, 1.0], size=(min(block, n_perm - start), k))
        hits += int(np.sum(np.abs(signs @ sums) >= obs - tol))
    return (1 + hits) / (1 + n_perm)


def paired_test(a: Sequence[float], b: Sequence[float], method: str = "permutation",
                level: float = 0.95, n_boot: int = 10_000, seed: int = 0,
                clusters: Sequence | None = None) -> PairedResult:
    """Model A vs model B on the same (prompt, seed) pairs, aligned by position.

    With `clusters=` (prompt ids: images of one prompt are correlated), every method treats a
    prompt, not an image, as the independent unit:
    - 'permutation' (default): sign-flip test of the mean difference, flipping all of a
      prompt's pairs together; exact under H0 (each prompt's differences symmetric about 0),
      at any n (see `sign_flip_p`).
    - 'bootstrap': p = share of resampled mean differences (prompts resampled), centred on the
      observed one, at least as far from 0 as it. Liberal at small n: 6-7% rejections at
      nominal 5% with 15 pairs (di_star/bench/paired_tests.py); prefer 'permutation'.
    - 'wilcoxon' / 't': scipy's signed-rank / one-sample t test of the per-prompt mean
      differences (images of a prompt averaged first).
    The interval is always the (cluster) percentile bootstrap one."""
    if method not in PAIRED_METHODS:
        raise ValueError(f"Unknown paired test '{method}'. Choose one of: "
                         f"{', '.join(PAIRED_METHODS)}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    d = a - b
    n = len(d)
    if n < 2:
        raise ValueError("a paired test needs at least 2 pairs")
    sums, counts = _cluster_sums(d, clusters)
    if len(sums) < 2:
        raise ValueError("a paired test needs at least 2 prompts (clusters)")
    boots = bootstrap_means(d, n_boot, seed, clusters)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    obs = float(d.mean())
    unit_means = sums / counts  # per-prompt mean differences (the pairs themselves without clusters)
    if np.all(d == 0):
        p = 1.0
    elif method == "permutation":
        p = sign_flip_p(sums, n_boot, seed)
    elif method == "bootstrap":
        p = (1 + np.sum(np.abs(boots - obs) >= abs(obs))) / (n_boot + 1)
    elif method == "wilcoxon":
        from scipy.stats import wilcoxon
        p = 1.0 if np.all(unit_means == 0) else float(wilcoxon(unit_means).pvalue)
    else:
        from scipy.stats import ttest_1samp
        p = float(ttest_1samp(unit_means, 0.0).pvalue) if len(unit_means) > 1 else float("nan")
    return PairedResult(obs, float(lo), float(hi), float(p), n, method,
                        None if clusters is None else len(sums))


def pair_scores(a: pd.DataFrame, b: pd.DataFrame, on: Sequence[str] = ("prompt_index", "k"),
                value: str = "value") -> pd.DataFrame:
    """Inner-join two score tables on the keys that identify the same prompt and seed."""
    m = a.merge(b, on=list(on), suffixes=("_a", "_b"))
    return m[[*on, f"{value}_a", f"{value}_b"]]


def chunked_means(values: Sequence[float], chunk: int) -> np.ndarray:
    """Means of consecutive chunks values[0:chunk], values[chunk:2 chunk], ... (last may be short)."""
    values = list(values)
    return np.array([np.mean(values[i:i + chunk]) for i in range(0, len(values), chunk)])
