"""The W&B integration (offline) must not slow the runs; what W&B itself costs.

8 runs x 20 epochs of 20 ms at max_concurrency 8, a checkpoint every 5 epochs: the
runs' wall time (first RunStarted to last RunFinished, from a control subscriber)
with ``integrations: [{type: wandb, mode: offline}]`` against the same experiment
without it (target: ratio <= 1.10, the exports wait, the runs do not);
``drain_s`` is the rest of the call (the integration catching up, then closing).
Then W&B's own costs, measured on the backend directly: ``import wandb`` in a fresh
interpreter, the first ``wandb.init`` (it starts wandb-core), the next ones, a
``log`` of one epoch, a ``flush`` (until the run's .wandb file holds it) and
``finish``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import _measure
import anyio
import yaml
from _folders import write_experiment

import expman
from expman.config import IntegrationSpec
from expman.events import Event, RunFinished, RunStarted
from expman.integrations.base import ExportContext, ExportRun, Point
from expman.integrations.wandb import WandbExporter

RUNS, EPOCHS = _measure.size(8, 2), _measure.size(20, 4)
EPOCH_S = 0.02
CALLBACKS = [{"type": "CheckpointCallback", "interval": 5, "save_top_k": 1, "save_last": True}]


async def one(workdir: Path, k: int, wandb: bool) -> tuple[float, float]:
    root = write_experiment(
        workdir / f"configs-{k}-{wandb}",
        name=f"wandb-{k}-{int(wandb)}",
        trials=RUNS,
        pipeline={"type": "bench_pipes:Trainer", "seconds": EPOCH_S, "epochs": EPOCHS},
        max_concurrency=RUNS,
        callbacks=CALLBACKS,
    )
    if wandb:
        experiment = yaml.safe_load((root / "experiment.yaml").read_text())
        experiment["integrations"] = [{"type": "wandb", "mode": "offline"}]
        (root / "experiment.yaml").write_text(yaml.safe_dump(experiment, sort_keys=False))
    marks: list[float] = []

    @expman.subscriber(RunStarted, RunFinished, delivery=expman.CONTROL)
    async def clock(event: Event) -> None:
        marks.append(time.perf_counter())

    start = time.perf_counter()
    result = await expman.run_experiment(root, workspace=workdir / "ws", subscribers=[clock])
    whole = time.perf_counter() - start
    if result.status != "completed" or (wandb and result.integrations["wandb"]["lost"]):
        raise SystemExit(f"integration_wandb run ended {result.status}: {result.integrations}")
    return marks[-1] - marks[0], whole


def import_s() -> float:
    code = "import time; t = time.perf_counter(); import wandb; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout)


def backend_costs(workdir: Path) -> dict[str, float]:
    """Seconds per call of the backend itself, in this process (wandb-core not yet up)."""
    spec = IntegrationSpec(
        type="wandb",
        name="wandb",
        options={"project": "bench", "entity": None, "mode": "offline", "dir": "wb", "tags": []},
    )
    context = ExportContext("bench", "1", "", workdir, workdir / "bench")
    exporter = WandbExporter(spec, context)
    inits: list[float] = []
    logs: list[float] = []
    flushes: list[float] = []
    finishes: list[float] = []
    try:
        for k in range(6):
            run = ExportRun("t", k, "1", k, "h", {"lr": 0.1}, {}, 6, workdir / f"run_{k}")
            t = time.perf_counter()
            exporter.open(run, external=None, rewind=0)
            inits.append(time.perf_counter() - t)
            for epoch in range(5):
                t = time.perf_counter()
                exporter.write(run, [Point(epoch, time.time(), {"loss": 1.0 / (epoch + 1)})])
                logs.append(time.perf_counter() - t)
                t = time.perf_counter()
                exporter.flush(run)
                flushes.append(time.perf_counter() - t)
            t = time.perf_counter()
            exporter.finish(run, expman.RunStatus.COMPLETED, None)
            finishes.append(time.perf_counter() - t)
    finally:
        t = time.perf_counter()
        exporter.close()
        close = time.perf_counter() - t
    return {
        "first_init_s": round(inits[0], 3),
        "next_init_s": round(statistics.median(inits[1:]), 3),
        "log_ms": round(statistics.median(logs) * 1000, 3),
        "flush_ms": round(statistics.median(flushes) * 1000, 2),
        "finish_ms": round(statistics.median(finishes) * 1000, 2),
        "close_s": round(close, 3),
    }


async def main() -> None:
    plain: list[float] = []
    exported: list[float] = []
    drains: list[float] = []
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        costs = backend_costs(workdir)
        await one(workdir, -1, False)  # warm-up: imports, first folders
        for k in range(_measure.REPEATS):
            plain.append((await one(workdir, k, False))[0])
            runs_s, whole = await one(workdir, k, True)
            exported.append(runs_s)
            drains.append(whole - runs_s)
    _measure.emit(
        "integration_wandb",
        f"{RUNS} runs x {EPOCHS} epochs, wandb offline",
        params={"runs": RUNS, "epochs": EPOCHS, "epoch_s": EPOCH_S, "checkpoint_every": 5},
        wall_s=exported,
        items=RUNS,
        item="run",
        result=("runs' wall time, wandb offline / none", min(exported) / min(plain), "x"),
        target=("<=", 1.10),
        without_s=round(min(plain), 3),
        drain_s=round(min(drains), 3),
        import_wandb_s=round(import_s(), 3),
        **costs,
    )


if __name__ == "__main__":
    anyio.run(main)
