"""Typed events: the facts and requests that flow over the bus.

Every event is a small frozen, slotted, keyword-only dataclass on :class:`Event`,
which carries the identity of what it is about (experiment, trial, repeat; the
latter two are ``None`` above run scope), a process-wide sequence number and a
wall-clock timestamp.  Every event round-trips through JSON with
:func:`to_dict`/:func:`from_dict` (a ``type`` tag plus the fields); that is what the
journal stores and what worker processes send back.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from expman.status import RunStatus

StopScope = Literal["run", "trial", "experiment"]

_sequence = itertools.count(1)
_EVENT_TYPES: dict[str, type[Event]] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event: who it is about, its order and its time."""

    experiment: str
    trial: str | None = None
    repeat: int | None = None
    seq: int = field(default_factory=lambda: next(_sequence))
    time: float = field(default_factory=time.time)

    @property
    def run_key(self) -> tuple[str, int] | None:
        """``(trial, repeat)`` for run-scoped events, else ``None``."""
        if self.trial is None or self.repeat is None:
            return None
        return (self.trial, self.repeat)


# -- experiment scope --------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentStarted(Event):
    """An experiment began; ``runs`` is how many runs its plan holds.

    ``pid`` and ``host`` name the process that runs it, so that a reader of the
    journal can tell a running experiment from a crashed one.
    """

    path: str
    runs: int
    trials: int
    resumed: bool = False
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentFinished(Event):
    """An experiment ended; ``counts`` maps each run status to how many runs had it."""

    status: str
    duration: float
    counts: Mapping[str, int] = field(default_factory=dict)


# -- trial scope --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialStarted(Event):
    """The first run of a trial started."""

    trial_id: str
    repeats: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialFinished(Event):
    """The last run of a trial finished."""

    trial_id: str
    counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialSampled(Event):
    """An adaptive search chose the values of a trial, before any of its runs started.

    ``number`` is the trial's place in its ``study`` (0, 1, ...); ``values`` maps
    each dotted key of the search space to the value sampled for it.  Journaled
    (durably, before the trial's first ``RunStarted``): a resumed experiment runs
    the trial with these values and never samples it again.
    """

    number: int
    values: Mapping[str, Any] = field(default_factory=dict)
    study: str = ""


# -- run scope ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Event):
    """A run holds its capacity token and is about to call the pipeline."""

    seed: int
    config_hash: str
    attempt: int = 1
    start_epoch: int = 0
    checkpoint: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EpochEnd(Event):
    """The pipeline reported the end of an epoch with its metrics."""

    epoch: int
    metrics: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def now(
        cls, experiment: str, trial: str, repeat: int, epoch: int, metrics: Mapping[str, Any]
    ) -> EpochEnd:
        """``EpochEnd(...)`` numbered and stamped now, built in half the time.

        Every reported epoch builds one; a frozen dataclass's ``__init__`` sets each
        field through ``object.__setattr__``, this sets the slots directly.  The
        result is equal to the one the constructor gives (a test pins it).
        """
        if cls is not EpochEnd:
            return cls(
                experiment=experiment, trial=trial, repeat=repeat, epoch=epoch, metrics=metrics
            )
        event = object.__new__(cls)
        put = _EPOCH_SLOTS
        put[0](event, experiment)
        put[1](event, trial)
        put[2](event, repeat)
        put[3](event, next(_sequence))
        put[4](event, time.time())
        put[5](event, epoch)
        put[6](event, metrics)
        return event


def _slot_setter(cls: type, name: str) -> Any:
    owner = next(c for c in cls.__mro__ if name in vars(c))
    return vars(owner)[name].__set__


