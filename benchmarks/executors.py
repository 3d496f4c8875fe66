"""Executors benchmark: per-run overhead of each backend, Ray's start-up, CPU-bound scaling.

Prints one JSON line per measurement: workload, parameters, wall seconds, microseconds
per item, peak RSS, expman version and git commit.  Run from the repository root::

    python benchmarks/executors.py            # everything (about a minute on 2 cores)
    python benchmarks/executors.py --quick    # fewer runs
    python benchmarks/executors.py --smoke    # tiny sizes, no Ray (what CI runs)
    python benchmarks/executors.py --only overhead --executors async thread process

Workloads:

* ``overhead``: no-op runs (one ``epoch_end``, then return) at ``max_concurrency``
  1, so wall / runs is what one run costs the executor end to end (events, logs,
  journal, and for ``process``/``ray`` starting and ending a worker).
* ``ray_startup``: ``ray.init`` of a local instance, and its ``shutdown``.
* ``cpu_bound``: 4 runs of a pure-Python loop, ``process`` at max_concurrency 2 vs 1
  (ratio close to 0.5 on 2 cores means the runs really ran in parallel); ``thread`` at
  2 for comparison (the GIL serialises it).  ``cpu_bound_baseline`` runs the same loop
  in bare ``python -c`` processes, 1 and 2 at a time: the best ratio this machine allows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import _measure
import yaml

import expman

PIPELINES = textwrap.dedent(
    """
    from expman import Pipeline


    class Noop(Pipeline):
        def run(self, ctx):
            ctx.epoch_end(0, {"loss": 0.0})
            return {}


    class ANoop(Pipeline):
        async def run(self, ctx):
            await ctx.epoch_end(0, {"loss": 0.0})
            return {}


    class Spin(Pipeline):
        \"\"\"Pure-Python CPU work: the GIL serialises it across threads.\"\"\"

        def __init__(self, iterations=1_000_000):
            super().__init__()
            self.iterations = iterations

        def run(self, ctx):
            total = 0
            for i in range(self.iterations):
                total += i * i % 7
            ctx.epoch_end(0, {"total": total})
            return {}
    """
)


def peak_rss_mb() -> dict[str, float]:
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(me, 1), "peak_rss_children_mb": round(children, 1)}


def report(
    workload: str, parameters: dict[str, Any], wall: float, items: int, **extra: Any
) -> None:
    """One measurement in the suite's shape (see ``_measure.emit``), plus children's RSS."""
    named = {**parameters, **extra}
    case = ", ".join(f"{k}={v}" for k, v in named.items() if k in CASE_KEYS) or workload
    extra.update(peak_rss_children_mb=peak_rss_mb()["peak_rss_children_mb"])
    _measure.emit(workload, case, params=parameters, wall_s=wall, items=items, item="run", **extra)


#: The parameters that name a case in the table.
CASE_KEYS = ("executor", "max_concurrency", "phase")


def write_experiment(
    folder: Path, pipeline: dict[str, Any], runs: int, executor: str, concurrency: int
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "experiment.yaml").write_text(
        yaml.safe_dump({"name": "bench", "id": 1, "settings": {"pipeline": pipeline}})
    )
    (folder / "trials.yaml").write_text(yaml.safe_dump([{"name": "t", "id": 1, "repeat": runs}]))
    (folder / "env.yaml").write_text(
        yaml.safe_dump({"execution": {"executor": executor, "max_concurrency": concurrency}})
    )
    (folder / "bench_pipes.py").write_text(PIPELINES)
    return folder


async def timed_experiment(
    scratch: Path, name: str, pipeline: dict[str, Any], runs: int, executor: str, concurrency: int
) -> float:
    configs = write_experiment(scratch / name / "configs", pipeline, runs, executor, concurrency)
    started = time.perf_counter()
    result = await expman.run_experiment(configs, workspace=scratch / name / "ws")
    wall = time.perf_counter() - started
    if result.counts.get("completed") != runs:
        raise SystemExit(f"{name}: not every run completed: {result.counts}")
    return wall


async def overhead(scratch: Path, executors: list[str], quick: bool) -> None:
    counts = {"async": 200, "thread": 200, "process": 20, "ray": 20}
    for executor in executors:
        runs = _measure.size(max(5, counts[executor] // (4 if quick else 1)), 2)
        kind = "bench_pipes:ANoop" if executor == "async" else "bench_pipes:Noop"
        wall = await timed_experiment(
            scratch, f"overhead-{executor}", {"type": kind}, runs, executor, 1
        )
        report(
            "overhead",
            {"executor": executor, "runs": runs, "max_concurrency": 1, "pipeline": kind},
            wall,
            runs,
        )


def ray_startup() -> bool:
    try:
        import ray
    except ImportError:
        print("ray is not installed: no Ray measurements", file=sys.stderr)
        return False
    started = time.perf_counter()
    ray.init(
        num_cpus=os.cpu_count() or 1,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    init = time.perf_counter() - started
    report("ray_startup", {"num_cpus": os.cpu_count()}, init, 1, phase="ray.init")
    return True


def ray_shutdown() -> None:
    import ray

    started = time.perf_counter()
    ray.shutdown()
    report("ray_startup", {}, time.perf_counter() - started, 1, phase="ray.shutdown")


async def cpu_bound(scratch: Path, quick: bool) -> None:
    iterations = _measure.size(8_000_000 if quick else 25_000_000, 100_000)
    pipeline = {"type": "bench_pipes:Spin", "iterations": iterations}
    configs = (("process", 1), ("process", 2), ("thread", 2))
    rounds = 1 if quick else 2
    walls: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    # Interleaved rounds, best of each: a shared machine's noise hits them alike.
    for round_ in range(rounds):
        for executor, concurrency in configs:
            name = f"cpu-{executor}-{concurrency}-{round_}"
            wall = await timed_experiment(scratch, name, pipeline, 4, executor, concurrency)
            walls[executor, concurrency].append(wall)
    best = {c: min(w) for c, w in walls.items()}
    for (executor, concurrency), wall in best.items():
        parameters = {"executor": executor, "runs": 4, "max_concurrency": concurrency}
        parameters.update(pipeline, rounds=rounds)
        report(
            "cpu_bound",
            parameters,
            wall,
            4,
            all_walls=[round(w, 3) for w in walls[executor, concurrency]],
        )
    # What this machine allows at all: the same loop in bare processes, no expman.
    bare_1 = plain_processes(iterations, 4, 1)
    bare_2 = plain_processes(iterations, 4, 2)
    report(
        "cpu_bound_baseline",
        {"runs": 4, "iterations": iterations, "what": "bare python -c processes"},
        bare_2,
        4,
        sequential_seconds=round(bare_1, 3),
        parallel_2_over_1=round(bare_2 / bare_1, 3),
    )
    report(
        "cpu_bound_ratio",
        {"runs": 4, "cores": os.cpu_count(), "iterations": iterations, "rounds": rounds},
        best["process", 2],
        4,
        process_2_over_1=round(best["process", 2] / best["process", 1], 3),
        thread_2_over_process_1=round(best["thread", 2] / best["process", 1], 3),
    )


def plain_processes(iterations: int, jobs: int, parallel: int) -> float:
    """Wall time of ``jobs`` bare Python processes running the same loop, ``parallel`` at once."""
    code = (
        "def spin():\n    total = 0\n"
        f"    for i in range({iterations}):\n        total += i * i % 7\n"
        "spin()\n"
    )
    started = time.perf_counter()
    for first in range(0, jobs, parallel):
        batch = [
            subprocess.Popen([sys.executable, "-c", code])
            for _ in range(min(parallel, jobs - first))
        ]
        for process in batch:
            process.wait()
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, shorter work")
    parser.add_argument(
        "--only", nargs="*", default=["overhead", "ray_startup", "cpu_bound"], help="workloads"
    )
    parser.add_argument(
        "--executors", nargs="*", default=["async", "thread", "process", "ray"], help="overhead"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no Ray (CI)")
    args = parser.parse_args()
    if _measure.SMOKE:
        # Ray's start-up alone takes seconds: the smoke run checks the local executors.
        args.quick = True
        args.only = [w for w in args.only if w != "ray_startup"]
        args.executors = [e for e in args.executors if e != "ray"]
    with _measure.scratch() as tmp:
        scratch = Path(tmp)
        local = [e for e in args.executors if e != "ray"]
        if "overhead" in args.only:
            # Before Ray starts: its idle daemons would take CPU from these.
            await overhead(scratch, local, args.quick)
        want_ray = "ray_startup" in args.only or (
            "overhead" in args.only and "ray" in args.executors
        )
        if want_ray and ray_startup():
            try:
                if "overhead" in args.only and "ray" in args.executors:
                    await overhead(scratch, ["ray"], args.quick)
            finally:
                ray_shutdown()
        if "cpu_bound" in args.only:
            await cpu_bound(scratch, args.quick)


if __name__ == "__main__":
    asyncio.run(main())
