"""No value a pipeline reports or returns costs any run its record.

Real experiments in tmp_path whose pipelines report and return values JSON cannot
hold as they are (an int beyond 64 bits, NaN and infinities, numpy values, a set,
bytes, objects, non-string keys, a dict that holds itself), on the local and the
process executor: every run's RunFinished reaches the journal, the run's own log
names each converted value, NaN and infinities round-trip through metrics.log, the
journal and ``expman results``, and a resume redoes nothing.
"""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import expman
from expman.events import EpochEnd, RunFinished
from expman.jsonlines import dump_message, dumps, load_message, read_lines
from expman.subscribers.writers.eventlog import render_epoch, render_event
from expman.values import Conversion, UnloggableValue
from expman.workspace.journal import JournalWriter, encode, read_journal

from .conftest import run_cli

VALUES = textwrap.dedent(
    '''
    import math
    from collections.abc import Mapping

    import numpy as np
    import structlog

    from expman import Callback, Pipeline
    from expman.events import Event
    from dataclasses import dataclass, field


    @dataclass(frozen=True, slots=True, kw_only=True)
    class Odd(Event):
        """A pipeline's own event carrying values the logs cannot hold as they are."""

        payload: object = None


    def recursive():
        loop = {"name": "loop"}
        loop["self"] = loop
        return loop


    class Values(Pipeline):
        """Reports two epochs and returns the values of its case."""

        def __init__(self, case="plain", **params):
            super().__init__(**params)
            self.case = case

        async def run(self, ctx):
            case = self.case
            for epoch in range(2):
                metrics = {"loss": 1.0 / (epoch + 1)}
                if case == "nan":
                    metrics.update(nan=math.nan, up=math.inf, down=-math.inf)
                elif case == "big_metric":
                    metrics["big"] = 2**70
                elif case == "numpy":
                    metrics.update(
                        arr=np.array([1.0, np.nan]), n=np.int64(3), f=np.float32(0.5),
                        flag=np.bool_(True),
                    )
                elif case == "set_metric":
                    metrics["tags"] = {"b", "a"}
                elif case == "recursive_metric":
                    metrics["loop"] = recursive()
                elif case == "surrogate":
                    metrics["file"] = "data-\\udcff.bin"  # a file name's undecodable byte
                elif case == "surrogate_error":
                    raise ValueError("cannot open data-\\udcff.bin")
                elif case == "logging" and epoch == 0:
                    structlog.get_logger().info("odd", big=2**70, nan=math.nan, tags={2, 1})
                elif case == "bad_time":  # no timestamp a log line can hold
                    await ctx.publish(
                        Odd(experiment=ctx.experiment, trial=ctx.trial, repeat=ctx.repeat,
                            time="yesterday")
                    )
                elif case == "event":
                    await ctx.publish(
                        Odd(experiment=ctx.experiment, trial=ctx.trial, repeat=ctx.repeat,
                            payload={"big": 2**70, "tags": {3, 1}, "nan": math.nan})
                    )
                await ctx.epoch_end(epoch, metrics)
            return {
                "plain": {"final": 0.5},
                "big_result": {"big": 2**70},
                "nan": {"final": math.nan, "top": math.inf},
                "numpy": {"np": np.float64(0.25), "arr": np.arange(3), "i": np.int32(7)},
                "set_result": {"tags": {"z", "y"}},
                "bytes": {"raw": b"\\x00ab\\xff"},
                "object": {"model": object()},
                "keys": {"per_class": {1: 0.5, 2: 0.25}},
                "recursive_result": {"loop": recursive()},
                "scalar": 2**70,
            }.get(case, {})


    class SyncValues(Values):
        """A plain ``def run`` (a worker thread) reporting an int beyond 64 bits."""

        def run(self, ctx):
            for epoch in range(2):
                ctx.epoch_end(epoch, {"loss": 0.5, "big": -(2**65)})
            return {"sync": True}


    class Tensorish:
        """What the conversion relies on in a tensor: shape, item() and tolist()."""

        def __init__(self, data, shape):
            self.data, self.shape = data, shape

        def item(self):
            return self.data

        def tolist(self):
            return self.data


    class TensorValues(Values):
        """Reports a 0-d and a 1-d tensor-like value."""

        async def run(self, ctx):
            await ctx.epoch_end(0, {"loss": Tensorish(0.5, ()), "per": Tensorish([1.0, 2.0], (2,))})
            return {"final": Tensorish(7, ())}


    class Hostile(Mapping):
        """A result whose every read raises."""

        def __getitem__(self, key):
            raise RuntimeError("no reading me")

        def __iter__(self):
            raise RuntimeError("no reading me")

        def __len__(self):
            raise RuntimeError("no reading me")


    class HostileValues(Values):
        """Returns a Mapping that raises, holding nothing readable."""

        async def run(self, ctx):
            await ctx.epoch_end(0, {"loss": 0.5})
            return Hostile()


    class OddState(Callback):
        """A run callback whose summary and checkpoint state hold odd values."""

        def run_summary(self):
            return {"summary_big": 2**70, "summary_set": frozenset({2, 1})}

        def state_dict(self):
            return {"seen": {1, 2}, "big": 2**70, "nan": math.nan}

        def load_state_dict(self, state):
            pass


    class Saver(Values):
        """Values with a checkpoint hook (for the callback state's checkpoints)."""

        def save_checkpoint(self, path):
            with open(path, "w") as f:
                f.write("ok")
    '''
)

