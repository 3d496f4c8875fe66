"""The experiment lock: one process runs an experiment directory at a time.

The lock is an advisory ``flock`` on ``<experiment>/.lock``, which also holds the
holder's pid, host and start time for error messages.  The kernel drops the lock
when its process dies, even by SIGKILL, so a lock left by a killed process is
simply taken over by the next run.  ``.lock`` is opened without following a link
(a link planted there would have its target truncated): a link is a
:class:`~expman.errors.WorkspaceLinkError`; a disk too full to write the holder's
record is a :class:`~expman.errors.WorkspaceError` naming the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from expman.errors import WorkspaceError, WorkspaceLinkError, WorkspaceLocked
from expman.workspace.safepaths import SAFE_FLAGS, open_file


def read_holder(path: Path) -> dict[str, Any]:
    """What the lock file says about its (last) holder; empty if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | SAFE_FLAGS | os.O_NONBLOCK)  # no link, no FIFO wait
    except OSError:
        return {}
    try:
        data = json.loads(os.read(fd, 64 * 1024) or b"{}")
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else {}


def lock_holder(path: Path) -> dict[str, Any] | None:
    """The live holder of the lock at ``path``, or None when nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | SAFE_FLAGS | os.O_NONBLOCK)
    except OSError:
        return None  # missing, or a link: nobody holds a lock there
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(path) or {"pid": None, "host": None}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class ExperimentLock:
    """``with ExperimentLock(path):`` holds the lock or raises WorkspaceLocked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.previous: dict[str, Any] = {}

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = open_file(self.path, os.O_RDWR | os.O_CREAT)
        except WorkspaceLinkError:
            raise
        except OSError as exc:
            raise WorkspaceError(
                f"cannot create {exc.filename or self.path}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.path)
            raise WorkspaceLocked(
                f"{self.path.parent} is being run by pid {holder.get('pid', '?')} on host "
                f"{holder.get('host', '?')} (since {holder.get('started', '?')}); "
                "wait for it to finish or stop it first"
            ) from None
        self.previous = read_holder(self.path)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)
        except OSError as exc:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise WorkspaceError(f"cannot write {self.path}: {exc.strerror}") from None
        self._fd = fd

    def release(self) -> None:
        """Release; an empty file afterwards tells the next holder we ended cleanly."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ExperimentLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
