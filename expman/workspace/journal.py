"""The journal: an append-only ledger of lifecycle events, and its one fold.

``logs/events.jsonl`` holds one JSON line per lifecycle event (RunStarted,
CheckpointStaged, RunFinished, StopRequested, ...), each with the run's config
hash.  Lines are appended in batches and the file is fsync'd whenever a batch holds
a run boundary or a checkpoint; before such a batch the writer's ``before_durable``
barrier runs (the experiment makes the runs' logs durable there first, so what the
journal says is done is on disk everywhere).  Each event is encoded on its own: one
that cannot be encoded is left out (and reported), never the batch around it.
Paths are stored relative to the experiment folder.  Reading tolerates a torn last
line, and :class:`JournalWriter` cuts such a line off before it appends; a journal
deleted or replaced while the experiment runs is a write error, not a silent loss.

:func:`read_journal` folds the file into a :class:`JournalState`, the one reading of
the journal that both resume (what is done, what runs again, from which checkpoint)
and ``expman status | results`` (what each run did) use.  Every record is checked
first: one of another experiment, with a field of the wrong type, or naming a path
outside the experiment folder is skipped, with one line in ``problems`` naming the
file and the line.  The fold, line by line:

* ``ExperimentStarted`` opens a session (``experiments`` counts them): the
  experiment's name, the owner's ``pid``/``host`` and ``started_at`` are the last
  session's; ``ExperimentFinished`` closes it with its ``status``.
* ``RunStarted`` begins an attempt of a run: ``attempts`` counts them, ``status``
  becomes None (unfinished) and ``config_hash``, ``seed``, ``attempt`` and
  ``session`` are this attempt's.  An attempt that starts from scratch forgets the
  run's earlier checkpoints.
* ``RunFinished`` records the outcome of the run's latest attempt: ``status``,
  ``metrics``, ``error``, ``reason``, ``duration``, ``epochs``.  A run a stop reached
  before it started has a ``RunFinished`` and no ``RunStarted`` (``attempts`` 0).
  Over all attempts the run adds up ``total_duration`` and ``epochs_trained``.
* ``CheckpointStaged`` records what lies, or is about to lie, at a checkpoint path
  (the newest record of each path is kept, newest path last: ``checkpoints``); its
  ``staged`` file is the name beside it that is renamed into place once the record
  is durable, so the journal needs no second line per checkpoint (``CheckpointSaved``
  is not journaled; in journals written before ``CheckpointStaged`` existed, it
  holds the checkpoint's record, and is still read).
* ``TrialSampled`` records the values an adaptive search chose for a trial
  (``sampled``: trial name -> values; resume runs the trial with them).  A trial is
  sampled once; only values a changed config cannot use (``--accept-changes``) are
  sampled again, and then the newest record stands.
* ``PruneDecision`` records a pruner's judgement of a run at a rung or step
  (``decisions``: the records in file order, NaN and infinities as floats again); a
  prune is fsync'd before it acts, a ``continue`` travels with the next durable
  batch.  Resume folds them back into the pruner and replays them.
* ``IntegrationBound`` and ``IntegrationWatermark`` record, per integration and
  run, the run's identity in the tracker and how far its export is final
  (``exports``: (integration, trial, repeat) -> :class:`ExportRecord`); a resumed
  run binds to the same external run and re-sends only what lies past the mark.
  They travel with the next durable batch; a mark that a crash lost is an older
  mark, which only means more is re-sent (and replaced) on resume.
* Any other line about a run (``RunRetrying``, a run's ``StopRequested``) only makes
  the run known.  Lines without a trial and repeat (trial events, trial and
  experiment stops) change no run.

The fold keeps statuses as written; what one means is
:class:`~expman.status.RunStatus`'s to say (``run_status(run.status)``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import anyio

from expman.delivery import mailbox
from expman.events import (
    CheckpointStaged,
    Event,
    ExperimentFinished,
    ExperimentStarted,
    IntegrationBound,
    IntegrationReport,
    IntegrationWatermark,
    PruneDecision,
    RunFinished,
    RunRetrying,
    RunStalled,
    RunStarted,
    StopRequested,
    TrialFinished,
    TrialSampled,
    TrialStarted,
)
from expman.jsonlines import dumps_fields, loads, open_plain_file, repair_tail
from expman.status import RunStatus
from expman.values import restore_line
from expman.workspace.safepaths import open_append

#: The journal writer's subscriber name (what ``EventBus.settled`` waits for).
JOURNAL = "writer.journal"

#: The event types the journal records.
JOURNALED: tuple[type[Event], ...] = (
    ExperimentStarted,
    ExperimentFinished,
    TrialStarted,
    TrialFinished,
    TrialSampled,
    RunStarted,
    RunFinished,
    RunRetrying,
    RunStalled,
    CheckpointStaged,
    StopRequested,
    PruneDecision,
    IntegrationBound,
    IntegrationWatermark,
    IntegrationReport,
)
_DURABLE = (
    RunStarted,
    RunFinished,
    CheckpointStaged,
    TrialSampled,
    ExperimentFinished,
    ExperimentStarted,
)


def _is_durable(event: Event) -> bool:
    """Whether a batch holding ``event`` is fsync'd: run boundaries, checkpoints, prunes."""
    if isinstance(event, PruneDecision):
        return event.action == "prune"
    return isinstance(event, _DURABLE)


