"""Training prompts: a .txt (one per line), .tsv (a prompt column) or .parquet file, or an
evalsuite benchmark (`bench:NAME`).

The paper trained on LAION-aesthetic prompts with aesthetic score > 6.25; no such list ships
here, and any list works. Text and TSV files go through evalsuite.benchmarks' readers, so a
malformed file raises a DistarError naming the file and the line, as `distar eval` does.
"""
from __future__ import annotations

import csv
from pathlib import Path

from distar.core.errors import DistarError
from evalsuite.benchmarks import load_benchmark, read_tsv_prompts, read_txt_prompts

# Column names tried, in order, for the prompt text of a .tsv or .parquet file.
TEXT_COLUMNS = ("prompt", "Prompt", "caption", "text", "TEXT")


def _text_column(names: list[str], path: Path) -> str:
    for name in TEXT_COLUMNS:
        if name in names:
            return name
    raise DistarError(f"Malformed prompt file {path}, line 1: no prompt column; expected one of "
                      f"{', '.join(TEXT_COLUMNS)} (found: {', '.join(names) or 'none'}).")


def _read_parquet(path: Path) -> list[str]:
    import pyarrow.parquet as pq
    try:
        table = pq.read_table(path)
    except Exception as e:  # ArrowInvalid, OSError: not a parquet file
        raise DistarError(f"Malformed prompt file {path}: not a readable parquet file "
                          f"({type(e).__name__}: {e}).") from None
    col = _text_column(table.column_names, path)
    prompts = []
    for row, value in enumerate(table.column(col).to_pylist()):
        if not isinstance(value, str) or not value.strip():
            raise DistarError(f"Malformed prompt file {path}, row {row} (0-based): column "
                              f"'{col}' is {value!r}, not a non-empty string.")
        prompts.append(value)
    return prompts


def load_prompts(source: str) -> list[str]:
    """The prompt list named by `source` (config field `sd.prompts`)."""
    if source.startswith("bench:"):
        return [p.text for p in load_benchmark(source[len("bench:"):]).prompts]
    path = Path(source).expanduser()
    if not path.is_file():
        raise DistarError(f"Prompt file {path} does not exist. Set sd.prompts to a .txt / .tsv / "
                          f".parquet file or to bench:NAME (e.g. bench:coco30k).")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        prompts = [p.text for p in read_txt_prompts(path)]
    elif suffix == ".tsv":
        with open(path, encoding="utf-8", newline="") as f:
            header = next(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), [])
        prompts = [p.text for p in read_tsv_prompts(path, _text_column(header, path))]
    elif suffix == ".parquet":
        prompts = _read_parquet(path)
    else:
        raise DistarError(f"Prompt file {path}: unknown format '{suffix}'. Use .txt (one prompt "
                          f"per line), .tsv (with a prompt column) or .parquet.")
    if not prompts:
        raise DistarError(f"Prompt file {path} has no prompts.")
    return prompts
