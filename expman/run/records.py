"""The records of a run that every layer above the runtime reads.

* :class:`RunOutcome` is how one run ended (public as ``expman.RunResult``).
* :class:`ResumePoint` is where a run continues from: its latest complete checkpoint.
* :class:`ResumePlan` is what resuming an experiment does: the runs to execute now,
  the runs already done (reported as before), and each restart's checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expman.status import RunStatus

if TYPE_CHECKING:
    from expman.config import RunSpec


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a run continues from: its latest complete checkpoint."""

    checkpoint: Path | None
    epoch: int  # the first epoch to run: the checkpoint's epoch + 1
    state: Mapping[str, Any] = field(default_factory=dict)
    attempts: int = 0
    #: The run's last reported metrics when the checkpoint was saved.
    metrics: Mapping[str, Any] = field(default_factory=dict)
    #: Older checkpoints to fall back on, newest first, should this one not load.
    fallbacks: tuple[ResumePoint, ...] = ()


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How one run ended (``skipped``: it had ended in an earlier session).

    Public as ``expman.RunResult`` (the runs of an ``ExperimentResult``).
    """

    trial: str
    repeat: int
    status: RunStatus
    metrics: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    reason: str | None = None
    duration: float = 0.0
    epochs: int = 0
    attempt: int = 1
    seed: int = 0
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """The runs to execute now, the ones already done, and where each restarts."""

    todo: tuple[RunSpec, ...]
    done: tuple[RunOutcome, ...]
    points: Mapping[tuple[str, int], ResumePoint] = field(default_factory=dict)
    resumed: bool = False

    previously_run: frozenset[tuple[str, int]] = frozenset()
    #: Journal records that were skipped (one line each, naming file and line).
    problems: tuple[str, ...] = ()
    #: The journal's PruneDecision records, in order (the pruner folds them back).
    decisions: tuple[Mapping[str, Any], ...] = ()
    #: Each run's export to each integration: (integration, trial, repeat) -> its
    #: :class:`~expman.workspace.journal.ExportRecord`.
    exports: Mapping[tuple[str, str, int], Any] = field(default_factory=dict)

    @property
    def restarting(self) -> list[tuple[RunSpec, ResumePoint | None]]:
        """Runs that ran before and run again (with their checkpoint, if any).

        Not those a journaled prune reached: they are settled pruned, never run again.
        """
        trials = {d.get("trial") for d in self.decisions if _prunes(d, "trial")}
        runs = {(d.get("trial"), d.get("repeat")) for d in self.decisions if _prunes(d, "run")}
        return [
            (s, self.points.get(s.key))
            for s in self.todo
            if s.key in self.previously_run and s.trial.name not in trials and s.key not in runs
        ]


def _prunes(decision: Mapping[str, Any], unit: str) -> bool:
    return decision.get("action") == "prune" and decision.get("unit", "trial") == unit
