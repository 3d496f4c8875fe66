"""RunContext as a pipeline uses it: from any thread, awaited or not, with bad values."""

from __future__ import annotations

import gc
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

import expman

#: Pipelines that use ctx the ways these tests are about.
CODE = textwrap.dedent(
    '''
    from concurrent.futures import ThreadPoolExecutor

    from expman import Callback, Pipeline, StopRequested


    class FromOwnThread(Pipeline):
        """A sync pipeline that reports epochs and stops from a thread it started itself."""

        def run(self, ctx):
            with ThreadPoolExecutor(1) as pool:
                for epoch in range(3):
                    pool.submit(ctx.epoch_end, epoch, {"loss": 1.0 / (epoch + 1)}).result()
                pool.submit(ctx.request_stop, "enough from my thread").result()
            return {"done": 1}


    class Unawaited(Pipeline):
        """Forgets ``await`` on epoch_end: in a test (``how="if"``) or as a statement."""

        def __init__(self, how="if", **params):
            super().__init__(**params)
            self.how = how

        async def run(self, ctx):
            for epoch in range(3):
                if self.how == "if":
                    if ctx.epoch_end(epoch, {"loss": 1.0}):
                        break
                else:
                    ctx.epoch_end(epoch, {"loss": 1.0})
            await ctx.epoch_end(3, {"loss": 0.5})
            return {}


    class Reporter(Pipeline):
        """Reports one epoch with the values of its case (the numpy one is fine)."""

        def __init__(self, case="numpy", **params):
            super().__init__(**params)
            self.case = case

        async def run(self, ctx):
            import numpy as np

            epoch, metrics = {
                "words": ("zero", {"loss": "high"}),
                "bool": (True, {"loss": 1.0}),
                "float": (1.0, {"loss": 1.0}),
                "list": (0, [("loss", 1.0)]),
                "key": (0, {1: 1.0}),
                "object": (0, {"loss": 1.0, "model": object()}),
                "nested": (0, {"loss": 1.0, "per_class": {"a": [1, object()]}}),
                "numpy": (
                    np.int64(0),
                    {
                        "loss": np.float32(0.5), "acc": np.float64(0.9), "n": np.int64(3),
                        "ok": np.bool_(True), "note": "fine", "none": None,
                        "per_class": {"a": [1, 2.5, None], "b": {"c": True}},
                    },
                ),
            }[self.case]
            await ctx.epoch_end(epoch, metrics)
            return {}


    class WrongScope(Callback):
        """Asks to stop "everything" through request_stop, after epoch 1."""

        async def on_epoch_end(self, event):
            if event.epoch == 1:
                await self.request_stop("too much", scope="everything")


    class HandBuiltStop(Callback):
        """Publishes a StopRequested with an unknown scope that it built itself."""

        async def on_epoch_end(self, event):
            if event.epoch == 1:
                await self.publish(
                    StopRequested(
                        experiment=event.experiment, trial=event.trial, repeat=event.repeat,
                        scope="everything", reason="too much", source="HandBuiltStop",
                    )
                )
    '''
)


def write_pipes(root: Path) -> None:
    (root / "ctx_pipes.py").write_text(CODE)


