"""A run's epochs read back from its ``logs/metrics.log``: what integrations re-send.

The metrics log is the record of what a run reported; a later line for the same
epoch wins (a resumed attempt re-trains epochs), as :mod:`expman.results` reads it.
An integration reads it to catch up after a crash, to fill what it held back in
memory, and to re-send the epochs a rewind replaced.
"""

from __future__ import annotations

from pathlib import Path

from expman.integrations.base import Point, scalars
from expman.jsonlines import read_lines


def read_points(metrics_file: Path, first: int, last: int | None = None) -> list[Point]:
    """The run's epochs ``first..last`` (inclusive; ``None``: to the end), in epoch order."""
    found: dict[int, Point] = {}
    for entry in read_lines(metrics_file):
        epoch = entry.get("epoch")
        if type(epoch) is not int or epoch < first or (last is not None and epoch > last):
            continue
        metrics = entry.get("metrics")
        when = entry.get("time")
        if not isinstance(metrics, dict):
            continue
        found[epoch] = Point(
            epoch, float(when) if isinstance(when, (int, float)) else 0.0, scalars(metrics)
        )
    return [found[e] for e in sorted(found)]
