"""Reading the results store into typed rows: an `Entry` is one model recipe (recipe_hash) on
one benchmark version, with its runs, image and score rows and its benchmark's prompt metadata,
all read from `results.sqlite` and nothing else (no installed benchmark, registry, cache or
environment variable), so a results folder copied to another machine gives the same tables.

Several `distar eval` invocations of the same recipe (resumes, --limit growing) add up to one
entry, exactly as their image and score rows do in the store. Cells are `Summary`s: a measured
number, its bootstrap interval and what it covers.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from evalsuite.benchmarks import HPS_CHUNK
from evalsuite.leaderboard.markdown import Shown, column_id
from evalsuite.metrics import stats
from evalsuite.store import ResultsStore

N_BOOTSTRAP, BOOTSTRAP_SEED, CI_LEVEL = 1000, 0, 0.95
# The interval of a cell's mean (stats.INTERVAL_METHODS): the studentised one covers at small n
# on skewed data, where the percentile one does not (docs/estimators.md).
INTERVAL = "studentized"


# Statistics: evalsuite.metrics.stats does the resampling; these adapt it to table cells.
def interval(values: np.ndarray, prompts: np.ndarray, bounds=None) -> tuple[float, float] | None:
    """95% bootstrap interval (INTERVAL) of the mean image score, resampling prompts (a
    prompt's images stay together), clipped to the values' `bounds` if they have any. None with
    fewer than two prompts."""
    if len(np.unique(prompts)) < 2:
        return None
    ci = stats.bootstrap_ci(values, CI_LEVEL, N_BOOTSTRAP, BOOTSTRAP_SEED, clusters=prompts,
                            method=INTERVAL, bounds=bounds)
    return ci.low, ci.high


def stratified_interval(groups: Sequence[tuple[np.ndarray, np.ndarray]], by_size: bool = False
                        ) -> tuple[float, float] | None:
    """Interval of the mean of group means: prompts resampled within each group, independently
    across groups. `groups`: (values, prompt ids) pairs. `by_size`: weight each group by its
    number of values, i.e. the interval of the mean of all values (HPSv2's 'Average')."""
    if not groups or any(len(np.unique(p)) < 2 for _, p in groups):
        return None
    weights = np.array([len(v) for v, _ in groups] if by_size else [1] * len(groups), float)
    boots = np.average([stats.bootstrap_means(v, N_BOOTSTRAP, BOOTSTRAP_SEED + j, clusters=p)
                        for j, (v, p) in enumerate(groups)], axis=0, weights=weights)
    lo, hi = np.quantile(boots, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2])
    return float(lo), float(hi)


def style_aggregate(values: Sequence[float], styles: Sequence[str]) -> dict[str, float]:
    """The one per-style aggregation of every report (HPSv2's `evaluate_benchmark`, computed by
    evalsuite.metrics.hps.hps_benchmark_summary): per style, the mean of the means of
    consecutive 80-image chunks of its values in benchmark order; 'average': the mean over all
    values (not the mean of the style scores). `values` in benchmark order, one style each."""
    from evalsuite.metrics.hps import hps_benchmark_summary
    s = hps_benchmark_summary(values, styles, scale=1.0, chunk=HPS_CHUNK)
    out = {k: v["mean"] for k, v in s.items() if k != "Average"}
    out["average"] = s["Average"]["mean"]
    return out


def hps_style_score(values_in_prompt_order: np.ndarray) -> float:
    """One style's score under `style_aggregate` (equal to the plain mean when the style is
    complete, 800 = 10 x 80)."""
    return style_aggregate(values_in_prompt_order, ["style"] * len(values_in_prompt_order))["style"]


# Prompt metadata ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptMeta:
    meta: dict[int, dict]               # prompt index -> metadata (keys lower-case)
    group_keys: tuple[str, ...] = ()    # metadata keys to break scores down by
    missing: str | None = None          # why there is no metadata


def read_prompt_meta(store: ResultsStore, bench: str, bench_version: str) -> PromptMeta:
    """A benchmark version's per-prompt metadata (Parti: category/challenge; HPSv2: style), as
    `distar eval` recorded it in the store (evalsuite.generate.record_benchmark)."""
    fix = (f"Fix: rerun `distar eval --bench {bench} --model MODEL --out {store.root}` for any "
           "model already evaluated there: finished images are not generated again, and it "
           "records the metadata")
    if not store.has_table("benchmarks"):
        return PromptMeta({}, (), f"{store.path} was written by an older distar, which did not "
                                  f"record prompt metadata. {fix}")
    b = store.table("benchmarks", "WHERE bench=? AND bench_version=?", (bench, bench_version))
    if b.empty:
        return PromptMeta({}, (), f"{store.path} has no prompt metadata of {bench} version "
                                  f"{bench_version} (its runs predate recording it). {fix}")
    keys = tuple(json.loads(b.group_keys_json.iloc[0]))
    rows = store.table("prompts", "WHERE bench=? AND bench_version=? ORDER BY prompt_index",
                       (bench, bench_version))
    return PromptMeta({int(i): json.loads(m) for i, m in zip(rows.prompt_index, rows.meta_json)},
                      keys)


# Entries -----------------------------------------------------------------------------------
@dataclass
class Summary:
    """One cell: a measured number and what it covers."""
    value: float
    ci: tuple[float, float] | None = None
    prompts: frozenset[int] = frozenset()   # prompts scored (per-image metrics)
    n_images: int | None = None             # images in the set (set metrics)
    kind: str = "image"                     # 'image' | 'set' | 'time'
    device: str | None = None               # 'time' only
    note: str | None = None                 # shown after the value, e.g. 'partial timing: 4/12 images'


@dataclass
class Entry:
    """One recipe on one benchmark version: its metadata, runs, images, scores and prompts."""
    recipe_hash: str
    bench: str
    bench_version: str
    name: str
    recipe: dict
    runs: pd.DataFrame
    image_prompts: frozenset[int]
    n_prompts_total: int | None
    scores: pd.DataFrame            # this entry's rows of table scores
    set_scores: pd.DataFrame
    prompt_meta: PromptMeta = field(default_factory=lambda: PromptMeta({}, ()))
    label: str = ""                 # unique row label within its table (set by label_entries)
    # (metric, version) -> how the store's scores say it is shown (one dict per store)
    shown: dict[tuple[str, str], Shown] = field(default_factory=dict)

    def meta(self, key: str) -> Any:
        """A recipe field (steps, params, arch_type, weights, ...) as the runs stored it."""
        value = find_key(self.recipe, key)
        return value if value not in (None, "") else None

    @property
    def registered_as(self) -> str | None:
        """The registry name whose registered recipe this is, as `distar eval` recorded it
        (None: another recipe, or runs from before it was recorded)."""
        return self.recipe.get("registered_as")

    @property
    def alphas(self) -> tuple[float, float] | None:
        a_rew, a_cfg = find_key(self.recipe, "alpha_rew"), find_key(self.recipe, "alpha_cfg")
        if a_rew is None or a_cfg is None:
            return None
        return float(a_rew), float(a_cfg)

    def shown_as(self, metric: str, version: str | None = None) -> Shown:
        """How `metric` (at `version`; None: any version the store has) is shown."""
        if (metric, version) in self.shown:
            return self.shown[(metric, version)]
        same = [s for (m, _), s in sorted(self.shown.items()) if m == metric]
        return same[0] if version is None and same else Shown.from_info(metric, None)

    def metric_keys(self) -> list[tuple[str, str]]:
        keys = set(zip(self.scores.metric, self.scores.metric_version))
        keys |= set(zip(self.set_scores.metric, self.set_scores.metric_version))
        return sorted(keys)

    def image_scores(self, metric: str, version: str) -> pd.DataFrame:
        """This metric version's per-image rows, in benchmark order (prompt_index, k)."""
        s = self.scores[(self.scores.metric == metric) & (self.scores.metric_version == version)]
        return s.sort_values(["prompt_index", "k"])[["prompt_index", "k", "value"]]

    def summary(self, metric: str, version: str, prompts: Sequence[int] | None = None
                ) -> Summary | None:
        """The metric's cell: the mean of its per-image values with a prompt-bootstrap interval
        (of `prompts` only, when given), else its set value. A set metric that also stored
        per-image values (intra-prompt diversity, evalsuite.metrics.runner) is shown per image:
        their mean is its set value when every prompt has as many images, and only per-image
        values give an interval and restrict to the prompts other rows share."""
        s = self.image_scores(metric, version)
        if s.empty:
            sets = self.set_scores[(self.set_scores.metric == metric)
                                   & (self.set_scores.metric_version == version)]
            if len(sets):
                row = sets.iloc[0]
                return Summary(float(row.value), n_images=int(row.n_images), kind="set")
        if prompts is not None:
            s = s[s.prompt_index.isin(list(prompts))]
        if s.empty:
            return None
        values, ids = s.value.to_numpy(np.float64), s.prompt_index.to_numpy()
        return Summary(float(values.mean()), interval(values, ids, self.shown_as(metric, version).bounds),
                       prompts=frozenset(int(i) for i in ids))

    def style_summaries(self, metric: str, version: str, styles: Sequence[str],
                        scale: float = 1.0) -> dict[str, Summary | None]:
        """Per style (prompt metadata key 'style', or the benchmark's first group key) and
        'average', under `style_aggregate`: values x `scale`, intervals resampling prompts (the
        average's within each style). A style without scores is None, and so is the average
        unless every style has scores."""
        key = style_key(self.prompt_meta)
        of = {i: str(m.get(key)) for i, m in self.prompt_meta.meta.items()} if key else {}
        scores = self.image_scores(metric, version)
        scores = scores[[of.get(int(i)) in styles for i in scores.prompt_index]]
        values = scale * scores.value.to_numpy(np.float64)
        ids = scores.prompt_index.to_numpy()
        labels = [of[int(i)] for i in ids]
        agg = style_aggregate(values, labels) if len(values) else {}
        bounds = self.shown_as(metric, version).bounds
        bounds = tuple(sorted((scale * bounds[0], scale * bounds[1]))) if bounds else None
        out: dict[str, Summary | None] = {}
        groups = []
        for style in styles:
            mask = np.array([lab == style for lab in labels], bool)
            if not mask.any():
                out[style] = None
                continue
            out[style] = Summary(agg[style], interval(values[mask], ids[mask], bounds),
                                 prompts=frozenset(int(i) for i in ids[mask]))
            groups.append((values[mask], ids[mask]))
        out["average"] = (Summary(agg["average"], stratified_interval(groups, by_size=True),
                                  prompts=frozenset(int(i) for i in ids))
                          if all(out[s] is not None for s in styles) else None)
        return out

    def latency(self) -> Summary | None:
        """The latest complete run whose timing covered all its images; else the latest timed
        run, marked partial (a resume times only the batches it regenerated)."""
        r = self.runs[self.runs.latency_s_per_10.notna()]
        if r.empty:
            return None
        r = r.sort_values(["started_at", "run_id"])
        if "n_images_timed" in r:  # stores written before the column existed: no marker
            timed = r.n_images_timed
            full = r[(r.status == "complete") & (timed.isna() | (timed >= r.n_images_expected))]
            if len(full):
                last = full.iloc[-1]
            else:
                last = r.iloc[-1]
                note = (f"partial timing: {int(last.n_images_timed)}/{int(last.n_images_expected)} "
                        "images" if pd.notna(last.n_images_timed) else "partial timing")
                return Summary(float(last.latency_s_per_10), kind="time", device=str(last.device),
                               note=note)
        else:
            last = r.iloc[-1]
        return Summary(float(last.latency_s_per_10), kind="time", device=str(last.device))

    def coverage(self) -> dict[str, int]:
        """Prompts covered by images and by each metric (per-image metrics only)."""
        cov = {"images": len(self.image_prompts)}
        for m, v in self.metric_keys():
            n = self.image_scores(m, v).prompt_index.nunique()
            if n:
                cov[column_id(m, v)] = n
        return cov

    @property
    def min_prompts(self) -> int:
        cov = self.coverage()
        counts = [c for k, c in cov.items() if k != "images" or c > 0]
        return min(counts) if counts else 0

    @property
    def is_partial(self) -> bool:
        return self.n_prompts_total is not None and self.min_prompts < self.n_prompts_total


def style_key(pm: PromptMeta) -> str | None:
    """The metadata key a per-style table groups by: 'style', else the first group key."""
    return "style" if "style" in pm.group_keys else (pm.group_keys[0] if pm.group_keys else None)


def find_key(d: Any, key: str, depth: int = 3) -> Any:
    """`d[key]`, else the first match one or two nesting levels down (sorted, deterministic)."""
    if not isinstance(d, dict) or depth == 0:
        return None
    if key in d:
        return d[key]
    for k in sorted(d):
        found = find_key(d[k], key, depth - 1)
        if found is not None:
            return found
    return None


def load_entries(store: ResultsStore, show_failed: bool = False) -> list[Entry]:
    """One entry per (recipe, benchmark version). Runs that ended 'failed' (an error, or a
    process killed mid-run) are dropped, and so is an entry that has only failed runs, unless
    `show_failed` (then its label says so)."""
    runs, images = store.table("runs"), store.table("images")
    failed_keys: set[tuple[str, str, str]] = set()
    if not show_failed and len(runs):
        failed = runs[runs.status == "failed"]
        ok = runs[runs.status != "failed"]
        failed_keys = set(map(tuple, failed[["recipe_hash", "bench", "bench_version"]]
                              .itertuples(index=False, name=None))) - \
            set(map(tuple, ok[["recipe_hash", "bench", "bench_version"]]
                    .itertuples(index=False, name=None)))
        runs = ok
    scores, set_scores = store.table("scores"), store.table("set_scores")
    key = ["recipe_hash", "bench", "bench_version"]
    keys: set[tuple[str, str, str]] = set()
    for df in (runs, images, scores, set_scores):
        keys |= set(map(tuple, df[key].itertuples(index=False, name=None)))

    def rows(df: pd.DataFrame, k: tuple[str, str, str]) -> pd.DataFrame:
        return df[(df.recipe_hash == k[0]) & (df.bench == k[1]) & (df.bench_version == k[2])]

    prompt_meta: dict[tuple[str, str], PromptMeta] = {}
    shown = metric_shown(scores, set_scores)
    entries = []
    for k in sorted(keys - failed_keys):
        r = rows(runs, k).sort_values(["started_at", "run_id"])
        recipe: dict = {}
        for text in r.recipe_json:
            recipe = json.loads(text) if text else {}  # the latest run's recipe
        imgs = rows(images, k)
        name = recipe.get("label") or recipe.get("name") or (r.model.iloc[-1] if len(r) else None) \
            or (imgs.model.iloc[0] if len(imgs) else k[0])
        total = r.n_prompts_total.dropna()
        if k[1:] not in prompt_meta:
            prompt_meta[k[1:]] = read_prompt_meta(store, k[1], k[2])
        entries.append(Entry(
            recipe_hash=k[0], bench=k[1], bench_version=k[2], name=str(name), recipe=recipe,
            runs=r, image_prompts=frozenset(int(i) for i in imgs.prompt_index),
            n_prompts_total=int(total.max()) if len(total) else None,
            scores=rows(scores, k), set_scores=rows(set_scores, k),
            prompt_meta=prompt_meta[k[1:]], shown=shown))
    return entries


def metric_shown(*score_tables: pd.DataFrame) -> dict[tuple[str, str], Shown]:
    """(metric, version) -> Shown, from the MetricInfo each metric version's latest score
    recorded in its meta_json (evalsuite.metrics.runner writes it with every score)."""
    cols = ["metric", "metric_version", "meta_json", "created_at"]
    tables = [t[cols] for t in score_tables if len(t)]
    if not tables:
        return {}
    last = pd.concat(tables, ignore_index=True).sort_values(
        "created_at", na_position="first", kind="stable").drop_duplicates(
        ["metric", "metric_version"], keep="last")
    return {(m, v): Shown.from_info(m, json.loads(meta).get("info") if isinstance(meta, str)
                                    and meta else None)
            for m, v, meta in zip(last.metric, last.metric_version, last.meta_json)}


# Grouping and row labels -----------------------------------------------------------------------
def bench_order(bench: str, benches: Sequence[str] = ()) -> tuple[int, str]:
    return (benches.index(bench) if bench in benches else len(benches), bench)


def bench_groups(entries: list[Entry], benches: Sequence[str] = ()
                 ) -> list[tuple[str, str, list[Entry]]]:
    """(bench, version, entries) per benchmark version: `benches` first in that order, then
    the others by name; entries in the paper's order (sort_entries)."""
    keys = sorted({(e.bench, e.bench_version) for e in entries},
                  key=lambda k: (bench_order(k[0], benches), k[1]))
    return [(b, v, sort_entries([e for e in entries if (e.bench, e.bench_version) == (b, v)]))
            for b, v in keys]


def sort_entries(entries: list[Entry]) -> list[Entry]:
    """The paper's order: multi-step models first (more steps first), then by name."""
    return sorted(entries, key=lambda e: (-(e.meta("steps") or 0), e.name, e.recipe_hash))


def label_entries(entries: list[Entry]) -> None:
    """Row labels: model name, recipe hash where one name has several recipes, weights other
    than pretrained, and the partial marker with the prompts actually covered."""
    counts = Counter(e.name for e in entries)
    for e in entries:
        label = e.name
        if counts[e.name] > 1:
            label += f" #{e.recipe_hash[:8]}"
        weights = e.meta("weights")
        if weights not in (None, "pretrained"):
            label += f" (weights: {weights})"
        if len(e.runs) and "failed" in set(e.runs.status) and "complete" not in set(e.runs.status):
            label += " (failed run)"
        if e.is_partial:
            label += f" (partial: {e.min_prompts}/{e.n_prompts_total} prompts)"
        elif e.n_prompts_total is None:
            label += " (coverage unknown)"
        e.label = label
