"""The end-of-run summary of ``expman run``: every run when few, a digest when many.

Up to :data:`EVERY_RUN_UP_TO` runs the summary lists every run.  Beyond that it would
be a screenful per hundred runs, so it shows instead:

* the counts by status (in the heading, as always);
* the :data:`BEST` best trials by the ranked metric: the metric ``expman results``
  ranks by when none is named (:func:`expman.direction.preferred_metric` over the
  numeric metrics the runs ended with; its direction from its name), each trial's
  value being the mean over its completed and stopped runs, as in ``expman results``;
* the failed runs with their error's line (the first :data:`FAILURES`, then how many
  more);
* the pruned trials with the pruner's reason (the first :data:`FAILURES`, then how
  many more): a trial with a ``pruned`` run is never among the best, whatever value
  it had when it stopped;
* the command that lists everything (``expman status`` / ``expman results``).

A small experiment's list of every run ends with the pruned trials too.  Skipped
runs (done in an earlier session) count like the others.  With no metric
whose direction the name tells, no trial is ranked and the summary says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rich.cells import cell_len

from expman.direction import Mode, infer_mode, preferred_metric
from expman.formatting import (
    error_line,
    fmt,
    fmt_duration,
    fmt_metrics,
    is_number,
    printable,
    pruned_reason,
    status_text,
)
from expman.run.records import RunOutcome
from expman.status import RunStatus, run_status
from expman.tablefit import MIN_WRAP, Column, Sheet

#: Experiments with at most this many runs get one line per run.
EVERY_RUN_UP_TO = 20

#: How many of the best trials a large experiment's summary shows.
BEST = 10

#: How many failed runs a large experiment's summary lists.
FAILURES = 10

#: The narrowest a column of errors or reasons is made beside others.
NOTE_WIDTH = 40


class EndedExperiment(Protocol):
    """What the summary reads of an ``ExperimentResult``."""

    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def path(self) -> Path: ...
    @property
    def runs(self) -> Sequence[RunOutcome]: ...
    @property
    def duration(self) -> float: ...
    @property
    def counts(self) -> Mapping[str, int]: ...


@dataclass(frozen=True, slots=True)
class RankedTrial:
    """A trial in the digest: its mean of the ranked metric over its counted runs."""

    rank: int
    trial: str
    mean: float
    n: int
    runs: int


@dataclass(frozen=True, slots=True)
class Digest:
    """What a large experiment's summary shows besides its heading."""

    metric: str | None
    mode: Mode | None
    best: tuple[RankedTrial, ...]
    trials: int  # trials with a value of the metric
    failures: tuple[RunOutcome, ...]
    failed: int  # all failed runs (failures holds the first FAILURES)
    #: The pruned trials (the first FAILURES) as (trial, the pruner's reason).
    pruned: tuple[tuple[str, str], ...] = ()
    pruned_trials: int = 0  # all pruned trials


def lists_every_run(result: EndedExperiment) -> bool:
    return len(result.runs) <= EVERY_RUN_UP_TO


def run_label(run: RunOutcome) -> str:
    return f"{run.trial}/run_{run.repeat}"


def ranked_metric(runs: Sequence[RunOutcome]) -> tuple[str | None, Mode | None]:
    """The metric the summary ranks by, and its direction (None, None without one)."""
    names: dict[str, None] = {}
    for run in runs:
        names.update((k, None) for k, v in run.metrics.items() if is_number(v))
    metric = preferred_metric(list(names))
    mode = infer_mode(metric) if metric is not None else None
    return (metric, mode) if mode is not None else (None, None)


def pruned_trials(runs: Sequence[RunOutcome]) -> dict[str, str]:
    """The trials with a ``pruned`` run, in plan order -> the pruner's reason."""
    out: dict[str, str] = {}
    for run in runs:
        if run.status is RunStatus.PRUNED and not out.get(run.trial):
            out[run.trial] = pruned_reason(run.reason or "")
    return out


