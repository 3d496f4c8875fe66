"""Tables of runs and trials: rich tables for people, CSV and JSON for programs."""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text

from expman.formatting import (
    STATUS_STYLE,
    counts_text,
    csv_cell,
    error_line,
    fmt,
    fmt_duration,
    fmt_metrics,
    printable,
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
from expman.status import RunStatus, run_status
from expman.tablefit import MIN_WRAP, Column, Sheet


def fmt_stats(stats: Stats) -> str:
    if stats.mean is None:
        return "-"
    if stats.std is None:
        return fmt(stats.mean)
    return f"{fmt(stats.mean)} ± {fmt(stats.std)}"


# -- status ---------------------------------------------------------------------------


def experiment_heading(view: ExperimentRecord) -> Text:
    heading = Text(printable(f"experiment {view.name}: "))
    heading.append(printable(view.state), style=STATUS_STYLE.get(view.state, ""))
    pruned = len(view.pruned_trials)
    of_trials = f"; {pruned} trial{'s' if pruned > 1 else ''} pruned" if pruned else ""
    heading.append(f" ({counts_text(view.counts)}{of_trials})")
    if view.status:
        heading.append(printable(f", last session {view.status}"))
    return heading


def _metrics_column(header: str, texts: Sequence[str], metric: str | None) -> Column:
    """Metrics as text: always shown, wrapping, never narrower than ``metric=value``."""
    shown = [t.split("  ", 1)[0] for t in texts] if metric else []
    least = max([len(t) for t in shown if t.startswith(f"{metric}=")] + [MIN_WRAP])
    return Column(header, texts, place="first", wrap=True, min_width=least)


def _notes_column(notes: Sequence[str]) -> list[Column]:
    """Errors and reasons (wrapping, in a later part when the terminal is narrow)."""
    if not any(notes):
        return []
    return [Column("note", notes, priority=9, wrap=True, min_width=NOTE_WIDTH)]


#: The narrowest a column of errors or reasons is made beside others.
NOTE_WIDTH = 40


def runs_table(view: ExperimentRecord, metric: str | None = None) -> Sheet:
    """Every run: status, attempts, epochs done (and trained), time, last metrics, notes.

    Attempts, epochs trained and time cover the run's whole history (every attempt).

    The metrics start with ``metric`` (the ranked one), so a narrow terminal shows it.
    """
    runs = view.runs
    notes = [error_line(run.error) or run.reason or "" for run in runs]
    metrics = [fmt_metrics(run.metrics, first=metric) for run in runs]
    return Sheet(
        (
            Column("run", [run.label for run in runs], place="key"),
            Column("status", [status_text(run.status) for run in runs], place="first"),
            Column("attempts", [str(run.attempts or "-") for run in runs]),
            Column("epochs", [_epochs(run) for run in runs]),
            Column("duration", [fmt_duration(run.duration) for run in runs], priority=1),
            _metrics_column("last metrics", metrics, metric),
            *_notes_column(notes),
        )
    )


def _epochs(run: RunRecord) -> str:
    """Epochs done, and how many were trained when some were trained twice (resumed)."""
    if run.epochs_trained > run.epochs:
        return f"{run.epochs} ({run.epochs_trained} trained)"
    return str(run.epochs)


def experiments_table(views: Sequence[ExperimentRecord]) -> Sheet:
    """Experiments of a workspace with their state."""
    started = [
        datetime.datetime.fromtimestamp(view.started).strftime("%Y-%m-%d %H:%M:%S")
        if view.started
        else "-"
        for view in views
    ]
    return Sheet(
        (
            Column("experiment", [view.name for view in views], place="key"),
            Column("state", [status_text(view.state) for view in views], place="first"),
            Column("runs", [counts_text(view.counts) for view in views], place="first"),
            Column("started", started, priority=1),
            Column("path", [str(view.path) for view in views], wrap=True, min_width=NOTE_WIDTH),
        )
    )


# -- results ----------------------------------------------------------------------------


def results_table(rows: Sequence[TrialSummary], metrics: Sequence[str]) -> Sheet:
    """Trials ranked by their metric: n, mean ± std, min, max, and the differing settings.

    On a narrow terminal the rank, the trial and the ranked metric stay in the first
    part; the settings, n, min and max join them while there is room, then the other
    metrics; what does not fit follows in further parts.
    """
    first = rows[0] if rows else None
    setting_keys = list(first.settings) if first else []
    metric = first.metric if first else ""
    others = [m for m in metrics if m != metric]
    empty = Stats.of([])
    return Sheet(
        (
            Column("", ["*" if row.best else "" for row in rows], place="first"),
            Column("#", [str(row.rank) for row in rows], justify="right", place="first"),
            Column("trial", [_trial_cell(row) for row in rows], place="key"),
            *_pruned_column(rows),
            *(Column(key, [fmt(row.settings.get(key)) for row in rows]) for key in setting_keys),
            Column("n", [f"{row.n}/{row.runs}" for row in rows], justify="right", priority=1),
            Column(
                f"{metric} ({first.mode if first else ''})",
                [fmt_stats(row.stats) for row in rows],
                justify="right",
                place="first",
            ),
            Column("min", [fmt(row.stats.min) for row in rows], justify="right", priority=2),
            Column("max", [fmt(row.stats.max) for row in rows], justify="right", priority=2),
            *(
                Column(
                    name,
                    [fmt_stats(row.metrics.get(name, empty)) for row in rows],
                    justify="right",
                    priority=3,
                )
                for name in others
            ),
        ),
        row_styles=tuple("bold green" if row.best else "" for row in rows),
    )


def _trial_cell(row: TrialSummary) -> str:
    return row.trial if row.in_plan else f"{row.trial} (not in the plan)"


def pruned_note(row: TrialSummary) -> str:
    """How far a pruned trial got, for its row: ``pruned after 2 epochs``."""
    if not row.pruned:
        return ""
    return f"pruned after {row.epochs} epoch{'' if row.epochs == 1 else 's'}"


def _pruned_column(rows: Sequence[TrialSummary]) -> list[Column]:
    """Marks the pruned trials (their value is where they stopped, not a result)."""
    if not any(row.pruned for row in rows):
        return []
    cells = [Text(pruned_note(row), style=STATUS_STYLE[RunStatus.PRUNED]) for row in rows]
    return [Column("pruned", cells, place="first")]


def results_records(rows: Sequence[TrialSummary]) -> list[dict[str, Any]]:
    """The rows as plain dicts (for JSON)."""
    return [
        {
            "rank": row.rank,
            "best": row.best,
            "trial": row.trial,
            "status": row.status,
            "pruned": row.pruned,
            "epochs": row.epochs,
            "reason": row.reason,
            "decision": _decision(row.decision),
            "in_plan": row.in_plan,
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


#: What a trial's row in JSON keeps of the journal's decision to prune it.
DECISION_KEYS: tuple[str, ...] = ("rule", "unit", "repeat", "rung", "epoch", "epochs")
DECISION_KEYS += ("reported", "value", "cutoff", "compared", "reason")


def _decision(decision: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {key: decision.get(key) for key in DECISION_KEYS}


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
    header = ["rank", "best", "trial", "status", "epochs", *setting_keys, "runs", "n"]
    for name in metrics:
        header += [f"{name}_mean", f"{name}_std", f"{name}_min", f"{name}_max"]
    writer.writerow([_cell(name) for name in header])
    for row in rows:
        line: list[Any] = [row.rank, row.best, _cell(row.trial), row.status, row.epochs]
        line += [_cell(row.settings.get(k)) for k in setting_keys]
        line += [row.runs, row.n]
        for name in metrics:
            s = row.metrics.get(name, Stats.of([]))
            line += [_cell(s.mean), _cell(s.std), _cell(s.min), _cell(s.max)]
        writer.writerow(line)
    return out.getvalue()


def _cell(value: Any) -> Any:
    return csv_cell(value)  # None as empty; no cell may start a formula


# -- runs -------------------------------------------------------------------------------


def ranked_runs(
    view: ExperimentRecord, metric: str, mode: Mode, reduce: Reduce
) -> list[tuple[RunRecord, float | None]]:
    """Every run with its value of ``metric``, best first (runs without a value last).

    A pruned run's value is where it stopped, not a result: the pruned runs come after
    the other runs with a value.
    """
    valued = [
        (run, run_value(run, view.curves.get((run.trial, run.repeat)), metric, reduce, mode))
        for run in view.runs
    ]
    sign = 1.0 if mode == "min" else -1.0
    valued.sort(
        key=lambda rv: (
            rv[1] is None,
            run_status(rv[0].status) is RunStatus.PRUNED,
            sign * (rv[1] or 0.0),
        )
    )
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
) -> Sheet:
    """Runs best first: status, seed, epochs, the ranked metric, the other metrics, notes."""
    runs = [run for run, _ in ranked]
    notes = [error_line(run.error) or run.reason or "" for run in runs]
    others = [fmt_metrics({k: v for k, v in run.metrics.items() if k != metric}) for run in runs]
    return Sheet(
        (
            Column("run", [run.label for run in runs], place="key"),
            Column("status", [status_text(run.status) for run in runs], place="first"),
            Column("seed", [fmt(run.seed) for run in runs], priority=1),
            Column("epochs", [str(run.epochs) for run in runs]),
            Column(metric, [fmt(value) for _, value in ranked], justify="right", place="first"),
            Column("metrics", others, wrap=True, min_width=MIN_WRAP + 8),
            *_notes_column(notes),
        )
    )


def runs_csv(records: Sequence[Mapping[str, Any]], metric: str) -> str:
    setting_keys = list(records[0]["settings"]) if records else []
    metric_keys: dict[str, None] = {}
    for record in records:
        metric_keys.update((k, None) for k in record["metrics"] if k != metric)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            _cell(name)
            for name in ("trial", "repeat", "status", "seed", "epochs", *setting_keys, metric)
        ]
        + [_cell(name) for name in metric_keys]
    )
    for r in records:
        writer.writerow(
            [_cell(r["trial"]), r["repeat"], _cell(r["status"]), _cell(r["seed"]), r["epochs"]]
            + [_cell(r["settings"].get(k)) for k in setting_keys]
            + [_cell(r[metric])]
            + [_cell(r["metrics"].get(k)) for k in metric_keys]
        )
    return out.getvalue()
