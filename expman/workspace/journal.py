"""The journal: an append-only ledger of lifecycle events, and its one fold.

``logs/events.jsonl`` holds one JSON line per lifecycle event (RunStarted,
CheckpointSaved, RunFinished, StopRequested, ...), each with the run's config
hash.  Lines are appended in batches and the file is fsync'd whenever a batch holds
a run boundary or a checkpoint.  Reading tolerates a torn last line, and
:class:`JournalWriter` cuts such a line off before it appends.

:func:`read_journal` folds the file into a :class:`JournalState`, the one reading of
the journal that both resume (what is done, what runs again, from which checkpoint)
and ``expman status | results`` (what each run did) use.  The fold, line by line:

* ``ExperimentStarted`` opens a session (``experiments`` counts them): the
  experiment's name, the owner's ``pid``/``host`` and ``started_at`` are the last
  session's; ``ExperimentFinished`` closes it with its ``status``.
* ``RunStarted`` begins an attempt of a run: ``attempts`` counts them, ``status``
  becomes None (unfinished) and ``config_hash``, ``seed``, ``attempt`` and
  ``session`` are this attempt's.
* ``RunFinished`` records the outcome of the run's latest attempt: ``status``,
  ``metrics``, ``error``, ``reason``, ``duration``, ``epochs``.  A run a stop reached
  before it started has a ``RunFinished`` and no ``RunStarted`` (``attempts`` 0).
* ``CheckpointSaved`` records the newest checkpoint, which later attempts keep
  until they save their own.
* Any other line about a run (``RunRetrying``, a run's ``StopRequested``) only makes
  the run known.  Lines without a trial and repeat (trial events, trial and
  experiment stops) change no run.

The fold keeps statuses as written; what one means is
:class:`~expman.status.RunStatus`'s to say (``run_status(run.status)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from expman.delivery import mailbox
from expman.events import (
    CheckpointSaved,
    Event,
    ExperimentFinished,
    ExperimentStarted,
    RunFinished,
    RunRetrying,
    RunStalled,
    RunStarted,
    StopRequested,
    TrialFinished,
    TrialStarted,
)
from expman.jsonlines import dumps_fields, read_lines, repair_tail
from expman.workspace.safepaths import open_append

#: The event types the journal records.
JOURNALED: tuple[type[Event], ...] = (
    ExperimentStarted,
    ExperimentFinished,
    TrialStarted,
    TrialFinished,
    RunStarted,
    RunFinished,
    RunRetrying,
    RunStalled,
    CheckpointSaved,
    StopRequested,
)
_DURABLE = (RunStarted, RunFinished, CheckpointSaved, ExperimentFinished, ExperimentStarted)


def encode(event: Event) -> bytes:
    """One journal line: ``dump_line(to_dict(event))``, without building the dict."""
    return dumps_fields({"type": type(event).__name__}, event) + b"\n"


class JournalWriter:
    """Batched mailbox subscriber appending lifecycle events to the journal."""

    events = JOURNALED
    delivery = mailbox(1024, batch=True)
    name = "writer.journal"

    def __init__(self, path: Path, on_error: Callable[[OSError, str], None] | None = None) -> None:
        self.path = path
        self._fd: int | None = None
        self._on_error = on_error
        self.failed: OSError | None = None

    def open(self) -> None:
        """Repair a torn tail and open for append (call before the experiment starts)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = open_append(self.path, within=self.path.parent.parent)  # never via a link
        repair_tail(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def __call__(self, events: Sequence[Event]) -> None:
        if self.failed is not None:
            return
        data = b"".join(encode(e) for e in events)
        durable = any(isinstance(e, _DURABLE) for e in events)
        try:
            await anyio.to_thread.run_sync(self._append, data, durable)
        except OSError as exc:
            self.failed = exc
            if self._on_error is not None:
                self._on_error(exc, str(self.path))
            raise

    def _append(self, data: bytes, durable: bool) -> None:
        if self._fd is None:
            self.open()
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        if durable:
            os.fsync(self._fd)


@dataclass(slots=True)
class JournaledRun:
    """One run as the journal tells it: its latest attempt and its newest checkpoint."""

    trial: str
    repeat: int
    # The latest RunFinished's status as written (``run_status()`` interprets it); None:
    # its latest attempt started and did not finish, or the run was only mentioned.
    status: str | None = None
    config_hash: str = ""
    attempts: int = 0  # RunStarted lines: how many attempts began (resume counts on)
    attempt: int = 0  # the attempt number the latest RunStarted/RunFinished wrote
    finished: int = 0  # RunFinished lines
    seed: int | None = None
    session: int = 0  # the session (1, 2, ...) of the latest RunStarted; 0: none
    started_at: float | None = None  # the latest RunStarted's time
    finished_at: float | None = None  # the latest attempt's RunFinished time
    # Of the latest RunFinished (meaningful once ``status`` is set):
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    reason: str | None = None
    duration: float = 0.0
    epochs: int = 0
    # The newest CheckpointSaved, whichever attempt saved it:
    checkpoint: str | None = None
    checkpoint_epoch: int = 0
    checkpoint_state: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class JournalState:
    """The journal folded: one :class:`JournaledRun` per run, and the last session."""

    runs: dict[tuple[str, int], JournaledRun] = field(default_factory=dict)
    trial_hashes: dict[str, str] = field(default_factory=dict)  # trial -> latest config hash
    experiments: int = 0  # ExperimentStarted lines: sessions so far
    finished: bool = False  # the last session wrote ExperimentFinished
    lines: int = 0
    # Of the last session:
    name: str | None = None  # the latest non-empty experiment name of an ExperimentStarted
    status: str | None = None  # its ExperimentFinished status; None while open
    pid: int | None = None
    host: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def session_open(self) -> bool:
        """A session started and has not written ExperimentFinished (live, or it crashed)."""
        return self.experiments > 0 and not self.finished


def read_journal(path: Path) -> JournalState:
    """Fold the journal at ``path`` (missing: empty) into a :class:`JournalState`."""
    state = JournalState()
    runs = state.runs
    for entry in read_lines(path):
        state.lines += 1
        kind = entry.get("type")
        if kind == "ExperimentStarted":
            _session_started(state, entry)
            continue
        if kind == "ExperimentFinished":
            state.finished = True
            state.status = entry.get("status")
            state.finished_at = entry.get("time")
            continue
        trial, repeat = entry.get("trial"), entry.get("repeat")
        if not isinstance(trial, str) or not isinstance(repeat, int):
            continue
        key = (trial, repeat)
        run = runs.get(key)
        if run is None:
            run = runs[key] = JournaledRun(trial=trial, repeat=repeat)
        if kind == "RunStarted":
            run.status = None
            run.attempts += 1
            run.attempt = entry.get("attempt", run.attempt + 1)
            run.config_hash = entry.get("config_hash", "")
            state.trial_hashes[trial] = run.config_hash
            run.seed = entry.get("seed")
            run.session = state.experiments
            run.started_at = entry.get("time")
            run.finished_at = None
        elif kind == "RunFinished":
            run.status = entry.get("status")
            run.finished += 1
            run.attempt = entry.get("attempt", run.attempt)
            run.metrics = entry.get("metrics") or {}
            run.error = entry.get("error")
            run.reason = entry.get("reason")
            run.duration = entry.get("duration", 0.0)
            run.epochs = entry.get("epochs", 0)
            run.finished_at = entry.get("time")
            if entry.get("config_hash"):
                run.config_hash = entry["config_hash"]
                state.trial_hashes[trial] = run.config_hash
        elif kind == "CheckpointSaved":
            run.checkpoint = entry.get("path")
            run.checkpoint_epoch = entry.get("epoch", 0)
            run.checkpoint_state = entry.get("state") or {}
    return state


def _session_started(state: JournalState, entry: dict[str, Any]) -> None:
    state.experiments += 1
    state.finished = False
    state.name = entry.get("experiment") or state.name
    state.status = None
    pid = entry.get("pid")
    state.pid = pid if isinstance(pid, int) else None
    state.host = entry.get("host") or None
    state.started_at = entry.get("time")
    state.finished_at = None
