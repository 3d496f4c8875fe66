"""RunContext as a pipeline uses it: from any thread, awaited or not, with bad values."""

from __future__ import annotations

import gc
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

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
