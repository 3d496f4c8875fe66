"""Signals at any moment, pipelines that exit, block the loop or fork, and workers that die
with their driver: real ``python -m expman`` processes, real signals, real forks."""

from __future__ import annotations

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

from .conftest import run_cli
from .test_resume import count, journal, start_cli, wait_for

#: Pipelines that misbehave on purpose.
HOSTILE = textwrap.dedent(
    '''
    import atexit
    import os
    import sys
    import time

    import anyio

    from expman import Callback, CheckpointDue, Pipeline

    if os.environ.get("LINGER_AT_EXIT"):
        # The user's own clean-up keeps the process alive after the summary.
        atexit.register(time.sleep, float(os.environ["LINGER_AT_EXIT"]))


    def leave(how):
        if how == "sys.exit":
            sys.exit(0)
        if how == "KeyboardInterrupt":
            raise KeyboardInterrupt
        if how == "GeneratorExit":
            raise GeneratorExit
        if how == "os._exit":
            os._exit(0)


    class Exits(Pipeline):
        """Run 0 leaves by ``how``; the others complete."""

        def __init__(self, how="sys.exit", when="run", **params):
            super().__init__(**params)
            self.how, self.when = how, when

        async def run(self, ctx):
            await ctx.epoch_end(0, {"loss": 1.0})
            if ctx.repeat == 0:
                leave(self.how)
            return {"done": 1}

        def save_checkpoint(self, path):
            if self.when == "save_checkpoint":
                leave(self.how)
            path.write_text("saved")


    class Saves(Callback):
        """Asks run 0 for a checkpoint after its first epoch."""

        async def on_epoch_end(self, event):
            if event.repeat == 0:
                await self.publish(CheckpointDue(
                    experiment=event.experiment, trial=event.trial, repeat=event.repeat,
                    path="checkpoint-0", epoch=event.epoch))


    class SyncExits(Exits):
        def run(self, ctx):
            ctx.epoch_end(0, {"loss": 1.0})
            if ctx.repeat == 0 and self.when == "run":
                leave(self.how)
            return {"done": 1}


    class Steps(Pipeline):
        """A few short epochs, checkpointed by its state: resumes exactly."""

        def __init__(self, epochs=5, seconds=0.05, **params):
            super().__init__(**params)
            self.epochs, self.seconds, self.x = epochs, seconds, 1

        async def run(self, ctx):
            for epoch in range(ctx.start_epoch, self.epochs):
                await anyio.sleep(self.seconds)
                self.x = (self.x * 31 + epoch + ctx.seed) % 1000003
                if await ctx.epoch_end(epoch, {"x": self.x}):
                    break
            return {"x": self.x}

        def save_checkpoint(self, path):
            path.write_text(str(self.x))

        def load_checkpoint(self, path):
            self.x = int(path.read_text())


    class EveryEpoch(Callback):
        """A checkpoint after every epoch."""

        async def on_epoch_end(self, event):
            await self.publish(CheckpointDue(
                experiment=event.experiment, trial=event.trial, repeat=event.repeat,
                path=f"checkpoint-{event.epoch}", epoch=event.epoch))


    class Spinner(Pipeline):
        """Blocks the event loop (never awaits) while the file ``spin`` names exists."""

        def __init__(self, spin="", **params):
            super().__init__(**params)
            self.spin = spin

        async def run(self, ctx):
            await ctx.epoch_end(0, {"loss": 1.0})
            if os.path.exists(self.spin):
                open(self.spin + ".spinning", "w").close()
            while os.path.exists(self.spin):
                pass
            return {"spun": 1}


    class Forker(Pipeline):
        """Forks; the child returns from run as if it were the run."""

        async def run(self, ctx):
            pid = os.fork()
            if pid == 0:
                return {"child": 1}
            os.waitpid(pid, 0)
            await ctx.epoch_end(0, {"child_pid": pid})
            return {"child": 0}


    class ForkAwaits(Pipeline):
        """Forks; the child goes on awaiting in its copy of expman's event loop."""

        async def run(self, ctx):
            pid = os.fork()
            if pid == 0:
                await anyio.sleep(0.5)
                return {"child": 1}
            await ctx.epoch_end(0, {"child_pid": pid})
            await anyio.to_thread.run_sync(os.waitpid, pid, 0)
            return {"child": 0}


    class SyncForker(Pipeline):
        def run(self, ctx):
            pid = os.fork()
            if pid == 0:
                return {"child": 1}
            os.waitpid(pid, 0)
            ctx.epoch_end(0, {"child_pid": pid})
            return {"child": 0}


    class Holds(Pipeline):
        """Sleeps a minute in its worker (the process executor)."""

        def run(self, ctx):
            ctx.epoch_end(0, {"pid": os.getpid()})
            time.sleep(60)
            return {}
    '''
)


