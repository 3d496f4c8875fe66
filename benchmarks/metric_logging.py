"""Workload 2, metric logging: metric values persisted per second by one busy run.

One run reports 50,000 epochs of two metrics through ``ctx.epoch_end`` with the
metrics tracker and the never-triggering early stopper attached; every epoch lands in
run.log, the run's metrics.log and the experiment's metrics.log.  The figure is
metric values (epochs x 2) over the wall time of the whole experiment (best of 3).
"""

from __future__ import annotations

from pathlib import Path

import _measure
import anyio
from _folders import write_experiment

import expman

METRICS = 2


async def one_run(workdir: Path, epochs: int, attempt: int) -> float:
    root = write_experiment(
        workdir / f"configs-{attempt}",
        name=f"metrics-{attempt}",
        trials=1,
        pipeline={"type": "bench_pipes:NoOp", "epochs": epochs},
    )
    with _measure.stopwatch() as t:
        result = await expman.run_experiment(root, workspace=workdir / "ws")
    run = result.runs[0]
    if result.status != "completed" or run.epochs != epochs:
        raise SystemExit(f"metric logging ended {result.status} after {run.epochs} epochs")
    log = workdir / "ws" / f"metrics-{attempt}" / "logs" / "metrics.log"
    with open(log, "rb") as f:
        lines = sum(1 for _ in f)
    if lines != epochs:
        raise SystemExit(f"metrics.log holds {lines} lines, expected {epochs}")
    return t.sample


async def main() -> None:
    epochs = _measure.size(50_000, 500)
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        warm = write_experiment(
            workdir / "warm", name="warm", trials=1, pipeline={"type": "bench_pipes:NoOp"}
        )
        await expman.run_experiment(warm, workspace=workdir / "ws")
        samples = [await one_run(workdir, epochs, k) for k in range(_measure.REPEATS)]
    values = epochs * METRICS
    _measure.emit(
        "metric_logging",
        f"{epochs} epochs x {METRICS} metrics",
        params={"runs": 1, "epochs": epochs, "metrics": METRICS, "callbacks": 2},
        wall_s=samples,
        items=values,
        item="metric value",
        result=("metric values per second", values / min(samples), "/s"),
        target=(">=", 200_000),
    )


if __name__ == "__main__":
    anyio.run(main)
