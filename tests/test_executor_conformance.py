"""One conformance suite for every executor: async, thread, process and ray.

Each test runs the same experiment on each backend and states the behaviour every
executor must have.  The async executor runs an ``async def run`` pipeline, the others
a plain ``def run`` one (the same training loop).  Ray's tests use a real local Ray
instance, started once for this module.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import expman
import expman.events
from expman.events import EpochEnd, Event, RunStarted, TrialFinished, TrialStarted
from expman.testing import capture_events

#: Pipelines and callbacks of this suite, shipped in each experiment's folder.
CONFORMANCE = textwrap.dedent(
    '''
    import json
    import logging
    import os
    import sys
    import time

    import anyio
    import structlog

    from expman import Callback, Pipeline
    from expman.events import CheckpointDue


    class Train(Pipeline):
        """Epochs of ``seconds``; loss falls, ``acc`` counts epochs; saves and loads its state."""

        def __init__(self, seconds=0.0, epochs=3, fail_on=None, fail_repeat=None,
                     ignore_stop=False, talk=False, crash=None, record=False, own_stop=None):
            super().__init__()
            if own_stop is not None:
                self.register_callback(StopAt(value=own_stop))
            self.seconds, self.epochs = seconds, epochs
            self.fail_on, self.fail_repeat = fail_on, fail_repeat
            self.ignore_stop, self.talk, self.crash, self.record = ignore_stop, talk, crash, record
            self.state = {"epoch": -1}
            self.loaded = None

        def begin(self, ctx):
            if self.talk:
                print("plain print", 1)
                print("to stderr", file=sys.stderr)
                structlog.get_logger().info("structlog line", lr=ctx.config.lr)
                logging.getLogger("user").warning("stdlib line")
            if self.record:
                self.started = time.time()

        def step(self, ctx, epoch):
            failing = self.fail_repeat in (None, ctx.repeat) and ctx.attempt == 1
            if epoch == self.fail_on and failing:
                if self.crash == "exit":
                    os._exit(3)
                if self.crash == "segfault":
                    import ctypes
                    ctypes.string_at(0)
                raise ValueError(f"boom at epoch {epoch}")
            self.state = {"epoch": epoch}
            return {
                "loss": 1.0 / (epoch + 1),
                "acc": epoch,
                "start": ctx.start_epoch,
                "loaded": self.loaded,
                "pid": os.getpid(),
            }

        def end(self, ctx):
            if self.record:
                lease = {
                    "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "devices": list(ctx.devices),
                    "start": self.started,
                    "end": time.time(),
                }
                (ctx.artifacts / "lease.json").write_text(json.dumps(lease))
            return {"final_epoch": self.state["epoch"]}

        def run(self, ctx):
            self.begin(ctx)
            for epoch in range(ctx.start_epoch, self.epochs):
                time.sleep(self.seconds)
                stop = ctx.epoch_end(epoch, self.step(ctx, epoch))
                if stop and not self.ignore_stop:
                    break
            return self.end(ctx)

        def save_checkpoint(self, path):
            path.write_text(json.dumps(self.state))

        def load_checkpoint(self, path):
            self.state = json.loads(path.read_text())
            self.loaded = self.state["epoch"]


    class ATrain(Train):
        """The same training loop as ``async def run``."""

        async def run(self, ctx):
            self.begin(ctx)
            for epoch in range(ctx.start_epoch, self.epochs):
                await anyio.sleep(self.seconds)
                stop = await ctx.epoch_end(epoch, self.step(ctx, epoch))
                if stop and not self.ignore_stop:
                    break
            return self.end(ctx)


    class StopAt(Callback):
        """Asks to stop (``scope``) once ``acc`` reaches ``value``."""

        def __init__(self, value=1, scope="run"):
            super().__init__()
            self.value, self.scope = value, scope

        async def on_epoch_end(self, event):
            if event.metrics.get("acc", -1) >= self.value:
                await self.request_stop(f"acc reached {self.value}", scope=self.scope, event=event)


    class FinalCheckpoint(Callback):
        """Asks for a last checkpoint once ``run`` has returned (RunEnding)."""

        def __init__(self, root):
            super().__init__()
            self.root = root

        async def on_run_ending(self, event):
            path = f"{self.root}/trials/{event.trial}/run_{event.repeat}/artifacts/final.json"
            await self.publish(
                CheckpointDue(
                    experiment=event.experiment,
                    trial=event.trial,
                    repeat=event.repeat,
                    path=path,
                    epoch=event.epoch if event.epoch is not None else 0,
                    reason="final",
                )
            )


    class CheckpointEvery(Callback):
        """Asks for a checkpoint after every epoch, into the run's artifacts."""

        def __init__(self, root):
            super().__init__()
            self.root = root

        async def on_epoch_end(self, event):
            path = f"{self.root}/trials/{event.trial}/run_{event.repeat}/artifacts/checkpoint.json"
            await self.publish(
                CheckpointDue(
                    experiment=event.experiment,
                    trial=event.trial,
                    repeat=event.repeat,
                    path=path,
                    epoch=event.epoch,
                )
            )
    '''
)

EXECUTORS = [
    "async",
    "thread",
    pytest.param("process", marks=pytest.mark.slow),
    pytest.param("ray", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    """One local Ray instance for the module's Ray tests (start-up costs seconds)."""
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=4,
        object_store_memory=200 * 1024 * 1024,  # runs send small messages only
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "ray":
        request.getfixturevalue("ray_instance")
    return name


Factory = Callable[..., Path]


@pytest.fixture
def conformance(make_experiment: Factory, workspace: Path, executor: str) -> Factory:
    """An experiment of Train/ATrain runs on ``executor``, with the suite's module shipped."""

    def make(
        *,
        pipeline: dict[str, Any] | None = None,
        callbacks: list[dict[str, Any]] | None = None,
        trials: list[dict[str, Any]] | None = None,
        execution: dict[str, Any] | None = None,
        env: dict[str, Any] | None = None,
    ) -> Path:
        kind = "conformance:ATrain" if executor == "async" else "conformance:Train"
        base: dict[str, Any] = {"pipeline": {"type": kind, **(pipeline or {})}, "lr": 0.1}
        if callbacks:
            base["callbacks"] = callbacks
        root = make_experiment(
            base=base,
            trials=trials or [{"name": "a", "id": 1, "repeat": 1}],
            env={**(env or {}), "execution": {"executor": executor, **(execution or {})}},
        )
        (root / "conformance.py").write_text(CONFORMANCE)
        return root

    return make


def run_events(events: list[Event], trial: str, repeat: int) -> list[Event]:
    return [e for e in events if e.run_key == (trial, repeat)]


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_log(workspace: Path, trial: str = "a", repeat: int = 0) -> list[dict[str, Any]]:
    return json_lines(workspace / "exp" / "trials" / trial / f"run_{repeat}" / "logs" / "run.log")


# -- the suite -----------------------------------------------------------------------------


async def test_event_order_of_a_run(conformance: Factory, workspace: Path) -> None:
    """A run publishes RunStarted, one EpochEnd per epoch in order, (RunEnding,) RunFinished."""
    root = conformance(pipeline={"epochs": 3})
    async with capture_events() as events:
        result = await expman.run_experiment(
            root, workspace=workspace, subscribers=[events.subscriber]
        )
    assert result.status == "completed"
    run = result.runs[0]
    assert run.epochs == 3
    assert run.metrics["final_epoch"] == 2
    assert run.metrics["loss"] == pytest.approx(1 / 3)
    names = [
        type(e).__name__
        for e in events
        if isinstance(e, (TrialStarted, TrialFinished)) or e.run_key
    ]
    # RunEnding (run returned, hooks still answer) where this expman has that event.
    ending = ["RunEnding"] if hasattr(expman.events, "RunEnding") else []
    assert names == [
        "TrialStarted",
        "RunStarted",
        "EpochEnd",
        "EpochEnd",
        "EpochEnd",
        *ending,
        "RunFinished",
        "TrialFinished",
    ]
    assert [e.epoch for e in events.of_type(EpochEnd)] == [0, 1, 2]


async def test_early_stop_is_exact(conformance: Factory, workspace: Path) -> None:
    """A callback's StopRequested on epoch 1 ends the run after exactly 2 epochs, stopped."""
    root = conformance(
        pipeline={"epochs": 50, "seconds": 0.01},
        callbacks=[{"type": "conformance:StopAt", "value": 1}],
    )
    result = await expman.run_experiment(root, workspace=workspace)
    run = result.runs[0]
    assert run.status == "stopped"
    assert run.epochs == 2
    assert run.metrics["final_epoch"] == 1
    assert run.reason == "acc reached 1"


async def test_callbacks_the_pipeline_registers_see_its_run(
    conformance: Factory, workspace: Path
) -> None:
    """A callback the pipeline registers in code (register_callback) stops its run exactly."""
    root = conformance(pipeline={"epochs": 50, "own_stop": 1})
    result = await expman.run_experiment(root, workspace=workspace)
    run = result.runs[0]
    assert (run.status, run.epochs, run.reason) == ("stopped", 2, "acc reached 1")


async def test_a_final_checkpoint_after_run_returns(conformance: Factory, workspace: Path) -> None:
    """On RunEnding the pipeline is still alive: a callback's last CheckpointDue is saved."""
    callbacks = [{"type": "conformance:FinalCheckpoint", "root": str(workspace / "exp")}]
    root = conformance(pipeline={"epochs": 3}, callbacks=callbacks)
    result = await expman.run_experiment(root, workspace=workspace)
    assert result.status == "completed"
    final = workspace / "exp" / "trials" / "a" / "run_0" / "artifacts" / "final.json"
    assert json.loads(final.read_text()) == {"epoch": 2}


@pytest.mark.parametrize("scope", ["trial", "experiment"])
async def test_stop_scopes(conformance: Factory, workspace: Path, scope: str) -> None:
    """A trial-scope stop ends that trial's runs only; an experiment-scope stop ends all."""
    stop = [{"type": "conformance:StopAt", "value": 2, "scope": scope}]
    root = conformance(
        pipeline={"epochs": 40, "seconds": 0.05},
        trials=[
            {"name": "a", "id": 1, "repeat": 2, "settings": {"callbacks": stop}},
            {"name": "b", "id": 2, "repeat": 1},
        ],
        execution={"max_concurrency": 3},
    )
    result = await expman.run_experiment(root, workspace=workspace)
    by_run = {(r.trial, r.repeat): r for r in result.runs}
    expected_a = "stopped" if scope == "trial" else "cancelled"
    assert by_run["a", 0].status == by_run["a", 1].status == expected_a
    assert by_run["a", 0].epochs < 40
    if scope == "trial":
        assert by_run["b", 0].status == "completed"
        assert by_run["b", 0].epochs == 40
    else:
        assert by_run["b", 0].status == "cancelled"
        assert by_run["b", 0].epochs < 40


async def test_a_failing_run_is_a_result(conformance: Factory, workspace: Path) -> None:
    """A pipeline that raises ends failed with the error and its traceback in run.log."""
    root = conformance(
        pipeline={"epochs": 3, "fail_on": 1, "fail_repeat": 1},
        trials=[{"name": "a", "id": 1, "repeat": 2}],
    )
    result = await expman.run_experiment(root, workspace=workspace)
    assert [r.status for r in result.runs] == ["completed", "failed"]
    assert result.runs[1].error == "ValueError: boom at epoch 1"
    entries = run_log(workspace, repeat=1)
    assert any("boom at epoch 1" in e.get("exception", "") for e in entries)
    assert entries[-1]["event"] == "RunFinished"


async def test_a_failed_run_is_retried_afresh(conformance: Factory, workspace: Path) -> None:
    """With max_retries 1, a run that fails on its first attempt runs again and completes."""
    root = conformance(pipeline={"epochs": 3, "fail_on": 1}, execution={"max_retries": 1})
    async with capture_events() as events:
        result = await expman.run_experiment(
            root, workspace=workspace, subscribers=[events.subscriber]
        )
    run = result.runs[0]
    assert (run.status, run.attempt, run.epochs) == ("completed", 2, 3)
    assert [e.attempt for e in events.of_type(RunStarted)] == [1, 2]


async def test_timeout_ends_a_run_that_ignores_stop(conformance: Factory, workspace: Path) -> None:
    """A run past execution.timeout is cancelled (its worker killed) and ends failed."""
    root = conformance(
        pipeline={"epochs": 2000, "seconds": 0.02, "ignore_stop": True},
        execution={"timeout": 1.5, "grace_period": 0.2},
    )
    result = await expman.run_experiment(root, workspace=workspace)
    run = result.runs[0]
    assert run.status == "failed"
    assert run.reason == "timeout"
    # A busy machine may start a worker late; a run that went the distance is the failure.
    assert run.epochs < 2000


async def test_checkpoint_and_resume(conformance: Factory, workspace: Path) -> None:
    """Checkpoints requested by a callback are saved by the pipeline; a rerun resumes from one."""
    callbacks = [{"type": "conformance:CheckpointEvery", "root": str(workspace / "exp")}]
    root = conformance(pipeline={"epochs": 5, "fail_on": 3}, callbacks=callbacks)
    first = await expman.run_experiment(root, workspace=workspace)
    assert first.runs[0].status == "failed"
    checkpoint = workspace / "exp" / "trials" / "a" / "run_0" / "artifacts" / "checkpoint.json"
    assert json.loads(checkpoint.read_text()) == {"epoch": 2}

    async with capture_events() as events:
        second = await expman.run_experiment(
            root, workspace=workspace, subscribers=[events.subscriber]
        )
    run = second.runs[0]
    assert run.status == "completed"
    started = events.of_type(RunStarted)[0]
    assert (started.start_epoch, started.checkpoint) == (3, str(checkpoint))
    epochs = events.of_type(EpochEnd)
    assert [e.epoch for e in epochs] == [3, 4]
    assert all(e.metrics["loaded"] == 2 and e.metrics["start"] == 3 for e in epochs)
    assert json.loads(checkpoint.read_text()) == {"epoch": 4}


async def test_logs_are_captured_in_run_log(
    conformance: Factory, workspace: Path, executor: str
) -> None:
    """structlog and logging land in run.log in order; a worker's print and stderr too."""
    root = conformance(pipeline={"epochs": 1, "talk": True})
    result = await expman.run_experiment(root, workspace=workspace)
    assert result.status == "completed"
    entries = run_log(workspace)
    events = [e["event"] for e in entries]
    structured = entries[events.index("structlog line")]
    assert (structured["lr"], structured["trial"], structured["repeat"]) == (0.1, "a", 0)
    assert entries[events.index("stdlib line")]["level"] == "warning"
    if executor in ("process", "ray"):  # in-process runs share the driver's stdout
        assert events.index("plain print 1") < events.index("to stderr") < events.index("EpochEnd")
    assert events.index("structlog line") < events.index("EpochEnd") < events.index("RunFinished")


# -- workers that die ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["process", pytest.param("ray")], indirect=True)
async def test_a_worker_killed_by_sigkill_fails_and_resumes(
    conformance: Factory, workspace: Path, executor: str
) -> None:
    """SIGKILL mid-training fails that run (naming the signal); others go on; a rerun resumes it."""
    callbacks = [{"type": "conformance:CheckpointEvery", "root": str(workspace / "exp")}]
    root = conformance(
        pipeline={"epochs": 6, "seconds": 0.05},
        callbacks=callbacks,
        trials=[{"name": "a", "id": 1, "repeat": 2}],
        execution={"max_concurrency": 2},
    )
    killed: list[int] = []

    async def kill_run_0_at_epoch_2(event: Event) -> None:
        if isinstance(event, EpochEnd) and event.repeat == 0 and event.epoch == 2 and not killed:
            killed.append(event.metrics["pid"])
            os.kill(event.metrics["pid"], signal.SIGKILL)

    first = await expman.run_experiment(
        root, workspace=workspace, subscribers=[kill_run_0_at_epoch_2]
    )
    assert killed
    assert [r.status for r in first.runs] == ["failed", "completed"]
    assert "SIGKILL" in (first.runs[0].error or "") or executor == "ray"
    assert "before its run ended" in (first.runs[0].error or "")
    assert "\n" not in (first.runs[0].error or "")
    assert first.runs[1].epochs == 6

    # The last complete checkpoint is epoch 1's or, when the save came before the kill
    # in the bus's order, epoch 2's; the rerun continues right after it.
    checkpoint = workspace / "exp" / "trials" / "a" / "run_0" / "artifacts" / "checkpoint.json"
    saved = json.loads(checkpoint.read_text())["epoch"]
    assert saved in (1, 2)

    async with capture_events() as events:
        second = await expman.run_experiment(
            root, workspace=workspace, subscribers=[events.subscriber]
        )
    assert [r.status for r in second.runs] == ["completed", "completed"]
    assert second.runs[1].skipped
    resumed = events.of_type(RunStarted)
    assert [(e.repeat, e.start_epoch) for e in resumed] == [(0, saved + 1)]
    assert [e.epoch for e in events.of_type(EpochEnd)] == list(range(saved + 1, 6))
    assert events.of_type(EpochEnd)[0].metrics["loaded"] == saved


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["process"], indirect=True)
@pytest.mark.parametrize(
    ("crash", "expected"),
    [("exit", "exited with code 3"), ("segfault", "killed by SIGSEGV")],
)
async def test_a_worker_that_dies_fails_its_run_only(
    conformance: Factory, workspace: Path, crash: str, expected: str
) -> None:
    """os._exit and a segfault in a worker fail that run with the exit code or signal."""
    root = conformance(
        pipeline={"epochs": 3, "fail_on": 1, "fail_repeat": 0, "crash": crash},
        trials=[{"name": "a", "id": 1, "repeat": 2}],
    )
    result = await expman.run_experiment(root, workspace=workspace)
    assert [r.status for r in result.runs] == ["failed", "completed"]
    assert expected in (result.runs[0].error or "")
    assert result.runs[0].error.startswith("expman.errors.WorkerLost: the worker process")  # type: ignore[union-attr]
    if crash == "segfault":  # the interpreter's own crash report reaches run.log
        assert any("Segmentation fault" in e["event"] for e in run_log(workspace))


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["process"], indirect=True)
async def test_an_async_pipeline_runs_in_a_worker_process(
    make_experiment: Factory, workspace: Path, executor: str
) -> None:
    """An `async def run` pipeline runs in the worker's own event loop with the same ctx API."""
    root = make_experiment(
        base={"pipeline": {"type": "conformance:ATrain", "epochs": 3}, "lr": 0.1},
        env={"execution": {"executor": "process"}},
    )
    (root / "conformance.py").write_text(CONFORMANCE)
    callbacks = [{"type": "conformance:StopAt", "value": 1}]
    result = await expman.run_experiment(
        root, workspace=workspace, overrides=[f"callbacks={json.dumps(callbacks)}"]
    )
    assert result.runs[0].status == "stopped"
    assert result.runs[0].epochs == 2


# -- GPU leasing ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["thread", "process"], indirect=True)
async def test_gpu_leases_from_env_yaml_devices(
    conformance: Factory, workspace: Path, executor: str
) -> None:
    """Runs lease GPU ids from env.yaml: fractions pack, no device is oversubscribed."""
    root = conformance(
        pipeline={"epochs": 2, "seconds": 0.15, "record": True},
        trials=[
            {"name": "half", "id": 1, "repeat": 3, "resources": {"gpus": 0.5}},
            {"name": "whole", "id": 2, "repeat": 2, "resources": {"gpus": 1}},
            {"name": "none", "id": 3, "repeat": 1},
        ],
        execution={"max_concurrency": 6},
        env={"devices": ["0", "1"]},
    )
    result = await expman.run_experiment(root, workspace=workspace)
    assert result.counts == {"completed": 6}
    leases = {}
    for run in result.runs:
        path = workspace / "exp" / "trials" / run.trial / f"run_{run.repeat}" / "artifacts"
        leases[run.trial, run.repeat] = json.loads((path / "lease.json").read_text())
    share = {"half": 0.5, "whole": 1.0, "none": 0.0}
    for (trial, _), lease in leases.items():
        assert len(lease["devices"]) == (0 if trial == "none" else 1)
        assert set(lease["devices"]) <= {"0", "1"}
        if executor == "process":  # each worker saw exactly what it leased
            assert lease["visible"] == ",".join(lease["devices"])
    # Leases are taken in plan order and fractions pack onto the fullest device that fits.
    assert leases["half", 0]["devices"] == leases["half", 1]["devices"]
    assert leases["half", 2]["devices"] != leases["half", 0]["devices"]
    # At no moment does any device hold more than one whole GPU's worth of runs.
    for (trial, _), lease in leases.items():
        moment = lease["start"]
        for device in lease["devices"]:
            load = sum(
                share[t]
                for (t, _), other in leases.items()
                if device in other["devices"] and other["start"] <= moment < other["end"]
            )
            assert load <= 1.0, (trial, device, load)


# -- Ray as an optional extra ------------------------------------------------------------------


def test_ray_is_imported_only_when_used(make_experiment: Factory, workspace: Path) -> None:
    """Other executors never import ray; without Ray, the ray executor says how to install it."""
    import subprocess
    import sys

    root = make_experiment()
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        import expman
        result = asyncio.run(expman.run_experiment({str(root)!r}, workspace={str(workspace)!r}))
        print(result.status, "ray" in sys.modules)
        sys.modules["ray"] = None  # as if Ray were not installed
        try:
            asyncio.run(expman.run_experiment(
                {str(root)!r}, workspace={str(workspace / "other")!r}, executor="ray"))
        except expman.ExpmanError as exc:
            print(type(exc).__name__, exc)
        """
    )
    source = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "completed False", done.stderr
    assert lines[1].startswith(
        "ExecutorError the ray executor needs Ray: pip install 'expman[ray]'"
    )


@pytest.mark.slow
def test_the_ray_executor_starts_and_stops_its_own_ray(
    make_experiment: Factory, workspace: Path
) -> None:
    """Without a running Ray, the executor starts a local instance and shuts it down at the end."""
    import subprocess
    import sys

    root = make_experiment(
        base={"pipeline": {"type": "conformance:Train", "epochs": 2}, "lr": 0.1},
        env={"execution": {"executor": "ray", "ray": {"num_cpus": 1}}},
    )
    (root / "conformance.py").write_text(CONFORMANCE)
    script = textwrap.dedent(
        f"""
        import asyncio
        import ray
        import expman
        result = asyncio.run(expman.run_experiment({str(root)!r}, workspace={str(workspace)!r}))
        print(result.status, result.runs[0].epochs, ray.is_initialized())
        """
    )
    source = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=180
    )
    assert done.stdout.splitlines()[-1:] == ["completed 2 False"], done.stderr[-3000:]
