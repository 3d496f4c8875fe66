"""ExperimentHandle: a running experiment's live events, its result and its stop."""

from __future__ import annotations

import contextlib
from collections.abc import (
    AsyncIterator,
    Iterator,
)
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream

from expman.bus import EventBus
from expman.config import ExperimentPlan
from expman.events import Event, StopRequested
from expman.experiment.result import ExperimentResult

log = structlog.get_logger("expman")

#: Events a caller's ``events()`` stream may hold before the experiment waits for it.
STREAM_BUFFER = 10_000


class ExperimentHandle:
    """A running experiment: its live events, its result, and a way to stop it."""

    def __init__(self, plan: ExperimentPlan, bus: EventBus) -> None:
        self.plan = plan
        self.bus = bus
        self._stream: MemoryObjectReceiveStream[Event] | None = None
        self._stream_sub: Any = None
        self._events_taken = False
        self._done = anyio.Event()
        self._result: ExperimentResult | None = None
        self._error: BaseException | None = None
        self._cancel_scope: anyio.CancelScope | None = None

    @property
    def path(self) -> Path:
        return self.plan.path

    def events(self) -> AsyncIterator[Event]:
        """Every event of the experiment, in order, ending when the experiment ends."""
        if self._events_taken:
            raise RuntimeError("events() can be iterated once per experiment")
        self._events_taken = True
        assert self._stream is not None
        return self._iterate(self._stream)

    @staticmethod
    async def _iterate(stream: MemoryObjectReceiveStream[Event]) -> AsyncIterator[Event]:
        async with stream:
            async for event in stream:
                yield event

    async def wait(self) -> ExperimentResult:
        """The experiment's result, once it has ended."""
        if not self._events_taken:
            # Nobody will read the stream: stop feeding it.
            self._events_taken = True
            if self._stream_sub is not None:
                self._stream_sub.unsubscribe()
            if self._stream is not None:
                self._stream.close()
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        """Cancel every run now (no grace period); cleanup still records what happened."""
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    async def stop(self, reason: str = "stopped by caller") -> None:
        """Ask every run to stop (cooperatively first, then after the grace period)."""
        await self.bus.publish(
            StopRequested(
                experiment=self.plan.name, scope="experiment", reason=reason, source="user"
            )
        )


@contextlib.contextmanager
def single_errors() -> Iterator[None]:
    """Re-raise a task group's lone error as itself, not wrapped in an ExceptionGroup.

    The caller of ``start_experiment`` should see the ``WorkspaceError`` (or its own
    exception) it would see without expman's task groups in between.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if inner is group:
            raise
        raise inner from None
