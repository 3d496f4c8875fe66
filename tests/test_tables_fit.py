"""Fitting a table to a width (expman.tablefit): what goes where, over many random tables."""

from __future__ import annotations

import io
import random

import pytest
from rich.console import Console

from expman.tablefit import GAP, Column, Sheet, fit, print_table


def random_table(rng: random.Random) -> list[Column]:
    rows = rng.randint(0, 6)

    def cells(longest: int) -> list[str]:
        return ["x" * rng.randint(0, longest) for _ in range(rows)]

    columns = [Column("trial", cells(24), place="key")]
    for i in range(rng.randint(0, 3)):
        columns.append(Column(f"first{i}", cells(18), place="first"))
    for i in range(rng.randint(0, 14)):
        wrap = rng.random() < 0.3
        text = [" ".join(["word"] * rng.randint(0, 30)) for _ in range(rows)] if wrap else None
        columns.append(
            Column(
                f"c{i}",
                text if text is not None else cells(22),
                priority=rng.randint(0, 3),
                wrap=wrap,
                min_width=rng.choice([8, 12, 30]),
            )
        )
    rng.shuffle(columns)
    return columns


@pytest.mark.parametrize("width", [40, 80, 120])
def test_parts_fit_and_keep_every_column_once(width: int) -> None:
    """Every part is at most the width (when the names and the first columns fit), has
    the key columns, keeps the given order; the first columns are in the first part;
    every other column is in exactly one part, whole unless it wraps (or is wider than
    any part, then it folds in a part of its own)."""
    rng = random.Random(width)
    for _ in range(300):
        columns = random_table(rng)
        parts = fit(columns, width)
        keys = [c for c in columns if c.place == "key"]
        needed = sum(c.least for c in columns if c.place != "any") + GAP * len(columns)
        for part in parts:
            placed = [p.column for p in part]
            assert [c for c in placed if c.place == "key"] == keys
            assert placed == sorted(placed, key=columns.index)
            total = sum(p.width for p in part) + GAP * (len(part) - 1)
            if needed <= width:
                assert total <= width, [(p.column.header, p.width) for p in part]
            for p in part:
                if not p.wraps:
                    assert p.width == p.column.natural
                elif not p.column.wrap:  # too wide for any part: alone beside the keys
                    assert len(part) == len(keys) + 1
        first = {id(p.column) for p in parts[0]}
        assert all(id(c) in first for c in columns if c.place == "first")
        seen = [id(p.column) for part in parts for p in part if p.column.place != "key"]
        assert sorted(seen) == sorted(id(c) for c in columns if c.place != "key")


def test_without_a_width_one_part_at_natural_widths() -> None:
    """Output that is not a terminal: one part, every column at its natural width."""
    columns = [*random_table(random.Random(7)), Column("wide", ["w" * 300])]
    (part,) = fit(columns, None)
    assert [p.column for p in part] == columns
    assert all(p.width == p.column.natural for p in part)


def test_printed_lines_have_no_trailing_spaces() -> None:
    """print_table writes each line without trailing spaces, in a terminal or not."""
    sheet = Sheet(
        (
            Column("trial", ["a", "a_much_longer_name"], place="key"),
            Column("note", ["", "short"], wrap=True),
        )
    )
    for terminal in (True, False):
        out = io.StringIO()
        print_table(Console(file=out, width=30, force_terminal=terminal, color_system=None), sheet)
        lines = out.getvalue().splitlines()
        assert lines == ["trial               note", "a", "a_much_longer_name  short"]
