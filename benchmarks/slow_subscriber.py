"""A user subscriber that sleeps 50 ms per event must not slow the runs.

2 runs x 10 epochs of 20 ms each, at max_concurrency 2: the runs' wall time (first
RunStarted to last RunFinished, taken by a control subscriber) with a plain
``async def`` subscriber that sleeps 50 ms on every event, against the same
experiment without it.  The subscriber gets its own mailbox, so the ratio should be
within the noise of 1.0 (target <= 1.10); it still receives every event, which the
experiment waits for at its end (``drain_s``: the rest of the whole call's time).
Best of 3 for each case, the two cases interleaved; ``as_control_s`` is the runs'
wall time with the same subscriber declared control, once, for comparison.
"""

from __future__ import annotations

import time
from pathlib import Path

import _measure
import anyio
from _folders import write_experiment

import expman
from expman.events import Event, RunFinished, RunStarted

RUNS, EPOCHS = 2, 10
EPOCH_S = _measure.size(20, 5) / 1000
SLEEP_S = 0.05


async def one(
    workdir: Path, k: int, slow: bool, delivery: expman.Delivery | None = None
) -> tuple[float, float, int]:
    root = write_experiment(
        workdir / f"configs-{k}-{slow}",
        name=f"slow-{k}-{int(slow)}-{int(delivery is not None)}",
        trials=RUNS,
        pipeline={"type": "bench_pipes:Trainer", "seconds": EPOCH_S, "epochs": EPOCHS},
        max_concurrency=RUNS,
        callbacks=(),
    )
    marks: list[float] = []
    received: list[Event] = []

    @expman.subscriber(RunStarted, RunFinished, delivery=expman.CONTROL)
    async def clock(event: Event) -> None:
        marks.append(time.perf_counter())

    async def sleeper(event: Event) -> None:
        await anyio.sleep(SLEEP_S)
        received.append(event)

    if delivery is not None:
        sleeper = expman.subscriber(delivery=delivery)(sleeper)

    subscribers = [clock, sleeper] if slow else [clock]
    start = time.perf_counter()
    result = await expman.run_experiment(root, workspace=workdir / "ws", subscribers=subscribers)
    whole = time.perf_counter() - start
    if result.status != "completed":
        raise SystemExit(f"slow_subscriber run ended {result.status}")
    return marks[-1] - marks[0], whole, len(received)


async def main() -> None:
    plain: list[float] = []
    slowed: list[float] = []
    whole_slow: list[float] = []
    received = 0
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        await one(workdir, -1, False)  # warm-up: imports, first folders
        for k in range(_measure.REPEATS):
            plain.append((await one(workdir, k, False))[0])
            runs_s, whole, received = await one(workdir, k, True)
            slowed.append(runs_s)
            whole_slow.append(whole)
        # For comparison, once: the same subscriber declared control (what every user
        # subscriber was before it had a mailbox): the runs wait for it on every event.
        as_control = (await one(workdir, 99, True, expman.CONTROL))[0]
    ratio = min(slowed) / min(plain)
    _measure.emit(
        "slow_subscriber",
        f"{RUNS} runs x {EPOCHS} epochs, subscriber sleeping {SLEEP_S * 1000:g} ms/event",
        params={"runs": RUNS, "epochs": EPOCHS, "epoch_s": EPOCH_S, "sleep_s": SLEEP_S},
        wall_s=slowed,
        items=RUNS,
        item="run",
        result=("runs' wall time, slow subscriber / none", ratio, "x"),
        target=("<=", 1.10),
        without_s=min(plain),
        drain_s=round(min(whole_slow) - min(slowed), 3),
        as_control_s=round(as_control, 3),
        events_received=received,
    )


if __name__ == "__main__":
    anyio.run(main)
