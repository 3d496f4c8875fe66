"""Tables of runs and trials: rich tables for people, CSV and JSON for programs."""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from expman.formatting import (
    STATUS_STYLE,
    counts_text,
    error_line,
    fmt,
    fmt_duration,
    fmt_metrics,
    status_text,
)
from expman.jsonlines import dumps
from expman.results.reading import ExperimentRecord, RunRecord
from expman.results.summary import (
    Mode,
    Reduce,
    Stats,
    TrialSummary,
    differing_settings,
    run_value,
)


def fmt_stats(stats: Stats) -> str:
    if stats.mean is None:
        return "-"
    if stats.std is None:
        return fmt(stats.mean)
    return f"{fmt(stats.mean)} ± {fmt(stats.std)}"


# -- status ---------------------------------------------------------------------------


def experiment_heading(view: ExperimentRecord) -> Text:
    heading = Text(f"experiment {view.name}: ")
    heading.append(view.state, style=STATUS_STYLE.get(view.state, ""))
    heading.append(f" ({counts_text(view.counts)})")
    if view.status:
        heading.append(f", last session {view.status}")
    return heading


def runs_table(view: ExperimentRecord) -> Table:
    """Every run: status, attempt, epochs done, duration, last metrics, error or reason."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    notes = [error_line(run.error) or run.reason or "" for run in view.runs]
    columns = ["run", "status", "attempt", "epochs", "duration", "last metrics"]
    for name in columns + (["note"] if any(notes) else []):
        table.add_column(name, no_wrap=name != "note")
    for run, note in zip(view.runs, notes, strict=True):
        cells: list[RenderableType] = [
            run.label,
            status_text(run.status),
            str(run.attempt or "-"),
            str(run.epochs),
            fmt_duration(run.duration),
            fmt_metrics(run.metrics),
        ]
        table.add_row(*cells, *([note] if any(notes) else []))
    return table


def experiments_table(views: Sequence[ExperimentRecord]) -> Table:
    """Experiments of a workspace with their state."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("experiment", "state", "runs", "started", "path"):
        table.add_column(name, no_wrap=True)
    for view in views:
        started = (
            datetime.datetime.fromtimestamp(view.started).strftime("%Y-%m-%d %H:%M:%S")
            if view.started
            else "-"
        )
        table.add_row(
            view.name,
            status_text(view.state),
            counts_text(view.counts),
            started,
            str(view.path),
        )
    return table


# -- results ----------------------------------------------------------------------------


def results_table(rows: Sequence[TrialSummary], metrics: Sequence[str]) -> Table:
    """Trials ranked by their metric: n, mean ± std, min, max, and the differing settings."""
    first = rows[0] if rows else None
    setting_keys = list(first.settings) if first else []
    metric = first.metric if first else ""
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("", no_wrap=True)
    table.add_column("#", justify="right")
    table.add_column("trial", no_wrap=True)
    for key in setting_keys:
        table.add_column(key, no_wrap=True)
    table.add_column("n", justify="right")
    table.add_column(f"{metric} ({first.mode if first else ''})", justify="right", no_wrap=True)
    table.add_column("min", justify="right")
    table.add_column("max", justify="right")
    others = [m for m in metrics if m != metric]
    for name in others:
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        style = "bold green" if row.best else ""
        table.add_row(
            "*" if row.best else "",
            str(row.rank),
            row.trial,
            *(fmt(row.settings.get(k)) for k in setting_keys),
            f"{row.n}/{row.runs}",
            fmt_stats(row.stats),
            fmt(row.stats.min),
            fmt(row.stats.max),
            *(fmt_stats(row.metrics.get(name, Stats.of([]))) for name in others),
            style=style,
        )
    return table


def results_records(rows: Sequence[TrialSummary]) -> list[dict[str, Any]]:
    """The rows as plain dicts (for JSON)."""
    return [
        {
            "rank": row.rank,
            "best": row.best,
            "trial": row.trial,
            "settings": dict(row.settings),
            "runs": row.runs,
            "counts": dict(row.counts),
            "metric": row.metric,
            "mode": row.mode,
            "n": row.n,
            "mean": row.stats.mean,
            "std": row.stats.std,
            "min": row.stats.min,
            "max": row.stats.max,
            "metrics": {
                name: {"n": s.n, "mean": s.mean, "std": s.std, "min": s.min, "max": s.max}
                for name, s in row.metrics.items()
            },
        }
        for row in rows
    ]


