"""Markdown leaderboards and plots regenerated from the results store (`distar leaderboard`).

Every number written here was measured by `distar eval` and read back from `results.sqlite`;
the paper's own numbers go only to `paper_reported.md` (from evalsuite.paper_numbers).
Output is a pure function of the store: rows and columns are sorted, dates come from the stored
runs, bootstrap resampling uses a fixed seed and PNGs carry no timestamp, so regenerating with
no new results rewrites byte-identical files.

The unit of a table row is an *entry*: one model recipe (recipe_hash) on one benchmark version.
Several `distar eval` invocations of the same recipe (resumes, --limit growing) add up to one
entry, exactly as their image and score rows do in the store.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from distar.core.errors import DistarError
from evalsuite import paper_numbers
from evalsuite.benchmarks import HPS_CHUNK, HPS_STYLES
from evalsuite.metrics import stats
from evalsuite.store import STORE_FILENAME, ResultsStore

# Metric presentation: label, higher_is_better (None: unknown, no arrow and no bold), decimals.
METRICS_SHOWN: dict[str, tuple[str, bool | None, int]] = {
    "imagereward": ("ImageReward", True, 3),
    "aesthetic": ("Aesthetic", True, 2),
    "pickscore": ("PickScore", True, 4),
    "pickscore_logit": ("PickScore logit", True, 2),
    "clip": ("CLIP", True, 2),
    "hpsv2": ("HPSv2.0", True, 2),
    "hpsv21": ("HPSv2.1", True, 2),
    "hpsv2_noaa": ("HPSv2.0 noaa", True, 2),
    "hpsv21_noaa": ("HPSv2.1 noaa", True, 2),
    "fid": ("FID", False, 2),
    "kid": ("KID", False, 4),
}
TABLE1_METRICS = ("imagereward", "aesthetic", "pickscore", "clip")  # the paper's column order
TABLE1_BENCHES = ("parti", "coco30k")                               # upper part, lower part
HPS_BENCH = "hpsv2"
HPS_METRICS = ("hpsv21", "hpsv2")
HPS_SCALE = 100.0           # ... of 100 x the per-image cosine the store holds (the paper's unit)
PREFERENCE_FOR_PLOT = ("pickscore", "imagereward", "hpsv21", "aesthetic")
N_BOOTSTRAP, BOOTSTRAP_SEED, CI_LEVEL = 1000, 0, 0.95
MISSING = "—"

TABLE1_FILE = "table1_parti_coco.md"
TABLE2_FILE = "table2_ablation.md"
TABLE3_FILE = "table3_hpsv21.md"
BREAKDOWN_FILE = "category_breakdown.md"
PAPER_FILE = "paper_reported.md"
LATENCY_PLOT = "quality_vs_latency_{bench}.png"
ABLATION_PLOT = "ablation_reward_vs_fidelity.png"
PAIRED_FILE = "paired_tests.md"


@dataclass(frozen=True)
class Suite:
    """Which benchmarks and metrics fill the paper's tables. 'paper': Parti / COCO-30K / HPSv2
    with the paper's four metrics; 'mini': the mini world's benchmarks (evalsuite.mini), every
    measured metric, files prefixed 'mini_' so both sets live side by side in leaderboards/."""
    name: str
    prefix: str                                  # file-name prefix
    table1_benches: tuple[str, ...]              # upper part, lower part
    table1_metrics: tuple[str, ...]              # fixed leading columns (others follow by name)
    fid_bench: str                               # its Table 1 section also leads with FID
    style_bench: str                             # Table 3's benchmark (per-style scores)
    ablation_bench: str                          # Table 2's plot
    plot_metrics: tuple[str, ...]                # y of the plots: the first one measured
    fidelity_metrics: tuple[str, ...]            # x of the ablation plot: the first one measured


SUITES = {
    "paper": Suite("paper", "", TABLE1_BENCHES, TABLE1_METRICS, "coco30k", HPS_BENCH, "parti",
                   PREFERENCE_FOR_PLOT, ("clip",)),
    "mini": Suite("mini", "mini_", ("mini_parti", "mini_coco"), (), "mini_coco", "mini_hps", "mini_parti",
                  ("mini_pickscore", "mini_gold"), ("mini_clip", "mini_attr_acc")),
}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise DistarError(f"Unknown leaderboard suite '{name}'. Choose one of: {', '.join(SUITES)}")
    return SUITES[name]


# Statistics: evalsuite.metrics.stats does the resampling; these adapt it to table cells.
def interval(values: np.ndarray, prompts: np.ndarray) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of the mean image score, resampling prompts (a prompt's
    images stay together). None with fewer than two prompts."""
    if len(np.unique(prompts)) < 2:
        return None
    ci = stats.bootstrap_ci(values, CI_LEVEL, N_BOOTSTRAP, BOOTSTRAP_SEED, clusters=prompts)
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


def hps_style_score(values_in_prompt_order: np.ndarray) -> float:
    """HPSv2's benchmark aggregation of one style: the mean of the means of consecutive 80-image
    chunks (equal to the plain mean when the style is complete, 800 = 10 x 80)."""
    return float(stats.chunked_means(values_in_prompt_order, HPS_CHUNK).mean())


# Prompt metadata ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptMeta:
    meta: dict[int, dict]               # prompt index -> metadata (keys lower-case)
    group_keys: tuple[str, ...] = ()    # metadata keys to break scores down by
    missing: str | None = None          # why there is no metadata


