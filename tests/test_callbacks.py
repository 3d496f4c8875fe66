"""Training callbacks end to end: hook order, YAML and pipeline callbacks, stop scopes, seeds."""

from __future__ import annotations

import importlib
import json
import random
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import expman
from expman.errors import ConfigError
from expman.serializable import import_path

#: Test pipelines and callbacks, dropped into each experiment folder as cb_pipes.py.
CB_PIPES = textwrap.dedent(
    '''
    import anyio

    import expman
    from expman import Callback, MetricsTracker, Pipeline

    CALLS = []


    def detail(event):
        name = type(event).__name__
        if name in ("EpochEnd", "RunEnding"):
            return event.epoch
        if name in ("CheckpointDue", "CheckpointStaged", "CheckpointSaved"):
            return (event.path.rsplit("/", 1)[-1], event.reason)
        if name == "RunFinished":
            return event.status
        if name == "StopRequested":
            return event.scope
        return None


    class Recorder(Callback):
        """Records every hook call as (who, hook, detail) in CALLS."""

        def __init__(self, who="yaml"):
            super().__init__()
            self.who = who

        async def __call__(self, event):
            CALLS.append((self.who, "on_" + _snake(type(event).__name__), detail(event)))
            await super().__call__(event)


    def _snake(name):
        import re

        return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


    class Trainer(Pipeline):
        """Async: reports a falling loss; saves a text checkpoint; registers a Recorder."""

        def __init__(self, epochs=3, seconds=0.0, losses=None, **params):
            super().__init__(**params)
            self.epochs, self.seconds, self.losses = epochs, seconds, losses
            self.epoch = None
            self.register_callback(Recorder("pipeline"))

        async def run(self, ctx):
            CALLS.append(("trainer", "run", ctx.start_epoch))
            for epoch in range(ctx.start_epoch, self.epochs):
                self.epoch = epoch
                await anyio.sleep(self.seconds)
                loss = self.losses[epoch] if self.losses else 1.0 / (epoch + 1)
                if await ctx.epoch_end(epoch, {"loss": loss, "acc": 1.0 - loss}):
                    CALLS.append(("trainer", "stopping", epoch))
                    break
            CALLS.append(("trainer", "return", self.epoch))
            return {"returned": 1}

        async def save_checkpoint(self, path):
            CALLS.append(("trainer", "save_checkpoint", self.epoch))
            await anyio.Path(path).write_text(str(self.epoch))


    @expman.register("StopAt")
    class StopAt(Callback):
        """Asks for a stop of ``scope`` at ``epoch`` of repeat ``repeat``."""

        def __init__(self, epoch, scope="run", repeat=0):
            super().__init__()
            self.epoch, self.scope, self.repeat = epoch, scope, repeat

        async def on_epoch_end(self, event):
            if event.epoch == self.epoch and event.repeat == self.repeat:
                await self.request_stop(f"stop {self.scope} at {self.epoch}", scope=self.scope)


    class Peeker(Callback):
        """Reads the run's MetricsTracker history at every epoch."""

        SEEN = []

        async def on_epoch_end(self, event):
            tracker = self.find_callback(MetricsTracker)
            history = tracker.history("loss")
            Peeker.SEEN.append((event.epoch, tracker.get_latest("loss"), len(history)))


    class Unbuildable(Callback):
        """Its constructor raises at run time (no validate_params to catch it earlier)."""

        def __init__(self, size=1):
            super().__init__()
            raise ValueError(f"no room for {size}")


    class HookNamed:
        """A callable that is not an expman.Callback but has an attribute named hook."""

        SEEN = []

        def __init__(self):
            self.hook = lambda event_type: None

        async def __call__(self, event):
            HookNamed.SEEN.append(type(event).__name__)


    class WithPlainCallback(Pipeline):
        """Registers a plain async function as a callback: it sees every event of the run."""

        SEEN = []

        def __init__(self, **params):
            super().__init__(**params)

            async def watcher(event):
                WithPlainCallback.SEEN.append(type(event).__name__)

            self.register_callback(watcher)
            self.register_callback(HookNamed())

        async def run(self, ctx):
            for epoch in range(2):
                await ctx.epoch_end(epoch, {"loss": 1.0})
            return {}


    class Broken(Callback):
        """Raises at epoch 1."""

        async def on_epoch_end(self, event):
            if event.epoch == 1:
                raise RuntimeError("callback bug")
    '''
)


