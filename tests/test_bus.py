"""EventBus: ordering, isolation, backpressure, unsubscribe and draining."""

from __future__ import annotations

import gc
import tracemalloc

import anyio
import pytest

from expman.bus import EventBus
from expman.events import EpochEnd, Event, RunFinished, RunStarted


def epoch(n: int, trial: str = "a") -> EpochEnd:
    return EpochEnd(experiment="e", trial=trial, repeat=0, epoch=n, metrics={"loss": n})


class TestControlSubscribers:
    async def test_awaited_in_subscription_order_before_publish_returns(self) -> None:
        """Control subscribers run one after another, in order, inside publish."""
        calls: list[str] = []

        async def first(event: Event) -> None:
            await anyio.sleep(0.01)
            calls.append("first")

        async def second(event: Event) -> None:
            calls.append("second")

        bus = EventBus()
        bus.subscribe(EpochEnd, first)
        bus.subscribe(EpochEnd, second)
        await bus.publish(epoch(0))
        assert calls == ["first", "second"]

    async def test_base_class_subscription_receives_subclasses(self) -> None:
        """Subscribing to Event receives every event; to EpochEnd only those."""
        seen: dict[str, list[str]] = {"all": [], "epochs": []}

        async def on_all(event: Event) -> None:
            seen["all"].append(type(event).__name__)

        async def on_epochs(event: EpochEnd) -> None:
            seen["epochs"].append(type(event).__name__)

        bus = EventBus()
        bus.subscribe(Event, on_all)
        bus.subscribe(EpochEnd, on_epochs)
        await bus.publish(RunStarted(experiment="e", trial="a", repeat=0, seed=1, config_hash=""))
        await bus.publish(epoch(0))
        assert seen == {"all": ["RunStarted", "EpochEnd"], "epochs": ["EpochEnd"]}

    async def test_raising_subscriber_is_isolated_and_reported(self) -> None:
        """A subscriber that raises does not stop the publisher or the others."""
        reported: list[tuple[str, str]] = []
        got: list[int] = []

        async def broken(event: EpochEnd) -> None:
            raise RuntimeError("subscriber bug")

        async def fine(event: EpochEnd) -> None:
            got.append(event.epoch)

        bus = EventBus(on_error=lambda name, e, exc: reported.append((name, str(exc))))
        bus.subscribe(EpochEnd, broken, name="broken")
        bus.subscribe(EpochEnd, fine)
        await bus.publish(epoch(0))
        await bus.publish(epoch(1))
        assert got == [0, 1]
        assert reported == [("broken", "subscriber bug")] * 2
        assert bus.statistics().errors == 2

    async def test_unsubscribe_stops_delivery(self) -> None:
        """After unsubscribe() the handler sees nothing more."""
        got: list[int] = []

        async def handler(event: EpochEnd) -> None:
            got.append(event.epoch)

        bus = EventBus()
        sub = bus.subscribe(EpochEnd, handler)
        await bus.publish(epoch(0))
        sub.unsubscribe()
        sub.unsubscribe()  # idempotent
        await bus.publish(epoch(1))
        assert got == [0]
        assert not sub.active

    async def test_no_subscriber_is_cheap_and_counted(self) -> None:
        """Publishing an event type nobody listens to only counts it."""
        bus = EventBus()
        await bus.publish(epoch(0))
        stats = bus.statistics()
        assert stats.published == 1
        assert stats.subscribers == ()


