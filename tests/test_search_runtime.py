"""Adaptive search at run time: sampled trials journaled, admitted, written and resumed."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import expman
from expman import Admit, Drop, RunSpec
from expman.events import RunFinished, RunStarted, TrialSampled
from expman.testing import capture_events
from expman.workspace.journal import encode, read_journal

Make = Callable[..., Path]


# -- the journal -----------------------------------------------------------------------


def _write_journal(path: Path, lines: Sequence[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    return path


def test_the_journal_folds_sampled_values_and_the_newest_record_stands(tmp_path: Path) -> None:
    """TrialSampled records give each trial's values; a trial sampled again has its newest."""
    first = TrialSampled(experiment="e", trial="a-0000", number=0, values={"lr": 0.1}, study="1")
    again = TrialSampled(experiment="e", trial="a-0000", number=0, values={"lr": 0.5}, study="1")
    other = TrialSampled(experiment="e", trial="a-0001", number=1, values={"d": 3}, study="1")
    path = _write_journal(
        tmp_path / "e" / "logs" / "events.jsonl", [encode(first), encode(again), encode(other)]
    )
    state = read_journal(path, experiment="e")
    assert state.sampled == {"a-0000": {"lr": 0.5}, "a-0001": {"d": 3}}
    assert state.problems == []
    assert state.runs == {}


def test_a_malformed_sampled_record_is_skipped_with_its_line(tmp_path: Path) -> None:
    """Values that are not an object, or a negative number, are skipped and named."""
    good = TrialSampled(experiment="e", trial="a-0000", number=0, values={"lr": 0.1})
    path = _write_journal(
        tmp_path / "e" / "logs" / "events.jsonl",
        [
            b'{"type":"TrialSampled","experiment":"e","trial":"a-0001","number":1,"values":[1]}\n',
            b'{"type":"TrialSampled","experiment":"e","trial":"a-0002","number":-1,"values":{}}\n',
            b'{"type":"TrialSampled","experiment":"e","number":3,"values":{}}\n',
            encode(good),
        ],
    )
    state = read_journal(path, experiment="e")
    assert state.sampled == {"a-0000": {"lr": 0.1}}
    assert [p.split(": ", 1)[0].rsplit(", ", 1)[1] for p in state.problems] == [
        "line 1",
        "line 2",
        "line 3",
    ]
    assert "'values' must be an object" in state.problems[0]
    assert "'number' must be >= 0" in state.problems[1]
    assert "without 'trial'" in state.problems[2]


# -- the admission seam ------------------------------------------------------------------


def _experiment(make_experiment: Make, repeats: int = 2) -> Path:
    return make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "epochs": 2}},
        trials=[{"name": "a", "id": 1, "repeat": repeats}],
        experiment={"name": "exp", "id": 1, "settings": {}, "execution": {"max_concurrency": 2}},
    )


def _with_epochs(spec: RunSpec, epochs: int) -> RunSpec:
    settings = dict(spec.settings)
    settings["pipeline"] = {**settings["pipeline"], "epochs": epochs}
    trial = dataclasses.replace(spec.trial, settings=settings, config_hash=f"epochs{epochs}")
    return RunSpec(trial=trial, repeat=spec.repeat, seed=spec.seed)


class ThreeEpochs:
    """Starts every run as a variant of itself that trains three epochs."""

    async def choose(self, waiting: Sequence[RunSpec]) -> Admit | Drop:
        return Admit(waiting[0], start_as=_with_epochs(waiting[0], 3))


async def test_a_policy_starts_a_run_as_the_run_it_has_become(
    make_experiment: Make, workspace: Path
) -> None:
    """Admit(start_as=...) runs the given spec in the planned run's place, recorded as such."""
    root = _experiment(make_experiment)
    async with capture_events() as events:
        result = await expman.run_experiment(
            root, workspace=workspace, admission=ThreeEpochs(), subscribers=[events.subscriber]
        )
    assert result.status == "completed"
    assert [(e.repeat, e.config_hash) for e in events.of_type(RunStarted)] == [
        (0, "epochs3"),
        (1, "epochs3"),
    ]
    assert [e.epochs for e in events.of_type(RunFinished)] == [3, 3]
    state = read_journal(workspace / "exp" / "logs" / "events.jsonl")
    assert {key: run.config_hash for key, run in state.runs.items()} == {
        ("a", 0): "epochs3",
        ("a", 1): "epochs3",
    }


def test_start_as_must_be_the_same_run(make_experiment: Make) -> None:
    """A start_as with another trial name or repeat is refused when the Admit is made."""
    plan = expman.load_plan(_experiment(make_experiment))
    first, second = plan.runs
    Admit(first, start_as=_with_epochs(first, 3))  # the same run: fine
    with pytest.raises(ValueError, match=r"a/run_1 is not the run a/run_0"):
        Admit(first, start_as=second)
