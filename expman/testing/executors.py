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

A backend that promises more adds the contracts it meets, from
:mod:`expman.testing.worker_contracts` (each one is the base contract plus its own
tests): ``KilledWorkerContract`` (a killed worker fails its run only),
``WorkerProcessContract`` (a spawned worker's exit status and event loop) and
``DeviceLeaseContract`` (GPU ids leased from ``env.yaml``'s devices).
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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

import expman
from expman.events import EpochEnd, RunStarted, TrialFinished, TrialStarted
from expman.testing import capture_events
from expman.testing.conformance import (
    CONFORMANCE,
    ConformanceExperiment,
    artifacts,
    forget_modules_under,
    run_log,
    write_experiment,
)

__all__ = ["CONFORMANCE", "ConformanceExperiment", "ExecutorContract", "write_experiment"]


Settings = Mapping[str, Any]


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
        forget_modules_under(tmp_path)

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
        final = artifacts(workspace) / "final.json"
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
        entries = run_log(workspace, repeat=1)
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
        checkpoint = artifacts(workspace) / "checkpoint.json"
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
    async def test_logs_are_captured_inrun_log(
        self, conformance: ConformanceExperiment, workspace: Path
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
        if self.captures_output:  # in-process runs share the driver's stdout
            assert (
                events.index("plain print 1") < events.index("to stderr") < events.index("EpochEnd")
            )
        assert (
            events.index("structlog line") < events.index("EpochEnd") < events.index("RunFinished")
        )
