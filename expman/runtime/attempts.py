"""One run, from its slot to its outcome: attempts, retries and how it ended.

* A run's trial is started first (:mod:`~expman.runtime.trials`); then attempts run
  until one does not fail, ``execution.max_retries`` retries are spent, or a stop
  reached the run.  Each retry publishes ``RunRetrying`` and restarts from the
  newest checkpoint saved so far (in this session or, on resume, an earlier one).
* An attempt: a fresh :class:`~expman.run.context.RunContext`, the YAML callbacks
  attached, ``RunStarted``, the executor's ``execute`` under a cancel scope with
  the stop watchers beside it, then ``RunFinished`` — always published, shielded,
  with a deadline, even when the whole experiment is being cancelled.
* The status (:func:`outcome_of`): ``cancelled`` when cancelled from outside or
  stopped with scope experiment; ``failed`` on a timeout, a stall or an exception
  (the pipeline's or a callback's, unless the grace period cut it off); ``pruned``
  after a pruner's stop request, ``stopped`` after any other; else ``completed``.
* A failed run under ``execution.fail_fast`` stops the experiment.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import traceback
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import anyio
import structlog

from expman.bus import EventBus
from expman.config import ExecutionSettings, ExperimentPlan, RunSpec
from expman.errors import CheckpointLoadError
from expman.events import RunFinished, RunRetrying, RunStarted, StopRequested
from expman.executors.base import Executor
from expman.run.context import RunContext
from expman.run.records import ResumePoint, RunOutcome
from expman.runtime.active import ActiveRun, ActiveRuns
from expman.runtime.checkpoints import Checkpoints
from expman.runtime.stopping import Stopping
from expman.runtime.trials import Trials
from expman.status import RunStatus
from expman.workspace.atomic import remove_partial_files
from expman.workspace.layout import ExperimentLayout
from expman.workspace.logrouting import log_to
from expman.workspace.logsink import LogFiles
from expman.workspace.safepaths import check_folders

CallbackFactory = Callable[[RunSpec], Sequence[Any]]
#: How long cleanup (the final RunFinished) may take when the run is being cancelled.
CLEANUP_DEADLINE = 10.0

log = structlog.get_logger("expman.runtime")


class Attempts:
    """Runs one run's attempts and records each run's outcome."""

    def __init__(
        self,
        plan: ExperimentPlan,
        bus: EventBus,
        executor: Executor,
        layout: ExperimentLayout,
        files: LogFiles,
        *,
        active: ActiveRuns,
        stopping: Stopping,
        trials: Trials,
        checkpoints: Checkpoints,
        resume: MutableMapping[tuple[str, int], ResumePoint],
        callbacks: CallbackFactory | None,
        record: Callable[[RunOutcome], None],
    ) -> None:
        self.plan = plan
        self.bus = bus
        self.executor = executor
        self.layout = layout
        self.files = files
        self.execution = plan.execution
        self._active = active
        self._stopping = stopping
        self._trials = trials
        self._checkpoints = checkpoints
        self._resume = resume
        self._callbacks = callbacks
        self._record = record
        #: The pruner's record of a run pruned in an earlier session before its
        #: RunFinished (the scheduler sets it when the plan prunes).
        self.judged_out: Callable[[RunSpec], tuple[int, str] | None] | None = None

    # -- runs that never start -----------------------------------------------------------

    async def settle_stopped(self, spec: RunSpec) -> bool:
        """Settle a run a stop request reached before it started; True if one did.

        An experiment stop is an interruption (``cancelled``, nothing journaled: it runs
        on resume); a stop of its trial or of the run is a decision (``stopped``).
        """
        stop = self._stopping.reason_for(spec)
        if stop is None:
            return False
        reason, scope = stop
        if scope == "experiment":
            await self._never_started(spec, RunStatus.CANCELLED, reason)
        elif self._stopping.pruned(spec):
            judged = self.judged_out(spec) if self.judged_out is not None else None
            if judged is None:
                await self.settle_dropped(spec, reason, RunStatus.PRUNED)
            else:  # pruned in an earlier session, cut off before its RunFinished
                epochs, why = judged
                await self._settle(spec, RunStatus.PRUNED, why or reason, epochs=epochs)
        else:
            await self.settle_dropped(spec, reason)
        return True

    async def settle_dropped(
        self, spec: RunSpec, reason: str, status: RunStatus | None = None
    ) -> None:
        """A decision not to start a run (its trial stopped or pruned, a policy dropped it).

        It ends ``status``: ``stopped`` unless given (a pruned trial's runs: ``pruned``).
        """
        await self._settle(spec, status or RunStatus.STOPPED, f"not started: {reason}")

    async def _settle(
        self, spec: RunSpec, status: RunStatus, reason: str, *, epochs: int = 0
    ) -> None:
        await self.bus.publish(
            RunFinished(
                experiment=self.plan.name,
                trial=spec.trial.name,
                repeat=spec.repeat,
                status=status,
                duration=0.0,
                reason=reason,
                epochs=epochs,
                config_hash=spec.config_hash,
            )
        )
        outcome = RunOutcome(
            spec.trial.name, spec.repeat, status, reason=reason, epochs=epochs, seed=spec.seed
        )
        self._record(outcome)
        await self._trials.run_done(spec, status)

    async def _never_started(self, spec: RunSpec, status: RunStatus, reason: str) -> None:
        outcome = RunOutcome(
            spec.trial.name, spec.repeat, status, reason=f"not started: {reason}", seed=spec.seed
        )
        self._record(outcome)
        await self._trials.run_done(spec, status)

    # -- one run ---------------------------------------------------------------------------

    async def run(self, spec: RunSpec, release: Callable[[], None]) -> None:
        """Run ``spec`` holding its trial's resources; ``release`` gives its slot back."""
        started = False
        try:
            async with self.executor.reserve(spec.trial.resources) as devices:
                started = True
                await self._attempts(spec, devices, release)
        finally:
            if not started:  # cancelled while waiting for devices: no attempt began
                release()

    async def _attempts(
        self, spec: RunSpec, devices: tuple[str, ...], release: Callable[[], None]
    ) -> None:
        status = RunStatus.CANCELLED
        try:
            await self._trials.run_starting(spec)
            point = self._resume.get(spec.key)
            attempt = (point.attempts if point else 0) + 1
            retries_left = self.execution.max_retries
            while True:
                outcome, failure = await self._attempt(spec, attempt, point, devices)
                status = outcome.status
                if (
                    isinstance(failure, CheckpointLoadError)
                    and point is not None
                    and point.checkpoint is not None
                    and not self._stopping.stopping(spec)
                ):
                    # Not a retry: the next older checkpoint, then a fresh start.
                    point = await self._fall_back(spec, point, failure, attempt + 1)
                    attempt += 1
                    continue
                if not status.is_failure or retries_left <= 0 or self._stopping.stopping(spec):
                    break
                retries_left -= 1
                attempt += 1
                point = self._resume.get(spec.key, point)
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
            if status.is_failure and self.execution.fail_fast:
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
                await self._trials.run_done(spec, status)
            release()

    async def _fall_back(
        self, spec: RunSpec, point: ResumePoint, failure: Exception, attempt: int
    ) -> ResumePoint:
        """The point after ``point``'s checkpoint failed to load: older, else from scratch."""
        if point.fallbacks:
            older = dataclasses.replace(point.fallbacks[0], fallbacks=point.fallbacks[1:])
            instead = f"resuming from the older {older.checkpoint} (epoch {older.epoch})"
        else:
            older = ResumePoint(checkpoint=None, epoch=0, attempts=point.attempts)
            instead = "no older checkpoint loads: starting from scratch"
        self._resume[spec.key] = older
        message = f"{failure}; {instead}"
        paths = self.layout.run(spec.trial.name, spec.repeat)
        with log_to(self.files, str(paths.log_file), trial=spec.trial.name, repeat=spec.repeat):
            log.warning("checkpoint_unloadable", message=message)
        await self.bus.publish(
            RunRetrying(
                experiment=self.plan.name,
                trial=spec.trial.name,
                repeat=spec.repeat,
                attempt=attempt,
                error=message,
            )
        )
        return older

    async def _attempt(
        self,
        spec: RunSpec,
        attempt: int,
        point: ResumePoint | None,
        devices: tuple[str, ...],
    ) -> tuple[RunOutcome, BaseException | None]:
        paths = self.layout.run(spec.trial.name, spec.repeat)
        if point is not None:
            await anyio.to_thread.run_sync(remove_partial_files, paths.artifacts)
        ctx = RunContext(
            spec=spec,
            experiment=self.plan.name,
            paths=paths,
            bus=self.bus,
            devices=devices,
            attempt=attempt,
            start_epoch=point.epoch if point else 0,
            checkpoint=point.checkpoint if point else None,
            callback_state=point.state if point else None,
            resumed_metrics=point.metrics if point else None,
        )
        ctx.save_deferred = functools.partial(self._checkpoints.save, ctx)
        run = ActiveRun(ctx)
        try:
            await ctx.attach_callbacks(self._callbacks(spec) if self._callbacks else ())
        except Exception as exc:  # a constructor that raised: the run fails, not the rest
            ctx.callbacks.failed("settings.callbacks", "to build", exc)
        self._active.add(spec.key, run)
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
                ctx.callbacks.started = run_started
                # A stop that arrived for this run before it started (e.g. its trial).
                stop = self._stopping.reason_for(spec)
                if stop is not None:
                    ctx.mark_stopped(*stop, pruned=self._stopping.pruned(spec))
                async with anyio.create_task_group() as watchers:
                    run.watchers = watchers
                    self._stopping.start_watchers(run)
                    with anyio.CancelScope() as scope:
                        run.scope = scope
                        try:
                            if ctx.callbacks.error is not None:  # nothing to run with
                                raise ctx.callbacks.error
                            # A link planted in its folders: the run never writes there.
                            check_folders(
                                self.layout.root, paths.configs, paths.logs, paths.artifacts
                            )
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
                # In the run's log: notes on values its metrics could not hold as they were.
                with log_to(self.files, run_log, **context):
                    outcome = outcome_of(
                        spec,
                        run,
                        attempt=attempt,
                        duration=time.monotonic() - started,
                        result=result,
                        failure=failure,
                        cancelled_from_outside=cancelled_from_outside,
                        execution=self.execution,
                    )
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
                            epochs=outcome.epochs,
                            config_hash=spec.config_hash,
                        )
                    )
            self._active.remove(spec.key)
        return outcome, failure


