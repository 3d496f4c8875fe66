"""Scheduler: runs an experiment plan's runs concurrently under a capacity limit.

Structured concurrency only: one task group owns every run task, and each run owns a
task group for its watchers (grace period, timeout, stall).  The dispatcher acquires
a :class:`anyio.CapacityLimiter` token on behalf of a run before starting its task,
and the run releases it when it has published ``RunFinished``: the token is held for
the run's whole life, so at most ``max_concurrency`` runs are ever active, and runs
start in plan order.

Stopping, written down:

* ``StopRequested`` with scope ``run``/``trial``/``experiment`` marks every matching
  active run (``ctx.should_stop`` becomes True, ``epoch_end`` returns True) and
  starts its grace timer; runs not yet started are not started.
* A run that returns after a stop request ends ``stopped`` (scopes run and trial: a
  decision about that run, kept on resume) or ``cancelled`` (scope experiment: an
  interruption, run again on resume).
* A run still going when its grace period ends is cancelled through its cancel scope
  (a sync pipeline's thread is abandoned).
* ``RunFinished`` is always published, shielded, with a deadline, even when the
  whole experiment is being cancelled.
"""

from __future__ import annotations

import functools
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import anyio
import structlog
from anyio.abc import TaskGroup

from expman.bus import EventBus, Subscription
from expman.config import ExperimentPlan, RunSpec
from expman.events import (
    CheckpointDue,
    CheckpointSaved,
    Event,
    RunFinished,
    RunRetrying,
    RunStalled,
    RunStarted,
    StopRequested,
    StopScope,
    TrialFinished,
    TrialStarted,
)
from expman.executors.base import Executor
from expman.runtime.context import RunContext, state_key
from expman.status import RunStatus
from expman.workspace.atomic import remove_partial_files, remove_path, replace_into_place
from expman.workspace.layout import ExperimentLayout
from expman.workspace.logrouting import log_to
from expman.workspace.logsink import LogFiles

CallbackFactory = Callable[[RunSpec], Sequence[Any]]
#: How long cleanup (the final RunFinished) may take when the run is being cancelled.
CLEANUP_DEADLINE = 10.0

