"""Workload 2, metric logging: metric values persisted per second by one busy run.

One run reports 50,000 epochs of two metrics through ``ctx.epoch_end`` with the
metrics tracker and the never-triggering early stopper attached; every epoch lands in
run.log, the run's metrics.log and the experiment's metrics.log.  The figure is
metric values (epochs x 2) over the wall time of the whole experiment.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import _measure
import anyio
from _folders import write_experiment

import expman

METRICS = 2


async def main() -> None:
    epochs = _measure.size(50_000, 500)
    with tempfile.TemporaryDirectory(prefix="expman-bench-") as tmp:
        workdir = Path(tmp)
        warm = write_experiment(
            workdir / "warm", name="warm", trials=1, pipeline={"type": "bench_pipes:NoOp"}
        )
        await expman.run_experiment(warm, workspace=workdir / "ws")
        root = write_experiment(
            workdir / "configs",
            name="metrics",
            trials=1,
            pipeline={"type": "bench_pipes:NoOp", "epochs": epochs},
        )
        with _measure.stopwatch() as t:
            result = await expman.run_experiment(root, workspace=workdir / "ws")
        run = result.runs[0]
        if result.status != "completed" or run.epochs != epochs:
            raise SystemExit(f"metric logging ended {result.status} after {run.epochs} epochs")
        lines = sum(1 for _ in open(workdir / "ws" / "metrics" / "logs" / "metrics.log", "rb"))
        if lines != epochs:
            raise SystemExit(f"metrics.log holds {lines} lines, expected {epochs}")
    values = epochs * METRICS
    _measure.emit(
        "metric_logging",
        f"{epochs} epochs x {METRICS} metrics",
        params={"runs": 1, "epochs": epochs, "metrics": METRICS, "callbacks": 2},
        wall_s=t[0],
        items=values,
        item="metric value",
        result=("metric values per second", values / t[0], "/s"),
        target=(">=", 200_000),
    )


if __name__ == "__main__":
    anyio.run(main)
