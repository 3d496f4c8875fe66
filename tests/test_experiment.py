"""Running experiments end to end: layout, concurrency, failures, logs and entry points."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import expman
from expman.events import Event, RunFinished, RunStarted
from expman.testing import capture_events

TWO_BY_THREE = [
    {"name": "small", "id": 1, "repeat": 3, "settings": {"lr": 0.1}},
    {"name": "large", "id": 2, "repeat": 3, "settings": {"lr": 0.01}},
]


def json_lines(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    assert lines, f"{path} is empty"
    return [json.loads(line) for line in lines]


async def test_spec_example_produces_the_documented_layout(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """2 trials x 3 repeats: 1 experiment.log, 1 trials.log, 2 trial.log, 6 run.log, all JSON."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "epochs": 3}}, trials=TWO_BY_THREE
    )
    result = await expman.run_experiment(root, workspace=workspace)
    assert result.status == "completed"
    assert [(r.trial, r.repeat, r.status) for r in result.runs] == [
        (t, k, "completed") for t in ("small", "large") for k in range(3)
    ]
    exp = workspace / "exp"
    assert result.path == exp
    logs = sorted(p.relative_to(exp).as_posix() for p in exp.rglob("*.log"))
    assert [p for p in logs if p.endswith("experiment.log")] == ["logs/experiment.log"]
    assert [p for p in logs if p.endswith("trials.log")] == ["trials/logs/trials.log"]
    assert sorted(p for p in logs if p.endswith("trial.log")) == [
        "trials/large/logs/trial.log",
        "trials/small/logs/trial.log",
    ]
    assert sorted(p for p in logs if p.endswith("run.log")) == [
        f"trials/{t}/run_{k}/logs/run.log" for t in ("large", "small") for k in range(3)
    ]
    for log in exp.rglob("*.log"):
        json_lines(log)  # every line parses
    for name in ("experiment.yaml", "base.yaml", "trials.yaml", "resolved.yaml"):
        assert (exp / "configs" / name).is_file()
    for t in ("small", "large"):
        assert (exp / "trials" / t / "configs" / "trial.yaml").is_file()
        for k in range(3):
            run = exp / "trials" / t / f"run_{k}"
            assert (run / "configs" / "run.yaml").is_file()
            assert (run / "artifacts").is_dir()
            epochs = [e["epoch"] for e in json_lines(run / "logs" / "metrics.log")]
            assert epochs == [0, 1, 2]
    assert len(json_lines(exp / "logs" / "metrics.log")) == 18