def hostile(make_experiment: Callable[..., Path], pipeline: dict[str, Any], **kw: Any) -> Path:
    root = make_experiment(base={"pipeline": pipeline}, **kw)
    (root / "hostile.py").write_text(HOSTILE)
    return root


def finished(workspace: Path) -> list[tuple[str, int, str]]:
    return sorted(
        (e["trial"], e["repeat"], e["status"])
        for e in journal(workspace)
        if e["type"] == "RunFinished"
    )


def assert_done_exactly_once(workspace: Path, runs: int) -> None:
    completed = [
        (e["trial"], e["repeat"])
        for e in journal(workspace)
        if e["type"] == "RunFinished" and e["status"] == "completed"
    ]
    assert len(completed) == runs, finished(workspace)
    assert len(set(completed)) == runs


def caught_signals(pid: int) -> int:
    """The mask of signals process ``pid`` has handlers for (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def wait_for_expman_handlers(proc: subprocess.Popen[str]) -> None:
    """Return once expman's first instruction ran: it handles SIGTERM (Python alone does not)."""
    bit = 1 << (signal.SIGTERM - 1)
    deadline = time.monotonic() + 20
    while not caught_signals(proc.pid) & bit:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "expman never installed its signal handlers"
        time.sleep(0.001)


# -- item 4: a pipeline cannot make a run look completed by exiting ----------------------


