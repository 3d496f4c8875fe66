"""The executor contract, as a test suite a backend's tests subclass.

An executor (:class:`expman.executors.base.Executor`) is where a run's pipeline
executes.  Whatever the backend, a run must behave the same; this module is that
promise written as tests and shipped, so that a new backend proves itself with the very
suite expman's own backends pass (the way Optuna ships ``StorageTestCase``).

The contract:

* ``execute`` builds the pipeline that ``settings.pipeline`` names, loads its
  checkpoint when the run resumes, runs it and returns what ``run`` returned.  An
  exception in user code fails the run, with the error and its traceback in
  ``run.log``: a failed run is a result, not a crash, and a retry runs it afresh.
* Every epoch reaches the runtime (``ctx.epoch_end``) in order, and a stop that a
  callback asks for (scope ``run``, ``trial`` or ``experiment``) is seen at the next
  epoch's end: a run stopped at epoch 1 has trained exactly 2 epochs.
* The callbacks the pipeline registers itself (``register_callback``) see its run.
* ``CheckpointDue`` is answered by the pipeline's ``save_checkpoint`` while the
  pipeline lives, after ``run`` has returned too (``RunEnding``: a final checkpoint).
* Cancelling ``execute`` (the grace period or ``execution.timeout`` ran out) stops the
  work or abandons it, without blocking the runtime.
* What the pipeline logs (structlog, logging; a worker's stdout and stderr) lands in
  its run's ``run.log``, in order.
* ``reserve(resources)`` holds a run's resources for the run's whole life.

A backend's tests subclass :class:`ExecutorContract` and name the backend::

    from expman.testing.executors import ExecutorContract

    class TestMyExecutor(ExecutorContract):
        executor = "mine"       # the name env.yaml's execution.executor takes
        captures_output = True  # its runs have their own stdout (a worker process)

A backend that promises more adds the contracts it meets (each one is the base
contract plus its own tests): :class:`KilledWorkerContract` (a killed worker fails its
run only), :class:`WorkerProcessContract` (a spawned worker's exit status and event
loop) and :class:`DeviceLeaseContract` (GPU ids leased from ``env.yaml``'s devices).
What the backend needs running (a Ray cluster) is the subclass's own fixture, used
with ``@pytest.mark.usefixtures(...)`` or made autouse; what its experiments need in
``execution`` comes from the :meth:`~ExecutorContract.execution_settings` hook.

Each test runs a real experiment written into ``tmp_path`` (``experiment.yaml``,
``base.yaml``, ``trials.yaml``, ``env.yaml`` and the suite's pipelines,
:data:`CONFORMANCE`, as ``conformance.py``) through :func:`expman.run_experiment`,
and checks its result, its events and its workspace files.  The tests are coroutines
marked for pytest-asyncio.  expman resolves ``execution.executor`` by name
(:func:`expman.executors.make_executor`), so ``executor`` must be a name it knows.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pytest
import yaml

import expman
from expman.events import EpochEnd, Event, RunStarted, TrialFinished, TrialStarted
from expman.testing import capture_events

__all__ = [
    "CONFORMANCE",
    "ConformanceExperiment",
    "DeviceLeaseContract",
    "ExecutorContract",
    "KilledWorkerContract",
    "WorkerProcessContract",
    "write_experiment",
]

#: The suite's pipelines and callbacks, shipped in each experiment's folder as
#: ``conformance.py`` (types ``conformance:Train``, ``conformance:StopAt``, ...).
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

Settings = Mapping[str, Any]


def _write_yaml(path: Path, data: Any) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def write_experiment(
    root: Path,
    *,
    executor: str,
    pipeline: Settings | None = None,
    callbacks: Sequence[Settings] | None = None,
    trials: Sequence[Settings] | None = None,
    execution: Settings | None = None,
    env: Settings | None = None,
) -> Path:
    """Write the suite's experiment, run on ``executor``, into ``root``; returns ``root``.

    ``pipeline`` holds the pipeline's parameters (its ``type`` is ``conformance:Train``
    unless given), ``callbacks`` the base settings' callbacks, ``trials`` the trials
    (one trial ``a`` of one run by default), ``execution`` more keys for env.yaml's
    ``execution`` block and ``env`` env.yaml's other keys.
    """
    root.mkdir(parents=True, exist_ok=True)
    base: dict[str, Any] = {
        "pipeline": {"type": "conformance:Train", **(pipeline or {})},
        "lr": 0.1,
    }
    if callbacks:
        base["callbacks"] = [dict(c) for c in callbacks]
    experiment = {"name": "exp", "id": 1, "desc": "test", "settings": {}}
    _write_yaml(root / "experiment.yaml", experiment)
    _write_yaml(root / "base.yaml", {"settings": base})
    _write_yaml(
        root / "trials.yaml", [dict(t) for t in trials or [{"name": "a", "id": 1, "repeat": 1}]]
    )
    execution_block = {"executor": executor, **(execution or {})}
    _write_yaml(root / "env.yaml", {**(env or {}), "execution": execution_block})
    (root / "conformance.py").write_text(CONFORMANCE)
    return root


class ConformanceExperiment(Protocol):
    """Writes the suite's experiment for the backend under test; returns its folder."""

    def __call__(
        self,
        *,
        pipeline: Settings | None = None,
        callbacks: Sequence[Settings] | None = None,
        trials: Sequence[Settings] | None = None,
        execution: Settings | None = None,
        env: Settings | None = None,
    ) -> Path: ...


