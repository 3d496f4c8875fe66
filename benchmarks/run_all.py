"""Run every benchmark workload; JSON lines on stdout, a table on stderr.

Convention: every ``benchmarks/*.py`` whose name does not start with ``_`` (and is
not this file) is a workload script.  Each is run as ``python benchmarks/NAME.py``
in its own process, with this checkout first on ``PYTHONPATH`` and, under
``--smoke``, ``EXPMAN_BENCH_SMOKE=1`` in its environment (tiny sizes, same code
paths).  It prints one JSON object per measurement on stdout; anything else it
prints on stdout is passed to stderr, so this runner's stdout is pure JSON lines.

    python benchmarks/run_all.py                 # everything, full sizes (< 5 minutes)
    python benchmarks/run_all.py --smoke         # tiny sizes (CI)
    python benchmarks/run_all.py sweep bus       # some workloads
    python benchmarks/run_all.py > results.jsonl # keep the measurements; the table still shows
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: Workloads in the order of the issue; any other script runs after them, by name.
ORDER = ("sweep", "metric_logging", "bus", "concurrency", "resume", "memory")


#: Between scripts, wait (at most this long each, and SETTLE_TOTAL in all) for the
#: scratch disk to make folders about as fast as it did at the start: a workload that
#: created and removed tens of thousands of folders leaves this VM's disk several
#: times slower for a minute or two, which would be charged to the next workload.
SETTLE_EACH, SETTLE_TOTAL = 20.0, 90.0


def mkdir_us(folder: Path, count: int = 100) -> float:
    """Median microseconds of one mkdir in ``folder`` (the folders are removed)."""
    probe = Path(tempfile.mkdtemp(prefix="settle-", dir=folder))
    times = []
    try:
        for i in range(count):
            start = time.perf_counter()
            os.mkdir(probe / str(i))
            times.append(time.perf_counter() - start)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return sorted(times)[count // 2] * 1e6


def settle(folder: Path, baseline: float, budget: float) -> float:
    """Wait until mkdir is within 2x of ``baseline`` (or 60 µs); returns the time waited."""
    waited = 0.0
    while waited < min(SETTLE_EACH, budget):
        now = mkdir_us(folder)
        if now <= max(2 * baseline, 60.0):
            break
        if waited == 0.0:
            print(f"  waiting for the disk to settle (mkdir {now:.0f} µs)", file=sys.stderr)
        time.sleep(2.0)
        waited += 2.0
    return waited


def workloads() -> list[Path]:
    """Every workload script in ``benchmarks/``, in table order."""
    found = [
        p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name != Path(__file__).name
    ]
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(found, key=lambda p: (rank.get(p.stem, len(rank)), p.stem))


def run(script: Path, *, smoke: bool, timeout: float) -> tuple[list[dict[str, Any]], str | None]:
    """Run one script; its measurements, and an error message if it failed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    if smoke:
        env["EXPMAN_BENCH_SMOKE"] = "1"
    else:
        env.pop("EXPMAN_BENCH_SMOKE", None)
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout:g} s"
    records = []
    for line in done.stdout.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if isinstance(value, dict):
            records.append(value)
            sys.stdout.write(json.dumps(value) + "\n")
            sys.stdout.flush()
        elif line.strip():
            print(f"[{script.stem}] {line}", file=sys.stderr)
    error = f"exited with status {done.returncode}" if done.returncode else None
    return records, error


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return "" if value is None else str(value)


def table(records: Sequence[Mapping[str, Any]]) -> str:
    """The measurements as a Markdown table (what benchmarks/README.md holds)."""
    head = (
        "workload",
        "case",
        "wall s",
        "µs/item",
        "CPU µs/item",
        "result",
        "target",
        "met",
        "peak RSS MB",
        "disk µs/mkdir",
    )
    rows = [head, tuple("---" for _ in head)]
    for r in records:
        result = r.get("result") or {}
        shown = ""
        if result:
            shown = (
                f"{result.get('name', '')}: {_number(result.get('value'))} {result.get('unit', '')}"
            )
        if r.get("floor_ratio"):
            shown += f" ({r['floor_ratio']:g}x the floor)"
        met = r.get("met")
        rows.append(
            (
                str(r.get("workload", "?")),
                str(r.get("case", "")),
                _number(r.get("wall_s")),
                _number(r.get("per_item_us")),
                _number(r.get("cpu_per_item_us")),
                shown.strip(),
                str(r.get("target", "")),
                "" if met is None else ("yes" if met else "**no**"),
                _number(r.get("peak_rss_mb")),
                _number((r.get("disk") or {}).get("mkdir_us")),
            )
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="workloads to run (default: all)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks they run")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per script")
    args = parser.parse_args(argv)
    scripts = workloads()
    if args.names:
        unknown = set(args.names) - {p.stem for p in scripts}
        if unknown:
            parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
        scripts = [p for p in scripts if p.stem in args.names]
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    failures = []
    scratch = Path(os.environ.get("EXPMAN_BENCH_DIR") or HERE / ".scratch")
    scratch.mkdir(parents=True, exist_ok=True)
    baseline = mkdir_us(scratch)
    budget = 0.0 if args.smoke else SETTLE_TOTAL
    for script in scripts:
        budget -= settle(scratch, baseline, budget) if budget > 0 else 0.0
        print(f"running {script.stem} ...", file=sys.stderr, flush=True)
        found, error = run(script, smoke=args.smoke, timeout=args.timeout)
        records.extend(found)
        if error:
            failures.append(f"{script.stem}: {error}")
    print("\n" + table(records), file=sys.stderr)
    commit = next((r.get("git_commit") for r in records if r.get("git_commit")), "unknown")
    print(
        f"\n{len(records)} measurements, expman commit {commit}, "
        f"{time.perf_counter() - started:.1f} s{' (smoke sizes)' if args.smoke else ''}",
        file=sys.stderr,
    )
    disks = {r["disk"]["path"]: [] for r in records if r.get("disk")}
    for r in records:
        if r.get("disk"):
            disks[r["disk"]["path"]].append(r["disk"])
    for path, probes in disks.items():
        mkdir = sorted(p["mkdir_us"] for p in probes)
        create = sorted(p["create_us"] for p in probes)
        print(
            f"scratch disk {path}: mkdir {mkdir[0]:g}-{mkdir[-1]:g} µs, "
            f"small file {create[0]:g}-{create[-1]:g} µs (median, probed once per script)",
            file=sys.stderr,
        )
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
