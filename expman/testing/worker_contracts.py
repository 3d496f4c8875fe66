"""Executor contracts beyond the base one, for backends that promise more.

* :class:`KilledWorkerContract`: a worker killed by a signal fails its run only,
  naming the signal; the rerun resumes from the last complete checkpoint.
* :class:`WorkerProcessContract`: a spawned worker's exit status and segfaults
  fail the run with a clear error; an ``async def run`` works in the worker.
* :class:`DeviceLeaseContract`: GPU ids leased from ``env.yaml``'s devices, never
  two runs on one id.

Each subclasses :class:`~expman.testing.executors.ExecutorContract`, so a backend's
test class lists the ones it meets::

    class TestMyExecutor(KilledWorkerContract, DeviceLeaseContract):
        executor = "mine"
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any, ClassVar

import pytest

import expman
from expman.events import EpochEnd, Event, RunStarted
from expman.testing import capture_events
from expman.testing.conformance import (
    ConformanceExperiment,
    artifacts,
    run_log,
)
from expman.testing.executors import ExecutorContract

__all__ = ["DeviceLeaseContract", "KilledWorkerContract", "WorkerProcessContract"]


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

        # Control: the kill happens while the bus delivers epoch 2, before epoch 3 is run.
        @expman.subscriber(EpochEnd, delivery=expman.CONTROL)
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
        checkpoint = artifacts(workspace) / "checkpoint.json"
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
            assert any("Segmentation fault" in e["event"] for e in run_log(workspace))

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
            recorded = artifacts(workspace, run.trial, run.repeat) / "lease.json"
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