def encode(event: Event) -> bytes:
    """One journal line: ``dump_line(to_dict(event))``, without building the dict."""
    return dumps_fields({"type": type(event).__name__}, event) + b"\n"


@overload
def _relative(path: str, root: Path) -> str: ...
@overload
def _relative(path: str | None, root: Path) -> str | None: ...
def _relative(path: str | None, root: Path) -> str | None:
    """``path`` as the journal stores it: relative to the experiment folder when inside."""
    if not path:
        return path
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path  # not ours: read back, such a path is refused


class JournalWriter:
    """Batched mailbox subscriber appending lifecycle events to the journal.

    ``before_durable(events)`` is awaited before a batch that will be fsync'd is
    written; ``on_error(exc, path)`` hears of a write that failed, or of an event
    left out because it could not be encoded (``exc`` a ``TypeError``/``ValueError``).
    """

    events = JOURNALED
    delivery = mailbox(1024, batch=True)
    name = JOURNAL

    def __init__(
        self,
        path: Path,
        on_error: Callable[[OSError, str], None] | None = None,
        *,
        before_durable: Callable[[Sequence[Event]], Awaitable[None]] | None = None,
        on_unencodable: Callable[[Event, Exception], None] | None = None,
    ) -> None:
        self.path = path
        #: The experiment folder: the paths the journal stores are relative to it.
        self.root = path.parent.parent
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._on_error = on_error
        self._before_durable = before_durable
        self._on_unencodable = on_unencodable
        self.failed: OSError | None = None

    def open(self) -> None:
        """Repair a torn tail and open for append (call before the experiment starts)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = open_append(self.path, within=self.path.parent.parent)  # never via a link
        repair_tail(self._fd)
        st = os.fstat(self._fd)
        self._inode = (st.st_dev, st.st_ino)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def __call__(self, events: Sequence[Event]) -> None:
        if self.failed is not None:
            return
        data = self._encode_batch(events)
        durable = any(_is_durable(e) for e in events)
        try:
            if durable and self._before_durable is not None:
                await self._before_durable(events)
            await anyio.to_thread.run_sync(self._append, data, durable)
        except OSError as exc:
            self.failed = exc
            if self._on_error is not None:
                self._on_error(exc, str(self.path))
            raise

    def _encode_batch(self, events: Sequence[Event]) -> bytes:
        """The batch's lines; an event that cannot be encoded costs only its own line."""
        lines = []
        root = self.root
        for event in events:
            if isinstance(event, CheckpointStaged):
                # The staged file lies beside its checkpoint: its name says where.
                staged = Path(event.staged)
                name = staged.name if staged.parent == Path(event.path).parent else event.staged
                event = dataclasses.replace(event, path=_relative(event.path, root), staged=name)
            elif isinstance(event, RunStarted) and event.checkpoint:
                event = dataclasses.replace(event, checkpoint=_relative(event.checkpoint, root))
            try:
                lines.append(encode(event))
            except Exception as exc:  # dumps never raises; a field's own property might
                if self._on_unencodable is not None:
                    self._on_unencodable(event, exc)
                else:
                    import structlog  # rare: not worth its import for every reader of journals

                    structlog.get_logger("expman.journal").error(
                        "journal_event_unencodable", type=type(event).__name__, error=str(exc)
                    )
        return b"".join(lines)

    def _append(self, data: bytes, durable: bool) -> None:
        if self._fd is None:
            self.open()
        assert self._fd is not None
        self._check_still_there()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        if durable:
            os.fsync(self._fd)

    def _check_still_there(self) -> None:
        """The open journal must still be the file at its path: never write into the void."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != self._inode or os.fstat(self._fd).st_nlink == 0:  # type: ignore[arg-type]
            raise FileNotFoundError(
                2, "the journal was deleted or replaced while the experiment ran", str(self.path)
            )


@dataclass(frozen=True, slots=True)
class JournaledCheckpoint:
    """What the journal says lies at one checkpoint path (or will, once ``staged`` is renamed)."""

    where: str  # its path, absolute, inside the experiment folder
    epoch: int  # the last epoch its state includes
    state: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    staged_at: str | None = None  # the temporary name it was written under

    @property
    def path(self) -> Path:
        return Path(self.where)

    @property
    def staged(self) -> Path | None:
        """The temporary file it was written to, renamed into place once recorded."""
        return Path(self.staged_at) if self.staged_at else None


@dataclass(slots=True)
class JournaledRun:
    """One run as the journal tells it: its latest attempt, its checkpoints, its history."""

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
    #: The recorded checkpoints of the run's current lineage, newest record last.
    checkpoints: dict[str, JournaledCheckpoint] = field(default_factory=dict)
    # Its whole history (every attempt, in every session):
    closed_duration: float = 0.0  # of the attempts that ended or were superseded
    closed_epochs: int = 0
    start_epoch: int = 0  # the latest attempt's
    last_time: float | None = None  # the time of the run's latest record

    @property
    def newest_checkpoint(self) -> JournaledCheckpoint | None:
        return next(reversed(self.checkpoints.values()), None)

    @property
    def checkpoint(self) -> str | None:
        newest = self.newest_checkpoint
        return str(newest.path) if newest is not None else None

    @property
    def open_attempt(self) -> bool:
        """Its latest attempt started and wrote no RunFinished (running, or cut off)."""
        return self.status is None and self.started_at is not None

    @property
    def total_duration(self) -> float:
        """Seconds spent in all its attempts (an unfinished one: up to its last record)."""
        if self.open_attempt and self.last_time is not None and self.started_at is not None:
            return self.closed_duration + max(0.0, self.last_time - self.started_at)
        return self.closed_duration

    @property
    def epochs_trained(self) -> int:
        """Epochs trained over all attempts (an unfinished one: up to its last checkpoint)."""
        return self.closed_epochs + (self._open_epochs() if self.open_attempt else 0)

    def _open_epochs(self) -> int:
        newest = self.newest_checkpoint
        return max(0, newest.epoch + 1 - self.start_epoch) if newest is not None else 0

    def _close_attempt(self) -> None:
        """An attempt that never wrote its RunFinished is superseded: count what it did."""
        if self.open_attempt:
            self.closed_duration = self.total_duration
            self.closed_epochs += self._open_epochs()


@dataclass(slots=True)
class ExportRecord:
    """One run's export to one integration, as the journal tells it."""

    external: str = ""  # the run's id in the tracker ("" until it was bound)
    location: str = ""
    watermark: int = -1  # every epoch up to this one is final in the tracker
    sent: int = 0
    lost: int = 0
    ended: bool = False  # the tracker was told the run ended


