"""Checkpoints: a ``CheckpointDue`` answered by the run's saver, atomically.

* A request that arrives while the run's callbacks see an epoch is deferred until
  all of them have seen it (``RunContext.report_epoch`` saves it then), so the
  callbacks' state saved with it includes that epoch.
* The saver writes to a temporary name beside the target, which is renamed into
  place once complete: a crash leaves at most the temporary name, never a partial
  checkpoint, and an older checkpoint is replaced only by a complete one.
* ``CheckpointSaved`` carries the callbacks' ``state_dict``s; a retry in the same
  session restarts from the newest checkpoint saved.
* A pipeline with no ``save_checkpoint`` hook gets a warning, not a failure.
* A save that fails during an epoch fails the run (``epoch_end`` raises); one that
  fails outside an epoch (the final checkpoint) is logged in the run's run.log.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import structlog

from expman.bus import EventBus
from expman.events import CheckpointDue, CheckpointSaved
from expman.run.context import RunContext
from expman.run.records import ResumePoint
from expman.runtime.active import ActiveRuns
from expman.workspace.atomic import remove_path, replace_into_place

log = structlog.get_logger("expman.runtime")


class Checkpoints:
    """Answers ``CheckpointDue`` for the active runs (a control subscriber)."""

    def __init__(
        self,
        bus: EventBus,
        active: ActiveRuns,
        resume: MutableMapping[tuple[str, int], ResumePoint],
    ) -> None:
        self._bus = bus
        self._active = active
        self._resume = resume

    async def __call__(self, event: CheckpointDue) -> None:
        run = self._active.get(event.run_key)
        if run is None:
            return
        ctx = run.ctx
        if ctx.dispatching_epoch:
            ctx.deferred_checkpoints.append(event)
            return
        try:
            await self.save(ctx, event)
        except Exception as exc:
            # Outside an epoch (a final checkpoint) nobody waits for the save: the run's
            # log says why it failed (during an epoch, the pipeline's epoch_end raises).
            log.error("checkpoint_failed", path=event.path, reason=event.reason, exc_info=exc)

    async def save(self, ctx: RunContext, event: CheckpointDue) -> None:
        """Save the checkpoint ``event`` asks for now, and publish ``CheckpointSaved``."""
        if ctx.checkpoint_saver is None:
            log.warning("checkpoint_skipped", reason="pipeline has no save_checkpoint hook")
            return
        # A relative path is relative to the run's artifacts folder.
        path = ctx.paths.artifacts / event.path
        await save_checkpoint(ctx.checkpoint_saver, path)
        state = ctx.plain_value(ctx.callbacks.state(), "callback state")
        await self._bus.publish(
            CheckpointSaved(
                experiment=event.experiment,
                trial=event.trial,
                repeat=event.repeat,
                path=str(path),
                epoch=event.epoch,
                reason=event.reason,
                state=state,
            )
        )
        self._resume[ctx.spec.key] = ResumePoint(path, event.epoch + 1, state, ctx.attempt)


async def save_checkpoint(saver: Callable[[Path], Any], path: Path) -> None:
    """Have ``saver`` write to a temporary name beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        await saver(tmp)
        if not tmp.exists():
            raise FileNotFoundError(f"save_checkpoint wrote nothing at {tmp}")
        await anyio.to_thread.run_sync(replace_into_place, tmp, path)
    finally:
        if tmp.exists():
            await anyio.to_thread.run_sync(remove_path, tmp)
