"""Atomic file work: a reader sees the old file or the new one, never half of one.

Plain ``os`` calls, no file objects: runs write these from worker threads, and every
system call there waits for the event loop to hand back the GIL.  Nothing here
writes or deletes through a link (:mod:`expman.workspace.safepaths`): given the
experiment folder (``within``), the folders on the way are checked too.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import stat
import uuid
from pathlib import Path

from expman.errors import WorkspaceLinkError
from expman.workspace.safepaths import (
    PathLike,
    check_folder,
    check_no_links,
    is_link,
    make_dir,
    make_dirs,
)


def atomic_write(
    path: Path | str,
    data: bytes,
    *,
    durable: bool = False,
    make_parent: bool = True,
    within: PathLike | None = None,
) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half.

    ``make_parent=False`` skips creating the folder (the caller just made it).  A link
    at ``path`` (or, given ``within``, at a folder between it and ``path``) is a
    :class:`~expman.errors.WorkspaceLinkError`: the file would land elsewhere.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    if within is not None:
        check_no_links(path, within)
        if make_parent:
            make_dirs(folder, within)
    else:
        if is_link(path):
            raise WorkspaceLinkError.at(path)
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


def make_folders(root: Path | str, *subfolders: str, within: PathLike | None = None) -> bool:
    """Create ``root`` and its subfolders (existing ones are fine); True if ``root`` is new.

    Each run creates a small tree on a metadata-bound disk, so this makes one
    ``mkdir`` per folder, where ``makedirs`` would retry and stat its way down.  An
    existing folder must be a real one (a link is a WorkspaceLinkError); given
    ``within``, so must every folder between it and ``root``.
    """
    root = os.fspath(root)
    created = True
    try:
        os.mkdir(root)
    except FileExistsError:
        created = False
        check_folder(root)
        if within is not None:
            check_no_links(root, within)
    except FileNotFoundError:
        if within is None:
            os.makedirs(root, exist_ok=True)
        else:
            make_dirs(root, within)
    for name in subfolders:
        # A new root's subfolders are new: only an existing one can be a planted link.
        if created:
            with contextlib.suppress(FileExistsError):
                os.mkdir(f"{root}/{name}")
        else:
            make_dir(f"{root}/{name}")
    return created


def replace_into_place(tmp: Path, path: Path) -> None:
    """Move a finished temporary file or folder to ``path``, replacing what is there.

    A link at ``path`` is an error, not replaced: someone else put it there.
    """
    if is_link(path):
        raise WorkspaceLinkError.at(path)
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
    """Delete temporary files a crash left behind in ``folder`` (never complete ones).

    A ``folder`` that is a link is left alone: its entries are someone else's.
    """
    with contextlib.suppress(OSError):
        check_folder(folder)
        for entry in folder.iterdir():
            if entry.name.startswith(".") and ".tmp-" in entry.name:
                remove_path(entry)


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree; a missing one is fine.

    Never follows a link: a link is removed itself, a folder's links inside it too
    (``shutil.rmtree`` walks by descriptors), and never what they point at.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
