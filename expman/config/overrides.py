"""Changes the caller makes over every trial: override strings and typed values.

Two forms, applied in this order over the config files (a later one wins)::

    overrides=["lr=1e-3", "execution.timeout=60"]     strings, values parsed as YAML
    values={"execution": {"timeout": None}, "lr": 0.1} Python values, taken as they are

A key starting with ``execution.`` changes the execution settings, one starting with
``settings.`` (or any other key) the run settings; in ``values`` the keys
``execution`` and ``settings`` also take a whole mapping of changes. A top-level key
of ``values`` may be dotted (``"optimizer.lr"``) or nested (``{"optimizer": {"lr":
...}}``), both meaning the same (keys inside a nested mapping are taken literally);
mappings merge key by key, anything else replaces. A value must be what YAML could have given
(null, a boolean, a number, a string, a list, or a mapping with string keys; a tuple
is taken as a list), so ``None`` is YAML's ``null``, never the string ``'None'``.
Execution changes get the same checks as an ``execution`` block in a file; a mistake
names ``<command line>`` or ``<values>`` and the key (``execution.timeout``).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from expman.config.loading import MAX_DEPTH, YamlDocument, int_problem, join_key
from expman.config.merging import deep_merge
from expman.config.override_syntax import sweep_shape, unclosed_call
from expman.config.schema import check_execution, type_name
from expman.config.specs import Layer
from expman.errors import ConfigError

COMMAND_LINE = Path("<command line>")
VALUES = Path("<values>")
#: experiment.yaml's blocks that are not settings: ``pruning.x=1`` is refused, never a
#: new setting ``pruning`` that nothing reads (``settings.pruning.x=1`` is that).
EXPERIMENT_BLOCKS = frozenset({"pruning", "search"})


@dataclass(frozen=True, slots=True)
class CallerChanges:
    """Settings and execution changes from one of the caller's sources, as plain data."""

    origin: Path
    settings: Mapping[str, Any]
    execution: Mapping[str, Any]

    def layer(self) -> Layer:
        """The settings as the last layers of every trial."""
        doc = YamlDocument(self.origin, self.settings)
        return Layer(doc, "settings", self.settings, caller=True)

    def checked_execution(self) -> dict[str, Any]:
        """The execution changes, validated like an ``execution`` block in a file."""
        if not self.execution:
            return {}
        block = dict(self.execution)
        return check_execution(YamlDocument(self.origin, {"execution": block}), "execution", block)


def parse_overrides(overrides: Sequence[str]) -> CallerChanges:
    """Split ``KEY=VALUE`` strings into settings and execution changes."""
    settings: list[str] = []
    execution: list[str] = []
    for item in overrides:
        key, sep, _value = item.partition("=")
        key = key.strip()
        if not sep or not key or key.startswith(".") or key.endswith("."):
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. settings.lr=0.01)",
                file=COMMAND_LINE,
            )
        _check_override_key(item, key)
        _refuse_sweep(item, key, _value)
        block = key.split(".", 1)[0]
        if block in EXPERIMENT_BLOCKS:
            raise ConfigError(
                f"override {item!r}: the {block} block of experiment.yaml is not changed from"
                f" the command line (edit experiment.yaml); a setting named {block!r} is"
                f" written settings.{key}",
                file=COMMAND_LINE,
                key=key,
            )
        if key.startswith("execution."):
            execution.append(item[len("execution.") :])
        elif key.startswith("settings."):
            settings.append(item[len("settings.") :])
        else:
            settings.append(item)
    try:
        parsed_settings = OmegaConf.to_container(OmegaConf.from_dotlist(settings), resolve=False)
        parsed_execution = OmegaConf.to_container(OmegaConf.from_dotlist(execution), resolve=False)
    except Exception as exc:  # OmegaConf or the YAML parser under it (lr=[1,2)
        raise _override_error(overrides, exc) from None
    assert isinstance(parsed_settings, dict)
    assert isinstance(parsed_execution, dict)
    # What YAML gave that the rest of expman cannot hold (x=!!binary ..., a 70-bit int).
    for section, parsed in (("settings", parsed_settings), ("execution", parsed_execution)):
        for k, v in parsed.items():
            _plain(v, join_key(section, k), 1, origin=COMMAND_LINE)
    return CallerChanges(COMMAND_LINE, parsed_settings, parsed_execution)  # type: ignore[arg-type]


def _check_override_key(item: str, key: str) -> None:
    """Refuse a key with an empty part (``settings..x``) or nesting past MAX_DEPTH."""
    parts = key.split(".")
    if not all(part.strip() for part in parts):
        raise ConfigError(
            f"override {item!r}: the key {key!r} has an empty part;"
            " expected a dotted key such as settings.lr or execution.timeout",
            file=COMMAND_LINE,
            key=key,
        )
    if len(parts) > MAX_DEPTH:
        raise ConfigError(
            f"override {_shown(item)}: the key has {len(parts)} parts;"
            f" expected at most {MAX_DEPTH} (nesting deeper than {MAX_DEPTH} levels)",
            file=COMMAND_LINE,
        )


def refuse_unclosed(item: str, key: str, value: str) -> None:
    """Refuse ``value`` if it starts a sweep function and never closes it (``choice(1,2``)."""
    unclosed = unclosed_call(value)
    if unclosed is not None:
        raise ConfigError(
            f"override {_shown(item)}: {unclosed}( is not closed (or text follows its ')');"
            f" expected {unclosed}(...) with its closing parenthesis at the end",
            file=COMMAND_LINE,
            key=key,
        )


