"""Displays for pipes and programs: plain log lines, or one JSON event per line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any

from expman.events import (
    Event,
    ExperimentStarted,
    IntegrationCaughtUp,
    IntegrationLagging,
    PruneDecision,
    RunFinished,
    RunRetrying,
    RunStalled,
    RunStarted,
    TrialSampled,
    to_dict,
)
from expman.formatting import error_line, fmt, fmt_metrics, printable, printable_json
from expman.jsonlines import dumps
from expman.status import RunStatus
from expman.subscribers.display.base import Display
from expman.subscribers.display.state import pruned_label
from expman.subscribers.display.summary import plain_summary
from expman.workspace.layout import ExperimentLayout


def plural(n: int, word: str) -> str:
    """``1 run``, ``2 runs``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def prune_line(event: PruneDecision) -> str | None:
    """``pruned <trial>: <reason>`` for a decision to prune (None for ``continue``)."""
    if event.action != "prune":
        return None
    return f"pruned {pruned_label(event)}: {event.reason or event.rule}"


def failure_line(event: RunFinished, log: Path | None) -> str:
    """Trial, repeat, the error's last line and where the run's log is."""
    error = error_line(event.error) or event.reason or "failed"
    where = f" (log: {log})" if log else ""
    return f"{event.trial}/run_{event.repeat}: FAILED after {event.duration:.1f}s: {error}{where}"


class LineDisplay(Display):
    """One line per run start, finish and failure: for pipes, logs and ``--quiet``."""

    name = "display.lines"

    def __init__(self, out: IO[str] | None = None) -> None:
        super().__init__(out)
        self._root: Path | None = None

    def line_for(self, event: Event) -> str | None:
        state = self.state
        label = f"{event.trial}/run_{event.repeat}"
        if isinstance(event, ExperimentStarted):
            self._root = Path(event.path)
            return (
                f"experiment {event.experiment}: {plural(event.runs, 'run')} in "
                f"{plural(event.trials, 'trial')}"
                f" -> {event.path}"
            )
        if isinstance(event, RunStarted):
            attempt = f", attempt {event.attempt}" if event.attempt > 1 else ""
            start = f", from epoch {event.start_epoch}" if event.start_epoch else ""
            return f"{label}: started (seed {event.seed}{attempt}{start})"
        if isinstance(event, RunFinished):
            progress = f"[{state.done}/{state.total}] "
            if RunStatus(event.status).is_failure:
                return progress + failure_line(event, self.run_log(event))
            note = f" ({event.reason})" if event.reason else ""
            metrics = fmt_metrics(event.metrics)
            return (
                f"{progress}{label}: {event.status} in {event.duration:.1f}s,"
                f" {plural(event.epochs, 'epoch')}{note}{'  ' + metrics if metrics else ''}"
            )
        if isinstance(event, RunRetrying):
            return f"{label}: retrying (attempt {event.attempt})"
        if isinstance(event, PruneDecision):
            return prune_line(event)
        if isinstance(event, TrialSampled):
            values = ", ".join(f"{k}={fmt(v)}" for k, v in event.values.items())
            return f"{event.trial}: sampled {values}"
        if isinstance(event, RunStalled):
            return f"{label}: stalled, no epoch for {fmt(event.seconds)}s"
        if isinstance(event, IntegrationLagging):
            why = f": {event.error}" if event.error else ""
            return (
                f"integration {event.integration}: lagging, {event.pending:,} values waiting"
                f" for {fmt(event.behind)}s{why} (runs go on)"
            )
        if isinstance(event, IntegrationCaughtUp):
            return f"integration {event.integration}: caught up after {fmt(event.lagged)}s"
        return None

    def run_log(self, event: Event) -> Path | None:
        if self._root is None or event.trial is None or event.repeat is None:
            return None
        return ExperimentLayout(self._root).run(event.trial, event.repeat).log_file


class JsonDisplay(Display):
    """Every event as one JSON object per line on stdout; people's text goes to stderr."""

    name = "display.json"

    def line_for(self, event: Event) -> str | None:
        return dumps(to_dict(event)).decode()

    def shown(self, text: str) -> str:
        return printable_json(text)  # still the same JSON

    def shown_line(self, line: str) -> str:
        return printable_json(line)

    def note(self, text: str) -> None:
        print(printable(text, newlines=True), file=sys.stderr)

    def summary(self, result: Any) -> None:
        print(printable(plain_summary(result), newlines=True), end="", file=sys.stderr)