async def test_sync_pipeline_reports_from_a_thread_it_started(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """epoch_end and request_stop work from a thread the pipeline created, not only anyio's."""
    root = make_experiment(base={"pipeline": {"type": "ctx_pipes:FromOwnThread"}})
    write_pipes(root)
    result = await expman.run_experiment(root, workspace=workspace)
    (run,) = result.runs
    assert run.error is None
    assert (run.status, run.epochs, run.reason) == ("stopped", 3, "enough from my thread")
    assert run.metrics["loss"] == 1.0 / 3


async def test_epoch_end_tested_without_await_fails_the_run_clearly(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """`if ctx.epoch_end(...)` without await fails the run with a TypeError, not 0 epochs."""
    root = make_experiment(base={"pipeline": {"type": "ctx_pipes:Unawaited", "how": "if"}})
    write_pipes(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = await expman.run_experiment(root, workspace=workspace)
        gc.collect()
    (run,) = result.runs
    assert run.status == "failed"
    assert "TypeError" in (run.error or "")
    assert "use `if await ctx.epoch_end(...)`" in (run.error or "")
    assert not [str(w.message) for w in caught if "never awaited" in str(w.message)]


async def test_epoch_end_never_awaited_is_logged_without_a_warning(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A bare `ctx.epoch_end(...)` statement reports nothing and says so in run.log."""
    root = make_experiment(base={"pipeline": {"type": "ctx_pipes:Unawaited", "how": "bare"}})
    write_pipes(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = await expman.run_experiment(root, workspace=workspace)
        gc.collect()
    (run,) = result.runs
    assert (run.status, run.epochs) == ("completed", 1)
    (run_log,) = workspace.rglob("run.log")
    assert run_log.read_text().count("epoch_end_not_awaited") == 3
    assert not [str(w.message) for w in caught if "never awaited" in str(w.message)]


async def test_awaited_epoch_end_returns_the_stop_decision(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """`await ctx.epoch_end(...)` reports each epoch and returns False while nothing stops."""
    root = make_experiment(base={"pipeline": {"type": "pipelines:Sleeper", "epochs": 4}})
    result = await expman.run_experiment(root, workspace=workspace)
    (run,) = result.runs
    assert (run.status, run.epochs, run.metrics["loss"]) == ("completed", 4, 0.25)


async def test_request_stop_with_an_unknown_scope_fails_the_run(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Callback.request_stop(scope="everything") is a ValueError naming the allowed scopes."""
    root = make_experiment(
        base={
            "pipeline": {"type": "pipelines:Sleeper", "epochs": 4},
            "callbacks": [{"type": "ctx_pipes:WrongScope"}],
        }
    )
    write_pipes(root)
    result = await expman.run_experiment(root, workspace=workspace)
    (run,) = result.runs
    assert run.status == "failed"
    assert "ValueError" in (run.error or "")
    assert "must be one of run, trial, experiment; got 'everything'" in (run.error or "")


async def test_hand_built_stop_with_an_unknown_scope_is_logged(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A StopRequested with an unknown scope stops nothing and is logged as an error."""
    root = make_experiment(
        base={
            "pipeline": {"type": "pipelines:Sleeper", "epochs": 4},
            "callbacks": [{"type": "ctx_pipes:HandBuiltStop"}],
        }
    )
    write_pipes(root)
    result = await expman.run_experiment(root, workspace=workspace)
    (run,) = result.runs
    assert (run.status, run.epochs) == ("completed", 4)
    logs = "".join(path.read_text() for path in workspace.rglob("*.log"))
    assert "stop_request_ignored" in logs
    assert "everything" in logs


@pytest.mark.parametrize("executor", ["local", pytest.param("process", marks=pytest.mark.slow)])
async def test_epoch_end_rejects_values_a_log_cannot_hold(
    make_experiment: Callable[..., Path], workspace: Path, executor: str
) -> None:
    """A non-int epoch, non-mapping metrics or a metric JSON cannot hold is a TypeError
    (in the event loop, a thread, or a worker process alike)."""
    cases = ["words", "bool", "float", "list", "key", "object", "nested", "numpy"]
    root = make_experiment(
        base={"pipeline": {"type": "ctx_pipes:Reporter"}},
        trials=[
            {"name": case, "id": i, "settings": {"pipeline": {"case": case}}}
            for i, case in enumerate(cases, 1)
        ],
    )
    write_pipes(root)
    result = await expman.run_experiment(root, workspace=workspace, executor=executor)
    errors = {run.trial: run.error or "" for run in result.runs}
    expected = {
        "words": "epoch must be an int; got 'zero'",
        "bool": "epoch must be an int; got True",
        "float": "epoch must be an int; got 1.0",
        "list": "metrics must be a mapping of metric names to values; got list",
        "key": "metric names must be strings; got 1",
        "object": "metric 'model' (object) cannot be written to the logs",
        "nested": "metric 'per_class' (dict) cannot be written to the logs",
    }
    for case, message in expected.items():
        assert errors[case].startswith("TypeError: ctx.epoch_end: "), (case, errors[case])
        assert message in errors[case], (case, errors[case])
    numpy_run = next(run for run in result.runs if run.trial == "numpy")
    assert (numpy_run.status, numpy_run.epochs) == ("completed", 1)
    assert numpy_run.metrics["per_class"] == {"a": [1, 2.5, None], "b": {"c": True}}


async def test_timeout_and_stall_errors_state_their_limit(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A run failed by execution.timeout or stall_timeout says which limit, and its value."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Ignorer"}},
        trials=[
            {"name": "long", "id": 1},
            {
                "name": "silent",
                "id": 2,
                "settings": {"pipeline": {"type": "pipelines:Sleeper", "seconds": 5}},
            },
        ],
        env={"execution": {"timeout": 0.6, "stall_timeout": 0.25}},
    )
    result = await expman.run_experiment(root, workspace=workspace)
    errors = {run.trial: (run.status, run.reason, run.error) for run in result.runs}
    assert errors == {
        "long": ("failed", "timeout", "timeout: still running after 0.6s (execution.timeout)"),
        "silent": (
            "failed",
            "stalled",
            "stalled: no epoch_end for 0.25s (execution.stall_timeout)",
        ),
    }


SCALARS = textwrap.dedent(
    '''
    import numpy as np

    from expman import Pipeline


    class NumpyScalars(Pipeline):
        """Reports its loss as a 0-d array, its accuracy as a numpy float32."""

        async def run(self, ctx):
            for epoch in range(6):
                loss = np.array(1.0 if epoch < 2 else 0.5)
                await_stop = await ctx.epoch_end(epoch, {"loss": loss, "acc": np.float32(0.25)})
                if await_stop:
                    break
            return {}
    '''
)


async def test_framework_scalars_become_numbers_for_callbacks_and_logs(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A 0-d array (a tensor's .item() shape) is a number to EarlyStopping and the tracker."""
    root = make_experiment(
        base={
            "pipeline": {"type": "scalars:NumpyScalars"},
            "callbacks": [
                {"type": "EarlyStopping", "metric": "loss", "patience": 2},
                {"type": "MetricsTracker"},
            ],
        }
    )
    (root / "scalars.py").write_text(SCALARS)
    result = await expman.run_experiment(root, workspace=workspace)
    run = result.runs[0]
    assert run.status == "stopped"  # EarlyStopping read the arrays as numbers
    assert run.epochs == 5  # best at epoch 2, then 2 epochs without improvement
    assert run.metrics["best_loss"] == 0.5
    assert type(run.metrics["acc"]) is float
