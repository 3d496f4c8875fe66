"""Aggregation over repeats: one row per trial, ranked, and epoch curves with mean ± std.

A run's value of a metric is its final value (``reduce="last"``: the metric in the
run's final metrics, else its last epoch's) or its best epoch (``reduce="best"``).
Only runs whose status counts as a result (``completed``, ``stopped`` on purpose)
count; failed, cancelled, interrupted and running runs do not.  ``std`` is the sample
standard deviation (n - 1); it is ``None`` for a single value.

**Pruned trials.**  A trial with a ``pruned`` run was cut short by a pruner: its
value is not a result.  Its row is marked (``pruned``, the furthest ``epochs`` any
of its runs trained, the pruner's ``reason``, the journal's ``decision`` to prune
it) and ``stats`` holds the value each of its finished runs reached when it ended
(the last value of a pruned run), so a reader can see how far it got; it is ranked
after every trial that was not pruned and has a value (the furthest-trained first,
then by that value) and is never the best.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from expman.direction import infer_mode, preferred_metric
from expman.errors import ResultsError
from expman.formatting import is_number, pruned_reason
from expman.results.reading import Curve, ExperimentRecord, RunRecord, TrialRecord
from expman.status import RunStatus, run_status

Mode = Literal["min", "max"]
Reduce = Literal["last", "best"]


@dataclass(frozen=True, slots=True)
class Stats:
    """A metric over a trial's repeats."""

    n: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    values: tuple[float, ...] = ()

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            return cls(0, None, None, None, None, ())
        mean, std = mean_std(values)
        return cls(len(values), mean, std, min(values), max(values), tuple(values))


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (n - 1; None for one value).

    In floats, two passes: statistics.stdev computes in exact fractions, which costs
    a second for the curves of a 500-trial sweep.
    """
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True, slots=True)
class TrialSummary:
    """One trial aggregated over its repeats; ``rank`` 1 is the best."""

    trial: str
    rank: int
    metric: str
    mode: Mode
    stats: Stats
    settings: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Stats] = field(default_factory=dict)
    runs: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)
    #: False for a trial whose runs the journal holds but the plan no longer does.
    in_plan: bool = True
    #: A pruner stopped it (one of its runs is ``pruned``): ranked after, never the best.
    pruned: bool = False
    #: The most epochs any of its runs got through.
    epochs: int = 0
    #: Why it was pruned (the pruner's reason), when it was.
    reason: str | None = None
    #: The journal's decision to prune it (rule, rung, epoch, epochs, value, cutoff,
    #: compared, ...), when the journal has one.
    decision: Mapping[str, Any] | None = None

    @property
    def best(self) -> bool:
        return self.rank == 1 and self.stats.n > 0 and not self.pruned

    @property
    def status(self) -> str:
        """``pruned``; ``complete`` when every run is a result; else ``partial``."""
        if self.pruned:
            return "pruned"
        complete = self.runs > 0 and all(_counts(status) for status in self.counts)
        return "complete" if complete else "partial"

    @property
    def mean(self) -> float | None:
        return self.stats.mean

    @property
    def std(self) -> float | None:
        return self.stats.std

    @property
    def n(self) -> int:
        return self.stats.n


def metric_names(view: ExperimentRecord) -> list[str]:
    """Every numeric metric any run reported, in order of first appearance."""
    names: dict[str, None] = {}
    for run in view.runs:
        for curve in (view.curves.get((run.trial, run.repeat)) or {}).values():
            names.update((k, None) for k, v in curve.items() if is_number(v))
        names.update((k, None) for k, v in run.metrics.items() if is_number(v))
    return list(names)


def default_metric(view: ExperimentRecord, names: Sequence[str] | None = None) -> str:
    """The metric to rank by when none is named: the first whose direction is known.

    ``names``: the view's :func:`metric_names`, when the caller has them already.
    """
    names = metric_names(view) if names is None else names
    if not names:
        raise ResultsError(f"{view.path}: no run reported any numeric metric yet")
    if view.objective is not None and view.objective[0] in names:
        return view.objective[0]  # what the search optimised
    return preferred_metric(names) or names[0]


def resolve_metric(
    view: ExperimentRecord,
    metric: str | None,
    mode: str | None,
    names: Sequence[str] | None = None,
) -> tuple[str, Mode]:
    """The metric and mode a query uses; ResultsError naming what exists if unknown."""
    names = metric_names(view) if names is None else names
    if metric is None:
        metric = default_metric(view, names)
    elif metric not in names:
        known = ", ".join(names) or "(none reported yet)"
        raise ResultsError(f"{view.path}: unknown metric {metric!r}; known metrics: {known}")
    if mode is None:
        objective = view.objective
        mode = objective[1] if objective is not None and objective[0] == metric else None
        mode = mode or infer_mode(metric)
        if mode is None:
            raise ResultsError(
                f"cannot tell whether a lower or a higher {metric!r} is better;"
                " say so with --mode min|max (mode='min'|'max' in Python)"
            )
    if mode not in ("min", "max"):
        raise ResultsError(f"mode must be 'min' or 'max', got {mode!r}")
    return metric, mode  # type: ignore[return-value]


def run_value(
    run: RunRecord, curve: Curve | None, metric: str, reduce: Reduce, mode: Mode
) -> float | None:
    """One run's value of ``metric``: final (``last``) or best epoch (``best``)."""
    final = run.metrics.get(metric)
    if reduce == "last":
        if is_number(final):
            return float(final)
        for epoch in sorted(curve or {}, reverse=True):
            value = (curve or {})[epoch].get(metric)
            if is_number(value):
                return float(value)
        return None
    values = [float(c[metric]) for c in (curve or {}).values() if is_number(c.get(metric))]
    if is_number(final):
        values.append(float(final))
    if not values:
        return None
    return min(values) if mode == "min" else max(values)


