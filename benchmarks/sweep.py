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
    small, large = _measure.size(200, 6), _measure.size(2000, 12)
    params = {
        "repeat": 1,
        "epochs": EPOCHS,
        "metrics": 2,
        "max_concurrency": CONCURRENCY,
        "callbacks": 2,
    }
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        await sweep(workdir, 2)  # warm-up: imports, thread pool, structlog
        # The small sweep and the floor's two variants take turns, so that they see
        # the disk in the same state (its speed drifts several-fold within minutes).
        expman_samples, floors = [], {False: [], True: []}
        for k in range(_measure.REPEATS):
            expman_samples.append(await sweep(workdir, small, k))
            for folders in (False, True):
                floors[folders].append(await floor_run(workdir, small, k, folders=folders))
        large_samples = [await sweep(workdir, large, k) for k in range(_measure.REPEATS)]
    first = min(expman_samples) / small * 1e3
    floor_ms = min(floors[True]) / small * 1e3
    _measure.emit(
        "sweep",
        f"{small} trials",
        params={"trials": small, **params},
        wall_s=expman_samples,
        items=small,
        item="run",
        result=("overhead per run", first, "ms"),
        target=("<=", 1.0),
        floor_ratio=round(first / floor_ms, 2),
    )
    per_run_ms = min(large_samples) / large * 1e3
    _measure.emit(
        "sweep",
        f"{large} trials",
        params={"trials": large, **params},
        wall_s=large_samples,
        items=large,
        item="run",
        result=("overhead per run", per_run_ms, "ms"),
        # "No worse per run" than at the smaller size (10% allowed for noise).
        target=("<=", round(first * 1.1, 3)),
    )
    # The floor: the same file work (with and without the per-run folder tree) done
    # by a plain asyncio loop, for comparison (see _floor.py).
    for folders in (False, True):
        what = "JSON lines + journal fsyncs" + (" + folders and snapshots" if folders else "")
        _measure.emit(
            "sweep",
            f"floor: {what}, {small} runs",
            params={
                "runs": small,
                "epochs": EPOCHS,
                "concurrency": CONCURRENCY,
                "folders": folders,
                "expman": False,
            },
            wall_s=floors[folders],
            items=small,
            item="run",
            result=("cost per run", min(floors[folders]) / small * 1e3, "ms"),
        )


if __name__ == "__main__":
    anyio.run(main)
