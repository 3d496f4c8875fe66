"""Workload: the TensorBoard integration: its encoder, and what it costs a sweep.

Three measurements (JSON lines):

``encoder``
    The event-file encoder alone (:mod:`expman.integrations.tfevents`): 1,000 runs
    x 100 epochs x 4 metrics encoded in batches of 10 epochs, in memory; values/s.
``exporter``
    The backend as the driver calls it, on disk: per run ``open`` (folder, file,
    hparams), ``write`` in batches of 10 epochs, ``finish`` and ``flush`` (fsync);
    values/s; and the same without the flush (its fsyncs set the pace on a busy disk).
``sweep``
    1,000 trials x 100 epochs x 4 metrics (``Four``: a pipeline that reports and
    does nothing else, or ``--seconds S`` of sleep per epoch), run with and without
    ``integrations: [{type: tensorboard}]``, alternately, 5 of each; the ratio of
    the best wall times (and of the medians), the CPU time the integration adds
    per value, the peak thread count of each, and the readback check:
    TensorBoard's ``EventAccumulator`` reads every run's folder of the last sweep
    with the integration and must show each run's metrics.log history, float32-exact,
    at its step and wall time, each step once.

    python benchmarks/integrations.py                # full sizes (about 3 minutes)
    python benchmarks/integrations.py --seconds 0.002   # epochs that take 2 ms
"""

from __future__ import annotations

import math
import statistics
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import _measure
import anyio
import yaml
from _folders import write_experiment

import expman
from expman.config import IntegrationSpec
from expman.integrations import tfevents
from expman.integrations.base import ExportContext, ExportRun, Point
from expman.integrations.tensorboard import TensorBoardExporter
from expman.jsonlines import read_lines
from expman.status import RunStatus

METRICS = ("loss", "acc", "val/loss", "val/acc")
BATCH = 10
CONCURRENCY = 8
#: Sweeps of each kind, alternating: the disk's speed wanders (see benchmarks/README.md).
SWEEPS = _measure.size(5, 1)

FOUR = '''
import anyio

import expman


class Four(expman.Pipeline):
    """Reports four metrics per epoch; sleeps ``seconds`` per epoch (0: none)."""

    def __init__(self, epochs=100, seconds=0.0, **params):
        super().__init__(**params)
        self.epochs, self.seconds = epochs, seconds

    async def run(self, ctx):
        loss = 1.0 + ctx.seed % 7
        for epoch in range(ctx.start_epoch, self.epochs):
            if self.seconds:
                await anyio.sleep(self.seconds)
            loss *= 0.97
            metrics = {"loss": loss, "acc": 1 / (1 + loss), "val/loss": loss * 1.1,
                       "val/acc": 1 / (2 + loss)}
            if await ctx.epoch_end(epoch, metrics):
                break
        return {"loss": loss}
'''


def seconds_arg() -> float:
    if "--seconds" in sys.argv:
        return float(sys.argv[sys.argv.index("--seconds") + 1])
    return 0.0


def points_of(run: int, epochs: int) -> list[Point]:
    loss = 1.0 + run % 7
    out = []
    for epoch in range(epochs):
        loss *= 0.97
        values = (loss, 1 / (1 + loss), loss * 1.1, 1 / (2 + loss))
        out.append(Point(epoch, 1.7e9 + epoch, dict(zip(METRICS, values, strict=True))))
    return out


def encoder(runs: int, epochs: int) -> None:
    series = [points_of(r, epochs) for r in range(min(runs, 50))]
    samples = []
    for _ in range(_measure.REPEATS):
        with _measure.stopwatch() as t:
            size = 0
            for r in range(runs):
                run = series[r % len(series)]
                for i in range(0, epochs, BATCH):
                    size += len(
                        tfevents.records(
                            [
                                tfevents.scalars_event(p.epoch, p.time, p.metrics)
                                for p in run[i : i + BATCH]
                            ]
                        )
                    )
        samples.append(t.sample)
    values = runs * epochs * len(METRICS)
    _measure.emit(
        "integrations",
        "tensorboard encoder",
        params={"runs": runs, "epochs": epochs, "metrics": len(METRICS), "batch": BATCH},
        wall_s=samples,
        items=values,
        item="value",
        result=("values per second", values / min(samples), "/s"),
        target=(">=", 100_000),
        bytes_per_value=round(size / values, 2),
    )


def exporter(workdir: Path, runs: int, epochs: int, *, sync: bool = True) -> None:
    samples = []
    for attempt in range(_measure.REPEATS):
        root = workdir / f"exporter-{attempt}-{sync}"
        spec = IntegrationSpec(type="tensorboard", name="tensorboard", options={"dir": "tb"})
        tb = TensorBoardExporter(spec, ExportContext("e", "1", "", workdir, root))
        with _measure.stopwatch() as t:
            for r in range(runs):
                run = ExportRun("t", r, "1", r, "h", {"lr": 0.1, "r": r}, {}, 1, root / str(r))
                points = points_of(r, epochs)
                tb.open(run, external=None, rewind=0)
                for i in range(0, epochs, BATCH):
                    tb.write(run, points[i : i + BATCH])
                tb.finish(run, RunStatus.COMPLETED, None)
                if sync:
                    tb.flush(run)
            tb.close()
        samples.append(t.sample)
    values = runs * epochs * len(METRICS)
    _measure.emit(
        "integrations",
        f"tensorboard exporter, on disk ({'fsync per run' if sync else 'no fsync'})",
        params={"runs": runs, "epochs": epochs, "metrics": len(METRICS), "batch": BATCH},
        wall_s=samples,
        items=values,
        item="value",
        result=("values per second", values / min(samples), "/s"),
        target=(">=", 100_000),
    )