def experiment(make_experiment: Callable[..., Path], **kwargs: Any) -> Path:
    root = make_experiment(**kwargs)
    (root / "cb_pipes.py").write_text(CB_PIPES)
    return root


def cb_module(root: Path) -> ModuleType:
    """The cb_pipes module the experiment will import (the same object)."""
    with import_path(root):
        return importlib.import_module("cb_pipes")


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_plain_function_registered_as_a_callback_sees_every_run_event(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Not every callback is an expman.Callback: a plain async callable gets each event."""
    root = experiment(make_experiment, base={"pipeline": {"type": "cb_pipes:WithPlainCallback"}})
    mod = cb_module(root)
    result = await expman.run_experiment(root, workspace=workspace)
    assert result.status == "completed"
    every = ["RunStarted", "EpochEnd", "EpochEnd", "RunEnding", "RunFinished"]
    assert mod.WithPlainCallback.SEEN == every
    assert mod.HookNamed.SEEN == every


async def test_hook_calls_happen_in_the_documented_order(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """1 trial x 1 repeat x 3 epochs with a checkpoint at epoch 1: the exact list of hook calls."""
    root = experiment(
        make_experiment,
        base={
            "pipeline": {"type": "cb_pipes:Trainer", "epochs": 3},
            "callbacks": [
                {"type": "CheckpointCallback", "interval": 2},
                {"type": "cb_pipes:Recorder"},
            ],
        },
    )
    mod = cb_module(root)
    result = await expman.run_experiment(
        root, workspace=workspace, subscribers=[mod.Recorder("subscriber")]
    )
    assert result.status == "completed"

    def each(hook: str, detail: Any = None) -> list[tuple[str, str, Any]]:
        # yaml and pipeline callbacks are the run's own; the subscriber comes before them.
        return [(who, hook, detail) for who in ("subscriber", "yaml", "pipeline")]

    ckpt1 = ("checkpoint-1", "top_k")
    final = ("checkpoint-final", "final")
    expected = [
        ("subscriber", "on_experiment_started", None),
        ("subscriber", "on_trial_started", None),
        ("subscriber", "on_run_started", None),
        ("yaml", "on_run_started", None),
        ("pipeline", "on_run_started", None),  # attached when the pipeline was built
        ("trainer", "run", 0),
        *each("on_epoch_end", 0),
        # CheckpointCallback (first in the list) asks during epoch 1: the subscriber sees
        # it at once, the run's callbacks after the epoch itself, and the runtime saves
        # once every callback has seen the epoch.
        ("subscriber", "on_epoch_end", 1),
        ("subscriber", "on_checkpoint_due", ckpt1),
        ("yaml", "on_epoch_end", 1),
        ("pipeline", "on_epoch_end", 1),
        ("yaml", "on_checkpoint_due", ckpt1),
        ("pipeline", "on_checkpoint_due", ckpt1),
        ("trainer", "save_checkpoint", 1),
        *each("on_checkpoint_staged", ckpt1),
        *each("on_checkpoint_saved", ckpt1),
        *each("on_epoch_end", 2),
        ("trainer", "return", 2),
        # run() returned: the final checkpoint is saved at once (outside an epoch); each
        # of the run's callbacks still sees RunEnding before the request it caused.
        ("subscriber", "on_run_ending", 2),
        ("subscriber", "on_checkpoint_due", final),
        ("trainer", "save_checkpoint", 2),
        ("subscriber", "on_checkpoint_staged", final),
        ("subscriber", "on_checkpoint_saved", final),
        ("yaml", "on_run_ending", 2),
        ("pipeline", "on_run_ending", 2),
        ("yaml", "on_checkpoint_due", final),
        ("pipeline", "on_checkpoint_due", final),
        ("yaml", "on_checkpoint_staged", final),
        ("pipeline", "on_checkpoint_staged", final),
        ("yaml", "on_checkpoint_saved", final),
        ("pipeline", "on_checkpoint_saved", final),
        *each("on_run_finished", "completed"),
        ("subscriber", "on_trial_finished", None),
        ("subscriber", "on_experiment_finished", None),
    ]
    assert mod.CALLS == expected
    artifacts = workspace / "exp" / "trials" / "a" / "run_0" / "artifacts"
    assert sorted(p.name for p in artifacts.iterdir()) == ["checkpoint-1", "checkpoint-final"]
    assert (artifacts / "checkpoint-final").read_text() == "2"


async def test_hook_order_of_a_run_stopped_early(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """EarlyStopping stops at epoch 1: stop request after that epoch, then ending, final, finish."""
    root = experiment(
        make_experiment,
        base={
            "pipeline": {"type": "cb_pipes:Trainer", "epochs": 5, "losses": [1, 1, 1, 1, 1]},
            "callbacks": [
                {"type": "cb_pipes:Recorder"},
                {"type": "CheckpointCallback", "interval": 0},
                {"type": "EarlyStopping", "metric": "loss", "patience": 1},
            ],
        },
    )
    mod = cb_module(root)
    await expman.run_experiment(root, workspace=workspace)
    final = ("checkpoint-final", "final")
    assert [c for c in mod.CALLS if c[0] in ("yaml", "trainer")] == [
        ("yaml", "on_run_started", None),
        ("trainer", "run", 0),
        ("yaml", "on_epoch_end", 0),
        ("yaml", "on_epoch_end", 1),
        ("yaml", "on_stop_requested", "run"),
        ("trainer", "stopping", 1),
        ("trainer", "return", 1),
        ("yaml", "on_run_ending", 1),
        ("trainer", "save_checkpoint", 1),
        ("yaml", "on_checkpoint_due", final),
        ("yaml", "on_checkpoint_staged", final),
        ("yaml", "on_checkpoint_saved", final),
        ("yaml", "on_run_finished", "stopped"),
    ]


async def test_early_stopping_from_yaml_stops_the_run_at_the_right_epoch(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Loss flat after epoch 1 with patience 2: the run stops after epoch 3, status stopped."""
    losses = [0.9, 0.5, 0.5, 0.6, 0.4, 0.3]
    root = experiment(
        make_experiment,
        base={
            "pipeline": {"type": "cb_pipes:Trainer", "epochs": 6, "losses": losses},
            "callbacks": [{"type": "EarlyStopping", "metric": "loss", "patience": 2}],
        },
    )
    mod = cb_module(root)
    result = await expman.run_experiment(root, workspace=workspace)
    (run,) = result.runs
    assert run.status == "stopped"
    assert run.epochs == 4
    assert run.reason is not None
    assert "early stopping: loss did not improve for 2 epochs" in run.reason
    assert ("trainer", "stopping", 3) in mod.CALLS
    metrics = json_lines(workspace / "exp" / "trials" / "a" / "run_0" / "logs" / "metrics.log")
    assert [m["epoch"] for m in metrics] == [0, 1, 2, 3]


async def test_pipeline_callbacks_can_stop_their_run(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A callback registered on the pipeline is bound to the run: its request_stop works."""
    root = experiment(
        make_experiment,
        base={"pipeline": {"type": "cb_pipes:Trainer", "epochs": 5}},
    )
    mod = cb_module(root)
    original = mod.Trainer.__init__

    def init(self: Any, **params: Any) -> None:
        original(self, **params)
        self.register_callback(mod.StopAt(epoch=1))

    mod.Trainer.__init__ = init
    result = await expman.run_experiment(root, workspace=workspace)
    (run,) = result.runs
    assert (run.status, run.epochs, run.reason) == ("stopped", 2, "stop run at 1")


async def test_metrics_tracker_is_readable_by_other_callbacks_and_summarises_the_run(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """MetricsTracker's history is live for later callbacks; its best values land in RunFinished."""
    losses = [0.9, 0.3, 0.5]
    root = experiment(
        make_experiment,
        base={
            "pipeline": {"type": "cb_pipes:Trainer", "epochs": 3, "losses": losses},
            "callbacks": [{"type": "MetricsTracker"}, {"type": "cb_pipes:Peeker"}],
        },
    )
    mod = cb_module(root)
    result = await expman.run_experiment(root, workspace=workspace)
    assert mod.Peeker.SEEN == [(0, 0.9, 1), (1, 0.3, 2), (2, 0.5, 3)]
    metrics = result.runs[0].metrics
    assert metrics["loss"] == 0.5  # the last reported value
    assert (metrics["best_loss"], metrics["best_loss_epoch"]) == (0.3, 1)
    assert (metrics["best_acc"], metrics["best_acc_epoch"]) == (0.7, 1)
    assert metrics["returned"] == 1  # what run() returned still wins
    journal = json_lines(workspace / "exp" / "logs" / "events.jsonl")
    finished = [e for e in journal if e["type"] == "RunFinished"]
    assert finished[0]["metrics"]["best_loss"] == 0.3


async def test_a_raising_callback_fails_its_run_only(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A run's callback that raises fails that run at once (a CallbackError), not the others."""
    root = experiment(
        make_experiment,
        base={
            "pipeline": {"type": "cb_pipes:Trainer", "epochs": 4},
            "callbacks": [{"type": "cb_pipes:Broken"}],
        },
        trials=[{"name": "a", "id": 1, "repeat": 1}],
    )
    result = await expman.run_experiment(root, workspace=workspace)
    (run,) = result.runs
    assert run.status == "failed"
    assert run.epochs == 2
    assert run.error is not None
    assert "CallbackError: Broken failed on EpochEnd: RuntimeError: callback bug" in run.error


async def test_a_callback_that_cannot_be_built_fails_its_runs_before_they_train(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A callback constructor that raises fails each run (CallbackError); no pipeline runs."""
    root = experiment(
        make_experiment,
        base={
            "pipeline": {"type": "cb_pipes:Trainer", "epochs": 2},
            "callbacks": [{"type": "cb_pipes:Unbuildable", "size": 3}],
        },
        trials=[{"name": "a", "id": 1, "repeat": 2}],
    )
    mod = cb_module(root)
    result = await expman.run_experiment(root, workspace=workspace)
    assert result.status == "failed"
    for run in result.runs:
        assert run.status == "failed"
        assert run.error is not None
        assert "settings.callbacks failed to build: ValueError: no room for 3" in run.error
        assert run.epochs == 0
    assert [c for c in mod.CALLS if c[0] == "trainer"] == []


async def test_missing_metric_fails_a_strict_early_stopping_and_warns_otherwise(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """strict (default): a metric never reported fails the run; strict false: it completes."""
    trials = [
        {"name": "strict", "id": 1},
        {
            "name": "lenient",
            "id": 2,
            "settings": {
                "callbacks": [{"type": "EarlyStopping", "metric": "val_loss", "strict": False}]
            },
        },
    ]
    root = experiment(
        make_experiment,
        base={
            "pipeline": {"type": "cb_pipes:Trainer", "epochs": 3},
            "callbacks": [{"type": "EarlyStopping", "metric": "val_loss"}],
        },
        trials=trials,
    )
    result = await expman.run_experiment(root, workspace=workspace)
    strict, lenient = result.runs
    assert strict.status == "failed"
    assert strict.error is not None
    assert "metric 'val_loss' is not among epoch 0's metrics (acc, loss)" in strict.error
    assert strict.epochs == 1
    assert (lenient.status, lenient.epochs) == ("completed", 3)
    run_log = (workspace / "exp" / "trials" / "lenient" / "run_0" / "logs" / "run.log").read_text()
    assert run_log.count("early_stopping_metric_missing") == 1


@pytest.mark.parametrize(
    ("callback", "key", "message"),
    [
        (
            {"type": "EarlyStopping", "metric": "loss", "mode": "down"},
            "settings.callbacks[0].mode",
            "EarlyStopping: expected 'min', 'max' or 'auto', got 'down'",
        ),
        (
            {"type": "EarlyStopping", "metric": "widgets"},
            "settings.callbacks[0]",
            "EarlyStopping: mode: cannot tell from the name 'widgets' whether lower or higher",
        ),
        (
            {"type": "EarlyStopping", "metric": "loss", "patience": -1},
            "settings.callbacks[0].patience",
            "expected an integer >= 0, got -1",
        ),
        (
            {"type": "CheckpointCallback", "save_top_k": -2},
            "settings.callbacks[0].save_top_k",
            "expected an integer >= -1, got -2",
        ),
        (
            {"type": "EarlyStopping", "metric": "loss", "patiense": 2},
            "settings.callbacks[0].patiense",
            "unknown parameter 'patiense'; expected one of: metric,",
        ),
        (
            {"type": "MetricsTracker", "mode": {"loss": "sideways"}},
            "settings.callbacks[0].mode.loss",
            "expected 'min', 'max' or 'auto', got 'sideways'",
        ),
        (
            {"type": "EarlyStoping", "metric": "loss"},
            "settings.callbacks[0].type",
            "known names: CheckpointCallback, EarlyStopping, MetricsTracker",
        ),
    ],
    ids=["mode", "auto-unknown", "patience", "top-k", "typo-param", "tracker-mode", "type"],
)
def test_callback_mistakes_are_config_errors_naming_file_and_key(
    make_experiment: Callable[..., Path], callback: dict[str, Any], key: str, message: str
) -> None:
    """A wrong callback parameter is a ConfigError at load time, naming base.yaml and the key."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper"}, "callbacks": [callback]}
    )
    with pytest.raises(ConfigError) as caught:
        expman.experiment.prepare(root)
    text = str(caught.value)
    assert "base.yaml" in text
    assert f"{key}:" in text
    assert message in text


# -- stop scopes ---------------------------------------------------------------------


async def test_stop_scope_run_stops_only_that_run(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """scope run: repeat 0 stops after epoch 1; repeat 1 of the same trial completes."""
    root = experiment(
        make_experiment,
        base={
            "pipeline": {"type": "cb_pipes:Trainer", "epochs": 4, "seconds": 0.02},
            "callbacks": [{"type": "StopAt", "epoch": 1, "scope": "run"}],
        },
        trials=[{"name": "a", "id": 1, "repeat": 2}],
    )
    result = await expman.run_experiment(root, workspace=workspace, max_concurrency=2)
    assert [(r.status, r.epochs) for r in result.runs] == [("stopped", 2), ("completed", 4)]


async def test_stop_scope_trial_stops_its_repeats_and_starts_none_of_the_rest(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """scope trial at max_concurrency 2: repeats 0-1 stop (both told), repeat 2 never starts."""
    root = experiment(
        make_experiment,
        base={
            "pipeline": {"type": "cb_pipes:Trainer", "epochs": 20, "seconds": 0.05},
            "callbacks": [
                {"type": "StopAt", "epoch": 1, "scope": "trial"},
                {"type": "cb_pipes:Recorder"},
            ],
        },
        trials=[
            {"name": "a", "id": 1, "repeat": 3},
            {"name": "b", "id": 2, "settings": {"callbacks": []}, "repeat": 1},
        ],
    )
    mod = cb_module(root)
    result = await expman.run_experiment(root, workspace=workspace, max_concurrency=2)
    # Both running repeats' callbacks heard the trial's stop; repeat 2 never started.
    assert mod.CALLS.count(("yaml", "on_stop_requested", "trial")) == 2
    a0, a1, a2, b0 = result.runs
    assert (a0.status, a0.reason, a0.epochs) == ("stopped", "stop trial at 1", 2)
    assert a1.status == "stopped"
    assert a1.epochs < 20
    assert (a2.status, a2.epochs, a2.reason) == ("stopped", 0, "not started: stop trial at 1")
    assert (b0.status, b0.epochs) == ("completed", 20)
    assert not (workspace / "exp" / "trials" / "a" / "run_2" / "logs" / "metrics.log").exists()


async def test_stop_scope_experiment_stops_everything(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """scope experiment: running runs end cancelled (resumable), queued ones never start."""
    root = experiment(
        make_experiment,
        base={
            "pipeline": {"type": "cb_pipes:Trainer", "epochs": 20, "seconds": 0.05},
            "callbacks": [{"type": "StopAt", "epoch": 1, "scope": "experiment"}],
        },
        trials=[{"name": "a", "id": 1, "repeat": 4}],
    )
    result = await expman.run_experiment(root, workspace=workspace, max_concurrency=2)
    assert result.status == "cancelled"
    assert [r.status for r in result.runs] == ["cancelled"] * 4
    assert result.runs[0].reason == "stop experiment at 1"
    assert [r.epochs for r in result.runs[2:]] == [0, 0]
    assert all(r.reason == "not started: stop experiment at 1" for r in result.runs[2:])


async def test_a_pipeline_ignoring_a_stop_is_cancelled_after_the_grace_period(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Ignorer never checks should_stop: after grace_period 0.2 s it is cancelled (stopped)."""
    root = experiment(
        make_experiment,
        base={
            "pipeline": {"type": "pipelines:Ignorer"},
            "callbacks": [{"type": "cb_pipes:StopAt", "epoch": 2}],
        },
        env={"execution": {"grace_period": 0.2}},
    )
    result = await expman.run_experiment(root, workspace=workspace)
    (run,) = result.runs
    assert run.status == "stopped"
    assert run.reason == "stop run at 2 (cancelled after 0.2s grace)"
    # It went on reporting epochs (every 0.05 s) until the grace period ended.
    assert 3 <= run.epochs < 100


# -- seeds ---------------------------------------------------------------------------------


def test_seed_everything_makes_random_and_numpy_repeatable() -> None:
    """The same seed gives the same draws from random and NumPy's global generator."""
    draws = []
    for _ in range(2):
        assert expman.seed_everything(1234) == 1234
        draws.append((random.random(), float(np.random.rand())))
    assert draws[0] == draws[1]
    expman.seed_everything(1235)
    assert (random.random(), float(np.random.rand())) != draws[0]
    with pytest.raises(TypeError):
        expman.seed_everything("7")  # type: ignore[arg-type]


# -- what a run's callbacks can receive ------------------------------------------------

WIDE = textwrap.dedent(
    """
    from expman import Callback


    class TrialWatcher(Callback):
        async def on_trial_finished(self, event):
            pass
    """
)


@pytest.mark.parametrize("where", ["base", "trial"])
def test_a_yaml_callback_with_trial_hooks_is_refused_pointing_at_subscribers(
    make_experiment: Callable[..., Path], where: str
) -> None:
    """on_trial_finished would never fire in a run's callbacks: say where it belongs."""
    entry = {"type": "wide:TrialWatcher"}
    pipeline = {"type": "pipelines:Sleeper"}
    if where == "base":
        root = make_experiment(base={"pipeline": pipeline, "callbacks": [entry]})
    else:
        root = make_experiment(
            base={"pipeline": pipeline},
            trials=[{"name": "a", "id": 1, "repeat": 1, "settings": {"callbacks": [entry]}}],
        )
    (root / "wide.py").write_text(WIDE)
    with pytest.raises(ConfigError) as caught:
        expman.experiment.prepare(root)
    text = str(caught.value)
    assert ("base.yaml" if where == "base" else "trials.yaml") in text
    assert "callbacks[0].type" in text
    assert "on_trial_finished" in text
    assert "subscribers:" in text