def differing_settings(trials: Sequence[TrialRecord]) -> dict[str, dict[str, Any]]:
    """For each trial, its settings (dotted keys) whose values differ between trials."""
    flat = {t.name: dict(flatten(t.settings)) for t in trials}
    keys: dict[str, None] = {}
    for values in flat.values():
        keys.update((k, None) for k in values)
    missing = object()
    differing = [
        k for k in keys if len({repr(values.get(k, missing)) for values in flat.values()}) > 1
    ]
    return {name: {k: values.get(k) for k in differing} for name, values in flat.items()}


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{name}.")
        else:
            yield name, value


def summarize(
    view: ExperimentRecord,
    metric: str,
    mode: Mode,
    reduce: Reduce = "last",
    names: Sequence[str] | None = None,
) -> list[TrialSummary]:
    """One row per trial over its repeats, ranked best first (trials without values last)."""
    settings = differing_settings(view.trials)
    names = metric_names(view) if names is None else names
    by_trial: dict[str, list[RunRecord]] = {}
    for run in view.runs:
        by_trial.setdefault(run.trial, []).append(run)
    rows = []
    for trial in view.trials:
        runs = by_trial.get(trial.name, [])
        pruned = [r for r in runs if run_status(r.status) is RunStatus.PRUNED]
        # A pruned trial shows where its runs got to; no value of it is a result.
        counted = (
            [r for r in runs if _reached(r.status)]
            if pruned
            else [r for r in runs if _counts(r.status)]
        )
        per_metric = {}
        for name in names:
            name_mode = mode if name == metric else (infer_mode(name) or mode)
            values = []
            for r in counted:
                value = run_value(r, view.curves.get((r.trial, r.repeat)), name, reduce, name_mode)
                if value is not None:
                    values.append(value)
            per_metric[name] = Stats.of(values)
        counts: dict[str, int] = {}
        for r in runs:
            counts[r.status] = counts.get(r.status, 0) + 1
        decision = view.prune_of(trial.name) if pruned else None
        reason = next((pruned_reason(r.reason) for r in pruned if r.reason), None)
        if reason is None and decision is not None:
            reason = str(decision.get("reason") or "") or None
        rows.append(
            _Row(
                trial,
                per_metric.get(metric, Stats.of([])),
                per_metric,
                len(runs),
                counts,
                bool(pruned),
                max((r.epochs for r in runs), default=0),
                reason,
                decision,
            )
        )
    sign = 1.0 if mode == "min" else -1.0

    def order(row: _Row) -> tuple[bool, bool, int, float]:
        # Valued trials first; among them the pruned after the others, the
        # furthest-trained first (a pruner let it through more rungs).
        mean = row.stats.mean
        return (mean is None, row.pruned, -row.epochs if row.pruned else 0, sign * (mean or 0.0))

    rows.sort(key=order)
    return [
        TrialSummary(
            trial=row.trial.name,
            rank=i + 1,
            metric=metric,
            mode=mode,
            stats=row.stats,
            settings=settings.get(row.trial.name, {}),
            metrics=row.metrics,
            runs=row.runs,
            counts=row.counts,
            in_plan=row.trial.in_plan,
            pruned=row.pruned,
            epochs=row.epochs,
            reason=row.reason,
            decision=row.decision,
        )
        for i, row in enumerate(rows)
    ]


