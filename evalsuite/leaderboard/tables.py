"""The leaderboard's tables (`distar leaderboard`): the DI* paper's Tables 1-3 filled with
measured numbers, the category breakdown, paired tests and the paper's own numbers.

Every number written here was measured by `distar eval` and read back from `results.sqlite`
(evalsuite.leaderboard.entries); the paper's own numbers go only to `paper_reported.md` (from
evalsuite.paper_numbers) and, with --with-reported, to columns headed '(paper)'. Output is a pure
function of the store: rows and columns are sorted, dates come from the stored runs, bootstrap
resampling uses a fixed seed and PNGs carry no timestamp, so regenerating with no new results
rewrites byte-identical files, on any machine the results folder is copied to.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from distar.core.errors import DistarError
from evalsuite import paper_numbers
from evalsuite.benchmarks import HPS_STYLES
from evalsuite.leaderboard.entries import (BOOTSTRAP_SEED, CI_LEVEL, INTERVAL, N_BOOTSTRAP,
                                           Entry, Summary, bench_groups, label_entries,
                                           load_entries, style_key)
from evalsuite.leaderboard.markdown import (MISSING, Shown, arrow, fmt_number, legend_line,
                                            md_table)
from evalsuite.leaderboard.plots import alphas_text, write_plots
from evalsuite.metrics.stats import INTERVAL_TEXT
from evalsuite.store import STORE_FILENAME, ResultsStore
from evalsuite.suites import HPS_BENCH, PAPER_SUITE, SUITES, TABLE1_METRICS, Suite, get_suite


HPS_METRICS = ("hpsv21", "hpsv2")
HPS_SCALE = 100.0           # ... of 100 x the per-image cosine the store holds (the paper's unit)

TABLE1_FILE = "table1_parti_coco.md"
TABLE2_FILE = "table2_ablation.md"
TABLE3_FILE = "table3_hpsv21.md"
BREAKDOWN_FILE = "category_breakdown.md"
PAPER_FILE = "paper_reported.md"
PAIRED_FILE = "paired_tests.md"


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
    """Only for a registry model evaluated with the registered recipe (pretrained weights), as
    its runs recorded (Entry.registered_as): a recipe the registry did not have, or random
    weights, is not the paper's model."""
    if e.registered_as is None or e.registered_as != e.name:
        return None
    row = paper_numbers.reported_row(e.name, e.bench)
    return row.values.get(key) if row is not None else None


def _unrecorded_note(entries: Sequence[Entry]) -> tuple[str, ...]:
    """The stated fallback for stores written before runs recorded `registered_as`: such rows of
    a model the paper reports get no '(paper)' number, and the footer says which and why."""
    old = sorted({e.label for e in entries if "registered_as" not in e.recipe
                  and paper_numbers.reported_row(e.name, e.bench) is not None})
    if not old:
        return ()
    return (f"- No '(paper)' number for {', '.join(old)}: their runs were recorded before "
            "`distar eval` stored whether a run used the registered recipe (recipe_json's "
            "`registered_as`). Fix: evaluate them again into a new --out.",)


def _with_reported(es: list[Entry], columns: list, keys: list[str | None]) -> list:
    """Insert a '(paper)' column after the last measured column of each key (metric or HPS
    style) the paper reports for these rows' models."""
    out = []
    for i, (col, key) in enumerate(zip(columns, keys)):
        out.append(col)
        last_of_key = key is not None and (i + 1 == len(keys) or keys[i + 1] != key)
        if last_of_key and any(_reported_cell(e, key) for e in es):
            label = re.sub(r" \([^)]*\)$", "", col.header)  # without a count or unit: (n=2), (s)
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



_LEAD_T1: list[tuple[str, Callable[[Entry], str]]] = [
    ("model", lambda e: e.label),
    ("steps ↓", lambda e: str(e.meta("steps") or MISSING)),
    ("type", lambda e: str(e.meta("arch_type") or MISSING)),
    ("params ↓", lambda e: str(e.meta("params") or MISSING)),
]


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
             f"{int(CI_LEVEL * 100)}% {INTERVAL_TEXT[INTERVAL]}, resampling prompts "
             f"(a prompt's images together; {N_BOOTSTRAP} resamples, seed {BOOTSTRAP_SEED}, "
             "evalsuite.metrics.stats). FID/KID: one number per image set, no interval. "
             "Intra-prompt diversity is per image too: each image's mean cosine distance to the "
             "other images of its prompt, whose mean over a prompt's images is that prompt's mean "
             "pairwise distance.")
