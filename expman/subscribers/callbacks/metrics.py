"""MetricsTracker: a run's metric history in memory, and its summary at the end.

Every ``EpochEnd`` is always written to the run's and the experiment's
``logs/metrics.log`` by the log writer (results need them), whether or not a
MetricsTracker is configured; the tracker does not write a second copy.  What it
adds:

* ``get_latest(name)``, ``history(name)`` and ``best(name)`` for the other callbacks
  of the same run (``self.find_callback(MetricsTracker)``) and for code holding it;
* at the end of the run, ``best_<name>`` and ``best_<name>_epoch`` for each tracked
  metric whose direction is known (``mode``, or ``auto`` from its name) merged into
  the run's ``RunFinished.metrics``, next to the last reported values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from expman.direction import Mode, as_number, improves, infer_mode, resolve_mode
from expman.events import EpochEnd
from expman.jsonlines import read_lines
from expman.serializable import InvalidParam, YAMLSerializable
from expman.subscribers.callbacks.base import Callback, environment_first


@YAMLSerializable.register("MetricsTracker")
class MetricsTracker(Callback):
    """Keeps every reported value of the run's metrics (all, or those in ``metrics``)."""

    def __init__(
        self,
        metrics: Sequence[str] | None = None,
        mode: str | Mapping[str, str] = "auto",
        env: Any = None,
    ) -> None:
        given_env, metrics = environment_first(metrics, None)
        super().__init__(env or given_env)
        if metrics is not None and (
            isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics)
        ):
            raise InvalidParam("metrics", f"expected a list of metric names, got {metrics!r}")
        self.metrics: tuple[str, ...] | None = None if metrics is None else tuple(metrics)
        if isinstance(mode, Mapping):
            self._modes: dict[str, Mode] = {
                str(name): resolve_mode(str(name), str(m), param=f"mode.{name}")
                for name, m in mode.items()
            }
            self._default_mode = "auto"
        elif mode in ("auto", "min", "max"):
            self._modes = {}
            self._default_mode = mode
        else:
            raise InvalidParam("mode", f"expected 'min', 'max', 'auto' or a mapping, got {mode!r}")
        # Invariant: _history[name] lists (epoch, value) in report order; _through is
        # the latest epoch seen (None: none yet).
        self._history: dict[str, list[tuple[int, Any]]] = {}
        self._through: int | None = None

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> None:
        cls(**params)

    # -- reading ---------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """The metrics seen so far, in first-report order."""
        return list(self._history)

    def history(self, name: str) -> list[tuple[int, Any]]:
        """Every ``(epoch, value)`` reported for ``name`` (empty if never reported)."""
        return list(self._history.get(name, ()))

    def get_latest(self, name: str, default: Any = None) -> Any:
        """The last value reported for ``name``."""
        values = self._history.get(name)
        return values[-1][1] if values else default

    def mode_of(self, name: str) -> Mode | None:
        """Whether lower or higher is better for ``name`` (None if unknown)."""
        if name in self._modes:
            return self._modes[name]
        if self._default_mode in ("min", "max"):
            return self._default_mode  # type: ignore[return-value]
        return infer_mode(name)

    def best(self, name: str) -> tuple[int, float] | None:
        """``(epoch, value)`` of the best value of ``name`` (the earliest on ties; never NaN)."""
        mode = self.mode_of(name)
        if mode is None:
            return None
        found: tuple[int, float] | None = None
        for epoch, raw in self._history.get(name, ()):
            value = as_number(raw)
            if value is not None and improves(value, found[1] if found else None, mode):
                found = (epoch, value)
        return found

    # -- hooks -----------------------------------------------------------------------------

    async def on_epoch_end(self, event: EpochEnd) -> None:
        metrics, epoch, history = event.metrics, event.epoch, self._history
        self._through = epoch
        for name in metrics if self.metrics is None else self.metrics:
            if name in metrics:
                points = history.get(name)
                if points is None:
                    points = history[name] = []
                points.append((epoch, metrics[name]))

    def run_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for name in self._history:
            found = self.best(name)
            if found is not None:
                summary[f"best_{name}"] = found[1]
                summary[f"best_{name}_epoch"] = found[0]
        return summary

    # -- state for resume ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        # The history is the run's metrics.log (made durable before a checkpoint is
        # recorded): the state only says how far, so it stays one number long.
        return {"through_epoch": self._through}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "history" in state:  # written by an earlier version: the history itself
            self._history = {
                str(name): [(int(epoch), value) for epoch, value in points]
                for name, points in (state.get("history") or {}).items()
            }
            return
        through = state.get("through_epoch")
        if isinstance(through, int) and not isinstance(through, bool):
            self._history = self._read_history(through)
            self._through = through

    def _read_history(self, through: int) -> dict[str, list[tuple[int, Any]]]:
        """The run's metric history up to ``through``, from its metrics.log.

        A resumed run reported some epochs more than once (an attempt cut off after
        its checkpoint): the last report of each epoch is the one its checkpoint's
        lineage continued from.
        """
        latest: dict[int, Mapping[str, Any]] = {}
        for record in read_lines(self.paths.metrics_file):
            epoch, metrics = record.get("epoch"), record.get("metrics")
            if isinstance(epoch, int) and epoch <= through and isinstance(metrics, Mapping):
                latest[epoch] = metrics
        history: dict[str, list[tuple[int, Any]]] = {}
        for epoch in sorted(latest):
            metrics = latest[epoch]
            for name in metrics if self.metrics is None else self.metrics:
                if name in metrics:
                    history.setdefault(str(name), []).append((epoch, metrics[name]))
        return history
