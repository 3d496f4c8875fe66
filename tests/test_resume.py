"""Resume and fault tolerance with real processes, real signals and real files."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import expman
from expman.events import RunStarted
from expman.jsonlines import read_lines

from .conftest import run_cli

#: A deterministic pipeline whose final metric depends on every epoch it went through,
#: with checkpoints, so an exact resume gives exactly the uninterrupted result.
CRASHY = textwrap.dedent(
    '''
    import json
    import os
    import time

    import anyio

    from expman import Callback, CheckpointDue, Pipeline, register


    class Chain(Pipeline):
        """x <- (x * 1103515245 + seed + epoch) mod 2**31, one epoch at a time."""

        def __init__(self, epochs=6, seconds=0.05, slow_save=0.0, fail_first_attempt_at=None,
                     **params):
            super().__init__(**params)
            self.epochs, self.seconds, self.slow_save = epochs, seconds, slow_save
            self.fail_at = fail_first_attempt_at
            self.x = 1
            self.trace = []

        async def run(self, ctx):
            for epoch in range(ctx.start_epoch, self.epochs):
                await anyio.sleep(self.seconds)
                if self.fail_at is not None and ctx.attempt == 1 and epoch == self.fail_at:
                    raise RuntimeError(f"flaky at epoch {epoch}")
                self.x = (self.x * 1103515245 + ctx.seed + epoch) % 2**31
                self.trace.append(epoch)
                if await ctx.epoch_end(epoch, {"x": self.x, "flat": 1.0}):
                    break
            return {"x": self.x, "start_epoch": ctx.start_epoch, "attempt": ctx.attempt}

        async def save_checkpoint(self, path):
            data = json.dumps({"x": self.x, "trace": self.trace}).encode()
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                if self.slow_save:
                    await anyio.sleep(self.slow_save)  # a kill lands mid-write
                f.write(data[len(data) // 2 :])

        def load_checkpoint(self, path):
            state = json.loads(open(path).read())
            self.x, self.trace = state["x"], state["trace"]


    class EveryEpoch(Callback):
        """Asks for a checkpoint after every epoch."""

        async def on_epoch_end(self, event):
            await self.publish(CheckpointDue(
                experiment=event.experiment, trial=event.trial, repeat=event.repeat,
                path=f"checkpoint-{event.epoch}", epoch=event.epoch))
    '''
)


def make_crashy(
    make_experiment: Callable[..., Path],
    *,
    runs: int = 12,
    epochs: int = 6,
    seconds: float = 0.05,
    callbacks: list[Any] | None = None,
    env: dict[str, Any] | None = None,
    **pipeline: Any,
) -> Path:
    root = make_experiment(
        base={
            "pipeline": {"type": "crashy:Chain", "epochs": epochs, "seconds": seconds, **pipeline},
            "callbacks": callbacks if callbacks is not None else [{"type": "crashy:EveryEpoch"}],
        },
        trials=[{"name": f"t{i}", "id": i, "repeat": runs // 3} for i in range(3)],
        env=env or {"execution": {"max_concurrency": 4, "grace_period": 2}},
    )
    (root / "crashy.py").write_text(CRASHY)
    return root


def start_cli(root: Path, workspace: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    source = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "expman", "run", str(root), "-w", str(workspace), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def journal(workspace: Path) -> list[dict[str, Any]]:
    return list(read_lines(workspace / "exp" / "logs" / "events.jsonl"))


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def count(workspace: Path, kind: str, **fields: Any) -> int:
    return sum(
        1
        for e in journal(workspace)
        if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())
    )


def final_metrics(workspace: Path) -> dict[tuple[str, int], Any]:
    finals = {}
    for e in journal(workspace):
        if e["type"] == "RunFinished" and e["status"] == "completed":
            finals[(e["trial"], e["repeat"])] = e["metrics"]["x"]
    return finals


def assert_workspace_sound(workspace: Path) -> None:
    """Every log line parses, and every checkpoint file is complete."""
    exp = workspace / "exp"
    for log in [*exp.rglob("*.log"), exp / "logs" / "events.jsonl"]:
        data = log.read_bytes()
        assert data.endswith(b"\n"), f"{log} ends in a torn line"
        for line in data.splitlines():
            json.loads(line)
    for checkpoint in exp.rglob("checkpoint-*"):
        json.loads(checkpoint.read_text())
    assert not [p for p in exp.rglob(".checkpoint-*")], "partial checkpoint files left"


@pytest.fixture
def baseline(make_experiment: Callable[..., Path], tmp_path: Path) -> dict[tuple[str, int], Any]:
    """Final metrics of the same experiment run without interruption."""
    root = make_crashy(make_experiment)
    other = tmp_path / "baseline"
    proc = run_cli("run", str(root), "-w", str(other))
    assert proc.returncode == 0, proc.stderr
    (root / "crashy.py").unlink()
    (root / "pipelines.py").unlink()
    for path in root.iterdir():
        path.unlink()
    root.rmdir()
    return final_metrics(other)


KILL_POINTS = {
    "while runs train": lambda ws: count(ws, "CheckpointStaged") >= 5,
    "right after a checkpoint": lambda ws: count(ws, "CheckpointStaged", epoch=2) >= 1,
    "during a checkpoint write": lambda ws: any(
        p.name.startswith(".checkpoint-") for p in (ws / "exp").rglob(".checkpoint-*")
    ),
    "between runs": lambda ws: count(ws, "RunFinished", status="completed") >= 4,
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_then_resume_is_exact(
    make_experiment: Callable[..., Path], workspace: Path, baseline: dict, point: str
) -> None:
    """Killed with SIGKILL at a point, resumed: one completion per run, same results."""
    slow_save = 0.3 if point == "during a checkpoint write" else 0.0
    root = make_crashy(make_experiment, slow_save=slow_save)
    proc = start_cli(root, workspace)
    try:
        wait_for(lambda: KILL_POINTS[point](workspace))
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = count(workspace, "RunFinished", status="completed")
    assert done_before < 12

    resumed = run_cli("run", str(root), "-w", str(workspace))
    assert resumed.returncode == 0, resumed.stderr
    if done_before:
        assert f"{done_before} run(s) already done" in resumed.stdout
    finished = [e for e in journal(workspace) if e["type"] == "RunFinished"]
    per_run: dict[tuple[str, int], int] = {}
    for e in finished:
        if e["status"] == "completed":
            per_run[(e["trial"], e["repeat"])] = per_run.get((e["trial"], e["repeat"]), 0) + 1
    assert len(per_run) == 12
    assert set(per_run.values()) == {1}
    assert final_metrics(workspace) == baseline
    assert_workspace_sound(workspace)


@pytest.mark.slow
def test_resumed_run_continues_from_its_checkpoint_epoch(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """After a kill, a run with a checkpoint at epoch k restarts at epoch k+1 (from events)."""
    root = make_crashy(make_experiment, runs=3, epochs=8, seconds=0.1)
    proc = start_cli(root, workspace)
    wait_for(lambda: count(workspace, "CheckpointStaged", trial="t0", repeat=0, epoch=3) >= 1)
    proc.kill()
    proc.wait()
    saved = [
        e["epoch"]
        for e in journal(workspace)
        if e["type"] == "CheckpointStaged" and e["trial"] == "t0" and e["repeat"] == 0
    ]
    assert run_cli("run", str(root), "-w", str(workspace)).returncode == 0
    starts = [
        e
        for e in journal(workspace)
        if e["type"] == "RunStarted" and e["trial"] == "t0" and e["repeat"] == 0
    ]
    assert starts[-1]["start_epoch"] == max(saved) + 1
    assert starts[-1]["checkpoint"].endswith(f"checkpoint-{max(saved)}")
    epochs = [
        json.loads(line)["epoch"]
        for line in (workspace / "exp" / "trials" / "t0" / "run_0" / "logs" / "metrics.log")
        .read_text()
        .splitlines()
    ]
    assert epochs[-(8 - max(saved) - 1) :] == list(range(max(saved) + 1, 8))


@pytest.mark.slow
def test_early_stopping_state_survives_resume(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """EarlyStopping that counted 2 of 3 patience epochs before a crash stops after 1 more."""
    root = make_crashy(
        make_experiment,
        runs=3,
        epochs=20,
        seconds=0.15,
        callbacks=[
            {"type": "crashy:EveryEpoch"},
            {"type": "EarlyStopping", "metric": "flat", "mode": "min", "patience": 3},
        ],
    )
    proc = start_cli(root, workspace)
    # A flat metric: epoch 0 sets the best, epochs 1 and 2 count, saved with checkpoint-2.
    wait_for(lambda: count(workspace, "CheckpointStaged", trial="t0", repeat=0, epoch=2) >= 1)
    proc.kill()
    proc.wait()
    state = next(
        e["state"]
        for e in journal(workspace)
        if e["type"] == "CheckpointStaged"  # it holds the state
        and e["trial"] == "t0"
        and e["repeat"] == 0
        and e["epoch"] == 2
    )
    assert state["EarlyStopping"]["wait"] == 2
    assert run_cli("run", str(root), "-w", str(workspace)).returncode == 0
    finished = [
        e
        for e in journal(workspace)
        if e["type"] == "RunFinished" and e["trial"] == "t0" and e["repeat"] == 0
    ]
    assert finished[-1]["status"] == "stopped"
    # Resumed at epoch 3 with wait=2: that one epoch exhausts the patience.
    run_log = workspace / "exp" / "trials" / "t0" / "run_0" / "logs" / "metrics.log"
    epochs = [json.loads(line)["epoch"] for line in run_log.read_text().splitlines()]
    assert epochs[-1] == 3
    assert epochs.count(3) == 1


@pytest.mark.slow
def test_sigint_checkpoints_running_runs_exits_130_and_resumes(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Ctrl-C: exit 130, every running run saved a final checkpoint, resume completes."""
    root = make_crashy(make_experiment, runs=6, epochs=30, seconds=0.05, callbacks=[])
    proc = start_cli(root, workspace, "-j", "3")
    wait_for(
        lambda: (
            count(workspace, "RunStarted") >= 3
            and (workspace / "exp" / "logs" / "metrics.log").exists()
            and len((workspace / "exp" / "logs" / "metrics.log").read_text().splitlines()) >= 6
        )
    )
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    events = journal(workspace)
    started = {(e["trial"], e["repeat"]) for e in events if e["type"] == "RunStarted"}
    saved = {
        (e["trial"], e["repeat"])
        for e in events
        if e["type"] == "CheckpointStaged" and e["reason"] == "interrupt"
    }
    assert started == saved
    assert all(e["status"] == "cancelled" for e in events if e["type"] == "RunFinished")
    resumed = run_cli("run", str(root), "-w", str(workspace))
    assert resumed.returncode == 0, resumed.stderr
    restarts = [e for e in journal(workspace) if e["type"] == "RunStarted"][len(started) :]
    assert {(e["trial"], e["repeat"]) for e in restarts if e["start_epoch"] > 0} == started
    assert count(workspace, "RunFinished", status="completed") == 6