def digest(result: EndedExperiment) -> Digest:
    """The best trials, the failures and the pruned trials of ``result``."""
    runs = result.runs
    metric, mode = ranked_metric(runs)
    pruned = pruned_trials(runs)
    values: dict[str, list[float]] = {}
    totals: dict[str, int] = {}
    for run in runs:
        totals[run.trial] = totals.get(run.trial, 0) + 1
        status = run_status(run.status)
        value = run.metrics.get(metric) if metric is not None else None
        counted = status is not None and status.counts_as_result and run.trial not in pruned
        if counted and is_number(value):
            if math.isfinite(value):
                values.setdefault(run.trial, []).append(float(value))
    sign = 1.0 if mode == "min" else -1.0
    means = sorted(
        ((math.fsum(v) / len(v), name, len(v)) for name, v in values.items()),
        key=lambda item: sign * item[0],
    )
    best = tuple(
        RankedTrial(rank=i + 1, trial=name, mean=mean, n=n, runs=totals[name])
        for i, (mean, name, n) in enumerate(means[:BEST])
    )
    failed = [run for run in runs if run.status == RunStatus.FAILED]
    return Digest(
        metric,
        mode,
        best,
        len(means),
        tuple(failed[:FAILURES]),
        len(failed),
        tuple(pruned.items())[:FAILURES],
        len(pruned),
    )


def heading_text(result: EndedExperiment) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts.items()))
    return f"experiment {result.name}: {result.status} ({counts}) in {result.duration:.2f}s"


def stop_text(result: EndedExperiment) -> str | None:
    """Why a large experiment ended early: the reason its first unfinished run gives.

    A pruned run's reason is the pruner's judgement of its trial, not why the
    experiment ended: it is listed with the pruned trials instead.
    """
    if result.status not in ("cancelled", "stopped"):
        return None
    for run in result.runs:
        if run.status is RunStatus.PRUNED:
            continue
        if run.status in (RunStatus.CANCELLED, RunStatus.STOPPED) and run.reason:
            return f"stopped: {run.reason.removeprefix('not started: ')}"
    return None


def pruned_lines(trials: Sequence[tuple[str, str]], total: int) -> list[str]:
    """``pruned trials (2):`` and a line per trial with the pruner's reason."""
    if not total:
        return []
    lines = [f"  pruned trials ({total}):"]
    lines += [f"    {trial}: {reason or 'pruned'}" for trial, reason in trials]
    if total > len(trials):
        lines.append(f"    ... and {total - len(trials)} more pruned trials")
    return lines


def best_heading(result: EndedExperiment, found: Digest) -> str:
    if found.metric is None:
        return (
            f"{len(result.runs)} runs; no metric's name says whether lower or higher is"
            f" better (expman results {result.path} --metric NAME --mode min|max)"
        )
    shown = len(found.best)
    which = f"the {shown} best of {found.trials} trials" if shown < found.trials else "trials"
    return f"{which} by {found.metric} ({found.mode} is better, mean over repeats):"


def more_text(result: EndedExperiment, found: Digest) -> list[str]:
    """Where the rest is: how many failures were left out, the commands that list all."""
    more = found.failed - len(found.failures)
    lines = [f"  ... and {more} more failed runs"] if more > 0 else []
    lines.append(f"  every run: expman status {result.path}")
    lines.append(f"  every trial: expman results {result.path}")
    return lines


