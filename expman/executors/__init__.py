"""Execution backends: where runs execute (see :class:`Executor` for the contract)."""

from __future__ import annotations

from expman.config import ExecutionSettings
from expman.executors.base import Executor
from expman.executors.local import LocalExecutor


def make_executor(execution: ExecutionSettings, max_concurrency: int) -> Executor:
    """The executor that ``execution.executor`` names."""
    name = execution.executor
    if name in ("local", "async", "thread"):
        return LocalExecutor(max_threads=max_concurrency)
    from expman.errors import ExecutorError

    raise ExecutorError(f"executor {name!r} is not available")


__all__ = ["Executor", "LocalExecutor", "make_executor"]
