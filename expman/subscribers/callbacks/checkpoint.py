"""CheckpointCallback: ask for checkpoints and keep the best (or latest) few.

The callback decides *when* and *where*; the runtime does the saving.  It publishes
``CheckpointDue(path)``; the runtime calls the pipeline's ``save_checkpoint(tmp)``
hook, renames the result to ``path`` and publishes ``CheckpointSaved``, which the
callback records.  Files land in the run's ``artifacts/``:

=========================  ==========================================================
``checkpoint-<epoch>``     every ``interval`` epochs (epochs numbered from 0); with
                           ``monitor`` only the ``save_top_k`` best are kept, without
                           it the ``save_top_k`` most recent (-1 keeps all, 0 none)
``checkpoint-last``        overwritten at each of those epochs when ``save_last``
``checkpoint-final``       when ``run`` returns (``save_final``, on by default)
=========================  ==========================================================

A checkpoint is never half-written (temporary name, then rename); an older one is
deleted only after the newer one exists and the journal durably names it; a NaN
score is never among the best; a missing ``monitor`` metric fails the run (a typo
would otherwise keep nothing).  Its state (saved with every checkpoint) names files
relative to ``artifacts/``, and it only ever deletes a plain file or folder directly
in ``artifacts/`` whose name starts with ``checkpoint-``: never through a link, never
elsewhere.  With ``save_top_k: -1`` nothing is deleted and only the best is kept in
its state, so the state stays the same size however long the run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from expman.direction import (
    Mode,
    as_number,
    check_bool,
    check_int,
    check_name,
    improves,
    resolve_mode,
)
from expman.errors import CallbackError
from expman.events import CheckpointDue, CheckpointSaved, EpochEnd, RunEnding
from expman.serializable import YAMLSerializable
from expman.subscribers.callbacks.base import Callback
from expman.workspace.safepaths import remove_tree

PREFIX = "checkpoint-"


@YAMLSerializable.register("CheckpointCallback")
class CheckpointCallback(Callback):
    """Checkpoints every ``interval`` epochs, the ``save_top_k`` best kept; last and final."""

    def __init__(
        self,
        interval: int = 1,
        monitor: str | None = None,
        mode: str = "auto",
        save_top_k: int = 1,
        save_last: bool = False,
        save_final: bool = True,
        env: Any = None,
    ) -> None:
        super().__init__(env)
        self.interval = check_int("interval", interval, 0)
        self.monitor = None if monitor is None else check_name("monitor", monitor)
        self.mode: Mode = "min" if self.monitor is None else resolve_mode(self.monitor, mode)
        self.save_top_k = check_int("save_top_k", save_top_k, -1)
        self.save_last = check_bool("save_last", save_last)
        self.save_final = check_bool("save_final", save_final)
        # Invariant: kept maps each complete epoch checkpoint this callback still keeps
        # to (epoch, score); a path enters it only once CheckpointSaved says it exists.
        self.kept: dict[str, tuple[int, float | None]] = {}
        self._pending: dict[str, tuple[int, float | None]] = {}
        self.last_path: str | None = None
        self.final_path: str | None = None

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> None:
        cls(**params)

    # -- what is kept ------------------------------------------------------------------

    @property
    def best_path(self) -> str | None:
        """The kept checkpoint with the best score (the newest one without ``monitor``)."""
        ranked = self._ranked()
        return ranked[0] if ranked else None

    @property
    def best_score(self) -> float | None:
        best = self.best_path
        return self.kept[best][1] if best is not None else None

    def _ranked(self) -> list[str]:
        """Kept paths, best first: by score (ties: the older first), else newest first."""
        if self.monitor is None:
            return sorted(self.kept, key=lambda p: -self.kept[p][0])
        sign = 1.0 if self.mode == "min" else -1.0
        return sorted(self.kept, key=lambda p: (sign * (self.kept[p][1] or 0.0), self.kept[p][0]))

    def _worth_saving(self, score: float | None) -> bool:
        if self.save_top_k == 0:
            return False
        if self.monitor is None or self.save_top_k == -1:
            return True
        assert score is not None
        if len(self.kept) < self.save_top_k:
            return True
        worst = self.kept[self._ranked()[-1]][1]
        return improves(score, worst, self.mode)

    # -- hooks ---------------------------------------------------------------------------

    async def on_epoch_end(self, event: EpochEnd) -> None:
        # Every CheckpointSaved of earlier epochs has been delivered by now: a request
        # still pending is one whose save failed.
        self._pending.clear()
        if self.interval == 0 or (event.epoch + 1) % self.interval != 0:
            return
        score: float | None = None
        if self.monitor is not None:
            score = as_number(event.metrics.get(self.monitor))
            if score is None:
                raise CallbackError(
                    f"CheckpointCallback: monitor {self.monitor!r} is not a number among"
                    f" epoch {event.epoch}'s metrics"
                    f" ({', '.join(sorted(map(str, event.metrics))) or 'none'})"
                )
        if (score is None or not math.isnan(score)) and self._worth_saving(score):
            await self._request(event, f"{PREFIX}{event.epoch}", "top_k", score)
        if self.save_last:
            await self._request(event, f"{PREFIX}last", "last", score)

    async def on_run_ending(self, event: RunEnding) -> None:
        self._pending.clear()
        if self.save_final:
            epoch = event.epoch if event.epoch is not None else -1
            await self._request(event, f"{PREFIX}final", "final", None, epoch=epoch)

    async def on_checkpoint_saved(self, event: CheckpointSaved) -> None:
        pending = self._pending.pop(event.path, None)
        if pending is None:
            return  # someone else's checkpoint
        if event.reason == "last":
            self.last_path = event.path
        elif event.reason == "final":
            self.final_path = event.path
        else:
            self.kept[event.path] = pending
            await self._prune()

    async def _request(
        self,
        event: EpochEnd | RunEnding,
        name: str,
        reason: str,
        score: float | None,
        *,
        epoch: int | None = None,
    ) -> None:
        path = str(self.paths.artifacts / name)
        epoch = epoch if epoch is not None else getattr(event, "epoch", -1)
        self._pending[path] = (epoch, score)
        await self.publish(
            CheckpointDue(
                experiment=event.experiment,
                trial=event.trial,
                repeat=event.repeat,
                path=path,
                epoch=epoch,
                reason=reason,
            )
        )

    async def _prune(self) -> None:
        """Delete the checkpoints beyond ``save_top_k`` (only ever older, complete ones)."""
        if self.save_top_k < 0:
            return
        for path in self._ranked()[self.save_top_k :]:
            del self.kept[path]
            # Only inside this run's artifacts/, never through a link (safepaths).
            await anyio.to_thread.run_sync(remove_tree, path, self.paths.artifacts)

    # -- state for resume ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        # The checkpoint being saved right now is pending: it is kept once it exists,
        # so a run resumed from it must keep (and later prune) it too.
        kept = {**self.kept, **{p: v for p, v in self._pending.items() if _is_epoch(p)}}
        if self.save_top_k < 0 and kept:  # nothing is ever deleted: the best is all to keep
            best = self._best_of(kept)
            kept = {best: kept[best]}
        return {
            "kept": [[Path(path).name, epoch, score] for path, (epoch, score) in kept.items()],
            "last_path": Path(self.last_path).name if self.last_path else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        artifacts = self.paths.artifacts
        self.kept = {
            str(artifacts / name): (int(epoch), None if score is None else float(score))
            for name, epoch, score in state.get("kept", [])
            if _own_name(name)
        }
        last = state.get("last_path")
        self.last_path = str(artifacts / Path(str(last)).name) if _own_name(last) else None

    def _best_of(self, kept: dict[str, tuple[int, float | None]]) -> str:
        saved, self.kept = self.kept, kept
        try:
            return self._ranked()[0]
        finally:
            self.kept = saved


def _own_name(name: Any) -> bool:
    """A name this callback writes: ``checkpoint-...`` (any folder part is dropped)."""
    return isinstance(name, str) and Path(name).name.startswith(PREFIX)


def _is_epoch(path: str) -> bool:
    return Path(path).name.removeprefix(PREFIX).lstrip("-").isdigit()
