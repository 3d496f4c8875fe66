"""In-process execution: async pipelines in the event loop, sync ones in threads.

``async`` and ``thread`` (and ``local``, their old name) are this one executor: an
``async def run`` always runs in the event loop (an event loop in a worker thread
could not share the bus), and a plain ``def run`` always runs in a worker thread
(in the loop it would block every other run).  They differ only in their name.
Threads share the GIL: CPU-bound pure-Python pipelines do not run in parallel here;
use the ``process`` executor for those.

A pipeline cannot end the process from here (:mod:`expman.exits`): ``sys.exit``, an
interrupt it raises, or ``os._exit`` while it runs, fail its run with
:class:`~expman.exits.PipelineExit`; a child it forks ends when the pipeline returns in
it.  The frame awaiting an async pipeline carries the run's label, so the watchdog can
name the run that blocks the loop (:mod:`expman.watchdog`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from expman.executors.base import Executor
from expman.executors.devices import ResourcePool
from expman.exits import guarding_os_exit, pipeline_exits
from expman.pipeline import build_pipeline, call_hook, checkpoint_args, checkpoint_load_error
from expman.run.context import RunContext
from expman.seeding import run_entered, run_left


class LocalExecutor(Executor):
    """Runs pipelines in this process: ``async def run`` in the loop, ``def run`` in a thread."""

    name = "local"

    def __init__(
        self, max_threads: int = 8, *, pool: ResourcePool | None = None, name: str = "local"
    ) -> None:
        self._threads = anyio.CapacityLimiter(max(1, max_threads))
        self.pool = pool
        self.name = name

    async def execute(self, ctx: RunContext) -> Mapping[str, Any] | None:
        with guarding_os_exit():
            return await self._execute(ctx)

    async def _execute(self, ctx: RunContext) -> Mapping[str, Any] | None:
        with pipeline_exits():  # the pipeline's constructor
            pipeline = build_pipeline(ctx.settings["pipeline"])
        await ctx.attach_callbacks(getattr(pipeline, "callbacks", ()))
        save = getattr(pipeline, "save_checkpoint", None)
        if callable(save):

            async def saver(path: Path) -> None:
                with pipeline_exits():
                    await call_hook(save, path)

            ctx.set_checkpoint_saver(saver)
        if ctx.checkpoint is not None:
            load = getattr(pipeline, "load_checkpoint", None)
            if callable(load):
                with pipeline_exits():  # an exit is the run's failure, not a bad file
                    try:
                        await call_hook(load, *checkpoint_args(load, ctx.checkpoint, ctx))
                    except Exception as exc:
                        raise checkpoint_load_error(ctx.checkpoint, exc) from exc
        run = pipeline.run
        run_entered()
        try:
            if inspect.iscoroutinefunction(run):
                result: Any = await _run_in_loop(run, ctx)
            else:
                result = await anyio.to_thread.run_sync(
                    _run_in_thread, run, ctx, abandon_on_cancel=True, limiter=self._threads
                )
                if inspect.isawaitable(result):
                    with pipeline_exits():
                        result = await result
        finally:
            run_left()
        await ctx.publish_run_ending()
        return result  # type: ignore[no-any-return]


async def _run_in_loop(run: Any, ctx: RunContext) -> Any:
    """``await run(ctx)``; this frame names the run to the watchdog while it runs."""
    _expman_run_label = ctx.spec.label  # read from this frame by expman.watchdog
    with pipeline_exits():
        return await run(ctx)


def _run_in_thread(run: Any, ctx: RunContext) -> Any:
    """``run(ctx)`` in a worker thread, its exits turned into the run's failure."""
    with pipeline_exits():
        return run(ctx)
