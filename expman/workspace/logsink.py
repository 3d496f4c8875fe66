"""LogFiles: batched appends of JSON lines to many files, off the event loop.

Every log line of an experiment (events, metrics, the pipelines' own structlog and
logging calls) goes through one :class:`LogFiles`.  Producers append to an in-memory
batch (``emit`` from any thread, never blocking; ``write`` from async code, which
waits while more than ``max_pending_bytes`` are queued).  One flusher task hands the
whole batch to a worker thread (through aiofiles' executor wrapper) that makes one
``write`` per file per batch.  Files are opened for append, created with their
folders on first use, and kept open in a small LRU.

Files are opened through :mod:`expman.workspace.safepaths`: never through a link
(given ``within``, the experiment folder, no folder below it may be one either).  A
file stays a sequence of whole lines: a write that fails half-way (a full disk) is
cut back to the last whole line, and that file takes no more lines (they are
counted in ``dropped``): nothing is ever appended after a torn fragment.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import anyio
from aiofiles.os import wrap

from expman.jsonlines import repair_tail
from expman.workspace.safepaths import APPEND_FLAGS, PathLike, inside, make_dirs, open_file

#: File handles kept open at once; older ones are closed and reopened on demand.
MAX_OPEN_FILES = 128


@dataclass(slots=True)
class LogFilesStatistics:
    """How much went through and what is waiting."""

    lines: int = 0
    bytes: int = 0
    batches: int = 0
    pending_bytes: int = 0
    max_pending_bytes: int = 0
    errors: int = 0
    dropped: int = 0  # lines for a file that failed earlier (never written)


class LogFiles:
    """Append-only JSON-lines files written in batches by one flusher task."""

    def __init__(
        self,
        *,
        max_pending_bytes: int = 4 * 1024 * 1024,
        on_error: Callable[[OSError, str], None] | None = None,
        within: PathLike | None = None,
    ) -> None:
        self._lock = threading.Lock()
        # Invariant: _pending holds, per path, lines not yet handed to the writer
        # thread, and _pending_bytes is the sum of their lengths.
        self._pending: dict[str, list[bytes]] = {}
        self._pending_bytes = 0
        self._limit = max_pending_bytes
        self._handles: OrderedDict[str, int] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        # Set once the flusher has closed its handles; later writes close theirs.
        self._closed = False
        self._flush_waiters = 0
        self.stats = LogFilesStatistics()
        self._on_error = on_error
        # Invariant: _errors holds (error, path) raised in the writer thread, reported
        # (in the event loop) after the batch that raised them.
        self._errors: list[tuple[OSError, str]] = []
        self._repaired: set[str] = set()
        self._within = within
        # Invariant: a path in _failed had a write fail; it is never written again.
        self._failed: set[str] = set()
        self._write_batch = wrap(self._write_all)
        self._flush_lock = asyncio.Lock()

    # -- producing ------------------------------------------------------------------

    def emit(self, path: str, line: bytes) -> None:
        """Queue one line (ending in a newline) for ``path``; never blocks."""
        with self._lock:
            bucket = self._pending.get(path)
            if bucket is None:
                self._pending[path] = [line]
            else:
                bucket.append(line)
            self._pending_bytes += len(line)
            self.stats.lines += 1
        self._notify()

    def emit_many(self, paths: Iterable[str], line: bytes) -> None:
        """Queue the same line for several files."""
        with self._lock:
            for path in paths:
                bucket = self._pending.get(path)
                if bucket is None:
                    self._pending[path] = [line]
                else:
                    bucket.append(line)
                self._pending_bytes += len(line)
                self.stats.lines += 1
        self._notify()

    def emit_batch(self, lines: Mapping[str, list[bytes]]) -> None:
        """Queue many lines for many files at once (one lock, one wake-up)."""
        size = count = 0
        with self._lock:
            pending = self._pending
            for path, more in lines.items():
                bucket = pending.get(path)
                if bucket is None:
                    pending[path] = list(more)
                else:
                    bucket.extend(more)
                count += len(more)
                size += sum(map(len, more))
            self._pending_bytes += size
            self.stats.lines += count
        self._notify()

    async def wait_writable(self) -> None:
        """Wait while too much is queued (backpressure for async producers)."""
        while self._pending_bytes > self._limit and self._loop is not None:
            self._drained.clear()
            await self._drained.wait()

    def _notify(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    # -- flushing -------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The flusher: runs until :meth:`aclose`, then writes what is left."""
        self._loop = asyncio.get_running_loop()
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self._flush_once()
                if self._closing and not self._pending:
                    return
        finally:
            with anyio.CancelScope(shield=True):
                # Under the flush lock like every write: a sync() from the journal may
                # be writing (and opening handles) in a thread at this very moment.
                async with self._flush_lock:
                    self._closed = True
                    await self._flush_locked()
                    await self._write_batch({}, close=True)

    async def _flush_once(self) -> None:
        async with self._flush_lock:  # one writer thread at a time owns the handles
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, {}
            size, self._pending_bytes = self._pending_bytes, 0
        if batch:
            self.stats.max_pending_bytes = max(self.stats.max_pending_bytes, size)
            # Shielded: a cancelled await would leave the thread writing while the
            # flush lock is free, and two threads must never share the handles.
            with anyio.CancelScope(shield=True):
                # Once closed (a late flush or sync), no handle is kept open.
                await self._write_batch(batch, close=self._closed)
            self.stats.batches += 1
            self.stats.bytes += size
        self._drained.set()
        if self._errors:
            errors, self._errors = self._errors, []
            if self._on_error is not None:
                for exc, path in errors:
                    self._on_error(exc, path)

    async def flush(self) -> None:
        """Return once everything queued before the call is on disk (page cache)."""
        if self._loop is None:
            with self._lock:
                batch, self._pending = self._pending, {}
                self._pending_bytes = 0
            self._write_all(batch)
            return
        await self._flush_once()

    async def sync(self, paths: Iterable[str]) -> None:
        """Return once what was queued for ``paths`` is written and fsync'd (durable)."""
        await self.flush()
        wanted = list(paths)
        if self._loop is None:
            self._fsync(wanted)
            return
        async with self._flush_lock:  # the handles belong to one thread at a time
            await anyio.to_thread.run_sync(self._fsync, wanted)

    def _fsync(self, paths: list[str]) -> None:
        for path in paths:
            fd = self._handles.get(path)
            try:
                if fd is not None:
                    os.fsync(fd)
                    continue
                # Never through a planted link, never waiting on a FIFO.
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except FileNotFoundError:
                continue  # nothing was ever written there
            except OSError as exc:
                self.stats.errors += 1
                self._errors.append((exc, path))

    async def aclose(self) -> None:
        """Ask the flusher to write what is queued and stop."""
        self._closing = True
        self._wake.set()

    def _write_all(self, batch: dict[str, list[bytes]], close: bool = False) -> None:
        for path, lines in batch.items():
            if path in self._failed:
                self.stats.dropped += len(lines)
                continue
            fd = None
            done = 0
            try:
                fd = self._open(path)
                data = b"".join(lines)
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    done += written
                    view = view[written:]
            except OSError as exc:
                # Counted, and reported from the event loop after this batch.
                self.stats.errors += 1
                self._errors.append((exc, path))
                self._give_up(path, fd, done)
        if close:
            for fd in self._handles.values():
                os.close(fd)
            self._handles.clear()

    def _give_up(self, path: str, fd: int | None, written: int) -> None:
        """Stop writing ``path``; cut off what a failed write left of this batch."""
        self._failed.add(path)
        if fd is None:
            return
        with contextlib.suppress(OSError):
            if written:
                # Only whole lines before this batch stay: a line cut by a full disk
                # would otherwise stand in the middle of the file.
                os.ftruncate(fd, os.fstat(fd).st_size - written)
        if self._handles.pop(path, None) is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _open(self, path: str) -> int:
        fd = self._handles.get(path)
        if fd is not None:
            self._handles.move_to_end(path)
            return fd
        within = self._within
        if path in self._repaired:
            fd = _open_creating_folders(path, APPEND_FLAGS, within)
        else:
            self._repaired.add(path)
            try:  # most files are new (a run's logs): one call, nothing to repair
                fd = _open_creating_folders(path, APPEND_FLAGS | os.O_EXCL, within)
            except FileExistsError:
                # A line torn by an earlier crash must not run into the first new one.
                fd = open_file(path, APPEND_FLAGS, within)
                try:
                    repair_tail(fd)
                except BaseException:
                    os.close(fd)
                    raise
        self._handles[path] = fd
        if len(self._handles) > MAX_OPEN_FILES:
            _, old = self._handles.popitem(last=False)
            os.close(old)
        return fd

    def statistics(self) -> LogFilesStatistics:
        """A snapshot of the counts (like every ``statistics()`` here: a copy, not live)."""
        return dataclasses.replace(self.stats, pending_bytes=self._pending_bytes)


def _open_creating_folders(path: str, flags: int, within: PathLike | None) -> int:
    try:
        return open_file(path, flags, within)
    except FileNotFoundError:
        folder = os.path.dirname(path)
        if within is not None and inside(folder, within):
            make_dirs(folder, within)
        else:
            os.makedirs(folder, exist_ok=True)
        return open_file(path, flags, within)