@dataclass(slots=True)
class JournalState:
    """The journal folded: one :class:`JournaledRun` per run, and the last session."""

    runs: dict[tuple[str, int], JournaledRun] = field(default_factory=dict)
    trial_hashes: dict[str, str] = field(default_factory=dict)  # trial -> latest config hash
    #: The values an adaptive search sampled for each trial (its newest TrialSampled).
    sampled: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The pruners' decisions (PruneDecision records as written, floats restored), in order.
    decisions: list[dict[str, Any]] = field(default_factory=list)
    #: Each run's export to each integration: (integration, trial, repeat) -> record.
    exports: dict[tuple[str, str, int], ExportRecord] = field(default_factory=dict)
    experiments: int = 0  # ExperimentStarted lines: sessions so far
    finished: bool = False  # the last session wrote ExperimentFinished
    lines: int = 0
    # Of the last session:
    name: str | None = None  # the experiment's name (its first ExperimentStarted's)
    status: str | None = None  # its ExperimentFinished status; None while open
    pid: int | None = None
    host: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    #: One line per record skipped: "<file>, line N: <why>".
    problems: list[str] = field(default_factory=list)
    #: Where the experiment folder was in earlier sessions (ExperimentStarted paths).
    roots: list[str] = field(default_factory=list)
    #: The experiment folder the journal was read from (its paths are inside it).
    root: Path | None = None

    @property
    def session_open(self) -> bool:
        """A session started and has not written ExperimentFinished (live, or it crashed)."""
        return self.experiments > 0 and not self.finished


