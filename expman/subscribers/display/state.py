"""What a progress display knows: events folded into counts, active runs and an ETA."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from expman.events import (
    EpochEnd,
    Event,
    ExperimentFinished,
    ExperimentStarted,
    PruneDecision,
    RunFinished,
    RunRetrying,
    RunStarted,
)
from expman.status import RunStatus

#: Keys of a trial's settings that may say how many epochs its runs have.
EPOCH_KEYS = ("epochs", "max_epochs", "pipeline.epochs", "pipeline.max_epochs")


@dataclass(slots=True)
class ActiveRun:
    """A run between its RunStarted and its RunFinished."""

    trial: str
    repeat: int
    attempt: int
    started: float
    epoch: int | None = None
    max_epochs: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.trial}/run_{self.repeat}"

    @property
    def fraction(self) -> float:
        """How much of this run is done, when its number of epochs is known."""
        if self.epoch is None or not self.max_epochs:
            return 0.0
        return min(1.0, (self.epoch + 1) / self.max_epochs)


@dataclass(slots=True)
class ProgressState:
    """Counts, active runs and timing of one experiment, folded from its events.

    Invariant: ``done_before + sum(counts.values()) + len(active) <= total`` (runs
    retried after a failure leave ``counts`` again when ``RunRetrying`` arrives).
    """

    name: str = ""
    total: int = 0
    done_before: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    active: dict[tuple[str, int], ActiveRun] = field(default_factory=dict)
    max_epochs: dict[str, int] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    status: str | None = None
    #: What the pruners pruned, in order: a trial (or ``trial/run_k``) -> the reason.
    pruned: dict[str, str] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        """Fold one event into the state."""
        if isinstance(event, ExperimentStarted):
            self.name, self.total = event.experiment, event.runs
            self.started = time.monotonic()
        elif isinstance(event, ExperimentFinished):
            self.finished = time.monotonic()
            self.status = event.status
        elif isinstance(event, RunStarted):
            assert event.trial is not None
            assert event.repeat is not None
            self.active[(event.trial, event.repeat)] = ActiveRun(
                trial=event.trial,
                repeat=event.repeat,
                attempt=event.attempt,
                started=time.monotonic(),
                epoch=event.start_epoch - 1 if event.start_epoch else None,
                max_epochs=self.max_epochs.get(event.trial),
            )
        elif isinstance(event, EpochEnd):
            run = self.active.get((event.trial, event.repeat))  # type: ignore[arg-type]
            if run is not None:
                run.epoch, run.metrics = event.epoch, event.metrics
        elif isinstance(event, RunFinished):
            self.active.pop((event.trial, event.repeat), None)  # type: ignore[arg-type]
            self.counts[event.status] = self.counts.get(event.status, 0) + 1
        elif isinstance(event, RunRetrying) and self.counts.get(RunStatus.FAILED):
            self.counts[RunStatus.FAILED] -= 1
        elif isinstance(event, PruneDecision) and event.action == "prune":
            self.pruned.setdefault(pruned_label(event), event.reason)

    @property
    def done(self) -> int:
        return self.done_before + sum(self.counts.values())

    @property
    def waiting(self) -> int:
        return max(0, self.total - self.done - len(self.active))

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    def eta(self) -> float | None:
        """Seconds left, from the pace of this session (finished runs and epochs so far)."""
        todo = self.total - self.done_before
        progress = sum(self.counts.values()) + sum(r.fraction for r in self.active.values())
        if todo <= 0 or progress <= 0 or self.started is None:
            return None
        return max(0.0, self.elapsed * (todo - progress) / progress)


def pruned_label(event: PruneDecision) -> str:
    """What a prune decision stops: its trial, or with ``unit: run`` the one run."""
    if event.unit == "run" and event.repeat is not None:
        return f"{event.trial}/run_{event.repeat}"
    return str(event.trial)


def epochs_of(settings: Mapping[str, Any]) -> int | None:
    """How many epochs a trial's settings promise, if they say."""
    for key in EPOCH_KEYS:
        value: Any = settings
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
