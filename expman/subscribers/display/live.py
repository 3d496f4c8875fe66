"""The live terminal display: overall progress with an ETA, active runs, counts, failures.

rich redraws it from its own refresh thread (4 times a second) by calling
:meth:`LiveDisplay.__rich__`; the bus handler only folds events into the state, under
a lock that the renderer holds just long enough to copy what it draws.  Failures are
printed above the live area as they happen, from a worker thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from expman.events import Event, ExperimentFinished, ExperimentStarted, RunFinished, RunRetrying
from expman.formatting import (
    STATUS_STYLE,
    counts_text,
    error_line,
    fmt_duration,
    fmt_metrics,
    status_text,
)
from expman.status import RunStatus
from expman.subscribers.display.base import Display
from expman.subscribers.display.lines import failure_line
from expman.workspace.layout import ExperimentLayout

#: At most this many active runs get a line of their own.
MAX_ACTIVE_LINES = 12


class LiveDisplay(Display):
    """A live-updating progress view on a terminal (rich)."""

    name = "display.live"

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        super().__init__(self.console.file)
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._started = False  # the live area was shown (it is not shown again once closed)
        self._root: Path | None = None

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    async def __call__(self, events: Sequence[Event] | Event) -> None:
        if isinstance(events, Event):  # subscribed without batch=True
            events = [events]
        printed: list[RenderableType] = []
        start, stop = not self._started, False
        with self._lock:
            for event in events:
                self.state.apply(event)
                if isinstance(event, ExperimentStarted):
                    self._root = Path(event.path)
                elif isinstance(event, ExperimentFinished):
                    stop = True
                elif isinstance(event, RunFinished) and event.status == "failed":
                    log = self._run_log(event)
                    printed.append(Text(failure_line(event, log), style="bold red"))
                elif isinstance(event, RunRetrying):
                    printed.append(
                        Text(
                            f"{event.trial}/run_{event.repeat}: retrying (attempt {event.attempt})",
                            style="yellow",
                        )
                    )
        if start:
            await anyio.to_thread.run_sync(self._start)
        for renderable in printed:
            await anyio.to_thread.run_sync(self._print, renderable)
        if stop:
            await anyio.to_thread.run_sync(self.close)

    def _print(self, renderable: RenderableType) -> None:
        # soft_wrap: a long failure line stays one line (the terminal wraps it, copy-paste works).
        self.console.print(renderable, soft_wrap=True)

    def _run_log(self, event: Event) -> Path | None:
        if self._root is None or event.trial is None or event.repeat is None:
            return None
        return ExperimentLayout(self._root).run(event.trial, event.repeat).log_file

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._live = Live(self, console=self.console, refresh_per_second=4, transient=True)
            self._live.start()

    def close(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    # -- drawing ------------------------------------------------------------------------

    def __rich__(self) -> RenderableType:
        with self._lock:
            s = self.state
            name, total, done, waiting = s.name, s.total, s.done, s.waiting
            counts = dict(s.counts)
            elapsed, eta = s.elapsed, s.eta()
            active = [
                (r.label, r.epoch, r.max_epochs, dict(r.metrics), r.attempt, r.started)
                for r in s.active.values()
            ]
        now = time.monotonic()
        head = Table.grid(padding=(0, 1))
        head.add_column(no_wrap=True)
        head.add_column(no_wrap=True)
        head.add_column(no_wrap=True)
        head.add_row(
            Text(name or "expman", style="bold"),
            ProgressBar(total=max(total, 1), completed=done, width=40),
            Text(
                f"{done}/{total} runs  {fmt_duration(elapsed)} elapsed"
                f"  {'~' + fmt_duration(eta) + ' left' if eta is not None and done < total else ''}"
            ),
        )
        tally = Text()
        for status in RunStatus:
            tally.append(f"{status} {counts.get(status, 0)}", style=STATUS_STYLE[status])
            tally.append("  ")
        tally.append(f"running {len(active)}", style=STATUS_STYLE["running"])
        tally.append(f"  waiting {waiting}", style=STATUS_STYLE["waiting"])
        runs = Table.grid(padding=(0, 2))
        for _ in range(4):
            runs.add_column(no_wrap=True)
        for label, epoch, max_epochs, metrics, attempt, started in active[:MAX_ACTIVE_LINES]:
            if epoch is None:
                where = "starting"
            else:
                where = f"epoch {epoch + 1}" + (f"/{max_epochs}" if max_epochs else "")
            if attempt > 1:
                where += f" (attempt {attempt})"
            runs.add_row(
                Text("  " + label, style="cyan"),
                where,
                fmt_duration(now - started),
                fmt_metrics(metrics),
            )
        parts: list[RenderableType] = [head, tally, runs]
        if len(active) > MAX_ACTIVE_LINES:
            parts.append(Text(f"  ... and {len(active) - MAX_ACTIVE_LINES} more running"))
        return Group(*parts)

    def summary(self, result: Any) -> None:
        self.close()
        table = Table(title=None, box=None, pad_edge=False, header_style="bold")
        for column in ("run", "status", "epochs", "duration", "metrics", "note"):
            table.add_column(column, no_wrap=column != "note")
        for run in result.runs:
            table.add_row(
                f"{run.trial}/run_{run.repeat}",
                status_text(run.status) + (" (done before)" if run.skipped else ""),
                str(run.epochs),
                fmt_duration(run.duration),
                fmt_metrics(run.metrics),
                error_line(run.error) or run.reason or "",
            )
        heading = Text(f"experiment {result.name}: ", style="bold")
        heading.append(result.status, style=STATUS_STYLE.get(result.status, ""))
        heading.append(f" ({counts_text(result.counts)}) in {fmt_duration(result.duration)}")
        self.console.print(heading)
        self.console.print(table)
        self.console.print(f"workspace: {result.path}", highlight=False)
