"""Tables as a user sees them: `expman results | status | run` on a real digits workspace,
in a real pseudo-terminal of 80 and 120 columns, and in a pipe."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from expman.formatting import fmt
from expman.results.summary import Stats
from expman.results.tables import fmt_stats

from .conftest import run_cli

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits"
TRIALS = ("slow", "medium", "fast", "width-16", "width-64")  # the last two: a sweep
RUNS = tuple(f"{trial}/run_{k}" for trial in TRIALS for k in range(2 if "-" in trial else 3))
#: Escape sequences rich writes to a terminal (colours, cursor moves, erasing).
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished digits experiment (13 runs of 6 epochs) and the config it ran from."""
    base = tmp_path_factory.mktemp("digits")
    config = base / "digits"
    shutil.copytree(EXAMPLE, config, ignore=shutil.ignore_patterns("__pycache__"))
    done = run_cli("run", str(config), "-w", str(base / "ws"), "-j", "2", "epochs=6")
    assert done.returncode == 0, done.stdout + done.stderr
    return base / "ws" / "digits"


def environment() -> dict[str, str]:
    drop = ("NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS", "LINES", "TTY_COMPATIBLE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    source = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return env


def in_terminal(columns: int, *args: str, timeout: float = 90) -> tuple[int, list[str]]:
    """``python -m expman ARGS`` on a pseudo-terminal ``columns`` wide: exit code, lines seen."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "expman", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=environment() | {"TERM": "xterm-256color"},
        close_fds=True,
    )
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
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
            raise AssertionError(output.decode(errors="replace"))
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = ESCAPES.sub("", output.decode(errors="replace"))
    return code, [line for line in re.split(r"\r?\n|\r", text)]


def piped(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "expman", *args],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def words(line: str) -> list[str]:
    return line.split()


def assert_fits(lines: list[str], columns: int, *, whole: bool = True) -> None:
    """No line wider than the terminal; with ``whole``, no cell cut short either."""
    too_wide = [line for line in lines if len(line) > columns]
    assert not too_wide, too_wide
    if whole:
        assert not any("…" in line for line in lines), "a cell was cut short"


def trial_means(exp: Path) -> dict[str, str]:
    """Each trial's val_acc as the table prints it, from `expman results --format json`."""
    doc = json.loads("\n".join(piped("results", str(exp), "--format", "json")))
    assert doc["metric"] == "val_acc"
    return {
        row["trial"]: fmt_stats(Stats(row["n"], row["mean"], row["std"], None, None))
        for row in doc["trials"]
    }


@pytest.mark.parametrize("columns", [80, 120])
def test_results_show_whole_trial_names_beside_the_ranked_metric(
    digits: Path, columns: int
) -> None:
    """On a terminal of 80 or 120 columns, `expman results` shows every trial name whole
    on the line of its mean ± std of the ranked metric; nothing is cut, no line is wider
    than the terminal, and every metric appears in some part of the table."""
    code, lines = in_terminal(columns, "results", str(digits))
    assert code == 0, "\n".join(lines)
    assert_fits(lines, columns)
    header = next(line for line in lines if "val_acc (max)" in line)
    assert words(header)[:2] == ["#", "trial"]
    for trial, mean in trial_means(digits).items():
        assert any(trial in words(line) and mean in line for line in lines), (trial, mean)
    shown = " ".join(lines)
    for metric in ("val_loss", "train_loss", "best_val_acc", "train_acc"):
        assert metric in shown


@pytest.mark.parametrize("columns", [80, 120])
def test_status_and_ranked_runs_show_whole_run_names_and_the_metric(
    digits: Path, columns: int
) -> None:
    """`expman status` and `expman results --runs` show every run's name whole, on the line
    of its status and its val_acc (the ranked metric comes first among the metrics)."""
    code, lines = in_terminal(columns, "status", str(digits))
    assert code == 0, "\n".join(lines)
    assert_fits(lines, columns)
    for run in RUNS:
        row = next(line for line in lines if words(line)[:1] == [run])
        assert words(row)[1] in ("completed", "stopped")
        assert "val_acc=" in row
    code, lines = in_terminal(columns, "results", str(digits), "--runs")
    assert code == 0, "\n".join(lines)
    assert_fits(lines, columns)
    header = next(line for line in lines if words(line)[:2] == ["run", "status"])
    assert "val_acc" in words(header)
    runs = json.loads("\n".join(piped("results", str(digits), "--runs", "--format", "json")))
    for record in runs:
        label = f"{record['trial']}/run_{record['repeat']}"
        row = next(line for line in lines if words(line)[:1] == [label])
        assert fmt(record["val_acc"]) in words(row)


def test_the_end_of_run_table_at_80_columns(digits: Path, tmp_path: Path) -> None:
    """`expman run` on an 80-column terminal: the live lines keep each run's name whole
    (their metrics end in an ellipsis at the edge), the final table lists every run whole
    with its val_acc and cuts nothing, and no line is wider than 80."""
    config = tmp_path / "digits"
    shutil.copytree(EXAMPLE, config, ignore=shutil.ignore_patterns("__pycache__"))
    args = ("run", str(config), "-w", str(tmp_path / "ws"), "-j", "3", "epochs=4")
    code, lines = in_terminal(80, *args)
    assert code == 0, "\n".join(lines)
    assert_fits(lines, 80, whole=False)
    live = [line for line in lines if re.search(r"epoch \d/4", line)]
    assert live, "\n".join(lines)
    for line in live:
        assert words(line)[0] in RUNS, line
    summary = lines[next(i for i, line in enumerate(lines) if "experiment digits:" in line) :]
    assert_fits(summary, 80)
    for run in RUNS:
        row = next(line for line in summary if words(line)[:1] == [run])
        assert words(row)[1] in ("completed", "stopped")
        assert "val_acc=" in row
    assert any(line.startswith("workspace: ") for line in summary)


def test_the_end_of_a_resumed_run_at_120_columns(digits: Path, tmp_path: Path) -> None:
    """Resumed with nothing left to do, the final table at 120 columns lists every run
    whole as done before."""
    config = tmp_path / "digits"
    shutil.copytree(EXAMPLE, config, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(digits, tmp_path / "ws" / "digits")
    code, lines = in_terminal(120, "run", str(config), "-w", str(tmp_path / "ws"), "epochs=6")
    assert code == 0, "\n".join(lines)
    assert_fits(lines, 120)
    summary = lines[next(i for i, line in enumerate(lines) if "experiment digits:" in line) :]
    for run in RUNS:
        row = next(line for line in summary if words(line)[:1] == [run])
        assert "(done before)" in row
        assert "val_acc=" in row


def test_piped_tables_keep_every_column_without_trailing_spaces(digits: Path) -> None:
    """In a pipe, `results`, `results --runs` and `status` print one table each with
    every column at its natural width: all metrics in the header, no cut cells, no
    trailing spaces, no escape codes."""
    metrics = ("val_acc", "val_loss", "train_loss", "best_val_acc", "best_val_acc_epoch")
    results = piped("results", str(digits))
    header = words(results[1])
    # The settings that differ between trials: lr, and the sweep's width.
    assert header[:5] == ["#", "trial", "lr", "pipeline.hidden", "n"]
    assert ["min", "max"] == header[7:9]
    assert set(metrics[1:]) | {"train_acc", "best_train_loss_epoch"} <= set(header)
    assert len(results) == 2 + len(TRIALS)
    runs = piped("results", str(digits), "--runs")
    assert words(runs[1])[:6] == ["run", "status", "seed", "epochs", "val_acc", "metrics"]
    status = piped("status", str(digits))
    assert words(status[1])[:6] == ["run", "status", "attempts", "epochs", "duration", "last"]
    for lines in (results, runs, status):
        assert not [line for line in lines if line != line.rstrip()]
        assert not any("…" in line or "\x1b" in line for line in lines)
    for run in RUNS:
        assert any(words(line)[:1] == [run] for line in status)
