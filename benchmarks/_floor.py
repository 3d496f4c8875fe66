"""The machine's floor for the sweep: the same file work without expman.

A plain asyncio loop with a semaphore runs N "runs"; each appends its JSON lines
(10 epochs of two metrics to run.log, the run's metrics.log and the experiment's
metrics.log; its lifecycle lines to trial.log) in one write per file, and appends a
journal line with an fsync when it starts and when it ends.  With ``folders=True``
each run also creates the workspace's trial and run folders (configs, logs,
artifacts) and writes trial.yaml and run.yaml atomically (temporary file, rename),
as the workspace layout requires.  Nothing else: no events, no callbacks, no
planning.  It is what any runner keeping these guarantees must at least pay here.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import orjson

EPOCHS = 10


def _atomic(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
    os.write(fd, data)
    os.close(fd)
    os.replace(tmp, path)


def _append(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


async def floor(root: Path, runs: int, *, folders: bool, concurrency: int = 8) -> None:
    """Do the file work of ``runs`` one-run trials; see the module docstring."""
    base = str(root)
    for sub in ("logs", "trials/logs"):
        os.makedirs(f"{base}/{sub}", exist_ok=True)
    journal = os.open(f"{base}/logs/events.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    gate = asyncio.Semaphore(concurrency)
    snapshot = orjson.dumps({"settings": {"lr": 0.1, "pipeline": {"type": "x"}}})

    def durable(line: bytes) -> None:
        os.write(journal, line)
        os.fsync(journal)

    def prepare(trial: str) -> None:
        for folder in (trial, f"{trial}/run_0"):
            os.mkdir(folder)
            for sub in ("configs", "logs", "artifacts"):
                os.mkdir(f"{folder}/{sub}")
        _atomic(f"{trial}/configs/trial.yaml", snapshot)
        _atomic(f"{trial}/run_0/configs/run.yaml", snapshot)

    async def run(i: int) -> None:
        trial = f"{base}/trials/t{i:05d}"
        if folders:
            run_log, run_metrics = f"{trial}/run_0/logs/run.log", f"{trial}/run_0/logs/metrics.log"
            trial_log = f"{trial}/logs/trial.log"
        else:  # the same files, side by side in one folder
            run_log, run_metrics, trial_log = (
                f"{trial}.{n}.log" for n in ("run", "metrics", "trial")
            )
        async with gate:
            if folders:
                await asyncio.to_thread(prepare, trial)
            await asyncio.to_thread(durable, orjson.dumps({"type": "RunStarted", "i": i}) + b"\n")
            lines = b"".join(
                orjson.dumps({"epoch": e, "metrics": {"loss": 1 / (e + 1), "acc": 0.5}}) + b"\n"
                for e in range(EPOCHS)
            )

            def logs() -> None:
                _append(run_log, lines)
                _append(run_metrics, lines)
                _append(f"{base}/logs/metrics.log", lines)
                _append(trial_log, b'{"event": "RunFinished"}\n')

            await asyncio.to_thread(logs)
            await asyncio.to_thread(durable, orjson.dumps({"type": "RunFinished", "i": i}) + b"\n")

    try:
        await asyncio.gather(*(run(i) for i in range(runs)))
    finally:
        os.close(journal)