def _forget_modules_under(folder: Path) -> None:
    """Drop the modules imported from ``folder``: each test's experiment ships its own."""
    prefix = str(folder)
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(prefix):
            del sys.modules[name]


def _json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run_log(workspace: Path, trial: str = "a", repeat: int = 0) -> list[dict[str, Any]]:
    return _json_lines(workspace / "exp" / "trials" / trial / f"run_{repeat}" / "logs" / "run.log")


def _artifacts(workspace: Path, trial: str = "a", repeat: int = 0) -> Path:
    return workspace / "exp" / "trials" / trial / f"run_{repeat}" / "artifacts"


class ExecutorContract:
    """What every executor must do; subclass it as ``Test<Backend>`` and set ``executor``."""

    #: The backend under test: the name env.yaml's ``execution.executor`` takes.
    executor: ClassVar[str] = ""
    #: Run the suite's ``async def run`` pipeline (``ATrain``) instead of ``def run``.
    async_pipeline: ClassVar[bool] = False
    #: Runs have their own stdout and stderr (a worker process), which reach run.log.
    captures_output: ClassVar[bool] = False

    def execution_settings(self) -> dict[str, Any]:
        """Hook: what the backend needs in env.yaml's ``execution`` block besides its name."""
        return {}

    @pytest.fixture
    def workspace(self, tmp_path: Path) -> Path:
        """Where the suite's experiments keep their runs."""
        return tmp_path / "ws"

    @pytest.fixture
    def conformance(self, tmp_path: Path) -> Iterator[ConformanceExperiment]:
        """Writes an experiment of Train (or ATrain) runs on ``executor`` into tmp_path."""
        if not self.executor:
            raise TypeError(
                f"{type(self).__name__}.executor: expected the name of the backend under "
                "test (what env.yaml's execution.executor takes), got none"
            )
        kind = "conformance:ATrain" if self.async_pipeline else "conformance:Train"

        def make(
            *,
            pipeline: Settings | None = None,
            callbacks: Sequence[Settings] | None = None,
            trials: Sequence[Settings] | None = None,
            execution: Settings | None = None,
            env: Settings | None = None,
        ) -> Path:
            return write_experiment(
                tmp_path / "configs",
                executor=self.executor,
                pipeline={"type": kind, **(pipeline or {})},
                callbacks=callbacks,
                trials=trials,
                execution={**self.execution_settings(), **(execution or {})},
                env=env,
            )

        yield make
        _forget_modules_under(tmp_path)

    @pytest.mark.asyncio
    async def test_event_order_of_a_run(
        self, conformance: ConformanceExperiment, workspace: Path
    ) -> None:
        """A run publishes RunStarted, one EpochEnd per epoch in order, RunEnding, RunFinished."""
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
        assert names == [
            "TrialStarted",
            "RunStarted",
            "EpochEnd",
            "EpochEnd",
            "EpochEnd",
            "RunEnding",  # run returned; the pipeline still answers hooks
            "RunFinished",
            "TrialFinished",
        ]
        assert [e.epoch for e in events.of_type(EpochEnd)] == [0, 1, 2]

    @pytest.mark.asyncio
    async def test_early_stop_is_exact(
        self, conformance: ConformanceExperiment, workspace: Path
    ) -> None:
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

    @pytest.mark.asyncio
    async def test_callbacks_the_pipeline_registers_see_its_run(
        self, conformance: ConformanceExperiment, workspace: Path
    ) -> None:
        """A callback the pipeline registers in code (register_callback) stops its run exactly."""
        root = conformance(pipeline={"epochs": 50, "own_stop": 1})
        result = await expman.run_experiment(root, workspace=workspace)
        run = result.runs[0]
        assert (run.status, run.epochs, run.reason) == ("stopped", 2, "acc reached 1")

    @pytest.mark.asyncio
    async def test_a_final_checkpoint_after_run_returns(
        self, conformance: ConformanceExperiment, workspace: Path
    ) -> None:
        """On RunEnding the pipeline is still alive: a callback's last CheckpointDue is saved."""
        callbacks = [{"type": "conformance:FinalCheckpoint", "root": str(workspace / "exp")}]
        root = conformance(pipeline={"epochs": 3}, callbacks=callbacks)
        result = await expman.run_experiment(root, workspace=workspace)
        assert result.status == "completed"
        final = _artifacts(workspace) / "final.json"
        assert json.loads(final.read_text()) == {"epoch": 2}

    @pytest.mark.asyncio
    @pytest.mark.parametrize("scope", ["trial", "experiment"])
    async def test_stop_scopes(
        self, conformance: ConformanceExperiment, workspace: Path, scope: str
    ) -> None:
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

    @pytest.mark.asyncio
    async def test_a_failing_run_is_a_result(
        self, conformance: ConformanceExperiment, workspace: Path
    ) -> None:
        """A pipeline that raises ends failed with the error and its traceback in run.log."""
        root = conformance(
            pipeline={"epochs": 3, "fail_on": 1, "fail_repeat": 1},
            trials=[{"name": "a", "id": 1, "repeat": 2}],
        )
        result = await expman.run_experiment(root, workspace=workspace)
        assert [r.status for r in result.runs] == ["completed", "failed"]
        assert result.runs[1].error == "ValueError: boom at epoch 1"
        entries = _run_log(workspace, repeat=1)
        assert any("boom at epoch 1" in e.get("exception", "") for e in entries)
        assert entries[-1]["event"] == "RunFinished"

    @pytest.mark.asyncio
    async def test_a_failed_run_is_retried_afresh(
        self, conformance: ConformanceExperiment, workspace: Path
    ) -> None:
        """With max_retries 1, a run that fails on its first attempt runs again and completes."""
        root = conformance(pipeline={"epochs": 3, "fail_on": 1}, execution={"max_retries": 1})
        async with capture_events() as events:
            result = await expman.run_experiment(
                root, workspace=workspace, subscribers=[events.subscriber]
            )
        run = result.runs[0]
        assert (run.status, run.attempt, run.epochs) == ("completed", 2, 3)
        assert [e.attempt for e in events.of_type(RunStarted)] == [1, 2]

    @pytest.mark.asyncio
    async def test_timeout_ends_a_run_that_ignores_stop(
        self, conformance: ConformanceExperiment, workspace: Path
    ) -> None:
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

    @pytest.mark.asyncio
    async def test_checkpoint_and_resume(
        self, conformance: ConformanceExperiment, workspace: Path
    ) -> None:
        """Checkpoints a callback asks for are saved by the pipeline; a rerun resumes from one."""
        callbacks = [{"type": "conformance:CheckpointEvery", "root": str(workspace / "exp")}]
        root = conformance(pipeline={"epochs": 5, "fail_on": 3}, callbacks=callbacks)
        first = await expman.run_experiment(root, workspace=workspace)
        assert first.runs[0].status == "failed"
        checkpoint = _artifacts(workspace) / "checkpoint.json"
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

    @pytest.mark.asyncio
    async def test_logs_are_captured_in_run_log(
        self, conformance: ConformanceExperiment, workspace: Path
    ) -> None:
        """structlog and logging land in run.log in order; a worker's print and stderr too."""
        root = conformance(pipeline={"epochs": 1, "talk": True})
        result = await expman.run_experiment(root, workspace=workspace)
        assert result.status == "completed"
        entries = _run_log(workspace)
        events = [e["event"] for e in entries]
        structured = entries[events.index("structlog line")]
        assert (structured["lr"], structured["trial"], structured["repeat"]) == (0.1, "a", 0)
        assert entries[events.index("stdlib line")]["level"] == "warning"
        if self.captures_output:  # in-process runs share the driver's stdout
            assert (
                events.index("plain print 1") < events.index("to stderr") < events.index("EpochEnd")
            )
        assert (
            events.index("structlog line") < events.index("EpochEnd") < events.index("RunFinished")
        )


