"""Stopping: stop requests, the grace period, the timeout and the stall watch.

* ``StopRequested`` with scope ``run``/``trial``/``experiment`` marks every matching
  active run (``ctx.should_stop`` becomes True, ``epoch_end`` returns True) and
  starts its grace timer; runs not yet started are not started (the first reason
  recorded for a run, a trial or the experiment stands).
* A pruner's stop (``StopRequested.pruned``) wins over every other for the runs it
  reaches, an experiment stop that came first included: the decision is journaled.
* A run that returns after a stop request ends ``stopped`` (scopes run and trial: a
  decision about that run, kept on resume), ``pruned`` (a pruner's decision,
  ``StopRequested.pruned``; kept on resume too) or ``cancelled`` (scope experiment: an
  interruption, run again on resume).
* A run still going when its grace period ends is cancelled through its cancel scope
  (a sync pipeline's thread is abandoned): cause ``grace``.
* ``execution.timeout``: a run still going that long after it started is cancelled
  and fails (cause ``timeout``).
* ``execution.stall_timeout``: a run that reports no epoch for that long is
  cancelled and fails (cause ``stalled``), after a ``RunStalled`` event.
* A pipeline that blocks the event loop cannot be cancelled from it: each timeout (and
  stall timeout, moving with each epoch) is also a deadline of the watchdog outside
  the loop (:mod:`expman.watchdog`, running under ``expman run``), which ends the
  process (exit 1) when the loop stays silent past it.
"""

from __future__ import annotations

import time
from typing import get_args

import anyio
import structlog

import expman.watchdog as watchdog
from expman.bus import EventBus
from expman.config import ExecutionSettings, RunSpec
from expman.events import RunStalled, StopRequested, StopScope
from expman.runtime.active import ActiveRun, ActiveRuns

log = structlog.get_logger("expman.runtime")


class Stopping:
    """The experiment's stop requests, and the watchers that enforce them."""

    def __init__(
        self, experiment: str, bus: EventBus, active: ActiveRuns, execution: ExecutionSettings
    ) -> None:
        self._experiment = experiment
        self._bus = bus
        self._active = active
        self._execution = execution
        #: The experiment's stop reason, once one was asked for.
        self.experiment_stop: str | None = None
        self._trial_stops: dict[str, str] = {}
        self._run_stops: dict[tuple[str, int], str] = {}
        #: The trials (names) and runs (keys) whose first stop was a pruner's.
        self._pruned: set[str | tuple[str, int]] = set()

    def reason_for(self, spec: RunSpec) -> tuple[str, str] | None:
        """``(reason, scope)`` of the stop that reached ``spec``, if one did.

        A pruner's decision about it wins over an experiment stop, whichever came
        first: it is journaled, so the run is pruned, not an interruption to redo.
        """
        if spec.trial.name in self._pruned and spec.trial.name in self._trial_stops:
            return (self._trial_stops[spec.trial.name], "trial")
        if spec.key in self._pruned and spec.key in self._run_stops:
            return (self._run_stops[spec.key], "run")
        if self.experiment_stop is not None:
            return (self.experiment_stop, "experiment")
        if spec.trial.name in self._trial_stops:
            return (self._trial_stops[spec.trial.name], "trial")
        if spec.key in self._run_stops:
            return (self._run_stops[spec.key], "run")
        return None

    def pruned(self, spec: RunSpec) -> bool:
        """Whether the stop that reached ``spec`` (scope trial or run) was a pruner's."""
        stop = self.reason_for(spec)
        if stop is None or stop[1] == "experiment":
            return False
        return (spec.trial.name if stop[1] == "trial" else spec.key) in self._pruned

    def stopping(self, spec: RunSpec) -> bool:
        """Whether any stop reached ``spec`` (then it is not retried)."""
        return self.reason_for(spec) is not None

    async def __call__(self, event: StopRequested) -> None:
        reason = event.reason or f"stop requested by {event.source or 'unknown'}"
        if event.scope == "experiment":
            if self.experiment_stop is None:
                self.experiment_stop = reason
        elif event.scope == "trial" and event.trial is not None:
            if event.trial not in self._trial_stops or (
                event.pruned and event.trial not in self._pruned
            ):
                self._trial_stops[event.trial] = reason
                if event.pruned:
                    self._pruned.add(event.trial)
        elif event.scope == "run" and event.run_key is not None:
            if event.run_key not in self._run_stops or (
                event.pruned and event.run_key not in self._pruned
            ):
                self._run_stops[event.run_key] = reason
                if event.pruned:
                    self._pruned.add(event.run_key)
        else:
            if event.scope not in get_args(StopScope):
                # Built by hand past Callback.request_stop's check: say so, stop nothing.
                log.error(
                    "stop_request_ignored",
                    scope=event.scope,
                    source=event.source,
                    expected="scope run, trial or experiment",
                )
            return
        for run in self._active.matching(event.scope, event.trial, event.run_key):
            first = run.ctx.mark_stopped(reason, event.scope, pruned=event.pruned)
            if first and run.watchers is not None:
                run.watchers.start_soon(self.grace_watch, run)

    def start_watchers(self, run: ActiveRun) -> None:
        """Start the run's timeout and stall watchers (and grace, if already stopping)."""
        assert run.watchers is not None
        label = run.ctx.spec.label

        def active() -> bool:  # asked from the watchdog's thread
            return self._active.get(run.ctx.spec.key) is run

        if self._execution.timeout:
            seconds = self._execution.timeout
            watchdog.expect(
                seconds, f"the execution.timeout ({seconds:g}s) of {label}", 1, still=active
            )
            run.watchers.start_soon(self._timeout_watch, run, seconds)
        if self._execution.stall_timeout:
            stall = self._execution.stall_timeout
            watchdog.expect(
                stall,
                f"the execution.stall_timeout ({stall:g}s) of {label}",
                1,
                still=active,
                moving=lambda: run.ctx.last_report + stall,
            )
            run.watchers.start_soon(self._stall_watch, run, stall)
        if run.ctx.should_stop:
            run.watchers.start_soon(self.grace_watch, run)

    async def grace_watch(self, run: ActiveRun) -> None:
        await anyio.sleep(self._execution.grace_period)
        if run.scope is not None and run.cause is None:
            run.cause = "grace"
            run.scope.cancel()

    async def _timeout_watch(self, run: ActiveRun, seconds: float) -> None:
        await anyio.sleep(seconds)
        if run.scope is not None and run.cause is None:
            run.cause = "timeout"
            run.ctx.mark_stopped("timeout", "run")
            run.scope.cancel()

    async def _stall_watch(self, run: ActiveRun, seconds: float) -> None:
        ctx = run.ctx
        while True:
            wait = ctx.last_report + seconds - time.monotonic()
            if wait > 0:
                await anyio.sleep(wait)
                continue
            if run.scope is None or run.cause is not None:
                return
            run.cause = "stalled"
            ctx.mark_stopped("stalled", "run")
            await self._bus.publish(
                RunStalled(
                    experiment=self._experiment, trial=ctx.trial, repeat=ctx.repeat, seconds=seconds
                )
            )
            run.scope.cancel()
            return
