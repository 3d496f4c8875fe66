"""Text from elsewhere, made safe to show: on a terminal, and in a spreadsheet.

:func:`printable` is the one gate between text someone else wrote (trial names,
metric keys, error messages, anything read back from a workspace) and a terminal:
control characters come out escaped (``\\x1b``), never raw, so no name can move the
cursor, retitle the window, hide a line or reorder it (bidirectional overrides).
Every output boundary uses it: the displays' writes, every table cell
(:mod:`expman.tablefit`), the results commands, the CLI's messages.
:func:`printable_json` does the same for JSON text, which stays the same JSON.
:func:`csv_cell` keeps a CSV cell from starting a formula (CSV injection).

No third-party import: the CLI loads it before anything else.
"""

from __future__ import annotations

import re
from typing import Any

#: What a terminal would act on rather than show: C0 controls, DEL, C1 controls (CSI
#: among them), bidirectional overrides and isolates, Unicode's line separators.
_CONTROLS = r"\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_UNPRINTABLE = re.compile(rf"[\x00-\x1f{_CONTROLS}]")
_UNPRINTABLE_BUT_NEWLINE = re.compile(rf"[\x00-\x09\x0b-\x1f{_CONTROLS}]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` with every control character escaped (``\\x1b``, ``\\u202e``), as shown.

    ``newlines=True`` keeps line breaks, for text meant to span lines (a summary, an
    error with its cause); everything else is escaped, a newline included.
    """
    pattern = _UNPRINTABLE_BUT_NEWLINE if newlines else _UNPRINTABLE
    if pattern.search(text) is None:  # the usual case: nothing to build
        return text
    return pattern.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


#: The characters that JSON text (orjson's) may still hold raw: C0 is escaped already.
_UNPRINTABLE_IN_JSON = re.compile(f"[{_CONTROLS}]")


def printable_json(text: str) -> str:
    """JSON text with the controls its strings may hold raw written as ``\\u009b``.

    The same JSON (the escapes mean the same characters), safe on a terminal.
    """
    if _UNPRINTABLE_IN_JSON.search(text) is None:
        return text
    return _UNPRINTABLE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


#: Cells a spreadsheet would read as a formula (OWASP's list, CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value: Any) -> Any:
    """A CSV cell no spreadsheet runs: text that could start a formula gets a ``'`` first.

    Numbers stay numbers (-0.5 is -0.5), and so does text that is only a number.
    """
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        if _NUMBER.fullmatch(value) is None:
            return "'" + value
    return value
