"""JSON lines: one fast encoder for every log, and a reader that tolerates a torn tail."""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from expman.errors import WorkspaceLinkError

#: orjson options of every log line (numpy values, non-string keys).
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_OPTIONS = JSON_OPTIONS


def _default(value: Any) -> Any:
    # numpy scalars that orjson does not take natively, torch scalars, paths, sets.
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "keys"):
        return dict(value)
    return repr(value)


#: What orjson calls for values it does not know (numpy/torch scalars, paths, sets).
json_default = _default


def dumps(obj: Any) -> bytes:
    """One JSON document as bytes, without a newline."""
    # JSON has no NaN or Infinity: orjson writes null for them, and so do we.
    try:
        return orjson.dumps(obj, default=_default, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(_plain(obj), default=_default, option=_OPTIONS)


def dumps_fields(head: Mapping[str, Any], obj: Any) -> bytes:
    """One JSON object: ``head``'s keys, then the fields of the dataclass instance ``obj``.

    The same bytes as ``dumps({**head, **fields})``, but orjson reads the dataclass
    directly: no dict is built per record (the log writers' hot path).
    """
    try:
        body = orjson.dumps(obj, default=_default, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return dumps({**head, **fields})
    if not head:
        return body
    start = dumps(head)
    if body == b"{}":
        return start
    return start[:-1] + b"," + body[1:]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (str, bytes)):
        try:
            return item()
        except (TypeError, ValueError):
            return repr(value)
    return value


def dump_line(obj: Any) -> bytes:
    """One JSON line (with its newline)."""
    return dumps(obj) + b"\n"


def loads(data: bytes | str) -> Any:
    """Parse one JSON document."""
    return orjson.loads(data)


def read_lines(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every complete JSON object in a JSON-lines file.

    A last line without its newline (a write torn by a crash) is skipped, and so is
    any line that does not parse; nothing before it is lost.
    """
    try:
        # Never blocks on a FIFO planted there (nor reads a device): plain files only.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise WorkspaceLinkError.at(path)
    except BaseException:
        os.close(fd)
        raise
    with open(fd, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, dict):
                yield value


def repair_tail(file: str | Path | int) -> bool:
    """Cut a torn last line off a JSON-lines file so that appends start clean.

    ``file`` is a path or a descriptor open for reading and writing (the one that
    will be appended to, so what is repaired is what is written).  A path is opened
    without following a link (:class:`~expman.errors.WorkspaceLinkError`): cutting
    would truncate whatever the link points at.  Returns True when something was cut.
    """
    if isinstance(file, int):
        return _repair_fd(file)
    try:
        fd = os.open(file, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise WorkspaceLinkError.at(file) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            raise WorkspaceLinkError.at(file)
        return _repair_fd(fd)
    finally:
        os.close(fd)


def _repair_fd(fd: int) -> bool:
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return False
    # Walk back to the last newline; everything after it is the torn line.
    pos = size - 1
    chunk = 4096
    while pos > 0:
        start = max(0, pos - chunk)
        block = os.pread(fd, pos - start, start)
        idx = block.rfind(b"\n")
        if idx >= 0:
            os.ftruncate(fd, start + idx + 1)
            return True
        pos = start
    os.ftruncate(fd, 0)
    return True
