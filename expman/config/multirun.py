"""The multirun command line: ``expman run CFG -m lr=0.01,0.1 'bs=range(16,65,16)'``.

With ``-m``, an override whose value is a sweep becomes an axis of a sweep block of
exactly the YAML form of a trials.yaml ``sweep:`` entry (which
:mod:`expman.config.distributions` reads); the other overrides stay plain. The forms,
Hydra's where the meaning is the same:

=================================  =====================================  =======
override                           axis of the sweep block                kind
=================================  =====================================  =======
``lr=0.01,0.1``                    ``lr: [0.01, 0.1]``                    grid
``act=choice(relu,gelu)``          ``act: {choice: [relu, gelu]}``        grid
``bs=range(16,65,16)``             ``bs: {range: [16, 65, 16]}``          grid
``p=interval(0,1)``, ``uniform``   ``p: {uniform: [0, 1]}``               random
``wd=loguniform(1e-6,1e-2)``       ``wd: {loguniform: [1.0e-06, 0.01]}``  random
``warmup=randint(0,10)``           ``warmup: {randint: [0, 10]}``         random
=================================  =====================================  =======

Values are typed as plain overrides type them (YAML: ``1e-6`` is a float, ``true`` a
boolean, ``null`` null, ``"a,b"`` the string ``a,b``). Keys are settings paths:
``lr`` and ``settings.lr`` are the same key; ``execution.*`` cannot be swept. Random
axes draw ``--samples N`` times (``random.samples``). Every mistake is a ConfigError
naming ``<command line>``, the override and the key.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from expman.config.distributions import parse_distribution
from expman.config.loading import MAX_DEPTH
from expman.config.override_syntax import (
    SWEEP_FUNCTIONS,
    FunctionCall,
    function_call,
    has_top_level_comma,
    split_top_level,
)
from expman.config.overrides import COMMAND_LINE, parse_value, refuse_unclosed
from expman.errors import ConfigError

#: Each function's parameters (a call may name them, as in Hydra) and the YAML form
#: it becomes; ``choice`` takes any number of values.
_PARAMETERS: dict[str, tuple[str, ...]] = {
    "range": ("start", "stop", "step"),
    "interval": ("start", "end"),
    "uniform": ("low", "high"),
    "loguniform": ("low", "high"),
    "randint": ("low", "high"),
}
_FORM = {"interval": "uniform"}
_RANDOM = frozenset({"interval", "uniform", "loguniform", "randint"})
#: Hydra's other functions: named, so a user coming from Hydra learns they are not here.
_HYDRA_ONLY = ("glob", "tag", "sort", "shuffle", "int", "float", "str", "bool", "extend_list")


@dataclass(frozen=True, slots=True)
class Multirun:
    """The command line split: plain overrides and the sweep block (None: no axis)."""

    overrides: tuple[str, ...]
    sweep: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class _Override:
    """One ``key=value`` of the command line, for messages."""

    item: str
    key: str  # the settings path, without ``settings.``

    @property
    def shown_key(self) -> str:
        return f"settings.{self.key}"

    def error(self, key: str, message: str) -> ConfigError:
        """An ErrorSite for :func:`parse_distribution`: the override and its key."""
        del key  # the distribution's inner path (``lr.range[2]``) is the override's text
        return ConfigError(
            f"override {_shown(self.item)}: {message}", file=COMMAND_LINE, key=self.shown_key
        )


def parse_multirun(overrides: Sequence[str], *, samples: int | None = None) -> Multirun:
    """Split ``-m``'s overrides into plain ones and a sweep block; ConfigError on mistakes.

    ``samples`` is ``--samples``: how many draws the random axes get (needed exactly
    when there is a random axis).
    """
    plain: list[str] = []
    grid: dict[str, Any] = {}
    random: dict[str, Any] = {}
    seen: dict[str, str] = {}
    plain_keys: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        axis = _axis(item, value) if sep else None
        if axis is None:
            plain.append(item)  # parse_overrides checks it (and its key) like any override
            plain_keys.setdefault(_settings_path(key.strip()), item)
            continue
        override = _Override(item, _swept_key(item, key.strip()))
        if override.key in seen:
            raise override.error(
                "", f"the key is swept twice (also by {_shown(seen[override.key])})"
            )
        seen[override.key] = item
        form, is_random = _form(override, axis)
        parse_distribution(override, override.key, form, grid=not is_random)
        (random if is_random else grid)[override.key] = form
    for key, item in seen.items():
        if key in plain_keys:
            raise _Override(item, key).error(
                "", f"the key is both swept and set by {_shown(plain_keys[key])}; keep one"
            )
    return Multirun(tuple(plain), _sweep_block(grid, random, samples))


def _axis(item: str, value: str) -> list[str] | FunctionCall | None:
    """The sweep ``value`` spells (its values, or a call), or None for a plain value."""
    if has_top_level_comma(value):
        return split_top_level(value)
    call = function_call(value)
    if call is None:
        refuse_unclosed(item, _settings_key(item), value)
        return None
    if call.name in SWEEP_FUNCTIONS:
        return call
    if call.name in _HYDRA_ONLY:
        raise ConfigError(
            f"override {_shown(item)}: Hydra's {call.name}(...) is not supported;"
            f" expected one of: {_listed()}"
            + ("; for a log scale write loguniform(lo,hi)" if call.name == "tag" else ""),
            file=COMMAND_LINE,
            key=_settings_key(item),
        )
    close = difflib.get_close_matches(call.name, SWEEP_FUNCTIONS, n=1, cutoff=0.75)
    if close:
        raise ConfigError(
            f"override {_shown(item)}: unknown sweep function {call.name!r}"
            f" (did you mean {close[0]!r}?); expected one of: {_listed()}",
            file=COMMAND_LINE,
            key=_settings_key(item),
        )
    return None  # some other text with parentheses (act=gelu(x)): a plain string


def _form(override: _Override, axis: list[str] | FunctionCall) -> tuple[Any, bool]:
    """The YAML form of one axis and whether it is a random one."""
    if isinstance(axis, list):
        return _values(override, axis, "between commas"), False
    if axis.name == "choice":
        if not axis.args:
            raise override.error("", "choice() needs at least one value")
        return {"choice": _values(override, list(axis.args), "in choice(...)")}, False
    args = _arguments(override, axis)
    return {_FORM.get(axis.name, axis.name): args}, axis.name in _RANDOM


def _values(override: _Override, texts: list[str], where: str) -> list[Any]:
    """Each text typed as an override value; an empty one or a nested sweep is refused."""
    out = []
    for text in texts:
        if not text.strip():
            raise override.error("", f'an empty value {where}; to pass an empty string, write ""')
        call = function_call(text)
        if call is not None and call.name in SWEEP_FUNCTIONS:
            raise override.error(
                "", f"{call.name}(...) inside a sweep; expected plain values {where}"
            )
        out.append(parse_value(override.item, override.shown_key, text))
    return out


def _arguments(override: _Override, call: FunctionCall) -> list[Any]:
    """The arguments of ``range``/``interval``/... in order, named ones put in place."""
    names = _PARAMETERS[call.name]
    signature = f"{call.name}({', '.join(names)})"
    values: dict[str, Any] = {}
    named = False
    for position, text in enumerate(call.args):
        name, sep, rest = text.partition("=")
        if sep and name.strip().isidentifier():
            named = True
            name = name.strip()
            if name not in names:
                raise override.error("", f"{signature} has no parameter {name!r}")
            if name in values:
                raise override.error("", f"{signature}: {name!r} is given twice")
            text = rest
        elif named:
            raise override.error("", f"{signature}: a positional argument after a named one")
        elif position >= len(names):
            raise override.error(
                "", f"{signature} takes at most {len(names)} arguments, got {len(call.args)}"
            )
        else:
            name = names[position]
        if not text.strip():
            raise override.error("", f"{signature}: the argument {name!r} is empty")
        values[name] = parse_value(override.item, override.shown_key, text)
    required = names[:2]
    missing = [n for n in required if n not in values]
    if missing:
        raise override.error("", f"{signature}: missing {', '.join(map(repr, missing))}")
    return [values[n] for n in names if n in values]


def _sweep_block(
    grid: dict[str, Any], random: dict[str, Any], samples: int | None
) -> dict[str, Any] | None:
    """The sweep block of the axes; ``--samples`` needs a random axis and the reverse."""
    if random and samples is None:
        key = next(iter(random))
        raise ConfigError(
            f"a random axis draws its values: add --samples N (how many draws), e.g."
            f" --samples 8; or sweep a grid ({key}=a,b or range(...))",
            file=COMMAND_LINE,
            key=f"settings.{key}",
        )
    if samples is not None:
        if not random:
            raise ConfigError(
                "draws from random axes, and no override is one; expected an override"
                " such as 'lr=loguniform(1e-5,1e-1)' (interval, uniform, loguniform, randint)",
                file=COMMAND_LINE,
                key="--samples",
            )
        if isinstance(samples, bool) or samples < 1:
            raise ConfigError(
                f"expected an integer >= 1, got {samples}", file=COMMAND_LINE, key="--samples"
            )
    block: dict[str, Any] = {}
    if grid:
        block["grid"] = grid
    if random:
        block["random"] = {"samples": samples, **random}
    return block or None


def _swept_key(item: str, key: str) -> str:
    """The settings path a swept override names; an execution key or empty part refused."""
    parts = key.split(".")
    if not key or not all(part.strip() for part in parts):
        raise ConfigError(
            f"override {_shown(item)}: the key {key!r} has an empty part;"
            " expected a dotted key such as settings.lr",
            file=COMMAND_LINE,
            key=key or None,
        )
    if parts[0] == "execution":
        raise ConfigError(
            f"override {_shown(item)}: execution settings cannot be swept (every trial"
            " shares them); expected a settings key such as lr or model.depth",
            file=COMMAND_LINE,
            key=key,
        )
    path = _settings_path(key)
    if not path:
        raise ConfigError(
            f"override {_shown(item)}: expected a key inside the settings, such as settings.lr",
            file=COMMAND_LINE,
            key=key,
        )
    if len(path.split(".")) > MAX_DEPTH:
        raise ConfigError(
            f"override {_shown(item)}: the key nests deeper than {MAX_DEPTH} levels",
            file=COMMAND_LINE,
        )
    return path


def _settings_path(key: str) -> str:
    """``settings.lr`` and ``lr`` as the same settings path, ``lr``."""
    if key == "settings":
        return ""
    return key[len("settings.") :] if key.startswith("settings.") else key


def _settings_key(item: str) -> str:
    key = item.partition("=")[0].strip()
    return key if key.startswith(("settings.", "execution.")) else f"settings.{key}"


def _listed() -> str:
    return ", ".join(f"{name}(...)" for name in SWEEP_FUNCTIONS) + ", a,b,c"


def _shown(text: str, limit: int = 60) -> str:
    """``repr(text)``, cut to ``limit`` characters (an override may be kilobytes long)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"