CASES = [
    "plain",
    "big_result",
    "big_metric",
    "nan",
    "numpy",
    "set_result",
    "set_metric",
    "bytes",
    "object",
    "keys",
    "recursive_result",
    "recursive_metric",
    "event",
    "scalar",
    "sync",
    "tensor",
    "hostile",
    "surrogate",
    "surrogate_error",
    "logging",
]


PIPES = {
    "sync": {"type": "values:SyncValues"},
    "tensor": {"type": "values:TensorValues"},
    "hostile": {"type": "values:HostileValues"},
}


def values_experiment(make_experiment: Callable[..., Path], executor: str = "local") -> Path:
    root = make_experiment(
        base={"pipeline": {"type": "values:Values"}},
        trials=[
            {"name": case, "id": i, "settings": {"pipeline": {"case": case, **PIPES.get(case, {})}}}
            for i, case in enumerate(CASES, 1)
        ],
        env={"execution": {"executor": executor, "max_concurrency": 4}},
    )
    (root / "values.py").write_text(VALUES)
    return root


def journal_lines(workspace: Path) -> list[dict[str, Any]]:
    text = (workspace / "exp" / "logs" / "events.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]  # every line is JSON


def run_log(workspace: Path, trial: str) -> str:
    return (workspace / "exp" / "trials" / trial / "run_0" / "logs" / "run.log").read_text()


def notes(workspace: Path, trial: str) -> list[str]:
    return [
        entry["note"]
        for entry in map(json.loads, run_log(workspace, trial).splitlines())
        if entry.get("event") == "value_converted"
    ]


EXECUTORS = ["local", pytest.param("process", marks=pytest.mark.slow)]


def check_records(result: Any, workspace: Path) -> None:
    """Each case's run has one RunFinished in the journal; only a recursive metric fails."""
    statuses = {run.trial: run.status for run in result.runs}
    failing = ("recursive_metric", "surrogate_error")
    assert statuses == {case: "failed" if case in failing else "completed" for case in CASES}
    finished = [e for e in journal_lines(workspace) if e["type"] == "RunFinished"]
    assert sorted(e["trial"] for e in finished) == sorted(CASES)
    for log in (workspace / "exp").rglob("*.log"):
        for line in log.read_text().splitlines():
            json.loads(line)  # every log line is JSON (no NaN literals either)
            assert "NaN," not in line
            assert ":NaN" not in line
    metrics = {run.trial: run.metrics for run in result.runs}
    assert metrics["plain"] == {"loss": 0.5, "final": 0.5}
    assert metrics["big_result"]["big"] == float(2**70)
    assert metrics["big_metric"]["big"] == float(2**70)
    numpy_metrics = metrics["numpy"]
    assert {k: numpy_metrics[k] for k in ("np", "arr", "i", "n", "f", "flag")} == {
        "np": 0.25,
        "arr": [0, 1, 2],
        "i": 7,
        "n": 3,
        "f": 0.5,
        "flag": True,
    }
    assert [type(numpy_metrics[k]) for k in ("np", "i", "n", "f")] == [float, int, int, float]
    assert metrics["set_result"]["tags"] == ["y", "z"]
    assert metrics["bytes"]["raw"] == "\x00ab\\xff"
    assert metrics["object"]["model"].startswith("<object object at")
    assert metrics["keys"]["per_class"] == {"1": 0.5, "2": 0.25}
    assert metrics["recursive_result"]["loop"] == {"name": "loop", "self": "<recursive>"}
    assert metrics["scalar"]["result"] == float(2**70)
    assert metrics["sync"] == {"loss": 0.5, "big": float(-(2**65)), "sync": True}
    assert metrics["tensor"] == {"loss": 0.5, "per": [1.0, 2.0], "final": 7}
    assert metrics["hostile"] == {"loss": 0.5}
    assert metrics["surrogate"]["file"] == "data-\udcff.bin"  # in memory: as reported
    logged = [
        json.loads(line)["metrics"]["file"]
        for line in (workspace / "exp" / "logs" / "metrics.log").read_text().splitlines()
        if json.loads(line)["trial"] == "surrogate"
    ]
    assert logged == ["data-\\udcff.bin"] * 2  # on disk: escaped, valid UTF-8
    (odd,) = [
        json.loads(line)
        for line in run_log(workspace, "logging").splitlines()
        if json.loads(line).get("event") == "odd"
    ]
    assert (odd["big"], odd["nan"], odd["tags"]) == (float(2**70), "NaN", [1, 2])
    (failed,) = [e for e in finished if e["trial"] == "surrogate_error"]
    assert failed["error"] == "ValueError: cannot open data-\\udcff.bin"
    error = next(run.error for run in result.runs if run.trial == "recursive_metric")
    assert error is not None
    assert "metric 'loop' (dict) cannot be written to the logs" in error
    assert "metric 'loop'['self'] holds itself" in error


async def test_every_run_keeps_its_record_whatever_its_values(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Every case's run has one RunFinished; only a recursive metric fails (local)."""
    result = await expman.run_experiment(values_experiment(make_experiment), workspace=workspace)
    check_records(result, workspace)


def check_notes(result: Any, workspace: Path) -> None:
    """A converted value is named, with what was stored, in that run's log and no other."""
    assert notes(workspace, "big_result") == [
        "metric 'big' = 1180591620717411303424 is beyond 64-bit; stored as float 1.18e+21"
    ]
    # Reported every epoch, noted once.
    assert notes(workspace, "big_metric") == [
        "metric 'big' = 1180591620717411303424 is beyond 64-bit; stored as float 1.18e+21"
    ]
    assert notes(workspace, "set_result") == ["metric 'tags' is a set; stored as a sorted list"]
    assert notes(workspace, "set_metric") == ["metric 'tags' is a set; stored as a sorted list"]
    assert notes(workspace, "bytes") == ["metric 'raw' is 4 bytes; stored as text"]
    assert notes(workspace, "object") == [
        "metric 'model' (object) has no JSON form; stored as its repr"
    ]
    # Noted once per value: the first key that changed.
    assert notes(workspace, "keys") == [
        "metric 'per_class' has the non-string key 1; stored as '1'"
    ]
    assert notes(workspace, "recursive_result") == [
        "metric 'loop'['self'] holds itself; stored as '<recursive>'"
    ]
    assert notes(workspace, "scalar") == [
        "metric 'result' = 1180591620717411303424 is beyond 64-bit; stored as float 1.18e+21"
    ]
    assert notes(workspace, "event") == [
        "event Odd['payload']['big'] = 1180591620717411303424 is beyond 64-bit; "
        "stored as float 1.18e+21",
        "event Odd['payload']['tags'] is a set; stored as a sorted list",
    ]
    assert notes(workspace, "sync") == [
        "metric 'big' = -36893488147419103232 is beyond 64-bit; stored as float -3.69e+19"
    ]
    assert notes(workspace, "hostile") == [
        "the metrics cannot be read (RuntimeError('no reading me')); none stored"
    ]
    for quiet in ("plain", "nan", "numpy", "tensor", "logging"):
        assert notes(workspace, quiet) == [], quiet


async def test_the_runs_own_log_names_each_converted_value(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A converted value is named, with what was stored, in its run's log (local)."""
    result = await expman.run_experiment(values_experiment(make_experiment), workspace=workspace)
    check_notes(result, workspace)


def check_round_trip(result: Any, workspace: Path) -> None:
    """NaN, inf and -inf are written as "NaN"/"Infinity"/"-Infinity" and read back as floats."""
    (run,) = [r for r in result.runs if r.trial == "nan"]
    assert math.isnan(run.metrics["nan"])
    assert math.isnan(run.metrics["final"])
    assert (run.metrics["up"], run.metrics["down"], run.metrics["top"]) == (
        math.inf,
        -math.inf,
        math.inf,
    )
    metrics_log = workspace / "exp" / "trials" / "nan" / "run_0" / "logs" / "metrics.log"
    raw = [json.loads(line)["metrics"] for line in metrics_log.read_text().splitlines()]
    assert [(m["nan"], m["up"], m["down"]) for m in raw] == [("NaN", "Infinity", "-Infinity")] * 2
    read = [entry["metrics"] for entry in read_lines(metrics_log)]
    assert math.isnan(read[1]["nan"])
    assert (read[1]["up"], read[1]["down"]) == (
        math.inf,
        -math.inf,
    )
    # The journal: written as text, folded back to floats.
    (finished,) = [
        e for e in journal_lines(workspace) if e["type"] == "RunFinished" and e["trial"] == "nan"
    ]
    assert (finished["metrics"]["final"], finished["metrics"]["top"]) == ("NaN", "Infinity")
    journal = read_journal(workspace / "exp" / "logs" / "events.jsonl")
    folded = journal.runs[("nan", 0)].metrics
    assert math.isnan(folded["final"])
    assert folded["top"] == math.inf
    # The numpy run's NaN inside an array, too.
    (numpy_run,) = [r for r in result.runs if r.trial == "numpy"]
    assert numpy_run.metrics["loss"] == 0.5
    numpy_log = workspace / "exp" / "trials" / "numpy" / "run_0" / "logs" / "metrics.log"
    last = list(read_lines(numpy_log))[-1]["metrics"]
    assert last["arr"][0] == 1.0
    assert math.isnan(last["arr"][1])
    assert (last["n"], last["f"], last["flag"]) == (3, 0.5, True)

    exp = str(workspace / "exp")
    proc = run_cli("results", exp, "--runs", "--format", "json", "--metric", "loss")
    assert proc.returncode == 0, proc.stderr
    runs = {r["trial"]: r for r in json.loads(proc.stdout)}
    assert (runs["nan"]["metrics"]["nan"], runs["nan"]["metrics"]["top"]) == ("NaN", "Infinity")
    proc = run_cli("results", exp, "--runs", "--format", "csv", "--metric", "loss")
    assert proc.returncode == 0, proc.stderr
    rows = {row["trial"]: row for row in csv.DictReader(io.StringIO(proc.stdout))}
    assert math.isnan(float(rows["nan"]["nan"]))
    assert (float(rows["nan"]["up"]), float(rows["nan"]["down"])) == (math.inf, -math.inf)


async def test_nan_and_infinities_round_trip_through_every_log_and_results(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """NaN, inf and -inf round-trip through metrics.log, the journal and results (local)."""
    result = await expman.run_experiment(values_experiment(make_experiment), workspace=workspace)
    check_round_trip(result, workspace)


@pytest.mark.slow
async def test_process_runs_keep_their_records_name_conversions_and_round_trip_nan(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """The three checks above, on the process executor (one experiment: workers are slow)."""
    root = values_experiment(make_experiment, "process")
    result = await expman.run_experiment(root, workspace=workspace)
    check_records(result, workspace)
    check_notes(result, workspace)
    check_round_trip(result, workspace)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_big_final_metric_loses_no_run_and_a_resume_redoes_none(
    make_experiment: Callable[..., Path], workspace: Path, executor: str
) -> None:
    """8 runs, three returning 2**70 (the issue's case): 8 RunFinished, and resume runs 0."""
    root = make_experiment(
        base={"pipeline": {"type": "values:Values", "case": "plain"}},
        trials=[
            {"name": "big", "id": 1, "repeat": 3, "settings": {"pipeline": {"case": "big_result"}}},
            {"name": "fine", "id": 2, "repeat": 5},
        ],
        env={"execution": {"executor": executor, "max_concurrency": 8}},
    )
    (root / "values.py").write_text(VALUES)
    proc = run_cli("run", str(root), "-w", str(workspace))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    finished = [e for e in journal_lines(workspace) if e["type"] == "RunFinished"]
    assert sorted((e["trial"], e["repeat"]) for e in finished) == [
        *(("big", k) for k in range(3)),
        *(("fine", k) for k in range(5)),
    ]
    assert {e["metrics"].get("big") for e in finished if e["trial"] == "big"} == {float(2**70)}
    started = sum(e["type"] == "RunStarted" for e in journal_lines(workspace))
    proc = run_cli("run", str(root), "-w", str(workspace))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    again = journal_lines(workspace)
    assert sum(e["type"] == "RunStarted" for e in again) == started == 8
    assert sum(e["type"] == "RunFinished" for e in again) == 8


async def test_callback_summaries_and_checkpoint_state_are_converted_and_noted(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A callback's odd summary and state reach RunFinished and the journal as plain data."""
    root = make_experiment(
        base={
            "pipeline": {"type": "values:Saver", "case": "plain"},
            "callbacks": [{"type": "values:OddState"}, {"type": "CheckpointCallback"}],
        },
    )
    (root / "values.py").write_text(VALUES)
    result = await expman.run_experiment(root, workspace=workspace)
    (run,) = result.runs
    assert run.status == "completed"
    assert (run.metrics["summary_big"], run.metrics["summary_set"]) == (float(2**70), [1, 2])
    saved = [e for e in journal_lines(workspace) if e["type"] == "CheckpointStaged"]
    assert saved, "no checkpoint was journaled"
    state = saved[-1]["state"]["OddState"]
    assert state == {"seen": [1, 2], "big": float(2**70), "nan": "NaN"}
    journal = read_journal(workspace / "exp" / "logs" / "events.jsonl")
    newest = journal.runs[("a", 0)].newest_checkpoint
    assert newest is not None
    assert math.isnan(newest.state["OddState"]["nan"])
    logged = notes(workspace, "a")
    assert "callback state['OddState']['seen'] is a set; stored as a sorted list" in logged
    assert "metric 'summary_set' is a set; stored as a sorted list" in logged


# -- the encoders: one bad event never takes a batch with it ------------------------------


async def test_an_event_the_log_writer_cannot_write_costs_only_its_own_line(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """An event whose own time breaks its line: one event_unwritable line, the rest intact."""
    root = make_experiment(base={"pipeline": {"type": "values:Values", "case": "bad_time"}})
    (root / "values.py").write_text(VALUES)
    result = await expman.run_experiment(root, workspace=workspace)
    (run,) = result.runs
    assert run.status == "completed"
    experiment_log = [
        json.loads(line)
        for line in (workspace / "exp" / "logs" / "experiment.log").read_text().splitlines()
    ]
    unwritable = [e for e in experiment_log if e["event"] == "event_unwritable"]
    assert [(e["type"], e["trial"], e["repeat"]) for e in unwritable] == [("Odd", "a", 0)] * 2
    assert [e["event"] for e in experiment_log].count("RunFinished") == 1
    epochs = [
        json.loads(line)["epoch"]
        for line in (workspace / "exp" / "trials" / "a" / "run_0" / "logs" / "metrics.log")
        .read_text()
        .splitlines()
    ]
    assert epochs == [0, 1]


def test_the_journal_encodes_each_event_of_a_batch_on_its_own(tmp_path: Path) -> None:
    """A batch with a RunFinished holding 2**70 and a set keeps every event, in order."""
    events = [
        RunFinished(experiment="e", trial="t", repeat=k, status="completed", duration=1.0)
        for k in range(3)
    ]
    odd = RunFinished(
        experiment="e",
        trial="t",
        repeat=9,
        status="completed",
        duration=1.0,
        metrics={"big": 2**70, "tags": {2, 1}, "nan": math.nan, 3: b"x"},
    )
    writer = JournalWriter(tmp_path / "exp" / "logs" / "events.jsonl")
    data = writer._encode_batch([events[0], odd, *events[1:]])
    lines = [json.loads(line) for line in data.splitlines()]
    assert [line["repeat"] for line in lines] == [0, 9, 1, 2]
    assert lines[1]["metrics"] == {"big": float(2**70), "tags": [1, 2], "nan": "NaN", "3": "x"}
    assert encode(odd) == data.splitlines(keepends=True)[1]


@pytest.mark.parametrize(
    "value",
    [2**70, -(2**64), math.nan, math.inf, {1, 2}, b"\x00", np.arange(2), object(), 10**5000],
    ids=["big", "negative-big", "nan", "inf", "set", "bytes", "array", "object", "huge"],
)
def test_every_log_writer_path_writes_one_json_line_for_any_metric(value: Any) -> None:
    """render_epoch, render_event and dumps agree, and each gives one valid JSON line."""
    event = EpochEnd(experiment="e", trial="t", repeat=0, epoch=1, metrics={"x": value})
    log_line, metrics_line = render_epoch(event)
    assert log_line == render_event(event)
    assert log_line.endswith(b"\n")
    assert log_line.count(b"\n") == 1
    parsed = json.loads(metrics_line)
    assert parsed["epoch"] == 1
    assert "x" in parsed["metrics"]
    assert json.loads(dumps({"x": value}))["x"] == parsed["metrics"]["x"]


def test_a_dict_that_holds_itself_and_deep_nesting_are_refused_strictly_and_stored_leniently() -> (
    None
):
    """Strict conversion names the path; lenient conversion stores a marker and notes it."""
    loop: dict[str, Any] = {}
    loop["me"] = loop
    deep: list[Any] = []
    inner = deep
    for _ in range(200):
        inner.append([])
        inner = inner[0]
    with pytest.raises(UnloggableValue, match=r"metric 'x'\['me'\] holds itself"):
        Conversion(strict=True).convert(loop, "metric 'x'")
    with pytest.raises(UnloggableValue, match="nested deeper than 64 levels"):
        Conversion(strict=True).convert(deep, "metric 'x'")
    lenient = Conversion()
    assert lenient.convert(loop, "result") == {"me": "<recursive>"}
    assert json.loads(dumps(deep)) is not None
    assert json.loads(dumps(loop)) == {"me": "<recursive>"}


def test_worker_messages_carry_nan_exactly_and_keep_the_string_nan() -> None:
    """Between driver and worker a float NaN stays a float and the string "NaN" a string."""
    message = {"settings": {"lr": math.nan, "fill": "NaN", "top": -math.inf}, "n": 2**70}
    back = load_message(dump_message(message))
    assert math.isnan(back["settings"]["lr"])
    assert back["settings"]["fill"] == "NaN"
    assert back["settings"]["top"] == -math.inf
    assert back["n"] == float(2**70)
    plain = {"op": "reply", "stop": False}
    assert dump_message(plain) == dumps(plain)
