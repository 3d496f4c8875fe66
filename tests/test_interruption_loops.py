"""Interrupted again and again at random moments, an experiment still ends exactly.

Each loop starts ``expman run`` as a real subprocess and interrupts it at a random
moment (kill -9, SIGTERM or SIGINT, on the async and the process executors), more
than twenty times, then lets it finish.  Whatever the moments, every run must have
finished exactly once, every log line must be valid JSON, and the final metrics
(the pipeline's chained value, the epochs, MetricsTracker's best values) must equal
those of a run that was never interrupted.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from expman.jsonlines import read_lines
from expman.workspace.journal import read_journal

from .conftest import run_cli
from .test_resume import CRASHY, start_cli
from .test_signals import wait_for_expman_handlers

#: Enough work for 20 interruptions whatever the load: each lands a few journal
#: records (about one per epoch) after the last.
EPOCHS = 40
CALLBACKS = [
    {"type": "CheckpointCallback", "interval": 1, "save_top_k": 2, "save_last": True},
    {"type": "MetricsTracker"},
]
#: What must be equal to an uninterrupted run's, per run.
COMPARED = ("x", "best_x", "best_x_epoch", "flat")


def make_loop_experiment(make_experiment: Callable[..., Path], executor: str) -> Path:
    root = make_experiment(
        base={
            "pipeline": {"type": "crashy:Chain", "epochs": EPOCHS, "seconds": 0.03},
            "callbacks": CALLBACKS,
        },
        trials=[{"name": f"t{i}", "id": i, "repeat": 2} for i in range(2)],
        env={"execution": {"max_concurrency": 4, "grace_period": 2, "executor": executor}},
    )
    (root / "crashy.py").write_text(CRASHY)
    return root


def finals(workspace: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Each run's finished records: (status, compared metrics, epochs)."""
    out: dict[tuple[str, int], Any] = {}
    for e in read_lines(workspace / "exp" / "logs" / "events.jsonl"):
        if e["type"] == "RunFinished" and e["status"] in ("completed", "stopped"):
            out.setdefault((e["trial"], e["repeat"]), []).append(
                (e["status"], {k: e["metrics"].get(k) for k in COMPARED}, e["epochs"])
            )
    return out


def assert_newest_checkpoints_on_disk(workspace: Path) -> None:
    """What the journal names as a run's newest checkpoint is on disk (or staged beside it):
    retention never deleted the checkpoint a resume would start from."""
    journal = read_journal(workspace / "exp" / "logs" / "events.jsonl")
    for key, run in journal.runs.items():
        newest = run.newest_checkpoint
        if run.status is None and newest is not None:
            there = newest.path.exists() or (newest.staged is not None and newest.staged.exists())
            assert there, f"{key}: the journal's newest checkpoint {newest.path} is gone"


def assert_lines_valid(workspace: Path) -> None:
    exp = workspace / "exp"
    for log in [*exp.rglob("*.log"), *exp.rglob("*.jsonl")]:
        data = log.read_bytes()
        lines = data.splitlines()
        # A torn last line is allowed only while it is being written; none may be inside.
        for number, line in enumerate(lines[:-1] if not data.endswith(b"\n") else lines, 1):
            try:
                json.loads(line)
            except ValueError as exc:
                raise AssertionError(f"{log}:{number}: not JSON: {line[:80]!r}") from exc


def journal_lines(journal: Path) -> int:
    try:
        return journal.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def at_moment(proc: subprocess.Popen[str], journal: Path, rng: random.Random) -> None:
    """Wait for a random moment: at start-up, or a few journal records into the session
    and a little more (mid-epoch, mid-checkpoint, right after a run's end...)."""
    records = rng.randint(0, 6)
    if records == 0:
        time.sleep(rng.uniform(0.0, 0.6))  # importing, planning, starting the runs
        return
    target = journal_lines(journal) + records
    deadline = time.monotonic() + 30
    while journal_lines(journal) < target and proc.poll() is None:
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.05))


#: The uninterrupted results, per executor: the same for each signal's loop.
_REFERENCES: dict[str, Any] = {}


def reference(make_experiment: Callable[..., Path], tmp_path: Path, executor: str) -> Any:
    if executor in _REFERENCES:
        return _REFERENCES[executor]
    root = make_loop_experiment(make_experiment, executor)
    workspace = tmp_path / "reference"
    done = run_cli("run", str(root), "-w", str(workspace))
    assert done.returncode == 0, done.stderr
    result = _REFERENCES[executor] = finals(workspace)
    return result


#: Interruptions per loop, each at a fresh random moment.
INTERRUPTIONS = 20


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["async", "process"])
@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name
)
def test_interrupted_at_random_moments_ends_exactly(
    make_experiment: Callable[..., Path], tmp_path: Path, executor: str, sig: signal.Signals
) -> None:
    expected = reference(make_experiment, tmp_path, executor)
    assert len(expected) == 4
    assert all(len(v) == 1 for v in expected.values())
    root = make_loop_experiment(make_experiment, executor)
    workspace = tmp_path / "ws"
    rng = random.Random(f"{executor}-{sig}")
    interruptions = 0
    journal = workspace / "exp" / "logs" / "events.jsonl"
    for _ in range(100):
        if interruptions >= INTERRUPTIONS:
            break
        proc = start_cli(root, workspace)
        if sig != signal.SIGKILL:
            # From expman's first instruction on (Python's own start-up, before it, is
            # the interpreter's: there is no expman code yet to answer a signal).
            wait_for_expman_handlers(proc)
        at_moment(proc, journal, rng)
        if proc.poll() is None:
            proc.send_signal(sig)
            interruptions += 1
        _out, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        if sig != signal.SIGKILL and proc.returncode not in (0, 130, 143):
            raise AssertionError(f"exit {proc.returncode} after {sig!r}:\n{err}")
        assert_lines_valid(workspace)
        assert_newest_checkpoints_on_disk(workspace)
    assert interruptions >= INTERRUPTIONS, "the experiment ended before enough interruptions"
    done = run_cli("run", str(root), "-w", str(workspace))
    assert done.returncode == 0, done.stderr
    assert_lines_valid(workspace)
    got = finals(workspace)
    assert got == expected  # each run finished exactly once, with the same metrics
