"""One run's callbacks: attached, restored, fed the run's events in publish order.

The runtime routes every event about a run (and a trial's or the experiment's stop
requests) to that run's :class:`RunCallbacks`; this is where Lightning/Keras
semantics hold, unlike the experiment's subscribers:

* Callbacks see events in the order of the list (YAML's first, then the pipeline's
  own ``register_callback`` ones, attached after ``RunStarted``: those receive the
  run's ``RunStarted`` on attaching, so every callback sees the same sequence).
* An event published while the callbacks handle another (a ``CheckpointDue`` asked
  for in ``on_epoch_end``, the ``CheckpointSaved`` it causes, a ``StopRequested``)
  waits until every callback has seen the first: each callback sees cause before
  effect, whatever its place in the list.
* A callback that raises fails its run (the first error wins), never the experiment.

A :class:`HookedCallback` (every :class:`expman.Callback`) is asked once per event
type what to call; any other callable is called with every event.
"""

from __future__ import annotations

import abc
import collections
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import structlog

from expman.errors import CallbackError
from expman.events import Event, RunStarted

log = structlog.get_logger("expman.runtime")

Hook = Callable[[Any], Awaitable[None]]
#: Binds a callback to its run as it is attached (its bus, identity, paths, peers).
Binder = Callable[[Any, list[Any]], None]


class HookedCallback(abc.ABC):
    """A callback that says, per event type, which of its hooks handles it."""

    @abc.abstractmethod
    def hook(self, event_type: type[Event]) -> Hook | None:
        """What to call for an ``event_type`` event, or None if nothing handles it."""


def state_key(callback: Any) -> str:
    """The key of a callback's state in a checkpoint (``state_key`` or its class name)."""
    return getattr(callback, "state_key", None) or type(callback).__name__


class RunCallbacks:
    """The callbacks of one run, and their delivery."""

    def __init__(self, bind: Binder, saved_state: Mapping[str, Any] | None = None) -> None:
        self._bind = bind
        self._saved_state: Mapping[str, Any] = saved_state or {}
        #: The callbacks, in delivery order (a callback's peers: find_callback reads it).
        self.items: list[Any] = []
        #: The first error a callback raised: the run fails with it.
        self.error: CallbackError | None = None
        #: The run's RunStarted, once published (replayed to callbacks attached later).
        self.started: RunStarted | None = None
        # Invariant: _inbox holds events not yet delivered; it is non-empty only while
        # _delivering (one delivery loop at a time).
        self._inbox: collections.deque[Event] = collections.deque()
        self._delivering = False
        # Each event type's (callback, hook) pairs, worked out once per type; emptied
        # whenever callbacks are attached.
        self._hooks: dict[type[Event], tuple[tuple[Any, Hook], ...]] = {}

    async def attach(self, callbacks: Iterable[Any]) -> None:
        """Make ``callbacks`` the run's: bound, their saved state restored, fed its events."""
        added = list(callbacks)
        for cb in added:
            self._bind(cb, self.items)
            saved = self._saved_state.get(state_key(cb))
            if saved is not None and hasattr(cb, "load_state_dict"):
                try:
                    cb.load_state_dict(saved)
                except Exception as exc:
                    self.failed(cb, "restoring its state", exc)
        self.items.extend(added)
        self._hooks.clear()
        if self.started is not None:
            await self._deliver(self.started, _hooks_for(added, RunStarted))

    async def notify(self, event: Event) -> None:
        """Deliver ``event`` to every callback, after any event being delivered now.

        The outermost delivery drains the queue, so when the publisher of the first
        event returns, every callback has seen it and all it caused.
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

    def failed(self, callback: Any, doing: str, exc: Exception) -> None:
        """Record that a callback raised: the run fails with the first such error."""
        name = callback if isinstance(callback, str) else type(callback).__name__
        log.error("callback_failed", callback=name, exc_info=exc)
        if self.error is not None:
            return
        if isinstance(exc, CallbackError):
            self.error = exc
        else:
            error = CallbackError(f"{name} failed {doing}: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            self.error = error

    def summary(self) -> dict[str, Any]:
        """The callbacks' ``run_summary()`` merged in order (one that raises is skipped)."""
        summary: dict[str, Any] = {}
        for cb in self.items:
            contribute = getattr(cb, "run_summary", None)
            if contribute is None:
                continue
            try:
                summary.update(contribute())
            except Exception as exc:
                log.error("callback_summary_failed", callback=type(cb).__name__, exc_info=exc)
        return summary

    def state(self) -> dict[str, Any]:
        """Each callback's ``state_dict()``, by :func:`state_key`: saved with a checkpoint."""
        return {state_key(cb): cb.state_dict() for cb in self.items if hasattr(cb, "state_dict")}

    def _hooks_of(self, event_type: type[Event]) -> tuple[tuple[Any, Hook], ...]:
        hooks = self._hooks.get(event_type)
        if hooks is None:
            hooks = self._hooks[event_type] = _hooks_for(self.items, event_type)
        return hooks

    async def _deliver(self, event: Event, hooks: Iterable[tuple[Any, Hook]]) -> None:
        for cb, hook in hooks:
            try:
                await hook(event)
            except Exception as exc:
                self.failed(cb, f"on {type(event).__name__}", exc)


def _hooks_for(callbacks: Iterable[Any], event_type: type[Event]) -> tuple[tuple[Any, Hook], ...]:
    """``(callback, what to call)`` for each callback that handles ``event_type``."""
    pairs = []
    for cb in callbacks:
        hook = cb.hook(event_type) if isinstance(cb, HookedCallback) else cb
        if hook is not None:
            pairs.append((cb, hook))
    return tuple(pairs)
