"""The shape of an override's value text: where its commas split it, and function calls.

An override's value is YAML (``lr=1e-3``, ``layers=[64, 64]``); the multirun grammar
(:mod:`expman.config.multirun`) adds two shapes on top, Hydra's: a comma outside
quotes, brackets, braces and parentheses separates the values of a sweep
(``lr=0.01,0.1``), and ``name(arg, ...)`` calls one of :data:`SWEEP_FUNCTIONS`
(``batch_size=range(16,65,16)``). Both shapes are found here from the text alone, so
plain overrides can refuse them (without ``-m`` they would silently be strings) and the
multirun parser can take them apart. Quoting follows YAML, which types the values: a
quote opens a quoted string where a YAML flow value may start (at the beginning, after
a comma, a bracket, a colon or ``=``); inside ``"..."`` a backslash escapes the next
character, inside ``'...'`` a doubled ``''`` is one quote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The functions of the multirun grammar, in the order messages list them.
SWEEP_FUNCTIONS = ("choice", "range", "interval", "uniform", "loguniform", "randint")

_OPEN, _CLOSE = "[{(", "]})"
#: After these (spaces aside) a quote starts a quoted string rather than being a character.
_QUOTE_MAY_START = ",[{(:="
_CALL = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def _top_level(text: str) -> list[tuple[int, str]]:
    """``(index, char)`` of each character at the top level of ``text``.

    That is, outside quotes and outside any bracket, brace or parenthesis, plus the
    brackets that open and close a top-level group (so a call's parentheses are found).
    """
    out: list[tuple[int, str]] = []
    depth = 0
    quote = ""
    previous = ""  # the last character outside quotes that is not a space
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            if quote == '"' and char == "\\":
                i += 2
                continue
            if char == quote:
                if quote == "'" and text[i + 1 : i + 2] == "'":
                    i += 2
                    continue
                quote = ""
                previous = char
            i += 1
            continue
        if char in "'\"" and (previous == "" or previous in _QUOTE_MAY_START):
            quote = char
        elif char in _OPEN:
            if depth == 0:
                out.append((i, char))
            depth += 1
        elif char in _CLOSE:
            depth = max(depth - 1, 0)
            if depth == 0:
                out.append((i, char))
        elif depth == 0:
            out.append((i, char))
        if not char.isspace():
            previous = char
        i += 1
    return out


def split_top_level(text: str) -> list[str]:
    """The parts of ``text`` between its top-level commas (one part when it has none)."""
    parts: list[str] = []
    start = 0
    for i, char in _top_level(text):
        if char == ",":
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def has_top_level_comma(text: str) -> bool:
    """Whether ``text`` has a comma outside quotes, brackets, braces and parentheses."""
    return any(char == "," for _, char in _top_level(text))


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """``name(arg, ...)``: the function's name and its arguments' texts as written."""

    name: str
    args: tuple[str, ...]


def function_call(text: str) -> FunctionCall | None:
    """``text`` as one call ``name(...)`` (nothing after its closing parenthesis), or None."""
    match = _CALL.match(text)
    if match is None:
        return None
    opened = match.end() - 1
    closing = [i for i, char in _top_level(text) if char == ")" and i > opened]
    if not closing or text[closing[0] + 1 :].strip():
        return None
    inside = text[opened + 1 : closing[0]]
    args = () if not inside.strip() else tuple(split_top_level(inside))
    return FunctionCall(match.group(1), args)


def unclosed_call(text: str) -> str | None:
    """The name of a sweep function ``text`` starts but never closes (``choice(1,2``)."""
    match = _CALL.match(text)
    if match is None or match.group(1) not in SWEEP_FUNCTIONS:
        return None
    return match.group(1) if function_call(text) is None else None


def sweep_shape(text: str) -> str | None:
    """What makes the value ``text`` a sweep (a comma, a sweep function), or None."""
    if has_top_level_comma(text):
        return "an unquoted comma"
    call = function_call(text)
    if call is not None and call.name in SWEEP_FUNCTIONS:
        return f"the sweep function {call.name}(...)"
    return None
