"""Shared by every workload script: sizes, the process's memory, and one JSON line per measurement.

Importing this module first puts the checkout that holds it at the front of
``sys.path``, so a benchmark measures this working tree's expman, not whichever copy
is installed.

A measurement is one JSON object on one line of stdout with at least::

    workload        the script's workload name ("sweep", "bus", ...)
    case            what varies inside the workload ("200 trials", "1 control subscriber")
    params          the sizes and knobs, as a mapping
    wall_s          wall-clock seconds of the measured part
    items, item     how many things were timed, and what one is ("run", "event", ...)
    per_item_us     wall_s / items in microseconds
    peak_rss_mb     the process's peak resident set size so far
    expman_version  expman.__version__
    git_commit      HEAD of the checkout (with "+dirty" when it has local changes)

``disk`` (the scratch folder and its measured microseconds per ``mkdir`` and per
small-file create, when the workload writes files), and, when the workload has a
target, ``result`` (the headline figure: name, value,
unit), ``target`` (e.g. ``"<= 1 ms"``) and ``met`` (a bool).
"""

from __future__ import annotations

import functools
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

import expman  # noqa: E402

#: Set by ``run_all.py --smoke`` (or pass ``--smoke`` to a script): tiny sizes, same code paths.
SMOKE = "--smoke" in sys.argv[1:] or os.environ.get("EXPMAN_BENCH_SMOKE") == "1"

#: Each timing is taken this many times and the best is reported (the machine is shared
#: and noisy; the best run is the one least disturbed).  Every sample is kept in
#: ``samples_s``.
REPEATS = 1 if SMOKE else 3

#: Where workloads write their experiments and workspaces: ``benchmarks/.scratch`` in
#: the checkout (on the disk a project's workspace would be on), or $EXPMAN_BENCH_DIR.
#: On some machines /tmp is far slower for folder creation than the rest of its disk.
SCRATCH = Path(os.environ.get("EXPMAN_BENCH_DIR") or Path(__file__).resolve().parent / ".scratch")

REQUIRED_FIELDS = (
    "workload",
    "case",
    "params",
    "wall_s",
    "items",
    "item",
    "per_item_us",
    "peak_rss_mb",
    "expman_version",
    "git_commit",
)


def size(full: int, smoke: int) -> int:
    """``full`` normally, ``smoke`` under ``--smoke``."""
    return smoke if SMOKE else full


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return round(peak / scale, 1)


def current_rss_mb() -> float:
    """This process's resident set size now, in MiB."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024), 1)
    except OSError:
        return peak_rss_mb()


@functools.cache
def git_commit() -> str:
    """The checkout's commit, marked ``+dirty`` when tracked files differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


#: The scratch disk's metadata speed, measured once per process (see :func:`scratch`).
_disk: dict[str, Any] = {}


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh temporary folder under :data:`SCRATCH`, removed afterwards.

    The first one in a process also measures the disk's speed at what the sweep
    mostly does (creating folders and small files); every measurement then carries it
    as ``disk``, since these figures vary several-fold over time on a shared VM.
    """
    SCRATCH.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="expman-bench-", dir=SCRATCH))
    try:
        if not _disk:
            _disk.update(disk_probe(folder))
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def disk_probe(folder: Path, count: int = 200) -> dict[str, Any]:
    """Median microseconds of one ``mkdir`` and of one small file's create+write+close."""
    probe = folder / "disk-probe"
    probe.mkdir()
    mkdirs, creates = [], []
    for i in range(count):
        start = time.perf_counter()
        os.mkdir(probe / f"d{i}")
        mkdirs.append(time.perf_counter() - start)
        start = time.perf_counter()
        fd = os.open(probe / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"x" * 200)
        os.close(fd)
        creates.append(time.perf_counter() - start)
    shutil.rmtree(probe)
    return {
        "path": str(SCRATCH),
        "mkdir_us": round(sorted(mkdirs)[count // 2] * 1e6, 1),
        "create_us": round(sorted(creates)[count // 2] * 1e6, 1),
    }


class Timing(float):
    """Wall seconds of one sample, with ``cpu``: this process's CPU seconds meanwhile."""

    cpu: float = 0.0


class Stopwatch:
    """Wall and CPU time (every thread of this process, user + system) of a block."""

    wall: float = 0.0
    cpu: float = 0.0

    @property
    def sample(self) -> Timing:
        """The wall time as a float that also carries the CPU time."""
        timing = Timing(self.wall)
        timing.cpu = self.cpu
        return timing


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    """``with stopwatch() as t: ...`` then ``t.wall``, ``t.cpu`` and ``t.sample`` hold the times.

    CPU time is the steadier figure on a shared machine: other processes stretch the
    wall time of a run but not the work it does.
    """
    watch = Stopwatch()
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield watch
    finally:
        watch.wall = time.perf_counter() - start
        watch.cpu = time.process_time() - cpu


def emit(
    workload: str,
    case: str,
    *,
    params: Mapping[str, Any],
    wall_s: float | Sequence[float],
    items: int,
    item: str,
    result: tuple[str, float, str] | None = None,
    target: tuple[str, float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Print one measurement as a JSON line on stdout (and return it).

    ``wall_s`` is one time or several samples (the best is reported, all are kept); a
    sample that is a :class:`Timing` also reports its CPU time (``cpu_s``);
    ``result`` is ``(name, value, unit)``; ``target`` is ``(op, bound)`` with op
    ``"<="`` or ``">="`` and the bound in the result's unit.
    """
    samples = [wall_s] if isinstance(wall_s, (int, float)) else list(wall_s)
    best = min(samples)
    cpu = getattr(samples[samples.index(best)], "cpu", None)
    wall_s = float(best)
    record: dict[str, Any] = {
        "workload": workload,
        "case": case,
        "params": dict(params),
        "wall_s": round(wall_s, 6),
        "items": items,
        "item": item,
        "per_item_us": round(wall_s / items * 1e6, 3) if items else None,
        "cpu_s": round(cpu, 6) if cpu is not None else None,
        "cpu_per_item_us": round(cpu / items * 1e6, 3) if cpu is not None and items else None,
        "peak_rss_mb": peak_rss_mb(),
        "expman_version": expman.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "smoke": SMOKE,
    }
    if _disk:
        record["disk"] = dict(_disk)
    if len(samples) > 1:
        record["samples_s"] = [round(x, 6) for x in samples]
    if result is not None:
        name, value, unit = result
        record["result"] = {"name": name, "value": round(value, 4), "unit": unit}
    if target is not None and result is not None:
        op, bound = target
        record["target"] = f"{op} {bound:g} {result[2]}".strip()
        value = result[1]
        record["met"] = bool(value <= bound if op == "<=" else value >= bound)
    record.update(extra)
    sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
    sys.stdout.flush()
    return record