def results_json(
    view: ExperimentRecord, rows: Sequence[TrialSummary], metric: str, mode: Mode, reduce: Reduce
) -> str:
    doc = {
        "experiment": view.name,
        "path": str(view.path),
        "state": view.state,
        "metric": metric,
        "mode": mode,
        "reduce": reduce,
        "trials": results_records(rows),
    }
    return dumps(doc).decode()


def results_csv(rows: Sequence[TrialSummary], metrics: Sequence[str]) -> str:
    setting_keys = list(rows[0].settings) if rows else []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["rank", "best", "trial", *setting_keys, "runs", "n"]
    for name in metrics:
        header += [f"{name}_mean", f"{name}_std", f"{name}_min", f"{name}_max"]
    writer.writerow(header)
    for row in rows:
        line: list[Any] = [row.rank, row.best, row.trial]
        line += [_cell(row.settings.get(k)) for k in setting_keys]
        line += [row.runs, row.n]
        for name in metrics:
            s = row.metrics.get(name, Stats.of([]))
            line += [_cell(s.mean), _cell(s.std), _cell(s.min), _cell(s.max)]
        writer.writerow(line)
    return out.getvalue()


def _cell(value: Any) -> Any:
    return "" if value is None else value


# -- runs -------------------------------------------------------------------------------


def ranked_runs(
    view: ExperimentRecord, metric: str, mode: Mode, reduce: Reduce
) -> list[tuple[RunRecord, float | None]]:
    """Every run with its value of ``metric``, best first (runs without a value last)."""
    valued = [
        (run, run_value(run, view.curves.get((run.trial, run.repeat)), metric, reduce, mode))
        for run in view.runs
    ]
    sign = 1.0 if mode == "min" else -1.0
    valued.sort(key=lambda rv: (rv[1] is None, sign * (rv[1] or 0.0)))
    return valued


def runs_records(
    view: ExperimentRecord, ranked: Sequence[tuple[RunRecord, float | None]], metric: str
) -> list[dict[str, Any]]:
    settings = differing_settings(view.trials)
    return [
        {
            **run.identity(),
            "settings": settings.get(run.trial, {}),
            metric: value,
            "metrics": dict(run.metrics),
            "error": run.error,
            "reason": run.reason,
        }
        for run, value in ranked
    ]


def runs_ranked_table(
    view: ExperimentRecord, ranked: Sequence[tuple[RunRecord, float | None]], metric: str
) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    notes = [error_line(run.error) or run.reason or "" for run, _ in ranked]
    columns = ["run", "status", "seed", "epochs", metric, "metrics"]
    for name in columns + (["note"] if any(notes) else []):
        table.add_column(name, no_wrap=name != "note")
    for (run, value), note in zip(ranked, notes, strict=True):
        cells: list[RenderableType] = [
            run.label,
            status_text(run.status),
            fmt(run.seed),
            str(run.epochs),
            fmt(value),
            fmt_metrics(run.metrics),
        ]
        table.add_row(*cells, *([note] if any(notes) else []))
    return table


def runs_csv(records: Sequence[Mapping[str, Any]], metric: str) -> str:
    setting_keys = list(records[0]["settings"]) if records else []
    metric_keys: dict[str, None] = {}
    for record in records:
        metric_keys.update((k, None) for k in record["metrics"] if k != metric)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["trial", "repeat", "status", "seed", "epochs", *setting_keys, metric, *metric_keys]
    )
    for r in records:
        writer.writerow(
            [r["trial"], r["repeat"], r["status"], _cell(r["seed"]), r["epochs"]]
            + [_cell(r["settings"].get(k)) for k in setting_keys]
            + [_cell(r[metric])]
            + [_cell(r["metrics"].get(k)) for k in metric_keys]
        )
    return out.getvalue()
