"""Helpers for users testing their own subscribers and pipelines."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from expman.events import Event
from expman.testing.synthetic import SyncSyntheticCurves, SyntheticCurves

__all__ = [
    "CapturedEvents",
    "SyncSyntheticCurves",
    "SyntheticCurves",
    "capture_events",
]

E = TypeVar("E", bound=Event)


@dataclass
class CapturedEvents:
    """Every event a subscriber received, in order; pass ``.subscriber`` to expman."""

    events: list[Event] = field(default_factory=list)

    async def subscriber(self, event: Event) -> None:
        self.events.append(event)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def of_type(self, event_type: type[E]) -> list[E]:
        """The captured events of one class (and its subclasses)."""
        return [e for e in self.events if isinstance(e, event_type)]

    def names(self) -> list[str]:
        """The class names of the captured events, in order."""
        return [type(e).__name__ for e in self.events]


@contextlib.asynccontextmanager
async def capture_events() -> AsyncIterator[CapturedEvents]:
    """Collect events: ``run_experiment(..., subscribers=[events.subscriber])`` inside."""
    yield CapturedEvents()
