"""Shared fixtures: experiments written as real YAML files in tmp_path."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

#: A module of small pipelines that tests' experiments name as ``pipelines:Name``.
PIPELINES = textwrap.dedent(
    '''
    import os
    import time

    import anyio
    import structlog

    from expman import Pipeline


    class Sleeper(Pipeline):
        """Sleeps ``seconds`` per epoch (async), reporting a loss that falls."""

        def __init__(self, seconds=0.0, epochs=1, fail_on=None, **params):
            super().__init__(**params)
            self.seconds, self.epochs, self.fail_on = seconds, epochs, fail_on

        async def run(self, ctx):
            for epoch in range(ctx.start_epoch, self.epochs):
                await anyio.sleep(self.seconds)
                if self.fail_on is not None and ctx.repeat == self.fail_on:
                    raise ValueError(f"boom in repeat {ctx.repeat}")
                if await ctx.epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "seed": ctx.seed}):
                    break
            return {"final": ctx.seed % 1000}


    class SyncSleeper(Pipeline):
        """The same in a plain function (runs in a worker thread)."""

        def __init__(self, seconds=0.0, epochs=1, **params):
            super().__init__(**params)
            self.seconds, self.epochs = seconds, epochs

        def run(self, ctx):
            for epoch in range(self.epochs):
                time.sleep(self.seconds)
                if ctx.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)}):
                    break
            return {"thread": True}


    class Talker(Pipeline):
        """Logs through structlog and stdlib logging."""

        async def run(self, ctx):
            import logging

            structlog.get_logger().info("hello from the pipeline", lr=ctx.config.lr)
            logging.getLogger("user").warning("stdlib says hi")
            await ctx.epoch_end(0, {"loss": 0.5})
            return {}


    class Ignorer(Pipeline):
        """Never looks at should_stop: only cancellation ends it."""

        async def run(self, ctx):
            for epoch in range(10_000):
                await ctx.epoch_end(epoch, {"loss": 1.0})
                await anyio.sleep(0.05)
    '''
)


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def make_experiment(tmp_path: Path) -> Callable[..., Path]:
    """Write an experiment folder; returns its path. Keys left out get small defaults."""

    def make(
        *,
        name: str = "exp",
        settings: dict[str, Any] | None = None,
        base: dict[str, Any] | None = None,
        trials: list[dict[str, Any]] | None = None,
        env: dict[str, Any] | None = None,
        folder: str = "configs",
        experiment: dict[str, Any] | None = None,
    ) -> Path:
        root = tmp_path / folder
        root.mkdir(parents=True, exist_ok=True)
        write_yaml(
            root / "experiment.yaml",
            experiment
            if experiment is not None
            else {"name": name, "id": 1, "desc": "test", "settings": settings or {}},
        )
        write_yaml(
            root / "base.yaml",
            {"settings": base if base is not None else {"pipeline": {"type": "pipelines:Sleeper"}}},
        )
        write_yaml(
            root / "trials.yaml",
            trials if trials is not None else [{"name": "a", "id": 1, "repeat": 1}],
        )
        if env is not None:
            write_yaml(root / "env.yaml", env)
        (root / "pipelines.py").write_text(PIPELINES)
        return root

    return make


@pytest.fixture(autouse=True)
def _forget_pipeline_modules(tmp_path: Path) -> Any:
    """Each test's experiment ships its own modules (pipelines.py, ...): import them afresh."""
    yield
    sys.modules.pop("pipelines", None)
    root = str(tmp_path)
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(root):
            del sys.modules[name]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "ws"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> Any:
    """Run ``python -m expman`` as a user would; returns the CompletedProcess."""
    import subprocess

    env = dict(os.environ)
    # The package under test (this checkout), whatever is installed elsewhere.
    source = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "expman", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=env,
    )