#: Most problems listed one by one; the rest are counted.
MAX_PROBLEMS = 20

_INT = (int,)
_NUM = (int, float)
_STR = (str,)
_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))
_OPT_NUM = (int, float, type(None))
_DICT = (dict,)
#: A float that may be written as the text NaN, Infinity or -Infinity.
_OPT_NUM_TEXT = (int, float, str, type(None))
_FLOAT_TEXT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
#: The fields the fold reads, by record type: each must be one of these types if present.
_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "ExperimentStarted": {"experiment": _STR, "path": _STR, "pid": _OPT_INT, "host": _OPT_STR},
    "ExperimentFinished": {"status": _OPT_STR},
    "RunStarted": {
        "attempt": _INT,
        "config_hash": _STR,
        "seed": _OPT_INT,
        "start_epoch": _INT,
        "checkpoint": _OPT_STR,
    },
    "RunFinished": {
        "status": _STR,
        "metrics": (dict, type(None)),
        "error": _OPT_STR,
        "reason": _OPT_STR,
        "duration": _NUM,
        "epochs": _INT,
        "attempt": _INT,
        "config_hash": _OPT_STR,
    },
    "CheckpointStaged": {
        "path": _STR,
        "staged": _STR,
        "epoch": _INT,
        "state": _DICT,
        "metrics": _DICT,
    },
    "CheckpointSaved": {"path": _STR, "epoch": _INT, "state": _DICT},
    "TrialSampled": {"number": _INT, "values": _DICT, "study": _STR},
    "PruneDecision": {
        "rule": _STR,
        "epoch": _INT,
        "epochs": _INT,
        "rung": _OPT_INT,
        "reported": _OPT_NUM_TEXT,
        "value": _OPT_NUM_TEXT,
        "cutoff": _OPT_NUM_TEXT,
        "compared": _INT,
        "action": _STR,
        "reason": _STR,
        "metric": _STR,
    },
    "IntegrationBound": {"integration": _STR, "external": _STR, "location": _STR},
    "IntegrationWatermark": {"integration": _STR, "epoch": _INT, "sent": _INT, "lost": _INT},
}
_COMMON: dict[str, tuple[type, ...]] = {
    "experiment": _STR,
    "trial": _OPT_STR,
    "repeat": _OPT_INT,
    "time": _OPT_NUM,
}
_REQUIRED = {
    "RunStarted": ("trial", "repeat"),
    "RunFinished": ("trial", "repeat", "status"),
    "CheckpointStaged": ("trial", "repeat", "path", "staged", "epoch"),
    "CheckpointSaved": ("trial", "repeat", "path", "epoch"),
    "TrialSampled": ("trial", "number", "values"),
    "PruneDecision": ("trial", "repeat", "rule", "epoch", "epochs", "action"),
    "IntegrationBound": ("trial", "repeat", "integration", "external"),
    "IntegrationWatermark": ("trial", "repeat", "integration", "epoch"),
}
_STATUSES = frozenset(s.value for s in RunStatus)
#: Per record type, the (field, types) pairs to check: the common ones, then its own.
_CHECKS: dict[str, tuple[tuple[str, tuple[type, ...]], ...]] = {}


class _Skip(Exception):
    """A record that does not fit: skipped, with this message."""


