"""Execution backends: where runs execute (see :class:`Executor` for the contract).

==========  ===================================================================
executor    where a run's pipeline runs
==========  ===================================================================
``async``   in the event loop (``async def run``; a sync ``run`` in a thread)
``thread``  the same executor: sync pipelines in worker threads
``process`` a fresh worker process per run (:mod:`expman.executors.process`)
``ray``     a Ray actor per run on a Ray cluster (:mod:`expman.executors.ray`)
==========  ===================================================================
"""

from __future__ import annotations

from pathlib import Path

from expman.config import ExecutionSettings
from expman.errors import ExecutorError
from expman.executors.base import Executor
from expman.executors.local import LocalExecutor


def make_executor(
    execution: ExecutionSettings, max_concurrency: int, *, config_dir: Path | None = None
) -> Executor:
    """The executor that ``execution.executor`` names (Ray is imported only here)."""
    from expman.executors.devices import ResourcePool, detect_devices

    name = execution.executor
    if name == "ray":
        from expman.executors.ray import RayExecutor

        return RayExecutor(execution.ray, config_dir=config_dir)
    pool = ResourcePool(detect_devices(execution.devices))
    if name in ("local", "async", "thread"):
        return LocalExecutor(max_threads=max_concurrency, pool=pool, name=name)
    if name == "process":
        from expman.executors.process import ProcessExecutor

        return ProcessExecutor(pool, config_dir=config_dir)
    raise ExecutorError(f"executor {name!r} is not available")


__all__ = ["Executor", "LocalExecutor", "make_executor"]