class TestMailboxSubscribers:
    async def test_each_mailbox_keeps_publish_order(self) -> None:
        """A mailbox subscriber receives events in publish order, even when slow."""
        got: list[int] = []

        async def slow(event: EpochEnd) -> None:
            await anyio.sleep(0.001)
            got.append(event.epoch)

        async with EventBus() as bus:
            bus.subscribe(EpochEnd, slow, mailbox=4)
            for n in range(50):
                await bus.publish(epoch(n))
        assert got == list(range(50))

    async def test_shutdown_drains_every_mailbox(self) -> None:
        """Leaving the bus's block waits until every queued event was handled."""
        got: list[int] = []

        async def batch(events: list[EpochEnd]) -> None:
            await anyio.sleep(0.01)
            got.extend(e.epoch for e in events)

        async with EventBus() as bus:
            bus.subscribe(EpochEnd, batch, mailbox=1000, batch=True)
            for n in range(500):
                await bus.publish(epoch(n))
        assert got == list(range(500))

    async def test_settled_waits_until_a_mailbox_handled_what_was_published(self) -> None:
        """``settled(name)`` returns once the events published before it were handled."""
        got: list[int] = []

        async def slow(events: list[EpochEnd]) -> None:
            await anyio.sleep(0.005)
            got.extend(e.epoch for e in events)

        async with EventBus() as bus:
            bus.subscribe(EpochEnd, slow, mailbox=8, batch=True, name="slow")
            for n in range(30):
                await bus.publish(epoch(n))
            assert len(got) < 30  # still queued: the check below can fail
            assert await bus.settled("slow") is True
            assert got == list(range(30))
            assert await bus.settled("nobody") is True  # no such mailbox: nothing to wait for

    async def test_settled_is_false_once_the_mailbox_failed(self) -> None:
        async def broken(event: EpochEnd) -> None:
            if event.epoch == 2:
                raise OSError("disk gone")

        async with EventBus() as bus:
            bus.subscribe(EpochEnd, broken, mailbox=8, name="broken")
            await bus.publish(epoch(1))
            assert await bus.settled("broken") is True
            await bus.publish(epoch(2))
            await bus.publish(epoch(3))
            assert await bus.settled("broken") is False

    async def test_full_mailbox_makes_the_publisher_wait(self) -> None:
        """With a stalled subscriber, publish blocks once its mailbox is full."""
        release = anyio.Event()

        async def stalled(event: EpochEnd) -> None:
            await release.wait()

        async with EventBus() as bus:
            bus.subscribe(EpochEnd, stalled, mailbox=3, name="stalled")
            published = 0
            with anyio.move_on_after(0.3):
                for n in range(100):
                    await bus.publish(epoch(n))
                    published += 1
            # One event is being handled, three wait in the mailbox, the fifth blocks.
            assert published == 4
            stats = next(s for s in bus.statistics().subscribers if s.name == "stalled")
            assert stats.waiting == 3
            assert stats.publisher_waits >= 1
            release.set()

    @pytest.mark.slow
    async def test_memory_stays_bounded_with_a_slow_subscriber(self) -> None:
        """200k events through a slow mailbox subscriber never queue more than its bound."""
        handled = 0

        async def slow(events: list[EpochEnd]) -> None:
            nonlocal handled
            await anyio.sleep(0.0005)
            handled += len(events)

        gc.collect()
        tracemalloc.start()
        async with EventBus() as bus:
            bus.subscribe(EpochEnd, slow, mailbox=256, batch=True, name="slow")
            for n in range(200_000):
                await bus.publish(EpochEnd(experiment="e", trial="a", repeat=0, epoch=n))
            _, peak = tracemalloc.get_traced_memory()
            stats = next(s for s in bus.statistics().subscribers if s.name == "slow")
        tracemalloc.stop()
        assert handled == 200_000
        assert stats.max_waiting <= 256 + 1
        # 256 queued events of ~200 bytes each, plus bookkeeping: far below 200k events.
        assert peak < 5_000_000

    async def test_raising_mailbox_subscriber_keeps_consuming(self) -> None:
        """A writer that raises on one batch still receives the next events."""
        got: list[int] = []

        async def flaky(event: EpochEnd) -> None:
            if event.epoch == 1:
                raise OSError("disk hiccup")
            got.append(event.epoch)

        async with EventBus(on_error=lambda *a: None) as bus:
            bus.subscribe(EpochEnd, flaky, mailbox=10)
            for n in range(4):
                await bus.publish(epoch(n))
        assert got == [0, 2, 3]

    async def test_unsubscribed_mailbox_drains_then_stops(self) -> None:
        """Unsubscribing a mailbox delivers what it holds and nothing after."""
        got: list[int] = []

        async def handler(event: EpochEnd) -> None:
            got.append(event.epoch)

        async with EventBus() as bus:
            sub = bus.subscribe(EpochEnd, handler, mailbox=10)
            for n in range(3):
                await bus.publish(epoch(n))
            sub.unsubscribe()
            await bus.publish(epoch(99))
        assert got == [0, 1, 2]


async def test_subscriber_can_publish_reentrantly() -> None:
    """A control subscriber may publish; nested events are delivered before publish returns."""
    order: list[str] = []

    async def on_epoch(event: EpochEnd) -> None:
        order.append(f"epoch {event.epoch}")
        await bus.publish(
            RunFinished(experiment="e", trial="a", repeat=0, status="stopped", duration=0.0)
        )

    async def on_finish(event: RunFinished) -> None:
        order.append("finished")

    bus = EventBus()
    bus.subscribe(EpochEnd, on_epoch)
    bus.subscribe(RunFinished, on_finish)
    await bus.publish(epoch(3))
    order.append("returned")
    assert order == ["epoch 3", "finished", "returned"]
