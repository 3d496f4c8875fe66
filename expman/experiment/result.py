"""How an experiment ended: its status and every run's result, in plan order."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expman.config import ExperimentPlan
from expman.run.records import RunOutcome as RunResult
from expman.status import RunStatus


@dataclass(frozen=True, slots=True)
class ExperimentResult:
    """How an experiment ended: its status, directory and every run's result."""

    name: str
    status: str
    path: Path
    runs: tuple[RunResult, ...]
    duration: float = 0.0
    #: Each integration's totals this session, by name: ``sent``, ``lost``,
    #: ``retries``, ``runs`` (those that lost values), ``error`` (the last failure).
    integrations: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(str(run.status) for run in self.runs))

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.runs if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return self.status == "completed"


def experiment_status(runs: Iterable[RunResult]) -> RunStatus:
    """``failed`` if a run failed, else ``cancelled`` if one was interrupted, else completed."""
    statuses = {r.status for r in runs}
    for status in (RunStatus.FAILED, RunStatus.CANCELLED):
        if status in statuses:
            return status
    return RunStatus.COMPLETED


def in_plan_order(plan: ExperimentPlan, runs: tuple[RunResult, ...]) -> tuple[RunResult, ...]:
    order = {spec.key: i for i, spec in enumerate(plan.runs)}
    return tuple(sorted(runs, key=lambda r: order.get((r.trial, r.repeat), len(order))))
