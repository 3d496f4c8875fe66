"""YAML for the workspace's config snapshots (resolved.yaml, trial.yaml, run.yaml).

Every run writes a run.yaml and every trial a trial.yaml, so rendering them is on
the per-run path.  PyYAML's representer costs ~40 µs for a snapshot's head and a
few hundred µs for a trial's settings; :func:`dump_yaml` renders the usual content
(nested mappings and lists of strings, numbers, booleans and nulls) directly, in
PyYAML's block style, and hands anything else to PyYAML.  Whatever path it takes,
``yaml.safe_load`` reads back the data it was given (keys as strings, tuples as lists).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import orjson
import yaml

#: libyaml's emitter when PyYAML was built with it.
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

#: Strings YAML reads back as themselves when written plain (no quotes): a name,
#: an import path (``module:Class``), a relative path.
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./\-]*(?::[A-Za-z0-9_./\-]+)*")
#: YAML 1.1 words that a plain scalar would turn into a bool or null.
_SPECIAL = frozenset(("y", "n", "yes", "no", "on", "off", "true", "false", "null"))


#: Longer keys need YAML's explicit "? key" form (a reader refuses implicit keys over
#: 1024 characters; PyYAML's emitter switches at 128): PyYAML writes those documents.
_LONGEST_KEY = 128


class _NotPlain(Exception):
    """A value the direct renderer leaves to PyYAML."""


def dump_yaml(data: Any) -> bytes:
    """``data`` as block-style YAML (keys in their order), as bytes."""
    try:
        lines = _lines(data)
    except _NotPlain:
        return pyyaml_dump(data)
    return ("\n".join(lines) + "\n").encode()


def pyyaml_dump(data: Any) -> bytes:
    """``data`` through PyYAML (any mapping becomes a plain dict first)."""
    text: str = yaml.dump(_plain(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    return text.encode()


def _lines(value: Any) -> list[str]:
    """A block node's lines, unindented, laid out as PyYAML lays them out."""
    if isinstance(value, Mapping) and value:
        lines = []
        for key, item in value.items():
            if type(key) is not str or len(key) > _LONGEST_KEY:
                raise _NotPlain
            name = scalar(key)
            if _is_block(item):
                lines.append(f"{name}:")
                nested = _lines(item)
                # Nested mappings are indented; lists sit under their key's column.
                lines += [f"  {line}" for line in nested] if isinstance(item, Mapping) else nested
            else:
                lines.append(f"{name}: {scalar(item)}")
        return lines
    if isinstance(value, (list, tuple)) and value:
        lines = []
        for item in value:
            if _is_block(item):
                first, *rest = _lines(item)
                lines.append(f"- {first}")
                lines += [f"  {line}" for line in rest]
            else:
                lines.append(f"- {scalar(item)}")
        return lines
    return [scalar(value)]


def _is_block(value: Any) -> bool:
    return isinstance(value, (Mapping, list, tuple)) and len(value) > 0


def scalar(value: Any) -> str:
    """``value`` as a YAML scalar that reads back the same; _NotPlain if it cannot."""
    kind = type(value)
    if isinstance(value, str) and kind is str:
        if _PLAIN.fullmatch(value) and value.lower() not in _SPECIAL:
            return value
        if value.isprintable():  # JSON's double-quoted strings are YAML's too
            return orjson.dumps(value).decode()
    elif value is None:
        return "null"
    elif kind is bool:
        return "true" if value else "false"
    elif kind is int:
        return str(value)
    elif kind is float:
        return _float(value)
    elif isinstance(value, Mapping) and not value:
        return "{}"
    elif isinstance(value, (list, tuple)) and not value:
        return "[]"
    raise _NotPlain


def _float(value: float) -> str:
    # YAML 1.1 (PyYAML) reads a float only with a dot: 1e-05 must be 1.0e-05.
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    if "." not in text and "e" in text:
        mantissa, _, exponent = text.partition("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
