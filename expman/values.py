"""What a value becomes in the JSON logs: one conversion, and a note for each change.

Whatever a pipeline reports or returns (epoch metrics, its result, custom events,
its callbacks' summaries and state) ends up in JSON lines, and one value JSON
cannot hold must never cost a log line, let alone a journal batch.  The rules:

========================================  =============================================
value                                     stored as
========================================  =============================================
bool, str, None, int within 64 bits       itself (a lone surrogate in a string escaped)
float                                     itself; NaN and ±inf stay floats in memory and
                                          are written as "NaN", "Infinity", "-Infinity"
int beyond 64 bits                        float (noted); beyond any float, a string (noted)
numpy/torch scalar, 0-d array             its ``.item()``
array, tensor (``.tolist()``)             a list
tuple, other Mapping, ``os.PathLike``     list, dict, path string
set, frozenset                            a sorted list (noted)
bytes, bytearray                          UTF-8 text, bad bytes escaped (noted)
a dict key that is not a string           the key as JSON writes it (``1`` -> ``"1"``) (noted)
Enum                                      its value
date, time, datetime                      ISO text
anything else, complex                    refused (strict) or its repr (noted)
a container that holds itself             refused (strict) or "<recursive>" (noted)
nested deeper than :data:`MAX_DEPTH`      refused (strict) or "<too deep>" (noted)
========================================  =============================================

:class:`Conversion` walks a value once; ``strict`` refuses with
:class:`UnloggableValue` (a TypeError naming the value) where the lenient mode
stores a repr.  Each note is one sentence naming the value, e.g. ``metric 'x' =
1180591620717411303424 is beyond 64-bit; stored as float 1.18e+21``.

The strings "NaN", "Infinity" and "-Infinity" are the protobuf JSON mapping's
choice for non-finite floats: valid JSON for every reader, and read back as floats
inside the fields that hold metrics (:data:`FLOAT_FIELDS`, :func:`restore_floats`).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any

#: The integers orjson writes: from -2**63 to 2**64 - 1.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
#: Containers nested deeper than this are refused (orjson's own limit is 254).
MAX_DEPTH = 64
#: How non-finite floats are written, and read back.
NONFINITE_TEXT: Mapping[str, float] = {
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
}
#: The top-level fields of a log line whose strings "NaN"/"Infinity" are floats.
FLOAT_FIELDS = ("metrics", "state")

_SCALARS = frozenset({str, bool, type(None)})
_RECURSIVE, _TOO_DEEP = "<recursive>", "<too deep>"
#: Python refuses str() of an int with more digits than this (sys.int_info).
_MAX_DIGITS = 4000


class UnloggableValue(TypeError):
    """A value with no JSON form, refused where it entered; the message names it."""


def float_text(value: float) -> str | float:
    """``value`` as written: the text of a non-finite float, else the float itself."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def restore_floats(value: Any) -> Any:
    """``value`` with every "NaN"/"Infinity"/"-Infinity" string in it turned into a float."""
    kind = type(value)
    if kind is str:
        return NONFINITE_TEXT.get(value, value)
    if kind is dict:
        return {key: restore_floats(item) for key, item in value.items()}
    if kind is list:
        return [restore_floats(item) for item in value]
    return value


def restore_line(entry: dict[str, Any]) -> dict[str, Any]:
    """A parsed log line with the non-finite floats of its :data:`FLOAT_FIELDS` back."""
    for name in FLOAT_FIELDS:
        if name in entry:
            entry[name] = restore_floats(entry[name])
    return entry