def _refuse_sweep(item: str, key: str, value: str) -> None:
    """Refuse a value that is a sweep (``lr=0.01,0.1``): outside ``-m`` it is a mistake.

    YAML alone would read it as the string ``'0.01,0.1'``, which is never what was meant.
    """
    refuse_unclosed(item, key, value)
    shape = sweep_shape(value)
    if shape is None:
        return
    text = value.strip()
    short = len(text) <= 40
    hints = [] if key.startswith("execution.") else ["to sweep, add -m (from Python: sweep=)"]
    if shape == "an unquoted comma" and short:
        hints.append(f"for a list, write {key}=[{text}]")
    quoted = f"'{key}=\"{text}\"'" if short and '"' not in text else "the value"
    hints.append(f"to pass a string, quote it: {quoted}")
    raise ConfigError(
        f"override {_shown(item)} has {shape}, which makes it a sweep; {'; '.join(hints)}",
        file=COMMAND_LINE,
        key=key,
    )


def parse_value(item: str, key: str, text: str) -> Any:
    """The value the text of one override value stands for, typed as in ``key=text``.

    The multirun parser types each value of a sweep with it, so ``lr=1e-3,1e-2`` gives
    the same numbers as ``lr=1e-3`` and ``lr=1e-2`` would. ``item`` (the whole override)
    and ``key`` name a mistake.
    """
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={text}"]), resolve=False)
    except Exception as exc:  # OmegaConf or the YAML parser under it
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"override {_shown(item)}: cannot parse value {_shown(text.strip())} ({reason});"
            " expected a YAML value (quote strings with brackets or colons)",
            file=COMMAND_LINE,
            key=key,
        ) from None
    assert isinstance(parsed, dict)
    return _plain(parsed.get("value"), key, 1, origin=COMMAND_LINE)


def check_values(values: Mapping[str, Any]) -> CallerChanges:
    """Typed changes (dotted or nested keys) as settings and execution changes."""
    if not isinstance(values, Mapping):
        raise _value_error(None, f"expected a mapping of keys to values, got {type_name(values)}")
    settings: dict[str, Any] = {}
    execution: dict[str, Any] = {}
    for key, value in values.items():
        parts = _key_parts(key)
        section = parts[0] if parts[0] in ("execution", "settings") else "settings"
        target = execution if section == "execution" else settings
        if parts[0] == section:
            parts = parts[1:]
        where = ".".join((section, *parts))
        plain = _plain(value, where, 0)
        if not parts:
            if not isinstance(plain, dict):
                raise _value_error(where, f"expected a mapping, got {type_name(plain)}")
            target.update(deep_merge([target, plain]))
        else:
            _set(target, parts, plain)
    return CallerChanges(VALUES, settings, execution)


def _key_parts(key: object) -> list[str]:
    if not isinstance(key, str):
        raise _value_error(None, f"keys must be strings, got {type_name(key)} {key!r}")
    parts = key.split(".")
    if not all(p.strip() for p in parts):
        raise _value_error(
            None, f"key {key!r}: expected a dotted key such as 'lr' or 'execution.timeout'"
        )
    return parts


def _set(target: dict[str, Any], parts: Sequence[str], value: Any) -> None:
    """Put ``value`` at ``parts`` (a later value wins; mappings merge)."""
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    last = parts[-1]
    current = target.get(last)
    if isinstance(current, dict) and isinstance(value, dict):
        target[last] = deep_merge([current, value])
    else:
        target[last] = value


def _plain(value: Any, where: str, depth: int, origin: Path = VALUES) -> Any:
    """``value`` as YAML would give it; anything YAML cannot hold is refused at ``where``.

    So is what expman cannot store: an integer beyond 64 bits.
    """
    if depth > MAX_DEPTH:
        raise ConfigError(f"nesting deeper than {MAX_DEPTH} levels", file=origin, key=where)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        problem = int_problem(int(value))
        if problem is not None:
            raise ConfigError(problem, file=origin, key=where)
        return int(value)
    if isinstance(value, numbers.Real):  # a float or a NumPy floating scalar
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, join_key(where, i), depth + 1, origin) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(
                    f"keys must be strings, got {type_name(k)} {k!r}", file=origin, key=where
                )
            out[k] = _plain(v, join_key(where, k), depth + 1, origin)
        return out
    shown = repr(value)
    raise ConfigError(
        "expected a value YAML can hold (null, a boolean, a number, a string, a list or"
        f" a mapping), got {type(value).__name__} {shown[:80]}",
        file=origin,
        key=where,
    )


def _shown(text: str, limit: int = 60) -> str:
    """``repr(text)``, cut to ``limit`` characters (an override may be kilobytes long)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _value_error(key: str | None, message: str) -> ConfigError:
    return ConfigError(message, file=VALUES, key=key)


def _override_error(overrides: Sequence[str], exc: Exception) -> ConfigError:
    """A ConfigError naming the first override that does not parse on its own."""
    for item in overrides:
        key, _, value = item.partition("=")
        try:
            OmegaConf.from_dotlist([item])
        except Exception as own:  # any parser failure is the user's value
            reason = str(own).splitlines()[0] if str(own) else type(own).__name__
            return ConfigError(
                f"override {_shown(item)}: cannot parse value {_shown(value)} ({reason});"
                " expected a YAML value (quote strings with brackets or colons)",
                file=COMMAND_LINE,
                key=key.strip(),
            )
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError(f"cannot parse overrides: {reason}", file=COMMAND_LINE)
