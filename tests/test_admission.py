"""The admission-policy seam: a policy reorders, holds back or drops runs not yet started."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import anyio

import expman
from expman import Admit, Drop, RunSpec
from expman.events import Event, RunFinished, RunStarted
from expman.testing import capture_events

Make = Callable[..., Path]


def _experiment(make_experiment: Make, repeats: int = 4) -> Path:
    return make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "epochs": 2}},
        trials=[{"name": "a", "id": 1, "repeat": repeats}],
        experiment={"name": "exp", "id": 1, "settings": {}, "execution": {"max_concurrency": 1}},
    )


class Reversed:
    """Starts the last waiting run first."""

    async def choose(self, waiting: Sequence[RunSpec]) -> Admit | Drop:
        return Admit(waiting[-1])


class DropOdd:
    """Never starts an odd repeat."""

    async def choose(self, waiting: Sequence[RunSpec]) -> Admit | Drop:
        spec = waiting[0]
        return Drop(spec, "odd repeat") if spec.repeat % 2 else Admit(spec)


async def test_a_policy_reorders_the_runs(make_experiment: Make, workspace: Path) -> None:
    root = _experiment(make_experiment)
    async with capture_events() as events:
        result = await expman.run_experiment(
            root, workspace=workspace, admission=Reversed(), subscribers=[events.subscriber]
        )
    assert result.status == "completed"
    assert [e.repeat for e in events.of_type(RunStarted)] == [3, 2, 1, 0]
    # The result lists runs in plan order whatever order they ran in.
    assert [r.repeat for r in result.runs] == [0, 1, 2, 3]


async def test_a_policy_drops_runs_as_stopped_and_resume_keeps_the_decision(
    make_experiment: Make, workspace: Path
) -> None:
    root = _experiment(make_experiment)
    async with capture_events() as events:
        result = await expman.run_experiment(
            root, workspace=workspace, admission=DropOdd(), subscribers=[events.subscriber]
        )
    assert [e.repeat for e in events.of_type(RunStarted)] == [0, 2]
    by_repeat = {r.repeat: r for r in result.runs}
    assert by_repeat[1].status == "stopped"
    assert by_repeat[1].reason == "not started: odd repeat"
    assert by_repeat[3].status == "stopped"
    assert {r.repeat for r in result.runs if r.status == "completed"} == {0, 2}
    # The dropped runs' folders stay, their run.log saying why they never started.
    for repeat in (1, 3):
        run_log = workspace / "exp" / "trials" / "a" / f"run_{repeat}" / "logs" / "run.log"
        assert "not started: odd repeat" in run_log.read_text()
    # A decision, not an interruption: resuming runs nothing again.
    again = await expman.run_experiment(root, workspace=workspace)
    assert all(r.skipped for r in again.runs)


async def test_a_policy_holds_runs_back_until_it_has_a_result(
    make_experiment: Make, workspace: Path
) -> None:
    """Admit one run, then wait for its RunFinished before admitting the rest."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "epochs": 2}},
        trials=[{"name": "a", "id": 1, "repeat": 3}],
        experiment={"name": "exp", "id": 1, "settings": {}, "execution": {"max_concurrency": 3}},
    )
    order: list[str] = []

    class FirstThenRest:
        def __init__(self) -> None:
            self.admitted = 0
            self.first_done = anyio.Event()

        async def choose(self, waiting: Sequence[RunSpec]) -> Admit | Drop:
            if self.admitted == 1:
                await self.first_done.wait()
            self.admitted += 1
            return Admit(waiting[0])

        async def __call__(self, event: Event) -> None:
            if isinstance(event, RunStarted):
                order.append(f"start {event.repeat}")
            if isinstance(event, RunFinished):
                order.append(f"end {event.repeat}")
                self.first_done.set()

    policy = FirstThenRest()
    watcher = expman.subscriber(RunStarted, RunFinished, delivery=expman.CONTROL)(policy)
    result = await expman.run_experiment(
        root, workspace=workspace, admission=policy, subscribers=[watcher]
    )
    assert result.status == "completed"
    assert order[:2] == ["start 0", "end 0"]
    assert sorted(order[2:]) == ["end 1", "end 2", "start 1", "start 2"]
