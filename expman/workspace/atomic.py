"""Atomic file work: a reader sees the old file or the new one, never half of one.

Plain ``os`` calls, no file objects: runs write these from worker threads, and every
system call there waits for the event loop to hand back the GIL.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import uuid
from pathlib import Path


def atomic_write(
    path: Path | str, data: bytes, *, durable: bool = False, make_parent: bool = True
) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half.

    ``make_parent=False`` skips creating the folder (the caller just made it).
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    if make_parent:
        os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{_TOKEN}{os.getpid()}.{next(_temp_ids)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename == tmp:
            exc.filename = path  # the file the user knows (a full disk, a read-only one)
        raise


#: Temporary files' names: a random token per process (a pid can come back, in a
#: container, with a killed process's leftovers), then the pid and a counter.
_TOKEN = secrets.token_hex(4)
_temp_ids = itertools.count()


def make_folders(root: Path | str, *subfolders: str) -> bool:
    """Create ``root`` and its subfolders (existing ones are fine); True if ``root`` is new.

    Each run creates a small tree on a metadata-bound disk, so this makes one
    ``mkdir`` per folder, where ``makedirs`` would retry and stat its way down.
    """
    root = os.fspath(root)
    created = True
    try:
        os.mkdir(root)
    except FileExistsError:
        created = False
    except FileNotFoundError:
        os.makedirs(root, exist_ok=True)
    for name in subfolders:
        with contextlib.suppress(FileExistsError):
            os.mkdir(f"{root}/{name}")
    return created


def replace_into_place(tmp: Path, path: Path) -> None:
    """Move a finished temporary file or folder to ``path``, replacing what is there."""
    if tmp.is_dir() and path.is_dir():
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries durable (best effort: not every file system can)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_partial_files(folder: Path) -> None:
    """Delete temporary files a crash left behind in ``folder`` (never complete ones)."""
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.name.startswith(".") and ".tmp-" in entry.name:
                remove_path(entry)


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree; a missing one is fine."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