TIME_NOTE = ("- time / 10 images: seconds per 10 images after warm-up, from the run's full "
             "batches, on the device listed below (not comparable across devices).")


def provenance(entries: list[Entry], how: Sequence[str] = (CELL_NOTE,)) -> str:
    """Footer: how each cell was computed, and per row the runs, git hash, device, date,
    software versions and prompts covered (all read from the store). Each table's legend names
    its columns' metric versions."""
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
    out += ["", md_table(["row", "bench", "recipe", "last run", "git", "device", "date (UTC)",
                          "status", "versions", "prompts covered"], rows, ["l"] * 10)]
    if version_ids:
        out += [""] + [f"- versions {i}: {_versions_text(b)}" for b, i in version_ids.items()]
    return "\n".join(out) + "\n"




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
    shown: list[Entry] = []
    suite = suite or PAPER_SUITE
    groups = [g for g in bench_groups(entries, suite.table1_benches) if g[0] != suite.style_bench]
    if not groups:
        out += [f"No measured results yet. Run `distar eval --bench {suite.table1_benches[0]} ...` first.", ""]
    for bench, version, es in groups:
        label_entries(es)
        fixed = suite.table1_metrics + (("fid",) if bench == suite.fid_bench and suite.table1_metrics else ())
        table, legend = _table1_section(es, fixed, with_reported, suite.table1_metrics)
        out += [f"## {bench} (version {version})", "", table, "", *legend, ""]
        shown += es
    how = (CELL_NOTE, TIME_NOTE) + ((REPORTED_NOTE,) + _unrecorded_note(shown) if with_reported else ())
    return "\n".join(out) + "\n" + provenance(shown, how)


def _table1_section(es: list[Entry], fixed: Sequence[str], with_reported: bool = False,
                    core_metrics: Sequence[str] = TABLE1_METRICS) -> tuple[str, list[str]]:
    cols = _metric_columns(es, fixed)
    core = [c for c in cols if c[0] in core_metrics]
    rest = [c for c in cols if c[0] not in core_metrics]
    columns, legend = _columns(es, core + rest)
    columns.insert(len(core), Column("time / 10 images ↓ (s)", [e.latency() for e in es], 2, False))
    if with_reported:  # paper keys of each column, in order ('fid' is COCO's last column)
        keys = [m for m, _ in core] + ["time_s_per_10"] + [m if m == "fid" else None for m, _ in rest]
        columns = _with_reported(es, columns, keys)
    header = [h for h, _ in _LEAD_T1] + [c.header for c in columns]
    rows = [[fn(e) for _, fn in _LEAD_T1] + [c.render(i) for c in columns]
            for i, e in enumerate(es)]
    return md_table(header, rows, ["l", "r", "l", "r"] + ["r"] * len(columns)), legend


def _shown(es: list[Entry], metric: str, version: str | None = None) -> Shown:
    """How `metric` is shown, as the store's scores recorded it (evalsuite.metrics.base)."""
    return es[0].shown_as(metric, version) if es else Shown.from_info(metric, None)


def _columns(es: list[Entry], cols: Sequence[tuple[str, str | None]]
             ) -> tuple[list[Column], list[str]]:
    """One Column per (metric, version), headed by the metric's short label and arrow (a second
    column with the same head numbered '#2'), and the legend under the table: each head's
    metric and full version key."""
    columns, legend, seen = [], [], Counter()
    for m, v in cols:
        s = _shown(es, m, v)
        seen[s.header] += 1
        header = s.header + (f" #{seen[s.header]}" if seen[s.header] > 1 else "")
        columns.append(Column(header, [e.summary(m, v) if v is not None else None for e in es],
                              s.decimals, s.higher))
        if v is not None:
            legend.append(legend_line(header, m, v, s.unit))
    return columns, legend