@pytest.mark.parametrize("how", ["sys.exit", "KeyboardInterrupt", "GeneratorExit", "os._exit"])
@pytest.mark.parametrize("kind", ["Exits", "SyncExits"])
def test_a_pipeline_that_exits_fails_its_run_and_the_others_go_on(
    make_experiment: Callable[..., Path], workspace: Path, how: str, kind: str
) -> None:
    """sys.exit, KeyboardInterrupt, GeneratorExit or os._exit in run: that run failed, exit 1."""
    root = hostile(
        make_experiment,
        {"type": f"hostile:{kind}", "how": how},
        trials=[{"name": "a", "id": 1, "repeat": 3}],
    )
    proc = run_cli("run", str(root), "-w", str(workspace), "-q", timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert finished(workspace) == [("a", 0, "failed"), ("a", 1, "completed"), ("a", 2, "completed")]
    (error,) = [e["error"] for e in journal(workspace) if e.get("error")]
    expected = {
        "sys.exit": "pipeline raised SystemExit(0)",
        "KeyboardInterrupt": "pipeline raised KeyboardInterrupt",
        "GeneratorExit": "pipeline raised GeneratorExit",
        "os._exit": "pipeline called os._exit(0)",
    }[how]
    assert expected in error
    assert journal(workspace)[-1]["type"] == "ExperimentFinished"


@pytest.mark.parametrize("how", ["sys.exit", "os._exit"])
def test_a_checkpoint_hook_that_exits_fails_its_run(
    make_experiment: Callable[..., Path], workspace: Path, how: str
) -> None:
    """sys.exit or os._exit in save_checkpoint (a worker thread): that run fails, not the rest."""
    root = make_experiment(
        base={
            "pipeline": {"type": "hostile:SyncExits", "how": how, "when": "save_checkpoint"},
            "callbacks": [{"type": "hostile:Saves"}],
        },
        trials=[{"name": "a", "id": 1, "repeat": 2}],
    )
    (root / "hostile.py").write_text(HOSTILE)
    proc = run_cli("run", str(root), "-w", str(workspace), "-q", timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert finished(workspace) == [("a", 0, "failed"), ("a", 1, "completed")]


@pytest.mark.parametrize("how", ["sys.exit", "os._exit"])
def test_a_process_worker_that_exits_fails_its_run(
    make_experiment: Callable[..., Path], workspace: Path, how: str
) -> None:
    """In a worker process, sys.exit is the run's PipelineExit and os._exit a lost worker."""
    root = hostile(
        make_experiment,
        {"type": "hostile:SyncExits", "how": how},
        trials=[{"name": "a", "id": 1, "repeat": 2}],
    )
    proc = run_cli("run", str(root), "-w", str(workspace), "-q", "--executor", "process")
    assert proc.returncode == 1, proc.stderr
    assert finished(workspace) == [("a", 0, "failed"), ("a", 1, "completed")]
    (error,) = [e["error"] for e in journal(workspace) if e.get("error")]
    if how == "sys.exit":
        assert "pipeline raised SystemExit(0)" in error
    else:
        assert "exited with code 0 before its run ended" in error


# -- item 16: a signal at any moment: 130/143, one line, a workspace that resumes ---------

EARLY = [0.0, 0.05, 0.1, 0.2, 0.3]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_in_the_first_moments_exits_with_its_code_and_resumes(
    make_experiment: Callable[..., Path], workspace: Path, signum: int
) -> None:
    """From expman's first instruction on, a signal is 128 + its number and a message."""
    root = hostile(
        make_experiment,
        {"type": "hostile:Steps", "epochs": 4, "seconds": 0.02},
        trials=[{"name": "a", "id": 1, "repeat": 4}],
    )
    for delay in EARLY:
        proc = start_cli(root, workspace, "-q", "-j", "2")
        wait_for_expman_handlers(proc)
        time.sleep(delay)
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode in (128 + signum, 0), (delay, proc.returncode, err)
        assert "Traceback" not in err, (delay, err)
        if proc.returncode:
            assert f"expman: {signal.Signals(signum).name}" in err, (delay, err)
    again = run_cli("run", str(root), "-w", str(workspace), "-q")
    assert again.returncode == 0, again.stderr
    assert_done_exactly_once(workspace, 4)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_runs_train_stops_them_and_resumes_exactly_once(
    make_experiment: Callable[..., Path], workspace: Path, signum: int
) -> None:
    """Mid-run: the runs stop with checkpoints, 128 + signal, and the next run finishes them."""
    root = hostile(
        make_experiment,
        {"type": "hostile:Steps", "epochs": 40, "seconds": 0.05},
        trials=[{"name": "a", "id": 1, "repeat": 3}],
    )
    proc = start_cli(root, workspace, "-q", "-j", "3")
    wait_for(lambda: count(workspace, "RunStarted") >= 3 and _epochs(workspace) >= 3)
    time.sleep(0.3)
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert f"expman: {signal.Signals(signum).name}: stopping runs" in err
    assert {s for *_k, s in finished(workspace)} == {"cancelled"}
    again = run_cli("run", str(root), "-w", str(workspace), "-q")
    assert again.returncode == 0, again.stderr
    assert_done_exactly_once(workspace, 3)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_after_the_summary_still_exits_with_its_code(
    make_experiment: Callable[..., Path], workspace: Path, signum: int
) -> None:
    """After the summary (the user's atexit clean-up still running): 128 + signal, a message."""
    root = hostile(
        make_experiment,
        {"type": "hostile:Steps", "epochs": 2, "seconds": 0.0},
        trials=[{"name": "a", "id": 1, "repeat": 2}],
    )
    env = {**os.environ, "LINGER_AT_EXIT": "3"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "expman", "run", str(root), "-w", str(workspace), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("workspace:"):  # the summary's last line
            break
    time.sleep(0.2)
    proc.send_signal(signum)
    started = time.monotonic()
    rest = proc.stderr.read()
    proc.wait(timeout=30)
    assert time.monotonic() - started < 2
    assert proc.returncode == 128 + signum, "".join(lines) + rest
    assert "Traceback" not in rest
    assert f"expman: {signal.Signals(signum).name}: interrupted after the experiment ended" in rest
    assert_done_exactly_once(workspace, 2)
    again = run_cli("run", str(root), "-w", str(workspace), "-q")
    assert again.returncode == 0, again.stderr
    assert count(workspace, "RunStarted") == 2


def final_x(workspace: Path) -> dict[tuple[str, int], Any]:
    return {
        (e["trial"], e["repeat"]): e["metrics"]["x"]
        for e in journal(workspace)
        if e["type"] == "RunFinished" and e["status"] == "completed"
    }


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "process"])
def test_signals_at_random_moments_end_with_the_uninterrupted_results(
    make_experiment: Callable[..., Path], workspace: Path, tmp_path: Path, executor: str
) -> None:
    """12 SIGINT/SIGTERM at random moments (from the first instruction on), then a last run:
    no traceback, every run once, exact metrics (test_interruption_loops goes on longer)."""
    import random

    root = make_experiment(
        base={
            "pipeline": {"type": "hostile:Steps", "epochs": 20, "seconds": 0.1},
            "callbacks": [{"type": "hostile:EveryEpoch"}],
        },
        trials=[{"name": "a", "id": 1, "repeat": 3}, {"name": "b", "id": 2, "repeat": 3}],
        env={"execution": {"max_concurrency": 3, "grace_period": 1}},
    )
    (root / "hostile.py").write_text(HOSTILE)
    baseline = tmp_path / "baseline"
    assert run_cli("run", str(root), "-w", str(baseline), "-q").returncode == 0
    chance = random.Random(13)
    interrupted = 0
    for attempt in range(12):
        signum = chance.choice([signal.SIGINT, signal.SIGTERM])
        proc = start_cli(root, workspace, "-q", "--executor", executor)
        wait_for_expman_handlers(proc)
        delay = chance.uniform(0.0, 1.2)
        time.sleep(delay)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode in (0, 128 + signum), (attempt, delay, out, err)
        assert "Traceback" not in err, err
        interrupted += proc.returncode != 0
    assert interrupted >= 8  # most signals landed before the work was done
    again = run_cli("run", str(root), "-w", str(workspace), "-q", "--executor", executor)
    assert again.returncode == 0, again.stderr
    assert_done_exactly_once(workspace, 6)
    assert final_x(workspace) == final_x(baseline)
    for log in [*(workspace / "exp").rglob("*.log"), workspace / "exp" / "logs" / "events.jsonl"]:
        for line in log.read_bytes().splitlines():
            json.loads(line)


def test_a_signal_during_a_results_command_is_an_interruption(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """``expman status`` interrupted: 130 and one line, no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "expman", "status", "-w", str(workspace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    wait_for_expman_handlers(proc)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode in (130, 0, 2), err  # it may have finished first
    assert "Traceback" not in err


# -- item 17: a blocked event loop, a forking pipeline --------------------------------------


def spinning(make_experiment: Callable[..., Path], tmp_path: Path, **env: Any) -> tuple[Path, Path]:
    flag = tmp_path / "spin"
    flag.touch()
    root = hostile(
        make_experiment,
        {"type": "hostile:Spinner", "spin": str(flag)},
        trials=[{"name": "a", "id": 1, "repeat": 1}],
        env={"execution": env} if env else None,
    )
    return root, flag


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["timeout", "stall_timeout"])
def test_a_timeout_ends_a_pipeline_that_blocks_the_loop(
    make_experiment: Callable[..., Path], workspace: Path, tmp_path: Path, limit: str
) -> None:
    """``while True: pass`` with execution.timeout 2: the command ends within ~5 s, exit 1."""
    root, flag = spinning(make_experiment, tmp_path, **{limit: 2})
    started = time.monotonic()
    proc = run_cli("run", str(root), "-w", str(workspace), "-q", timeout=30)
    assert time.monotonic() - started < 20  # ~5 s; a loaded machine doubles it, a hang is 30
    assert proc.returncode == 1, proc.stderr
    assert "run a/run_0 (at hostile.py:" in proc.stderr
    assert f"execution.{limit} (2s) of a/run_0 is due" in proc.stderr
    assert "Traceback" not in proc.stderr
    flag.unlink()
    again = run_cli("run", str(root), "-w", str(workspace), "-q")
    assert again.returncode == 0, again.stderr
    assert_done_exactly_once(workspace, 1)


@pytest.mark.slow
@pytest.mark.parametrize("twice", [False, True], ids=["once", "twice"])
def test_ctrl_c_ends_a_pipeline_that_blocks_the_loop(
    make_experiment: Callable[..., Path], workspace: Path, tmp_path: Path, twice: bool
) -> None:
    """SIGINT with the loop blocked: 130 once the loop stays silent; a second one at once."""
    root, flag = spinning(make_experiment, tmp_path)
    proc = start_cli(root, workspace, "-q")
    wait_for(lambda: flag.with_name("spin.spinning").exists())
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    if twice:
        time.sleep(1.2)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
    _out, err = proc.communicate(timeout=30)
    took = time.monotonic() - started
    assert proc.returncode == 130, err
    assert took < (1.0 if twice else 5.0), took
    assert "run a/run_0 (at hostile.py:" in err
    assert "Traceback" not in err
    flag.unlink()
    again = run_cli("run", str(root), "-w", str(workspace), "-q")
    assert again.returncode == 0, again.stderr
    assert_done_exactly_once(workspace, 1)


# In a worker process only the sync pipeline: an async one runs the same worker code.
@pytest.mark.parametrize(
    ("kind", "executor"),
    [
        ("Forker", "local"),
        ("ForkAwaits", "local"),
        ("SyncForker", "local"),
        ("SyncForker", "process"),
    ],
)
def test_a_forked_child_never_runs_expman(
    make_experiment: Callable[..., Path], workspace: Path, kind: str, executor: str
) -> None:
    """A pipeline's fork child that returns from run ends there; each run completes once."""
    root = hostile(
        make_experiment,
        {"type": f"hostile:{kind}"},
        trials=[{"name": "a", "id": 1, "repeat": 3}],
    )
    proc = run_cli("run", str(root), "-w", str(workspace), "-q", "--executor", executor, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert_done_exactly_once(workspace, 3)
    results = [e["metrics"] for e in journal(workspace) if e["type"] == "RunFinished"]
    assert all(m["child"] == 0 for m in results), results
    assert count(workspace, "RunStarted") == 3


# -- item 18: workers die with their driver -----------------------------------------------


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_process_workers_end_at_once_with_a_killed_driver(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """SIGKILL the driver: its workers (running and spare) are gone within a second."""
    root = hostile(
        make_experiment,
        {"type": "hostile:Holds"},
        trials=[{"name": "a", "id": 1, "repeat": 2}],
    )
    proc = start_cli(root, workspace, "-q", "-j", "2", "--executor", "process")
    wait_for(lambda: _epochs(workspace) >= 2)
    workers = children_of(proc.pid)
    assert len(workers) >= 2, workers
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 1.0
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [pid for pid in workers if alive(pid)]


def _epochs(workspace: Path) -> int:
    metrics = workspace / "exp" / "logs" / "metrics.log"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0
