"""Leaderboard figures: which measured points to plot (quality vs latency per benchmark, the
ablation's reward vs fidelity), and the drawing, as deterministic PNGs (matplotlib Agg, object
API, no pyplot state).

Determinism: matplotlib's default style (a user's matplotlibrc cannot leak in), a fixed size and
dpi, and PNG metadata without the 'Software' entry; the Agg PNG writer adds no date. The same
points therefore give byte-identical files on the same matplotlib/freetype build.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evalsuite.leaderboard.entries import Entry, bench_groups, label_entries
from evalsuite.leaderboard.markdown import MISSING, short_version

if TYPE_CHECKING:  # the tables module imports this one
    from evalsuite.leaderboard.tables import Suite

LATENCY_PLOT = "quality_vs_latency_{bench}.png"
ABLATION_PLOT = "ablation_reward_vs_fidelity.png"

DPI = 120
PNG_METADATA = {"Software": None}


@dataclass(frozen=True)
class Point:
    label: str
    x: float
    y: float
    xerr: tuple[float, float] | None = None   # interval (lo, hi), not half-widths
    yerr: tuple[float, float] | None = None
    size: float | None = None                 # parameters in billions (marker area)


def _err(values: Sequence[float], intervals: Sequence[tuple[float, float] | None]):
    if all(i is None for i in intervals):
        return None
    lo = [v - i[0] if i else 0.0 for v, i in zip(values, intervals)]
    hi = [i[1] - v if i else 0.0 for v, i in zip(values, intervals)]
    return [lo, hi]


def save_png(fig: Figure, path: Path) -> Path:
    from distar.core import atomic
    FigureCanvasAgg(fig)
    with atomic.temp_file(path) as tmp:  # replaces a link at `path`, never writes through it
        fig.savefig(tmp, format="png", dpi=DPI, metadata=PNG_METADATA)
    return path


def _scatter(points: Sequence[Point], xlabel: str, ylabel: str, title: str, logx: bool,
             sized: bool) -> Figure:
    fig = Figure(figsize=(7.0, 4.8))
    ax = fig.add_subplot()
    xs, ys = [p.x for p in points], [p.y for p in points]
    sizes = [40.0 + 60.0 * (p.size or 0.0) if sized else 50.0 for p in points]
    ax.errorbar(xs, ys, xerr=_err(xs, [p.xerr for p in points]),
                yerr=_err(ys, [p.yerr for p in points]), fmt="none", ecolor="0.55",
                elinewidth=1.0, capsize=2.5, zorder=1)
    ax.scatter(xs, ys, s=sizes, c=[f"C{i % 10}" for i in range(len(points))], alpha=0.85,
               edgecolors="black", linewidths=0.6, zorder=2)
    for p in points:
        text = p.label + (f"\n{p.size:g}B params" if sized and p.size else "")
        ax.annotate(text, (p.x, p.y), xytext=(6, 6), textcoords="offset points", fontsize=7)
    if logx:
        ax.set_xscale("log")
        lo, hi = min(xs), max(xs)
        ax.set_xlim(lo / 2.0, hi * 8.0)  # room on the right for the labels
    else:
        ax.margins(x=0.3, y=0.1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return fig


def quality_vs_latency(points: Sequence[Point], ylabel: str, title: str, path: Path) -> Path:
    """x: seconds per 10 images (log), y: a preference score with its interval, marker area:
    parameter count (the paper's 'David vs Goliath' comparison)."""
    with matplotlib.style.context("default"):
        fig = _scatter(points, "seconds per 10 images (log scale) ↓", ylabel,
                       title + " (marker area ~ parameters)", logx=True, sized=True)
        return save_png(fig, path)


def reward_vs_fidelity(points: Sequence[Point], xlabel: str, ylabel: str, title: str,
                       path: Path) -> Path:
    """The ablation's trade-off: a human-preference reward (y) against prompt fidelity (x)."""
    with matplotlib.style.context("default"):
        fig = _scatter(points, xlabel, ylabel, title + "; labels: (α_rew, α_cfg)", logx=False,
                       sized=False)
        return save_png(fig, path)



def params_billion(params: Any) -> float | None:
    m = re.fullmatch(r"\s*([\d.]+)\s*([BMK]?)\s*", str(params or ""), flags=re.I)
    if not m:
        return None
    scale = {"B": 1.0, "M": 1e-3, "K": 1e-6, "": 1e-9}[m.group(2).upper()]
    return float(m.group(1)) * scale




def alphas_text(e: Entry) -> str:
    """'(alpha_rew, alpha_cfg)' of a `distar train` checkpoint's recipe, or '—'."""
    a = e.alphas
    return MISSING if a is None else f"({a[0]:g}, {a[1]:g})"


def _latency_points(es: list[Entry], metrics: Sequence[str]):
    for metric in metrics:
        versions = sorted({v for e in es for m, v in e.metric_keys() if m == metric})
        for v in versions:
            pts = []
            for e in es:
                s, t = e.summary(metric, v), e.latency()
                if s is None or t is None:
                    continue
                pts.append(Point(label=f"{e.label}\n{t.device}", x=t.value, y=s.value,
                                 yerr=s.ci, size=params_billion(e.meta("params"))))
            if len(pts) >= 1:
                return pts, _axis_label(es, metric, v)
    return [], ""


def _axis_label(es: list[Entry], metric: str, version: str) -> str:
    """'PickScore ↑ (PickScore_v1/cos)': the metric's label and arrow, as its scores recorded
    them, and its short version."""
    return f"{es[0].shown_as(metric, version).header} ({short_version(version)})"


def write_plots(entries: list[Entry], out_dir: Path, suite: Suite) -> list[Path]:
    """Quality vs latency per benchmark (the paper's David-vs-Goliath picture) and, for the
    ablation, reward vs fidelity. A plot with no measured point is not written (and a stale
    one from an earlier store is removed)."""
    written = []
    for bench in suite.table1_benches:
        path = out_dir / (suite.prefix + LATENCY_PLOT.format(bench=bench))
        es = [e for e in entries if e.bench == bench]
        for _, _, group in bench_groups(es)[-1:]:  # the newest benchmark version if several
            label_entries(group)
            pts, ylabel = _latency_points(group, suite.plot_metrics)
            if pts:
                quality_vs_latency(pts, ylabel, f"{bench}: quality vs latency", path)
                written.append(path)
        if path not in written and path.exists():
            path.unlink()
    path = out_dir / (suite.prefix + ABLATION_PLOT)
    abl = [e for e in entries if e.alphas is not None and e.bench == suite.ablation_bench]
    pts, xlabel, ylabel = [], "", ""
    for _, _, group in bench_groups(abl)[-1:]:
        label_entries(group)
        x_metric = next((x for x in suite.fidelity_metrics if any(m == x for e in group for m, _ in e.metric_keys())),
                        suite.fidelity_metrics[0])
        xs = sorted({(m, v) for e in group for m, v in e.metric_keys() if m == x_metric})
        for y_metric in suite.plot_metrics:
            ys = sorted({(m, v) for e in group for m, v in e.metric_keys() if m == y_metric})
            if xs and ys:
                for e in group:
                    sx, sy = e.summary(*xs[0]), e.summary(*ys[0])
                    if sx is not None and sy is not None:
                        pts.append(Point(label=f"{e.label} {alphas_text(e)}", x=sx.value,
                                               y=sy.value, xerr=sx.ci, yerr=sy.ci))
                xlabel = f"{_axis_label(group, *xs[0])}  (fidelity to the prompt)"
                ylabel = _axis_label(group, *ys[0])
                break
    if pts:
        reward_vs_fidelity(pts, xlabel, ylabel, f"{suite.ablation_bench} ablation: reward vs fidelity", path)
        written.append(path)
    elif path.exists():
        path.unlink()
    return written