def table2(entries: list[Entry], suite: Suite | None = None) -> str:
    """Paper Table 2 layout: `distar train` checkpoints (recipes carrying alpha_rew and
    alpha_cfg) on Parti, grouped by (alpha_rew, alpha_cfg)."""
    out = ["# Table 2: measured ablation over (alpha_rew, alpha_cfg)", "",
           "Rows: evaluated checkpoints whose recipe carries `alpha_rew` and `alpha_cfg` "
           "(written by `distar train`), grouped by those two scales.", ""]
    suite = suite or PAPER_SUITE
    abl = [e for e in entries if e.alphas is not None and e.bench != suite.style_bench]
    shown: list[Entry] = []
    if not abl:
        out += ["No measured ablation results yet: evaluate `distar train` checkpoints with "
                "`distar eval --model path:RUN_DIR/export --bench parti`.", ""]
    for bench, version, es in bench_groups(abl, suite.table1_benches):
        es = sorted(es, key=lambda e: (e.alphas, e.name, e.recipe_hash))
        label_entries(es)
        lead = [("model", lambda e: e.label),
                ("steps", lambda e: str(e.meta("steps") or MISSING)),
                ("params", lambda e: str(e.meta("params") or MISSING)),
                ("(α_rew, α_cfg)", alphas_text)]
        # What else tells the paper's rows apart (KL vs score, Choice 1 vs 2, the estimator).
        lead += [(h, lambda e, k=k: str(e.meta(k) or MISSING)) for h, k in
                 (("regulariser", "regulariser"), ("CFG", "guidance"), ("estimator", "estimator"))
                 if any(e.meta(k) for e in es)]
        columns, legend = _columns(es, _metric_columns(es, suite.table1_metrics))
        header = [h for h, _ in lead] + [c.header for c in columns]
        rows = [[fn(e) for _, fn in lead] + [c.render(i) for c in columns]
                for i, e in enumerate(es)]
        out += [f"## {bench} (version {version})", "",
                md_table(header, rows, ["l", "r", "r", "c"] + ["c"] * (len(lead) - 4) + ["r"] * len(columns)),
                "", *legend, ""]
        shown += es
    return "\n".join(out) + "\n" + provenance(shown)


def _style_note(styles: str) -> str:
    """The footer line of a per-style table (`styles`: how the average's styles are named)."""
    return ("- Per style: HPSv2's chunked mean over the style's images in benchmark order; in "
            f"brackets a {int(CI_LEVEL * 100)}% {INTERVAL_TEXT[INTERVAL]} of the style's mean "
            f"image score, resampling prompts ({N_BOOTSTRAP} resamples, seed {BOOTSTRAP_SEED}). "
            f"Average: mean over all images of {styles}; its interval is a percentile-bootstrap "
            "one resampling prompts within each style.")


def _style_md(es: list[Entry], cols: list) -> str:
    """A per-style table: model, steps, then one column per style and the average."""
    header = ["model", "steps"] + [c.header for c in cols]
    rows = [[e.label, str(e.meta("steps") or MISSING)] + [c.render(i) for c in cols]
            for i, e in enumerate(es)]
    return md_table(header, rows)


