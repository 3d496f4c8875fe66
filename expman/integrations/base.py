"""What a tracker backend implements: :class:`Exporter`, fed one run's epochs at a time.

A backend is plain, blocking code (the tracker's own client): every method runs in
its integration's one worker thread, in order, so it needs no locks and never holds
up a run.  :class:`~expman.integrations.driver.Integration` does the rest: the
mailbox, batching, retries with back-off, the journal's identity and watermark
records, the catch-up after a crash and the counts of what was lost.

The exactly-once contract, from the backend's side:

``open(run, external=..., rewind=r)``
    Bind the run (create it, or find the one the journal or the tracker already
    has: ``external`` is the journal's id, ``None`` when it has none) and return
    its :class:`Binding`.  Every epoch ``>= r`` that reached the tracker before is
    an orphan (a crashed attempt's, a resend's) and must be replaced by what comes
    next, while epochs ``< r`` stand (``r`` is 0 for a run the journal never saw
    exported: whatever the tracker holds of it is replaced).  The driver then
    writes the epochs from ``r`` on, each once, in order.
``write(run, points)``
    Send epochs (ascending; a batch may span many).  Raise to have it retried
    (with back-off, the same points); raise :class:`Refused` for points the
    tracker will never take (counted lost, never retried).
``flush(run)``
    Make what was written final (an fsync, a server round trip): the driver then
    journals the run's watermark.
``finish(run, status, reason)``
    The run ended (its last attempt in this session).
``close()``
    The session ends; release clients and files.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expman.config import IntegrationSpec, RunSpec
from expman.status import RunStatus


class Refused(Exception):
    """The tracker will never take these points (a bad request): counted lost, not retried."""


@dataclass(frozen=True, slots=True)
class ExportContext:
    """What every backend of an experiment knows about it."""

    experiment: str
    experiment_id: str
    desc: str
    #: The workspace folder (relative tracker paths are relative to it).
    workspace: Path
    #: The experiment's folder inside it.
    root: Path


@dataclass(frozen=True, slots=True)
class ExportRun:
    """One run, as backends see it."""

    trial: str
    repeat: int
    trial_id: str
    seed: int
    config_hash: str
    settings: Mapping[str, Any]
    #: The trial's swept values ({dotted key: value}; empty for a written trial).
    swept: Mapping[str, Any]
    repeats: int
    #: The run's folder (``trials/<trial>/run_<k>``).
    folder: Path
    attempt: int = 1

    @property
    def key(self) -> tuple[str, int]:
        return (self.trial, self.repeat)

    @property
    def label(self) -> str:
        return f"{self.trial}/run_{self.repeat}"

    @classmethod
    def of(cls, spec: RunSpec, folder: Path, attempt: int = 1) -> ExportRun:
        return cls(
            trial=spec.trial.name,
            repeat=spec.repeat,
            trial_id=spec.trial.id,
            seed=spec.seed,
            config_hash=spec.config_hash,
            settings=spec.settings,
            swept=spec.trial.swept,
            repeats=spec.trial.repeat,
            folder=folder,
            attempt=attempt,
        )


@dataclass(frozen=True, slots=True)
class Point:
    """One epoch of one run: its wall-clock time and its scalar metrics."""

    epoch: int
    time: float
    metrics: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Binding:
    """A run's identity in a tracker: what the journal records (``IntegrationBound``)."""

    external: str
    location: str = ""


class Exporter(abc.ABC):
    """A tracker backend (see the module's contract); built once per session."""

    #: Points are sent only once a checkpoint or the run's end makes them final
    #: (MLflow's ``export: checkpointed``): nothing a crash orphans ever reaches it.
    holds_until_final: bool = False

    def __init__(self, spec: IntegrationSpec, context: ExportContext) -> None:
        self.spec = spec
        self.context = context

    @abc.abstractmethod
    def open(self, run: ExportRun, *, external: str | None, rewind: int) -> Binding: ...

    @abc.abstractmethod
    def write(self, run: ExportRun, points: Sequence[Point]) -> None: ...

    def flush(self, run: ExportRun) -> None:  # noqa: B027 - optional
        """Make what was written final (default: nothing to do)."""

    def finish(self, run: ExportRun, status: RunStatus, reason: str | None) -> None:  # noqa: B027
        """The run ended (default: nothing to do)."""

    def close(self) -> None:  # noqa: B027 - optional
        """The session ends (default: nothing to release)."""


def scalar(value: Any) -> float | None:
    """A metric as a float a tracker takes, or None (a string, a list, a mapping).

    Ints, floats, bools, NumPy scalars and 0-d tensors (anything with ``item()``)
    are scalars; NaN and the infinities stay what they are.
    """
    if type(value) is float:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    item = getattr(value, "item", None)
    if item is not None:
        try:
            got = item()
        except (TypeError, ValueError, RuntimeError):
            return None
        if isinstance(got, (int, float)):
            return float(got)
    return None


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar metrics of an epoch, by name (see :func:`scalar`)."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        got = scalar(value)
        if got is not None:
            out[str(name)] = got
    return out
