"""TensorBoard: scalars (and hparams) per run, in ``<experiment>/tensorboard/<trial>/run_<k>/``.

``dir:`` (default ``tensorboard``) is relative to the experiment's folder, or
absolute.  Each epoch is one event: tag = metric name, step = epoch, wall time =
the epoch's time, the values as float32 (what TensorBoard stores).  With
``hparams:`` (default true) the run's first file also carries the hparams
plugin's session start (the trial's flattened settings, grouped by trial), and a
run that ended for good its session end, so the HPARAMS tab lists every run.

**Rewind.**  Every :meth:`open` starts a new event file, named to sort after the
run's other files (TensorBoard reads them in name order: the timestamp in the
name is bumped past theirs when needed).  Each file begins with the file version
and a ``SessionLog.START``, at step 0 in a run's first file and at the rewind
epoch in a later one: TensorBoard's reader takes a run's first START as its start
and each later one as a restart, dropping every value of the run at steps >= it
read from the earlier files (its ``purge_orphaned_data``, what tensorboardX's
``purge_step`` writes), and the re-sent epochs take their place.  That covers a
TensorBoard already running; the Rust data server (TensorBoard's default loader)
ignores START records, so the earlier files are also cut short at their first
record at or past the rewind (removed when nothing is left; a torn tail goes
too): a reader started afterwards, of either kind, finds no orphan at all.

**Files.**  The event files are written by :mod:`expman.integrations.tfevents`,
not by tensorboardX's writer (one thread per writer, ~12,000 values/s): each
``write`` appends one buffer; the files of the :data:`OPEN_FILES` runs written to
last stay open (a run's is closed when it ends), so a thousand runs never hold a
thousand descriptors; ``flush`` fsyncs the file (and the folders of what was
created or cut) before the driver journals the watermark.  The hparams records
are hand-encoded too: importing tensorboardX would import PyTorch (seconds).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expman.config import IntegrationSpec
from expman.integrations import tfevents
from expman.integrations.base import Binding, ExportContext, Exporter, ExportRun, Point
from expman.status import RunStatus

FILE_VERSION = "brain.Event:2"
#: A run's event files carry this at the end of their name (``events.out.tfevents.<ts>.<host>``).
SUFFIX = ".expman"
#: Event files kept open at once (the runs written to last); the rest are reopened.
OPEN_FILES = 32


@dataclass(slots=True)
class _Open:
    """The event file a run writes to in this session."""

    path: Path
    #: Folders (and the file) created since the last flush: their parents are fsynced.
    created: list[Path] = field(default_factory=list)
    #: Earlier files of the run cut short at the rewind (fsynced at the next flush).
    cut: list[Path] = field(default_factory=list)
    #: The run ended (``finish``): its descriptor is closed at the flush that follows.
    ended: bool = False


class TensorBoardExporter(Exporter):
    """The ``tensorboard`` integration (see the module's docstring)."""

    def __init__(self, spec: IntegrationSpec, context: ExportContext) -> None:
        super().__init__(spec, context)
        base = Path(str(spec.options.get("dir", "tensorboard"))).expanduser()
        self.base = base if base.is_absolute() else context.root / base
        self.hparams = bool(spec.options.get("hparams", True))
        self._host = socket.gethostname() or "localhost"
        self._files: dict[tuple[str, int], _Open] = {}
        #: Descriptors of the runs written to last (at most OPEN_FILES; oldest first).
        self._fds: OrderedDict[tuple[str, int], int] = OrderedDict()

    def folder(self, run: ExportRun) -> Path:
        """Where a run's event files go (its TensorBoard "run": ``<trial>/run_<k>``)."""
        return self.base / run.trial / f"run_{run.repeat}"

    def open(self, run: ExportRun, *, external: str | None, rewind: int) -> Binding:
        folder = self.context.root / external if external else self.folder(run)
        created = _make_folders(folder)
        earlier = event_files(folder)
        cut = [p for p in earlier if _cut_from(p, rewind)]
        earlier = [p for p in earlier if p.exists()]
        now = time.time()
        stamp = max([int(now), *(_stamp(p) + 1 for p in earlier)])
        path = folder / f"events.out.tfevents.{stamp:010d}.{self._host}{SUFFIX}"
        # Every file starts a session (the plugin reader ignores a run's first START,
        # the plain one purges on every START): a later one drops steps >= rewind.
        start = rewind if earlier else 0
        head = [
            tfevents.event(start, now, file_version=FILE_VERSION),
            tfevents.event(start, now, session_start=True),
        ]
        if self.hparams and (not earlier or rewind == 0):
            head.append(tfevents.event(0, now, summary=_session_start(run, now)))
        self._drop_fd(run.key)  # a retry: the attempt before wrote to another file
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._keep_fd(run.key, fd)
        _write_all(fd, tfevents.records(head))
        self._files[run.key] = _Open(path, [*created, path], cut)
        try:
            external = str(folder.relative_to(self.context.root))
        except ValueError:
            external = str(folder)
        return Binding(external, str(folder))

    def write(self, run: ExportRun, points: Sequence[Point]) -> None:
        if not points:
            return
        target = self._files.get(run.key)
        if target is None:  # never opened in this session: the driver opens first
            self.open(run, external=None, rewind=points[0].epoch)
            target = self._files[run.key]
        data = tfevents.records(
            [tfevents.scalars_event(p.epoch, p.time, p.metrics) for p in points if p.metrics]
        )
        if data:
            _write_all(self._fd(run.key, target), data)

    def flush(self, run: ExportRun) -> None:
        target = self._files.get(run.key)
        if target is None:
            return
        os.fsync(self._fd(run.key, target))
        if target.ended:
            self._drop_fd(run.key)
        for path in target.cut:
            _fsync_path(path)
        # A new file (and new folders) are durable once their folders' entries are.
        for parent in dict.fromkeys(p.parent for p in [*target.created, *target.cut]):
            _fsync_path(parent)
        target.created.clear()
        target.cut.clear()

    def finish(self, run: ExportRun, status: RunStatus, reason: str | None) -> None:
        target = self._files.get(run.key)
        if target is not None:
            target.ended = True
        if target is None or not self.hparams or not status.is_finished:
            # A failed or cancelled run runs again: its end is written when it has one
            # (the hparams plugin keeps the first end it reads).
            return
        now = time.time()
        end = tfevents.records([tfevents.event(0, now, summary=_session_end(now))])
        _write_all(self._fd(run.key, target), end)

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])
        self._files.clear()

    # A few descriptors stay open (the runs being written now), never one per run.

    def _fd(self, key: tuple[str, int], target: _Open) -> int:
        fd = self._fds.get(key)
        if fd is None:
            fd = os.open(target.path, os.O_WRONLY | os.O_APPEND)
            self._keep_fd(key, fd)
        else:
            self._fds.move_to_end(key)
        return fd

    def _keep_fd(self, key: tuple[str, int], fd: int) -> None:
        self._fds[key] = fd
        while len(self._fds) > OPEN_FILES:
            os.close(self._fds.popitem(last=False)[1])

    def _drop_fd(self, key: tuple[str, int]) -> None:
        fd = self._fds.pop(key, None)
        if fd is not None:
            os.close(fd)