def table3(entries: list[Entry], with_reported: bool = False) -> str:
    """Paper Table 3 layout: HPS per style and the average of the four styles. HPSv2.1 and
    HPSv2.0 are separate tables, never one column. `with_reported`: the paper's HPSv2.1 number
    for the same model beside each HPSv2.1 column."""
    out = ["# Table 3: measured HPS per style", "",
           "Per style: HPSv2's own aggregation (mean of the means of consecutive 80-image chunks, "
           "prompts in benchmark order) of 100 x the per-image score, HPSv2's benchmark unit and "
           "the paper's. Average: mean over all images of the four styles, as HPSv2's "
           "evaluate_benchmark computes it.", ""]
    shown: list[Entry] = []
    hps = [e for e in entries if e.bench == HPS_BENCH]
    if not hps:
        out += [f"No measured results on `{HPS_BENCH}` yet.", ""]
    for bench, version, es in bench_groups(hps):
        label_entries(es)
        pm = es[0].prompt_meta
        n_style = Counter(m.get("style") for m in pm.meta.values())
        for metric in HPS_METRICS:
            for v in sorted({v for e in es for m, v in e.metric_keys() if m == metric}):
                sh = _shown(es, metric, v)
                higher, dec = sh.higher, sh.decimals
                out += [f"## {sh.header} on {bench} (version {version})", ""]
                if not pm.meta:
                    out += [f"Prompt styles unavailable: {pm.missing or 'the stored prompts carry no style'}.", ""]
                    continue
                per = [e.style_summaries(metric, v, HPS_STYLES, HPS_SCALE) for e in es]
                cols = [Column(f"{s}{arrow(higher)}" + (f" (n={n_style[s]})" if s in n_style
                                                        else ""),
                               [p[s] for p in per], dec, higher)
                        for s in HPS_STYLES + ("average",)]
                if with_reported and metric == "hpsv21":  # the paper's Table 3 is HPSv2.1
                    cols = _with_reported(es, cols, list(HPS_STYLES + ("average",)))
                out += [_style_md(es, cols), "", legend_line(sh.header, metric, v, sh.unit), ""]
        shown += es
    return "\n".join(out) + "\n" + provenance(shown, (
        _style_note("the four styles (HPSv2's)"),)
        + ((REPORTED_NOTE,) + _unrecorded_note(shown) if with_reported else ()))


def style_table(entries: list[Entry], suite: Suite) -> str:
    """Table 3 for a suite whose style benchmark is not HPSv2's (a world's own, registered with its suite): per
    style and on average, every per-image metric under HPSv2's aggregation (the one every
    report uses, Entry.style_summaries), with prompt-bootstrap intervals."""
    out = [f"# Table 3: measured scores per style ({suite.style_bench})", "",
           "Per style: HPSv2's aggregation (mean of the means of consecutive 80-image chunks, "
           "images in benchmark order); average: mean over all images of the styles, as HPSv2's "
           "evaluate_benchmark computes it (so styles of unequal size weigh by their images).", ""]
    shown: list[Entry] = []
    es_all = [e for e in entries if e.bench == suite.style_bench]
    if not es_all:
        out += [f"No measured results on `{suite.style_bench}` yet.", ""]
    for bench, version, es in bench_groups(es_all, suite.table1_benches):
        label_entries(es)
        pm = es[0].prompt_meta
        key = style_key(pm)
        if key is None:
            out += [f"## {bench} (version {version})", "", f"Prompt styles unavailable: {pm.missing or 'the stored prompts carry no style'}.", ""]
            continue
        members = Counter(str(md[key]) for md in pm.meta.values() if md.get(key))
        styles = sorted(members)
        keys = sorted({(m, v) for e in es for m, v in zip(e.scores.metric, e.scores.metric_version)})
        for m, v in keys:
            sh = _shown(es, m, v)
            higher, dec = sh.higher, sh.decimals
            per = [e.style_summaries(m, v, styles) for e in es]
            cols = [Column(f"{g}{arrow(higher)} (n={members[g]})" if g != "average" else f"average{arrow(higher)}",
                           [p_[g] for p_ in per], dec, higher) for g in styles + ["average"]]
            out += [f"## {sh.header} by {key}, {bench} (version {version})", "", _style_md(es, cols), "",
                    legend_line(sh.header, m, v, sh.unit), ""]
        shown += es
    return "\n".join(out) + "\n" + provenance(shown, (_style_note("the styles"),))


