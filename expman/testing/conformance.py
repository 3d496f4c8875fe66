"""The executor conformance suite's experiments: their pipelines, and a writer of them.

The suite writes this into each experiment's config folder as ``conformance.py``
and names ``conformance:Train`` (``ATrain`` for async backends), so every backend
imports its pipeline the way a user's experiment does: from the config folder.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

Settings = Mapping[str, Any]

#: The suite's pipelines and callbacks, shipped in each experiment's folder as
#: ``conformance.py`` (types ``conformance:Train``, ``conformance:StopAt``, ...).
CONFORMANCE = textwrap.dedent(
    '''
    import json
    import logging
    import os
    import sys
    import time

    import anyio
    import structlog

    from expman import Callback, Pipeline
    from expman.events import CheckpointDue


    class Train(Pipeline):
        """Epochs of ``seconds``; loss falls, ``acc`` counts epochs; saves and loads its state."""

        def __init__(self, seconds=0.0, epochs=3, fail_on=None, fail_repeat=None,
                     ignore_stop=False, talk=False, crash=None, record=False, own_stop=None):
            super().__init__()
            if own_stop is not None:
                self.register_callback(StopAt(value=own_stop))
            self.seconds, self.epochs = seconds, epochs
            self.fail_on, self.fail_repeat = fail_on, fail_repeat
            self.ignore_stop, self.talk, self.crash, self.record = ignore_stop, talk, crash, record
            self.state = {"epoch": -1}
            self.loaded = None

        def begin(self, ctx):
            if self.talk:
                print("plain print", 1)
                print("to stderr", file=sys.stderr)
                structlog.get_logger().info("structlog line", lr=ctx.config.lr)
                logging.getLogger("user").warning("stdlib line")
            if self.record:
                self.started = time.time()

        def step(self, ctx, epoch):
            failing = self.fail_repeat in (None, ctx.repeat) and ctx.attempt == 1
            if epoch == self.fail_on and failing:
                if self.crash == "exit":
                    os._exit(3)
                if self.crash == "segfault":
                    import ctypes
                    ctypes.string_at(0)
                raise ValueError(f"boom at epoch {epoch}")
            self.state = {"epoch": epoch}
            return {
                "loss": 1.0 / (epoch + 1),
                "acc": epoch,
                "start": ctx.start_epoch,
                "loaded": self.loaded,
                "pid": os.getpid(),
            }

        def end(self, ctx):
            if self.record:
                lease = {
                    "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "devices": list(ctx.devices),
                    "start": self.started,
                    "end": time.time(),
                }
                (ctx.artifacts / "lease.json").write_text(json.dumps(lease))
            return {"final_epoch": self.state["epoch"]}

        def run(self, ctx):
            self.begin(ctx)
            for epoch in range(ctx.start_epoch, self.epochs):
                time.sleep(self.seconds)
                stop = ctx.epoch_end(epoch, self.step(ctx, epoch))
                if stop and not self.ignore_stop:
                    break
            return self.end(ctx)

        def save_checkpoint(self, path):
            path.write_text(json.dumps(self.state))

        def load_checkpoint(self, path):
            self.state = json.loads(path.read_text())
            self.loaded = self.state["epoch"]


    class ATrain(Train):
        """The same training loop as ``async def run``."""

        async def run(self, ctx):
            self.begin(ctx)
            for epoch in range(ctx.start_epoch, self.epochs):
                await anyio.sleep(self.seconds)
                stop = await ctx.epoch_end(epoch, self.step(ctx, epoch))
                if stop and not self.ignore_stop:
                    break
            return self.end(ctx)


    class StopAt(Callback):
        """Asks to stop (``scope``) once ``acc`` reaches ``value``."""

        def __init__(self, value=1, scope="run"):
            super().__init__()
            self.value, self.scope = value, scope

        async def on_epoch_end(self, event):
            if event.metrics.get("acc", -1) >= self.value:
                await self.request_stop(f"acc reached {self.value}", scope=self.scope, event=event)


    class FinalCheckpoint(Callback):
        """Asks for a last checkpoint once ``run`` has returned (RunEnding)."""

        def __init__(self, root):
            super().__init__()
            self.root = root

        async def on_run_ending(self, event):
            path = f"{self.root}/trials/{event.trial}/run_{event.repeat}/artifacts/final.json"
            await self.publish(
                CheckpointDue(
                    experiment=event.experiment,
                    trial=event.trial,
                    repeat=event.repeat,
                    path=path,
                    epoch=event.epoch if event.epoch is not None else 0,
                    reason="final",
                )
            )


    class CheckpointEvery(Callback):
        """Asks for a checkpoint after every epoch, into the run's artifacts."""

        def __init__(self, root):
            super().__init__()
            self.root = root

        async def on_epoch_end(self, event):
            path = f"{self.root}/trials/{event.trial}/run_{event.repeat}/artifacts/checkpoint.json"
            await self.publish(
                CheckpointDue(
                    experiment=event.experiment,
                    trial=event.trial,
                    repeat=event.repeat,
                    path=path,
                    epoch=event.epoch,
                )
            )
    '''
)


def write_yaml(path: Path, data: Any) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def write_experiment(
    root: Path,
    *,
    executor: str,
    pipeline: Settings | None = None,
    callbacks: Sequence[Settings] | None = None,
    trials: Sequence[Settings] | None = None,
    execution: Settings | None = None,
    env: Settings | None = None,
) -> Path:
    """Write the suite's experiment, run on ``executor``, into ``root``; returns ``root``.

    ``pipeline`` holds the pipeline's parameters (its ``type`` is ``conformance:Train``
    unless given), ``callbacks`` the base settings' callbacks, ``trials`` the trials
    (one trial ``a`` of one run by default), ``execution`` more keys for env.yaml's
    ``execution`` block and ``env`` env.yaml's other keys.
    """
    root.mkdir(parents=True, exist_ok=True)
    base: dict[str, Any] = {
        "pipeline": {"type": "conformance:Train", **(pipeline or {})},
        "lr": 0.1,
    }
    if callbacks:
        base["callbacks"] = [dict(c) for c in callbacks]
    experiment = {"name": "exp", "id": 1, "desc": "test", "settings": {}}
    write_yaml(root / "experiment.yaml", experiment)
    write_yaml(root / "base.yaml", {"settings": base})
    write_yaml(
        root / "trials.yaml", [dict(t) for t in trials or [{"name": "a", "id": 1, "repeat": 1}]]
    )
    execution_block = {"executor": executor, **(execution or {})}
    write_yaml(root / "env.yaml", {**(env or {}), "execution": execution_block})
    (root / "conformance.py").write_text(CONFORMANCE)
    return root


class ConformanceExperiment(Protocol):
    """Writes the suite's experiment for the backend under test; returns its folder."""

    def __call__(
        self,
        *,
        pipeline: Settings | None = None,
        callbacks: Sequence[Settings] | None = None,
        trials: Sequence[Settings] | None = None,
        execution: Settings | None = None,
        env: Settings | None = None,
    ) -> Path: ...


def forget_modules_under(folder: Path) -> None:
    """Drop the modules imported from ``folder``: each test's experiment ships its own."""
    prefix = str(folder)
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(prefix):
            del sys.modules[name]


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_log(workspace: Path, trial: str = "a", repeat: int = 0) -> list[dict[str, Any]]:
    return json_lines(workspace / "exp" / "trials" / trial / f"run_{repeat}" / "logs" / "run.log")


def artifacts(workspace: Path, trial: str = "a", repeat: int = 0) -> Path:
    return workspace / "exp" / "trials" / trial / f"run_{repeat}" / "artifacts"
