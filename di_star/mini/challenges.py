"""Per-image scores per mini_parti challenge (colour, counting, spatial, shape, composition):
what a generator of the mini world can and cannot do, read from a results store
(`distar lab challenges`, and the over-optimisation report's table).

Statistics: prompts are the units. A prompt's images (k = 0, 1, ... and, when several models
are pooled, their seeds) are averaged first; a challenge's figure is the mean over its prompts
with a 95% studentised bootstrap interval over prompts (evalsuite.metrics.stats.group_means),
clipped to the range the metric's values lie in (MetricInfo.bounds, stored with its scores: the
studentised interval can leave [0, 1] at a handful of prompts; clipping loses no coverage).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from evalsuite.leaderboard.entries import metric_shown
from evalsuite.metrics.stats import group_means



def prompt_challenges(store, bench: str) -> dict[int, str]:
    """prompt_index -> challenge, from the store's prompt metadata of `bench` ('?' if none)."""
    prompts = store.table("prompts", "WHERE bench=?", (bench,))[["prompt_index", "meta_json"]]
    return {int(i): json.loads(m).get("challenge", "?") for i, m in prompts.itertuples(index=False)}


def latest_version(scores: pd.DataFrame, metric: str) -> str | None:
    """The metric's most recently stored version key: a store can hold scores of several
    definitions (e.g. mini_attr_acc before and after its strict checks) that must not be mixed."""
    s = scores[scores.metric == metric]
    if s.empty:
        return None
    return str(s.sort_values("created_at").metric_version.iloc[-1])


def keep_latest_versions(scores: pd.DataFrame) -> pd.DataFrame:
    """Each metric's rows of its latest stored version only (see latest_version)."""
    latest = {m: latest_version(scores, m) for m in scores.metric.unique()}
    return scores[scores.metric_version == scores.metric.map(latest)]


def challenge_means(values: pd.DataFrame, challenge: Mapping[int, str],
                    bounds: tuple[float, float] | None = None) -> pd.DataFrame:
    """Rows (group, n, mean, low, high) per challenge and 'all', from per-image rows
    (prompt_index, value) of one metric version: each prompt's images averaged first; intervals
    clipped to the values' `bounds`, if any."""
    per_prompt = values.groupby("prompt_index").value.mean().dropna()
    return group_means(per_prompt.to_numpy(), [challenge.get(int(i), "?") for i in per_prompt.index],
                       bounds=bounds)


def challenge_table(scores: pd.DataFrame, challenge: Mapping[int, str], metric: str,
                    models: Sequence[tuple[str, Sequence[str]]], version: str | None = None) -> str:
    """A markdown table of `metric` per challenge: one row per (label, stored model names pooled),
    cells 'mean [low, high] (n=prompts)'; `version` defaults to the latest stored one."""
    version = version or latest_version(scores, metric)
    names = sorted(set(challenge.values())) + ["all"]
    lines = ["| model | " + " | ".join(names) + " |", "|---" * (1 + len(names)) + "|"]
    for label, members in models:
        s = scores[scores.model.isin(list(members)) & (scores.metric == metric)
                   & (scores.metric_version == version)]
        cells = {}
        if not s.empty:
            bounds = metric_shown(s)[(metric, version)].bounds
            for r in challenge_means(s, challenge, bounds).itertuples():
                cells[r.group] = (f"{r.mean:.2f} [{r.low:.2f}, {r.high:.2f}] (n={r.n})"
                                  if r.n >= 2 else "n/a")
        lines.append(f"| {label} | " + " | ".join(cells.get(n, "n/a") for n in names) + " |")
    return "\n".join(lines)


def store_report(results: Path, bench: str, metrics: Sequence[str]) -> str:
    """`distar lab challenges`: for each metric, the per-challenge table of every model in the
    store that has its scores on `bench`, with the version key it read."""
    from distar.core.errors import DistarError
    from evalsuite.store import STORE_FILENAME, ResultsStore
    fix = f"Fix: run `distar eval --bench {bench} --metrics {','.join(metrics)} --out {results}` first."
    if not (results / STORE_FILENAME).is_file():
        raise DistarError(f"{results} holds no results store ({STORE_FILENAME}). {fix}")
    store = ResultsStore(results, create=False, readonly=True)
    scores = store.table("model_scores", "WHERE bench=?", (bench,))
    challenge = prompt_challenges(store, bench)
    if scores.empty or not challenge:
        raise DistarError(f"{results} holds no per-image scores on {bench}. {fix}")
    if set(challenge.values()) == {"?"}:
        raise DistarError(f"the prompts of {bench} carry no challenge. Fix: give a benchmark whose "
                          "prompts have one, e.g. --bench mini_parti.")
    out = [f"# Per-challenge means on {bench} ({results})", "",
           "Prompts are the units: each prompt's images averaged, then the mean over a "
           "challenge's prompts with a 95% studentised bootstrap interval over prompts.", ""]
    for metric in metrics:
        version = latest_version(scores, metric)
        if version is None:
            out += [f"## {metric}", "", f"No `{metric}` scores on {bench} in the store.", ""]
            continue
        models = sorted(scores[(scores.metric == metric) & (scores.metric_version == version)]
                        .model.unique())
        out += [f"## {metric}", "", challenge_table(scores, challenge, metric,
                                                    [(m, [m]) for m in models], version),
                "", f"Version: `{version}`", ""]
    return "\n".join(out)
