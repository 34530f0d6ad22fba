"""The one markdown table writer and the number / metric-name formatting every report shares:
the leaderboard tables, the gallery's score captions, di_star's demo
tables. Nothing else in the project builds a markdown table by hand."""
from __future__ import annotations

import re
from typing import Sequence

MISSING = "—"

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

# Column alignment codes: 'l' / 'r' / 'c' (left, right, centre), '-' (none: renderer's default).
_RULE = {"l": ":---", "r": "---:", "c": ":---:", "-": "---"}


def fmt_number(x: float, decimals: int) -> str:
    """`x` to `decimals` places, never "-0.00" (a rounded negative zero prints as 0.00)."""
    s = f"{x:.{decimals}f}"
    return s[1:] if re.fullmatch(r"-0\.?0*", s) else s


def md_cell(text: str) -> str:
    """A cell's text: '|' escaped and newlines flattened, so a value never breaks the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


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


def metric_info(metric: str) -> tuple[str, bool | None, int]:
    """(label, higher_is_better, decimals) of a stored metric name."""
    return METRICS_SHOWN.get(metric, (metric, None, 3))


def arrow(higher: bool | None) -> str:
    return "" if higher is None else (" ↑" if higher else " ↓")


def short_version(version: str) -> str:
    """The part of a stored metric version before the first '|' (its name and unit)."""
    return version.split("|", 1)[0].strip() or version


def column_id(metric: str, version: str) -> str:
    return f"{metric} ({short_version(version)})"


def metric_header(metric: str, version: str | None) -> str:
    label, higher, _ = metric_info(metric)
    if version is None:
        return f"{label}{arrow(higher)}"
    short = short_version(version)
    return f"{label}{arrow(higher)}" + ("" if short == label else f" ({short})")


def score_text(metric: str, value: float) -> str:
    """'PickScore 0.2100': a metric's label and value at its table precision."""
    label, _, decimals = metric_info(metric)
    return f"{label} {fmt_number(value, decimals)}"
