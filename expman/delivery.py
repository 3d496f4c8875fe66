"""How a subscriber declares itself: the event types it wants and how it receives them.

:func:`declared` reads a subscriber's ``events``, ``delivery`` and ``name``
attributes (defaults: every event, a mailbox of :data:`DEFAULT_MAILBOX`, its
qualified name) and refuses, with a TypeError, anything that is not an async
callable.  :meth:`expman.bus.EventBus.attach` subscribes by it; the contract itself
is :mod:`expman.subscribers.base`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from expman.events import Event

#: The mailbox of a subscriber that declares no delivery (a plain async function).
DEFAULT_MAILBOX = 1024


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a subscriber receives events.

    ``mailbox=None``: control (awaited in order during ``publish``; may publish and
    stop runs before the publisher goes on).  ``mailbox=N``: its own ordered queue of
    at most N events (``0``: unbounded) drained by one task; the publisher waits only
    when it is full.  ``batch``: the handler receives a list of the waiting events.
    """

    mailbox: int | None = None
    batch: bool = False

    @property
    def is_control(self) -> bool:
        return self.mailbox is None


#: Control delivery: awaited in order, before ``publish`` returns.
CONTROL = Delivery()


def mailbox(size: int = DEFAULT_MAILBOX, *, batch: bool = False) -> Delivery:
    """Mailbox delivery: a bounded queue of ``size`` events, drained by its own task."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"a mailbox holds an integer >= 0 of events, got {size!r}")
    return Delivery(mailbox=size, batch=batch)


def is_async_callable(handler: Any) -> bool:
    """Whether ``handler`` is an ``async def`` (or an object whose ``__call__`` is one)."""
    if inspect.iscoroutinefunction(handler):
        return True
    if inspect.isroutine(handler) or isinstance(handler, type):
        return False
    return calls_are_async(type(handler))


def calls_are_async(cls: type) -> bool:
    """Whether calling an instance of ``cls`` runs an ``async def`` ``__call__``."""
    return inspect.iscoroutinefunction(cls.__call__)


def declared(subscriber: Any) -> tuple[tuple[type[Event], ...], Delivery, str]:
    """A subscriber's declared event types, delivery and name (TypeError if it cannot be one)."""
    if not callable(subscriber) or not is_async_callable(subscriber):
        what = getattr(subscriber, "__qualname__", None) or type(subscriber).__name__
        raise TypeError(
            f"subscriber {what} must be an async callable (async def, or a class with an "
            "async __call__); a plain def would block the event loop on every event"
        )
    types = getattr(subscriber, "events", None) or (Event,)
    if isinstance(types, type):
        types = (types,)
    types = tuple(types)
    if not all(isinstance(t, type) and issubclass(t, Event) for t in types):
        raise TypeError(f"subscriber {subscriber!r}: events must be Event classes, got {types!r}")
    delivery = getattr(subscriber, "delivery", None)
    if delivery is None:
        delivery = mailbox()
    if not isinstance(delivery, Delivery):
        raise TypeError(
            f"subscriber {subscriber!r}: delivery must be expman.bus.CONTROL or "
            f"expman.bus.mailbox(...), got {delivery!r}"
        )
    name = (
        getattr(subscriber, "name", None)
        or getattr(subscriber, "__qualname__", None)
        or type(subscriber).__name__
    )
    return types, delivery, str(name)
