"""Start-up of the command line: what ``expman --version`` and ``expman status`` cost.

Each command runs as its own process (``python -m expman ...``), 7 times after a
warm-up; reported is the best wall time, and the same minus a bare ``python -c pass``
(``import_s``: what expman's own imports and work add).  Target: ``import_s`` under
0.15 s for both.  ``status`` reads a small finished experiment made first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import _measure
from _folders import write_experiment

import expman

ROOT = Path(__file__).resolve().parents[1]
TIMES = _measure.size(7, 2)


def best_of(args: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run(args, env=env, capture_output=True, check=True)  # warm-up
    samples = []
    for _ in range(TIMES):
        start = time.perf_counter()
        subprocess.run(args, env=env, capture_output=True, check=True)
        samples.append(time.perf_counter() - start)
    return min(samples)


def main() -> None:
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        root = write_experiment(
            workdir / "configs", name="startup", trials=3, pipeline={"type": "bench_pipes:NoOp"}
        )
        import anyio

        anyio.run(lambda: expman.run_experiment(root, workspace=workdir / "ws"))
        bare = best_of([sys.executable, "-c", "pass"])
        commands = {
            "--version": [sys.executable, "-m", "expman", "--version"],
            "status": [sys.executable, "-m", "expman", "status", str(workdir / "ws" / "startup")],
        }
        for name, args in commands.items():
            wall = best_of(args)
            _measure.emit(
                "startup",
                f"expman {name}",
                params={"runs": TIMES},
                wall_s=wall,
                items=1,
                item="call",
                result=("import and work beyond bare python", wall - bare, "s"),
                target=("<=", 0.15),
                bare_python_s=round(bare, 4),
            )


if __name__ == "__main__":
    main()
