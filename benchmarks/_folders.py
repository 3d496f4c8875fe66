"""Experiment folders for the workloads: real YAML files and a module of pipelines.

Every workload that runs experiments writes its folder with :func:`write_experiment`
into a temporary directory and runs it through ``expman.run_experiment``, exactly
as a user would.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

#: Pipelines and callbacks that the benchmark experiments name as ``bench_pipes:...``.
MODULE = textwrap.dedent(
    '''
    import anyio

    import expman


    class NoOp(expman.Pipeline):
        """Reports ``epochs`` epochs of ``loss`` and ``acc`` and does nothing else."""

        def __init__(self, epochs=10, **params):
            super().__init__(**params)
            self.epochs = epochs

        async def run(self, ctx):
            loss = 1.0
            for epoch in range(self.epochs):
                loss *= 0.99
                if await ctx.epoch_end(epoch, {"loss": loss, "acc": 1.0 - loss}):
                    break
            return {"loss": loss}


    class Sleeper(expman.Pipeline):
        """Sleeps ``seconds`` (the user's training), then reports one epoch."""

        def __init__(self, seconds=0.2, **params):
            super().__init__(**params)
            self.seconds = seconds

        async def run(self, ctx):
            await anyio.sleep(self.seconds)
            await ctx.epoch_end(0, {"loss": 0.5, "acc": 0.5})
            return {"loss": 0.5}


    class Trainer(expman.Pipeline):
        """Sleeps ``seconds`` per epoch (the user's training) for ``epochs`` epochs."""

        def __init__(self, seconds=0.02, epochs=10, **params):
            super().__init__(**params)
            self.seconds, self.epochs = seconds, epochs

        async def run(self, ctx):
            for epoch in range(self.epochs):
                await anyio.sleep(self.seconds)
                await ctx.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
            return {}


    class BestTracker(expman.Callback):
        """Stand-in for MetricsTracker: keeps the latest and best value of every metric."""

        def __init__(self, monitor="loss", mode="min"):
            super().__init__()
            self.monitor, self.mode = monitor, mode
            self.latest = {}
            self.best = {}

        async def on_epoch_end(self, event):
            best = self.best
            for name, value in event.metrics.items():
                self.latest[name] = value
                old = best.get(name)
                if old is None or value < old:
                    best[name] = value

        def state_dict(self):
            return {"latest": dict(self.latest), "best": dict(self.best)}


    class NeverStop(expman.Callback):
        """Stand-in for EarlyStopping with a patience it never exhausts."""

        def __init__(self, monitor="loss", patience=1_000_000_000, min_delta=0.0):
            super().__init__()
            self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
            self.best = None
            self.wait = 0

        async def on_epoch_end(self, event):
            value = event.metrics.get(self.monitor)
            if value is None:
                return
            if self.best is None or value < self.best - self.min_delta:
                self.best, self.wait = value, 0
                return
            self.wait += 1
            if self.wait >= self.patience:
                await self.request_stop(f"{self.monitor} did not improve")

        def state_dict(self):
            return {"best": self.best, "wait": self.wait}
    '''
)

#: The control callbacks every benchmark run carries (see benchmarks/README.md).
CALLBACKS: list[dict[str, Any]] = [
    {"type": "MetricsTracker"},
    # Patience far beyond the run's length: it tracks every epoch and never stops one.
    {"type": "EarlyStopping", "metric": "loss", "mode": "min", "patience": 10**9},
]


def write_experiment(
    root: Path,
    *,
    name: str,
    trials: int,
    repeat: int = 1,
    pipeline: Mapping[str, Any],
    max_concurrency: int = 8,
    callbacks: Sequence[Mapping[str, Any]] = CALLBACKS,
) -> Path:
    """Write ``root/{experiment,base,trials}.yaml`` and the pipelines module; returns root."""
    root.mkdir(parents=True, exist_ok=True)
    dump = _dump
    dump(
        root / "experiment.yaml",
        {
            "name": name,
            "id": 1,
            "desc": f"benchmark: {trials} trials x {repeat}",
            "settings": {"seed": 0},
            "execution": {"max_concurrency": max_concurrency},
        },
    )
    dump(
        root / "base.yaml",
        {"settings": {"pipeline": dict(pipeline), "callbacks": [dict(c) for c in callbacks]}},
    )
    dump(
        root / "trials.yaml",
        [
            {
                "name": f"t{i:05d}",
                "id": i + 1,
                "repeat": repeat,
                "settings": {"lr": 0.001 * (i + 1)},
            }
            for i in range(trials)
        ],
    )
    (root / "bench_pipes.py").write_text(MODULE)
    return root


def _dump(path: Path, data: Any) -> None:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    path.write_text(yaml.dump(data, Dumper=dumper, sort_keys=False))
