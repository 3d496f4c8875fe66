"""Text from pipelines and workspaces reaches the terminal escaped, and CSV runs no formula.

A pipeline reports metric keys with terminal escape sequences and rich markup, and
fails with an escape sequence in its message; a trial's name holds a C1 control.
Every command a user runs on it (``run`` in a pipe and on a real pseudo-terminal,
``status``, ``results``, ``validate``) shows them escaped (``\\x1b``), never raw.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from expman.escaping import csv_cell, printable, printable_json
from expman.tablefit import Column, Sheet, print_table

from .conftest import run_cli

#: Window title (OSC), clear screen (CSI), an 8-bit CSI, a bidi override.
TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"
C1_CSI = "\x9b31m"
BIDI = "\u202e"

HOSTILE = textwrap.dedent(
    f"""
    from expman import Pipeline


    class Hostile(Pipeline):
        async def run(self, ctx):
            await ctx.epoch_end(
                0, {{{TITLE!r} + "loss": 0.5, "[red]k[/red]": 1.0, "n\\nexpman: forged": 2.0}}
            )
            if ctx.repeat == 1:
                raise ValueError("bad " + {CLEAR!r} + " thing " + {BIDI!r})
            return {{"note": "=cmd|' /C calc'!A0", "neg": -0.5}}
    """
)

RAW = (TITLE, CLEAR, C1_CSI, BIDI, "\x1b]0;", "\x1b[2J")


def hostile_experiment(make_experiment: Callable[..., Path]) -> Path:
    root = make_experiment(
        base={"pipeline": {"type": "hostile:Hostile"}, "formula": "=1+2", "lr": -0.5},
        trials=[{"name": f"t{C1_CSI}", "id": 1, "repeat": 2}],
    )
    (root / "hostile.py").write_text(HOSTILE)
    return root


def assert_no_raw_controls(text: str) -> None:
    for raw in RAW:
        assert raw not in text, f"{raw!r} reached the terminal raw: {text!r}"
    assert "\x1b" not in text, text  # not even one of rich's own: a pipe gets no styles


@pytest.fixture
def finished(make_experiment: Callable[..., Path], workspace: Path) -> tuple[Path, Path]:
    """The hostile experiment run once (in a pipe); its config folder and experiment folder."""
    root = hostile_experiment(make_experiment)
    proc = run_cli("run", str(root), "-w", str(workspace))
    assert proc.returncode == 1, proc.stderr
    assert_no_raw_controls(proc.stdout + proc.stderr)
    assert "\\x1b]0;pwned\\x07loss" in proc.stdout
    assert "bad \\x1b[2J thing \\u202e" in proc.stdout
    assert f"t{printable(C1_CSI)}/run_1" in proc.stdout
    # A newline in a metric key cannot forge a line of expman's own.
    lines = (proc.stdout + proc.stderr).splitlines()
    assert not [line for line in lines if line.startswith("expman: forged")], lines
    assert "n\\nexpman: forged=2" in proc.stdout
    return root, next(workspace.iterdir())


class TestPrintable:
    """The one escaping function and its JSON and CSV companions."""

    @pytest.mark.parametrize(
        ("text", "shown"),
        [
            ("plain é 中文 🎉", "plain é 中文 🎉"),
            (TITLE, "\\x1b]0;pwned\\x07"),
            (C1_CSI, "\\x9b31m"),
            (f"a{BIDI}b", "a\\u202eb"),
            ("a\nb\tc\rd\x00\x7f", "a\\nb\\tc\\rd\\x00\\x7f"),
            ("line\u2028sep", "line\\u2028sep"),
        ],
    )
    def test_controls_come_out_escaped(self, text: str, shown: str) -> None:
        """Every control character is written as its escape; printable text is untouched."""
        assert printable(text) == shown

    def test_newlines_stay_where_a_message_spans_lines(self) -> None:
        """``newlines=True`` keeps line breaks and still escapes the rest."""
        assert printable(f"one{CLEAR}\ntwo\r\n", newlines=True) == "one\\x1b[2J\ntwo\\r\n"

    def test_json_text_stays_the_same_json(self) -> None:
        """Escaped JSON reads back as the same values, with no raw control left."""
        text = json.dumps({"k": f"{C1_CSI}{BIDI}\u2028"}, ensure_ascii=False)
        safe = printable_json(text)
        assert json.loads(safe) == json.loads(text)
        assert C1_CSI not in safe
        assert BIDI not in safe

    @pytest.mark.parametrize(
        ("value", "cell"),
        [
            ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
            ("+1+1", "'+1+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("-0.5", "-0.5"),
            ("-1e-3", "-1e-3"),
            (-0.5, -0.5),
            (3, 3),
            (None, ""),
            ("name", "name"),
        ],
    )
    def test_csv_cells_start_no_formula(self, value: object, cell: object) -> None:
        """OWASP's formula starts get a quote; numbers (and number-only text) stay numbers."""
        assert csv_cell(value) == cell


def test_table_cells_are_literal_text_on_a_terminal() -> None:
    """Markup and escapes in cells and headers: shown as written, never acted on."""
    out = io.StringIO()
    sheet = Sheet(
        (
            Column("run", ["[red]a[/red]", f"b{TITLE}"], place="key"),
            Column(f"m{CLEAR}", [":smile:", "x"]),
        )
    )
    print_table(Console(file=out, width=120, force_terminal=True), sheet)
    text = out.getvalue()
    assert "[red]a[/red]" in text
    assert ":smile:" in text
    assert "b\\x1b]0;pwned\\x07" in text
    assert "m\\x1b[2J" in text
    assert TITLE not in text
    assert CLEAR not in text