def outcome_of(
    spec: RunSpec,
    run: ActiveRun,
    *,
    attempt: int,
    duration: float,
    result: Any,
    failure: BaseException | None,
    cancelled_from_outside: bool,
    execution: ExecutionSettings,
) -> RunOutcome:
    """How an attempt ended: its status, reason, error and metrics."""
    ctx = run.ctx
    metrics: dict[str, Any] = dict(ctx.last_metrics)
    metrics.update(ctx.callbacks.summary())
    if failure is None and not cancelled_from_outside:
        failure = ctx.callbacks.error
    error: str | None = None
    reason: str | None = ctx.stop_reason
    status: RunStatus
    if cancelled_from_outside:
        status, reason = RunStatus.CANCELLED, reason or "experiment cancelled"
    elif run.cause == "timeout":
        status, reason = RunStatus.FAILED, run.cause
        error = f"timeout: still running after {execution.timeout:g}s (execution.timeout)"
    elif run.cause == "stalled":
        status, reason = RunStatus.FAILED, run.cause
        error = f"stalled: no epoch_end for {execution.stall_timeout:g}s (execution.stall_timeout)"
    elif failure is not None and run.cause != "grace":
        status = RunStatus.FAILED
        error = "".join(traceback.format_exception_only(type(failure), failure)).strip()
    elif ctx.should_stop:
        if ctx.stop_scope == "experiment":
            status = RunStatus.CANCELLED
        else:
            status = RunStatus.PRUNED if ctx.stop_pruned else RunStatus.STOPPED
        if run.cause == "grace":
            reason = f"{reason} (cancelled after {execution.grace_period:g}s grace)"
    else:
        status = RunStatus.COMPLETED
    if not status.is_failure and result is not None:
        if isinstance(result, Mapping):
            metrics.update(ctx.final_metrics(result))  # a Mapping that raises costs nothing
        else:
            metrics["result"] = result
    return RunOutcome(
        trial=spec.trial.name,
        repeat=spec.repeat,
        status=status,
        metrics=ctx.final_metrics(metrics),  # plain JSON data, conversions noted
        error=error,
        reason=reason,
        duration=duration,
        epochs=ctx.start_epoch + ctx.epochs_reported,  # a resumed run: all of them
        attempt=attempt,
        seed=spec.seed,
    )