class KilledWorkerContract(ExecutorContract):
    """Runs live in worker processes on this machine: a killed one fails its run only."""

    #: The error of a run whose worker was killed names the signal (Ray's does not).
    names_the_signal: ClassVar[bool] = True

    @pytest.mark.asyncio
    async def test_a_worker_killed_by_sigkill_fails_and_resumes(
        self, conformance: ConformanceExperiment, workspace: Path
    ) -> None:
        """SIGKILL mid-run fails that run (naming the signal); others go on; a rerun resumes it."""
        callbacks = [{"type": "conformance:CheckpointEvery", "root": str(workspace / "exp")}]
        root = conformance(
            pipeline={"epochs": 6, "seconds": 0.05},
            callbacks=callbacks,
            trials=[{"name": "a", "id": 1, "repeat": 2}],
            execution={"max_concurrency": 2},
        )
        killed: list[int] = []

        async def kill_run_0_at_epoch_2(event: Event) -> None:
            if isinstance(event, EpochEnd) and event.repeat == 0 and event.epoch == 2:
                if not killed:
                    killed.append(event.metrics["pid"])
                    os.kill(event.metrics["pid"], signal.SIGKILL)

        first = await expman.run_experiment(
            root, workspace=workspace, subscribers=[kill_run_0_at_epoch_2]
        )
        assert killed
        assert [r.status for r in first.runs] == ["failed", "completed"]
        error = first.runs[0].error or ""
        if self.names_the_signal:
            assert "SIGKILL" in error
        assert "before its run ended" in error
        assert "\n" not in error
        assert first.runs[1].epochs == 6

        # The last complete checkpoint is epoch 1's or, when the save came before the kill
        # in the bus's order, epoch 2's; the rerun continues right after it.
        checkpoint = _artifacts(workspace) / "checkpoint.json"
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


