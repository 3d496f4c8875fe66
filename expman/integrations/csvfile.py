"""CSV: one file per run, ``<run>/logs/metrics.csv``.

The header is ``epoch,time`` and then the sorted union of the run's metric names;
a metric that first appears at epoch 5 leaves its cells empty before it (the file
is rewritten with the wider header when a new name appears, which is rare).  A
rewind keeps the rows before it and drops the rest, so the file always holds
each epoch once, as the run's history has it.  Values are written as Python
writes floats (``nan``, ``inf`` included): ``pandas.read_csv`` reads them back.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

from expman.config import IntegrationSpec
from expman.integrations.base import Binding, ExportContext, Exporter, ExportRun, Point
from expman.workspace.atomic import atomic_write


class CsvExporter(Exporter):
    """The ``csv`` integration."""

    def __init__(self, spec: IntegrationSpec, context: ExportContext) -> None:
        super().__init__(spec, context)
        self._columns: dict[tuple[str, int], list[str]] = {}

    @staticmethod
    def path(run: ExportRun) -> Path:
        return run.folder / "logs" / "metrics.csv"

    def open(self, run: ExportRun, *, external: str | None, rewind: int) -> Binding:
        path = self.path(run)
        rows = [row for row in _read(path) if (_epoch(row) or 0) < rewind]
        names = sorted({k for row in rows for k in row if k not in ("epoch", "time")})
        self._columns[run.key] = names
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, _render(names, rows).encode(), within=self.context.root)
        return Binding(str(path.relative_to(self.context.root)), str(path))

    def write(self, run: ExportRun, points: Sequence[Point]) -> None:
        path = self.path(run)
        names = self._columns.get(run.key)
        if names is None:
            self.open(run, external=None, rewind=points[0].epoch)
            names = self._columns[run.key]
        seen = {k for p in points for k in p.metrics}
        rows: list[dict[str, object]] = [
            {"epoch": p.epoch, "time": p.time, **p.metrics} for p in points
        ]
        if not seen <= set(names):
            names = sorted(set(names) | seen)
            self._columns[run.key] = names
            atomic_write(
                path, _render(names, [*_read(path), *rows]).encode(), within=self.context.root
            )
            return
        with open(path, "a", newline="") as f:
            f.write(_render(names, rows, header=False))

    def flush(self, run: ExportRun) -> None:
        path = self.path(run)
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _epoch(row: dict[str, object]) -> int | None:
    try:
        return int(str(row.get("epoch")))
    except ValueError:
        return None  # not a row of ours: dropped on rewrite


def _read(path: Path) -> list[dict[str, object]]:
    """The file's complete rows (a torn last line, a crash's, is left out)."""
    try:
        with open(path, newline="") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return [
        {k: v for k, v in row.items() if v not in ("", None)}
        for row in csv.DictReader(io.StringIO(text, newline=""))
    ]


def _render(names: list[str], rows: Sequence[dict[str, object]], *, header: bool = True) -> str:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, ["epoch", "time", *names], restval="", lineterminator="\n")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()


def _cell(value: object) -> object:
    return repr(value) if type(value) is float else value