def test_status_and_results_show_names_and_errors_escaped(finished: tuple[Path, Path]) -> None:
    """``status`` and ``results`` (table, JSON): no raw control, the same text escaped."""
    _, experiment = finished
    status = run_cli("status", str(experiment))
    assert status.returncode == 0, status.stderr
    assert_no_raw_controls(status.stdout + status.stderr)
    assert "bad \\x1b[2J thing" in status.stdout
    trials = run_cli("results", str(experiment), "--metric", "neg", "--mode", "min")
    assert trials.returncode == 0, trials.stderr
    assert_no_raw_controls(trials.stdout + trials.stderr)
    assert f"t{printable(C1_CSI)}" in trials.stdout
    runs = run_cli("results", str(experiment), "--metric", "neg", "--mode", "min", "--runs")
    assert runs.returncode == 0, runs.stderr
    assert_no_raw_controls(runs.stdout + runs.stderr)
    assert "\\x1b]0;pwned\\x07loss=0.5" in runs.stdout
    assert "[red]k[/red]=1" in runs.stdout
    data = run_cli(
        "results", str(experiment), "--metric", "neg", "--mode", "min", "--runs", "--format", "json"
    )
    assert C1_CSI not in data.stdout
    assert BIDI not in data.stdout
    records = json.loads(data.stdout)
    assert {r["trial"] for r in records} == {f"t{C1_CSI}"}  # the same data, escaped as JSON


def test_csv_output_starts_no_formula_and_keeps_numbers(finished: tuple[Path, Path]) -> None:
    """``results --format csv``: formula-like text quoted, -0.5 left a number."""
    _, experiment = finished
    for args in ([], ["--runs"]):
        proc = run_cli(
            "results", str(experiment), "--metric", "neg", "--mode", "min", "--format", "csv", *args
        )
        assert proc.returncode == 0, proc.stderr
        rows = list(csv.reader(io.StringIO(proc.stdout)))
        cells = [cell for row in rows for cell in row]
        assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")], cells
        assert "-0.5" in cells
        assert not [c for c in cells if c.startswith("-") and c != "-0.5"], cells
        assert "'=1+2" in cells or "formula" not in rows[0]


def test_validate_and_config_errors_escape_what_the_user_wrote(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A config error quoting an escape sequence, and validate's plan: shown escaped."""
    root = hostile_experiment(make_experiment)
    proc = run_cli("validate", str(root), "-w", str(workspace))
    assert proc.returncode == 0, proc.stderr
    assert_no_raw_controls(proc.stdout + proc.stderr)
    assert f"t{printable(C1_CSI)}" in proc.stdout
    bad = run_cli("validate", str(root), f"settings.x{CLEAR}.y=1", "execution.bogus=1")
    assert bad.returncode == 2
    assert_no_raw_controls(bad.stdout + bad.stderr)
    missing = run_cli("status", str(workspace / f"no{TITLE}such"), "--debug")
    assert missing.returncode == 2
    assert_no_raw_controls(missing.stdout + missing.stderr)
    assert "no\\x1b]0;pwned\\x07such" in missing.stderr


@pytest.mark.slow
def test_the_live_display_on_a_terminal_shows_no_raw_sequence(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """``expman run`` on a real pseudo-terminal (the live display): user text escaped."""
    root = hostile_experiment(make_experiment)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
    )
    env.update(COLUMNS="160", LINES="40", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "expman", "run", str(root), "-w", str(workspace)],
        stdin=child,
        stdout=child,
        stderr=child,
        env=env,
        close_fds=True,
    )
    os.close(child)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed its side
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(main)
    text = output.decode(errors="replace")
    assert proc.returncode == 1, text
    for raw in RAW:
        assert raw not in text, f"{raw!r} reached the terminal raw"
    assert "\\x1b]0;pwned\\x07loss" in text or "bad \\x1b[2J thing" in text, text
    assert "[red]k[/red]" in text or "bad \\x1b[2J thing" in text


def test_a_hand_edited_journal_cannot_reach_the_terminal_raw(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Names and errors written into events.jsonl by hand: status and results escape them."""
    root = make_experiment()
    assert run_cli("run", str(root), "-w", str(workspace)).returncode == 0
    journal = workspace / "exp" / "logs" / "events.jsonl"
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    for record in records:
        if record.get("trial") == "a":
            record["trial"] = f"a{TITLE}[red]X[/red]"
        if record["type"] == "RunFinished":
            record.update(status="failed", error=f"boom {CLEAR}\nsecond line")
    journal.write_text("".join(json.dumps(r) + "\n" for r in records))
    for args in (["status"], ["results", "--runs", "--metric", "loss"]):
        proc = run_cli(*args, str(workspace / "exp"))
        assert proc.returncode == 0, proc.stderr
        assert_no_raw_controls(proc.stdout + proc.stderr)
        assert "a\\x1b]0;pwned\\x07[red]X[/red]/run_0" in proc.stdout
        assert "boom \\x1b[2J" in proc.stdout
