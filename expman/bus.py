"""EventBus: typed publish/subscribe with ordered, bounded mailboxes.

Two kinds of subscriber:

* **control** subscribers (the default) are awaited one after another, in the order
  they subscribed, before :meth:`EventBus.publish` returns.  Callbacks that decide
  about a run (early stopping, checkpoints) are control subscribers, which is why
  ``await ctx.epoch_end(...)`` returns only when every one of them has seen the epoch.
* **mailbox** subscribers (``mailbox=N``) each own a bounded, ordered queue drained by
  one consumer task.  Writers are mailbox subscribers: they never hold up a publisher
  until their mailbox is full, and then the publisher waits (backpressure, bounded
  memory).  With ``batch=True`` the handler receives every event that is waiting, so a
  writer can make one ``write`` per batch.

A subscriber to a class receives its subclasses.  Event types that nobody listens to
cost one dict lookup.  A subscriber that raises is reported and isolated: the
publisher and the other subscribers go on.  Leaving ``async with bus`` closes every
mailbox and waits until each has been drained.

:meth:`EventBus.attach` subscribes an object the way it declares itself: its
``events`` (the event types it wants; default every event) and its ``delivery``
(:mod:`expman.delivery`: control, or a mailbox of 1024 events by default).
The contract is written out in :mod:`expman.subscribers.base`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from expman.delivery import CONTROL, DEFAULT_MAILBOX, Delivery, declared, mailbox
from expman.events import Event

__all__ = [
    "CONTROL",
    "DEFAULT_MAILBOX",
    "BusStatistics",
    "Delivery",
    "EventBus",
    "SubscriberStatistics",
    "Subscription",
    "declared",
    "mailbox",
]

E = TypeVar("E", bound=Event)
Handler = Callable[[Any], Awaitable[None]]
ErrorReporter = Callable[[str, Event | None, BaseException], None]

#: How many waiting events a batched mailbox hands over at most in one call.
MAX_BATCH = 4096


@dataclass(slots=True)
class SubscriberStatistics:
    """What one subscriber has seen so far."""

    name: str
    mailbox_size: int | None
    delivered: int = 0
    errors: int = 0
    waiting: int = 0
    max_waiting: int = 0
    publisher_waits: int = 0


@dataclass(frozen=True, slots=True)
class BusStatistics:
    """A snapshot of the bus: how much went through and where it is queued."""

    published: int
    subscribers: tuple[SubscriberStatistics, ...]
    errors: int


@dataclass(eq=False, slots=True)
class _Subscriber:
    types: tuple[type[Event], ...]
    handler: Handler
    name: str
    mailbox_size: int | None
    batch: bool
    stats: SubscriberStatistics
    send: MemoryObjectSendStream[Event] | None = None
    receive: MemoryObjectReceiveStream[Event] | None = None
    active: bool = True
    drain_scope: anyio.CancelScope | None = None
    # Invariant: handled <= enqueued; both count events (a batch counts its events).
    enqueued: int = 0
    handled: int = 0
    ended: bool = False
    waiters: list[anyio.Event] | None = None


class Subscription(Generic[E]):
    """The handle :meth:`EventBus.subscribe` returns; ``unsubscribe()`` ends it."""

    __slots__ = ("_bus", "_subscriber")

    def __init__(self, bus: EventBus, subscriber: _Subscriber) -> None:
        self._bus = bus
        self._subscriber = subscriber

    @property
    def name(self) -> str:
        return self._subscriber.name

    @property
    def active(self) -> bool:
        return self._subscriber.active

    def unsubscribe(self) -> None:
        """Stop delivery; a mailbox subscriber still drains what it holds."""
        self._bus._remove(self._subscriber)

    def __enter__(self) -> Subscription[E]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unsubscribe()


@dataclass(slots=True)
class _Counters:
    published: int = 0
    errors: int = 0


class EventBus:
    """Delivers each published event to the subscribers of its class and its bases."""

    def __init__(self, *, on_error: ErrorReporter | None = None) -> None:
        self._subscribers: list[_Subscriber] = []
        # Invariant: _routes[t] is the tuple of active subscribers whose types match t,
        # in subscription order; cleared whenever the subscriber list changes.
        self._routes: dict[type[Event], tuple[_Subscriber, ...]] = {}
        self._counters = _Counters()
        self._on_error = on_error
        self._task_group: TaskGroup | None = None
        self._pending_consumers: list[_Subscriber] = []
        # Unsubscribed mailboxes still draining (their consumers get the deadline too).
        self._closing: list[_Subscriber] = []
        self._closed = False
        #: Seconds mailboxes may take to drain once the bus closes.
        self.drain_timeout = 10.0

    # -- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> EventBus:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        for sub in self._pending_consumers:
            self._task_group.start_soon(self._consume, sub, name=f"mailbox:{sub.name}")
        self._pending_consumers.clear()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.aclose()
        assert self._task_group is not None
        return await self._task_group.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Close every mailbox; their consumers drain what is queued, then end.

        Consumers are shielded from cancellation, so that what was published before a
        cancellation (a run's last ``RunFinished``) still reaches the writers; from
        here on each has at most :attr:`drain_timeout` seconds to finish.
        """
        self._closed = True
        deadline = anyio.current_time() + self.drain_timeout
        for sub in list(self._subscribers):
            if sub.send is not None:
                sub.send.close()
            if sub.drain_scope is not None:
                sub.drain_scope.deadline = min(sub.drain_scope.deadline, deadline)
        for sub in self._closing:
            if sub.drain_scope is not None:
                sub.drain_scope.deadline = min(sub.drain_scope.deadline, deadline)

    # -- subscribing ----------------------------------------------------------------

    def subscribe(
        self,
        event_type: type[E] | tuple[type[Event], ...],
        handler: Callable[[E], Awaitable[None]] | Callable[[Sequence[E]], Awaitable[None]],
        *,
        mailbox: int | None = None,
        batch: bool = False,
        name: str | None = None,
    ) -> Subscription[E]:
        """Deliver events of ``event_type`` (and subclasses) to ``handler``.

        Without ``mailbox`` the handler is a control subscriber, awaited in order
        during ``publish``.  With ``mailbox=N`` it gets its own queue of at most N
        events and a consumer task; ``batch=True`` passes a list of events instead of
        one.  ``mailbox=0`` means unbounded (use only for consumers that never lag).
        """
        types = event_type if isinstance(event_type, tuple) else (event_type,)
        label = name or getattr(handler, "__qualname__", None) or repr(handler)
        sub = _Subscriber(
            types=types,
            handler=handler,
            name=label,
            mailbox_size=mailbox,
            batch=batch,
            stats=SubscriberStatistics(name=label, mailbox_size=mailbox),
        )
        if mailbox is not None:
            if self._closed:
                raise RuntimeError("the bus is closed")
            size = math.inf if mailbox == 0 else mailbox
            sub.send, sub.receive = anyio.create_memory_object_stream[Event](size)
            if self._task_group is not None:
                self._task_group.start_soon(self._consume, sub, name=f"mailbox:{label}")
            else:
                self._pending_consumers.append(sub)
        self._subscribers.append(sub)
        self._routes.clear()
        return Subscription(self, sub)

    def attach(self, subscriber: Any, *, name: str | None = None) -> Subscription[Event]:
        """Subscribe ``subscriber`` as it declares itself (``events``, ``delivery``, ``name``).

        A TypeError, at once, for anything that is not an async callable.
        """
        types, delivery, label = declared(subscriber)
        return self.subscribe(
            types,
            subscriber,
            mailbox=delivery.mailbox,
            batch=delivery.batch,
            name=name or label,
        )

    def open_stream(
        self,
        event_type: type[E] | tuple[type[Event], ...],
        *,
        size: int,
        name: str = "stream",
    ) -> tuple[Subscription[E], MemoryObjectReceiveStream[Event]]:
        """A subscription whose events the caller reads from a stream (no consumer task).

        Like a mailbox of ``size`` events, the publisher waits when it is full.  When
        the reader closes its end, the subscription ends by itself.
        """
        types = event_type if isinstance(event_type, tuple) else (event_type,)

        async def unused(event: Event) -> None:  # the stream is read by the caller
            raise AssertionError("a stream subscription has no handler")

        sub = _Subscriber(
            types=types,
            handler=unused,
            name=name,
            mailbox_size=size,
            batch=False,
            stats=SubscriberStatistics(name=name, mailbox_size=size),
        )
        sub.send, receive = anyio.create_memory_object_stream[Event](size)
        self._subscribers.append(sub)
        self._routes.clear()
        return Subscription(self, sub), receive

    def _remove(self, sub: _Subscriber) -> None:
        if not sub.active:
            return
        sub.active = False
        self._subscribers.remove(sub)
        self._routes.clear()
        if sub.send is not None:
            sub.send.close()
            if sub.receive is not None:
                self._closing.append(sub)

    def _route(self, event_type: type[Event]) -> tuple[_Subscriber, ...]:
        route = tuple(s for s in self._subscribers if issubclass(event_type, s.types))
        self._routes[event_type] = route
        return route

    # -- publishing -----------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        """Deliver ``event``: control subscribers have seen it when this returns."""
        self._counters.published += 1
        route = self._routes.get(type(event))
        if route is None:
            route = self._route(type(event))
        for sub in route:
            send = sub.send
            if send is None:
                try:
                    await sub.handler(event)
                except Exception as exc:
                    self._report(sub, event, exc)
                else:
                    sub.stats.delivered += 1
                continue
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:
                sub.stats.publisher_waits += 1
                try:
                    await send.send(event)
                except anyio.BrokenResourceError:
                    self._remove(sub)  # its reader went away
                    continue
                except anyio.ClosedResourceError:
                    continue
            except anyio.BrokenResourceError:
                self._remove(sub)
                continue
            except anyio.ClosedResourceError:
                continue
            sub.enqueued += 1

    async def _consume(self, sub: _Subscriber) -> None:
        receive = sub.receive
        assert receive is not None
        stats = sub.stats
        with anyio.CancelScope(shield=True) as scope:
            sub.drain_scope = scope
            if self._closed:
                scope.deadline = anyio.current_time() + self.drain_timeout
            try:
                await self._drain(sub, receive, stats)
            finally:
                sub.ended = True
                self._handled(sub, 0)

    async def _drain(
        self,
        sub: _Subscriber,
        receive: MemoryObjectReceiveStream[Event],
        stats: SubscriberStatistics,
    ) -> None:
        async with receive:
            while True:
                try:
                    first = await receive.receive()
                except anyio.EndOfStream:
                    return
                if sub.batch:
                    batch = [first]
                    while len(batch) < MAX_BATCH:
                        try:
                            batch.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    waiting = receive.statistics().current_buffer_used + len(batch)
                    stats.max_waiting = max(stats.max_waiting, waiting)
                    try:
                        await sub.handler(batch)
                    except Exception as exc:
                        self._report(sub, batch[-1], exc)
                    else:
                        stats.delivered += len(batch)
                    self._handled(sub, len(batch))
                else:
                    waiting = receive.statistics().current_buffer_used + 1
                    stats.max_waiting = max(stats.max_waiting, waiting)
                    try:
                        await sub.handler(first)
                    except Exception as exc:
                        self._report(sub, first, exc)
                    else:
                        stats.delivered += 1
                    self._handled(sub, 1)

    @staticmethod
    def _handled(sub: _Subscriber, count: int) -> None:
        sub.handled += count
        if sub.waiters:
            waiters, sub.waiters = sub.waiters, None
            for waiter in waiters:
                waiter.set()

    async def settled(self, name: str) -> bool:
        """Wait until mailbox subscriber ``name`` has handled every event published so far.

        True when it has never failed (a handler that raised, at any time, makes it
        False: what it wrote may be incomplete).  Returns at once, True, when no
        mailbox subscriber has that name; False once its consumer has ended before
        handling them all.  Call it from a task other than that subscriber's own.
        """
        sub = next((s for s in self._subscribers if s.name == name and s.receive is not None), None)
        if sub is None:
            sub = next((s for s in self._closing if s.name == name), None)
            if sub is None:
                return True
        target = sub.enqueued
        while sub.handled < target and not sub.ended:
            waiter = anyio.Event()
            if sub.waiters is None:
                sub.waiters = []
            sub.waiters.append(waiter)
            await waiter.wait()
        return sub.handled >= target and sub.stats.errors == 0

    def _report(self, sub: _Subscriber, event: Event | None, exc: BaseException) -> None:
        sub.stats.errors += 1
        self._counters.errors += 1
        if self._on_error is not None:
            try:
                self._on_error(sub.name, event, exc)
            except Exception:  # the reporter itself must not break publishing
                pass

    # -- introspection --------------------------------------------------------------

    def statistics(self) -> BusStatistics:
        """Counts of published events, deliveries, errors and queued events."""
        subs = []
        for sub in self._subscribers:
            if sub.receive is not None:
                sub.stats.waiting = sub.receive.statistics().current_buffer_used
            subs.append(sub.stats)
        return BusStatistics(
            published=self._counters.published,
            subscribers=tuple(subs),
            errors=self._counters.errors,
        )
