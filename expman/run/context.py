"""RunContext: what a pipeline sees of expman while it trains, and the run's handle.

The same API works in the event loop (``await ctx.epoch_end(...)``) and in any
thread (``ctx.epoch_end(...)`` returns the bool directly, bridged to the loop).

``ctx.settings`` is the run's own deep copy of its resolved settings: a pipeline may
change it without any other run (another repeat of its trial included) or the
snapshot on disk seeing the change.  ``ctx.config`` is the read-only view of it.

Executors drive a run through the **run-handle API** below (never private members):
``attach_callbacks``, ``report_epoch``, ``emit``, ``publish_run_ending``,
``set_checkpoint_saver`` and ``wait_for_stop``.  The runtime's own bookkeeping
(``mark_stopped``, ``callbacks``, the epoch counters) is public too, for the
runtime's modules; nothing outside ``expman.runtime`` and the executors writes it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import structlog

from expman.events import CheckpointDue, EpochEnd, Event, RunEnding
from expman.run.callbacks import RunCallbacks
from expman.run.view import EpochReport, RunView, epoch_number, metric_values
from expman.workspace.layout import RunPaths

if TYPE_CHECKING:
    from expman.bus import EventBus
    from expman.config import RunSpec

CheckpointSaver = Callable[[Path], Awaitable[None]]
#: The file name of the checkpoint saved when an experiment is interrupted.
INTERRUPT_CHECKPOINT = "checkpoint-interrupt"


class RunContext(RunView):
    """One run's configuration, seed, paths, logger and channel to the runtime."""

    def __init__(
        self,
        *,
        spec: RunSpec,
        experiment: str,
        paths: RunPaths,
        bus: EventBus,
        attempt: int = 1,
        start_epoch: int = 0,
        checkpoint: Path | None = None,
        devices: tuple[str, ...] = (),
        callback_state: Mapping[str, Any] | None = None,
        resumed_metrics: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.experiment = experiment
        self.trial = spec.trial.name
        self.trial_id = spec.trial.id
        self.repeat = spec.repeat
        self.seed = spec.seed
        self.settings: Mapping[str, Any] = own_copy(spec.settings)
        self.paths = paths
        self.attempt = attempt
        self.start_epoch = start_epoch
        self.checkpoint = checkpoint
        self.devices = devices
        self.logger = structlog.get_logger("expman.run")
        self._bus = bus
        self._config: Any = None
        self._loop_thread = threading.get_ident()
        # Lets any thread reach the loop (a thread the pipeline started itself included,
        # not only anyio's workers); None when built outside an event loop.
        self._loop_token = _current_token()
        # Invariant: _stop_reason is None until the first stop request for this run;
        # later requests never overwrite the first reason.
        self._stop_reason: str | None = None
        self._stop_scope: str | None = None
        #: The stop that reached the run is a pruner's decision: it ends ``pruned``.
        self.stop_pruned = False
        #: An epoch whose pruning judgement an interruption cut off: no checkpoint of
        #: it or a later one is saved (resume must reach the rung again).
        self.checkpoints_from: int | None = None
        self._stop_event = anyio.Event()
        self.epochs_reported = 0
        # A run resumed from a checkpoint continues from it: its last epoch and metrics
        # are the checkpoint's until it reports a new one.
        self.last_epoch: int | None = start_epoch - 1 if start_epoch > 0 else None
        self.last_metrics: Mapping[str, Any] = dict(resumed_metrics or {})
        self.last_report = time.monotonic()
        #: The run's callbacks: from YAML, then the pipeline's own.
        self.callbacks = RunCallbacks(self._bind, callback_state)
        self.checkpoint_saver: CheckpointSaver | None = None
        self._ending_published = False
        self._interrupt_saved = False
        # Invariant: dispatching_epoch is True exactly while EpochEnd is being published;
        # CheckpointDue requests arriving then wait in deferred_checkpoints.
        self.dispatching_epoch = False
        self.deferred_checkpoints: list[CheckpointDue] = []
        self.save_deferred: Callable[[CheckpointDue], Awaitable[None]] | None = None

    # -- what the pipeline calls ------------------------------------------------------

    def epoch_end(self, epoch: int, metrics: Mapping[str, Any] | None = None, **more: Any) -> Any:
        """Report the end of ``epoch`` with its metrics; the result says whether to stop.

        In async code ``await ctx.epoch_end(...)``; in a sync pipeline (worker thread)
        call it plainly.  When it returns, every control callback has seen the epoch.
        ``epoch`` is an int; ``metrics`` maps names to numbers, bools, strings, None or
        lists/dicts of those: anything else is a TypeError here, naming the value.
        """
        epoch = epoch_number(epoch)
        notes: list[tuple[str, str]] = []
        values = metric_values(metrics, more, notes)
        if notes:
            self.note_values(notes)
        if threading.get_ident() == self._loop_thread:
            return EpochReport(self.report_epoch(epoch, values))
        return anyio.from_thread.run(self.report_epoch, epoch, values, token=self._loop_token)

    def publish(self, event: Event) -> Any:
        """Publish an event on the experiment's bus (awaitable, or plain in a thread).

        In-process subscribers get ``event`` as it is; a value in it that the logs
        cannot hold as itself is noted in the run's log with what they store instead.
        """
        self.event_values(event)
        if threading.get_ident() == self._loop_thread:
            return self._bus.publish(event)
        return anyio.from_thread.run(self._bus.publish, event, token=self._loop_token)

    # -- the run-handle API (executors) -------------------------------------------------

    async def report_epoch(self, epoch: int, metrics: Mapping[str, Any]) -> bool:
        """Publish the epoch (already checked) and answer whether the run should stop.

        Raises the run's first callback error, so the pipeline ends with it.
        """
        self.epochs_reported += 1
        self.last_epoch = epoch
        self.last_metrics = metrics
        self.last_report = time.monotonic()
        self.dispatching_epoch = True
        try:
            await self._bus.publish(
                EpochEnd.now(self.experiment, self.trial, self.repeat, epoch, metrics)
            )
        finally:
            self.dispatching_epoch = False
            # Time spent waiting on a control subscriber (a pruner's judgement) is no stall.
            self.last_report = time.monotonic()
        # Checkpoints asked for while callbacks saw this epoch are saved now, once every
        # callback has seen it, so the state saved with them includes this epoch.
        while self.deferred_checkpoints and self.save_deferred is not None:
            await self.save_deferred(self.deferred_checkpoints.pop(0))
        if self._stop_scope == "experiment" and not self._interrupt_saved:
            await self._save_on_interrupt(epoch)
        if self.callbacks.error is not None:
            raise self.callbacks.error
        return self._stop_reason is not None

    async def emit(self, event: Event) -> None:
        """Publish ``event`` on the experiment's bus, from the event loop."""
        await self._bus.publish(event)

    async def attach_callbacks(self, callbacks: Iterable[Any]) -> None:
        """Make ``callbacks`` this run's: bound to it, state restored, fed its events.

        The runtime attaches the YAML callbacks before ``RunStarted``; an executor
        attaches the pipeline's own (``pipeline.register_callback``) once it has built
        the pipeline, after ``RunStarted``: those receive ``RunStarted`` on attaching.
        """
        await self.callbacks.attach(callbacks)

    def set_checkpoint_saver(self, saver: CheckpointSaver | None) -> None:
        """How the runtime saves this run's checkpoints (the pipeline's hook, or a worker's)."""
        self.checkpoint_saver = saver

    async def wait_for_stop(self) -> None:
        """Return once anything asked this run to stop."""
        await self._stop_event.wait()

    async def publish_run_ending(self) -> None:
        """Publish ``RunEnding`` once: ``run`` returned and the pipeline's hooks still answer.

        Executors call it right after ``run`` returns, so a callback can ask for a
        final checkpoint; the runtime calls it again after ``execute`` (a no-op then).
        """
        if self._ending_published:
            return
        self._ending_published = True
        await self._bus.publish(
            RunEnding(
                experiment=self.experiment,
                trial=self.trial,
                repeat=self.repeat,
                epoch=self.last_epoch,
                stop_reason=self.stop_reason,
            )
        )

    # -- the runtime's bookkeeping ------------------------------------------------------

    def mark_stopped(self, reason: str, scope: str, *, pruned: bool = False) -> bool:
        """Record a stop request; True if it is the first for this run.

        A pruner's (``pruned``) replaces an earlier one that was not: a journaled
        decision outlasts an interruption.
        """
        if self._stop_reason is not None:
            if not pruned or self.stop_pruned:
                return False
            self._stop_reason, self._stop_scope, self.stop_pruned = reason, scope, True
            return False
        self._stop_reason = reason
        self._stop_scope = scope
        self.stop_pruned = pruned
        self._stop_event.set()
        return True

    async def _save_on_interrupt(self, epoch: int) -> None:
        # The experiment is being interrupted and the pipeline is paused in epoch_end:
        # a safe moment for one last checkpoint, so that resume loses no epoch.
        self._interrupt_saved = True
        if self.checkpoint_saver is None:
            return
        await self._bus.publish(
            CheckpointDue(
                experiment=self.experiment,
                trial=self.trial,
                repeat=self.repeat,
                path=str(self.paths.artifacts / INTERRUPT_CHECKPOINT),
                epoch=epoch,
                reason="interrupt",
            )
        )

    def _bind(self, callback: Any, peers: list[Any]) -> None:
        bind = getattr(callback, "bind", None)
        if bind is not None:
            bind(self._bus, self.experiment, self.trial, self.repeat, paths=self.paths, peers=peers)

    def __repr__(self) -> str:
        return f"RunContext({self.experiment}/{self.trial}/run_{self.repeat}, seed={self.seed})"


def own_copy(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``settings`` (plain YAML data: dicts, lists, scalars, fast)."""
    return {key: _copy(value) for key, value in settings.items()}


def _copy(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is dict:
        return {key: _copy(item) for key, item in value.items()}
    if kind is list:
        return [_copy(item) for item in value]
    if kind is tuple:
        return tuple(_copy(item) for item in value)
    return copy.deepcopy(value)


def _current_token() -> anyio.lowlevel.EventLoopToken | None:
    try:
        return anyio.lowlevel.current_token()
    except anyio.NoEventLoopError:  # not in a loop: only anyio's own worker threads can call back
        return None
