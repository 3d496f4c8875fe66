"""Events are frozen, keyword-only, and round-trip through JSON."""

from __future__ import annotations

import dataclasses

import pytest

from expman import events as ev
from expman.jsonlines import dumps, loads

SAMPLES: list[ev.Event] = [
    ev.ExperimentStarted(experiment="e", path="/w/e", runs=6, trials=2, resumed=True),
    ev.ExperimentFinished(experiment="e", status="failed", duration=1.5, counts={"failed": 1}),
    ev.TrialStarted(experiment="e", trial="a", trial_id="1", repeats=3),
    ev.TrialFinished(experiment="e", trial="a", trial_id="1", counts={"completed": 3}),
    ev.TrialSampled(experiment="e", trial="a-0003", number=3, values={"lr": 0.01}, study="1"),
    ev.PruneDecision(
        experiment="e",
        trial="a",
        repeat=0,
        rule="asha",
        epoch=8,
        epochs=9,
        rung=2,
        reported=0.412,
        value=0.412,
        cutoff=0.351,
        compared=12,
        action="prune",
        reason="asha: rung 2 (9 epochs) val_loss 0.412 worse than cutoff 0.351 of 12 trials",
    ),
    ev.RunStarted(
        experiment="e",
        trial="a",
        repeat=0,
        seed=7,
        config_hash="abc",
        attempt=2,
        start_epoch=3,
        checkpoint="/w/ck",
    ),
    ev.EpochEnd(experiment="e", trial="a", repeat=1, epoch=4, metrics={"loss": 0.5, "acc": 1}),
    ev.CheckpointDue(experiment="e", trial="a", repeat=1, path="/w/c", epoch=2, reason="best"),
    ev.CheckpointStaged(
        experiment="e",
        trial="a",
        repeat=1,
        path="/w/c",
        staged="/w/.c.tmp-1",
        epoch=2,
        state={"EarlyStopping": {"wait": 2}},
        metrics={"loss": 0.5},
    ),
    ev.CheckpointSaved(
        experiment="e",
        trial="a",
        repeat=1,
        path="/w/c",
        epoch=2,
        state={"EarlyStopping": {"wait": 2, "best": 0.1}},
    ),
    ev.StopRequested(experiment="e", trial="a", scope="trial", reason="enough", source="cb"),
    ev.RunFinished(
        experiment="e",
        trial="a",
        repeat=2,
        status="stopped",
        duration=3.0,
        metrics={"loss": 0.1},
        error=None,
        reason="early stop",
        epochs=5,
    ),
    ev.RunEnding(experiment="e", trial="a", repeat=0, epoch=4, stop_reason="enough"),
    ev.RunStalled(experiment="e", trial="a", repeat=0, seconds=30.0),
    ev.RunRetrying(experiment="e", trial="a", repeat=0, attempt=2, error="ValueError: x"),
    ev.IntegrationBound(
        experiment="e", trial="a", repeat=0, integration="mlflow", external="r1", location="x"
    ),
    ev.IntegrationWatermark(
        experiment="e",
        trial="a",
        repeat=0,
        integration="mlflow",
        epoch=4,
        sent=8,
        lost=1,
        ended=True,
    ),
    ev.IntegrationLagging(
        experiment="e", integration="mlflow", pending=12, behind=3.5, error="down"
    ),
    ev.IntegrationCaughtUp(experiment="e", integration="mlflow", lagged=3.5),
    ev.IntegrationReport(
        experiment="e", integration="mlflow", sent=8, lost=1, retries=2, runs=("a/0",), error="down"
    ),
    ev.LogRecord(experiment="e", trial="a", repeat=0, line='{"event": "hi"}'),
]


def test_every_event_type_has_a_sample() -> None:
    """The round-trip table covers every event class expman defines."""
    ours = {name for name, cls in ev.event_types().items() if cls.__module__.startswith("expman.")}
    assert {type(e).__name__ for e in SAMPLES} == ours  # other tests' own events aside


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_event_round_trips_through_json(event: ev.Event) -> None:
    """to_dict -> JSON bytes -> from_dict gives back an equal event."""
    data = loads(dumps(ev.to_dict(event)))
    assert data["type"] == type(event).__name__
    assert ev.from_dict(data) == event


def test_events_are_frozen_and_keyword_only() -> None:
    """An event cannot be changed after creation, nor built positionally."""
    event = SAMPLES[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.experiment = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ev.ExperimentStarted("e", "/p", 1, 1)  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


def test_sequence_numbers_increase() -> None:
    """Each new event gets a larger sequence number than the one before."""
    a = ev.EpochEnd(experiment="e", epoch=0)
    b = ev.EpochEnd(experiment="e", epoch=1)
    assert b.seq > a.seq


def test_unknown_type_is_refused() -> None:
    """from_dict names the type it does not know."""
    with pytest.raises(ValueError, match="Nope"):
        ev.from_dict({"type": "Nope", "experiment": "e"})


def test_user_event_subclasses_round_trip() -> None:
    """A user's own event class is found by from_dict too."""

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class LearningRateChanged(ev.Event):
        lr: float

    event = LearningRateChanged(experiment="e", trial="a", repeat=0, lr=0.1)
    assert ev.from_dict(loads(dumps(ev.to_dict(event)))) == event