def prompt_meta(bench: str, bench_version: str, source: str | None = None) -> PromptMeta:
    """Per-prompt metadata (Parti: category/challenge; HPSv2: style) from evalsuite.benchmarks:
    the single place where the leaderboard learns about prompts beyond what the store holds.
    `source`: the prompt file of a `file:` benchmark (stored with its runs)."""
    try:
        from evalsuite.benchmarks import load_benchmark
    except ImportError as e:
        return PromptMeta({}, (), f"evalsuite.benchmarks is not importable ({e})")
    try:
        b = load_benchmark(f"file:{source}" if source and bench.startswith("file-") else bench)
    except DistarError as e:
        return PromptMeta({}, (), str(e).splitlines()[0])
    if str(b.version) != str(bench_version):
        return PromptMeta({}, (), f"the stored results are for {bench} version {bench_version}, "
                                  f"the installed benchmark is version {b.version}")
    meta = {int(p.index): {str(k).lower(): v for k, v in (p.meta or {}).items()}
            for p in b.prompts}
    return PromptMeta(meta, tuple(k.lower() for k in b.group_keys))


# Reading the store -----------------------------------------------------------------------------
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
    """One recipe on one benchmark version: its metadata, runs, images and scores."""
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
    label: str = ""                 # unique row label within its table (set by _label_entries)

    # Metadata: recipe_json first (works on stores made elsewhere), the model registry second.
    def meta(self, key: str) -> Any:
        value = _find_key(self.recipe, key)
        if value in (None, ""):
            value = getattr(_registry_spec(self.name), key, None)
        return value if value not in (None, "") else None

    @property
    def alphas(self) -> tuple[float, float] | None:
        a_rew, a_cfg = _find_key(self.recipe, "alpha_rew"), _find_key(self.recipe, "alpha_cfg")
        if a_rew is None or a_cfg is None:
            return None
        return float(a_rew), float(a_cfg)

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
        s = self.set_scores[(self.set_scores.metric == metric)
                            & (self.set_scores.metric_version == version)]
        if len(s):
            row = s.iloc[0]
            return Summary(float(row.value), n_images=int(row.n_images), kind="set")
        s = self.image_scores(metric, version)
        if prompts is not None:
            s = s[s.prompt_index.isin(list(prompts))]
        if s.empty:
            return None
        values, ids = s.value.to_numpy(np.float64), s.prompt_index.to_numpy()
        return Summary(float(values.mean()), interval(values, ids),
                       prompts=frozenset(int(i) for i in ids))

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
                cov[_column_id(m, v)] = n
        return cov

    @property
    def min_prompts(self) -> int:
        cov = self.coverage()
        counts = [c for k, c in cov.items() if k != "images" or c > 0]
        return min(counts) if counts else 0

    @property
    def is_partial(self) -> bool:
        return self.n_prompts_total is not None and self.min_prompts < self.n_prompts_total


def _find_key(d: Any, key: str, depth: int = 3) -> Any:
    """`d[key]`, else the first match one or two nesting levels down (sorted, deterministic)."""
    if not isinstance(d, dict) or depth == 0:
        return None
    if key in d:
        return d[key]
    for k in sorted(d):
        found = _find_key(d[k], key, depth - 1)
        if found is not None:
            return found
    return None


def _registry_spec(name: str):
    try:
        from evalsuite.models import MODELS
    except ImportError:
        return None
    return MODELS.get(name) if name in MODELS else None


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
        entries.append(Entry(
            recipe_hash=k[0], bench=k[1], bench_version=k[2], name=str(name), recipe=recipe,
            runs=r, image_prompts=frozenset(int(i) for i in imgs.prompt_index),
            n_prompts_total=int(total.max()) if len(total) else None,
            scores=rows(scores, k), set_scores=rows(set_scores, k)))
    return entries


# Formatting -------------------------------------------------------------------------------------
def fmt_number(x: float, decimals: int) -> str:
    """`x` to `decimals` places, never "-0.00" (a rounded negative zero prints as 0.00)."""
    s = f"{x:.{decimals}f}"
    return s[1:] if re.fullmatch(r"-0\.?0*", s) else s


def _metric_info(metric: str) -> tuple[str, bool | None, int]:
    return METRICS_SHOWN.get(metric, (metric, None, 3))


def _arrow(higher: bool | None) -> str:
    return "" if higher is None else (" ↑" if higher else " ↓")


def _short_version(version: str) -> str:
    return version.split("|", 1)[0].strip() or version


