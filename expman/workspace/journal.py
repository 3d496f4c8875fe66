"""The journal: an append-only ledger of lifecycle events that resume reads.

``logs/events.jsonl`` holds one JSON line per lifecycle event (RunStarted,
CheckpointSaved, RunFinished, StopRequested, ...), each with the run's config
hash.  Lines are appended in batches and the file is fsync'd whenever a batch holds
a run boundary or a checkpoint.  Reading tolerates a torn last line, and
:class:`JournalWriter` cuts such a line off before it appends.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from expman.bus import mailbox
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
        repair_tail(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

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
class RunRecord:
    """What the journal says about one run."""

    trial: str
    repeat: int
    status: str | None = None  # last RunFinished status; None: started, never finished
    config_hash: str = ""
    attempts: int = 0
    finished: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    reason: str | None = None
    duration: float = 0.0
    epochs: int = 0
    checkpoint: str | None = None
    checkpoint_epoch: int = 0
    checkpoint_state: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class JournalState:
    """The journal folded into one record per run."""

    runs: dict[tuple[str, int], RunRecord] = field(default_factory=dict)
    trial_hashes: dict[str, str] = field(default_factory=dict)
    experiments: int = 0
    finished: bool = False
    lines: int = 0


def read_journal(path: Path) -> JournalState:
    """Fold the journal at ``path`` (missing: empty) into a :class:`JournalState`."""
    state = JournalState()
    runs = state.runs
    for entry in read_lines(path):
        state.lines += 1
        kind = entry.get("type")
        trial, repeat = entry.get("trial"), entry.get("repeat")
        if kind == "ExperimentStarted":
            state.experiments += 1
            state.finished = False
            continue
        if kind == "ExperimentFinished":
            state.finished = True
            continue
        if trial is None or repeat is None:
            continue
        key = (trial, repeat)
        record = runs.get(key)
        if record is None:
            record = runs[key] = RunRecord(trial=trial, repeat=repeat)
        if kind == "RunStarted":
            record.status = None
            record.attempts += 1
            record.config_hash = entry.get("config_hash", "")
            state.trial_hashes[trial] = record.config_hash
        elif kind == "RunFinished":
            record.status = entry.get("status")
            record.finished += 1
            record.metrics = entry.get("metrics") or {}
            record.error = entry.get("error")
            record.reason = entry.get("reason")
            record.duration = entry.get("duration", 0.0)
            record.epochs = entry.get("epochs", 0)
            if entry.get("config_hash"):
                record.config_hash = entry["config_hash"]
                state.trial_hashes[trial] = record.config_hash
        elif kind == "CheckpointSaved":
            record.checkpoint = entry.get("path")
            record.checkpoint_epoch = entry.get("epoch", 0)
            record.checkpoint_state = entry.get("state") or {}
    return state
