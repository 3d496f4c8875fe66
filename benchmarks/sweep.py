"""Workload 1, sweep: per-run overhead of a sweep of no-op runs, at 200 and 2,000 trials.

Each trial has one run of a no-op async pipeline that reports 10 epochs of ``loss``
and ``acc``; two control callbacks (a metrics tracker and an early stopper that
never triggers) see every epoch; the full workspace, every JSON log and the journal
are written.  The pipeline costs nothing, so wall time over runs is expman's
overhead per run (planning, folders, config snapshots, logs, journal fsyncs,
scheduling).  A two-run experiment runs first so that one-off imports are not
counted; each size runs three times (fresh experiments) and the best is reported.
"""

from __future__ import annotations

from pathlib import Path

import _measure
import anyio
from _floor import floor
from _folders import write_experiment

import expman

EPOCHS = 10
CONCURRENCY = 8


async def sweep(workdir: Path, trials: int, attempt: int = 0) -> float:
    root = write_experiment(
        workdir / f"configs-{trials}-{attempt}",
        name=f"sweep{trials}-{attempt}",
        trials=trials,
        pipeline={"type": "bench_pipes:NoOp", "epochs": EPOCHS},
        max_concurrency=CONCURRENCY,
    )
    with _measure.stopwatch() as t:
        result = await expman.run_experiment(root, workspace=workdir / "ws")
    if result.status != "completed" or len(result.runs) != trials:
        raise SystemExit(f"sweep of {trials} trials ended {result.status}: {result.counts}")
    return t.sample


async def floor_run(workdir: Path, trials: int, attempt: int, *, folders: bool) -> float:
    with _measure.stopwatch() as t:
        await floor(workdir / f"floor-{trials}-{folders}-{attempt}", trials, folders=folders)
    return t.sample


async def main() -> None:
    sizes = (_measure.size(200, 6), _measure.size(2000, 12))
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        await sweep(workdir, 2)  # warm-up: imports, thread pool, structlog
        first: float | None = None
        for trials in sizes:
            samples = [await sweep(workdir, trials, k) for k in range(_measure.REPEATS)]
            per_run_ms = min(samples) / trials * 1e3
            if first is None:
                first = per_run_ms
                target = ("<=", 1.0)
            else:
                # "No worse per run" than at the smaller size (10% allowed for noise).
                target = ("<=", round(first * 1.1, 3))
            _measure.emit(
                "sweep",
                f"{trials} trials",
                params={
                    "trials": trials,
                    "repeat": 1,
                    "epochs": EPOCHS,
                    "metrics": 2,
                    "max_concurrency": CONCURRENCY,
                    "callbacks": 2,
                },
                wall_s=samples,
                items=trials,
                item="run",
                result=("overhead per run", per_run_ms, "ms"),
                target=target,
            )
        # The floor: the same file work (with and without the per-run folder tree)
        # done by a plain asyncio loop, for comparison (see _floor.py).
        trials = sizes[0]
        for folders in (False, True):
            samples = [
                await floor_run(workdir, trials, k, folders=folders)
                for k in range(_measure.REPEATS)
            ]
            what = "JSON lines + journal fsyncs" + (" + folders and snapshots" if folders else "")
            _measure.emit(
                "sweep",
                f"floor: {what}, {trials} runs",
                params={
                    "runs": trials,
                    "epochs": EPOCHS,
                    "concurrency": CONCURRENCY,
                    "folders": folders,
                    "expman": False,
                },
                wall_s=samples,
                items=trials,
                item="run",
                result=("cost per run", min(samples) / trials * 1e3, "ms"),
            )


if __name__ == "__main__":
    anyio.run(main)
