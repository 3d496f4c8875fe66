"""RunContext: what a pipeline sees of expman while it trains.

The same API works in the event loop (``await ctx.epoch_end(...)``) and in a worker
thread (``ctx.epoch_end(...)`` returns the bool directly, bridged to the loop).
"""

from __future__ import annotations

import collections
import numbers
import operator
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import structlog

from expman.errors import CallbackError
from expman.events import CheckpointDue, EpochEnd, Event, RunEnding, RunStarted, StopRequested
from expman.subscribers.callbacks.base import Callback
from expman.workspace.layout import RunPaths

if TYPE_CHECKING:
    from expman.bus import EventBus
    from expman.config import RunSpec

CheckpointSaver = Callable[[Path], Awaitable[None]]
#: The file name of the checkpoint saved when an experiment is interrupted.
INTERRUPT_CHECKPOINT = "checkpoint-interrupt"

log = structlog.get_logger("expman.runtime")


def _current_token() -> anyio.lowlevel.EventLoopToken | None:
    try:
        return anyio.lowlevel.current_token()
    except anyio.NoEventLoopError:  # not in a loop: only anyio's own worker threads can call back
        return None


def epoch_number(epoch: Any) -> int:
    """``epoch`` as an int; a TypeError for anything else (a bool, a float, a string)."""
    if type(epoch) is int:
        return epoch
    if not isinstance(epoch, bool):
        try:
            return operator.index(epoch)  # numpy integers
        except TypeError:
            pass
    raise TypeError(f"ctx.epoch_end: epoch must be an int; got {epoch!r}")


def metric_values(metrics: Any, more: Mapping[str, Any]) -> dict[str, Any]:
    """The epoch's metrics as a dict; a TypeError naming any that JSON cannot hold."""
    if metrics is None:
        values: dict[str, Any] = {}
    elif isinstance(metrics, Mapping):
        values = dict(metrics)
    else:
        raise TypeError(
            "ctx.epoch_end: metrics must be a mapping of metric names to values; "
            f"got {type(metrics).__name__}"
        )
    if more:
        values.update(more)
    for name, value in values.items():
        if type(name) is not str:
            raise TypeError(f"ctx.epoch_end: metric names must be strings; got {name!r}")
        kind = type(value)
        if kind is float or kind is int or _json_like(value, 0):
            continue
        raise TypeError(
            f"ctx.epoch_end: metric {name!r} ({kind.__name__}) cannot be written to the logs; "
            "expected a number, bool, string, None, or a list/dict of those"
        )
    return values


def _json_like(value: Any, depth: int) -> bool:
    # What the JSON logs hold as itself: not the repr() they fall back to for the rest.
    if value is None or isinstance(value, (str, int, float, numbers.Real)):
        return True
    if depth > 32:  # a list that holds itself
        return False
    if isinstance(value, (list, tuple)):
        return all(_json_like(item, depth + 1) for item in value)
    if isinstance(value, Mapping):
        return all(
            isinstance(key, (str, int, float)) and _json_like(item, depth + 1)
            for key, item in value.items()
        )
    # numpy.bool_, 0-d arrays and tensors: scalars through .item()
    item = getattr(value, "item", None)
    if getattr(value, "shape", None) == () and callable(item):
        return isinstance(item(), (bool, int, float))
    return False


def state_key(callback: Any) -> str:
    """The key of a callback's state in a checkpoint (``state_key`` or its class name)."""
    return getattr(callback, "state_key", None) or type(callback).__name__


class EpochReport:
    """``ctx.epoch_end(...)`` in the event loop: await it for whether to stop.

    Testing it without ``await`` (``if ctx.epoch_end(...)``) raises TypeError instead
    of being always true (a coroutine is), which would end the run after no epoch.
    One never awaited is closed quietly, with an error in the run's log.
    """

    __slots__ = ("_report",)

    def __init__(self, report: Coroutine[Any, Any, bool]) -> None:
        # Invariant: _report is None once awaited (the await owns the coroutine then).
        self._report: Coroutine[Any, Any, bool] | None = report

    def __await__(self) -> Generator[Any, None, bool]:
        report, self._report = self._report, None
        if report is None:
            raise RuntimeError("ctx.epoch_end(...) can be awaited only once")
        return report.__await__()

    def __bool__(self) -> bool:
        # Closed now: the TypeError's traceback keeps self alive past the run.
        report, self._report = self._report, None
        if report is not None:
            report.close()
        raise TypeError(
            "ctx.epoch_end(...) must be awaited in an async pipeline: "
            "use `if await ctx.epoch_end(...)`"
        )

    def __del__(self) -> None:
        if self._report is not None:
            self._report.close()
            log.error("epoch_end_not_awaited", hint="use `await ctx.epoch_end(...)`")


