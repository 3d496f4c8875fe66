"""The progress display of `expman run`: live on a terminal, lines in a pipe, JSON events."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import expman
from expman.events import EpochEnd, Event, ExperimentStarted, RunFinished, RunRetrying, RunStarted
from expman.subscribers.display import LineDisplay, ProgressState

from .conftest import run_cli

#: Repeat 0 fails at once; the other repeats sleep through their epochs.
PIPES = """
import anyio

from expman import Pipeline


class FailFirst(Pipeline):
    def __init__(self, epochs=4, seconds=0.2, **params):
        super().__init__(**params)
        self.epochs, self.seconds = epochs, seconds

    async def run(self, ctx):
        if ctx.repeat == 0:
            await anyio.sleep(0.05)
            raise ValueError("repeat 0 diverged")
        for epoch in range(self.epochs):
            await anyio.sleep(self.seconds)
            await ctx.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
        return {"acc": 0.9}
"""


def failing_experiment(
    make: Callable[..., Path], repeat: int = 3, epochs: int = 4, seconds: float = 0.2
) -> Path:
    root = make(
        base={
            "pipeline": {"type": "progress_pipes:FailFirst", "epochs": epochs, "seconds": seconds}
        },
        trials=[{"name": "t", "id": 1, "repeat": repeat}],
    )
    (root / "progress_pipes.py").write_text(PIPES)
    return root


def cli_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS", "LINES", "TTY_COMPATIBLE")
    }
    source = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return env


def run_in_terminal(*args: str, timeout: float = 60) -> tuple[int, str]:
    """Run ``python -m expman ARGS`` with a pseudo-terminal as its stdin/stdout/stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    env = cli_env() | {"TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "expman", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif proc.poll() is not None:
                break
        else:
            raise AssertionError(f"timed out; output so far:\n{output.decode(errors='replace')}")
        return proc.wait(timeout=10), output.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


class TestDisplayChoice:
    def test_live_display_on_a_terminal(
        self, make_experiment: Callable[..., Path], workspace: Path
    ) -> None:
        """On a terminal: a redrawn progress view (bar, runs done, ETA, counts, active runs
        with epoch of max), the failure printed as soon as it happens, then a summary."""
        root = failing_experiment(make_experiment)
        code, out = run_in_terminal("run", str(root), "-w", str(workspace), "-j", "3")
        assert code == 1, out
        assert "\x1b[2K" in out  # rich erases and redraws the live area
        assert "━" in out  # the progress bar
        assert "runs" in out
        assert "elapsed" in out
        assert "left" in out  # the ETA
        assert re.search(r"epoch \d/4", out)  # an active run: epoch of max
        assert "completed 0" in out
        assert "waiting" in out
        failure = out.index("t/run_0: FAILED after")
        assert "ValueError: repeat 0 diverged" in out[failure:]
        assert "t/run_0/logs/run.log" in out[failure:]
        # Printed while the others still ran: before the display showed every run done.
        assert failure < out.index("3/3 runs")
        assert "experiment exp:" in out[failure:]
        assert f"workspace: {workspace / 'exp'}" in out

    def test_quiet_on_a_terminal_prints_plain_lines(
        self, make_experiment: Callable[..., Path], workspace: Path
    ) -> None:
        """--quiet on a terminal: plain lines, no live redrawing."""
        root = failing_experiment(make_experiment, repeat=2, epochs=2, seconds=0.05)
        code, out = run_in_terminal("run", str(root), "-w", str(workspace), "--quiet")
        assert code == 1, out
        assert "\x1b[" not in out
        assert "t/run_1: started" in out
        assert "t/run_0: FAILED after" in out

    def test_plain_lines_in_a_pipe(
        self, make_experiment: Callable[..., Path], workspace: Path
    ) -> None:
        """In a pipe: one line per run start, finish and failure, then the summary; no
        escape codes."""
        root = failing_experiment(make_experiment, repeat=2, epochs=2, seconds=0.05)
        proc = run_cli("run", str(root), "-w", str(workspace))
        assert proc.returncode == 1
        out = proc.stdout
        assert "\x1b" not in out
        lines = out.splitlines()
        assert lines[0].startswith("experiment exp: 2 runs in 1 trial")
        assert "t/run_0: started (seed" in out
        assert "t/run_1: started (seed" in out
        assert any(
            line.startswith("[")
            and "t/run_0: FAILED after" in line
            and "repeat 0 diverged" in line
            and line.endswith("t/run_0/logs/run.log)")
            for line in lines
        )
        assert any("t/run_1: completed in" in line and "2 epochs" in line for line in lines)
        assert "experiment exp: failed (1 completed, 1 failed)" in out
        assert lines[-1] == f"workspace: {workspace / 'exp'}"


def test_json_stream_parses_line_by_line(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """--json: every stdout line is one JSON event, from ExperimentStarted to
    ExperimentFinished, and stdout holds nothing else."""
    root = failing_experiment(make_experiment, repeat=2, epochs=3, seconds=0.02)
    proc = run_cli("run", str(root), "-w", str(workspace), "--json")
    assert proc.returncode == 1, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    types = [e["type"] for e in events]
    assert types[0] == "ExperimentStarted"
    assert types[-1] == "ExperimentFinished"
    assert types.count("RunStarted") == 2
    assert types.count("EpochEnd") == 3
    finished = {e["repeat"]: e for e in events if e["type"] == "RunFinished"}
    assert finished[0]["status"] == "failed"
    assert "repeat 0 diverged" in finished[0]["error"]
    assert finished[1]["status"] == "completed"
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    assert "experiment exp: failed" in proc.stderr  # the summary is for people: stderr


@pytest.mark.slow
def test_a_failure_is_printed_while_other_runs_continue(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Reading the pipe as it comes: the failure line arrives while the process still runs
    and before any other run has finished."""
    root = failing_experiment(make_experiment, repeat=3, epochs=6, seconds=0.3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "expman", "run", str(root), "-w", str(workspace), "-j", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "FAILED" in line:
                still_running = proc.poll() is None
                break
        else:
            raise AssertionError("".join(seen))
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert still_running
    assert "t/run_0: FAILED" in seen[-1]
    assert not any("completed in" in line for line in seen)
    assert "t/run_1: completed in" in rest
    assert "t/run_2: completed in" in rest
    assert proc.returncode == 1


class TestProgressState:
    def test_counts_active_runs_retries_and_eta(self) -> None:
        """The state counts finished runs by status, tracks active runs' epochs, takes a
        retried failure back, and estimates time left once something progressed."""
        state = ProgressState(max_epochs={"t": 4})
        state.apply(ExperimentStarted(experiment="e", path="/x", runs=3, trials=1))
        assert state.eta() is None
        for k in (0, 1):
            state.apply(RunStarted(experiment="e", trial="t", repeat=k, seed=k, config_hash="h"))
        state.apply(EpochEnd(experiment="e", trial="t", repeat=1, epoch=1, metrics={"loss": 1}))
        assert state.active[("t", 1)].fraction == 0.5
        assert state.waiting == 1
        state.apply(RunFinished(experiment="e", trial="t", repeat=0, status="failed", duration=0.1))
        assert state.counts == {"failed": 1}
        state.apply(RunRetrying(experiment="e", trial="t", repeat=0, attempt=2, error="x"))
        assert state.counts == {"failed": 0}
        state.started = time.monotonic() - 10.0
        eta = state.eta()
        assert eta is not None
        assert 40.0 < eta < 60.0  # 0.5 of 3 runs done in 10 s: about 50 s left


async def test_a_stuck_output_does_not_hold_up_the_runs(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A display whose output blocks (a terminal nobody drains) lets every run finish;
    it catches up once the output moves again."""
    root = failing_experiment(make_experiment, repeat=3, epochs=3, seconds=0.01)
    gate = threading.Event()

    class StuckOutput(io.StringIO):
        def write(self, text: str) -> int:
            gate.wait(30)
            return super().write(text)

    output = StuckOutput()
    display = LineDisplay(output)
    finished: list[RunFinished] = []
    all_finished = anyio.Event()

    async def count(event: Event) -> None:
        if isinstance(event, RunFinished):
            finished.append(event)
            if len(finished) == 3:
                all_finished.set()

    with anyio.fail_after(30):
        async with expman.start_experiment(root, workspace=workspace, subscribers=[count]) as h:
            display.attach(h.bus)
            await all_finished.wait()
            assert output.getvalue() == ""  # the display is still stuck on its first line
            gate.set()
            result = await h.wait()
    assert result.counts == {"completed": 2, "failed": 1}
    text = output.getvalue()
    assert text.startswith("experiment exp: 3 runs in 1 trial")
    assert "t/run_0: FAILED" in text
