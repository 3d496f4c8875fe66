"""The fast paths of the writers and the config loader give exactly what the plain ones did."""

from __future__ import annotations

import dataclasses
import datetime
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
import yaml

import expman
from expman.events import (
    CheckpointDue,
    CheckpointSaved,
    EpochEnd,
    Event,
    ExperimentFinished,
    ExperimentStarted,
    LogRecord,
    RunFinished,
    RunRetrying,
    RunStalled,
    RunStarted,
    StopRequested,
    TrialFinished,
    TrialStarted,
    from_dict,
    to_dict,
)
from expman.jsonlines import dump_line, dumps, dumps_fields, loads
from expman.subscribers.writers.eventlog import (
    event_record,
    metrics_record,
    render_epoch,
    render_event,
)
from expman.workspace.atomic import atomic_write
from expman.workspace.journal import encode
from expman.workspace.logrouting import iso
from expman.workspace.snapshots import dump_yaml

RUN = {"experiment": "exp", "trial": "a", "repeat": 0}

EVENTS: list[Event] = [
    ExperimentStarted(experiment="exp", path="/w/exp", runs=3, trials=1),
    ExperimentFinished(experiment="exp", status="completed", duration=1.5, counts={"completed": 3}),
    TrialStarted(experiment="exp", trial="a", trial_id="1", repeats=3),
    TrialFinished(
        experiment="exp", trial="a", trial_id="1", counts=MappingProxyType({"failed": 1})
    ),
    RunStarted(**RUN, seed=7, config_hash="abc", checkpoint=None),
    EpochEnd(**RUN, epoch=2, metrics={"loss": np.float32(0.25), "n": np.int64(3), "v": np.ones(2)}),
    EpochEnd(**RUN, epoch=3, metrics={1: "non-str key", "nan": math.nan, "text": 'q"uote\n'}),
    EpochEnd(**RUN, epoch=4, metrics={"path": Path("/x"), "set": {1}, "obj": object}),
    CheckpointDue(**RUN, path="/w/c", epoch=4),
    CheckpointSaved(**RUN, path="/w/c", epoch=4, state={"ES": {"best": None, "wait": 2}}),
    StopRequested(experiment="exp", scope="experiment", reason="signal", source="signal"),
    RunFinished(**RUN, status="failed", duration=0.1, error="ValueError: boom", metrics={}),
    RunFinished(**RUN, status="completed", duration=0.1, metrics={"loss": 0.5}),
    RunStalled(**RUN, seconds=3.0),
    RunRetrying(**RUN, attempt=2, error="x"),
    LogRecord(**RUN, line='{"event": "hello"}'),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_rendered_log_line_is_the_event_record_dumped(event: Event) -> None:
    """A log line rendered from the dataclass equals dumps(event_record(event)) + newline."""
    assert render_event(event) == dumps(event_record(event)) + b"\n"


@pytest.mark.parametrize(
    "event", [e for e in EVENTS if isinstance(e, EpochEnd)], ids=lambda e: str(e.epoch)
)
def test_an_epochs_two_lines_come_from_one_encoding(event: EpochEnd) -> None:
    """render_epoch gives the run.log line and the metrics.log line (the epoch's fields)."""
    log_line, metrics_line = render_epoch(event)
    assert log_line == render_event(event) == dumps(event_record(event)) + b"\n"
    assert metrics_line == dumps(metrics_record(event)) + b"\n"
    assert list(loads(metrics_line)) == [
        "experiment",
        "trial",
        "repeat",
        "seq",
        "time",
        "epoch",
        "metrics",
    ]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_journal_line_is_the_to_dict_codec(event: Event) -> None:
    """A journal line equals dump_line(to_dict(event)) and reads back as the same event."""
    line = encode(event)
    assert line == dump_line(to_dict(event))
    back = from_dict(loads(line))
    assert type(back) is type(event)
    assert (back.seq, back.time, back.trial) == (event.seq, event.time, event.trial)


def test_epoch_end_now_equals_the_constructed_event() -> None:
    """EpochEnd.now sets every field the constructor would (and numbers it in order)."""
    fields = [f.name for f in dataclasses.fields(EpochEnd)]
    assert fields == ["experiment", "trial", "repeat", "seq", "time", "epoch", "metrics"]
    before = time.time()
    fast = EpochEnd.now("exp", "a", 2, 7, {"loss": 0.5})
    slow = EpochEnd(**RUN | {"repeat": 2}, epoch=7, metrics={"loss": 0.5})
    assert slow.seq == fast.seq + 1
    assert before <= fast.time <= slow.time
    assert fast == EpochEnd(
        **RUN | {"repeat": 2}, epoch=7, metrics={"loss": 0.5}, seq=fast.seq, time=fast.time
    )


def test_dumps_fields_puts_the_head_first_and_handles_empty_heads() -> None:
    """dumps_fields(head, obj) is one object: head's keys, then the dataclass's fields."""
    event = EpochEnd(**RUN, epoch=1, metrics={"loss": 1.0})
    assert loads(dumps_fields({"type": "EpochEnd"}, event)) == to_dict(event)
    assert next(iter(loads(dumps_fields({"z": 1}, event)))) == "z"
    fields = {k: v for k, v in to_dict(event).items() if k != "type"}
    assert dumps_fields({}, event) == dumps(fields)


def _reference_iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")


def test_cached_iso_timestamps_match_datetime_formatting() -> None:
    """iso() matches datetime's ISO format, whole seconds and rounding up included."""
    rng = random.Random(7)
    stamps = [1_700_000_000.0, 1_700_000_000.9999996, 1_700_000_001.0000004, 0.5]
    stamps += [1_700_000_000 + rng.uniform(0, 100_000) for _ in range(5_000)]
    stamps += [float(int(s)) for s in stamps[:200]]
    for ts in stamps:
        assert iso(ts) == _reference_iso(ts), ts


async def test_run_snapshot_holds_identity_then_settings(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """run.yaml and trial.yaml hold their fields in order, ending with the trial's settings."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper"}, "lr": 0.1, "deep": {"a": [1, "yes"]}},
        trials=[{"name": "a", "id": 1, "repeat": 2}],
    )
    await expman.run_experiment(root, workspace=workspace)
    trial_dir = workspace / "exp" / "trials" / "a"
    trial = yaml.safe_load((trial_dir / "configs" / "trial.yaml").read_text())
    assert list(trial) == ["name", "id", "desc", "repeat", "config_hash", "resources", "settings"]
    for repeat in (0, 1):
        run = yaml.safe_load((trial_dir / f"run_{repeat}" / "configs" / "run.yaml").read_text())
        assert list(run) == [
            "experiment",
            "trial",
            "trial_id",
            "repeat",
            "seed",
            "attempt",
            "config_hash",
            "settings",
        ]
        assert run["repeat"] == repeat
        assert run["settings"] == trial["settings"]
    assert trial["settings"]["deep"] == {"a": [1, "yes"]}


def test_yaml_loader_keeps_its_resolvers(tmp_path: Path) -> None:
    """Config files read 1e-3 as a number and dates as strings, whichever parser is used."""
    path = tmp_path / "x.yaml"
    path.write_text("lr: 1e-3\nwhen: 2024-01-02\nflag: yes\n")
    from expman.config.loading import load_yaml

    doc = load_yaml(path)
    assert doc.data == {"lr": 0.001, "when": "2024-01-02", "flag": True}
    assert doc.line("when") == 2


@pytest.mark.parametrize(
    "text",
    [
        "t00001",
        "run-a.b_c",
        "pipes:Model",
        "a:",
        ":a",
        "yes",
        "No",
        "ON",
        "null",
        "~",
        "1.5",
        "1e3",
        "0x1F",
        "0o17",
        "-",
        "",
        "a b",
        "a: b",
        "#x",
        " lead",
        "ünï",
        "a\nb",
        "2024-01-01",
        "12:30",
        '"q"',
        "'s'",
        "[x]",
        "{x}",
        "*a",
        "&a",
        "!t",
        "%x",
        "@x",
        "|",
        ">",
        ".inf",
        "inf",
        "NaN",
        "\u2028",
        "\x7f\x85",
        "\x00",
        "tab\t",
    ],
)
def test_snapshots_read_back_as_written(text: str) -> None:
    """run.yaml and trial.yaml, written without PyYAML's representer, load to the same data."""
    data = {
        "name": text,
        "on": True,
        "desc": None,
        "seed": -5,
        "resources": {},
        "settings": {
            text: [text, {"lr": 1e-05, "big": 1e20, "inf": -math.inf, "zero": -0.0}, [], [[1]]],
            "callbacks": [{"type": text, "patience": 3}, {"type": "x"}],
        },
    }
    assert yaml.safe_load(dump_yaml(data)) == data


def test_snapshots_of_random_settings_read_back_as_written() -> None:
    """3,000 random nested settings (mappings, lists, awkward strings, numbers) round-trip."""
    rnd = random.Random(7)
    words = ["a", "yes", "x:y", "a b", "1", "1.5", "null", "-", "é", "k/v", "", "a:", "on", "~"]

    def settings(depth: int) -> Any:
        roll = rnd.random()
        if depth > 3 or roll < 0.4:
            return rnd.choice(
                [
                    rnd.choice(words),
                    rnd.randint(-(10**12), 10**12),
                    rnd.random() * 10 ** rnd.randint(-30, 30),
                    None,
                    True,
                    [],
                    {},
                ]
            )
        if roll < 0.7:
            return {rnd.choice(words): settings(depth + 1) for _ in range(rnd.randint(1, 4))}
        return [settings(depth + 1) for _ in range(rnd.randint(1, 4))]

    for _ in range(3000):
        data = settings(0)
        assert yaml.safe_load(dump_yaml(data)) == data


@pytest.mark.parametrize("length", [128, 129, 1100])
def test_snapshots_with_long_keys_read_back(length: int) -> None:
    """Keys past YAML's implicit-key limits still read back (PyYAML writes them as '? key')."""
    data = {"settings": {"k" * length: 1, "nested": [{"x" * length: "v"}]}}
    assert yaml.safe_load(dump_yaml(data)) == data


def test_a_failed_atomic_write_names_the_file_not_its_temporary(tmp_path: Path) -> None:
    """The error of an atomic write is about the file the user knows; no temporary is left."""
    missing = tmp_path / "gone" / "run.yaml"
    with pytest.raises(FileNotFoundError) as info:
        atomic_write(missing, b"x: 1\n", make_parent=False)
    assert info.value.filename == str(missing)
    target = tmp_path / "run.yaml"
    atomic_write(target, b"x: 1\n", make_parent=False)
    atomic_write(target, b"x: 2\n", make_parent=False)
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["run.yaml"]
    assert target.read_bytes() == b"x: 2\n"
