"""Breakdowns and uncertainty for per-image scores: pure functions of arrays, seeded.

- `bootstrap_ci`: percentile bootstrap interval of a mean. With several images per prompt
  (`clusters=` prompt ids) it resamples prompts, not images, because images of one prompt are
  correlated and resampling them independently would give too narrow an interval.
- `group_means`: per group (Parti category / challenge, HPS style) n, mean and interval.
- `paired_test`: two models on the same prompts and seeds: mean difference with its bootstrap
  interval and a p-value (paired bootstrap, Wilcoxon signed-rank, or paired t).
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


def bootstrap_means(values: Sequence[float], n_boot: int = 10_000, seed: int = 0,
                    clusters: Sequence | None = None) -> np.ndarray:
    """Means of `n_boot` bootstrap resamples (of clusters when given)."""
    values = np.asarray(values, dtype=np.float64)
    if clusters is not None and len(clusters) != len(values):
        raise ValueError(f"{len(values)} values but {len(clusters)} cluster ids")
    sums, counts = _cluster_index(values, clusters)
    rng = np.random.default_rng(seed)
    k = len(sums)
    block = max(1, 4_000_000 // k)  # resamples per step, bounding memory at ~32 MB of indices
    out = np.empty(n_boot)
    for start in range(0, n_boot, block):
        idx = rng.integers(0, k, size=(min(block, n_boot - start), k))
        out[start:start + len(idx)] = sums[idx].sum(1) / counts[idx].sum(1)
    return out


def bootstrap_ci(values: Sequence[float], level: float = 0.95, n_boot: int = 10_000,
                 seed: int = 0, clusters: Sequence | None = None) -> Interval:
    """Mean and percentile-bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("no values")
    if len(values) == 1:
        v = float(values[0])
        return Interval(v, float("nan"), float("nan"), 1, level)
    boots = bootstrap_means(values, n_boot, seed, clusters)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(values.mean()), float(lo), float(hi), len(values), level)


def group_means(values: Sequence[float], groups: Sequence, level: float = 0.95,
                n_boot: int = 10_000, seed: int = 0,
                clusters: Sequence | None = None) -> pd.DataFrame:
    """One row per group (sorted) plus 'all': group, n, mean, low, high."""
    df = pd.DataFrame({"v": np.asarray(values, dtype=np.float64), "g": list(groups),
                       "c": list(clusters) if clusters is not None else range(len(values))})
    rows = []
    for g, sub in sorted(df.groupby("g", sort=False), key=lambda t: str(t[0])):
        ci = bootstrap_ci(sub.v, level, n_boot, seed, sub.c if clusters is not None else None)
        rows.append({"group": g, **ci.as_dict()})
    ci = bootstrap_ci(df.v, level, n_boot, seed, df.c if clusters is not None else None)
    rows.append({"group": "all", **ci.as_dict()})
    return pd.DataFrame(rows)[["group", "n", "mean", "low", "high", "level"]]


@dataclass(frozen=True)
class PairedResult:
    mean_diff: float   # mean of (a - b)
    low: float         # bootstrap interval of mean_diff
    high: float
    p_value: float     # two-sided, H0: no difference
    n: int
    method: str

    def as_dict(self) -> dict:
        return asdict(self)


def paired_test(a: Sequence[float], b: Sequence[float], method: str = "bootstrap",
                level: float = 0.95, n_boot: int = 10_000, seed: int = 0,
                clusters: Sequence | None = None) -> PairedResult:
    """Model A vs model B on the same (prompt, seed) pairs, aligned by position.

    method 'bootstrap': p = share of resampled mean differences, centred on the observed one
    (the null distribution), at least as far from 0 as the observed difference; 'wilcoxon':
    scipy's signed-rank test; 't': scipy's paired t-test. The interval is always the (cluster)
    bootstrap one."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    d = a - b
    n = len(d)
    if n < 2:
        raise ValueError("a paired test needs at least 2 pairs")
    boots = bootstrap_means(d, n_boot, seed, clusters)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    obs = float(d.mean())
    if method == "bootstrap":
        p = (1 + np.sum(np.abs(boots - obs) >= abs(obs))) / (n_boot + 1)
    elif method == "wilcoxon":
        from scipy.stats import wilcoxon
        p = 1.0 if np.all(d == 0) else float(wilcoxon(a, b).pvalue)
    elif method == "t":
        from scipy.stats import ttest_rel
        p = 1.0 if np.all(d == 0) else float(ttest_rel(a, b).pvalue)
    else:
        raise ValueError(f"Unknown paired test '{method}'. Choose one of: bootstrap, wilcoxon, t")
    return PairedResult(obs, float(lo), float(hi), float(p), n, method)


def pair_scores(a: pd.DataFrame, b: pd.DataFrame, on: Sequence[str] = ("prompt_index", "k"),
                value: str = "value") -> pd.DataFrame:
    """Inner-join two score tables on the keys that identify the same prompt and seed."""
    m = a.merge(b, on=list(on), suffixes=("_a", "_b"))
    return m[[*on, f"{value}_a", f"{value}_b"]]


def chunked_means(values: Sequence[float], chunk: int) -> np.ndarray:
    """Means of consecutive chunks values[0:chunk], values[chunk:2 chunk], ... (last may be short)."""
    values = list(values)
    return np.array([np.mean(values[i:i + chunk]) for i in range(0, len(values), chunk)])
