"""make_executor: the backend ``execution.executor`` names, imported only when chosen."""

from __future__ import annotations

from pathlib import Path

from expman.config import ExecutionSettings
from expman.errors import ExecutorError
from expman.executors.base import Executor
from expman.executors.devices import ResourcePool, detect_devices
from expman.executors.local import LocalExecutor


def make_executor(
    execution: ExecutionSettings, max_concurrency: int, *, config_dir: Path | None = None
) -> Executor:
    """The executor that ``execution.executor`` names (Ray is imported only here)."""
    name = execution.executor
    if name == "ray":
        from expman.executors.ray import RayExecutor  # Ray loads only for Ray experiments

        return RayExecutor(execution.ray, config_dir=config_dir)
    pool = ResourcePool(detect_devices(execution.devices))
    if name in ("local", "async", "thread"):
        return LocalExecutor(max_threads=max_concurrency, pool=pool, name=name)
    if name == "process":
        from expman.executors.process import ProcessExecutor  # its socket and subprocess code

        return ProcessExecutor(pool, config_dir=config_dir)
    raise ExecutorError(f"executor {name!r} is not available")
