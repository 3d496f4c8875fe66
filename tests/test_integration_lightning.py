"""The Lightning bridge end to end: the lightning_digits example from the command line.

Each test copies ``examples/lightning_digits`` into ``tmp_path`` and runs it with
``python -m expman run`` as a user would; the only addition is ``noisy.py``, a
subclass of the example's pipeline that issues one Lightning warning per run (a
message of its own, so Python's once-per-place rule does not hide it), to show
where Lightning's warnings land.  Importing Lightning costs seconds per process, so
the tests are few and each checks several things of one session.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from expman.jsonlines import read_lines
from tests.conftest import run_cli, write_yaml

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lightning_digits"

NOISY = textwrap.dedent(
    """
    from lightning.pytorch.utilities import rank_zero_warn

    from digits_lightning import DigitsLightning
    from expman.integrations.lightning import route_lightning_output


    class Noisy(DigitsLightning):
        def run(self, ctx):
            route_lightning_output()  # what ExpmanCallback(ctx) does first
            rank_zero_warn(f"lightning warns {ctx.trial}/run_{ctx.repeat}")
            return super().run(ctx)
    """
)

#: What Lightning prints on a terminal when left to itself: progress bars, the model
#: summary's table, its device report.
LIGHTNING_OUTPUT = ("GPU available", "it/s]", "Epoch 0", "┏", "| Name", "lightning warns")


def copy_example(
    tmp_path: Path, trials: list[dict[str, Any]], checkpoint_interval: int | None = None
) -> Path:
    config = tmp_path / "lightning_digits"
    shutil.copytree(EXAMPLE, config, ignore=shutil.ignore_patterns("__pycache__"))
    if checkpoint_interval is not None:
        experiment = yaml.safe_load((config / "experiment.yaml").read_text())
        for callback in experiment["settings"]["callbacks"]:
            if callback["type"] == "CheckpointCallback":
                callback["interval"] = checkpoint_interval
        write_yaml(config / "experiment.yaml", experiment)
    (config / "noisy.py").write_text(NOISY)
    base = (config / "base.yaml").read_text()
    (config / "base.yaml").write_text(
        base.replace("digits_lightning:DigitsLightning", "noisy:Noisy")
    )
    write_yaml(config / "trials.yaml", trials)
    return config


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every complete line (a kill -9 may have torn the last one of a session)."""
    return list(read_lines(path))


def journal(ws: Path) -> list[dict[str, Any]]:
    return json_lines(ws / "lightning_digits" / "logs" / "events.jsonl")


def history(run: Path) -> dict[int, dict[str, Any]]:
    """A run's epochs as results read them from metrics.log: the later line for an epoch wins.

    An epoch reported again after a resume (it was past the last checkpoint) must have
    the metrics it had before: the Trainer resumed exactly.
    """
    epochs: dict[int, dict[str, Any]] = {}
    for line in json_lines(run / "logs" / "metrics.log"):
        before = epochs.get(line["epoch"])
        assert before is None or before == line["metrics"], (run, line["epoch"])
        epochs[line["epoch"]] = line["metrics"]
    return epochs


def check_runs(ws: Path, finished: list[dict[str, Any]], terminal: str) -> None:
    """Each run: all its epochs in metrics.log (numbers) and metrics.csv, Lightning in run.log."""
    for outcome in finished:
        run = ws / "lightning_digits" / "trials" / outcome["trial"] / f"run_{outcome['repeat']}"
        label = f"{outcome['trial']}/run_{outcome['repeat']}"
        metrics = history(run)
        assert sorted(metrics) == list(range(outcome["epochs"])), label
        for values in metrics.values():  # 0-d tensors in trainer.callback_metrics, numbers here
            assert set(values) == {"train_loss", "val_loss", "val_acc"}, label
            assert all(type(v) is float for v in values.values()), values
        rows = (run / "logs" / "metrics.csv").read_text().splitlines()
        assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(outcome["epochs"])), label
        log = json_lines(run / "logs" / "run.log")
        assert any(r.get("logger", "").startswith("lightning.pytorch") for r in log), label
        warned = [r for r in log if r.get("logger") == "py.warnings"]
        assert any(f"lightning warns {label}" in r["event"] for r in warned), label
    for text in LIGHTNING_OUTPUT:
        assert text not in terminal, f"{text!r} on the terminal:\n{terminal[-3000:]}"