#: EpochEnd's slot setters, in EpochEnd.now's order (the dataclass fields' order).
_EPOCH_SLOTS = tuple(
    _slot_setter(EpochEnd, name)
    for name in ("experiment", "trial", "repeat", "seq", "time", "epoch", "metrics")
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointDue(Event):
    """A request that the run save a checkpoint to ``path``.

    A relative ``path`` is relative to the run's ``artifacts`` folder.
    """

    path: str
    epoch: int
    reason: str = "interval"


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointStaged(Event):
    """A complete checkpoint lies at the temporary name ``staged``, about to become ``path``.

    The journal records it (durably) before the rename: whatever moment a crash
    comes, the journal describes the file at ``path``, and resume finishes a rename
    that was cut off.  ``epoch`` is the last epoch the saved state includes;
    ``metrics`` the run's last reported metrics then; ``state`` the callbacks'
    ``state_dict``s.
    """

    path: str
    staged: str
    epoch: int
    reason: str = "interval"
    state: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointSaved(Event):
    """The pipeline saved a complete checkpoint at ``path``.

    ``state`` holds the callbacks' ``state_dict`` at that epoch, so that resuming
    from this checkpoint restores them too; ``metrics`` the run's last reported
    metrics then.  Published once the journal durably names the file (its
    ``CheckpointStaged``), so a callback may delete older checkpoints on it.
    """

    path: str
    epoch: int
    reason: str = "interval"
    state: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class StopRequested(Event):
    """A request to stop a run, all repeats of a trial, or the whole experiment.

    ``trial``/``repeat`` select what stops for scopes ``run`` and ``trial``.
    ``source`` names who asked (a callback's name, ``"signal"``, ``"user"``).
    ``pruned``: a pruner's decision (scope run or trial); the runs it reaches end
    ``pruned``, not ``stopped``.
    """

    scope: StopScope = "run"
    reason: str = ""
    source: str = ""
    pruned: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneDecision(Event):
    """A pruner judged a run at a rung (or step): continue, or prune its trial (or run).

    ``trial``/``repeat`` name the run whose ``EpochEnd`` was judged: the one with
    ``epoch == epochs - 1``.  ``reported`` is that run's value of ``metric``; ``value``
    the competitor's (the mean over the trial's repeats that reached the rung, with
    ``unit: trial``); ``cutoff`` what it was compared with (None: nothing to compare
    yet), over ``compared`` competitors.  ``action`` is ``continue`` or ``prune``;
    ``reason`` the sentence a prune gives.  Journaled, a prune durably before it acts;
    resume folds these records back into the pruner and replays them unchanged.
    """

    rule: str
    epoch: int
    epochs: int
    rung: int | None = None
    reported: float | None = None
    value: float | None = None
    cutoff: float | None = None
    compared: int = 0
    action: Literal["continue", "prune"] = "continue"
    reason: str = ""
    unit: Literal["trial", "run"] = "trial"
    metric: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEnding(Event):
    """The pipeline's ``run`` returned; its hooks still answer until ``RunFinished``.

    Published only when ``run`` returned (not when it raised or was cancelled), so a
    callback can still ask for a last checkpoint (``CheckpointDue``, reason ``final``).
    ``epoch`` is the last reported epoch (None if none was reported); ``stop_reason``
    says why the run stopped early, if it did.
    """

    epoch: int | None = None
    stop_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Event):
    """A run ended, successfully or not: a failed run is a result, not a crash."""

    status: RunStatus
    duration: float
    metrics: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    reason: str | None = None
    attempt: int = 1
    epochs: int = 0
    config_hash: str = ""

    def __post_init__(self) -> None:
        # Rebuilt from JSON (the journal, a worker) the status is a plain string.
        if type(self.status) is not RunStatus:
            object.__setattr__(self, "status", RunStatus(self.status))


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStalled(Event):
    """A run reported no epoch for longer than its stall timeout."""

    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRetrying(Event):
    """A failed run will be attempted again."""

    attempt: int
    error: str


# -- integrations (trackers fed from the bus: TensorBoard, MLflow, W&B, CSV) -----------


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrationBound(Event):
    """An integration exported a run for the first time: the run's identity over there.

    ``external`` is what the tracker calls the run (an MLflow or W&B run id, a
    TensorBoard folder); a resumed run binds to the same one (journaled).
    """

    integration: str
    external: str
    location: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrationWatermark(Event):
    """Every epoch of the run up to ``epoch`` is in the tracker, for good (journaled).

    Published at the run's checkpoints and at its end (``ended``), once the tracker
    confirmed them; ``sent`` and ``lost`` count the run's values so far.
    """

    integration: str
    epoch: int
    sent: int = 0
    lost: int = 0
    #: Published after the tracker was told the run ended.
    ended: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrationLagging(Event):
    """An integration fell behind: ``pending`` values wait (the oldest ``behind`` s)."""

    integration: str
    pending: int
    behind: float = 0.0
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrationCaughtUp(Event):
    """An integration that was lagging has sent everything it was given."""

    integration: str
    lagged: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrationReport(Event):
    """An integration's totals at the end of a session (journaled).

    ``sent``: values the tracker confirmed; ``lost``: values given up on (the
    tracker refused them, or was still down when the flush deadline passed), with
    ``runs`` the runs that lost some and ``error`` the last failure.
    """

    integration: str
    sent: int = 0
    lost: int = 0
    retries: int = 0
    runs: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogRecord(Event):
    """A log line emitted inside a run, forwarded from a worker process."""

    line: str


def event_types() -> Mapping[str, type[Event]]:
    """Every event class defined so far, by name (user subclasses included)."""
    found: dict[str, type[Event]] = {}
    stack: list[type[Event]] = [Event]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            # dataclass(slots=True) replaces the class it decorates; keep the final one.
            if "__slots__" in sub.__dict__ or sub.__name__ not in found:
                found[sub.__name__] = sub
            stack.append(sub)
    _EVENT_TYPES.clear()
    _EVENT_TYPES.update(found)
    return found


_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {}
#: Field values that need no conversion (checked before the slower Mapping test).
_PLAIN = frozenset({str, int, float, bool, type(None)})


def _field_names(cls: type[Event]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def to_dict(event: Event) -> dict[str, Any]:
    """The JSON-ready form of an event: ``{"type": name, **fields}``."""
    cls = type(event)
    data: dict[str, Any] = {"type": cls.__name__}
    for name in _field_names(cls):
        value = getattr(event, name)
        if type(value) not in _PLAIN and isinstance(value, Mapping):
            value = dict(value)
        data[name] = value
    return data


def from_dict(data: Mapping[str, Any]) -> Event:
    """Rebuild an event from :func:`to_dict`'s output."""
    fields = dict(data)
    name = fields.pop("type", None)
    cls = _EVENT_TYPES.get(str(name)) or event_types().get(str(name))
    if cls is None:
        raise ValueError(f"unknown event type {name!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in fields.items() if k in known}
    for key, value in kwargs.items():  # JSON has lists only; a tuple field gets its tuple back
        if isinstance(value, list) and str(known[key].type).startswith("tuple"):
            kwargs[key] = tuple(value)
    return cls(**kwargs)
