"""Integrations end to end: the block, the driver's guarantees, CSV, exactly once across kill -9.

The tracker here is at the edge: ``tracker.py`` in the config folder, a backend of
the user's own kind (``type: tracker:FileTracker``) that appends every call it gets
to a JSON-lines file, and is down while a marker file exists or slow by a delay per
call.  Everything between it and the runs is expman's real driver, bus and journal.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import expman
from expman.jsonlines import read_lines
from tests.conftest import run_cli, write_yaml
from tests.test_exact_resume import CHAIN, CHECKPOINTS

Make = Callable[..., Path]

TRACKER = textwrap.dedent(
    """
    import json
    import os
    import time

    from expman.integrations import Binding, Exporter


    class FileTracker(Exporter):
        def _gate(self):
            time.sleep(float(self.spec.options.get("delay", 0)))
            if os.path.exists(self.spec.options["down"]):
                raise ConnectionError("tracker down")

        def _log(self, *records):
            data = "".join(json.dumps(r, allow_nan=True) + "\\n" for r in records).encode()
            fd = os.open(self.spec.options["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

        def open(self, run, *, external, rewind):
            self._gate()
            self._log({"op": "open", "run": run.label, "rewind": rewind, "external": external})
            return Binding(external or f"ext-{run.trial}-{run.repeat}")

        def write(self, run, points):
            self._gate()
            self._log(*(
                {"op": "point", "run": run.label, "epoch": p.epoch, "time": p.time,
                 "metrics": p.metrics}
                for p in points
            ))

        def finish(self, run, status, reason):
            self._gate()
            self._log({"op": "finish", "run": run.label, "status": str(status)})
    """
)

#: A pipeline that reports ``late`` only from epoch 5 on, and a NaN at epoch 2.
LATE = textwrap.dedent(
    """
    from expman import Pipeline


    class Late(Pipeline):
        def __init__(self, epochs=8, **params):
            super().__init__(**params)
            self.epochs = epochs

        def run(self, ctx):
            for epoch in range(ctx.start_epoch, self.epochs):
                metrics = {"loss": float("nan") if epoch == 2 else 1.0 / (epoch + 1)}
                if epoch >= 5:
                    metrics["late"] = epoch * 10
                metrics["note"] = "text is not a scalar"
                if ctx.epoch_end(epoch, metrics):
                    break
            return {}
    """
)


def history(run: Path) -> dict[int, dict[str, float]]:
    """A run's epochs as results read them: the later line for an epoch wins; scalars only."""
    out: dict[int, dict[str, float]] = {}
    for entry in read_lines(run / "logs" / "metrics.log"):
        out[entry["epoch"]] = {
            k: float(v) for k, v in entry["metrics"].items() if isinstance(v, (int, float))
        }
    return out


def runs_of(workspace: Path, name: str = "exp") -> list[Path]:
    return sorted((workspace / name / "trials").glob("*/run_*"))


def visible(log: Path) -> tuple[dict[str, dict[int, dict[str, float]]], int]:
    """What a tracker shows after replaying its calls: a rewind hides epochs >= it.

    Returns the series per run and how many points arrived twice within what is shown.
    """
    shown: dict[str, dict[int, dict[str, float]]] = {}
    duplicates = 0
    for line in log.read_text().splitlines():
        record = json.loads(line)  # NaN as the tracker wrote it
        series = shown.setdefault(record["run"], {})
        if record["op"] == "open":
            for epoch in [e for e in series if e >= record["rewind"]]:
                del series[epoch]
        elif record["op"] == "point":
            duplicates += record["epoch"] in series
            series[record["epoch"]] = record["metrics"]
    return shown, duplicates


def same(a: dict[int, dict[str, float]], b: dict[int, dict[str, float]]) -> bool:
    if a.keys() != b.keys():
        return False
    for epoch in a:
        if a[epoch].keys() != b[epoch].keys():
            return False
        for name, value in a[epoch].items():
            other = b[epoch][name]
            if not (value == other or (math.isnan(value) and math.isnan(other))):
                return False
    return True


def tracker_entry(root: Path, **options: Any) -> dict[str, Any]:
    return {
        "type": "tracker:FileTracker",
        "log": str(root / "tracker.jsonl"),
        "down": str(root / "down"),
        **options,
    }


def make_late(make_experiment: Make, entries: list[Any], **env_keys: Any) -> Path:
    root = make_experiment(
        experiment={
            "name": "exp",
            "id": 1,
            "settings": {},
            "integrations": entries,
        },
        base={"pipeline": {"type": "late:Late"}},
        trials=[{"name": "a", "id": 1, "repeat": 2}, {"name": "b c", "id": 2, "repeat": 1}],
        env={"execution": {"max_concurrency": 3}, **env_keys},
    )
    (root / "late.py").write_text(LATE)
    (root / "tracker.py").write_text(TRACKER)
    return root


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    import csv

    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


# -- CSV and the block ---------------------------------------------------------------


async def test_csv_has_every_epoch_once_with_the_union_of_metric_names(
    make_experiment: Make, tmp_path: Path
) -> None:
    root = make_late(make_experiment, [{"type": "csv"}])
    result = await expman.run_experiment(root, workspace=tmp_path / "ws")
    assert result.ok
    runs = runs_of(tmp_path / "ws")
    assert len(runs) == 3
    for run in runs:
        header, rows = read_csv(run / "logs" / "metrics.csv")
        assert header == ["epoch", "time", "late", "loss"]  # sorted union; text left out
        assert [int(r["epoch"]) for r in rows] == list(range(8))
        assert [r["late"] for r in rows[:5]] == [""] * 5  # empty before it first appears
        assert rows[5]["late"] == "50.0"
        assert rows[2]["loss"] == "nan"
        expected = history(run)
        for row in rows:
            epoch = int(row["epoch"])
            assert float(row["loss"]) == expected[epoch]["loss"] or epoch == 2
    assert result.integrations["csv"]["sent"] == 3 * (8 + 3)
    assert result.integrations["csv"]["lost"] == 0


def test_the_journal_records_identity_watermark_and_the_session_report(
    make_experiment: Make, tmp_path: Path
) -> None:
    root = make_late(make_experiment, [{"type": "csv"}])
    ws = tmp_path / "ws"
    done = run_cli("run", str(root), "-w", str(ws), "--quiet")
    assert done.returncode == 0, done.stderr
    records = list(read_lines(ws / "exp" / "logs" / "events.jsonl"))
    bound = [r for r in records if r["type"] == "IntegrationBound"]
    marks = [r for r in records if r["type"] == "IntegrationWatermark"]
    (report,) = [r for r in records if r["type"] == "IntegrationReport"]
    assert {(r["trial"], r["repeat"]) for r in bound} == {("a", 0), ("a", 1), ("b c", 0)}
    assert bound[0]["external"].endswith("logs/metrics.csv")
    assert {r["epoch"] for r in marks} == {7}
    assert report["sent"] == 33
    assert report["lost"] == 0
    assert "integration csv: 33 values sent" in done.stderr + done.stdout


def test_no_integrations_and_an_empty_env_list_turn_them_off(
    make_experiment: Make, tmp_path: Path
) -> None:
    root = make_late(make_experiment, [{"type": "csv"}])
    done = run_cli("run", str(root), "-w", str(tmp_path / "off"), "--quiet", "--no-integrations")
    assert done.returncode == 0, done.stderr
    assert not list((tmp_path / "off").rglob("metrics.csv"))
    assert list((tmp_path / "off").rglob("metrics.log"))

    root = make_late(make_experiment, [{"type": "csv"}], integrations=[])
    done = run_cli("run", str(root), "-w", str(tmp_path / "env"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert not list((tmp_path / "env").rglob("metrics.csv"))


@pytest.mark.parametrize(
    ("entry", "key", "says"),
    [
        ({"type": "tensorbored"}, "integrations[0].type", "unknown integration 'tensorbored'"),
        ({"type": "csv", "dir": "x"}, "integrations[0].dir", "unknown key for the csv integration"),
        (
            {"type": "tensorboard", "hparams": 3},
            "integrations[0].hparams",
            "expected true or false",
        ),
        ({"type": "mlflow", "export": "sometimes"}, "integrations[0].export", "live, checkpointed"),
        ({"type": "csv", "flush_timeout": -1}, "integrations[0].flush_timeout", "> 0"),
        ("csv", "integrations[0]", "expected a mapping with a 'type'"),
        ({"dir": "tb"}, "integrations[0]", "missing key 'type': which tracker"),
        ({"type": "tracker:Nope"}, "integrations[0].type", "no 'Nope'"),
        ({"type": "late:Late"}, "integrations[0].type", "not an integration backend"),
    ],
)
def test_a_mistake_in_the_block_names_file_key_and_what_was_expected(
    make_experiment: Make, entry: Any, key: str, says: str
) -> None:
    root = make_late(make_experiment, [entry])
    done = run_cli("validate", str(root))
    assert done.returncode != 0
    assert "experiment.yaml" in done.stderr
    assert key in done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def test_two_integrations_of_one_name_are_refused(make_experiment: Make) -> None:
    root = make_late(make_experiment, [{"type": "csv"}, {"type": "csv"}])
    done = run_cli("validate", str(root))
    assert done.returncode != 0
    assert "integrations[1]" in done.stderr
    assert "its own name" in done.stderr


def test_a_missing_package_is_a_config_error_naming_the_extra(
    make_experiment: Make, tmp_path: Path
) -> None:
    # The environment at the edge: an import hook that hides one installed package.
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import sys

            class Hide:
                def __init__(self, finder):
                    self.finder = finder

                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] == "wandb":
                        return None
                    return self.finder.find_spec(name, path, target)

                def __getattr__(self, name):
                    return getattr(self.finder, name)

            sys.meta_path[:] = [
                Hide(f) if hasattr(f, "find_spec") else f for f in sys.meta_path
            ]
            """
        )
    )
    root = make_late(make_experiment, [{"type": "wandb", "mode": "offline"}])
    env = dict(os.environ)
    source = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([str(hide), source])
    done = subprocess.run(
        [sys.executable, "-m", "expman", "validate", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode != 0
    assert "pip install 'expman[wandb]'" in done.stderr
    assert "integrations[0].type" in done.stderr


# -- the driver against a tracker at the edge ------------------------------------------


class Events:
    """A caller's subscriber: every event, as it arrives."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def __call__(self, event: Any) -> None:
        self.seen.append(event)

    def of(self, name: str) -> list[Any]:
        return [e for e in self.seen if type(e).__name__ == name]


async def test_a_tracker_down_for_a_while_fails_no_run_and_gets_every_point(
    make_experiment: Make, tmp_path: Path
) -> None:
    root = make_late(make_experiment, [])
    write_yaml(
        root / "base.yaml", {"settings": {"pipeline": {"type": "chain:Chain", "epochs": 15}}}
    )
    (root / "chain.py").write_text(CHAIN)
    (root / "down").touch()
    exp = root / "experiment.yaml"
    write_yaml(exp, {"name": "exp", "id": 1, "integrations": [tracker_entry(root)]})
    threading.Timer(1.5, (root / "down").unlink).start()
    events = Events()
    result = await expman.run_experiment(root, workspace=tmp_path / "ws", subscribers=[events])
    assert result.ok, result.failed
    totals = result.integrations["tracker:FileTracker"]
    assert totals["lost"] == 0
    assert totals["retries"] > 0
    shown, duplicates = visible(root / "tracker.jsonl")
    assert duplicates == 0
    for run in runs_of(tmp_path / "ws"):
        label = f"{run.parent.name}/{run.name}"
        assert same(shown[label], history(run)), label
    (lagging,) = events.of("IntegrationLagging")
    assert "tracker down" in lagging.error
    assert events.of("IntegrationCaughtUp")


def test_a_tracker_still_down_at_the_end_reports_exactly_what_was_lost_then_catches_up(
    make_experiment: Make, tmp_path: Path
) -> None:
    root = make_late(make_experiment, [])
    (root / "down").touch()
    write_yaml(
        root / "experiment.yaml",
        {"name": "exp", "id": 1, "integrations": [tracker_entry(root, flush_timeout=0.5)]},
    )
    ws = tmp_path / "ws"
    done = run_cli("run", str(root), "-w", str(ws), "--quiet")
    assert done.returncode == 0, done.stderr  # the runs are fine; the tracker was not
    values = sum(len(m) for run in runs_of(ws) for m in history(run).values())
    (report,) = [
        r for r in read_lines(ws / "exp/logs/events.jsonl") if r["type"] == "IntegrationReport"
    ]
    assert report["lost"] == values
    assert report["sent"] == 0
    assert "tracker down" in report["error"]
    assert f"{values} LOST" in done.stderr + done.stdout

    # Still down in the next session, and a second tracker beside it, down too: each
    # session ends within its flush_timeouts and counts what its catch-up could not send.
    write_yaml(
        root / "experiment.yaml",
        {
            "name": "exp",
            "id": 1,
            "integrations": [
                tracker_entry(root, flush_timeout=0.5),
                tracker_entry(root, flush_timeout=0.5, name="second"),
            ],
        },
    )
    started = time.monotonic()
    still = run_cli("run", str(root), "-w", str(ws), "--quiet", timeout=60)
    assert still.returncode == 0, still.stderr
    assert time.monotonic() - started < 30
    reports = [
        r for r in read_lines(ws / "exp/logs/events.jsonl") if r["type"] == "IntegrationReport"
    ][1:]
    assert [(r["integration"], r["lost"], r["sent"]) for r in reports] == [
        ("tracker:FileTracker", values, 0),
        ("second", values, 0),
    ]
    assert still.stdout.count(f"{values} LOST") + still.stderr.count(f"{values} LOST") == 2
    write_yaml(
        root / "experiment.yaml",
        {"name": "exp", "id": 1, "integrations": [tracker_entry(root, flush_timeout=0.5)]},
    )

    # Back up: the next session sends what the finished runs' watermarks lack.
    (root / "down").unlink()
    again = run_cli("run", str(root), "-w", str(ws), "--quiet")
    assert again.returncode == 0, again.stderr
    shown, duplicates = visible(root / "tracker.jsonl")
    assert duplicates == 0
    for run in runs_of(ws):
        assert same(shown[f"{run.parent.name}/{run.name}"], history(run))
    lines = (root / "tracker.jsonl").read_text().splitlines()
    finishes = [r for r in map(json.loads, lines) if r["op"] == "finish"]
    assert len(finishes) == 3


async def test_a_slow_tracker_never_holds_up_the_runs(
    make_experiment: Make, tmp_path: Path
) -> None:
    root = make_late(make_experiment, [])
    write_yaml(
        root / "experiment.yaml",
        {"name": "exp", "id": 1, "integrations": [tracker_entry(root, delay=0.3)]},
    )
    started = time.monotonic()
    events = Events()
    result = await expman.run_experiment(root, workspace=tmp_path / "ws", subscribers=[events])
    assert result.ok
    # Every run ended before the tracker had its points: they waited, the runs did not.
    last_run = max(e.time for e in events.of("RunFinished"))
    report = events.of("IntegrationReport")[0]
    assert report.time - last_run > 0.3
    assert report.lost == 0
    assert report.sent == 33
    assert time.monotonic() - started < 30


def test_runs_finished_before_an_integration_existed_are_exported_on_the_next_start(
    make_experiment: Make, tmp_path: Path
) -> None:
    root = make_late(make_experiment, [])
    ws = tmp_path / "ws"
    assert run_cli("run", str(root), "-w", str(ws), "--quiet").returncode == 0
    assert not list(ws.rglob("metrics.csv"))
    write_yaml(
        root / "env.yaml", {"execution": {"max_concurrency": 3}, "integrations": [{"type": "csv"}]}
    )
    done = run_cli("run", str(root), "-w", str(ws), "--quiet")
    assert done.returncode == 0, done.stderr
    for run in runs_of(ws):
        _, rows = read_csv(run / "logs" / "metrics.csv")
        assert [int(r["epoch"]) for r in rows] == sorted(history(run))


# -- exactly once across kill -9 ---------------------------------------------------------


def start(root: Path, ws: Path) -> subprocess.Popen[str]:
    env = dict(os.environ)
    source = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "expman", "run", str(root), "-w", str(ws), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def cut_journal(ws: Path, before: str, *, tracker_behind: bool = False) -> None:
    """Leave the journal as a kill -9 just before its first ``before`` line would have;
    ``tracker_behind``: with the integration's records not written yet (they come when
    its thread gets to them, which may be after the run's end: the same crash, had the
    tracker been slower)."""
    journal = ws / "exp" / "logs" / "events.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    kinds = [rec["type"] for rec in read_lines(journal)]
    kept = [
        line
        for line, kind in zip(lines[: kinds.index(before)], kinds, strict=False)
        if not (tracker_behind and kind.startswith("Integration"))
    ]
    journal.write_bytes(b"".join(kept))


def journal_lines(journal: Path) -> list[bytes]:
    return journal.read_bytes().splitlines() if journal.exists() else []


def records_later(
    proc: subprocess.Popen[str], journal: Path, before: int, moments: random.Random
) -> None:
    """A random moment: 4 to 30 journal records into the session."""
    target = before + moments.randint(4, 30)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if len(journal_lines(journal)) >= target:
            return
        time.sleep(0.01)


Moment = Callable[[subprocess.Popen[str], Path, int, random.Random], None]


def kill_at_random_moments(
    root: Path, ws: Path, seed: int, *, kills: int = 5, moment: Moment = records_later
) -> Path:
    """``expman run`` killed (-9) ``kills`` times, each at a random ``moment``, then run
    to the end; the experiment's journal."""
    moments = random.Random(seed)
    journal = ws / "exp" / "logs" / "events.jsonl"
    killed = 0
    for _ in range(kills):
        before = len(journal_lines(journal))
        proc = start(root, ws)
        moment(proc, journal, before, moments)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
    assert killed >= 3, "the sweep ended before the kills: the case is not exercised"
    done = run_cli("run", str(root), "-w", str(ws), "--quiet")
    assert done.returncode == 0, done.stderr
    return journal


@pytest.mark.slow
def test_kill_9_at_random_moments_sends_every_point_once(
    make_experiment: Make, tmp_path: Path
) -> None:
    root = make_experiment(
        experiment={"name": "exp", "id": 1, "settings": {}},
        base={
            "pipeline": {"type": "chain:Chain", "epochs": 12, "seconds": 0.06},
            "callbacks": [{**CHECKPOINTS, "interval": 3}],
        },
        trials=[{"name": "t", "id": 1, "repeat": 4}, {"name": "u", "id": 2, "repeat": 4}],
        env={"execution": {"max_concurrency": 4}},
    )
    (root / "chain.py").write_text(CHAIN)
    (root / "tracker.py").write_text(TRACKER)
    write_yaml(
        root / "experiment.yaml",
        {
            "name": "exp",
            "id": 1,
            "integrations": [tracker_entry(root, delay=0.01), {"type": "csv"}],
        },
    )
    ws = tmp_path / "ws"
    kill_at_random_moments(root, ws, 16)
    shown, duplicates = visible(root / "tracker.jsonl")
    assert duplicates == 0
    runs = runs_of(ws)
    assert len(runs) == 8
    for run in runs:
        label = f"{run.parent.name}/{run.name}"
        expected = history(run)
        assert sorted(expected) == list(range(12))
        assert same(shown[label], expected), label
        _, rows = read_csv(run / "logs" / "metrics.csv")
        assert [int(r["epoch"]) for r in rows] == list(range(12)), label
        assert [float(r["x"]) for r in rows] == [expected[e]["x"] for e in range(12)]
    bound = {
        (r["trial"], r["repeat"], r["external"])
        for r in read_lines(ws / "exp/logs/events.jsonl")
        if r["type"] == "IntegrationBound" and r["integration"] == "tracker:FileTracker"
    }
    assert len(bound) == 8  # one identity per run, however often it was opened
    json.dumps(shown)  # plain data all the way through


async def test_behind_a_slow_tracker_memory_holds_ranges_and_every_point_still_arrives_once(
    make_experiment: Make, tmp_path: Path
) -> None:
    root = make_late(make_experiment, [])
    write_yaml(
        root / "experiment.yaml",
        {
            "name": "exp",
            "id": 1,
            "integrations": [tracker_entry(root, delay=0.3, max_pending=3)],
        },
    )
    events = Events()
    result = await expman.run_experiment(root, workspace=tmp_path / "ws", subscribers=[events])
    assert result.ok
    assert result.integrations["tracker:FileTracker"]["lost"] == 0
    shown, duplicates = visible(root / "tracker.jsonl")
    assert duplicates == 0
    for run in runs_of(tmp_path / "ws"):
        assert same(shown[f"{run.parent.name}/{run.name}"], history(run))
    assert events.of("IntegrationLagging")


def test_scalars_are_numbers_numpy_scalars_and_0_d_tensors() -> None:
    import numpy as np
    import torch

    from expman.integrations.base import scalars

    got = scalars(
        {
            "f": 0.5,
            "i": 3,
            "b": True,
            "np": np.float32(0.25),
            "t": torch.tensor(1.5),
            "nan": float("nan"),
            "vector": torch.tensor([1.0, 2.0]),
            "text": "x",
            "nested": {"a": 1},
        }
    )
    assert set(got) == {"f", "i", "b", "np", "t", "nan"}
    assert got["t"] == 1.5
    assert got["np"] == 0.25
    assert got["b"] == 1.0
    assert math.isnan(got["nan"])


def test_running_a_finished_experiment_again_sends_nothing_twice(
    make_experiment: Make, tmp_path: Path
) -> None:
    root = make_late(make_experiment, [])
    write_yaml(
        root / "experiment.yaml", {"name": "exp", "id": 1, "integrations": [tracker_entry(root)]}
    )
    ws = tmp_path / "ws"
    assert run_cli("run", str(root), "-w", str(ws), "--quiet").returncode == 0
    sent = (root / "tracker.jsonl").read_bytes()
    assert run_cli("run", str(root), "-w", str(ws), "--quiet").returncode == 0
    assert (root / "tracker.jsonl").read_bytes() == sent


def test_a_backend_that_cannot_start_is_named_in_the_summary_and_the_log(
    make_experiment: Make, tmp_path: Path
) -> None:
    root = make_late(make_experiment, [])
    (root / "broken.py").write_text(
        "from expman.integrations import Exporter\n\n\n"
        "class Broken(Exporter):\n"
        "    def __init__(self, spec, context):\n"
        "        raise RuntimeError('no tracker here')\n\n"
        "    def open(self, run, *, external, rewind): ...\n\n"
        "    def write(self, run, points): ...\n"
    )
    write_yaml(
        root / "experiment.yaml",
        {"name": "exp", "id": 1, "integrations": [{"type": "broken:Broken"}, {"type": "csv"}]},
    )
    ws = tmp_path / "ws"
    done = run_cli("run", str(root), "-w", str(ws), "--quiet")
    assert done.returncode == 0, done.stderr  # the runs are fine
    out = done.stdout + done.stderr
    assert (
        "integration broken:Broken: UNAVAILABLE, nothing sent: RuntimeError: no tracker here" in out
    )
    assert "integration csv:" in out
    assert "integration_unavailable" in (ws / "exp" / "logs" / "experiment.log").read_text()
