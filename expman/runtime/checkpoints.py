"""Checkpoints: a ``CheckpointDue`` answered by the run's saver, atomically.

* A request that arrives while the run's callbacks see an epoch is deferred until
  all of them have seen it (``RunContext.report_epoch`` saves it then), so the
  callbacks' state saved with it includes that epoch.
* The saver writes to a temporary name beside the target, which is renamed into
  place once complete: a crash leaves at most the temporary name, never a partial
  checkpoint, and an older checkpoint is replaced only by a complete one.
* Write-ahead: ``CheckpointStaged`` (path, temporary name, epoch, the callbacks'
  ``state_dict``s, the last metrics) is durably in the journal before the rename,
  so the journal always describes what lies at ``path`` (resume finishes a rename a
  crash cut off), and ``CheckpointSaved`` follows the rename: a callback deleting
  older checkpoints on it never deletes the only one the journal knows.
* The epoch of a checkpoint is the last epoch its state includes (the run's last
  reported one; on a resumed run that has reported none yet, the one before its
  start epoch), whatever epoch the request named.  A retry in the same session
  restarts from the newest checkpoint saved.
* A pipeline with no ``save_checkpoint`` hook gets a warning, not a failure.
* A save that fails during an epoch fails the run (``epoch_end`` raises); one that
  fails outside an epoch (the final checkpoint) is logged in the run's run.log.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import structlog

from expman.bus import EventBus
from expman.errors import WorkspaceError
from expman.events import CheckpointDue, CheckpointSaved, CheckpointStaged
from expman.run.context import RunContext
from expman.run.records import ResumePoint
from expman.runtime.active import ActiveRuns
from expman.workspace.atomic import remove_path, replace_into_place
from expman.workspace.journal import JOURNAL

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
        epoch = ctx.last_epoch if ctx.last_epoch is not None else ctx.start_epoch - 1
        if ctx.checkpoints_from is not None and epoch >= ctx.checkpoints_from:
            # A pruning judgement of this epoch was cut off by an interruption.
            log.info(
                "checkpoint_not_saved",
                path=event.path,
                reason=event.reason,
                why=f"the pruning judgement after epoch {ctx.checkpoints_from} is still due;"
                " resume trains to it again",
            )
            return
        state = ctx.plain_value(ctx.callbacks.state(), "callback state")
        metrics = dict(ctx.last_metrics)
        fields: dict[str, Any] = {
            "experiment": event.experiment,
            "trial": event.trial,
            "repeat": event.repeat,
        }

        async def journal_it(tmp: Path) -> None:
            await self._bus.publish(
                CheckpointStaged(
                    **fields,
                    path=str(path),
                    staged=str(tmp),
                    epoch=epoch,
                    reason=event.reason,
                    state=state,
                    metrics=metrics,
                )
            )
            if not await self._bus.settled(JOURNAL):
                raise WorkspaceError(
                    f"the journal could not record checkpoint {path}; it was not replaced"
                )

        await save_checkpoint(ctx.checkpoint_saver, path, before_rename=journal_it)
        await self._bus.publish(
            CheckpointSaved(
                **fields,
                path=str(path),
                epoch=epoch,
                reason=event.reason,
                state=state,
                metrics=metrics,
            )
        )
        self._resume[ctx.spec.key] = ResumePoint(
            path, epoch + 1, state, ctx.attempt, metrics=metrics
        )


async def save_checkpoint(
    saver: Callable[[Path], Any],
    path: Path,
    *,
    before_rename: Callable[[Path], Awaitable[None]] | None = None,
) -> None:
    """Have ``saver`` write to a temporary name beside ``path``, then rename it into place.

    ``before_rename(tmp)`` runs once the temporary file is complete; if it raises,
    nothing is renamed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        await saver(tmp)
        if not tmp.exists():
            raise FileNotFoundError(f"save_checkpoint wrote nothing at {tmp}")
        if before_rename is not None:
            await before_rename(tmp)
        await anyio.to_thread.run_sync(replace_into_place, tmp, path)
    finally:
        if tmp.exists():
            await anyio.to_thread.run_sync(remove_path, tmp)
