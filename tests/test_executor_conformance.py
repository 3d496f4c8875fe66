"""Every executor of expman passes the executor contract (expman.testing.executors).

Each class runs the shipped suite against one backend, with the extra contracts that
backend meets.  Ray's tests use a real local Ray instance, started once for this
module.  The last two tests are about Ray as an optional extra, not the contract.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from expman.testing.executors import ExecutorContract, write_experiment
from expman.testing.worker_contracts import (
    DeviceLeaseContract,
    KilledWorkerContract,
    WorkerProcessContract,
)


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    """One local Ray instance for the module's Ray tests (start-up costs seconds)."""
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=4,
        object_store_memory=200 * 1024 * 1024,  # runs send small messages only
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    try:
        yield
    finally:
        ray.shutdown()


class TestAsyncExecutor(ExecutorContract):
    """Pipelines in the event loop: the suite's `async def run` pipeline."""

    executor = "async"
    async_pipeline = True


class TestThreadExecutor(DeviceLeaseContract):
    """Plain `def run` pipelines in worker threads, leasing GPU ids from the local pool."""

    executor = "thread"


@pytest.mark.slow
class TestProcessExecutor(KilledWorkerContract, WorkerProcessContract, DeviceLeaseContract):
    """A spawned worker process per run, which sees only the GPUs it leased."""

    executor = "process"
    captures_output = True
    exports_visible_devices = True


@pytest.mark.slow
@pytest.mark.usefixtures("ray_instance")
class TestRayExecutor(KilledWorkerContract):
    """A Ray actor per run on the module's local Ray; Ray reports a dead actor, not the signal."""

    executor = "ray"
    captures_output = True
    names_the_signal = False


# -- Ray as an optional extra ------------------------------------------------------------------


def _with_this_checkout() -> dict[str, str]:
    """The environment for a subprocess that imports this checkout's expman."""
    source = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}


def test_ray_is_imported_only_when_used(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Other executors never import ray; without Ray, the ray executor says how to install it."""
    root = make_experiment()
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        import expman
        result = asyncio.run(expman.run_experiment({str(root)!r}, workspace={str(workspace)!r}))
        print(result.status, "ray" in sys.modules)
        sys.modules["ray"] = None  # as if Ray were not installed
        try:
            asyncio.run(expman.run_experiment(
                {str(root)!r}, workspace={str(workspace / "other")!r}, executor="ray"))
        except expman.ExpmanError as exc:
            print(type(exc).__name__, exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=_with_this_checkout(),
        timeout=60,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "completed False", done.stderr
    assert lines[1].startswith(
        "ExecutorError the ray executor needs Ray: pip install 'expman[ray]'"
    )


@pytest.mark.slow
def test_the_ray_executor_starts_and_stops_its_own_ray(tmp_path: Path, workspace: Path) -> None:
    """Without a running Ray, the executor starts a local instance and shuts it down at the end."""
    root = write_experiment(
        tmp_path / "configs",
        executor="ray",
        pipeline={"epochs": 2},
        execution={"ray": {"num_cpus": 1}},
    )
    script = textwrap.dedent(
        f"""
        import asyncio
        import ray
        import expman
        result = asyncio.run(expman.run_experiment({str(root)!r}, workspace={str(workspace)!r}))
        print(result.status, result.runs[0].epochs, ray.is_initialized())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=_with_this_checkout(),
        timeout=180,
    )
    assert done.stdout.splitlines()[-1:] == ["completed 2 False"], done.stderr[-3000:]
