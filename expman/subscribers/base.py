"""The subscriber contract: every writer, display, tracker and user subscriber keeps it.

A subscriber is an async callable the experiment's bus delivers events to.  It
declares three things (as attributes; :class:`Subscriber` gives the defaults):

``events``
    The event classes it wants (a subclass's events included).  Default: every event.
``delivery``
    How it receives them, :data:`~expman.bus.CONTROL` or :func:`~expman.bus.mailbox`:

    * **control**: awaited in order during ``publish``, before the publisher goes on.
      It may publish events itself and stop runs, and it holds up training while it
      works: right for decisions (a pruner, early stopping across trials), wrong
      for anything slow.
    * **mailbox** (the default, 1024 events): its own bounded, ordered queue, drained
      by one task.  It never blocks a run unless its queue is full (then publishers
      wait: bounded memory, nothing dropped).  With ``batch=True`` it receives a list
      of the waiting events, so a writer makes one write per batch.  Loggers,
      trackers and displays are mailbox subscribers.
``name``
    How errors and statistics name it (default: its class's or function's name).

What the experiment guarantees every subscriber:

* **Order.**  Each subscriber sees its events in publish order.
* **Isolation.**  A subscriber that raises is reported (``subscriber_failed`` in
  logs/experiment.log) and goes on receiving events; runs and other subscribers
  never see its error.  (A *run's* callbacks are different: there a raising callback
  fails its run, the Lightning/Keras rule; see :mod:`expman.run.callbacks`.)
* **Drain.**  When the experiment ends, or is cancelled, every event published
  before the end is delivered before ``run_experiment`` returns (each mailbox gets a
  deadline, ``EventBus.drain_timeout``, once the bus closes).

A plain ``async def`` is a mailbox subscriber to every event; :func:`subscriber`
declares something else for it.  A plain ``def`` is refused with a TypeError when
it is passed to ``run_experiment``.  Subscribers named in YAML (``subscribers:`` in
experiment.yaml or env.yaml) are built through the same registry as callbacks.
:class:`expman.testing.subscribers.SubscriberContract` is the conformance suite every built-in
subscriber passes; run it on your own.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from expman.bus import CONTROL, Delivery, mailbox
from expman.events import Event
from expman.serializable import YAMLSerializable

__all__ = ["CONTROL", "AnySubscriber", "Delivery", "Subscriber", "mailbox", "subscriber"]

F = TypeVar("F", bound=Callable[..., Any])
#: What ``run_experiment(subscribers=...)`` takes: any async callable of an event
#: (a :class:`Subscriber`, an :class:`expman.Callback`, an ``async def``).
AnySubscriber = Callable[[Any], Awaitable[None]]


class Subscriber(YAMLSerializable, abc.ABC):
    """Base class of an experiment-level subscriber (see the module's contract).

    Subclasses implement ``async def __call__(self, event)`` (or, with a batched
    mailbox, ``async def __call__(self, events)``) and may override the class
    attributes.  Being :class:`~expman.serializable.YAMLSerializable`, a registered
    subclass can be named in YAML: ``subscribers: [{type: Name, ...params}]``.
    """

    events: ClassVar[tuple[type[Event], ...]] = (Event,)
    delivery: ClassVar[Delivery] = mailbox()

    @abc.abstractmethod
    async def __call__(self, event: Any) -> None:
        """Receive one event (or, with a batched mailbox, a list of them)."""


def subscriber(
    *events: type[Event], delivery: Delivery | None = None, name: str | None = None
) -> Callable[[F], F]:
    """Declare a plain async function's events, delivery or name::

    @expman.subscriber(CheckpointSaved, delivery=expman.CONTROL)
    async def watch(event): ...
    """

    def declare(fn: F) -> F:
        if events:
            fn.events = tuple(events)  # type: ignore[attr-defined]
        if delivery is not None:
            fn.delivery = delivery  # type: ignore[attr-defined]
        if name is not None:
            fn.name = name  # type: ignore[attr-defined]
        return fn

    return declare
