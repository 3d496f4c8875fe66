"""The live terminal display: overall progress with an ETA, active runs, counts, failures.

rich redraws it from its own refresh thread (4 times a second) by calling
:meth:`LiveDisplay.__rich_console__`; the bus handler only folds events into the state, under
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
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from expman.direction import preferred_metric
from expman.events import (
    Event,
    ExperimentFinished,
    ExperimentStarted,
    PruneDecision,
    RunFinished,
    RunRetrying,
)
from expman.formatting import (
    STATUS_STYLE,
    counts_text,
    fmt_duration,
    fmt_metrics,
    is_number,
    printable,
)
from expman.status import RunStatus
from expman.subscribers.display.base import Display
from expman.subscribers.display.lines import failure_line, prune_line
from expman.subscribers.display.summary import (
    best_heading,
    best_sheet,
    digest,
    failures_sheet,
    integration_lines,
    lists_every_run,
    more_text,
    pruned_lines,
    pruned_trials,
    runs_sheet,
    stop_text,
)
from expman.tablefit import print_table
from expman.workspace.layout import ExperimentLayout

#: At most this many active runs get a line of their own.
MAX_ACTIVE_LINES = 12

#: The widest the progress bar gets (it narrows on a narrow terminal, down to 10).
BAR_WIDTH = 40

#: An active run's metrics are shown only when at least this much room is left.
MIN_METRICS_WIDTH = 10


#: At most this many pruned trials are named in the counts line.
PRUNED_NAMED = 3


def pruned_names(pruned: Sequence[str]) -> str:
    """``pruned trials: b, d (+4 more)``: what the pruner decided, the first few named.

    The counts above count runs that ended ``pruned``; a decision comes before that.
    """
    more = len(pruned) - PRUNED_NAMED
    return f"pruned trials: {', '.join(pruned[:PRUNED_NAMED])}" + (
        f" (+{more} more)" if more > 0 else ""
    )


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
        self.console.print(printable(text, newlines=True), highlight=False, markup=False)

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
                elif isinstance(event, RunFinished) and RunStatus(event.status).is_failure:
                    log = self._run_log(event)
                    printed.append(Text(printable(failure_line(event, log)), style="bold red"))
                elif isinstance(event, PruneDecision) and event.action == "prune":
                    line = prune_line(event) or ""
                    style = STATUS_STYLE[RunStatus.PRUNED]
                    printed.append(Text(printable(line), style=style))
                elif isinstance(event, RunRetrying):
                    printed.append(
                        Text(
                            printable(
                                f"{event.trial}/run_{event.repeat}: retrying"
                                f" (attempt {event.attempt})"
                            ),
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

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """The live area at the terminal's width (called by rich's refresh thread)."""
        with self._lock:
            s = self.state
            name, total, done, waiting = s.name, s.total, s.done, s.waiting
            counts = dict(s.counts)
            pruned = list(s.pruned)
            elapsed, eta = s.elapsed, s.eta()
            active = [
                (r.label, r.epoch, r.max_epochs, dict(r.metrics), r.attempt, r.started)
                for r in s.active.values()
            ]
        width = options.max_width
        title = Text(printable(name or "expman"), style="bold")
        pace = Text(
            f"{done}/{total} runs  {fmt_duration(elapsed)} elapsed"
            f"  {'~' + fmt_duration(eta) + ' left' if eta is not None and done < total else ''}"
        )
        pace.rstrip()
        # The bar takes what the name and the counts leave, between 10 and 40 columns.
        bar = max(10, min(BAR_WIDTH, width - title.cell_len - pace.cell_len - 2))
        head = Table.grid(padding=(0, 1))
        for _ in range(3):
            head.add_column(no_wrap=True)
        head.add_row(title, ProgressBar(total=max(total, 1), completed=done, width=bar), pace)
        tally = Text()
        for status in RunStatus:
            tally.append(f"{status} {counts.get(status, 0)}", style=STATUS_STYLE[status])
            tally.append("  ")
        tally.append(f"running {len(active)}", style=STATUS_STYLE["running"])
        tally.append(f"  waiting {waiting}", style=STATUS_STYLE["waiting"])
        if pruned:
            tally.append(
                printable(f"  {pruned_names(pruned)}"), style=STATUS_STYLE[RunStatus.PRUNED]
            )
        yield head
        yield tally
        yield self._active_runs(active[:MAX_ACTIVE_LINES], width)
        if len(active) > MAX_ACTIVE_LINES:
            yield Text(f"  ... and {len(active) - MAX_ACTIVE_LINES} more running")

    @staticmethod
    def _active_runs(active: list[tuple[Any, ...]], width: int) -> Table:
        """One line per active run: its name whole, then where it is, then its metrics
        (the ranked one first), cut with an ellipsis at the terminal's edge."""
        now = time.monotonic()
        rows = []
        for label, epoch, max_epochs, metrics, attempt, started in active:
            if epoch is None:
                where = "starting"
            else:
                where = f"epoch {epoch + 1}" + (f"/{max_epochs}" if max_epochs else "")
            if attempt > 1:
                where += f" (attempt {attempt})"
            metric = preferred_metric([k for k, v in metrics.items() if is_number(v)])
            shown = fmt_metrics(metrics, first=metric)
            rows.append(("  " + printable(label), where, fmt_duration(now - started), shown))
        fixed = [max((cell_len(row[i]) for row in rows), default=0) for i in range(3)]
        runs = Table.grid(padding=(0, 2))
        for size in fixed:
            runs.add_column(no_wrap=True, width=size)
        room = width - sum(fixed) - 2 * 3
        if room >= MIN_METRICS_WIDTH:
            runs.add_column(no_wrap=True, overflow="ellipsis", width=room)
        for label, where, duration, shown in rows:
            cells: list[RenderableType] = [Text(label, style="cyan"), where, duration]
            runs.add_row(*cells, *([Text(shown)] if room >= MIN_METRICS_WIDTH else []))
        return runs

    def summary(self, result: Any) -> None:
        self.close()
        heading = Text(printable(f"experiment {result.name}: "), style="bold")
        heading.append(result.status, style=STATUS_STYLE.get(result.status, ""))
        heading.append(f" ({counts_text(result.counts)}) in {fmt_duration(result.duration)}")
        console = self.console
        console.print(heading)
        pruned_style = STATUS_STYLE[RunStatus.PRUNED]
        if lists_every_run(result):
            print_table(console, runs_sheet(result.runs))
            pruned = pruned_trials(result.runs)
            for line in pruned_lines(tuple(pruned.items()), len(pruned)):
                console.print(Text(printable(line), style=pruned_style), soft_wrap=True)
        else:
            found = digest(result)
            why = stop_text(result)
            if why is not None:
                console.print(Text(printable(why), style="yellow"), highlight=False, soft_wrap=True)
            console.print(Text(printable(best_heading(result, found))), highlight=False)
            if found.best:
                print_table(console, best_sheet(found))
            if found.failed:
                console.print(Text(f"failed runs ({found.failed}):", style="bold red"))
                print_table(console, failures_sheet(found.failures))
            for line in pruned_lines(found.pruned, found.pruned_trials):
                console.print(Text(printable(line), style=pruned_style), soft_wrap=True)
            for line in more_text(result, found):
                console.print(Text(printable(line)), highlight=False, soft_wrap=True)
        for line in integration_lines(result):
            style = "yellow" if "LOST" in line else ""
            console.print(Text(printable(line), style=style), highlight=False, soft_wrap=True)
        console.print(Text(printable(f"workspace: {result.path}")), highlight=False)
