"""The one progress display of every long loop (generation, scoring, training, the demo), on
stderr.

- Phases before the first item ("loading ...", "warm-up ...") are shown as they start, so a
  slow load never reads as a hang.
- Rate = items done since counting started / wall seconds since counting started (`start()`, or
  the bar's creation): a batch that lands all at once cannot inflate it, as a sliding window
  of update timestamps does (a 12-image run once showed 20638 img/s). ETA = items left / rate.
- The current item (a run name, a batch) is shown beside the numbers.
- On a terminal: a rich bar. Otherwise (a log file, nohup, a cluster job): one plain line every
  `every` seconds (env DISTAR_PROGRESS_EVERY, default 10) and at each phase change and at the
  end, flushed, so a redirected log is never empty while work is being done.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import TextIO


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-:--"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_every() -> float:
    """Seconds between progress lines when not on a terminal: $DISTAR_PROGRESS_EVERY, checked
    (a word or NaN there is one clear error, not a traceback mid-run), default 10."""
    from distar.core.validate import env_number
    return env_number("DISTAR_PROGRESS_EVERY", 10.0, lo=0.0, hi=86400.0)


class ProgressBar:
    def __init__(self, description: str, total: int, unit: str = "img", completed: int = 0,
                 stream: TextIO | None = None, every: float | None = None,
                 disable: bool = False, tty: bool | None = None):
        self.description, self.total, self.unit = description, int(total), unit
        self.completed = self._counted_from = int(completed)
        self.stream = stream or sys.stderr
        self.every = progress_every() if every is None else float(every)
        self.disable = disable
        self.item: str | None = None
        self.phase_text: str | None = None
        self._t0 = self._last_line = time.perf_counter()
        self._rich = None
        if disable:
            return
        is_tty = self.stream.isatty() if tty is None else tty
        self._lock = threading.Lock()
        if not is_tty:
            # A heartbeat: a line every `every` seconds even while one batch or one load runs.
            self._stop = threading.Event()
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        if is_tty:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)
            self._rich = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                  TimeElapsedColumn(),
                                  console=Console(file=self.stream, force_terminal=True),
                                  transient=False, refresh_per_second=2)
            self._rich.start()
            self._task = self._rich.add_task(description, total=self.total,
                                             completed=self.completed, status="")

    # What the numbers say ---------------------------------------------------------------------
    def rate(self) -> float | None:
        """Items per second since counting started; None before the first item."""
        done = self.completed - self._counted_from
        elapsed = time.perf_counter() - self._t0
        return done / elapsed if done > 0 and elapsed > 0 else None

    def eta(self) -> float | None:
        r = self.rate()
        return (self.total - self.completed) / r if r else None

    def status(self) -> str:
        if self.phase_text:
            return f"{self.phase_text} ..."
        r = self.rate()
        parts = [f"{r:.3g} {self.unit}/s" if r else f"- {self.unit}/s",
                 f"ETA {_clock(self.eta())}"]
        if self.item:
            parts.append(self.item)
        return ", ".join(parts)

    def line(self) -> str:
        pct = 100.0 * self.completed / self.total if self.total else 100.0
        elapsed = time.perf_counter() - self._t0
        return (f"{self.description}: {self.completed}/{self.total} ({pct:.0f}%), "
                f"{self.status()}, elapsed {_clock(elapsed)}")

    # Changes ----------------------------------------------------------------------------------
    def phase(self, text: str | None) -> None:
        """Show a phase before counting ('loading model', 'warm-up'); None ends it."""
        self.phase_text = text
        self._show(force=True)

    def start(self) -> None:
        """Counting starts now: the rate excludes loading and warm-up before this call."""
        self.phase_text = None
        self._t0 = time.perf_counter()
        self._counted_from = self.completed
        self._show(force=False)

    def advance(self, n: int = 1, item: str | None = None) -> None:
        self.update(self.completed + n, item)

    def update(self, completed: int, item: str | None = None) -> None:
        self.completed = int(completed)
        if item is not None:
            self.item = item
        self.phase_text = None
        self._show(force=False)

    def close(self) -> None:
        if self.disable:
            return
        if self._rich is not None:
            self._refresh_rich()
            self._rich.stop()
            self._rich = None
        else:
            self._stop.set()
            self._write()
        self.disable = True

    def _tick(self) -> None:
        while not self._stop.wait(min(self.every, 1.0)):
            if time.perf_counter() - self._last_line >= self.every:
                self._write()

    def _refresh_rich(self) -> None:
        self._rich.update(self._task, completed=self.completed, status=self.status())

    def _show(self, force: bool) -> None:
        if self.disable:
            return
        if self._rich is not None:
            self._refresh_rich()
        elif force or time.perf_counter() - self._last_line >= self.every:
            self._write()

    def _write(self) -> None:
        with self._lock:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._last_line = time.perf_counter()


@contextmanager
def progress_bar(description: str, total: int, disable: bool = False, unit: str = "img",
                 completed: int = 0, **kwargs):
    """A ProgressBar closed on exit (a final line is always written when not disabled)."""
    bar = ProgressBar(description, total, unit=unit, completed=completed, disable=disable,
                      **kwargs)
    try:
        yield bar
    finally:
        bar.close()
