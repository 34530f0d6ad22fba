"""The one markdown table writer and the number / metric-name formatting every report shares:
the leaderboard tables, the gallery's score captions, di_star's demo
tables. Nothing else in the project builds a markdown table by hand."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

MISSING = "—"

# Column alignment codes: 'l' / 'r' / 'c' (left, right, centre), '-' (none: renderer's default).
_RULE = {"l": ":---", "r": "---:", "c": ":---:", "-": "---"}


def fmt_number(x: float, decimals: int) -> str:
    """`x` to `decimals` places, never "-0.00" (a rounded negative zero prints as 0.00)."""
    s = f"{x:.{decimals}f}"
    return s[1:] if re.fullmatch(r"-0\.?0*", s) else s


def md_cell(text: str) -> str:
    """A cell's text: '|' escaped and newlines flattened, so a value never breaks the row, and
    '&', '<', '>' as entities, so a category or model name holding HTML (a `<script>` in a .tsv)
    shows as text wherever the markdown is rendered."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]],
             align: Sequence[str] | str | None = None) -> str:
    """A GitHub markdown table (no trailing newline). `align`: one code per column ('l', 'r',
    'c', '-'), or one code for every column; default: first column left, the others right."""
    if align is None:
        align = ["l"] + ["r"] * (len(header) - 1)
    elif isinstance(align, str):
        align = [align] * len(header)
    if len(align) != len(header) or any(len(r) != len(header) for r in rows):
        raise ValueError(f"md_table: {len(header)} columns, alignments for {len(align)}, "
                         f"row widths {sorted({len(r) for r in rows})}")
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |",
             "|" + "|".join(_RULE[a] for a in align) + "|"]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class Shown:
    """How a metric's numbers are shown, as its MetricInfo recorded it with its scores
    (evalsuite.metrics.base): a short label, the direction (None: no arrow, no bold), decimals,
    the unit."""
    label: str
    higher: bool | None = None
    decimals: int = 3
    unit: str = ""
    bounds: tuple[float, float] | None = None   # the values' range, where there is one

    @classmethod
    def from_info(cls, metric: str, info: dict | None) -> "Shown":
        """From a stored `info` dict; a store written before metrics described themselves has
        no label, unit or decimals: the metric's name, 3 decimals."""
        from evalsuite.metrics.runner import declared_bounds
        info = info or {}
        bounds = info.get("bounds") or declared_bounds(metric)
        return cls(info.get("label") or metric, info.get("higher_is_better"),
                   int(info.get("decimals", 3)), info.get("unit") or "",
                   tuple(float(b) for b in bounds) if bounds else None)

    @property
    def header(self) -> str:
        """The column head: label and arrow (<= 24 characters for the labels metrics give)."""
        return f"{self.label}{arrow(self.higher)}"


def arrow(higher: bool | None) -> str:
    return "" if higher is None else (" ↑" if higher else " ↓")


def short_version(version: str) -> str:
    """The part of a stored metric version before the first '|' (its name and unit)."""
    return version.split("|", 1)[0].strip() or version


def column_id(metric: str, version: str) -> str:
    return f"{metric} ({short_version(version)})"


def legend_line(header: str, metric: str, version: str, unit: str = "") -> str:
    """One legend line under a table: a short column head, the stored metric and its full
    version key."""
    return f"- {header}: `{metric}`{f' ({unit})' if unit else ''}, version `{version}`"


def score_text(shown: Shown, value: float) -> str:
    """'PickScore 0.2100': a metric's label and value at its table precision."""
    return f"{shown.label} {fmt_number(value, shown.decimals)}"
