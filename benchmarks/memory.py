"""Workload 6, memory: a 10,000-run plan, and 1,000,000 events into a slow writer.

Each case runs in a fresh child process so that its peak RSS is its own:

* ``plan``: load and validate a 10,000-trial experiment (one run each) and plan it
  against its (empty) journal, as ``run_experiment`` does before the first run.
  The figure is the process's peak RSS (Python and expman's imports included).
* ``slow-writer``: publish 1,000,000 EpochEnd events on an ``expman.EventBus`` whose
  only subscriber is a batched mailbox writer that sleeps 5 ms per batch (several
  times slower than the publisher).  The bounded mailbox must push back on the
  publisher; the figure is the RSS growth between the first 100,000 events and the
  end (flat means the queue never grows past its bound).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import _measure
import anyio
from _folders import write_experiment

import expman
from expman.runtime.resume import plan_resume
from expman.workspace.journal import read_journal

MAILBOX = 1024
WRITER_SLEEP = 0.005


def plan_case() -> None:
    runs = _measure.size(10_000, 200)
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        root = write_experiment(
            workdir / "configs", name="memory", trials=runs, pipeline={"type": "bench_pipes:NoOp"}
        )
        before = _measure.current_rss_mb()
        with _measure.stopwatch() as t:
            plan = expman.load_plan(root, workspace=workdir / "ws")
            resume = plan_resume(plan, read_journal(plan.path / "logs" / "events.jsonl"))
        assert len(resume.todo) == runs
        peak = _measure.peak_rss_mb()
        _measure.emit(
            "memory",
            f"plan of {runs} runs",
            params={"runs": runs, "trials": runs, "repeat": 1},
            wall_s=t.sample,
            items=runs,
            item="run",
            result=("peak RSS", peak, "MB"),
            target=("<=", 150),
            rss_before_mb=before,
            rss_after_mb=_measure.current_rss_mb(),
        )


async def slow_writer_case() -> None:
    events = _measure.size(1_000_000, 20_000)
    warm = events // 10
    written = 0

    async def slow_writer(batch: Sequence[expman.Event]) -> None:
        nonlocal written
        written += len(batch)
        await anyio.sleep(WRITER_SLEEP)

    samples: list[tuple[int, float]] = []
    async with expman.EventBus() as bus:
        bus.subscribe(expman.Event, slow_writer, mailbox=MAILBOX, batch=True, name="slow")
        publish = bus.publish
        with _measure.stopwatch() as t:
            for epoch in range(events):
                await publish(
                    expman.EpochEnd(
                        experiment="bench",
                        trial="t0",
                        repeat=0,
                        epoch=epoch,
                        metrics={"loss": 1.0 / (epoch + 1), "acc": 0.5, "note": f"epoch {epoch}"},
                    )
                )
                if epoch % (events // 20) == 0 or epoch == warm:
                    samples.append((epoch, _measure.current_rss_mb()))
            stats = bus.statistics()
    samples.append((events, _measure.current_rss_mb()))
    if written != events:
        raise SystemExit(f"the slow writer got {written} of {events} events")
    at_warm = next(rss for n, rss in samples if n >= warm)
    growth = max(rss for n, rss in samples if n >= warm) - at_warm
    sub = stats.subscribers[0]
    _measure.emit(
        "memory",
        f"{events} events, slow writer",
        params={"events": events, "mailbox": MAILBOX, "writer_sleep_s_per_batch": WRITER_SLEEP},
        wall_s=t.sample,
        items=events,
        item="event",
        result=("RSS growth after warm-up", growth, "MB"),
        target=("<=", 5),
        rss_samples_mb=[rss for _, rss in samples],
        max_waiting=sub.max_waiting,
        publisher_waits=sub.publisher_waits,
    )


CASES = {"plan": plan_case, "slow-writer": lambda: anyio.run(slow_writer_case)}


def main() -> None:
    if "--case" in sys.argv:
        CASES[sys.argv[sys.argv.index("--case") + 1]]()
        return
    flags = ["--smoke"] if _measure.SMOKE else []
    for case in CASES:
        done = subprocess.run(
            [sys.executable, __file__, "--case", case, *flags], env=os.environ, check=False
        )
        if done.returncode:
            raise SystemExit(done.returncode)


if __name__ == "__main__":
    main()