def paired_tests(entries: list[Entry], baseline: str, suite: Suite | None = None) -> str:
    """Every model against `baseline` (a model name, e.g. the one-step init) on the images both
    have (same prompts and seeds): the mean difference of each per-image metric, its 95% interval
    (prompts resampled) and a two-sided paired p-value (evalsuite.metrics.stats.paired_test,
    prompts as the independent unit)."""
    from evalsuite.metrics.stats import paired_test

    out = [f"# Paired tests against `{baseline}`", "",
           f"Cells: mean of (model - {baseline}) over the images both have, same prompt and seed; "
           f"[{int(CI_LEVEL * 100)}% percentile-bootstrap interval, prompts resampled]; "
           "p = two-sided paired test "
           "with prompts as units. Set metrics (FID) have no pairs and are not here; intra-prompt "
           "diversity is paired through its per-image values (the mean over a prompt's images is "
           "the prompt's diversity, so prompts as units compare per-prompt diversity).", ""]
    shown: list[Entry] = []
    found = False
    for bench, version, es in bench_groups(entries, (suite or PAPER_SUITE).table1_benches):
        base = [e for e in es if e.name == baseline]
        if not base:
            continue
        found = True
        label_entries(es)
        b = base[0]
        keys = sorted({(m, v) for m, v in zip(b.scores.metric, b.scores.metric_version)})
        rows = []
        for e in es:
            if e is b:
                continue
            row = [e.label]
            for m, v in keys:
                dec = _shown(es, m, v).decimals
                x = e.image_scores(m, v).merge(b.image_scores(m, v), on=["prompt_index", "k"])
                if len(x) < 2 or x.prompt_index.nunique() < 2:
                    row.append(MISSING)
                    continue
                r = paired_test(x.value_x.to_numpy(), x.value_y.to_numpy(), n_boot=N_BOOTSTRAP,
                                seed=BOOTSTRAP_SEED, clusters=x.prompt_index.to_numpy())
                row.append(f"{r.mean_diff:+.{dec + 1}f} [{r.low:+.{dec + 1}f}, {r.high:+.{dec + 1}f}] "
                           f"p={r.p_value:.2g}")
            rows.append(row)
        columns, legend = _columns(es, keys)
        header = ["model"] + [c.header for c in columns]
        out += [f"## {bench} (version {version})", "", md_table(header, rows), "", *legend, ""]
        shown += es
    if not found:
        out += [f"No results of `{baseline}` in the store.", ""]
    return "\n".join(out) + "\n" + provenance(shown)


def category_breakdown(entries: list[Entry], suite: Suite | None = None) -> str:
    """Per-category (and per-challenge) means of every per-image metric, for each benchmark
    whose prompts carry group metadata (Parti: category, challenge). No intervals here, to keep
    the tables narrow; n = prompts in the group."""
    out = ["# Scores by prompt category (measured)", "",
           "Means over the prompts of each group; n = prompts of the benchmark in that group.", ""]
    shown: list[Entry] = []
    suite = suite or PAPER_SUITE
    groups = [g for g in bench_groups(entries, suite.table1_benches) if g[0] != suite.style_bench]
    written = False
    for bench, version, es in groups:
        pm = es[0].prompt_meta
        if not pm.group_keys and not pm.missing:
            continue  # a benchmark without categories (COCO)
        label_entries(es)
        written = True
        shown += es
        if not pm.meta:
            out += [f"## {bench} (version {version})", "",
                    f"Prompt metadata unavailable: {pm.missing or 'the stored prompts carry none'}.", ""]
            continue
        keys = sorted({(m, v) for e in es for m, v in zip(e.scores.metric, e.scores.metric_version)})
        if not keys:
            out += [f"## {bench} (version {version})", "", "No per-image scores yet.", ""]
        for m, v in keys:
            sh = _shown(es, m, v)
            higher, dec = sh.higher, sh.decimals
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
                out += [f"## {sh.header} by {key}, {bench} (version {version})", "",
                        md_table(header, rows), "", legend_line(sh.header, m, v, sh.unit), ""]
    if not written:
        out += ["No measured results on a benchmark with prompt categories (e.g. parti) yet.", ""]
    return "\n".join(out) + "\n" + provenance(shown, (
        "- Cells: mean over the group's images scored; no intervals in this file (Table 1 has "
        "the overall ones).",))


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


# Entry point ------------------------------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    from distar.core import atomic
    atomic.write_text(path, text)  # replaces a link at `path`, never writes through it
    return path


def write_leaderboards(results_dir: Path, out_dir: Path, with_reported: bool = False, suite: str = "paper",
                       baseline: str | None = None, show_failed: bool = False) -> list[Path]:
    """Write Tables 1-3, the Parti breakdown, the paper's reported numbers and the plots into
    out_dir; returns the files written. `with_reported`: Tables 1 and 3 also show, beside each
    measured column, the paper's number for the same model (headed '(paper)'). `suite`: which
    benchmarks fill the tables ('paper', or one another package registered in SUITES). `baseline`: a model name;
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