async def sweep(
    workdir: Path, runs: int, epochs: int, seconds: float, *, tensorboard: bool, attempt: int
) -> tuple[_measure.Timing, int, Path]:
    name = f"{'tb' if tensorboard else 'off'}-{attempt}"
    root = write_experiment(
        workdir / f"configs-{name}",
        name=name,
        trials=runs,
        pipeline={"type": "tb_pipes:Four", "epochs": epochs, "seconds": seconds},
        max_concurrency=CONCURRENCY,
    )
    (root / "tb_pipes.py").write_text(FOUR)
    doc = yaml.safe_load((root / "experiment.yaml").read_text())
    doc["integrations"] = [{"type": "tensorboard"}] if tensorboard else []
    (root / "experiment.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    peak = threading.active_count()

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, threading.active_count())
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        with _measure.stopwatch() as t:
            result = await expman.run_experiment(root, workspace=workdir / "ws")
        tg.cancel_scope.cancel()
    if result.status != "completed" or len(result.runs) != runs:
        raise SystemExit(f"sweep ended {result.status}: {result.counts}")
    if tensorboard and result.integrations["tensorboard"]["lost"]:
        raise SystemExit(f"tensorboard lost values: {result.integrations['tensorboard']}")
    return t.sample, peak, workdir / "ws" / name


def f32(value: float) -> float:
    try:
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def readback(experiment: Path) -> dict[str, Any]:
    """Every run's TensorBoard folder against its metrics.log (EventAccumulator)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    checked = missing = wrong = duplicated = runs = 0
    for run in sorted((experiment / "trials").glob("*/run_*")):
        runs += 1
        want: dict[tuple[str, int], tuple[float, float]] = {}
        for entry in read_lines(run / "logs" / "metrics.log"):
            for tag, value in entry["metrics"].items():
                want[(tag, entry["epoch"])] = (entry["time"], f32(value))
        acc = EventAccumulator(
            str(experiment / "tensorboard" / run.parent.name / run.name),
            size_guidance={"scalars": 0},
        )
        acc.Reload()
        seen: set[tuple[str, int]] = set()
        for tag in acc.Tags()["scalars"]:
            for s in acc.Scalars(tag):
                key = (tag, s.step)
                duplicated += key in seen
                seen.add(key)
                wrong += want.get(key) != (s.wall_time, s.value)
        missing += len(set(want) - seen)
        checked += len(want)
    return {
        "runs": runs,
        "values": checked,
        "missing": missing,
        "wrong": wrong,
        "duplicated": duplicated,
        "ok": runs > 0 and missing == wrong == duplicated == 0,
    }


async def main() -> None:
    runs, epochs = _measure.size(1000, 8), _measure.size(100, 5)
    seconds = seconds_arg()
    encoder(runs, epochs)
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        exporter(workdir, runs, epochs, sync=False)  # the CPU's share
        exporter(workdir, runs, epochs)  # and the disk's: an fsync per run is its pace
        await sweep(workdir, 2, 2, 0.0, tensorboard=True, attempt=-1)  # warm-up: imports
        off: list[_measure.Timing] = []
        on: list[_measure.Timing] = []
        peaks = {"off": 0, "on": 0}
        last = workdir
        for attempt in range(SWEEPS):
            wall, peak, _ = await sweep(
                workdir, runs, epochs, seconds, tensorboard=False, attempt=attempt
            )
            off.append(wall)
            peaks["off"] = max(peaks["off"], peak)
            wall, peak, last = await sweep(
                workdir, runs, epochs, seconds, tensorboard=True, attempt=attempt
            )
            on.append(wall)
            peaks["on"] = max(peaks["on"], peak)
        started = time.perf_counter()
        check = readback(last)
        check["seconds"] = round(time.perf_counter() - started, 2)
    values = runs * epochs * len(METRICS)
    ratio = min(on) / min(off)
    median_ratio = statistics.median(on) / statistics.median(off)
    _measure.emit(
        "integrations",
        f"sweep {runs} runs x {epochs} epochs x {len(METRICS)} metrics, tensorboard vs none",
        params={
            "runs": runs,
            "epochs": epochs,
            "metrics": len(METRICS),
            "seconds_per_epoch": seconds,
            "max_concurrency": CONCURRENCY,
        },
        wall_s=on,
        items=values,
        item="value",
        result=("wall with / without", ratio, "x"),
        target=("<=", 1.1),
        median_ratio=round(median_ratio, 4),
        without_s=round(float(min(off)), 4),
        without_samples_s=[round(float(x), 4) for x in off],
        without_cpu_s=round(min(off, key=float).cpu, 4),
        added_cpu_us_per_value=round(
            (min(on, key=float).cpu - min(off, key=float).cpu) / values * 1e6, 3
        ),
        threads_peak={"without": peaks["off"], "with": peaks["on"]},
        readback=check,
    )
    if not check["ok"]:
        raise SystemExit(f"readback failed: {check}")


if __name__ == "__main__":
    anyio.run(main)