def _numbered(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value or the exception) of every complete line."""
    f = open_plain_file(path)
    if f is None:
        return  # no journal yet: an empty one
    with f:
        for number, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                return  # a torn last line (a crash mid-write): not a record yet
            try:
                value = loads(raw)
            except ValueError as exc:
                yield number, exc
                continue
            if isinstance(value, dict) and (b'NaN"' in raw or b'Infinity"' in raw):
                restore_line(value)  # the non-finite floats dumps wrote as text
            yield number, value


def _check(entry: Any, kind: Any) -> None:
    if not isinstance(entry, dict):
        raise _Skip(f"expected a JSON object, got {type(entry).__name__}")
    if not isinstance(kind, str):
        raise _Skip("no record type ('type')")
    for name in _REQUIRED.get(kind, ()):
        if entry.get(name) is None:
            raise _Skip(f"{kind} record without {name!r}")
    checks = _CHECKS.get(kind)
    if checks is None:
        checks = _CHECKS[kind] = (*_COMMON.items(), *_FIELDS.get(kind, {}).items())
    for name, types in checks:
        if name in entry:
            value = entry[name]
            if type(value) is bool or not isinstance(value, types):
                expected = " or ".join(_type_name(t) for t in types)
                raise _Skip(f"{kind} record: {name!r} must be {expected}, got {value!r:.60}")
    if kind == "RunFinished" and entry["status"] not in _STATUSES:
        raise _Skip(f"RunFinished record: unknown status {entry['status']!r:.40}")
    for name in ("repeat", "number"):
        value = entry.get(name)
        if isinstance(value, int) and value < 0:
            raise _Skip(f"{kind} record: {name!r} must be >= 0, got {value}")


def _type_name(t: type) -> str:
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        dict: "an object",
        type(None): "null",
    }.get(t, t.__name__)


class _Paths:
    """Journal paths read back inside the experiment folder, or refused."""

    def __init__(self, root: Path, state: JournalState) -> None:
        self.root = root
        self._root = str(root).rstrip("/") + "/"
        self.state = state

    def resolve(self, text: str) -> str:
        """``text`` (relative to the experiment folder) as an absolute path inside it."""
        relative = self._rebased(text) if text.startswith("/") else text
        parts = relative.split("/")
        if relative.startswith("/") or ".." in parts or not relative.strip("/."):
            raise _Skip(f"path {text!r:.80} is outside the experiment folder {self.root}")
        if "" in parts or "." in parts:
            relative = "/".join([p for p in parts if p not in ("", ".")])
        return self._root + relative

    def _rebased(self, text: str) -> str:
        # An absolute path of an earlier journal: inside this folder, or inside where
        # this experiment folder was then (a copied or moved workspace: its own files).
        for old in (self._root, *(r.rstrip("/") + "/" for r in reversed(self.state.roots))):
            if text.startswith(old):
                return text[len(old) :]
        return text


def read_journal(path: Path, *, experiment: str | None = None) -> JournalState:
    """Fold the journal at ``path`` (missing: empty) into a :class:`JournalState`.

    ``experiment`` is the name it must belong to (default: that of its first
    ``ExperimentStarted``); records of any other experiment are skipped.
    """
    state = JournalState(root=path.parent.parent)
    runs = state.runs
    paths = _Paths(path.parent.parent, state)
    skipped = 0
    for number, entry in _numbered(path):
        state.lines += 1
        try:
            if isinstance(entry, Exception):
                raise _Skip(f"not JSON ({entry})")
            kind = entry.get("type") if isinstance(entry, dict) else None
            _check(entry, kind)
            assert isinstance(kind, str)
            owner = entry.get("experiment")
            if kind == "ExperimentStarted" and experiment is None and state.experiments == 0:
                experiment = owner
            if experiment is not None and owner is not None and owner != experiment:
                raise _Skip(f"a record of another experiment ({owner!r:.60}, not {experiment!r})")
            _fold(state, runs, paths, kind, entry)
        except _Skip as why:
            skipped += 1
            if skipped <= MAX_PROBLEMS:
                state.problems.append(f"{path}, line {number}: {why}; skipped")
    if skipped > MAX_PROBLEMS:
        state.problems.append(f"{path}: {skipped - MAX_PROBLEMS} more records skipped")
    return state


def _fold(
    state: JournalState,
    runs: dict[tuple[str, int], JournaledRun],
    paths: _Paths,
    kind: str,
    entry: dict[str, Any],
) -> None:
    if kind == "ExperimentStarted":
        _session_started(state, entry)
        return
    if kind == "ExperimentFinished":
        state.finished = True
        state.status = entry.get("status")
        state.finished_at = entry.get("time")
        return
    trial, repeat = entry.get("trial"), entry.get("repeat")
    if kind == "TrialSampled":
        if isinstance(trial, str):
            state.sampled[trial] = entry["values"]
        return
    if not isinstance(trial, str) or not isinstance(repeat, int):
        return
    if kind == "PruneDecision":
        _decision(state, entry)
        return
    if kind in ("IntegrationBound", "IntegrationWatermark"):
        record = state.exports.setdefault((entry["integration"], trial, repeat), ExportRecord())
        if kind == "IntegrationBound":
            record.external, record.location = entry["external"], entry.get("location", "")
        else:
            record.watermark = entry["epoch"]
            record.sent, record.lost = entry.get("sent", 0), entry.get("lost", 0)
            record.ended = entry.get("ended") is True
        return
    key = (trial, repeat)
    checkpoint = None
    if kind in ("CheckpointStaged", "CheckpointSaved"):
        # Resolved before the run is touched: a record naming an outside path changes nothing.
        target = paths.resolve(entry["path"])
        staged = entry.get("staged")
        if staged and "/" not in staged and staged not in (".", ".."):
            staged_at: str | None = target.rsplit("/", 1)[0] + "/" + staged  # beside it
        else:
            staged_at = paths.resolve(staged) if staged else None
        checkpoint = JournaledCheckpoint(
            where=target,
            epoch=entry["epoch"],
            state=entry.get("state") or {},
            metrics=entry.get("metrics") or {},
            staged_at=staged_at,
        )
    elif kind == "RunStarted" and entry.get("checkpoint"):
        paths.resolve(entry["checkpoint"])
    run = runs.get(key)
    if run is None:
        run = runs[key] = JournaledRun(trial=trial, repeat=repeat)
    if isinstance(entry.get("time"), (int, float)):
        run.last_time = entry["time"]
    if kind == "RunStarted":
        run._close_attempt()
        run.status = None
        run.attempts += 1
        run.attempt = entry.get("attempt", run.attempt + 1)
        run.config_hash = entry.get("config_hash", "")
        state.trial_hashes[trial] = run.config_hash
        run.seed = entry.get("seed")
        run.session = state.experiments
        run.started_at = entry.get("time")
        run.finished_at = None
        run.start_epoch = entry.get("start_epoch", 0)
        if not entry.get("checkpoint") and run.start_epoch == 0:
            run.checkpoints.clear()  # a fresh start: earlier checkpoints are not its past
    elif kind == "RunFinished":
        run.status = entry["status"]
        run.finished += 1
        run.attempt = entry.get("attempt", run.attempt)
        run.metrics = entry.get("metrics") or {}
        run.error = entry.get("error")
        run.reason = entry.get("reason")
        run.duration = entry.get("duration", 0.0)
        run.epochs = entry.get("epochs", 0)
        run.finished_at = entry.get("time")
        run.closed_duration += run.duration
        if run.started_at is not None:
            run.closed_epochs += max(0, run.epochs - run.start_epoch)
        run.started_at = None
        if entry.get("config_hash"):
            run.config_hash = entry["config_hash"]
            state.trial_hashes[trial] = run.config_hash
    elif checkpoint is not None:
        name = checkpoint.where
        run.checkpoints.pop(name, None)  # re-inserted: the newest record goes last
        run.checkpoints[name] = checkpoint


def _decision(state: JournalState, entry: dict[str, Any]) -> None:
    if entry["action"] not in ("continue", "prune"):
        raise _Skip(f"PruneDecision action {entry['action']!r} is neither continue nor prune")
    for name in ("reported", "value", "cutoff"):
        value = entry.get(name)
        if isinstance(value, str):
            if value not in _FLOAT_TEXT:
                raise _Skip(f"PruneDecision {name} {value!r} is not a number")
            entry[name] = _FLOAT_TEXT[value]
    entry.pop("type", None)
    state.decisions.append(entry)


def _session_started(state: JournalState, entry: dict[str, Any]) -> None:
    state.experiments += 1
    state.finished = False
    state.name = state.name or entry.get("experiment") or None
    state.status = None
    pid = entry.get("pid")
    state.pid = pid if isinstance(pid, int) else None
    state.host = entry.get("host") or None
    state.started_at = entry.get("time")
    state.finished_at = None
    if entry.get("path"):
        state.roots.append(entry["path"])
