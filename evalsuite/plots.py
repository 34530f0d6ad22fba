"""Leaderboard figures as deterministic PNGs (matplotlib Agg, object API, no pyplot state).

Determinism: matplotlib's default style (a user's matplotlibrc cannot leak in), a fixed size and
dpi, and PNG metadata without the 'Software' entry; the Agg PNG writer adds no date. The same
points therefore give byte-identical files on the same matplotlib/freetype build.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=DPI, metadata=PNG_METADATA)
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