class WorkerProcessContract(ExecutorContract):
    """Each run has a worker process of its own: its exit status is reported, its loop its own."""

    @pytest.mark.asyncio
    @pytest.mark.parametrize(
        ("crash", "expected"),
        [("exit", "exited with code 3"), ("segfault", "killed by SIGSEGV")],
    )
    async def test_a_worker_that_dies_fails_its_run_only(
        self, conformance: ConformanceExperiment, workspace: Path, crash: str, expected: str
    ) -> None:
        """os._exit and a segfault in a worker fail that run with the exit code or signal."""
        root = conformance(
            pipeline={"epochs": 3, "fail_on": 1, "fail_repeat": 0, "crash": crash},
            trials=[{"name": "a", "id": 1, "repeat": 2}],
        )
        result = await expman.run_experiment(root, workspace=workspace)
        assert [r.status for r in result.runs] == ["failed", "completed"]
        error = result.runs[0].error or ""
        assert expected in error
        assert error.startswith("expman.errors.WorkerLost: the worker process")
        if crash == "segfault":  # the interpreter's own crash report reaches run.log
            assert any("Segmentation fault" in e["event"] for e in _run_log(workspace))

    @pytest.mark.asyncio
    async def test_an_async_pipeline_runs_in_a_worker_process(
        self, conformance: ConformanceExperiment, workspace: Path
    ) -> None:
        """An `async def run` pipeline runs in the worker's own event loop with the same ctx API."""
        root = conformance(pipeline={"type": "conformance:ATrain", "epochs": 3})
        callbacks = [{"type": "conformance:StopAt", "value": 1}]
        result = await expman.run_experiment(
            root, workspace=workspace, overrides=[f"callbacks={json.dumps(callbacks)}"]
        )
        assert result.runs[0].status == "stopped"
        assert result.runs[0].epochs == 2


class DeviceLeaseContract(ExecutorContract):
    """Runs lease GPU ids from env.yaml's ``devices`` through the executor's pool."""

    #: Each run's CUDA_VISIBLE_DEVICES is exactly its lease (a worker process of its own).
    exports_visible_devices: ClassVar[bool] = False

    @pytest.mark.asyncio
    async def test_gpu_leases_from_env_yaml_devices(
        self, conformance: ConformanceExperiment, workspace: Path
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
        leases: dict[tuple[str, int], dict[str, Any]] = {}
        for run in result.runs:
            recorded = _artifacts(workspace, run.trial, run.repeat) / "lease.json"
            leases[run.trial, run.repeat] = json.loads(recorded.read_text())
        share = {"half": 0.5, "whole": 1.0, "none": 0.0}
        for (trial, _), lease in leases.items():
            assert len(lease["devices"]) == (0 if trial == "none" else 1)
            assert set(lease["devices"]) <= {"0", "1"}
            if self.exports_visible_devices:  # each worker saw exactly what it leased
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
