"""Workload 3, bus: EpochEnd events per second through ``expman.EventBus``.

The publisher builds each event (as ``ctx.epoch_end`` does) and awaits ``publish``.
Cases: no subscriber, 1 and 3 control subscribers (``expman.Callback`` objects with an
``on_epoch_end`` that tracks the best loss, awaited before ``publish`` returns), and
the JSON log writer (a batched mailbox subscriber writing run.log and both
metrics.log files), timed until its last line is written.
"""

from __future__ import annotations

from pathlib import Path

import _measure
import anyio

import expman
from expman.subscribers.writers.eventlog import EventLogWriter
from expman.workspace.layout import ExperimentLayout
from expman.workspace.logsink import LogFiles


class Control(expman.Callback):
    """A control callback that never asks to stop (the early-stopping shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.best = float("inf")
        self.seen = 0

    async def on_epoch_end(self, event: expman.EpochEnd) -> None:
        self.seen += 1
        loss = event.metrics["loss"]
        if loss < self.best:
            self.best = loss


async def publish_many(bus: expman.EventBus, events: int) -> None:
    publish = bus.publish
    epoch_end = expman.EpochEnd
    for epoch in range(events):
        await publish(
            epoch_end(
                experiment="bench",
                trial="t0",
                repeat=0,
                epoch=epoch,
                metrics={"loss": 1.0 / (epoch + 1), "acc": 0.5},
            )
        )


async def controls(count: int, events: int) -> float:
    callbacks = [Control() for _ in range(count)]
    async with expman.EventBus() as bus:
        for cb in callbacks:
            cb.bind(bus, "bench", "t0", 0)
            bus.subscribe(expman.EpochEnd, cb)
        with _measure.stopwatch() as t:
            await publish_many(bus, events)
    if any(cb.seen != events for cb in callbacks):
        raise SystemExit("a control subscriber missed events")
    return t.sample


async def json_writer(workdir: Path, events: int) -> float:
    layout = ExperimentLayout(workdir / "bench")
    files = LogFiles()
    with _measure.stopwatch() as t:
        async with anyio.create_task_group() as tg:
            await tg.start(files.run)
            async with expman.EventBus() as bus:
                bus.subscribe(
                    expman.Event,
                    EventLogWriter(layout, files),
                    mailbox=1024,
                    batch=True,
                    name="writer.logs",
                )
                await publish_many(bus, events)
            await files.aclose()
    lines = sum(1 for _ in open(layout.metrics_file, "rb"))
    if lines != events:
        raise SystemExit(f"metrics.log holds {lines} lines, expected {events}")
    return t.sample


def report(
    case: str, subscribers: dict[str, int], events: int, wall: float, **target: float
) -> None:
    _measure.emit(
        "bus",
        case,
        params={"events": events, **subscribers},
        wall_s=wall,
        items=events,
        item="event",
        result=("events per second", events / min(wall), "/s"),
        target=(">=", target["at_least"]) if target else None,
    )


async def main() -> None:
    events = _measure.size(200_000, 2_000)
    await controls(1, 1000)  # warm-up
    for count in (0, 1, 3):
        wall = [await controls(count, events) for _ in range(_measure.REPEATS)]
        target = {"at_least": 300_000} if count == 1 else {}
        label = f"{count} control subscriber{'s' if count != 1 else ''}"
        report(label, {"control": count, "mailbox": 0}, events, wall, **target)
    with _measure.scratch() as tmp:
        wall = [await json_writer(Path(tmp) / str(k), events) for k in range(_measure.REPEATS)]
    report("JSON log writer", {"control": 0, "mailbox": 1}, events, wall)


if __name__ == "__main__":
    anyio.run(main)
