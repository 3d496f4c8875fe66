"""Trials' lifecycle: ``TrialStarted`` before a trial's first run, ``TrialFinished`` after its last.

A trial starts when its first run to execute in this session is about to start
(every other run of it waits until ``TrialStarted`` is published), and finishes
when the last of its runs to execute has ended, with the count of each status.
A trial none of whose runs execute (all done before, or all stopped before they
started) publishes neither.
"""

from __future__ import annotations

from collections.abc import Iterable

import anyio

from expman.bus import EventBus
from expman.config import RunSpec
from expman.events import TrialFinished, TrialStarted
from expman.status import RunStatus


class Trials:
    """Counts each trial's runs in and out, publishing its start and finish."""

    def __init__(self, experiment: str, bus: EventBus, todo: Iterable[RunSpec]) -> None:
        self._experiment = experiment
        self._bus = bus
        self._left: dict[str, int] = {}
        for spec in todo:
            self._left[spec.trial.name] = self._left.get(spec.trial.name, 0) + 1
        self._started: dict[str, anyio.Event] = {}
        self._counts: dict[str, dict[str, int]] = {}

    async def run_starting(self, spec: RunSpec) -> None:
        """Before a run starts: its trial's ``TrialStarted`` is published (once)."""
        name = spec.trial.name
        ready = self._started.get(name)
        if ready is not None:
            await ready.wait()
            return
        ready = self._started[name] = anyio.Event()
        try:
            await self._bus.publish(
                TrialStarted(
                    experiment=self._experiment,
                    trial=name,
                    trial_id=spec.trial.id,
                    repeats=spec.trial.repeat,
                )
            )
        finally:
            ready.set()

    async def run_done(self, spec: RunSpec, status: RunStatus) -> None:
        """A run of the trial ended (or will never start): the last one finishes the trial."""
        name = spec.trial.name
        counts = self._counts.setdefault(name, {})
        counts[status] = counts.get(status, 0) + 1
        self._left[name] -= 1
        if self._left[name] == 0 and name in self._started:
            await self._bus.publish(
                TrialFinished(
                    experiment=self._experiment,
                    trial=name,
                    trial_id=spec.trial.id,
                    counts=counts,
                )
            )
