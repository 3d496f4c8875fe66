"""EarlyStopping: stop a run when its monitored metric stops improving.

Semantics (pinned by ``tests/test_early_stopping.py``), checked in this order at
each reported epoch:

1. The first ``start_from_epoch`` reported epochs are ignored entirely (warm-up).
2. A missing (or non-numeric) metric fails the run when ``strict`` (the default),
   else it is logged once as a warning and the epoch does not count.
3. ``check_finite``: NaN or ±inf stops the run.
4. ``stopping_threshold``: reaching it (``<=`` for min, ``>=`` for max) stops.
5. ``divergence_threshold``: being worse than it (``>`` for min, ``<`` for max) stops.
6. A value improves only if it beats the best **strictly** by the margin
   ``max(min_delta, |best| * min_delta_percent / 100)`` (a best of 0 gives a
   relative margin of 0, never a division); NaN never improves.  Otherwise the
   wait grows by one; the run stops when the wait reaches ``patience``.

It stops by publishing ``StopRequested(scope="run")``: the pipeline's next
``ctx.epoch_end`` returns True and the run ends ``stopped`` with the reason.
Its counters are saved with each checkpoint and restored on resume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import structlog

from expman.direction import (
    Mode,
    as_number,
    check_bool,
    check_int,
    check_name,
    check_number,
    improves,
    resolve_mode,
)
from expman.errors import CallbackError
from expman.events import EpochEnd, RunStarted
from expman.serializable import YAMLSerializable
from expman.subscribers.callbacks.base import Callback, environment_first

log = structlog.get_logger("expman.subscribers.callbacks")


@YAMLSerializable.register("EarlyStopping")
class EarlyStopping(Callback):
    """Stop the run when ``metric`` has not improved for ``patience`` reported epochs.

    ``EarlyStopping(env, patience=5)`` (the original API: the environment first) watches
    ``loss``.
    """

    def __init__(
        self,
        metric: Any = "loss",
        patience: int = 3,
        min_delta: float = 0.0,
        min_delta_percent: float = 0.0,
        mode: str = "auto",
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        start_from_epoch: int = 0,
        strict: bool = True,
        env: Any = None,
    ) -> None:
        given_env, metric = environment_first(metric, "loss")
        super().__init__(env or given_env)
        self.metric = check_name("metric", metric)
        self.patience = check_int("patience", patience, 0)
        self.min_delta = check_number("min_delta", min_delta, 0.0)
        self.min_delta_percent = check_number("min_delta_percent", min_delta_percent, 0.0)
        self.mode: Mode = resolve_mode(self.metric, mode)
        self.check_finite = check_bool("check_finite", check_finite)
        self.stopping_threshold = (
            None
            if stopping_threshold is None
            else check_number("stopping_threshold", stopping_threshold)
        )
        self.divergence_threshold = (
            None
            if divergence_threshold is None
            else check_number("divergence_threshold", divergence_threshold)
        )
        self.start_from_epoch = check_int("start_from_epoch", start_from_epoch, 0)
        self.strict = check_bool("strict", strict)
        # Invariant: best is None or a non-NaN number; wait counts checked epochs
        # since the best; stopped_epoch is set once, when the stop is requested.
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.seen = 0
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None
        self._warned = False

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> None:
        cls(**params)

    # -- the decision (pure: the table test drives it) -----------------------------------

    def margin(self) -> float:
        """How much a value must beat the best by to count as an improvement."""
        relative = abs(self.best) * self.min_delta_percent / 100.0 if self.best is not None else 0.0
        return max(self.min_delta, relative)

    def check(self, epoch: int, metrics: Mapping[str, Any]) -> str | None:
        """Account for one reported epoch; the reason to stop, or None to go on."""
        if self.stopped_epoch is not None:
            return None
        self.seen += 1
        if self.seen <= self.start_from_epoch:
            return None
        value = as_number(metrics.get(self.metric))
        if value is None:
            self._missing(epoch, metrics)
            return None
        reason = self._evaluate(epoch, value)
        if reason is not None:
            self.stopped_epoch = epoch
            self.stop_reason = reason
        return reason

    def _evaluate(self, epoch: int, value: float) -> str | None:
        name = self.metric
        if self.check_finite and not math.isfinite(value):
            return f"{name} is {value}, not finite (epoch {epoch})"
        threshold = self.stopping_threshold
        if threshold is not None and (
            value <= threshold if self.mode == "min" else value >= threshold
        ):
            return f"{name} = {value:g} reached the stopping threshold {threshold:g}"
        divergence = self.divergence_threshold
        if divergence is not None and (
            value > divergence if self.mode == "min" else value < divergence
        ):
            return f"{name} = {value:g} diverged beyond {divergence:g}"
        if improves(value, self.best, self.mode, self.margin()):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return None
        self.wait += 1
        if self.wait >= self.patience:
            best = "none" if self.best is None else f"{self.best:g} at epoch {self.best_epoch}"
            epochs = "epoch" if self.wait == 1 else "epochs"
            return f"{name} did not improve for {self.wait} {epochs} (best {best})"
        return None

    def _missing(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        raw = metrics.get(self.metric)
        problem = (
            f"metric {self.metric!r} is not among epoch {epoch}'s metrics"
            f" ({', '.join(sorted(map(str, metrics))) or 'none'})"
            if raw is None
            else f"metric {self.metric!r} is {raw!r} at epoch {epoch}, not a number"
        )
        if self.strict:
            raise CallbackError(f"EarlyStopping: {problem}; report it or set strict: false")
        if not self._warned:
            self._warned = True
            log.warning("early_stopping_metric_missing", problem=problem)

    # -- the callback ----------------------------------------------------------------------

    async def on_run_started(self, event: RunStarted) -> None:
        # A decision restored from a checkpoint holds: a run stopped before a crash
        # starts again already stopped (``ctx.should_stop``), and ends ``stopped``.
        if self.stopped_epoch is not None:
            reason = self.stop_reason or f"stopped at epoch {self.stopped_epoch}"
            await self.request_stop(f"early stopping: {reason}", event=event)

    async def on_epoch_end(self, event: EpochEnd) -> None:
        reason = self.check(event.epoch, event.metrics)
        if reason is not None:
            await self.request_stop(f"early stopping: {reason}", event=event)

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "seen": self.seen,
            "stopped_epoch": self.stopped_epoch,
            "stop_reason": self.stop_reason,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = state.get("best")
        self.best_epoch = state.get("best_epoch")
        self.wait = int(state.get("wait", 0))
        self.seen = int(state.get("seen", 0))
        self.stopped_epoch = state.get("stopped_epoch")
        self.stop_reason = state.get("stop_reason")
