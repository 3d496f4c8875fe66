"""Workload 4, concurrency efficiency: 64 runs sleeping 0.2 s at max_concurrency 16.

The ideal wall time is 64 / 16 x 0.2 s = 0.8 s; efficiency is ideal over measured
wall time of the whole ``run_experiment`` call (planning, workspace, logs, journal
and the callbacks included); best of 3.
"""

from __future__ import annotations

from pathlib import Path

import _measure
import anyio
from _folders import write_experiment

import expman

SECONDS = _measure.size(200, 50) / 1000
CONCURRENCY = 16


async def one_experiment(workdir: Path, runs: int, attempt: int) -> float:
    root = write_experiment(
        workdir / f"configs-{attempt}",
        name=f"concurrency-{attempt}",
        trials=runs,
        pipeline={"type": "bench_pipes:Sleeper", "seconds": SECONDS},
        max_concurrency=CONCURRENCY,
    )
    with _measure.stopwatch() as t:
        result = await expman.run_experiment(root, workspace=workdir / "ws")
    if result.status != "completed":
        raise SystemExit(f"concurrency run ended {result.status}: {result.counts}")
    return t.sample


async def main() -> None:
    runs = _measure.size(64, 32)
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        warm = write_experiment(
            workdir / "warm", name="warm", trials=2, pipeline={"type": "bench_pipes:NoOp"}
        )
        await expman.run_experiment(warm, workspace=workdir / "ws")
        samples = [await one_experiment(workdir, runs, k) for k in range(_measure.REPEATS)]
    ideal = runs / CONCURRENCY * SECONDS
    _measure.emit(
        "concurrency",
        f"{runs} runs x {SECONDS:g} s at {CONCURRENCY}",
        params={"runs": runs, "seconds": SECONDS, "max_concurrency": CONCURRENCY},
        wall_s=samples,
        items=runs,
        item="run",
        result=("efficiency (ideal / wall)", ideal / min(samples), ""),
        target=(">=", 0.95),
        ideal_s=ideal,
    )


if __name__ == "__main__":
    anyio.run(main)