async def test_capacity_limit_is_never_exceeded(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """8 runs of 0.5 s at max_concurrency 4: never more than 4 active (from events)."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "seconds": 0.5}},
        trials=[{"name": "a", "id": 1, "repeat": 8}],
    )
    async with capture_events() as events:
        start = anyio.current_time()
        result = await expman.run_experiment(
            root, workspace=workspace, max_concurrency=4, subscribers=[events.subscriber]
        )
        elapsed = anyio.current_time() - start
    assert result.counts == {"completed": 8}
    active = peak = 0
    for event in events:
        if isinstance(event, RunStarted):
            active += 1
            peak = max(peak, active)
        elif isinstance(event, RunFinished):
            active -= 1
    assert peak == 4
    # Generous bound (noisy machines); sequential execution would take 4 s.
    assert elapsed < 3.0


async def test_failed_run_is_a_result_and_others_go_on(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A pipeline that raises ends as failed with its traceback in run.log; others complete."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "fail_on": 1, "epochs": 2}},
        trials=[{"name": "a", "id": 1, "repeat": 3}],
    )
    result = await expman.run_experiment(root, workspace=workspace)
    assert result.status == "failed"
    assert [r.status for r in result.runs] == ["completed", "failed", "completed"]
    failed = result.runs[1]
    assert failed.error == "ValueError: boom in repeat 1"
    run_log = workspace / "exp" / "trials" / "a" / "run_1" / "logs" / "run.log"
    entries = json_lines(run_log)
    assert any("Traceback" in e.get("exception", "") and "boom" in e["exception"] for e in entries)
    assert entries[-1]["event"] == "RunFinished"
    assert entries[-1]["status"] == "failed"


async def test_sync_pipeline_runs_in_a_thread_with_the_same_api(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A plain `def run` gets ctx.epoch_end bridged to the loop, and runs concurrently."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:SyncSleeper", "seconds": 0.2, "epochs": 2}},
        trials=[{"name": "a", "id": 1, "repeat": 4}],
    )
    start = anyio.current_time()
    result = await expman.run_experiment(root, workspace=workspace, max_concurrency=4)
    assert result.counts == {"completed": 4}
    assert all(r.metrics == {"loss": 0.5, "thread": True} for r in result.runs)
    assert all(r.epochs == 2 for r in result.runs)
    assert anyio.current_time() - start < 1.5  # 4 x 0.4 s sequentially


async def test_pipeline_logs_land_in_its_run_log(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """structlog and stdlib logging inside a pipeline go to that run's run.log only."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Talker"}},
        trials=[
            {"name": "a", "id": 1, "repeat": 2, "settings": {"lr": 0.5}},
            {"name": "b", "id": 2, "settings": {"lr": 0.7}},
        ],
    )
    await expman.run_experiment(root, workspace=workspace, max_concurrency=3)
    for trial, repeat, lr in (("a", 0, 0.5), ("a", 1, 0.5), ("b", 0, 0.7)):
        entries = json_lines(
            workspace / "exp" / "trials" / trial / f"run_{repeat}" / "logs" / "run.log"
        )
        hello = [e for e in entries if e["event"] == "hello from the pipeline"]
        assert len(hello) == 1
        assert hello[0]["lr"] == lr
        assert (hello[0]["trial"], hello[0]["repeat"]) == (trial, repeat)
        assert any(e["event"] == "stdlib says hi" and e["level"] == "warning" for e in entries)


async def test_seeds_are_deterministic_and_reach_the_pipeline(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """The same experiment gives each run the same seed every time; run.yaml records it."""
    root = make_experiment(trials=[{"name": "a", "id": 1, "repeat": 3}])
    first = await expman.run_experiment(root, workspace=tmp_path / "one")
    second = await expman.run_experiment(root, workspace=tmp_path / "two")
    seeds = [r.seed for r in first.runs]
    assert seeds == [r.seed for r in second.runs]
    assert len(set(seeds)) == 3
    assert [r.metrics["seed"] for r in first.runs] == seeds
    run_yaml = tmp_path / "one" / "exp" / "trials" / "a" / "run_2" / "configs" / "run.yaml"
    assert f"seed: {seeds[2]}" in run_yaml.read_text()


async def test_live_event_stream(make_experiment: Callable[..., Path], workspace: Path) -> None:
    """start_experiment yields typed events live, from ExperimentStarted to ExperimentFinished."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "epochs": 2}},
        trials=[{"name": "a", "id": 1, "repeat": 2}],
    )
    names: list[str] = []
    async with expman.start_experiment(root, workspace=workspace) as handle:
        async for event in handle.events():
            assert isinstance(event, Event)
            names.append(type(event).__name__)
        result = await handle.wait()
    assert result.status == "completed"
    assert names[0] == "ExperimentStarted"
    assert names[-1] == "ExperimentFinished"
    assert names.count("EpochEnd") == 4
    assert names.count("RunFinished") == 2


async def test_stop_from_the_caller_cancels_the_experiment(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """handle.stop() ends running runs cooperatively; unstarted runs are not started."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "seconds": 0.05, "epochs": 1000}},
        trials=[{"name": "a", "id": 1, "repeat": 4}],
    )
    async with expman.start_experiment(root, workspace=workspace, max_concurrency=2) as handle:
        async for event in handle.events():
            if isinstance(event, expman.EpochEnd) and event.epoch == 2:
                await handle.stop("enough")
        result = await handle.wait()
    assert result.status == "cancelled"
    statuses = sorted(r.status for r in result.runs)
    assert statuses == ["cancelled"] * 4
    assert sum(1 for r in result.runs if r.reason and r.reason.startswith("not started")) == 2


