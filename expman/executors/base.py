"""Executor: where a run's pipeline executes.

Contract (every backend passes the same conformance suite):

* ``execute(ctx)`` builds the pipeline named by ``ctx.settings["pipeline"]``, calls
  its ``load_checkpoint`` hook when ``ctx.checkpoint`` is set, runs it and returns
  whatever ``run`` returned.  An exception in user code propagates as is: the
  runtime turns it into ``RunFinished(status="failed")``.
* It sets ``ctx.checkpoint_saver`` so the runtime can answer ``CheckpointDue``.
* When ``run`` returns (not when it raises), it calls ``await ctx.publish_run_ending()``
  while the pipeline is still alive: callbacks may then ask for a final checkpoint,
  which the saver must still answer.
* It hands the pipeline's own callbacks (``pipeline.callbacks``, filled by
  ``register_callback``) to ``await ctx.attach_callbacks(...)`` before calling ``run``.
* The bus, callbacks and writers stay with the runtime; the executor only moves the
  pipeline (and the events it reports) between the runtime and where it runs.
* Cancelling ``execute`` (stop grace expired, timeout) must stop the work or abandon
  it without blocking the runtime.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from expman.runtime.context import RunContext


class Executor(ABC):
    """One execution backend; an async context manager around a batch of runs."""

    name: str = "executor"

    async def __aenter__(self) -> Executor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    @abstractmethod
    async def execute(self, ctx: RunContext) -> Mapping[str, Any] | None:
        """Run one pipeline to its end and return its result."""
