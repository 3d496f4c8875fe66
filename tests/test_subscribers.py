"""Experiment subscribers as users pass them: delivery as declared, order, refusal of sync ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import expman
from expman.events import EpochEnd, Event, RunFinished, RunStarted

Make = Callable[..., Path]


def _experiment(make_experiment: Make, *, repeats: int = 2, epochs: int = 10) -> Path:
    return make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "epochs": epochs}},
        trials=[{"name": "a", "id": 1, "repeat": repeats}],
    )


async def test_a_blocked_plain_subscriber_does_not_hold_up_the_runs(
    make_experiment: Make, workspace: Path
) -> None:
    """A plain ``async def`` gets a mailbox: the runs finish while it is still stuck."""
    root = _experiment(make_experiment)
    gate = anyio.Event()
    seen: list[Event] = []
    published: list[Event] = []
    all_finished = anyio.Event()

    async def stuck(event: Event) -> None:
        await gate.wait()  # a tracker whose server is down
        seen.append(event)

    @expman.subscriber(delivery=expman.CONTROL)
    async def count(event: Event) -> None:
        published.append(event)
        if sum(isinstance(e, RunFinished) for e in published) == 2:
            all_finished.set()

    with anyio.fail_after(30):
        async with expman.start_experiment(
            root, workspace=workspace, subscribers=[stuck, count]
        ) as handle:
            await all_finished.wait()
            assert seen == []  # every run ended while the subscriber saw nothing
            gate.set()
            result = await handle.wait()
    assert result.status == "completed"
    # It still received every event of the experiment, in publish order.
    assert [e.seq for e in seen] == [e.seq for e in published]
    assert next(type(e).__name__ for e in seen) == "ExperimentStarted"
    assert [type(e).__name__ for e in seen][-1] == "ExperimentFinished"
    assert sum(isinstance(e, EpochEnd) for e in seen) == 2 * 10
    assert sum(isinstance(e, RunFinished) for e in seen) == 2


async def test_a_slow_subscriber_receives_every_event_in_order(
    make_experiment: Make, workspace: Path
) -> None:
    """50 ms per EpochEnd: still every event, in the order published, before the result."""
    root = _experiment(make_experiment, epochs=5)
    slow_seen: list[Event] = []
    all_seen: list[Event] = []

    async def slow(event: Event) -> None:
        if isinstance(event, EpochEnd):
            await anyio.sleep(0.05)
        slow_seen.append(event)

    @expman.subscriber(delivery=expman.CONTROL)
    async def reference(event: Event) -> None:
        all_seen.append(event)

    result = await expman.run_experiment(root, workspace=workspace, subscribers=[slow, reference])
    assert result.status == "completed"
    assert [e.seq for e in slow_seen] == [e.seq for e in all_seen]


async def test_declared_events_are_the_only_ones_delivered(
    make_experiment: Make, workspace: Path
) -> None:
    root = _experiment(make_experiment, epochs=3)
    got: list[Event] = []

    @expman.subscriber(RunStarted, RunFinished)
    async def lifecycle(event: Event) -> None:
        got.append(event)

    await expman.run_experiment(root, workspace=workspace, subscribers=[lifecycle])
    assert sorted(type(e).__name__ for e in got) == ["RunFinished"] * 2 + ["RunStarted"] * 2


async def test_a_subscriber_class_declares_its_delivery(
    make_experiment: Make, workspace: Path
) -> None:
    """A batched mailbox subscriber receives lists of events, all of them."""
    root = _experiment(make_experiment, epochs=4)

    class Batches(expman.Subscriber):
        events = (EpochEnd,)
        delivery = expman.mailbox(64, batch=True)

        def __init__(self) -> None:
            self.batches: list[list[Event]] = []

        async def __call__(self, events: list[Event]) -> None:
            self.batches.append(list(events))

    batches = Batches()
    await expman.run_experiment(root, workspace=workspace, subscribers=[batches])
    flat = [e for batch in batches.batches for e in batch]
    assert all(isinstance(e, EpochEnd) for e in flat)
    assert len(flat) == 2 * 4


async def test_a_sync_subscriber_is_refused_at_the_call(
    make_experiment: Make, workspace: Path
) -> None:
    """A plain ``def`` would fail on every event: a TypeError at once, nothing written."""
    root = _experiment(make_experiment)

    def sync(event: Event) -> None:
        pass

    with pytest.raises(TypeError, match="must be an async callable"):
        await expman.run_experiment(root, workspace=workspace, subscribers=[sync])
    assert not workspace.exists() or not any(workspace.iterdir())


async def test_a_raising_subscriber_is_isolated(make_experiment: Make, workspace: Path) -> None:
    """It is reported in experiment.log; the runs and the other subscribers go on."""
    root = _experiment(make_experiment, epochs=2)
    others: list[Event] = []

    async def broken(event: Event) -> None:
        raise RuntimeError("tracker down")

    async def fine(event: Event) -> None:
        others.append(event)

    result = await expman.run_experiment(root, workspace=workspace, subscribers=[broken, fine])
    assert result.status == "completed"
    assert any(isinstance(e, RunFinished) for e in others)
    log = (result.path / "logs" / "experiment.log").read_text()
    assert "subscriber_failed" in log
    assert "tracker down" in log


# -- subscribers named in YAML -----------------------------------------------------------

YAML_SUBSCRIBERS = '''
import json

import expman
from expman.events import RunFinished


@expman.register("RunCounter")
class RunCounter(expman.Subscriber):
    """Counts RunFinished events and writes the count beside the config when it ends."""

    events = (RunFinished, expman.ExperimentFinished)

    def __init__(self, out, label="runs"):
        self.out, self.label, self.count = out, label, 0

    async def __call__(self, event):
        if isinstance(event, RunFinished):
            self.count += 1
        else:
            with open(self.out, "a") as f:
                f.write(json.dumps({self.label: self.count}) + "\\n")


class NotASubscriber:
    def __call__(self, event):
        pass
'''


async def test_subscribers_named_in_experiment_and_env_yaml_are_built_and_receive_events(
    make_experiment: Make, workspace: Path, tmp_path: Path
) -> None:
    out = tmp_path / "counts.jsonl"
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "epochs": 2}},
        trials=[{"name": "a", "id": 1, "repeat": 3}],
        experiment={
            "name": "exp",
            "id": 1,
            "settings": {},
            "subscribers": [{"type": "yaml_subs:RunCounter", "out": str(out)}],
        },
        env={"subscribers": [{"type": "RunCounter", "out": str(out), "label": "from_env"}]},
    )
    (root / "yaml_subs.py").write_text(YAML_SUBSCRIBERS)
    result = await expman.run_experiment(root, workspace=workspace)
    assert result.status == "completed"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [{"runs": 3}, {"from_env": 3}]


@pytest.mark.parametrize(
    ("entry", "key", "message"),
    [
        ({"type": "yaml_subs:Missing"}, "subscribers[0].type", "unknown type"),
        ({"type": "yaml_subs:RunCounter", "outt": "x"}, "subscribers[0].outt", "unknown parameter"),
        ({"type": "yaml_subs:NotASubscriber"}, "subscribers[0].type", "async __call__"),
        ("RunCounter", "subscribers[0]", "a mapping with a 'type' key"),
    ],
)
def test_a_wrong_yaml_subscriber_is_a_config_error_naming_file_and_key(
    make_experiment: Make, entry: object, key: str, message: str
) -> None:
    root = make_experiment(
        experiment={"name": "exp", "id": 1, "settings": {}, "subscribers": [entry]}
    )
    (root / "yaml_subs.py").write_text(YAML_SUBSCRIBERS)
    with pytest.raises(expman.ConfigError) as caught:
        expman.experiment.prepare(root)
    text = str(caught.value)
    assert "experiment.yaml" in text
    assert f"{key}:" in text
    assert message in text


async def test_a_failing_subscriber_costs_one_traceback_and_a_count(
    make_experiment: Make, workspace: Path
) -> None:
    """Not one traceback per event, and never in a run's log: the first, then a total."""
    root = _experiment(make_experiment, epochs=5)

    async def down(event: Event) -> None:
        raise ConnectionError("tracker down")

    @expman.subscriber(EpochEnd, delivery=expman.CONTROL)
    async def strict(event: Event) -> None:
        raise ValueError("bad epoch")

    result = await expman.run_experiment(root, workspace=workspace, subscribers=[down, strict])
    assert result.status == "completed"
    entries = [
        json.loads(line)
        for line in (result.path / "logs" / "experiment.log").read_text().splitlines()
    ]
    first = [e for e in entries if e["event"] == "subscriber_failed"]
    assert sorted(e["subscriber"] for e in first) == sorted(
        [down.__qualname__, strict.__qualname__]
    )
    assert all("exception" in e for e in first)
    totals = {e["subscriber"]: e["errors"] for e in entries if e["event"] == "subscriber_errors"}
    assert totals[strict.__qualname__] == 2 * 5  # every EpochEnd of both runs
    assert totals[down.__qualname__] > 2 * 5  # every event
    for k in range(2):
        run_log = (result.path / "trials" / "a" / f"run_{k}" / "logs" / "run.log").read_text()
        assert "subscriber_failed" not in run_log
