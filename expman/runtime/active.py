"""The runs between their RunStarted and RunFinished, and what the runtime holds of each.

Invariant: :class:`ActiveRuns` holds exactly the runs whose ``RunStarted`` has been
published and whose ``RunFinished`` has not.  Stopping, checkpoints and the per-run
callback dispatch all find a run here by its key ``(trial, repeat)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup

from expman.run.context import RunContext


@dataclass(eq=False, slots=True)
class ActiveRun:
    """One running attempt: its context, its watchers' task group, its cancel scope."""

    ctx: RunContext
    watchers: TaskGroup | None = None
    scope: anyio.CancelScope | None = None
    #: Why the runtime cancelled the pipeline (grace, timeout, stalled), if it did.
    cause: str | None = None


class ActiveRuns:
    """The active runs by key."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, int], ActiveRun] = {}

    def add(self, key: tuple[str, int], run: ActiveRun) -> None:
        self._runs[key] = run

    def remove(self, key: tuple[str, int]) -> None:
        self._runs.pop(key, None)

    def get(self, key: tuple[str, int] | None) -> ActiveRun | None:
        return self._runs.get(key) if key is not None else None

    def matching(
        self, scope: str, trial: str | None, key: tuple[str, int] | None
    ) -> list[ActiveRun]:
        """The runs a request of ``scope`` reaches (every run, a trial's, or one)."""
        if scope == "experiment":
            return list(self._runs.values())
        if scope == "trial":
            return [run for k, run in self._runs.items() if k[0] == trial]
        found = self.get(key)
        return [found] if found is not None else []