class RunView:
    """What a pipeline reads of its run, in the driver and in a worker process alike.

    Subclasses set ``experiment``, ``trial``, ``repeat``, ``settings``, ``paths``,
    ``_config`` (None), ``_stop_reason`` and ``_stop_scope``, and implement
    :meth:`publish`.
    """

    experiment: str
    trial: str
    repeat: int
    settings: Mapping[str, Any]
    paths: RunPaths
    _config: Any
    _stop_reason: str | None
    _stop_scope: str | None

    @property
    def config(self) -> Any:
        """The run's resolved settings, read-only, with attribute access (``cfg.lr``)."""
        if self._config is None:
            from expman.config import settings_view

            self._config = settings_view(self.settings)
        return self._config

    @property
    def artifacts(self) -> Path:
        return self.paths.artifacts

    @property
    def should_stop(self) -> bool:
        """True once anything asked this run (its trial, the experiment) to stop."""
        return self._stop_reason is not None

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    @property
    def stop_scope(self) -> str | None:
        return self._stop_scope

    def publish(self, event: Event) -> Any:
        """Publish ``event`` on the experiment's bus (each context says how)."""
        raise NotImplementedError

    def request_stop(self, reason: str = "requested by pipeline") -> Any:
        """Ask for this run to stop (publishes StopRequested); awaitable in async code."""
        return self.publish(
            StopRequested(
                experiment=self.experiment,
                trial=self.trial,
                repeat=self.repeat,
                scope="run",
                reason=reason,
                source="pipeline",
            )
        )


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
    ) -> None:
        self.spec = spec
        self.experiment = experiment
        self.trial = spec.trial.name
        self.trial_id = spec.trial.id
        self.repeat = spec.repeat
        self.seed = spec.seed
        self.settings: Mapping[str, Any] = spec.settings
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
        self.stop_event = anyio.Event()
        self.epochs_reported = 0
        self.last_epoch: int | None = None
        self.last_metrics: Mapping[str, Any] = {}
        self.last_report = time.monotonic()
        # The run's callbacks: from YAML, then the pipeline's own; the runtime routes
        # the run's events to whatever this list holds at the time.
        self.callbacks: list[Any] = []
        self.callback_state: Mapping[str, Any] = callback_state or {}
        #: The run's RunStarted, once published (replayed to callbacks attached later).
        self.started: RunStarted | None = None
        #: The first error a callback of this run raised: the run fails with it.
        self.callback_error: CallbackError | None = None
        self.checkpoint_saver: CheckpointSaver | None = None
        self._ending_published = False
        # Invariant: _inbox holds events for the callbacks not yet delivered; it is
        # non-empty only while _delivering (one delivery loop at a time).
        self._inbox: collections.deque[Event] = collections.deque()
        self._delivering = False
        # Each event type's (callback, hook) pairs, worked out once per type; emptied
        # whenever callbacks are attached.
        self._hooks: dict[type[Event], tuple[tuple[Any, Callable[[Any], Any]], ...]] = {}
        self._interrupt_saved = False
        # Invariant: dispatching_epoch is True exactly while EpochEnd is being published;
        # CheckpointDue requests arriving then wait in deferred_checkpoints.
        self.dispatching_epoch = False
        self.deferred_checkpoints: list[CheckpointDue] = []
        self.save_deferred: Callable[[CheckpointDue], Awaitable[None]] | None = None

    # -- what the pipeline reads -----------------------------------------------------

    # -- what the pipeline calls ------------------------------------------------------

    def epoch_end(self, epoch: int, metrics: Mapping[str, Any] | None = None, **more: Any) -> Any:
        """Report the end of ``epoch`` with its metrics; the result says whether to stop.

        In async code ``await ctx.epoch_end(...)``; in a sync pipeline (worker thread)
        call it plainly.  When it returns, every control callback has seen the epoch.
        ``epoch`` is an int; ``metrics`` maps names to numbers, bools, strings, None or
        lists/dicts of those: anything else is a TypeError here, naming the value.
        """
        epoch = epoch_number(epoch)
        values = metric_values(metrics, more)
        if threading.get_ident() == self._loop_thread:
            return EpochReport(self._epoch_end(epoch, values))
        return anyio.from_thread.run(self._epoch_end, epoch, values, token=self._loop_token)

    async def _epoch_end(self, epoch: int, metrics: Mapping[str, Any]) -> bool:
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
        # Checkpoints asked for while callbacks saw this epoch are saved now, once every
        # callback has seen it, so the state saved with them includes this epoch.
        while self.deferred_checkpoints and self.save_deferred is not None:
            await self.save_deferred(self.deferred_checkpoints.pop(0))
        if self._stop_scope == "experiment" and not self._interrupt_saved:
            await self._save_on_interrupt(epoch)
        if self.callback_error is not None:
            raise self.callback_error
        return self._stop_reason is not None

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

    def publish(self, event: Event) -> Any:
        """Publish an event on the experiment's bus (awaitable, or plain in a thread)."""
        if threading.get_ident() == self._loop_thread:
            return self._bus.publish(event)
        return anyio.from_thread.run(self._bus.publish, event, token=self._loop_token)

    # -- what the runtime (and executors) call ------------------------------------------

    async def attach_callbacks(self, callbacks: Iterable[Any]) -> None:
        """Make ``callbacks`` this run's: bound to it, state restored, fed its events.

        The runtime attaches the YAML callbacks before ``RunStarted``; an executor
        attaches the pipeline's own (``pipeline.register_callback``) once it has built
        the pipeline, after ``RunStarted``: those then receive the run's
        ``RunStarted`` on attaching, so every callback sees the same sequence.
        """
        added = list(callbacks)
        for cb in added:
            bind = getattr(cb, "bind", None)
            if bind is not None:
                bind(
                    self._bus,
                    self.experiment,
                    self.trial,
                    self.repeat,
                    paths=self.paths,
                    peers=self.callbacks,
                )
            saved = self.callback_state.get(state_key(cb))
            if saved is not None and hasattr(cb, "load_state_dict"):
                try:
                    cb.load_state_dict(saved)
                except Exception as exc:
                    self.callback_failed(cb, "restoring its state", exc)
        self.callbacks.extend(added)
        self._hooks.clear()
        if self.started is not None:
            await self._deliver(self.started, _hooks_for(added, RunStarted))

    async def notify_callbacks(self, event: Event) -> None:
        """Deliver ``event`` to the run's callbacks, one event at a time, in publish order.

        An event published while the callbacks handle another (a CheckpointDue asked
        for in ``on_epoch_end``, the CheckpointSaved it causes, a StopRequested) waits
        until every callback has seen the first: each callback sees cause before
        effect whatever its place in the list.  The outermost delivery drains the
        queue, so when the publisher of the first event returns, all have been seen.
        """
        if self._delivering:
            self._inbox.append(event)
            return
        self._delivering = True
        try:
            await self._deliver(event, self._hooks_of(type(event)))
            while self._inbox:
                queued = self._inbox.popleft()
                await self._deliver(queued, self._hooks_of(type(queued)))
        finally:
            self._delivering = False

    def _hooks_of(self, event_type: type[Event]) -> tuple[tuple[Any, Callable[[Any], Any]], ...]:
        hooks = self._hooks.get(event_type)
        if hooks is None:
            hooks = self._hooks[event_type] = _hooks_for(self.callbacks, event_type)
        return hooks

    async def _deliver(
        self, event: Event, hooks: Iterable[tuple[Any, Callable[[Any], Any]]]
    ) -> None:
        for cb, hook in hooks:
            try:
                await hook(event)
            except Exception as exc:
                self.callback_failed(cb, f"on {type(event).__name__}", exc)

    def callback_failed(self, callback: Any, doing: str, exc: Exception) -> None:
        """Record that a callback of this run raised: the run fails with the first such error."""
        name = callback if isinstance(callback, str) else type(callback).__name__
        log.error("callback_failed", callback=name, exc_info=exc)
        if self.callback_error is not None:
            return
        if isinstance(exc, CallbackError):
            self.callback_error = exc
        else:
            error = CallbackError(f"{name} failed {doing}: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self.callback_error = error

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

    def run_summary(self) -> dict[str, Any]:
        """The run's callbacks' ``run_summary()`` merged in order (one that raises is skipped)."""
        summary: dict[str, Any] = {}
        for cb in self.callbacks:
            contribute = getattr(cb, "run_summary", None)
            if contribute is None:
                continue
            try:
                summary.update(contribute())
            except Exception as exc:
                log.error("callback_summary_failed", callback=type(cb).__name__, exc_info=exc)
        return summary

    def mark_stopped(self, reason: str, scope: str) -> bool:
        """Record a stop request; True if it is the first for this run."""
        if self._stop_reason is not None:
            return False
        self._stop_reason = reason
        self._stop_scope = scope
        self.stop_event.set()
        return True

    def __repr__(self) -> str:
        return f"RunContext({self.experiment}/{self.trial}/run_{self.repeat}, seed={self.seed})"


def _hooks_for(
    callbacks: Iterable[Any], event_type: type[Event]
) -> tuple[tuple[Any, Callable[[Any], Any]], ...]:
    """``(callback, what to call)`` for each callback that handles ``event_type``.

    An :class:`expman.Callback` is asked for its hook (none: it is skipped); any
    other callable is called with every event.
    """
    pairs = []
    for cb in callbacks:
        hook = cb.hook(event_type) if isinstance(cb, Callback) else cb
        if hook is not None:
            pairs.append((cb, hook))
    return tuple(pairs)