log = structlog.get_logger("expman.runtime")


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a run continues from: its latest complete checkpoint."""

    checkpoint: Path | None
    epoch: int
    state: Mapping[str, Any] = field(default_factory=dict)
    attempts: int = 0


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


@dataclass(eq=False, slots=True)
class _Active:
    ctx: RunContext
    watchers: TaskGroup | None = None
    scope: anyio.CancelScope | None = None
    cause: str | None = None  # why the runtime cancelled the pipeline


class Scheduler:
    """Executes the runs of a plan; the owner publishes experiment-level events."""

    def __init__(
        self,
        plan: ExperimentPlan,
        bus: EventBus,
        executor: Executor,
        layout: ExperimentLayout,
        files: LogFiles,
        *,
        max_concurrency: int,
        todo: Sequence[RunSpec] | None = None,
        resume: Mapping[tuple[str, int], ResumePoint] | None = None,
        callbacks: CallbackFactory | None = None,
        on_outcome: Callable[[RunOutcome], None] | None = None,
    ) -> None:
        self.plan = plan
        self.bus = bus
        self.executor = executor
        self.layout = layout
        self.files = files
        self.execution = plan.execution
        self.limiter = anyio.CapacityLimiter(max_concurrency)
        self.todo = tuple(plan.runs if todo is None else todo)
        self.resume = dict(resume or {})
        self._callbacks = callbacks
        self._on_outcome = on_outcome
        self.outcomes: list[RunOutcome] = []
        # The GPU ids each run holds from its lease (local executors), by run key.
        self._devices: dict[tuple[str, int], tuple[str, ...]] = {}
        # Invariant: _active holds exactly the runs between RunStarted and RunFinished.
        self._active: dict[tuple[str, int], _Active] = {}
        self._experiment_stop: str | None = None
        self._trial_stops: dict[str, str] = {}
        self._run_stops: dict[tuple[str, int], str] = {}
        self._trial_left: dict[str, int] = {}
        self._trial_started: dict[str, anyio.Event] = {}
        self._trial_counts: dict[str, dict[str, int]] = {}
        self.peak_active = 0
        # Run callbacks first: they see a CheckpointDue before the save it causes
        # publishes CheckpointSaved, and a StopRequested in the order it was asked.
        self._subscriptions: list[Subscription[Any]] = [
            bus.subscribe(Event, self._route_to_callbacks, name="runtime.callbacks"),
            bus.subscribe(StopRequested, self._on_stop, name="runtime.stops"),
            bus.subscribe(CheckpointDue, self._on_checkpoint_due, name="runtime.checkpoints"),
        ]

    # -- the dispatcher ---------------------------------------------------------------

    async def run(self) -> list[RunOutcome]:
        """Run every run of ``todo``; returns their outcomes in completion order."""
        for spec in self.todo:
            self._trial_left[spec.trial.name] = self._trial_left.get(spec.trial.name, 0) + 1
        try:
            async with anyio.create_task_group() as tg:
                for spec in self.todo:
                    if await self._not_started(spec):
                        continue
                    await self.limiter.acquire_on_behalf_of(spec)
                    if await self._not_started(spec):
                        self.limiter.release_on_behalf_of(spec)
                        continue
                    tg.start_soon(self._run_with_resources, spec, name=f"run:{spec.label}")
        finally:
            for sub in self._subscriptions:
                sub.unsubscribe()
        return self.outcomes

    async def _not_started(self, spec: RunSpec) -> bool:
        """Handle a run that a stop request reached before it started."""
        if self._experiment_stop is not None:
            self._record(
                RunOutcome(
                    spec.trial.name,
                    spec.repeat,
                    RunStatus.CANCELLED,
                    reason=f"not started: {self._experiment_stop}",
                    seed=spec.seed,
                )
            )
            await self._trial_run_done(spec, RunStatus.CANCELLED)
            return True
        reason = self._trial_stops.get(spec.trial.name) or self._run_stops.get(spec.key)
        if reason is None:
            return False
        # A deliberate stop of a trial: recorded as stopped, so resume keeps it.
        await self.bus.publish(
            RunFinished(
                experiment=self.plan.name,
                trial=spec.trial.name,
                repeat=spec.repeat,
                status=RunStatus.STOPPED,
                duration=0.0,
                reason=f"not started: {reason}",
                config_hash=spec.config_hash,
            )
        )
        self._record(
            RunOutcome(
                spec.trial.name,
                spec.repeat,
                RunStatus.STOPPED,
                reason=f"not started: {reason}",
                seed=spec.seed,
            )
        )
        await self._trial_run_done(spec, RunStatus.STOPPED)
        return True

    def _record(self, outcome: RunOutcome) -> None:
        self.outcomes.append(outcome)
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    # -- one run ----------------------------------------------------------------------

    async def _run(self, spec: RunSpec) -> None:
        status = RunStatus.CANCELLED
        try:
            await self._trial_run_starting(spec)
            point = self.resume.get(spec.key)
            attempt = (point.attempts if point else 0) + 1
            retries_left = self.execution.max_retries
            while True:
                outcome = await self._attempt(spec, attempt, point)
                status = outcome.status
                if status != RunStatus.FAILED or retries_left <= 0 or self._stopping(spec):
                    break
                retries_left -= 1
                attempt += 1
                point = self.resume.get(spec.key, point)
                await self.bus.publish(
                    RunRetrying(
                        experiment=self.plan.name,
                        trial=spec.trial.name,
                        repeat=spec.repeat,
                        attempt=attempt,
                        error=outcome.error or outcome.reason or "",
                    )
                )
            self._record(outcome)
            if status == RunStatus.FAILED and self.execution.fail_fast:
                await self.bus.publish(
                    StopRequested(
                        experiment=self.plan.name,
                        scope="experiment",
                        reason=f"fail_fast: {spec.label} failed",
                        source="fail_fast",
                    )
                )
        finally:
            with anyio.move_on_after(CLEANUP_DEADLINE, shield=True):
                await self._trial_run_done(spec, status)
            self.limiter.release_on_behalf_of(spec)

    async def _run_with_resources(self, spec: RunSpec) -> None:
        """Run ``spec`` holding its trial's resources (GPU ids, CPUs) for its whole life."""
        started = False
        try:
            async with self.executor.reserve(spec.trial.resources) as devices:
                started = True
                self._devices[spec.key] = devices
                try:
                    await self._run(spec)
                finally:
                    self._devices.pop(spec.key, None)
        finally:
            if not started:  # cancelled while waiting for devices: _run never began
                self.limiter.release_on_behalf_of(spec)

    def _stopping(self, spec: RunSpec) -> bool:
        return (
            self._experiment_stop is not None
            or spec.trial.name in self._trial_stops
            or spec.key in self._run_stops
        )

    async def _attempt(self, spec: RunSpec, attempt: int, point: ResumePoint | None) -> RunOutcome:
        paths = self.layout.run(spec.trial.name, spec.repeat)
        if point is not None:
            await anyio.to_thread.run_sync(remove_partial_files, paths.artifacts)
        ctx = RunContext(
            spec=spec,
            experiment=self.plan.name,
            paths=paths,
            bus=self.bus,
            devices=self._devices.get(spec.key, ()),
            attempt=attempt,
            start_epoch=point.epoch if point else 0,
            checkpoint=point.checkpoint if point else None,
            callback_state=point.state if point else None,
        )
        ctx.save_deferred = functools.partial(self._save_checkpoint, ctx)
        active = _Active(ctx)
        key = spec.key
        try:
            await ctx.attach_callbacks(self._callbacks(spec) if self._callbacks else ())
        except Exception as exc:  # a constructor that raised: the run fails, not the rest
            ctx.callback_failed("settings.callbacks", "to build", exc)
        self._active[key] = active
        self.peak_active = max(self.peak_active, len(self._active))
        started = time.monotonic()
        result: Any = None
        failure: BaseException | None = None
        cancelled_from_outside = False
        run_log = str(paths.log_file)
        context = {"experiment": self.plan.name, "trial": spec.trial.name, "repeat": spec.repeat}
        try:
            with log_to(self.files, run_log, **context):
                run_started = RunStarted(
                    experiment=self.plan.name,
                    trial=spec.trial.name,
                    repeat=spec.repeat,
                    seed=spec.seed,
                    config_hash=spec.config_hash,
                    attempt=attempt,
                    start_epoch=ctx.start_epoch,
                    checkpoint=str(ctx.checkpoint) if ctx.checkpoint else None,
                )
                await self.bus.publish(run_started)
                ctx.started = run_started
                # A stop that arrived for this run before it started (e.g. its trial).
                reason = self._stop_reason_for(spec)
                if reason is not None:
                    ctx.mark_stopped(*reason)
                async with anyio.create_task_group() as watchers:
                    active.watchers = watchers
                    if self.execution.timeout:
                        watchers.start_soon(self._timeout_watch, active, self.execution.timeout)
                    if self.execution.stall_timeout:
                        watchers.start_soon(self._stall_watch, active, self.execution.stall_timeout)
                    if ctx.should_stop:
                        watchers.start_soon(self._grace_watch, active)
                    with anyio.CancelScope() as scope:
                        active.scope = scope
                        try:
                            if ctx.callback_error is not None:  # nothing to run with
                                raise ctx.callback_error
                            result = await self.executor.execute(ctx)
                            # Executors announce it while the pipeline is alive; this
                            # covers one that did not (a no-op otherwise).
                            await ctx.publish_run_ending()
                        except Exception as exc:
                            failure = exc
                            log.error("run_failed", exc_info=exc, attempt=attempt)
                    watchers.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            cancelled_from_outside = True
            raise
        finally:
            with anyio.move_on_after(CLEANUP_DEADLINE, shield=True):
                outcome = self._outcome(
                    spec, ctx, active, attempt, started, result, failure, cancelled_from_outside
                )
                with log_to(self.files, run_log, **context):
                    await self.bus.publish(
                        RunFinished(
                            experiment=self.plan.name,
                            trial=spec.trial.name,
                            repeat=spec.repeat,
                            status=outcome.status,
                            duration=outcome.duration,
                            metrics=outcome.metrics,
                            error=outcome.error,
                            reason=outcome.reason,
                            attempt=attempt,
                            epochs=ctx.epochs_reported,
                            config_hash=spec.config_hash,
                        )
                    )
            self._active.pop(key, None)
        return outcome

    def _outcome(
        self,
        spec: RunSpec,
        ctx: RunContext,
        active: _Active,
        attempt: int,
        started: float,
        result: Any,
        failure: BaseException | None,
        cancelled_from_outside: bool,
    ) -> RunOutcome:
        metrics: dict[str, Any] = dict(ctx.last_metrics)
        metrics.update(ctx.run_summary())
        if failure is None and not cancelled_from_outside:
            failure = ctx.callback_error
        error: str | None = None
        reason: str | None = ctx.stop_reason
        status: RunStatus
        if cancelled_from_outside:
            status, reason = RunStatus.CANCELLED, reason or "experiment cancelled"
        elif active.cause == "timeout":
            status, reason = RunStatus.FAILED, active.cause
            error = f"timeout: still running after {self.execution.timeout:g}s (execution.timeout)"
        elif active.cause == "stalled":
            status, reason = RunStatus.FAILED, active.cause
            limit = self.execution.stall_timeout
            error = f"stalled: no epoch_end for {limit:g}s (execution.stall_timeout)"
        elif failure is not None and not (active.cause == "grace"):
            status = RunStatus.FAILED
            error = "".join(traceback.format_exception_only(type(failure), failure)).strip()
        elif ctx.should_stop:
            status = RunStatus.CANCELLED if ctx.stop_scope == "experiment" else RunStatus.STOPPED
            if active.cause == "grace":
                reason = f"{reason} (cancelled after {self.execution.grace_period:g}s grace)"
        else:
            status = RunStatus.COMPLETED
        if status != RunStatus.FAILED and result is not None:
            if isinstance(result, Mapping):
                metrics.update(result)
            else:
                error = None
                metrics["result"] = result
        return RunOutcome(
            trial=spec.trial.name,
            repeat=spec.repeat,
            status=status,
            metrics=metrics,
            error=error,
            reason=reason,
            duration=time.monotonic() - started,
            epochs=ctx.epochs_reported,
            attempt=attempt,
            seed=spec.seed,
        )

    # -- trials -------------------------------------------------------------------------

    async def _trial_run_starting(self, spec: RunSpec) -> None:
        name = spec.trial.name
        ready = self._trial_started.get(name)
        if ready is not None:
            await ready.wait()
            return
        ready = self._trial_started[name] = anyio.Event()
        try:
            await self.bus.publish(
                TrialStarted(
                    experiment=self.plan.name,
                    trial=name,
                    trial_id=spec.trial.id,
                    repeats=spec.trial.repeat,
                )
            )
        finally:
            ready.set()

    async def _trial_run_done(self, spec: RunSpec, status: RunStatus) -> None:
        name = spec.trial.name
        counts = self._trial_counts.setdefault(name, {})
        counts[status] = counts.get(status, 0) + 1
        self._trial_left[name] -= 1
        if self._trial_left[name] == 0 and name in self._trial_started:
            await self.bus.publish(
                TrialFinished(
                    experiment=self.plan.name, trial=name, trial_id=spec.trial.id, counts=counts
                )
            )

    # -- stop, grace, timeout, stall ----------------------------------------------------

    def _stop_reason_for(self, spec: RunSpec) -> tuple[str, str] | None:
        if self._experiment_stop is not None:
            return (self._experiment_stop, "experiment")
        if spec.trial.name in self._trial_stops:
            return (self._trial_stops[spec.trial.name], "trial")
        if spec.key in self._run_stops:
            return (self._run_stops[spec.key], "run")
        return None

    async def _on_stop(self, event: StopRequested) -> None:
        reason = event.reason or f"stop requested by {event.source or 'unknown'}"
        if event.scope == "experiment":
            if self._experiment_stop is None:
                self._experiment_stop = reason
            targets = list(self._active.values())
        elif event.scope == "trial" and event.trial is not None:
            self._trial_stops.setdefault(event.trial, reason)
            targets = [a for k, a in self._active.items() if k[0] == event.trial]
        elif event.scope == "run" and event.run_key is not None:
            self._run_stops.setdefault(event.run_key, reason)
            found = self._active.get(event.run_key)
            targets = [found] if found else []
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
        for active in targets:
            if active.ctx.mark_stopped(reason, event.scope) and active.watchers is not None:
                active.watchers.start_soon(self._grace_watch, active)

    async def _grace_watch(self, active: _Active) -> None:
        await anyio.sleep(self.execution.grace_period)
        if active.scope is not None and active.cause is None:
            active.cause = "grace"
            active.scope.cancel()

    async def _timeout_watch(self, active: _Active, seconds: float) -> None:
        await anyio.sleep(seconds)
        if active.scope is not None and active.cause is None:
            active.cause = "timeout"
            active.ctx.mark_stopped("timeout", "run")
            active.scope.cancel()

    async def _stall_watch(self, active: _Active, seconds: float) -> None:
        ctx = active.ctx
        while True:
            wait = ctx.last_report + seconds - time.monotonic()
            if wait > 0:
                await anyio.sleep(wait)
                continue
            if active.scope is None or active.cause is not None:
                return
            active.cause = "stalled"
            ctx.mark_stopped("stalled", "run")
            await self.bus.publish(
                RunStalled(
                    experiment=self.plan.name,
                    trial=ctx.trial,
                    repeat=ctx.repeat,
                    seconds=seconds,
                )
            )
            active.scope.cancel()
            return

    # -- callbacks and checkpoints ---------------------------------------------------------

    async def _route_to_callbacks(self, event: Event) -> None:
        key = event.run_key
        if key is not None:  # one run's event (most of them: every epoch)
            active = self._active.get(key)
            if active is not None:
                await active.ctx.notify_callbacks(event)
            return
        if isinstance(event, StopRequested):  # a trial's or the experiment's: every run hit
            targets = [
                a
                for k, a in self._active.items()
                if event.scope == "experiment" or k[0] == event.trial
            ]
        else:
            return
        for target in targets:
            await target.ctx.notify_callbacks(event)

    async def _on_checkpoint_due(self, event: CheckpointDue) -> None:
        key = event.run_key
        active = self._active.get(key) if key else None
        if active is None:
            return
        ctx = active.ctx
        if ctx.dispatching_epoch:
            # Saved when every callback has seen the epoch (see RunContext._epoch_end).
            ctx.deferred_checkpoints.append(event)
            return
        await self._save_checkpoint(ctx, event)

    async def _save_checkpoint(self, ctx: RunContext, event: CheckpointDue) -> None:
        if ctx.checkpoint_saver is None:
            log.warning("checkpoint_skipped", reason="pipeline has no save_checkpoint hook")
            return
        # A relative path is relative to the run's artifacts folder.
        path = ctx.paths.artifacts / event.path
        await save_checkpoint(ctx.checkpoint_saver, path)
        state = {
            state_key(cb): cb.state_dict() for cb in ctx.callbacks if hasattr(cb, "state_dict")
        }
        await self.bus.publish(
            CheckpointSaved(
                experiment=event.experiment,
                trial=event.trial,
                repeat=event.repeat,
                path=str(path),
                epoch=event.epoch,
                reason=event.reason,
                state=state,
            )
        )
        # A retry of this run in this session restarts from the newest checkpoint.
        self.resume[ctx.spec.key] = ResumePoint(path, event.epoch + 1, state, ctx.attempt)


async def save_checkpoint(saver: Callable[[Path], Any], path: Path) -> None:
    """Have ``saver`` write to a temporary name beside ``path``, then rename it into place.

    A failure (or a crash) leaves at most the temporary name, never a partial
    ``path``; an older checkpoint at ``path`` is replaced only by a complete one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        await saver(tmp)
        if not tmp.exists():
            raise FileNotFoundError(f"save_checkpoint wrote nothing at {tmp}")
        await anyio.to_thread.run_sync(replace_into_place, tmp, path)
    finally:
        if tmp.exists():
            await anyio.to_thread.run_sync(remove_path, tmp)