async def test_object_api(make_experiment: Callable[..., Path], workspace: Path) -> None:
    """Environment + Experiment(...).run() is the original API, async."""
    root = make_experiment(trials=[{"name": "a", "id": 1, "repeat": 2}])
    env = expman.Environment(workspace=workspace, config={"execution": {"max_concurrency": 1}})
    experiment = expman.Experiment(name="renamed", id=5, desc="d", env=env, config_dir_path=root)
    result = await experiment.run()
    assert result.status == "completed"
    assert result.path == workspace / "renamed"
    assert (workspace / "renamed" / "trials" / "a" / "run_1" / "logs" / "run.log").is_file()


async def test_the_environment_passes_values_not_strings(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """``{"timeout": None}`` is no timeout (it was the string 'None'); a bad value names its key."""
    root = make_experiment(
        experiment={"name": "exp", "id": 1, "settings": {}, "execution": {"timeout": 30}}
    )
    config = {"execution": {"timeout": None, "grace_period": 0.5, "max_retries": 1}}
    env = expman.Environment(workspace=workspace, config=config)
    plan = expman.Experiment(env=env, config_dir_path=root).plan()
    assert plan.execution.timeout is None
    assert plan.execution.grace_period == 0.5
    assert plan.execution.max_retries == 1
    result = await expman.Experiment(env=env, config_dir_path=root).run()
    assert result.status == "completed"

    with pytest.raises(expman.ConfigError, match=r"execution\.timeout"):
        expman.Environment(workspace=workspace, config={"execution": {"timeout": "soon"}})


def test_run_experiment_inside_an_already_running_loop(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Awaiting run_experiment from code already inside a loop (a notebook cell) works."""
    import asyncio

    root = make_experiment()

    async def cell() -> str:
        result = await expman.run_experiment(root, workspace=workspace)
        return result.status

    assert asyncio.run(cell()) == "completed"


async def test_a_subscriber_that_raises_does_not_break_the_experiment(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A caller's broken subscriber is reported in experiment.log; runs complete."""

    async def broken(event: Event) -> None:
        raise RuntimeError("my subscriber is broken")

    root = make_experiment(trials=[{"name": "a", "id": 1, "repeat": 2}])
    result = await expman.run_experiment(root, workspace=workspace, subscribers=[broken])
    assert result.status == "completed"
    entries = json_lines(workspace / "exp" / "logs" / "experiment.log")
    assert any(e["event"] == "subscriber_failed" for e in entries)


@pytest.mark.parametrize("bad_name", ["../escape", "a/b"])
async def test_object_api_refuses_unsafe_names(
    make_experiment: Callable[..., Path], workspace: Path, bad_name: str
) -> None:
    """Experiment(name=...) with a path separator is a ConfigError, nothing written."""
    root = make_experiment()
    experiment = expman.Experiment(
        name=bad_name, env=expman.Environment(workspace=workspace), config_dir_path=root
    )
    with pytest.raises(expman.ConfigError, match="not usable as a directory name"):
        await experiment.run()
    assert not workspace.exists()


async def test_wait_returns_when_events_were_taken_but_never_read(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Calling events() and never iterating it does not stop wait() from returning."""
    root = make_experiment(trials=[{"name": "a", "id": 1, "repeat": 2}])
    async with expman.start_experiment(root, workspace=workspace) as handle:
        handle.events()
        with anyio.fail_after(20):
            result = await handle.wait()
    assert result.status == "completed"


async def test_a_reader_that_stops_early_does_not_hold_up_the_experiment(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Breaking out of events() after the first event lets the experiment finish."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "epochs": 50}},
        trials=[{"name": "a", "id": 1, "repeat": 3}],
    )
    async with expman.start_experiment(root, workspace=workspace) as handle:
        async for _event in handle.events():
            break
        with anyio.fail_after(20):
            result = await handle.wait()
    assert result.counts == {"completed": 3}