def runs_sheet(runs: Sequence[RunOutcome]) -> Sheet:
    """Every run: its name and status, the metrics (the ranked one first), notes."""
    metric, _ = ranked_metric(runs)
    notes = [error_line(run.error) or run.reason or "" for run in runs]
    texts = [fmt_metrics(run.metrics, first=metric) for run in runs]
    least = max([MIN_WRAP, *(cell_len(t.split("  ", 1)[0]) for t in texts)])
    columns = [
        Column("run", [run_label(run) for run in runs], place="key"),
        Column(
            "status",
            [status_text(run.status) + (" (done before)" if run.skipped else "") for run in runs],
            place="first",
        ),
        Column("epochs", [str(run.epochs) for run in runs]),
        Column("duration", [fmt_duration(run.duration) for run in runs]),
        Column("metrics", texts, place="first", wrap=True, min_width=least),
    ]
    if any(notes):
        columns.append(Column("note", notes, priority=1, wrap=True, min_width=NOTE_WIDTH))
    return Sheet(tuple(columns))


def best_sheet(found: Digest) -> Sheet:
    best = found.best
    return Sheet(
        (
            Column("#", [str(row.rank) for row in best], justify="right", place="first"),
            Column("trial", [row.trial for row in best], place="key"),
            Column(
                f"{found.metric} (mean)",
                [fmt(row.mean) for row in best],
                justify="right",
                place="first",
            ),
            Column("runs", [f"{row.n}/{row.runs}" for row in best], justify="right"),
        ),
        row_styles=tuple("bold green" if row.rank == 1 else "" for row in best),
    )


def failures_sheet(failures: Sequence[RunOutcome]) -> Sheet:
    return Sheet(
        (
            Column("run", [run_label(run) for run in failures], place="key"),
            Column(
                "error",
                [error_line(run.error) or "failed" for run in failures],
                place="first",
                wrap=True,
                min_width=NOTE_WIDTH,
            ),
        )
    )


def integration_lines(result: EndedExperiment) -> list[str]:
    """A line per integration: what it sent and, exactly, what it lost (and why)."""
    lines = []
    for name, totals in (getattr(result, "integrations", None) or {}).items():
        if totals.get("unavailable"):
            lines.append(f"  integration {name}: UNAVAILABLE, nothing sent: {totals.get('error')}")
            continue
        text = f"  integration {name}: {totals.get('sent', 0):,} values sent"
        lost = totals.get("lost", 0)
        if lost:
            runs = list(totals.get("runs") or ())
            shown = ", ".join(runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
            text += f", {lost:,} LOST ({shown})"
            if totals.get("error"):
                text += f": {totals['error']}"
        elif totals.get("retries"):
            text += f" (after {totals['retries']:,} retried calls)"
        lines.append(text)
    return lines


def plain_summary(result: EndedExperiment) -> str:
    """The end-of-run summary as plain text (a pipe, ``--quiet``, ``--json``'s stderr)."""
    lines = [heading_text(result)]
    if lists_every_run(result):
        for run in result.runs:
            metrics = ", ".join(f"{k}={fmt(v)}" for k, v in list(run.metrics.items())[:4])
            note = error_line(run.error) or run.reason or ""
            skipped = " (done before)" if run.skipped else ""
            lines.append(
                f"  {run_label(run)}: {run.status}{skipped} {metrics}{'  ' + note if note else ''}"
            )
        pruned = pruned_trials(result.runs)
        lines += pruned_lines(tuple(pruned.items()), len(pruned))
    else:
        found = digest(result)
        why = stop_text(result)
        if why is not None:
            lines.append(f"  {why}")
        lines.append(f"  {best_heading(result, found)}")
        for row in found.best:
            lines.append(
                f"  {row.rank:>4}. {row.trial}  {found.metric}={fmt(row.mean)}"
                f"  ({row.n} of {row.runs} runs)"
            )
        if found.failed:
            lines.append(f"  failed runs ({found.failed}):")
            for run in found.failures:
                lines.append(f"    {run_label(run)}: {error_line(run.error) or 'failed'}")
        lines += pruned_lines(found.pruned, found.pruned_trials)
        lines += more_text(result, found)
    lines += integration_lines(result)
    lines.append(f"workspace: {result.path}")
    # Line by line: a newline in a metric key or a reason cannot forge a line.
    return "\n".join(map(printable, lines)) + "\n"
