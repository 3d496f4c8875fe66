"""Safe paths: the workspace is written only through folders and files expman made.

A workspace is a folder anyone with write access can plant things in: a symbolic
link named ``.lock`` or ``run.log`` pointing at a file of the user's, an
``artifacts/`` linking to a folder elsewhere.  Following such a link would truncate,
append to or delete the user's own files.  Every write to an experiment folder goes
through these primitives instead of bare ``open``/``mkdir``/``rmtree``:

* :func:`open_append` and :func:`open_file` open with ``O_NOFOLLOW`` (the last name
  may not be a link) after checking with ``lstat`` that no folder between the
  experiment folder (``within``) and the file is a link; the file must be a plain
  file with one name (a hard link to a file elsewhere is refused too; a FIFO would
  block, so the open never waits: ``O_NONBLOCK`` until it is known to be a file).
* :func:`make_dirs` creates folders one level at a time; an existing one must be a
  real folder, not a link to one.
* :func:`remove_tree` deletes only inside ``within``, never through a link.

A planted link is a :class:`~expman.errors.WorkspaceLinkError` naming it and where it
points.  The experiment folder itself (and anything above it) may be a link: that is
the owner's choice, not something planted inside.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

from expman.errors import WorkspaceError, WorkspaceLinkError

#: Flags every workspace open carries: never through a final link, never inherited.
SAFE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC
#: A log file opened for appending (and reading: a torn tail is cut through this fd).
APPEND_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT

PathLike = str | os.PathLike[str]


def inside(path: PathLike, within: PathLike) -> bool:
    """Whether ``path`` names something strictly below ``within`` (by name, no ``..``)."""
    return _below(_absolute(path), _absolute(within)) is not None


def _absolute(path: PathLike) -> str:
    text = os.fspath(path)
    return os.path.normpath(text if os.path.isabs(text) else os.path.abspath(text))


def _below(target: str, root: str) -> list[str] | None:
    """The names leading from ``root`` down to ``target`` (both normalised), or None."""
    prefix = root.rstrip(os.sep) + os.sep
    if not target.startswith(prefix):
        return None
    return target[len(prefix) :].split(os.sep)


def first_link(path: PathLike, within: PathLike, *, include_last: bool = True) -> str | None:
    """The first name from ``within`` (excluded) down to ``path`` that is a link.

    Names that do not exist end the walk (nothing below them exists either).
    ``include_last=False`` checks only the folders above ``path``.
    """
    root, target = _absolute(within), _absolute(path)
    if target == root:
        return None
    parts = _below(target, root)
    if parts is None:
        raise WorkspaceError(f"{os.fspath(path)} is outside the experiment folder {within}")
    if not include_last:
        parts = parts[:-1]
    current = root
    for part in parts:
        current = f"{current}{os.sep}{part}"
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(mode):
            return current
    return None


def check_no_links(path: PathLike, within: PathLike, *, include_last: bool = True) -> None:
    """Raise :class:`WorkspaceLinkError` if a name from ``within`` to ``path`` is a link."""
    link = first_link(path, within, include_last=include_last)
    if link is not None:
        raise WorkspaceLinkError.at(link)


def check_folders(within: PathLike, *folders: PathLike) -> None:
    """Each of ``folders`` (below ``within``), where it exists, is reached through no link.

    Cheap (one ``lstat`` per distinct name): the runtime checks a run's folders this
    way just before its pipeline starts, so a link planted there never receives files.
    """
    root = _absolute(within)
    seen: set[str] = set()
    for folder in folders:
        parts = _below(_absolute(folder), root)
        if parts is None:
            raise WorkspaceError(f"{os.fspath(folder)} is outside the experiment folder {within}")
        current = root
        for part in parts:
            current = f"{current}{os.sep}{part}"
            if current in seen:
                continue
            seen.add(current)
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                break
            if stat.S_ISLNK(mode):
                raise WorkspaceLinkError.at(current)


def make_dirs(path: PathLike, within: PathLike) -> bool:
    """Create ``path`` and the folders above it down from ``within``; True if it is new.

    ``within`` itself is made as usual (it may be, or lie below, a link of the
    owner's); below it, an existing name must be a real folder.
    """
    root, target = _absolute(within), _absolute(path)
    os.makedirs(root, exist_ok=True)
    if target == root:
        return False
    parts = _below(target, root)
    if parts is None:
        raise WorkspaceError(f"{os.fspath(path)} is outside the experiment folder {within}")
    current = root
    created = False
    for part in parts:
        current = f"{current}{os.sep}{part}"
        created = make_dir(current)
    return created


def make_dir(path: PathLike) -> bool:
    """``mkdir`` one folder (its parent exists and is checked); True if it is new."""
    try:
        os.mkdir(path, 0o777)
    except FileExistsError:
        check_folder(path)
        return False
    return True


def check_folder(path: PathLike) -> None:
    """``path`` exists and is a real folder (not a link to one); else an error naming it."""
    mode = os.lstat(path).st_mode
    if stat.S_ISDIR(mode):
        return
    if stat.S_ISLNK(mode):
        raise WorkspaceLinkError.at(path)
    raise WorkspaceError(f"{os.fspath(path)} should be a folder but is a file")


def open_file(path: PathLike, flags: int, within: PathLike | None = None, mode: int = 0o644) -> int:
    """``os.open`` that refuses links: in ``path`` itself and in folders under ``within``.

    The file, once open, must be a plain file with a single name; the descriptor is
    close-on-exec (and ``O_NONBLOCK``, which means nothing for a plain file: it only
    kept the open from waiting on a FIFO).
    """
    if within is not None and inside(path, within):  # elsewhere: the caller's own path
        check_no_links(path, within, include_last=False)
    try:
        fd = os.open(path, flags | SAFE_FLAGS | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise WorkspaceLinkError.at(path) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            raise WorkspaceLinkError.at(path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_append(
    path: PathLike, within: PathLike | None = None, *, make_parents: bool = True
) -> int:
    """Open a JSON-lines file for appending (created if missing, folders too).

    Read and write: :func:`expman.jsonlines.repair_tail` cuts a torn last line through
    the same descriptor, so what is repaired is what is appended to.
    """
    try:
        return open_file(path, APPEND_FLAGS, within)
    except FileNotFoundError:
        if not make_parents:
            raise
    parent = os.path.dirname(os.fspath(path))
    if within is not None and inside(parent, within):
        make_dirs(parent, within)
    else:
        os.makedirs(parent, exist_ok=True)
    return open_file(path, APPEND_FLAGS, within)


def remove_tree(path: PathLike, within: PathLike) -> bool:
    """Delete the file or folder tree ``path`` inside ``within``; True if it was there.

    Never follows a link: a link at ``path`` or above it (inside ``within``) is an
    error, and a folder is removed by ``shutil.rmtree``, which on this platform
    walks by descriptors and unlinks links inside without following them.
    """
    if not inside(path, within):
        raise WorkspaceError(f"refusing to delete {path}: it is not inside {within}")
    check_no_links(path, within, include_last=False)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        raise WorkspaceLinkError.at(path)
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
    return True


def is_link(path: PathLike) -> bool:
    """Whether ``path`` itself is a symbolic link (``lstat``; a missing path is not)."""
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False
