"""Executor: where a run's pipeline executes.

Contract (every backend passes the same conformance suite):

* ``execute(ctx)`` builds the pipeline named by ``ctx.settings["pipeline"]``, calls
  its ``load_checkpoint`` hook when ``ctx.checkpoint`` is set, runs it and returns
  whatever ``run`` returned.  An exception in user code propagates as is: the
  runtime turns it into ``RunFinished(status="failed")``.
* It calls ``ctx.set_checkpoint_saver(...)`` so the runtime can answer ``CheckpointDue``.
* When ``run`` returns (not when it raises), it calls ``await ctx.publish_run_ending()``
  while the pipeline is still alive: callbacks may then ask for a final checkpoint,
  which the saver must still answer.
* It hands the pipeline's own callbacks (``pipeline.callbacks``, filled by
  ``register_callback``) to ``await ctx.attach_callbacks(...)`` before calling ``run``.
* The bus, callbacks and writers stay with the runtime; the executor only moves the
  pipeline (and the events it reports) between the runtime and where it runs.
* Cancelling ``execute`` (stop grace expired, timeout) must stop the work or abandon
  it without blocking the runtime.
* ``reserve(resources)`` holds a run's trial resources for the run's whole life and
  yields the GPU ids it leased (``ctx.devices``).  Local backends lease them from
  their :class:`~expman.executors.devices.ResourcePool`; a backend without a pool
  (Ray) leaves scheduling to its engine and yields nothing.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from expman.executors.devices import ResourcePool
    from expman.run.context import RunContext


class Executor(ABC):
    """One execution backend; an async context manager around a batch of runs."""

    name: str = "executor"
    #: GPU ids and the CPU budget runs lease here; None: the backend schedules them.
    pool: ResourcePool | None = None

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

    @contextlib.asynccontextmanager
    async def reserve(self, resources: Mapping[str, float]) -> AsyncIterator[tuple[str, ...]]:
        """Hold ``resources`` (``{gpus, cpus}``) for one run; yields its GPU ids."""
        if self.pool is None:
            yield ()
            return
        async with self.pool.lease(resources) as lease:
            yield lease.devices
