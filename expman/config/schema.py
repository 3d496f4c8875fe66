"""What each config file may hold, checked before anything runs.

Every check raises a :class:`~expman.errors.ConfigError` naming the file, the key
path, its line and what was expected (through the :class:`ErrorSite` it is given).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from expman.config.loading import join_key
from expman.direction import infer_mode
from expman.errors import ConfigError

EXECUTORS = ("local", "async", "thread", "process", "ray")

EXPERIMENT_KEYS = {
    "name",
    "id",
    "desc",
    "settings",
    "execution",
    "subscribers",
    "search",
    "pruning",
    "integrations",
}
BASE_KEYS = {"settings"}
TRIAL_KEYS = {"name", "id", "desc", "repeat", "settings", "resources", "sweep"}
ENV_KEYS = {"workspace", "execution", "max_concurrency", "devices", "subscribers", "integrations"}
EXECUTION_KEYS = {
    "executor",
    "max_concurrency",
    "max_retries",
    "fail_fast",
    "timeout",
    "stall_timeout",
    "grace_period",
    "devices",
    "ray",
}
RESOURCE_KEYS = {"cpus", "gpus"}
#: Names that would collide with expman's own folders inside ``trials/``.
RESERVED_TRIAL_NAMES = {"logs", "configs", "artifacts"}


class ErrorSite(Protocol):
    """Where a checked value was written: turns its key path and a message into an error.

    A :class:`~expman.config.loading.YamlDocument` is one; so is a trial entry's source,
    which also names the trial when an expander generated it.
    """

    def error(self, key: str, message: str) -> ConfigError: ...


@dataclass(frozen=True, slots=True)
class ExecutionSettings:
    """How runs execute: backend, concurrency and failure policies."""

    executor: str = "local"
    max_concurrency: int | None = None
    max_retries: int = 0
    fail_fast: bool = False
    timeout: float | None = None
    stall_timeout: float | None = None
    grace_period: float = 10.0
    devices: tuple[str, ...] | None = None
    ray: Mapping[str, Any] = field(default_factory=dict)


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters: a message quotes, never floods."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def type_name(value: object) -> str:
    """A user-facing name for the type of a YAML value."""
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def expect_mapping(
    doc: ErrorSite, key: str, value: object, *, allow_null: bool = True
) -> dict[str, Any]:
    if value is None and allow_null:
        return {}
    if not isinstance(value, dict):
        raise doc.error(key, f"expected a mapping, got {type_name(value)}")
    return value


def check_keys(
    doc: ErrorSite,
    key: str,
    mapping: Mapping[str, Any],
    allowed: set[str],
    required: set[str] = frozenset(),  # type: ignore[assignment]
) -> None:
    for k in mapping:
        if not isinstance(k, str):
            raise doc.error(key, f"keys must be strings, got {type_name(k)} {shown(k)}")
        if k not in allowed:
            raise doc.error(
                join_key(key, k), f"unknown key; expected one of: {', '.join(sorted(allowed))}"
            )
    for k in sorted(required):
        if k not in mapping:
            raise doc.error(key, f"missing required key '{k}'")


def check_name(doc: ErrorSite, key: str, value: object) -> str:
    """A name that is safe as one directory name."""
    if not isinstance(value, str):
        raise doc.error(key, f"expected a string, got {type_name(value)}")
    problem = name_problem(value)
    if problem:
        raise doc.error(key, f"{shown(value)} is not usable as a directory name: {problem}")
    return value


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a directory name, or None."""
    if not value.strip():
        return "it is empty"
    if value in (".", ".."):
        return "it is a relative path"
    if "/" in value or "\\" in value or os.sep in value:
        return "it contains a path separator"
    if ".." in value:
        return "it contains '..'"
    if _CONTROL.search(value):
        return "it contains a control character"
    if len(value.encode()) > 200:
        return "it is longer than 200 bytes"
    return None


def check_id(doc: ErrorSite, key: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise doc.error(key, f"expected a string or an integer, got {type_name(value)}")
    text = str(value)
    if not text.strip():
        raise doc.error(key, "expected a non-empty id")
    return text


def check_int(doc: ErrorSite, key: str, value: object, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise doc.error(key, f"expected an integer, got {type_name(value)} {shown(value)}")
    if minimum is not None and value < minimum:
        raise doc.error(key, f"expected an integer >= {minimum}, got {value}")
    return value


def check_number(doc: ErrorSite, key: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise doc.error(key, f"expected a number, got {type_name(value)} {shown(value)}")
    if not math.isfinite(value):
        raise doc.error(key, f"expected a finite number, got {shown(value)}")
    if positive and value <= 0:
        raise doc.error(key, f"expected a number > 0, got {value}")
    return float(value)


def check_bool(doc: ErrorSite, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise doc.error(key, f"expected true or false, got {type_name(value)} {shown(value)}")
    return value


def check_mode(doc: ErrorSite, key: str, raw: object, metric: str) -> Literal["min", "max"]:
    """``min``/``max`` as written, or from ``metric``'s name for ``auto``."""
    if raw == "auto":
        inferred = infer_mode(metric)
        if inferred is None:
            raise doc.error(
                key,
                f"cannot tell from the name {metric!r} whether lower or higher is better;"
                " expected mode: min or mode: max (or is the metric misspelt?)",
            )
        return inferred
    if raw not in ("min", "max"):
        raise doc.error(key, f"expected min, max or auto, got {type_name(raw)} {shown(raw)}")
    return "min" if raw == "min" else "max"


def check_execution(doc: ErrorSite, key: str, value: object) -> dict[str, Any]:
    """The ``execution`` block as validated plain values (only the keys given)."""
    block = expect_mapping(doc, key, value)
    check_keys(doc, key, block, EXECUTION_KEYS)
    out: dict[str, Any] = {}
    for k, v in block.items():
        at = join_key(key, k)
        if k == "executor":
            if v not in EXECUTORS:
                raise doc.error(at, f"expected one of {', '.join(EXECUTORS)}, got {shown(v)}")
            out[k] = v
        elif k == "max_concurrency":
            out[k] = check_int(doc, at, v, minimum=1)
        elif k == "max_retries":
            out[k] = check_int(doc, at, v, minimum=0)
        elif k == "fail_fast":
            out[k] = check_bool(doc, at, v)
        elif k in ("timeout", "stall_timeout"):
            out[k] = None if v is None else check_number(doc, at, v, positive=True)
        elif k == "grace_period":
            out[k] = check_number(doc, at, v)
        elif k == "devices":
            out[k] = check_devices(doc, at, v)
        elif k == "ray":
            out[k] = expect_mapping(doc, at, v)
    return out


def check_devices(doc: ErrorSite, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise doc.error(key, f"expected a list of device ids, got {type_name(value)}")
    devices = []
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise doc.error(join_key(key, i), f"expected a device id, got {type_name(item)}")
        devices.append(str(item))
    if len(set(devices)) != len(devices):
        raise doc.error(key, "device ids must be unique")
    return tuple(devices)


def check_resources(doc: ErrorSite, key: str, value: object) -> dict[str, float]:
    block = expect_mapping(doc, key, value)
    check_keys(doc, key, block, RESOURCE_KEYS)
    out: dict[str, float] = {}
    for k, v in block.items():
        at = join_key(key, k)
        number = check_number(doc, at, v)
        if number < 0:
            raise doc.error(at, f"expected a number >= 0, got {v}")
        if k == "gpus" and number > 1 and not float(number).is_integer():
            raise doc.error(at, f"a fraction of a GPU must be below 1, got {v}")
        out[k] = number
    return out