def event_files(folder: Path) -> list[Path]:
    """The TensorBoard event files of one run's folder, in the order TensorBoard reads them."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [folder / n for n in sorted(names) if "tfevents" in n]


def _stamp(path: Path) -> int:
    """The timestamp in an event file's name (``events.out.tfevents.<ts>.<host>``), or 0."""
    parts = path.name.split(".")
    try:
        return int(parts[parts.index("tfevents") + 1])
    except (ValueError, IndexError):
        return 0


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, outermost first."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            break
        missing.append(candidate)
    missing.reverse()
    for made in missing:
        made.mkdir(exist_ok=True)  # one call each (mkdir(parents=True) fails first)
    return missing


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _cut_from(path: Path, step: int) -> bool:
    """Cut an earlier event file short at its first record at ``step`` or later.

    Its records are in step order (each open writes its epochs ascending after its
    head), except a session end at step 0 after the last epoch, which goes with
    them.  A file left empty is removed.  Whether it was changed.
    """
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return False
    offsets = tfevents.record_steps(blob)
    keep = next((at for at, s in offsets if s >= step), None)
    if keep is None:  # nothing at or past the rewind; a torn tail is cut too
        keep = offsets[-1][0] + _record_size(blob, offsets[-1][0]) if offsets else 0
    if keep >= len(blob):
        return False
    if keep == 0:
        path.unlink()
        return True
    os.truncate(path, keep)
    return True


def _record_size(blob: bytes, at: int) -> int:
    (length,) = struct.unpack_from("<Q", blob, at)
    return int(length) + 16


def _fsync_path(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a folder: the file itself is synced
    finally:
        os.close(fd)


# -- the hparams plugin's records ----------------------------------------------------------

_START_TAG = "_hparams_/session_start_info"
_END_TAG = "_hparams_/session_end_info"


def flat_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``settings`` as ``{dotted key: bool | number | str}`` (lists as JSON; None left out)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_settings(value, f"{name}."))
        elif value is None:
            continue
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str, sort_keys=True)
    return out


def _session_start(run: ExportRun, now: float) -> bytes:
    info = tfevents.session_start_info(flat_settings(run.settings), run.trial, now)
    return tfevents.plugin_summary(_START_TAG, info)


def _session_end(now: float) -> bytes:
    info = tfevents.session_end_info(tfevents.STATUS_SUCCESS, now)
    return tfevents.plugin_summary(_END_TAG, info)