def _column_id(metric: str, version: str) -> str:
    return f"{metric} ({_short_version(version)})"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]],
             align: Sequence[str] | None = None) -> str:
    align = align or ["l"] + ["r"] * (len(header) - 1)
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
             "|" + "|".join(rule[a] for a in align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _params_billion(params: Any) -> float | None:
    m = re.fullmatch(r"\s*([\d.]+)\s*([BMK]?)\s*", str(params or ""), flags=re.I)
    if not m:
        return None
    scale = {"B": 1.0, "M": 1e-3, "K": 1e-6, "": 1e-9}[m.group(2).upper()]
    return float(m.group(1)) * scale


@dataclass
class Column:
    header: str
    cells: list[Summary | None]
    decimals: int
    higher: bool | None
    bold: list[bool] = field(default_factory=list)

    def __post_init__(self):
        self.bold = _best(self.cells, self.decimals, self.higher)

    def render(self, i: int) -> str:
        c = self.cells[i]
        if c is None:
            return MISSING
        v = fmt_number(c.value, self.decimals)
        text = f"**{v}**" if self.bold[i] else v
        if c.ci is not None:
            text += f" [{fmt_number(c.ci[0], self.decimals)}, {fmt_number(c.ci[1], self.decimals)}]"
        if c.note:
            text += f" ({c.note})"
        return text


@dataclass
class ReportedColumn:
    """The paper's number for a row's model, beside the measured column: as printed, never bold."""
    header: str
    cells: list[str | None]

    def render(self, i: int) -> str:
        return self.cells[i] if self.cells[i] is not None else MISSING


def _reported_cell(e: Entry, key: str) -> str | None:
    """Only for a registry model evaluated with its pretrained weights and the registered recipe
    (a recipe the registry no longer has, or random weights, is not the paper's model)."""
    spec = _registry_spec(e.name)
    if spec is None or e.meta("weights") not in (None, "pretrained") or spec.recipe_hash != e.recipe_hash:
        return None
    row = paper_numbers.reported_row(e.name, e.bench)
    return row.values.get(key) if row is not None else None


def _with_reported(es: list[Entry], columns: list, keys: list[str | None]) -> list:
    """Insert a '(paper)' column after the last measured column of each key (metric or HPS
    style) the paper reports for these rows' models."""
    out = []
    for i, (col, key) in enumerate(zip(columns, keys)):
        out.append(col)
        last_of_key = key is not None and (i + 1 == len(keys) or keys[i + 1] != key)
        if last_of_key and any(_reported_cell(e, key) for e in es):
            label = col.header.split(" (")[0]
            out.append(ReportedColumn(f"{label} (paper)", [_reported_cell(e, key) for e in es]))
    return out


def _best(cells: Sequence[Summary | None], decimals: int, higher: bool | None) -> list[bool]:
    """Bold the best displayed value among comparable cells: per-image metrics scored on every
    prompt any row of the column was scored on, set metrics on as many images as the most,
    latencies only when all were measured on one device. Nothing is bold when fewer than two
    cells qualify."""
    present = [c for c in cells if c is not None]
    eligible = [False] * len(cells)
    if higher is None or len(present) < 2:
        return eligible
    union = frozenset().union(*(c.prompts for c in present))
    max_images = max((c.n_images or 0) for c in present)
    devices = {c.device for c in present}
    for i, c in enumerate(cells):
        if c is None:
            continue
        if c.kind == "image":
            eligible[i] = c.prompts == union
        elif c.kind == "set":
            eligible[i] = c.n_images == max_images
        else:  # a partial timing is shown, never crowned
            eligible[i] = len(devices) == 1 and c.note is None
    if sum(eligible) < 2:
        return [False] * len(cells)
    shown = [float(fmt_number(c.value, decimals)) if ok else None for c, ok in zip(cells, eligible)]
    target = (max if higher else min)(v for v in shown if v is not None)
    return [v is not None and v == target for v in shown]


def _label_entries(entries: list[Entry]) -> None:
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


def _sort_entries(entries: list[Entry]) -> list[Entry]:
    """The paper's order: multi-step models first (more steps first), then by name."""
    return sorted(entries, key=lambda e: (-(e.meta("steps") or 0), e.name, e.recipe_hash))


def _metric_columns(entries: list[Entry], fixed: Sequence[str]) -> list[tuple[str, str | None]]:
    """(metric, metric_version) columns: the fixed metrics first (one column per stored version,
    a version-less placeholder when unmeasured), then every other measured metric by name."""
    present = sorted({k for e in entries for k in e.metric_keys()})
    cols: list[tuple[str, str | None]] = []
    for m in fixed:
        versions = [v for mm, v in present if mm == m]
        cols += [(m, v) for v in versions] or [(m, None)]
    cols += [(m, v) for m, v in present if m not in fixed]
    return cols


def _metric_header(metric: str, version: str | None) -> str:
    label, higher, _ = _metric_info(metric)
    if version is None:
        return f"{label}{_arrow(higher)}"
    short = _short_version(version)
    return f"{label}{_arrow(higher)}" + ("" if short == label else f" ({short})")


_LEAD_T1: list[tuple[str, Callable[[Entry], str]]] = [
    ("model", lambda e: e.label),
    ("steps ↓", lambda e: str(e.meta("steps") or MISSING)),
    ("type", lambda e: str(e.meta("arch_type") or MISSING)),
    ("params ↓", lambda e: str(e.meta("params") or MISSING)),
]


def _alphas_text(e: Entry) -> str:
    a = e.alphas
    return MISSING if a is None else f"({a[0]:g}, {a[1]:g})"


# Provenance -------------------------------------------------------------------------------------
def _date(ts: float | None) -> str:
    if ts is None or (isinstance(ts, float) and math.isnan(ts)):
        return MISSING
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def _versions_text(blob: str | None) -> str:
    if not blob:
        return MISSING
    try:
        d = json.loads(blob)
    except json.JSONDecodeError:
        return blob
    if not isinstance(d, dict):
        return str(d)
    return ", ".join(f"{k} {d[k]}" for k in sorted(d))


def _distinct(values: pd.Series) -> str:
    return ", ".join(sorted({str(v) for v in values.dropna()})) or MISSING


CELL_NOTE = ("- Per-image metrics: mean over the images scored; in brackets a "
             f"{int(CI_LEVEL * 100)}% percentile-bootstrap interval resampling prompts "
             f"(a prompt's images together; {N_BOOTSTRAP} resamples, seed {BOOTSTRAP_SEED}, "
             "evalsuite.metrics.stats). FID/KID: one number per image set, no interval.")
TIME_NOTE = ("- time / 10 images: seconds per 10 images after warm-up, from the run's full "
             "batches, on the device listed below (not comparable across devices).")


def provenance(entries: list[Entry], notes: Sequence[str], how: Sequence[str] = (CELL_NOTE,)
               ) -> str:
    """Footer: how each cell was computed, metric versions, and per row the runs, git hash,
    device, date, software versions and prompts covered (all read from the store)."""
    version_ids: dict[str, str] = {}
    rows = []
    for e in entries:
        r = e.runs
        blobs = sorted({b for b in r.versions_json.dropna()}) if len(r) else []
        ids = []
        for b in blobs:
            version_ids.setdefault(b, chr(ord("A") + len(version_ids)))
            ids.append(version_ids[b])
        last = r.iloc[-1] if len(r) else None
        ends = pd.concat([r.finished_at, r.started_at]).dropna() if len(r) else pd.Series([])
        cov = e.coverage()
        total = e.n_prompts_total if e.n_prompts_total is not None else "?"
        cov_text = "; ".join(f"{k} {v}/{total}" for k, v in cov.items())
        more = f" (+{len(r) - 1} more)" if len(r) > 1 else ""
        rows.append([
            e.label, e.bench, f"`{e.recipe_hash}`",
            f"{last.run_id}{more}" if last is not None else MISSING,
            _distinct(r.git_hash), _distinct(r.device),
            _date(float(ends.max())) if len(ends) else MISSING, _distinct(r.status),
            ", ".join(ids) or MISSING, cov_text])
    out = ["---", "", "**Provenance.** Measured by `distar eval`, scored by `evalsuite.metrics`, "
           "and regenerated from `results.sqlite` by `distar leaderboard`. The paper's reported "
           f"numbers are in `{PAPER_FILE}`; they never appear in this file.", ""]
    out += list(how) + [
        "- ↑ higher is better, ↓ lower is better. **Bold**: best in its column among rows scored "
        "on the same prompts (set metrics: as many images; time: one device); no bold when "
        "fewer than two rows qualify.",
        "- *partial*: the row's images or scores cover fewer prompts than the benchmark has.",
    ]
    out += [f"- Metric version: {n}" for n in notes]
    out += ["", md_table(["row", "bench", "recipe", "last run", "git", "device", "date (UTC)",
                          "status", "versions", "prompts covered"], rows, ["l"] * 10)]
    if version_ids:
        out += [""] + [f"- versions {i}: {_versions_text(b)}" for b, i in version_ids.items()]
    return "\n".join(out) + "\n"


# Tables -----------------------------------------------------------------------------------------
def _bench_order(bench: str, benches: Sequence[str] = TABLE1_BENCHES) -> tuple[int, str]:
    return (benches.index(bench) if bench in benches else len(benches), bench)


def _groups(entries: list[Entry], suite: Suite | None = None) -> list[tuple[str, str, list[Entry]]]:
    benches = suite.table1_benches if suite is not None else TABLE1_BENCHES
    keys = sorted({(e.bench, e.bench_version) for e in entries},
                  key=lambda k: (_bench_order(k[0], benches), k[1]))
    return [(b, v, _sort_entries([e for e in entries if (e.bench, e.bench_version) == (b, v)]))
            for b, v in keys]


REPORTED_NOTE = ("- Columns headed '(paper)': the number the DI* paper reports for the same model "
                 "(its Tables 1 and 3, transcribed in evalsuite/paper_numbers.py; all rows in "
                 f"{PAPER_FILE}), printed beside ours for comparison. Not measured here and never "
                 "bold. Shown only for registry models evaluated with their registered recipe and "
                 "pretrained weights. The paper names no GPU for its times.")


def table1(entries: list[Entry], with_reported: bool = False, suite: Suite | None = None) -> str:
    """Paper Table 1 layout, one section per benchmark (Parti, COCO, then any other except
    HPSv2, which is Table 3): steps, type, params, the four preference/alignment metrics, time
    per 10 images, then set metrics (FID) and any other measured metric. `with_reported`: the
    paper's number for the same model beside each of its Table 1 columns."""
    out = ["# Table 1: measured quality and latency", "",
           "Layout of the DI* paper's Table 1 (Parti upper part, COCO lower part), filled only "
           "with numbers measured by this suite.", ""]
    notes: list[str] = []
    shown: list[Entry] = []
    suite = suite or SUITES["paper"]
    groups = [g for g in _groups(entries, suite) if g[0] != suite.style_bench]
    if not groups:
        out += [f"No measured results yet. Run `distar eval --bench {suite.table1_benches[0]} ...` first.", ""]
    for bench, version, es in groups:
        _label_entries(es)
        fixed = suite.table1_metrics + (("fid",) if bench == suite.fid_bench and suite.table1_metrics else ())
        table, n = _table1_section(es, fixed, with_reported, suite.table1_metrics)
        out += [f"## {bench} (version {version})", "", table, ""]
        notes += n
        shown += es
    how = (CELL_NOTE, TIME_NOTE) + ((REPORTED_NOTE,) if with_reported else ())
    return "\n".join(out) + "\n" + provenance(shown, sorted(set(notes)), how)


def _table1_section(es: list[Entry], fixed: Sequence[str], with_reported: bool = False,
                    core_metrics: Sequence[str] = TABLE1_METRICS) -> tuple[str, list[str]]:
    cols = _metric_columns(es, fixed)
    core = [c for c in cols if c[0] in core_metrics]
    rest = [c for c in cols if c[0] not in core_metrics]
    columns = _columns(es, core) + [Column("time / 10 images ↓ (s)", [e.latency() for e in es],
                                           2, False)]
    columns += _columns(es, rest)
    if with_reported:  # paper keys of each column, in order ('fid' is COCO's last column)
        keys = [m for m, _ in core] + ["time_s_per_10"] + [m if m == "fid" else None for m, _ in rest]
        columns = _with_reported(es, columns, keys)
    header = [h for h, _ in _LEAD_T1] + [c.header for c in columns]
    rows = [[fn(e) for _, fn in _LEAD_T1] + [c.render(i) for c in columns]
            for i, e in enumerate(es)]
    return md_table(header, rows, ["l", "r", "l", "r"] + ["r"] * len(columns)), _notes(cols)


def _columns(es: list[Entry], cols: Sequence[tuple[str, str | None]]) -> list[Column]:
    out = []
    for m, v in cols:
        _, higher, dec = _metric_info(m)
        out.append(Column(_metric_header(m, v), [e.summary(m, v) if v is not None else None
                                                 for e in es], dec, higher))
    return out


def _notes(cols: Sequence[tuple[str, str | None]]) -> list[str]:
    return [f"{_metric_header(m, v)}: `{m}` stored as `{v}`" for m, v in cols if v is not None]


def table2(entries: list[Entry], suite: Suite | None = None) -> str:
    """Paper Table 2 layout: `distar train` checkpoints (recipes carrying alpha_rew and
    alpha_cfg) on Parti, grouped by (alpha_rew, alpha_cfg)."""
    out = ["# Table 2: measured ablation over (alpha_rew, alpha_cfg)", "",
           "Rows: evaluated checkpoints whose recipe carries `alpha_rew` and `alpha_cfg` "
           "(written by `distar train`), grouped by those two scales.", ""]
    suite = suite or SUITES["paper"]
    abl = [e for e in entries if e.alphas is not None and e.bench != suite.style_bench]
    notes: list[str] = []
    shown: list[Entry] = []
    if not abl:
        out += ["No measured ablation results yet: evaluate `distar train` checkpoints with "
                "`distar eval --model path:RUN_DIR/export --bench parti`.", ""]
    for bench, version, es in _groups(abl, suite):
        es = sorted(es, key=lambda e: (e.alphas, e.name, e.recipe_hash))
        _label_entries(es)
        lead = [("model", lambda e: e.label),
                ("steps", lambda e: str(e.meta("steps") or MISSING)),
                ("params", lambda e: str(e.meta("params") or MISSING)),
                ("(α_rew, α_cfg)", _alphas_text)]
        # What else tells the paper's rows apart (KL vs score, Choice 1 vs 2, the estimator).
        lead += [(h, lambda e, k=k: str(e.meta(k) or MISSING)) for h, k in
                 (("regulariser", "regulariser"), ("CFG", "guidance"), ("estimator", "estimator"))
                 if any(e.meta(k) for e in es)]
        cols = _metric_columns(es, suite.table1_metrics)
        columns = _columns(es, cols)
        notes += _notes(cols)
        header = [h for h, _ in lead] + [c.header for c in columns]
        rows = [[fn(e) for _, fn in lead] + [c.render(i) for c in columns]
                for i, e in enumerate(es)]
        out += [f"## {bench} (version {version})", "",
                md_table(header, rows, ["l", "r", "r", "c"] + ["c"] * (len(lead) - 4) + ["r"] * len(columns)), ""]
        shown += es
    return "\n".join(out) + "\n" + provenance(shown, sorted(set(notes)))


def _style_summaries(e: Entry, metric: str, version: str, styles: dict[int, str]
                     ) -> dict[str, Summary | None]:
    scores = e.image_scores(metric, version)
    out: dict[str, Summary | None] = {}
    groups = []
    for style in HPS_STYLES:
        s = scores[[styles.get(int(i)) == style for i in scores.prompt_index]]
        if s.empty:
            out[style] = None
            continue
        values, ids = HPS_SCALE * s.value.to_numpy(np.float64), s.prompt_index.to_numpy()
        out[style] = Summary(hps_style_score(values), interval(values, ids),
                             prompts=frozenset(int(i) for i in ids))
        groups.append((values, ids))
    if all(out[s] is not None for s in HPS_STYLES):
        # HPSv2's evaluate_benchmark 'Average': the mean over every image of the four styles
        # (evalsuite.metrics.hps.hps_benchmark_summary), not the mean of the style scores.
        out["average"] = Summary(float(np.concatenate([v for v, _ in groups]).mean()),
                                 stratified_interval(groups, by_size=True),
                                 prompts=frozenset(int(i) for i in scores.prompt_index))
    else:
        out["average"] = None
    return out


def table3(entries: list[Entry], with_reported: bool = False) -> str:
    """Paper Table 3 layout: HPS per style and the average of the four styles. HPSv2.1 and
    HPSv2.0 are separate tables, never one column. `with_reported`: the paper's HPSv2.1 number
    for the same model beside each HPSv2.1 column."""
    out = ["# Table 3: measured HPS per style", "",
           "Per style: HPSv2's own aggregation (mean of the means of consecutive 80-image chunks, "
           "prompts in benchmark order) of 100 x the per-image score, HPSv2's benchmark unit and "
           "the paper's. Average: mean over all images of the four styles, as HPSv2's "
           "evaluate_benchmark computes it.", ""]
    notes: list[str] = []
    shown: list[Entry] = []
    hps = [e for e in entries if e.bench == HPS_BENCH]
    if not hps:
        out += [f"No measured results on `{HPS_BENCH}` yet.", ""]
    for bench, version, es in _groups(hps):
        _label_entries(es)
        pm = prompt_meta(bench, version)
        styles = {i: m.get("style") for i, m in pm.meta.items()}
        n_style = Counter(styles.values())
        for metric in HPS_METRICS:
            for v in sorted({v for e in es for m, v in e.metric_keys() if m == metric}):
                label, higher, dec = _metric_info(metric)
                notes += _notes([(metric, v)])
                out += [f"## {_metric_header(metric, v)} on {bench} (version {version})", ""]
                if not pm.meta:
                    out += [f"Prompt styles unavailable: {pm.missing}.", ""]
                    continue
                per = [_style_summaries(e, metric, v, styles) for e in es]
                cols = [Column(f"{s}{_arrow(higher)}" + (f" (n={n_style[s]})" if s in n_style
                                                        else ""),
                               [p[s] for p in per], dec, higher)
                        for s in HPS_STYLES + ("average",)]
                if with_reported and metric == "hpsv21":  # the paper's Table 3 is HPSv2.1
                    cols = _with_reported(es, cols, list(HPS_STYLES + ("average",)))
                header = ["model", "steps"] + [c.header for c in cols]
                rows = [[e.label, str(e.meta("steps") or MISSING)] + [c.render(i) for c in cols]
                        for i, e in enumerate(es)]
                out += [md_table(header, rows), ""]
        shown += es
    return "\n".join(out) + "\n" + provenance(shown, sorted(set(notes)), (
        "- Per style: HPSv2's chunked mean over the style's images in benchmark order; in "
        f"brackets a {int(CI_LEVEL * 100)}% percentile-bootstrap interval of the style's mean "
        f"image score, resampling prompts ({N_BOOTSTRAP} resamples, seed {BOOTSTRAP_SEED}). "
        "Average: mean over all images of the four styles (HPSv2's); its interval resamples "
        "prompts within each style.",)
        + ((REPORTED_NOTE,) if with_reported else ()))


def style_table(entries: list[Entry], suite: Suite) -> str:
    """Table 3 for a suite whose style benchmark is not HPSv2's (the mini world's mini_hps): per
    style, the mean of every per-image metric with its prompt-bootstrap interval; the average is
    the mean of the styles, as HPSv2's is."""
    out = [f"# Table 3: measured scores per style ({suite.style_bench})", "",
           "Per style: mean over the style's images; average: mean of the styles (HPSv2's rule, so "
           "a style's weight does not depend on its size).", ""]
    notes: list[str] = []
    shown: list[Entry] = []
    es_all = [e for e in entries if e.bench == suite.style_bench]
    if not es_all:
        out += [f"No measured results on `{suite.style_bench}` yet.", ""]
    for bench, version, es in _groups(es_all, suite):
        _label_entries(es)
        pm = prompt_meta(bench, version)
        key = "style" if "style" in pm.group_keys else (pm.group_keys[0] if pm.group_keys else None)
        if key is None:
            out += [f"## {bench} (version {version})", "", f"Prompt styles unavailable: {pm.missing}.", ""]
            continue
        styles = sorted({str(md[key]) for md in pm.meta.values() if md.get(key)})
        members = {g: [i for i, md in pm.meta.items() if str(md.get(key)) == g] for g in styles}
        keys = sorted({(m, v) for e in es for m, v in zip(e.scores.metric, e.scores.metric_version)})
        notes += _notes(keys)
        for m, v in keys:
            _, higher, dec = _metric_info(m)
            per = []
            for e in es:
                cells = {g: e.summary(m, v, members[g]) for g in styles}
                groups = []
                for g in styles:
                    sc = e.image_scores(m, v)
                    sc = sc[sc.prompt_index.isin(members[g])]
                    if len(sc):
                        groups.append((sc.value.to_numpy(np.float64), sc.prompt_index.to_numpy()))
                cells["average"] = (Summary(float(np.mean([cells[g].value for g in styles])),
                                            stratified_interval(groups))
                                    if all(cells[g] is not None for g in styles) else None)
                per.append(cells)
            cols = [Column(f"{g}{_arrow(higher)} (n={len(members[g])})" if g != "average" else f"average{_arrow(higher)}",
                           [p_[g] for p_ in per], dec, higher) for g in styles + ["average"]]
            header = ["model", "steps"] + [c.header for c in cols]
            rows = [[e.label, str(e.meta("steps") or MISSING)] + [c.render(i) for c in cols]
                    for i, e in enumerate(es)]
            out += [f"## {_metric_header(m, v)} by {key}, {bench} (version {version})", "", md_table(header, rows), ""]
        shown += es
    return "\n".join(out) + "\n" + provenance(shown, sorted(set(notes)))


def paired_tests(entries: list[Entry], baseline: str, suite: Suite | None = None) -> str:
    """Every model against `baseline` (a model name, e.g. the one-step init) on the images both
    have (same prompts and seeds): the mean difference of each per-image metric, its 95% interval
    (prompts resampled) and a two-sided paired p-value (evalsuite.metrics.stats.paired_test,
    prompts as the independent unit)."""
    from evalsuite.metrics.stats import paired_test

    out = [f"# Paired tests against `{baseline}`", "",
           f"Cells: mean of (model - {baseline}) over the images both have, same prompt and seed; "
           f"[{int(CI_LEVEL * 100)}% bootstrap interval, prompts resampled]; p = two-sided paired test "
           "with prompts as units. Set metrics (FID) have no pairs and are not here.", ""]
    shown: list[Entry] = []
    found = False
    for bench, version, es in _groups(entries, suite):
        base = [e for e in es if e.name == baseline]
        if not base:
            continue
        found = True
        _label_entries(es)
        b = base[0]
        keys = sorted({(m, v) for m, v in zip(b.scores.metric, b.scores.metric_version)})
        rows = []
        for e in es:
            if e is b:
                continue
            row = [e.label]
            for m, v in keys:
                _, _, dec = _metric_info(m)
                x = e.image_scores(m, v).merge(b.image_scores(m, v), on=["prompt_index", "k"])
                if len(x) < 2 or x.prompt_index.nunique() < 2:
                    row.append(MISSING)
                    continue
                r = paired_test(x.value_x.to_numpy(), x.value_y.to_numpy(), n_boot=N_BOOTSTRAP,
                                seed=BOOTSTRAP_SEED, clusters=x.prompt_index.to_numpy())
                row.append(f"{r.mean_diff:+.{dec + 1}f} [{r.low:+.{dec + 1}f}, {r.high:+.{dec + 1}f}] "
                           f"p={r.p_value:.2g}")
            rows.append(row)
        header = ["model"] + [_metric_header(m, v) for m, v in keys]
        out += [f"## {bench} (version {version})", "", md_table(header, rows), ""]
        shown += es
    if not found:
        out += [f"No results of `{baseline}` in the store.", ""]
    return "\n".join(out) + "\n" + provenance(shown, [])


def category_breakdown(entries: list[Entry], suite: Suite | None = None) -> str:
    """Per-category (and per-challenge) means of every per-image metric, for each benchmark
    whose prompts carry group metadata (Parti: category, challenge). No intervals here, to keep
    the tables narrow; n = prompts in the group."""
    out = ["# Scores by prompt category (measured)", "",
           "Means over the prompts of each group; n = prompts of the benchmark in that group.", ""]
    notes: list[str] = []
    shown: list[Entry] = []
    style_bench = (suite or SUITES["paper"]).style_bench
    groups = [g for g in _groups(entries, suite) if g[0] != style_bench]
    written = False
    for bench, version, es in groups:
        pm = prompt_meta(bench, version, bench_source(es))
        if not pm.group_keys and not pm.missing:
            continue  # a benchmark without categories (COCO)
        _label_entries(es)
        written = True
        shown += es
        if not pm.meta:
            out += [f"## {bench} (version {version})", "",
                    f"Prompt metadata unavailable: {pm.missing}.", ""]
            continue
        keys = sorted({(m, v) for e in es for m, v in zip(e.scores.metric, e.scores.metric_version)})
        notes += _notes(keys)
        if not keys:
            out += [f"## {bench} (version {version})", "", "No per-image scores yet.", ""]
        for m, v in keys:
            label, higher, dec = _metric_info(m)
            rows_m = [e for e in es if len(e.image_scores(m, v))]
            for key in pm.group_keys:
                names = sorted({str(md[key]) for md in pm.meta.values() if md.get(key)})
                members = {g: [i for i, md in pm.meta.items() if str(md.get(key)) == g]
                           for g in names}
                cols = [Column(f"all (n={len(pm.meta)})",
                               [_no_ci(e.summary(m, v)) for e in rows_m], dec, higher)]
                cols += [Column(f"{g} (n={len(members[g])})",
                                [_no_ci(e.summary(m, v, members[g])) for e in rows_m], dec,
                                higher)
                         for g in names]
                header = ["model"] + [c.header for c in cols]
                rows = [[e.label] + [c.render(i) for c in cols] for i, e in enumerate(rows_m)]
                out += [f"## {_metric_header(m, v)} by {key}, "
                        f"{bench} (version {version})", "", md_table(header, rows), ""]
    if not written:
        out += ["No measured results on a benchmark with prompt categories (e.g. parti) yet.", ""]
    return "\n".join(out) + "\n" + provenance(shown, sorted(set(notes)), (
        "- Cells: mean over the group's images scored; no intervals in this file (Table 1 has "
        "the overall ones).",))


def bench_source(entries: Sequence[Entry]) -> str | None:
    """The prompt file of a `file:` benchmark, as its runs recorded it."""
    return next((e.recipe["bench_source"] for e in entries if e.recipe.get("bench_source")), None)


def _no_ci(s: Summary | None) -> Summary | None:
    if s is not None:
        s.ci = None
    return s


def paper_reported() -> str:
    """The paper's Tables 1-3 exactly as printed, labelled as reported (not measured)."""
    P = paper_numbers
    out = ["# Reported by the DI* paper (NOT measured by this suite)", "",
           f"Transcribed from {P.PAPER}, Tables 1-3, by `evalsuite/paper_numbers.py` (each row "
           "cites its table and row). These are the paper's numbers; measured results are in "
           f"`{TABLE1_FILE}`, `{TABLE2_FILE}` and `{TABLE3_FILE}`. †: the paper's own "
           "implementation of a baseline.", ""]

    def t1(rows, last_header, last_key):
        header = ["model (as reported)", "steps ↓", "type", "params ↓", "ImageReward ↑",
                  "Aesthetic ↑", "PickScore ↑", "CLIP ↑", last_header]
        body = [[r.model, str(r.steps), r.arch_type, r.params]
                + [r.values[k] for k in TABLE1_METRICS + (last_key,)] for r in rows]
        return md_table(header, body, ["l", "r", "l", "r"] + ["r"] * 5)

    out += ["## Table 1, upper part: Parti prompts (reported)", "",
            t1(P.TABLE1_PARTI, "time / 10 images ↓ (s)", "time_s_per_10"), "",
            "## Table 1, lower part: COCO 30K prompts (reported)", "",
            t1(P.TABLE1_COCO, "COCO-FID ↓", "fid"), "",
            "## Table 2: ablation on Parti prompts (reported)", "",
            md_table(["model (as reported)", "steps", "params", "ImageReward ↑", "Aesthetic ↑",
                      "PickScore ↑", "CLIP ↑", "(α_rew, α_cfg)"],
                     [[r.model, str(r.steps), r.params]
                      + [r.values[k] for k in TABLE1_METRICS] + [r.alphas or MISSING]
                      for r in P.TABLE2_ABLATION], ["l", "r", "r", "r", "r", "r", "r", "c"]), "",
            "## Table 3: HPSv2.1 (reported)", "",
            md_table(["model (as reported)", "steps"] + [f"{s} ↑" for s in HPS_STYLES]
                     + ["average ↑"],
                     [[r.model, str(r.steps)] + [r.values[s] for s in HPS_STYLES + ("average",)]
                      for r in P.TABLE3_HPSV21]), "",
            "## Notes on the paper's tables", ""]
    out += [f"- {n}" for n in P.NOTES]
    return "\n".join(out) + "\n"


# Plots ------------------------------------------------------------------------------------------
def _latency_points(es: list[Entry], metrics: Sequence[str] = PREFERENCE_FOR_PLOT):
    from evalsuite.plots import Point
    for metric in metrics:
        versions = sorted({v for e in es for m, v in e.metric_keys() if m == metric})
        for v in versions:
            pts = []
            for e in es:
                s, t = e.summary(metric, v), e.latency()
                if s is None or t is None:
                    continue
                pts.append(Point(label=f"{e.label}\n{t.device}", x=t.value, y=s.value,
                                 yerr=s.ci, size=_params_billion(e.meta("params"))))
            if len(pts) >= 1:
                label, _, _ = _metric_info(metric)
                return pts, f"{label} ({_short_version(v)}) ↑"
    return [], ""


def write_plots(entries: list[Entry], out_dir: Path, suite: Suite | None = None) -> list[Path]:
    """Quality vs latency per benchmark (the paper's David-vs-Goliath picture) and, for the
    ablation, reward vs fidelity. A plot with no measured point is not written (and a stale
    one from an earlier store is removed)."""
    from evalsuite import plots
    suite = suite or SUITES["paper"]
    written = []
    for bench in suite.table1_benches:
        path = out_dir / (suite.prefix + LATENCY_PLOT.format(bench=bench))
        es = [e for e in entries if e.bench == bench]
        for _, _, group in _groups(es)[-1:]:  # the newest benchmark version if several
            _label_entries(group)
            pts, ylabel = _latency_points(group, suite.plot_metrics)
            if pts:
                plots.quality_vs_latency(pts, ylabel, f"{bench}: quality vs latency", path)
                written.append(path)
        if path not in written and path.exists():
            path.unlink()
    path = out_dir / (suite.prefix + ABLATION_PLOT)
    abl = [e for e in entries if e.alphas is not None and e.bench == suite.ablation_bench]
    pts, xlabel, ylabel = [], "", ""
    for _, _, group in _groups(abl)[-1:]:
        _label_entries(group)
        x_metric = next((x for x in suite.fidelity_metrics if any(m == x for e in group for m, _ in e.metric_keys())),
                        suite.fidelity_metrics[0])
        xs = sorted({(m, v) for e in group for m, v in e.metric_keys() if m == x_metric})
        for y_metric in suite.plot_metrics:
            ys = sorted({(m, v) for e in group for m, v in e.metric_keys() if m == y_metric})
            if xs and ys:
                for e in group:
                    sx, sy = e.summary(*xs[0]), e.summary(*ys[0])
                    if sx is not None and sy is not None:
                        pts.append(plots.Point(label=f"{e.label} {_alphas_text(e)}", x=sx.value,
                                               y=sy.value, xerr=sx.ci, yerr=sy.ci))
                xlabel = f"{_metric_info(x_metric)[0]} ({_short_version(xs[0][1])}) ↑  (fidelity to the prompt)"
                ylabel = f"{_metric_info(y_metric)[0]} ({_short_version(ys[0][1])}) ↑"
                break
    if pts:
        plots.reward_vs_fidelity(pts, xlabel, ylabel, f"{suite.ablation_bench} ablation: reward vs fidelity", path)
        written.append(path)
    elif path.exists():
        path.unlink()
    return written


# Entry point ------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="\n")
    return path


def write_leaderboards(results_dir: Path, out_dir: Path, with_reported: bool = False, suite: str = "paper",
                       baseline: str | None = None, show_failed: bool = False) -> list[Path]:
    """Write Tables 1-3, the Parti breakdown, the paper's reported numbers and the plots into
    out_dir; returns the files written. `with_reported`: Tables 1 and 3 also show, beside each
    measured column, the paper's number for the same model (headed '(paper)'). `suite`: which
    benchmarks fill the tables ('paper', or 'mini': files mini_*.md). `baseline`: a model name;
    adds paired tests of every model against it."""
    su = get_suite(suite)
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not (results_dir / STORE_FILENAME).exists():
        raise DistarError(f"No results store at {results_dir / STORE_FILENAME}. Run `distar eval` "
                          "first, or point --results at the directory holding results.sqlite.")
    entries = load_entries(ResultsStore(results_dir, readonly=True), show_failed=show_failed)
    out_dir.mkdir(parents=True, exist_ok=True)
    if su.name == "paper":
        written = [
            _write(out_dir / TABLE1_FILE, table1(entries, with_reported)),
            _write(out_dir / TABLE2_FILE, table2(entries)),
            _write(out_dir / TABLE3_FILE, table3(entries, with_reported)),
            _write(out_dir / BREAKDOWN_FILE, category_breakdown(entries)),
            _write(out_dir / PAPER_FILE, paper_reported()),
        ]
    else:  # no paper numbers exist for another suite's benchmarks
        written = [
            _write(out_dir / (su.prefix + TABLE1_FILE.replace("_parti_coco", "")), table1(entries, suite=su)),
            _write(out_dir / (su.prefix + TABLE2_FILE), table2(entries, su)),
            _write(out_dir / (su.prefix + "table3_styles.md"), style_table(entries, su)),
            _write(out_dir / (su.prefix + BREAKDOWN_FILE), category_breakdown(entries, su)),
        ]
    if baseline is not None:
        written.append(_write(out_dir / (su.prefix + PAIRED_FILE), paired_tests(entries, baseline, su)))
    return written + write_plots(entries, out_dir, su)
