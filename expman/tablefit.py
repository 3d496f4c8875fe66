"""Tables that fit the terminal: columns placed by priority, the rest in a later part.

Shared by the results commands and the end-of-run summary, so a table of trials or
runs reads the same wherever it is printed.  A table is a sequence of
:class:`Column`; each says where it may go:

* ``key`` columns name the row (the trial, the run).  They are shown whole, never
  wrapped, and repeated at the left of every part, so each part can be read alone.
* ``first`` columns (the ranked metric, a run's status) are always in the first part.
* ``any`` columns go into the first part while there is room, in ``priority`` order
  (lower first; the order given among equals); those that do not fit make up a
  second part (and a third, ...), printed below the first with the key columns again.

A column is shown whole unless it ``wrap``s: then it folds its text into the room
left over (between its ``min_width`` and its natural width).  Parts keep the columns
in the order given.  Without a width (output that is not a terminal) there is one
part with every column at its natural width and nothing wraps.

:func:`print_table` prints a :class:`Sheet`'s parts without trailing spaces.

Cells and headers are shown as written: control characters escaped
(:func:`~expman.formatting.printable`), no rich markup (``[red]``) or emoji codes
read in a name, a metric key or an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from expman.formatting import printable

#: Spaces between two columns.
GAP = 2

#: The narrowest a wrapping column is made, unless it says otherwise.
MIN_WRAP = 12

Cell = str | Text
Place = Literal["key", "first", "any"]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table: its header, one cell per row, and where it may go."""

    header: str
    cells: Sequence[Cell]
    justify: Literal["left", "right"] = "left"
    place: Place = "any"
    priority: int = 0
    wrap: bool = False
    min_width: int = MIN_WRAP
    #: The width of its widest cell (or header), unwrapped.
    natural: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", printable(self.header))
        object.__setattr__(self, "cells", [_shown(cell) for cell in self.cells])
        widths = [_width(cell) for cell in self.cells]
        object.__setattr__(self, "natural", max([cell_len(self.header), *widths, 1]))

    @property
    def least(self) -> int:
        """The narrowest it may be made: its natural width unless it wraps."""
        return min(self.natural, self.min_width) if self.wrap else self.natural


def _shown(cell: Cell) -> Text:
    """A cell as literal text: escaped controls; a str is never read as markup."""
    if isinstance(cell, Text):
        plain = cell.plain
        safe = printable(plain)
        return cell if safe is plain else Text(safe, style=cell.style)
    return Text(printable(cell))


def _width(cell: Cell) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(cell)


@dataclass(frozen=True, slots=True)
class Sheet:
    """A table before it is fitted: its columns, and a style per row (may be shorter)."""

    columns: tuple[Column, ...]
    row_styles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Placed:
    """A column in one part of a table, with the width it gets there.

    ``wraps``: its text folds at that width (a wrapping column, or one too wide for
    any part, which then gets a part of its own beside the key columns).
    """

    column: Column
    width: int
    wraps: bool = False


def fit(columns: Sequence[Column], width: int | None) -> list[list[Placed]]:
    """The parts ``columns`` make at ``width`` (None: one part, natural widths)."""
    if width is None:
        return [[Placed(c, c.natural) for c in columns]]
    order = {id(c): i for i, c in enumerate(columns)}
    keys = [c for c in columns if c.place == "key"]
    first = [c for c in columns if c.place == "first"]
    pool = sorted((c for c in columns if c.place == "any"), key=lambda c: c.priority)
    parts = []
    chosen, rest = _fill(keys + first, pool, width)
    parts.append(_widths(sorted(chosen, key=lambda c: order[id(c)]), width))
    while rest:
        chosen, rest = _fill(keys, rest, width)
        forced = None
        if len(chosen) == len(keys):  # the next column is wider than the room: it folds
            forced, rest = rest[0], rest[1:]
            chosen = [*keys, forced]
        parts.append(_widths(sorted(chosen, key=lambda c: order[id(c)]), width, forced))
    return parts


def _fill(
    chosen: list[Column], pool: Sequence[Column], width: int
) -> tuple[list[Column], list[Column]]:
    """``chosen`` and what of ``pool`` fits beside it; the columns left over."""
    chosen = list(chosen)
    used = sum(c.least for c in chosen) + GAP * max(len(chosen) - 1, 0)
    rest = []
    for column in pool:
        need = column.least + (GAP if chosen else 0)
        if used + need <= width:
            chosen.append(column)
            used += need
        else:
            rest.append(column)
    return chosen, rest


def _widths(columns: Sequence[Column], width: int, forced: Column | None = None) -> list[Placed]:
    """Each column's width in a part: natural, or a share of the room left if it wraps
    (``forced``: a column that folds here although it does not wrap elsewhere)."""

    def wraps(column: Column) -> bool:
        return column.wrap or column is forced

    sizes = {id(c): (c.least if c is not forced else 1) for c in columns}
    room = width - sum(sizes.values()) - GAP * max(len(columns) - 1, 0)
    wrapping = sorted((c for c in columns if wraps(c)), key=lambda c: c.natural - sizes[id(c)])
    for i, column in enumerate(wrapping):
        share = max(room, 0) // (len(wrapping) - i)
        grow = min(column.natural - sizes[id(column)], share)
        sizes[id(column)] += grow
        room -= grow
    if room < 0:  # even the narrowest does not fit: wrapping columns fold into what is left
        for column in reversed(wrapping):
            give = min(sizes[id(column)] - 1, -room)
            sizes[id(column)] -= give
            room += give
    return [Placed(c, sizes[id(c)], wraps(c)) for c in columns]


def tables(
    columns: Sequence[Column], width: int | None, row_styles: Sequence[str] = ()
) -> list[Table]:
    """The parts of ``columns`` at ``width`` as rich tables (no box, bold headers)."""
    rows = max((len(c.cells) for c in columns), default=0)
    out = []
    for part in fit(columns, width):
        table = Table(box=None, pad_edge=False, header_style="bold", padding=(0, GAP // 2))
        for placed in part:
            column = placed.column
            table.add_column(
                Text(column.header),
                justify=column.justify,
                width=placed.width,
                no_wrap=not placed.wraps,
                overflow="fold",
            )
        for i in range(rows):
            style = row_styles[i] if i < len(row_styles) else ""
            table.add_row(*(_cell(p.column, i) for p in part), style=style)
        out.append(table)
    return out


def _cell(column: Column, i: int) -> Cell:
    return column.cells[i] if i < len(column.cells) else ""


def terminal_width(console: Console) -> int | None:
    """The width to fit tables to: the terminal's, or None when output is not a terminal."""
    return console.width if console.is_terminal else None


def print_table(console: Console, sheet: Sheet) -> None:
    """Print ``sheet`` fitted to ``console`` (parts apart by a blank line)."""
    width = terminal_width(console)
    for i, table in enumerate(tables(sheet.columns, width, sheet.row_styles)):
        if i:
            console.print()
        print_trimmed(console, table)


def print_trimmed(console: Console, renderable: RenderableType) -> None:
    """Print ``renderable`` at its own width, each line without trailing spaces."""
    width = console.measure(renderable, options=console.options.update(width=10**6)).maximum
    options = console.options.update(width=max(width, 1), no_wrap=False, height=None)
    for line in console.render_lines(renderable, options, pad=False, new_lines=False):
        text = Text.assemble(*((s.text, s.style or "") for s in line if not s.control))
        text.rstrip()
        console.print(text, soft_wrap=True, highlight=False, markup=False)
