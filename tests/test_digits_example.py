"""The digits example, run from the command line as a user would, from this checkout."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from expman.serializable import import_path

from .conftest import run_cli

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits"


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_digits_example_early_stops_and_leaves_loadable_checkpoints(tmp_path: Path) -> None:
    """13 runs (a sweep among them): some stop early, checkpoints load, no epoch missing."""
    config = tmp_path / "digits"
    shutil.copytree(EXAMPLE, config, ignore=shutil.ignore_patterns("__pycache__"))
    workspace = tmp_path / "ws"
    done = run_cli("run", str(config), "-w", str(workspace), "-j", "2", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "experiment digits: completed" in done.stdout
    exp = workspace / "digits"

    finished = [e for e in json_lines(exp / "logs" / "events.jsonl") if e["type"] == "RunFinished"]
    assert len(finished) == 13
    assert {e["trial"] for e in finished} >= {"width-16", "width-64"}  # the sweep
    stopped = [e for e in finished if e["status"] == "stopped"]
    assert stopped, "no run stopped early"
    for e in stopped:
        assert e["reason"].startswith("early stopping: val_loss did not improve for 3 epochs")
        assert e["epochs"] < 40
    assert {e["status"] for e in finished} <= {"completed", "stopped"}
    for e in finished:
        assert e["metrics"]["best_val_acc"] >= e["metrics"]["val_acc"]

    with import_path(config):
        digits = importlib.import_module("digits_pipeline")
    _, _, x_val, y_val = digits.load_digits_split()
    total_epochs = 0
    for e in finished:
        run = exp / "trials" / e["trial"] / f"run_{e['repeat']}"
        checkpoints = sorted(p.name for p in (run / "artifacts").iterdir())
        assert len(checkpoints) == 2, checkpoints  # the best by val_acc, and the final one
        assert checkpoints[-1] == "checkpoint-final"
        best = run / "artifacts" / checkpoints[0]
        accuracy = digits.MLP.load(best).accuracy(x_val, y_val)
        assert accuracy == pytest.approx(e["metrics"]["best_val_acc"])
        assert accuracy > 0.8  # chance is 0.1
        final = digits.MLP.load(run / "artifacts" / "checkpoint-final")
        assert final.accuracy(x_val, y_val) == pytest.approx(e["metrics"]["val_acc"])
        epochs = [m["epoch"] for m in json_lines(run / "logs" / "metrics.log")]
        assert epochs == list(range(e["epochs"]))
        total_epochs += e["epochs"]
    assert len(json_lines(exp / "logs" / "metrics.log")) == total_epochs


def _outcomes(exp: Path) -> dict[tuple[str, int], tuple[Any, ...]]:
    """Each run's last RunFinished: status, epochs and metrics (what results report)."""
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for e in json_lines(exp / "logs" / "events.jsonl"):
        if e["type"] == "RunFinished":
            last[(e["trial"], e["repeat"])] = e
    return {
        key: (e["status"], e["epochs"], json.dumps(e["metrics"], sort_keys=True))
        for key, e in last.items()
    }


@pytest.mark.slow
def test_interrupting_digits_and_resuming_gives_the_uninterrupted_results(tmp_path: Path) -> None:
    """Ctrl-C mid-training, then run again: every run ends exactly as without the stop."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "digits"
    shutil.copytree(EXAMPLE, config, ignore=shutil.ignore_patterns("__pycache__"))
    straight = run_cli("run", str(config), "-w", str(tmp_path / "straight"), "-j", "2", "-q")
    assert straight.returncode == 0, straight.stderr
    expected = _outcomes(tmp_path / "straight" / "digits")

    workspace = tmp_path / "interrupted"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
    )
    cmd = [sys.executable, "-m", "expman", "run", str(config), "-w", str(workspace), "-j", "2"]
    first = subprocess.Popen([*cmd, "-q"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = workspace / "digits" / "logs" / "metrics.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # a third of the way through the epochs
        if metrics.exists() and len(metrics.read_bytes().splitlines()) >= 40:
            break
        time.sleep(0.02)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    assert first.returncode != 0  # interrupted
    partial = _outcomes(workspace / "digits")
    assert partial != expected  # the stop really came mid-experiment

    again = run_cli("run", str(config), "-w", str(workspace), "-j", "2", "-q")
    assert again.returncode == 0, again.stderr
    assert _outcomes(workspace / "digits") == expected
