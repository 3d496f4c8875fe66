"""JSON lines: one fast encoder for every log, and a reader that tolerates a torn tail.

:func:`dumps` never raises: what orjson cannot write takes the slow path through
:mod:`expman.values`, so one odd value costs no line (and no batch of lines).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from expman.errors import WorkspaceLinkError
from expman.values import Conversion, has_nonfinite, json_form, restore_line

#: orjson options of every log line (numpy values, non-string keys).
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_OPTIONS = JSON_OPTIONS
_ENCODE_ERRORS = (TypeError, ValueError, RecursionError, orjson.JSONEncodeError)


def _default(value: Any) -> Any:
    # numpy scalars that orjson does not take natively, torch scalars, paths, sets.
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)  # as expman.values stores a set
        except TypeError:
            return list(value)
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "keys"):
        return dict(value)
    return repr(value)


#: What orjson calls for values it does not know (numpy/torch scalars, paths, sets).
json_default = _default


def dumps(obj: Any) -> bytes:
    """One JSON document as bytes, without a newline; never raises.

    orjson writes it when it can; a value it cannot write (an int beyond 64 bits, a
    container that holds itself) and a NaN or infinity (orjson would write null) send
    it through :func:`expman.values.json_form` instead: non-finite floats become
    "NaN", "Infinity" and "-Infinity", the rest the form that module's table gives.
    """
    try:
        data = orjson.dumps(obj, default=_default, option=_OPTIONS)
    except _ENCODE_ERRORS:
        return converted(obj)
    if b"null" in data and has_nonfinite(obj):
        return converted(obj)
    return data


def converted(obj: Any) -> bytes:
    """``obj`` written through :func:`~expman.values.json_form` (the slow, total path)."""
    return orjson.dumps(json_form(obj), option=_OPTIONS)


def fast_body(obj: Any, option: int = _OPTIONS) -> bytes | None:
    """orjson's encoding of ``obj``, or None where :func:`dumps` would convert it."""
    try:
        data = orjson.dumps(obj, default=_default, option=option)
    except _ENCODE_ERRORS:
        return None
    if b"null" in data and has_nonfinite(obj):
        return None
    return data


def dumps_fields(head: Mapping[str, Any], obj: Any) -> bytes:
    """One JSON object: ``head``'s keys, then the fields of the dataclass instance ``obj``.

    The same bytes as ``dumps({**head, **fields})``, but orjson reads the dataclass
    directly: no dict is built per record (the log writers' hot path).
    """
    body = fast_body(obj)
    if body is None:
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return dumps({**head, **fields})
    if not head:
        return body
    start = dumps(head)
    if body == b"{}":
        return start
    return start[:-1] + b"," + body[1:]


def dump_message(obj: Any) -> bytes:
    """One message between a driver and its worker: like :func:`dumps`, floats exact.

    NaN and infinities travel as the literals Python's ``json`` writes (not strings),
    so a setting or metric that is the string "NaN" stays one; :func:`load_message`
    reads them back.
    """
    data = fast_body(obj)
    if data is not None:
        return data
    plain = Conversion().convert(obj, "message")
    # ASCII: a lone surrogate travels as its \u escape, which json.loads reads back exactly.
    return json.dumps(plain, separators=(",", ":")).encode()


def load_message(data: bytes | str) -> Any:
    """Parse one :func:`dump_message` document (NaN and Infinity literals included)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dump_line(obj: Any) -> bytes:
    """One JSON line (with its newline)."""
    return dumps(obj) + b"\n"


def loads(data: bytes | str) -> Any:
    """Parse one JSON document."""
    return orjson.loads(data)


def open_plain_file(path: str | Path) -> BinaryIO | None:
    """``path`` open for reading in binary, or None if there is no such file.

    Never blocks on a FIFO planted there, nor reads a device: anything but a plain
    file is a :class:`~expman.errors.WorkspaceLinkError`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise WorkspaceLinkError.at(path)
    except BaseException:
        os.close(fd)
        raise
    return open(fd, "rb")


def read_lines(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every complete JSON object in a JSON-lines file.

    A last line without its newline (a write torn by a crash) is skipped, and so is
    any line that does not parse; nothing before it is lost.  The strings "NaN",
    "Infinity" and "-Infinity" inside a line's ``metrics`` or ``state`` are read
    back as the floats :func:`dumps` wrote them for.
    """
    f = open_plain_file(path)
    if f is None:
        return
    with f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, dict):
                # Fields that hold metrics get their non-finite floats back.
                if b'NaN"' in raw or b'Infinity"' in raw:
                    restore_line(value)
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
