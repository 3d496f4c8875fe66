"""How values look to people: numbers, durations, metrics, statuses and errors in a line.

Shared by the progress displays and the results tables, so a run reads the same
while it trains and afterwards.

Text someone else wrote (names, metric keys, errors) passes through
:func:`~expman.escaping.printable` on its way here (re-exported for the displays).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeGuard

from rich.text import Text

from expman.escaping import csv_cell, printable, printable_json
from expman.status import RunStatus

__all__ = [
    "STATUS_STYLE",
    "counts_text",
    "csv_cell",
    "error_line",
    "fmt",
    "fmt_duration",
    "fmt_metrics",
    "is_number",
    "printable",
    "printable_json",
    "pruned_reason",
    "status_text",
]


def is_number(value: Any) -> TypeGuard[float]:
    """A real number (not a bool, not NaN)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )


#: How each run status (and each experiment state) is coloured on a terminal.
STATUS_STYLE: dict[str, str] = {
    RunStatus.COMPLETED: "green",
    RunStatus.STOPPED: "yellow",
    RunStatus.FAILED: "bold red",
    RunStatus.CANCELLED: "magenta",
    RunStatus.PRUNED: "blue",
    "interrupted": "magenta",
    "running": "cyan",
    "waiting": "dim",
    "not started": "dim",
    "finished": "green",
}


def fmt(value: Any) -> str:
    """A number short enough for a table cell; other values as text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return printable(str(value))


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def fmt_metrics(metrics: Mapping[str, Any], limit: int = 4, first: str | None = None) -> str:
    """``name=value`` pairs of numbers and strings, at most ``limit``; ``first`` leads
    (the ranked metric, which a narrow terminal must still show)."""
    shown = [(k, v) for k, v in metrics.items() if is_number(v) or isinstance(v, str)]
    if first is not None:
        shown.sort(key=lambda item: item[0] != first)  # stable: the others keep their order
    text = "  ".join(f"{printable(str(k))}={fmt(v)}" for k, v in shown[:limit])
    return text + ("  ..." if len(shown) > limit else "")


def status_text(status: str) -> Text:
    return Text(printable(status), style=STATUS_STYLE.get(status, ""))


def pruned_reason(reason: str) -> str:
    """A pruning reason without the ``not started:`` of a repeat settled before it ran."""
    return reason.removeprefix("not started: ")


def counts_text(counts: Mapping[str, int]) -> str:
    return printable(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no runs")


def error_line(text: str | None) -> str:
    """The line of an error that names it: a traceback's last line, else the first line."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Traceback") or len(lines) == 1:
        return printable(lines[-1])
    return printable(lines[0]) + " ..."