def start(config: Path, ws: Path) -> subprocess.Popen[str]:
    env = dict(os.environ)
    source = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "expman", "run", str(config), "-w", str(ws), "-q", "-j", "4"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


@pytest.mark.slow
def test_in_process_runs_share_one_display_stop_early_and_resume_after_kill_9(
    tmp_path: Path,
) -> None:
    """Four Trainers in threads (local, then thread): killed, resumed exactly, complete."""
    config = copy_example(
        tmp_path,
        [
            {"name": "slow", "id": 1, "repeat": 2, "settings": {"lr": 0.02}},
            {"name": "fast", "id": 2, "repeat": 2, "settings": {"lr": 0.2}},
        ],
        checkpoint_interval=3,
    )
    ws = tmp_path / "ws"
    proc = start(config, ws)
    # Checkpoints every 3 epochs (2, 5, ...): a run that reported epoch 3 has its newest
    # checkpoint at epoch 2, so epoch 3 is trained again after the kill, and compared.
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        logs = ws.glob("lightning_digits/trials/*/run_*/logs/metrics.log")
        if any('"epoch":3,' in log.read_text() for log in logs):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the session ended before the kill: the case is not exercised"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    # The same in-process executor under its other name: the session resumes on threads.
    done = run_cli(
        "run", str(config), "-w", str(ws), "-q", "-j", "4", "--executor", "thread", timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "experiment lightning_digits: completed" in done.stdout
    entries = journal(ws)
    finished = [e for e in entries if e["type"] == "RunFinished"]
    assert len(finished) == 4
    assert {e["status"] for e in finished if e["trial"] == "slow"} == {"completed"}
    stopped = [e for e in finished if e["status"] == "stopped"]
    assert stopped, "no run stopped early"
    for e in stopped:  # expman's EarlyStopping ended the Trainer before max_epochs
        assert e["reason"].startswith("early stopping: val_loss did not improve")
        assert e["epochs"] < 12
    resumed = [e for e in entries if e["type"] == "RunStarted" and e["start_epoch"] > 0]
    assert resumed, "no run resumed from a checkpoint"
    retrained = 0
    for start_event in resumed:
        assert "/artifacts/checkpoint-" in start_event["checkpoint"], start_event
        key = (start_event["trial"], start_event["repeat"])
        run = ws / "lightning_digits" / "trials" / key[0] / f"run_{key[1]}"
        epochs = history(run)
        first = epochs[0]["val_loss"]
        continued = epochs[start_event["start_epoch"]]["val_loss"]
        # The Trainer continued from the checkpoint's weights, not from fresh ones.
        assert continued < first / 2, (key, first, continued)
        lines = json_lines(run / "logs" / "metrics.log")
        retrained += len(lines) - len(epochs)  # history() found each one equal to before
    assert retrained, "no epoch was trained again after the resume: exactness unchecked"
    check_runs(ws, finished, done.stdout + done.stderr)


@pytest.mark.slow
def test_process_workers_report_stop_and_log_like_in_process_runs(tmp_path: Path) -> None:
    """Two Trainers in worker processes: same metrics, stops, logs; nothing on the terminal."""
    config = copy_example(
        tmp_path, [{"name": "fast", "id": 2, "repeat": 2, "settings": {"lr": 0.2}}]
    )
    ws = tmp_path / "ws"
    done = run_cli(
        "run", str(config), "-w", str(ws), "-q", "-j", "2", "--executor", "process", timeout=150
    )
    assert done.returncode == 0, done.stderr
    finished = [e for e in journal(ws) if e["type"] == "RunFinished"]
    assert len(finished) == 2
    assert all(e["status"] == "stopped" and e["epochs"] < 12 for e in finished), finished
    check_runs(ws, finished, done.stdout + done.stderr)