@dataclass(frozen=True, slots=True)
class _Row:
    """A trial's aggregates before ranking."""

    trial: TrialRecord
    stats: Stats
    metrics: dict[str, Stats]
    runs: int
    counts: dict[str, int]
    pruned: bool
    epochs: int
    reason: str | None
    decision: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class TrialCurve:
    """A trial's mean ± std of a metric per epoch over its repeats (n: repeats at that epoch)."""

    trial: str
    epochs: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    n: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class History:
    """Epoch curves of one metric: per run, and per trial as mean ± std over repeats."""

    metric: str
    runs: Mapping[tuple[str, int], tuple[tuple[int, float], ...]]
    trials: Mapping[str, TrialCurve]


def history(view: ExperimentRecord, metric: str) -> History:
    """The epoch curves of ``metric`` (every run that reported it, whatever its status)."""
    runs: dict[tuple[str, int], tuple[tuple[int, float], ...]] = {}
    for run in view.runs:
        curve = view.curves.get((run.trial, run.repeat)) or {}
        points = tuple(
            (epoch, float(curve[epoch][metric]))
            for epoch in sorted(curve)
            if is_number(curve[epoch].get(metric))
        )
        if points:
            runs[(run.trial, run.repeat)] = points
    by_trial: dict[str, dict[int, list[float]]] = {}
    for (name, _), points in runs.items():
        by_epoch = by_trial.setdefault(name, {})
        for epoch, value in points:
            by_epoch.setdefault(epoch, []).append(value)
    trials: dict[str, TrialCurve] = {}
    for trial in view.trials:
        by_epoch = by_trial.get(trial.name, {})
        if not by_epoch:
            continue
        epochs = tuple(sorted(by_epoch))
        stats = [mean_std(by_epoch[e]) for e in epochs]
        trials[trial.name] = TrialCurve(
            trial=trial.name,
            epochs=epochs,
            mean=tuple(mean for mean, _ in stats),
            std=tuple(std or 0.0 for _, std in stats),
            n=tuple(len(by_epoch[e]) for e in epochs),
        )
    return History(metric=metric, runs=runs, trials=trials)


def _counts(status: str | None) -> bool:
    """Whether a run with this (recorded) status is a result."""
    known = run_status(status)
    return known is not None and known.counts_as_result


def _reached(status: str | None) -> bool:
    """Whether a run with this status ended where it got to (a result, or pruned there)."""
    known = run_status(status)
    return known is not None and known.is_finished
