"""SubscriberContract: the conformance suite every subscriber of an experiment passes.

The contract is :mod:`expman.subscribers.base`'s.  Subclass :class:`SubscriberContract`
in a test module, say how to build your subscriber, and pytest runs the suite on it
(the same suite runs on every built-in writer and display)::

    from expman.testing.subscribers import SubscriberContract

    class TestMyTracker(SubscriberContract):
        def make_subscriber(self, tmp_path):
            return MyTracker(url="http://localhost:1")

        def check_output(self, subscriber, delivered, tmp_path):
            assert subscriber.sent == len(delivered)   # what it did with them

Each test attaches the subscriber to a real :class:`~expman.bus.EventBus` the way
it declares itself (``events``, ``delivery``), publishes an experiment's events
(:meth:`~SubscriberContract.sample_events`) and checks:

* it receives the events it declared, each once, in publish order;
* a subscriber that raises on every event, attached before it, changes nothing
  for it (isolation) and is reported;
* leaving the bus delivers everything published before, also when the block is
  cancelled (drain on shutdown, drain on cancel);
* slowed down and flooded, its queue never holds more than its mailbox allows
  (bounded memory: publishers wait instead), and a control subscriber queues nothing.

A recording proxy with the subscriber's own declaration stands between the bus and
the subscriber, so the suite sees exactly what was delivered; every event still
reaches the real subscriber, and :meth:`~SubscriberContract.check_output` checks
what it made of them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from expman.bus import Delivery, EventBus, declared
from expman.events import (
    CheckpointSaved,
    EpochEnd,
    Event,
    ExperimentFinished,
    ExperimentStarted,
    LogRecord,
    RunFinished,
    RunStarted,
    StopRequested,
    TrialFinished,
    TrialStarted,
)
from expman.status import RunStatus

__all__ = ["SubscriberContract", "experiment_events"]


def experiment_events(
    experiment: str = "exp",
    *,
    path: str = "/tmp/exp",
    trial: str = "a",
    repeats: int = 2,
    epochs: int = 5,
) -> list[Event]:
    """The events of a small experiment: one trial, ``repeats`` runs of ``epochs`` epochs."""
    t0 = time.time()
    events: list[Event] = [
        ExperimentStarted(experiment=experiment, path=path, runs=repeats, trials=1),
        TrialStarted(experiment=experiment, trial=trial, trial_id="1", repeats=repeats),
    ]
    for repeat in range(repeats):
        run: dict[str, Any] = {"experiment": experiment, "trial": trial, "repeat": repeat}
        events.append(RunStarted(**run, seed=repeat, config_hash="abc"))
        for epoch in range(epochs):
            metrics = {"loss": 1.0 / (epoch + 1), "acc": epoch / epochs}
            events.append(EpochEnd(**run, epoch=epoch, metrics=metrics))
        events.append(LogRecord(**run, line='{"event": "a line from the pipeline"}'))
        events.append(CheckpointSaved(**run, path=f"{path}/ck-{repeat}", epoch=epochs - 1))
        if repeat == repeats - 1:
            events.append(StopRequested(**run, scope="run", reason="enough", source="test"))
        status = RunStatus.STOPPED if repeat == repeats - 1 else RunStatus.COMPLETED
        events.append(
            RunFinished(**run, status=status, duration=0.1 * epochs, metrics={"loss": 0.2})
        )
    counts = {"completed": repeats - 1, "stopped": 1}
    events.append(TrialFinished(experiment=experiment, trial=trial, trial_id="1", counts=counts))
    events.append(
        ExperimentFinished(
            experiment=experiment, status="completed", duration=time.time() - t0, counts=counts
        )
    )
    return events


class _Recorder:
    """Stands between the bus and a subscriber, with its declaration; records deliveries."""

    def __init__(self, subscriber: Any, delay: float = 0.0) -> None:
        self.subscriber = subscriber
        self.events, self.delivery, self.name = declared(subscriber)
        self.delivered: list[Event] = []
        self._delay = delay

    async def __call__(self, received: Any) -> None:
        batch = list(received) if self.delivery.batch else [received]
        self.delivered.extend(batch)
        if self._delay:
            await anyio.sleep(self._delay)
        await self.subscriber(received)


class _Raising:
    """A subscriber that raises on every event (the suite's bad neighbour)."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.name = "contract.raising"
        self.calls = 0

    async def __call__(self, received: Any) -> None:
        self.calls += 1
        raise RuntimeError("a subscriber that always fails")


class SubscriberContract:
    """Base of a subscriber's conformance tests (not collected by itself: no ``Test``)."""

    # -- what a subclass provides ---------------------------------------------------------

    def make_subscriber(self, tmp_path: Path) -> Any:
        """A fresh subscriber to test (files it writes go under ``tmp_path``)."""
        raise NotImplementedError("a SubscriberContract subclass defines make_subscriber")

    def sample_events(self, tmp_path: Path) -> list[Event]:
        """The events to publish (default: :func:`experiment_events`)."""
        return experiment_events(path=str(tmp_path / "exp"))

    @contextlib.asynccontextmanager
    async def running(self, subscriber: Any, tmp_path: Path) -> AsyncIterator[None]:
        """Whatever must run around the bus for this subscriber (a log sink, say)."""
        yield

    def check_output(self, subscriber: Any, delivered: Sequence[Event], tmp_path: Path) -> None:
        """Check what the subscriber made of ``delivered`` (its files, its state)."""

    # -- the suite -------------------------------------------------------------------------

    def _expected(self, subscriber: Any, events: Sequence[Event]) -> list[Event]:
        types, _, _ = declared(subscriber)
        return [e for e in events if isinstance(e, types)]

    async def _publish_all(
        self,
        subscriber: Any,
        tmp_path: Path,
        *,
        before: Sequence[Any] = (),
        cancel: bool = False,
    ) -> tuple[_Recorder, EventBus]:
        errors: list[tuple[str, BaseException]] = []
        bus = EventBus(on_error=lambda name, event, exc: errors.append((name, exc)))
        recorder = _Recorder(subscriber)
        events = self.sample_events(tmp_path)
        async with self.running(subscriber, tmp_path):
            with anyio.CancelScope() as scope:
                async with bus:
                    for other in before:
                        bus.attach(other)
                    bus.attach(recorder)
                    for event in events:
                        await bus.publish(event)
                    if cancel:
                        scope.cancel()
                        await (
                            anyio.lowlevel.checkpoint()
                        )  # the cancellation lands here, inside the bus
        self._errors = errors
        return recorder, bus

    def test_declares_a_usable_contract(self, tmp_path: Path) -> None:
        types, delivery, name = declared(self.make_subscriber(tmp_path))
        assert types
        assert all(issubclass(t, Event) for t in types)
        assert isinstance(delivery, Delivery)
        assert name

    async def test_receives_its_events_once_in_publish_order(self, tmp_path: Path) -> None:
        subscriber = self.make_subscriber(tmp_path)
        recorder, _ = await self._publish_all(subscriber, tmp_path)
        expected = self._expected(subscriber, self.sample_events(tmp_path))
        got = [(type(e).__name__, e.trial, e.repeat) for e in recorder.delivered]
        assert got == [(type(e).__name__, e.trial, e.repeat) for e in expected]
        assert self._errors == [], f"the subscriber raised: {self._errors!r}"
        self.check_output(subscriber, recorder.delivered, tmp_path)

    async def test_is_isolated_from_a_subscriber_that_raises(self, tmp_path: Path) -> None:
        subscriber = self.make_subscriber(tmp_path)
        _, delivery, _ = declared(subscriber)
        bad = _Raising(delivery)
        recorder, _ = await self._publish_all(subscriber, tmp_path, before=[bad])
        expected = self._expected(subscriber, self.sample_events(tmp_path))
        assert len(recorder.delivered) == len(expected)
        assert bad.calls > 0
        assert {name for name, _ in self._errors} == {"contract.raising"}
        self.check_output(subscriber, recorder.delivered, tmp_path)

    async def test_drains_on_shutdown(self, tmp_path: Path) -> None:
        """Leaving ``async with bus`` right after publishing: everything is delivered."""
        subscriber = self.make_subscriber(tmp_path)
        recorder, _ = await self._publish_all(subscriber, tmp_path)
        assert len(recorder.delivered) == len(
            self._expected(subscriber, self.sample_events(tmp_path))
        )

    async def test_drains_on_cancel(self, tmp_path: Path) -> None:
        """Cancelled right after publishing: what was published is still delivered."""
        subscriber = self.make_subscriber(tmp_path)
        recorder, _ = await self._publish_all(subscriber, tmp_path, cancel=True)
        assert len(recorder.delivered) == len(
            self._expected(subscriber, self.sample_events(tmp_path))
        )
        self.check_output(subscriber, recorder.delivered, tmp_path)

    async def test_memory_stays_bounded_when_it_is_slow(self, tmp_path: Path) -> None:
        """Slowed down and flooded: its queue never outgrows its mailbox; publishers wait."""
        subscriber = self.make_subscriber(tmp_path)
        _, delivery, name = declared(subscriber)
        sample = self.sample_events(tmp_path)
        per_round = max(1, len(self._expected(subscriber, sample)))
        rounds = (
            1 if delivery.is_control else min(50, 2 * (delivery.mailbox or 64) // per_round + 1)
        )
        flood = [event for _ in range(rounds) for event in sample]
        recorder = _Recorder(subscriber, delay=0.0002)
        bus = EventBus()
        async with self.running(subscriber, tmp_path):
            async with bus:
                bus.attach(recorder)
                for event in flood:
                    await bus.publish(event)
                stats = next(s for s in bus.statistics().subscribers if s.name == name)
        assert len(recorder.delivered) == len(self._expected(subscriber, flood))
        if delivery.is_control:
            assert stats.max_waiting == 0
        elif delivery.mailbox:
            # Its queue, plus the event in hand (a waiting publisher moves one in meanwhile).
            assert stats.max_waiting <= delivery.mailbox + 1
            if len(recorder.delivered) > delivery.mailbox:
                assert stats.publisher_waits > 0
