"""The benchmark suite runs at smoke sizes and reports valid measurements (no timings checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _measure import REQUIRED_FIELDS as REQUIRED  # noqa: E402  (the suite's own list)

WORKLOADS = {"sweep", "metric_logging", "bus", "concurrency", "resume", "memory", "pruning"}


@pytest.mark.slow
def test_run_all_smoke_prints_one_valid_json_measurement_per_line() -> None:
    """`run_all.py --smoke` runs every workload and its stdout is JSON lines with every field."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--smoke"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines, done.stderr
    records = [json.loads(line) for line in lines]
    for record in records:
        assert isinstance(record, dict)
        missing = [f for f in REQUIRED if f not in record]
        assert not missing, f"{record.get('workload')}: missing {missing}"
        assert record["smoke"] is True
        assert isinstance(record["params"], dict)
        assert record["wall_s"] >= 0
        assert record["items"] > 0
    assert WORKLOADS <= {r["workload"] for r in records}
    assert "| workload |" in done.stderr  # the table, for humans, on stderr