# -- failure policies ---------------------------------------------------------------------


async def test_retry_restarts_from_the_latest_checkpoint(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """max_retries: a run failing at epoch 3 is retried from checkpoint 2, attempt 2."""
    root = make_crashy(
        make_experiment,
        runs=3,
        epochs=5,
        seconds=0.01,
        fail_first_attempt_at=3,
        env={"execution": {"max_retries": 1, "max_concurrency": 3}},
    )
    result = await expman.run_experiment(root, workspace=workspace)
    assert result.counts == {"completed": 3}
    assert {r.attempt for r in result.runs} == {2}
    assert {r.metrics["start_epoch"] for r in result.runs} == {3}
    retries = [e for e in journal(workspace) if e["type"] == "RunRetrying"]
    assert len(retries) == 3
    assert all(e["attempt"] == 2 and "flaky at epoch 3" in e["error"] for e in retries)
    run_dir = workspace / "exp" / "trials" / "t0" / "run_0"
    assert '"attempt":2' in (run_dir / "logs" / "run.log").read_text()
    # Made ahead for attempt 1, rewritten when attempt 2 started.
    assert yaml.safe_load((run_dir / "configs" / "run.yaml").read_text())["attempt"] == 2


async def test_fail_fast_stops_the_experiment_at_the_first_failure(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """fail_fast: one failure cancels the others and nothing new starts."""
    root = make_experiment(
        base={
            "pipeline": {"type": "pipelines:Sleeper", "seconds": 0.05, "epochs": 200, "fail_on": 0}
        },
        trials=[{"name": "a", "id": 1, "repeat": 6}],
        env={"execution": {"fail_fast": True, "max_concurrency": 2, "grace_period": 1}},
    )
    result = await expman.run_experiment(root, workspace=workspace)
    statuses = [r.status for r in result.runs]
    assert statuses[0] == "failed"
    assert statuses[1] == "cancelled"
    assert all(r.reason and r.reason.startswith("not started") for r in result.runs[2:])
    assert result.status == "failed"
    stop = [e for e in journal(workspace) if e["type"] == "StopRequested"]
    assert stop[0]["source"] == "fail_fast"


async def test_folders_made_ahead_for_runs_that_never_started_are_removed(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Run folders are prepared ahead of the dispatcher; a stop leaves only started runs'."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "seconds": 0.02, "epochs": 3}},
        trials=[
            {"name": "a", "id": 1, "repeat": 3, "settings": {"pipeline": {"fail_on": 0}}},
            {"name": "b", "id": 2, "repeat": 3},
            {"name": "c", "id": 3, "repeat": 3},
        ],
        env={"execution": {"fail_fast": True, "max_concurrency": 2}},
    )
    result = await expman.run_experiment(root, workspace=workspace)
    assert result.status == "failed"
    started = {(e["trial"], e["repeat"]) for e in journal(workspace) if e["type"] == "RunStarted"}
    trials = workspace / "exp" / "trials"
    on_disk = {(p.parent.name, int(p.name.split("_")[1])) for p in trials.glob("*/run_*")}
    assert on_disk == started
    assert {p.name for p in trials.iterdir()} == {"logs"} | {trial for trial, _ in started}


async def test_timeout_fails_the_run(make_experiment: Callable[..., Path], workspace: Path) -> None:
    """A run longer than execution.timeout ends failed with reason timeout; others finish."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Ignorer"}},
        trials=[
            {"name": "slow", "id": 1},
            {"name": "quick", "id": 2, "settings": {"pipeline": {"type": "pipelines:Sleeper"}}},
        ],
        env={"execution": {"timeout": 0.3}},
    )
    result = await expman.run_experiment(root, workspace=workspace)
    slow, quick = result.runs
    assert (slow.status, slow.reason) == ("failed", "timeout")
    assert quick.status == "completed"


async def test_stall_timeout_cancels_a_silent_run(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """No epoch_end for stall_timeout seconds: RunStalled is published, the run fails."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "seconds": 5, "epochs": 1}},
        env={"execution": {"stall_timeout": 0.3}},
    )
    result = await expman.run_experiment(root, workspace=workspace)
    assert (result.runs[0].status, result.runs[0].reason) == ("failed", "stalled")
    assert count(workspace, "RunStalled") == 1


# -- the lock -------------------------------------------------------------------------


@pytest.mark.slow
def test_second_process_is_refused_then_takes_over_after_a_kill(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A live holder refuses a second process (pid, host named); a killed one is taken over."""
    root = make_crashy(make_experiment, runs=3, epochs=40, seconds=0.05)
    first = start_cli(root, workspace)
    try:
        wait_for(lambda: count(workspace, "RunStarted") >= 1)
        second = run_cli("run", str(root), "-w", str(workspace))
        assert second.returncode == 2
        assert f"pid {first.pid}" in second.stderr
        assert "host" in second.stderr
    finally:
        first.kill()
        first.wait()
    third = run_cli("run", str(root), "-w", str(workspace))
    assert third.returncode == 0, third.stderr
    log = (workspace / "exp" / "logs" / "experiment.log").read_text()
    assert "lock_taken_over" in log


# -- disk faults ----------------------------------------------------------------------


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True, capture_output=True
    )


def _can_mount(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    try:
        _mount_tmpfs(probe, "size=64k")
    except (OSError, subprocess.CalledProcessError):
        return False
    subprocess.run(["umount", str(probe)], check=False)
    return True


@pytest.fixture
def tmpfs(tmp_path: Path) -> Any:
    """A small tmpfs of our own (needs root, as in CI); unmounted afterwards."""
    if os.geteuid() != 0 or not _can_mount(tmp_path):
        pytest.fail("disk-fault tests need root and tmpfs mounts (CI runs as root)")
    mounts: list[Path] = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        _mount_tmpfs(path, options)
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_read_only_workspace_is_a_clear_error(
    make_experiment: Callable[..., Path], tmpfs: Any
) -> None:
    """A read-only workspace: one message naming the path, non-zero exit, no traceback."""
    ws = tmpfs("ro", "size=1m,ro")
    proc = run_cli("run", str(make_experiment()), "-w", str(ws))
    assert proc.returncode != 0
    assert str(ws / "exp") in proc.stderr
    assert "Read-only file system" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_full_disk_ends_the_experiment_and_resume_works_after_the_fix(
    make_experiment: Callable[..., Path], tmpfs: Any
) -> None:
    """A disk that fills mid-experiment: clear error naming a path; after more space, resume."""
    ws = tmpfs("small", "size=256k")
    root = make_crashy(make_experiment, runs=12, epochs=60, seconds=0.0)
    proc = run_cli("run", str(root), "-w", str(ws))
    assert proc.returncode == 1, proc.stderr
    assert "No space left on device" in proc.stderr
    assert str(ws) in proc.stderr
    assert "Traceback" not in proc.stderr
    list(read_lines(ws / "exp" / "logs" / "events.jsonl"))  # still readable
    subprocess.run(["mount", "-o", "remount,size=64m", str(ws)], check=True)
    resumed = run_cli("run", str(root), "-w", str(ws))
    assert resumed.returncode == 0, resumed.stderr
    assert count(ws, "RunFinished", status="completed") >= 12


@pytest.mark.slow
def test_second_sigint_stops_at_once_and_the_journal_still_resumes(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Two Ctrl-C on runs that ignore stop requests: exit 130 at once, runs recorded cancelled."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:SyncSleeper", "seconds": 60, "epochs": 1}},
        trials=[{"name": "a", "id": 1, "repeat": 3}],
        env={"execution": {"max_concurrency": 2, "grace_period": 60}},
    )
    proc = start_cli(root, workspace)
    wait_for(lambda: count(workspace, "RunStarted") >= 2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - started < 15
    events = journal(workspace)
    finished = [e for e in events if e["type"] == "RunFinished"]
    assert sorted((e["trial"], e["repeat"], e["status"]) for e in finished) == [
        ("a", 0, "cancelled"),
        ("a", 1, "cancelled"),
    ]
    assert events[-1]["type"] == "ExperimentFinished"
    assert events[-1]["status"] == "cancelled"


@pytest.mark.slow
def test_timeout_of_a_blocking_sync_pipeline_ends_the_command(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A sync pipeline stuck in time.sleep past its timeout: the command still exits (1)."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:SyncSleeper", "seconds": 60, "epochs": 1}},
        env={"execution": {"timeout": 0.5}},
    )
    started = time.monotonic()
    proc = run_cli("run", str(root), "-w", str(workspace), timeout=40)
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - started < 20
    assert count(workspace, "RunFinished", status="failed") == 1


async def test_stopping_early_never_takes_a_snapshot_from_a_folder_with_data(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Folders that existed before (a lost journal) keep run.yaml when a stop comes first."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "seconds": 0.05, "epochs": 2}},
        trials=[{"name": "a", "id": 1, "repeat": 4}],
        env={"execution": {"max_concurrency": 1}},
    )
    assert (await expman.run_experiment(root, workspace=workspace)).status == "completed"
    (workspace / "exp" / "logs" / "events.jsonl").unlink()  # deleted by hand: all run again
    async with expman.start_experiment(root, workspace=workspace) as handle:
        async for event in handle.events():
            if isinstance(event, RunStarted):
                await handle.stop("enough")
                break
        await handle.wait()
    for k in range(4):
        run = workspace / "exp" / "trials" / "a" / f"run_{k}"
        assert (run / "configs" / "run.yaml").is_file(), k
        assert (run / "logs" / "run.log").is_file(), k


async def test_cancelling_at_any_run_start_keeps_the_workspace_consistent(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Cancel at the k-th RunStarted, resume, again: every journaled run has its run.yaml
    recording its last journaled attempt, and no folder exists for a run never started."""
    root = make_experiment(
        base={
            "pipeline": {"type": "pipelines:Sleeper", "seconds": 0.01, "epochs": 2, "fail_on": 1}
        },
        trials=[{"name": f"t{i}", "id": i + 1, "repeat": 3} for i in range(3)],
        env={"execution": {"max_concurrency": 4, "max_retries": 1}},
    )
    for cancel_at in (1, 2, 3, 5, 8, 2, 1):
        async with expman.start_experiment(root, workspace=workspace) as handle:
            seen = 0
            async for event in handle.events():
                if isinstance(event, RunStarted):
                    seen += 1
                    if seen == cancel_at:
                        handle.cancel()
                        break
            with contextlib.suppress(Exception):
                await handle.wait()
        attempts = {
            (e["trial"], e["repeat"]): e["attempt"]
            for e in journal(workspace)
            if e["type"] == "RunStarted"
        }
        trials = workspace / "exp" / "trials"
        on_disk = {(p.parent.name, int(p.name.split("_")[1])) for p in trials.glob("*/run_*")}
        assert on_disk == set(attempts), cancel_at
        for (trial, repeat), attempt in attempts.items():
            snapshot = trials / trial / f"run_{repeat}" / "configs" / "run.yaml"
            assert yaml.safe_load(snapshot.read_text())["attempt"] == attempt, (trial, repeat)
