"""The HTML report of a large experiment: time and size of ``expman report`` for 500 trials.

The experiment is real: 500 trials x 2 repeats of a pipeline that trains nothing and
reports 20 epochs of ``val_acc``, ``val_loss`` and ``train_loss`` (curves that depend
on the trial's ``lr`` and the run's seed), run through ``expman.run_experiment``, so
the journal, the metrics logs and the configs are what a session leaves.  Timed: the
command a user types, ``python -m expman report EXPERIMENT -o FILE`` in a fresh
process (imports of matplotlib included), best of three; reported beside it: the
file's size, its number of images, and ``expman results`` on the same experiment.
``python benchmarks/report.py`` (``--smoke`` for 12 trials).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import _measure
import anyio
import yaml

import expman

REPEAT = 2
EPOCHS = 20

PIPELINE = '''
import math

from expman import Pipeline


class Curves(Pipeline):
    """Reports falling losses and a rising accuracy; their pace depends on lr and the seed."""

    def __init__(self, epochs=20, **params):
        super().__init__(**params)
        self.epochs = epochs

    async def run(self, ctx):
        lr = ctx.config.lr
        noise = (ctx.seed % 1000) / 1000 - 0.5
        for epoch in range(self.epochs):
            pace = math.exp(-lr * (epoch + 1) * (1 + 0.3 * noise))
            metrics = {
                "val_acc": 1.0 - 0.9 * pace,
                "val_loss": 2.3 * pace + 0.05,
                "train_loss": 2.3 * pace,
            }
            await ctx.epoch_end(epoch, metrics)
        return {}
'''


def write_experiment(root: Path, trials: int) -> Path:
    root.mkdir(parents=True)
    dump = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    experiment = {"name": "report", "id": 1, "desc": "benchmark", "settings": {"seed": 0}}
    base = {"settings": {"pipeline": {"type": "bench_report:Curves", "epochs": EPOCHS}}}
    trial_list = [
        {"name": f"t{i:04d}", "id": i + 1, "repeat": REPEAT, "settings": {"lr": 0.01 * (i + 1)}}
        for i in range(trials)
    ]
    for name, data in (("experiment", experiment), ("base", base), ("trials", trial_list)):
        (root / f"{name}.yaml").write_text(yaml.dump(data, Dumper=dump, sort_keys=False))
    (root / "bench_report.py").write_text(PIPELINE)
    return root


def cli(*args: str) -> float:
    """Wall seconds of ``python -m expman ARGS`` in a fresh process (stdout discarded)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_measure.ROOT), env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "expman", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"expman {' '.join(args)} failed: {done.stderr}")
    return wall


async def main() -> None:
    trials = _measure.size(500, 12)
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        root = write_experiment(workdir / "configs", trials)
        with _measure.stopwatch() as build:
            result = await expman.run_experiment(root, workspace=workdir / "ws")
        if result.status != "completed":
            raise SystemExit(f"the experiment ended {result.status}: {result.counts}")
        exp = workdir / "ws" / "report"
        output = workdir / "report.html"
        samples = [cli("report", str(exp), "-o", str(output)) for _ in range(_measure.REPEATS)]
        results = [cli("results", str(exp)) for _ in range(_measure.REPEATS)]
        size = output.stat().st_size
        images = output.read_text(encoding="utf-8").count("<img ")
    _measure.emit(
        "report",
        f"{trials} trials",
        params={"trials": trials, "repeat": REPEAT, "epochs": EPOCHS, "metrics": 3},
        wall_s=samples,
        items=trials,
        item="trial",
        result=("expman report", min(samples), "s"),
        target=("<=", 5.0),
        size_bytes=size,
        size_mb=round(size / 1e6, 3),
        images=images,
        results_s=round(min(results), 3),
        build_s=round(build.wall, 3),
    )


if __name__ == "__main__":
    anyio.run(main)