def has_nonfinite(value: Any, depth: int = 0) -> bool:
    """True if a NaN or an infinity is anywhere in ``value`` (orjson writes them as null)."""
    kind = type(value)
    if kind is float or isinstance(value, float):
        return not math.isfinite(value)
    if kind in _SCALARS or kind is int or depth > MAX_DEPTH:
        return False
    try:
        if isinstance(value, Mapping):
            return any(has_nonfinite(item, depth + 1) for item in value.values())
        if isinstance(value, (list, tuple, set, frozenset)):
            return any(has_nonfinite(item, depth + 1) for item in value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return any(
                has_nonfinite(getattr(value, f.name, None), depth + 1)
                for f in dataclasses.fields(value)
            )
        tolist = getattr(value, "tolist", None)
        if callable(tolist):
            return has_nonfinite(tolist(), depth + 1)
        item = getattr(value, "item", None)
        if callable(item):
            return has_nonfinite(item(), depth + 1)
    except Exception:  # a value whose own code raises: the slow path will say what it is
        return True
    return False


class Conversion:
    """One walk turning values into plain JSON data, noting what changed.

    ``strict``: a value with no JSON form raises :class:`UnloggableValue` instead of
    being stored as its repr.  ``text_floats``: write non-finite floats as their text
    (for encoding) instead of keeping them as floats (for a value's in-memory form).
    ``notes`` collects ``(label, sentence)`` per change, in the order met: the label
    names the value (``result['x']``), the sentence says what it became.
    """

    __slots__ = ("_active", "notes", "strict", "text_floats")

    def __init__(self, *, strict: bool = False, text_floats: bool = False) -> None:
        self.strict = strict
        self.text_floats = text_floats
        self.notes: list[tuple[str, str]] = []  # (what was converted, the sentence)
        # Invariant: the ids of the containers on the current path (a cycle's tell).
        self._active: set[int] = set()

    def convert(self, value: Any, name: str) -> Any:
        """``value`` as plain JSON data; ``name`` says what it is ("metric 'loss'")."""
        return self._form(value, name, (), 0)

    def _form(self, value: Any, name: str, path: tuple[Any, ...], depth: int) -> Any:
        kind = type(value)
        if kind is str:
            return _utf8(value) if self.text_floats else value
        if kind in _SCALARS:
            return value
        if kind is float:
            return float_text(value) if self.text_floats else value
        if kind is int:
            if INT_MIN <= value <= INT_MAX:
                return value
            return self._big_int(value, name, path)
        if isinstance(value, enum.Enum):
            return self._form(value.value, name, path, depth)
        if isinstance(value, bool):  # numpy.bool_ is no bool; this is a subclass
            return bool(value)
        if isinstance(value, int):
            return self._form(int(value), name, path, depth)
        if isinstance(value, float):
            return self._form(float(value), name, path, depth)
        if isinstance(value, str):
            return self._form(str(value), name, path, depth)
        if depth >= MAX_DEPTH:
            return self._refuse(
                name, path, f"is nested deeper than {MAX_DEPTH} levels", _TOO_DEEP, value
            )
        if isinstance(value, (dict, list, tuple, set, frozenset, Mapping)):
            ident = id(value)
            if ident in self._active:
                return self._refuse(name, path, "holds itself", _RECURSIVE, value)
            self._active.add(ident)
            try:
                return self._container(value, name, path, depth)
            except UnloggableValue:
                raise
            except Exception as exc:  # a Mapping or sequence whose own code raised
                return self._refuse(name, path, f"cannot be read ({exc!r})", None, value)
            finally:
                self._active.discard(ident)
        return self._other(value, name, path, depth)

    def _container(self, value: Any, name: str, path: tuple[Any, ...], depth: int) -> Any:
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if type(key) is str:
                    text = _utf8(key) if self.text_floats else key
                else:
                    text = self._key(key, name, path)
                out[text] = self._form(item, name, (*path, key), depth + 1)
            return out
        items = list(value)
        if isinstance(value, (set, frozenset)):
            try:
                items.sort()
                how = "a sorted list"
            except TypeError:
                how = "a list"
            self._note(name, path, f"is a set; stored as {how}")
        return [self._form(item, name, (*path, i), depth + 1) for i, item in enumerate(items)]

    def _other(self, value: Any, name: str, path: tuple[Any, ...], depth: int) -> Any:
        if isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
            self._note(name, path, f"is {len(data)} bytes; stored as text")
            return data.decode("utf-8", "backslashreplace")
        if isinstance(value, os.PathLike):
            return self._form(os.fspath(value), name, path, depth)
        if isinstance(value, (datetime.date, datetime.time)):
            return value.isoformat()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
            return self._form(fields, name, path, depth)
        try:
            # numpy and torch: scalars and 0-d arrays through .item(), the rest .tolist().
            if getattr(value, "shape", None) == () or isinstance(value, numbers.Number):
                item = getattr(value, "item", None)
                if callable(item):
                    plain = item()
                    if type(plain) is not type(value):
                        return self._form(plain, name, path, depth)
            tolist = getattr(value, "tolist", None)
            if callable(tolist):
                return self._form(tolist(), name, path, depth + 1)
        except Exception:
            pass  # an array-like that cannot say what it holds: no JSON form
        if isinstance(value, (numbers.Real, decimal.Decimal)):  # Fraction, Decimal
            try:
                return self._form(float(value), name, path, depth)
            except (ValueError, OverflowError):
                pass
        return self._refuse(name, path, f"({type(value).__name__}) has no JSON form", None, value)

    def _big_int(self, value: int, name: str, path: tuple[Any, ...]) -> Any:
        # str() of an int past sys.int_info's digit limit raises: count them instead.
        text = str(value) if value.bit_length() < _MAX_DIGITS * 3 else None
        digits = len(text.lstrip("-")) if text else int(value.bit_length() * math.log10(2)) + 1
        shown = text if text is not None and digits <= 30 else f"an integer of {digits} digits"
        try:
            number = float(value)
        except OverflowError:
            self._note(name, path, f"= {shown} is beyond any float; stored as a string")
            return text if text is not None else shown
        self._note(name, path, f"= {shown} is beyond 64-bit; stored as float {number:.3g}")
        return number

    def _key(self, key: Any, name: str, path: tuple[Any, ...]) -> str:
        if key is None or isinstance(key, bool):
            text = {None: "null", True: "true", False: "false"}[key]
        elif isinstance(key, float):
            text = str(float_text(key)) if not math.isfinite(key) else repr(key)
        elif isinstance(key, (int, str)):
            text = str(int(key)) if isinstance(key, int) else str(key)
        else:
            if self.strict:
                raise UnloggableValue(
                    f"{_label(name, path)} has the key {key!r} ({type(key).__name__}); "
                    "expected string keys"
                )
            text = _repr(key)
        self._note(name, path, f"has the non-string key {key!r}; stored as {text!r}")
        return text

    def _refuse(
        self, name: str, path: tuple[Any, ...], why: str, stored: str | None, value: Any
    ) -> str:
        if self.strict:
            raise UnloggableValue(f"{_label(name, path)} {why}")
        text = stored if stored is not None else _repr(value)
        how = "its repr" if stored is None else repr(stored)
        self._note(name, path, f"{why}; stored as {how}")
        return text

    def _note(self, name: str, path: tuple[Any, ...], what: str) -> None:
        label = _label(name, path)
        self.notes.append((label, f"{label} {what}"))


def _utf8(text: str) -> str:
    """``text`` as UTF-8 can hold it: a lone surrogate (a file name's bad byte) escaped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _label(name: str, path: tuple[Any, ...]) -> str:
    keys = [f"[{key!r}]" for key in path]
    if len(keys) > 8:  # a deep path: its start and its end
        keys[4:-2] = ["[...]"]
    return name + "".join(keys)


def _repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


def json_form(value: Any) -> Any:
    """``value`` as plain data orjson writes as is (non-finite floats as text); never raises."""
    return Conversion(text_floats=True).convert(value, "value")
