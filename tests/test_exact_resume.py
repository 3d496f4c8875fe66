"""Exact resume, whatever moment a crash comes and whatever the journal holds.

Real subprocesses killed with SIGKILL at chosen moments, real files corrupted or
planted, real journals edited by hand.  The pipeline chains a value through every
epoch it trains, so any epoch trained twice, skipped or restored from the wrong
state shows in its final value.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from expman.jsonlines import read_lines
from expman.workspace.journal import read_journal

from .conftest import run_cli
from .test_resume import start_cli, wait_for

#: Chains x through its epochs; optionally evaluates slowly after training (first
#: attempt only), so a kill can land between the last epoch and the run's result.
CHAIN = textwrap.dedent(
    """
    import json
    import time

    from expman import Pipeline


    class Chain(Pipeline):
        def __init__(self, epochs=4, seconds=0.02, evaluate_seconds=0.0, flat=False, **params):
            super().__init__(**params)
            self.epochs, self.seconds = epochs, seconds
            self.evaluate_seconds, self.flat = evaluate_seconds, flat
            self.x = 1

        def run(self, ctx):
            for epoch in range(ctx.start_epoch, self.epochs):
                if ctx.should_stop:  # a stop decided before a resume holds
                    break
                time.sleep(self.seconds)
                self.x = (self.x * 1103515245 + ctx.seed + epoch) % 2**31
                loss = 1.0 if self.flat else 1.0 / (epoch + 1)
                if ctx.epoch_end(epoch, {"x": self.x, "loss": loss}):
                    break
            if ctx.attempt == 1 and self.evaluate_seconds:
                time.sleep(self.evaluate_seconds)  # a slow evaluation: a kill lands here
            return {"score": self.x % 1000}

        def save_checkpoint(self, path):
            with open(path, "w") as f:
                json.dump({"x": self.x}, f)

        def load_checkpoint(self, path):
            with open(path) as f:
                self.x = json.load(f)["x"]
    """
)

CHECKPOINTS = {"type": "CheckpointCallback", "interval": 1, "save_top_k": 2, "save_last": True}


def make_chain(
    make_experiment: Callable[..., Path],
    *,
    runs: int = 1,
    callbacks: list[dict[str, Any]] | None = None,
    **pipeline: Any,
) -> Path:
    root = make_experiment(
        base={
            "pipeline": {"type": "chain:Chain", **pipeline},
            "callbacks": callbacks if callbacks is not None else [CHECKPOINTS],
        },
        trials=[{"name": "t", "id": 1, "repeat": runs}],
        env={"execution": {"max_concurrency": 2}},
    )
    (root / "chain.py").write_text(CHAIN)
    return root


def records(workspace: Path, kind: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in read_lines(workspace / "exp" / "logs" / "events.jsonl")
        if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())
    ]


def finished(workspace: Path) -> list[dict[str, Any]]:
    return [e for e in records(workspace, "RunFinished") if e["status"] in ("completed", "stopped")]


def reference(make_experiment: Callable[..., Path], tmp_path: Path, **kw: Any) -> dict[str, Any]:
    """The RunFinished of the same experiment, never interrupted."""
    root = make_chain(make_experiment, **{**kw, "evaluate_seconds": 0.0})
    ws = tmp_path / "reference"
    done = run_cli("run", str(root), "-w", str(ws))
    assert done.returncode == 0, done.stderr
    (only,) = finished(ws)
    shutil.rmtree(root)
    return only


def kill_when(proc: subprocess.Popen[str], condition: Callable[[], bool]) -> None:
    try:
        wait_for(condition)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_a_run_killed_after_its_last_epoch_resumes_with_its_epochs_and_metrics(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """Killed during the evaluation after the last epoch: the resume trains nothing more,
    its final checkpoint carries the last epoch (not -1), and its result is whole."""
    callbacks = [CHECKPOINTS, {"type": "MetricsTracker"}]
    expected = reference(make_experiment, tmp_path, epochs=4, callbacks=callbacks)
    root = make_chain(make_experiment, epochs=4, evaluate_seconds=3.0, callbacks=callbacks)
    ws = tmp_path / "ws"
    proc = start_cli(root, ws)
    kill_when(proc, lambda: bool(records(ws, "CheckpointStaged", reason="last", epoch=3)))
    assert not finished(ws)

    for _ in range(2):  # resumed twice: the second resume starts where the first ended
        done = run_cli("run", str(root), "-w", str(ws))
        assert done.returncode == 0, done.stderr
    (run,) = finished(ws)
    assert run["status"] == "completed"
    assert run["epochs"] == 4
    assert run["metrics"] == expected["metrics"]  # x, loss, best_loss, score: all of them
    final = records(ws, "CheckpointStaged", reason="final")
    assert [c["epoch"] for c in final] == [3]
    starts = records(ws, "RunStarted")
    assert [s["start_epoch"] for s in starts] == [0, 4]

    shown = run_cli("results", str(ws / "exp"), "--runs", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    assert (row["attempts"], row["epochs"], row["epochs_trained"]) == (2, 4, 4)
    assert row["duration"] >= 4 * 0.02  # every attempt's time, not the last one's
    status = run_cli("status", str(ws / "exp"))
    assert status.returncode == 0, status.stderr
    assert "attempts" in status.stdout


def test_epochs_trained_twice_count_in_the_history(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """Killed mid-run with no checkpoint: the whole history says what was trained."""
    root = make_chain(make_experiment, epochs=6, seconds=0.2, callbacks=[])
    ws = tmp_path / "ws"
    proc = start_cli(root, ws)
    metrics_log = ws / "exp" / "trials" / "t" / "run_0" / "logs" / "metrics.log"
    kill_when(proc, lambda: metrics_log.exists() and len(metrics_log.read_bytes().split()) >= 3)
    done = run_cli("run", str(root), "-w", str(ws))
    assert done.returncode == 0, done.stderr
    shown = run_cli("results", str(ws / "exp"), "--runs", "--format", "json")
    (row,) = json.loads(shown.stdout)
    assert row["attempts"] == 2
    assert row["epochs"] == 6
    # The first attempt's epochs are not in the journal (it saved no checkpoint): the
    # history counts what the journal proves, and never less than the run's epochs.
    assert row["epochs_trained"] >= 6


def test_a_corrupted_newest_checkpoint_falls_back_to_an_older_one(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    expected = reference(make_experiment, tmp_path, epochs=8, seconds=0.1)
    root = make_chain(make_experiment, epochs=8, seconds=0.1)
    ws = tmp_path / "ws"
    proc = start_cli(root, ws)
    artifacts = ws / "exp" / "trials" / "t" / "run_0" / "artifacts"

    def renamed() -> bool:
        # Journaled and renamed into place: a staged file left beside it would be
        # renamed over the broken one on resume, and the case would not be exercised.
        staged = records(ws, "CheckpointStaged", reason="last", epoch=4)
        return bool(staged) and not (artifacts / staged[-1]["staged"]).exists()

    kill_when(proc, renamed)
    newest = read_journal(ws / "exp" / "logs" / "events.jsonl").runs["t", 0].checkpoints
    names = [Path(p).name for p in newest]
    assert names[-1] == "checkpoint-last"
    # The two newest are broken: the resume must say so and use the third.
    for name in names[-2:]:
        (artifacts / name).write_text("{not json")
    done = run_cli("run", str(root), "-w", str(ws))
    assert done.returncode == 0, done.stderr
    (run,) = finished(ws)
    assert run["status"] == "completed"
    assert run["metrics"]["x"] == expected["metrics"]["x"]
    log = (artifacts.parent / "logs" / "run.log").read_text()
    assert "checkpoint-last could not be loaded" in log
    assert "resuming from the older" in log


def test_no_loadable_checkpoint_starts_from_scratch_and_says_so(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    expected = reference(make_experiment, tmp_path, epochs=6, seconds=0.1)
    root = make_chain(make_experiment, epochs=6, seconds=0.1)
    ws = tmp_path / "ws"
    proc = start_cli(root, ws)
    kill_when(proc, lambda: bool(records(ws, "CheckpointStaged", reason="last", epoch=2)))
    artifacts = ws / "exp" / "trials" / "t" / "run_0" / "artifacts"
    for path in artifacts.glob("checkpoint-*"):
        path.write_text("garbage")
    done = run_cli("run", str(root), "-w", str(ws))
    assert done.returncode == 0, done.stderr
    (run,) = finished(ws)
    assert run["metrics"]["x"] == expected["metrics"]["x"]
    assert "starting from scratch" in (artifacts.parent / "logs" / "run.log").read_text()


def test_an_early_stop_decided_before_a_crash_holds_after_it(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """Stopped by EarlyStopping, killed during the evaluation: resumed, it stays stopped."""
    callbacks = [
        {"type": "EarlyStopping", "metric": "loss", "patience": 2},
        CHECKPOINTS,
        {"type": "MetricsTracker"},
    ]
    kw = {"epochs": 20, "flat": True, "callbacks": callbacks}
    expected = reference(make_experiment, tmp_path, **kw)
    assert expected["status"] == "stopped"
    assert expected["epochs"] == 3
    root = make_chain(make_experiment, evaluate_seconds=3.0, **kw)
    ws = tmp_path / "ws"
    proc = start_cli(root, ws)
    kill_when(
        proc,
        lambda: (
            bool(records(ws, "StopRequested"))
            and bool(records(ws, "CheckpointStaged", reason="last", epoch=2))
        ),
    )
    done = run_cli("run", str(root), "-w", str(ws))
    assert done.returncode == 0, done.stderr
    (run,) = finished(ws)
    assert run["status"] == "stopped"
    assert run["epochs"] == expected["epochs"]
    assert run["metrics"] == expected["metrics"]
    assert "early stopping" in run["reason"]


def test_a_copied_workspace_resumes_from_its_own_checkpoints(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    root = make_chain(make_experiment, epochs=6, seconds=0.1)
    ws = tmp_path / "ws"
    proc = start_cli(root, ws)
    kill_when(proc, lambda: bool(records(ws, "CheckpointStaged", reason="last", epoch=2)))
    original = {p: p.read_bytes() for p in (ws / "exp").rglob("checkpoint-*")}
    copy = tmp_path / "ws2"
    shutil.copytree(ws, copy, symlinks=True)
    done = run_cli("run", str(root), "-w", str(copy))
    assert done.returncode == 0, done.stderr
    # The original is untouched: every checkpoint there, byte for byte.
    assert {p: p.read_bytes() for p in (ws / "exp").rglob("checkpoint-*")} == original
    (started,) = [s for s in records(copy, "RunStarted") if s["start_epoch"] > 0]
    assert not Path(started["checkpoint"]).is_absolute()  # relative to the experiment


def test_journal_records_that_do_not_fit_are_skipped_with_a_message(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """Hand-edited journals: outside paths, other experiments, wrong types."""
    root = make_chain(make_experiment, runs=2, epochs=3)
    ws = tmp_path / "ws"
    done = run_cli("run", str(root), "-w", str(ws))
    assert done.returncode == 0, done.stderr
    journal = ws / "exp" / "logs" / "events.jsonl"
    (first,) = records(ws, "RunFinished", repeat=0)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    base = {"experiment": "exp", "trial": "t", "repeat": 1, "time": time.time()}
    planted = [
        # Checkpoints outside the experiment folder, by absolute path and by "..".
        {"type": "CheckpointStaged", **base, "path": str(victim), "epoch": 9, "state": {}},
        {"type": "CheckpointStaged", **base, "path": "../../victim", "staged": "x", "epoch": 9},
        # Another experiment's record for the same run, with the same config hash.
        {**first, "experiment": "other", "repeat": 1, "metrics": {"x": -1}},
        # Wrong types.
        {**first, "repeat": 1, "metrics": "oops"},
        {**first, "repeat": 1, "trial": ["t"]},
        {"type": "RunStarted", **base, "attempt": "2", "config_hash": "h", "seed": 1},
        {"type": "CheckpointStaged", **base, "path": "a", "staged": "b", "epoch": "3"},
        {"type": "RunFinished", **base, "status": "done", "duration": 1.0},
        [1, 2, 3],
    ]
    with journal.open("ab") as f:
        for record in planted:
            f.write(json.dumps(record).encode() + b"\n")
        f.write(b"{not json at all\n")
    # A RunFinished of repeat 1 that failed, so that the run is redone on the next run.
    before = read_journal(journal)
    assert len(before.problems) == len(planted) + 1
    assert all("events.jsonl, line" in p for p in before.problems)
    assert before.runs["t", 1].metrics != {"x": -1}
    for command in (["status"], ["results"], ["results", "--runs"]):
        shown = run_cli(*command, str(ws / "exp"))
        assert shown.returncode == 0, shown.stderr
        assert "Traceback" not in shown.stderr
        assert "events.jsonl, line" in shown.stderr
    again = run_cli("run", str(root), "-w", str(ws))
    assert again.returncode == 0, again.stderr
    assert "skipped" in again.stdout + again.stderr
    assert (victim / "precious.txt").read_text() == "keep me"


def test_a_journal_deleted_while_running_is_an_error_not_a_success(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    root = make_chain(make_experiment, runs=4, epochs=10, seconds=0.1)
    ws = tmp_path / "ws"
    proc = start_cli(root, ws)
    journal = ws / "exp" / "logs" / "events.jsonl"
    wait_for(lambda: bool(journal.exists() and records(ws, "CheckpointStaged")))
    journal.unlink()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode not in (0, None), out + err
    assert "journal was deleted or replaced" in err
    assert "Traceback" not in err


def test_the_journal_is_linear_in_epochs(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """A checkpoint every epoch with MetricsTracker: the journal grows by a line or two
    per epoch, not by the history so far."""
    callbacks = [
        {"type": "CheckpointCallback", "interval": 1, "save_top_k": -1},
        {"type": "MetricsTracker"},
    ]
    sizes = []
    for epochs in (100, 400):
        root = make_chain(make_experiment, epochs=epochs, seconds=0.0, callbacks=callbacks)
        ws = tmp_path / f"ws{epochs}"
        done = run_cli("run", str(root), "-w", str(ws))
        assert done.returncode == 0, done.stderr
        sizes.append((ws / "exp" / "logs" / "events.jsonl").stat().st_size)
        shutil.rmtree(root)
    per_epoch = [(sizes[1] - sizes[0]) / 300, sizes[0] / 100]
    assert per_epoch[0] < 1.5 * per_epoch[1]  # quadratic growth would make it ~4x


@pytest.mark.slow
def test_what_the_journal_calls_done_is_in_the_logs(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """kill -9 right after a run's RunFinished lands: its metrics.log has every epoch."""
    root = make_chain(make_experiment, runs=4, epochs=5, seconds=0.01, callbacks=[])
    for attempt in range(6):
        ws = tmp_path / f"ws{attempt}"
        proc = start_cli(root, ws)
        kill_when(proc, lambda ws=ws: bool(finished(ws)))
        for run in finished(ws):
            log = ws / "exp" / "trials" / "t" / f"run_{run['repeat']}" / "logs" / "metrics.log"
            epochs = [json.loads(line)["epoch"] for line in log.read_text().splitlines()]
            assert epochs == list(range(5)), (attempt, run["repeat"], epochs)
