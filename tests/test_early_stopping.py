"""EarlyStopping's semantics, pinned by a table of cases, and its counters across a resume."""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import expman
from expman import EarlyStopping
from expman.errors import CallbackError

MISSING = object()
NAN, INF = math.nan, math.inf


def stop_epoch(stopper: EarlyStopping, values: list[Any]) -> int | None:
    """Feed values as epochs 0, 1, ...; the epoch at which it asks to stop (None: never)."""
    for epoch, value in enumerate(values):
        metrics = {} if value is MISSING else {stopper.metric: value}
        if stopper.check(epoch, metrics) is not None:
            return epoch
    return None


CASES: list[tuple[str, dict[str, Any], list[Any], int | None, str]] = [
    # (id, params, values per epoch, epoch it stops at, words in the reason)
    ("patience counts reported epochs", {"patience": 3}, [1, 2, 2, 2, 0], 3, "for 3 epochs"),
    ("patience 0 stops at the first miss", {"patience": 0}, [1, 1], 1, "for 1 epoch (best 1"),
    ("improving never stops", {"patience": 1}, [4, 3, 2, 1], None, ""),
    ("equal to the best is no improvement", {"patience": 1}, [1, 1], 1, "best 1 at epoch 0"),
    ("by exactly min_delta: no", {"patience": 1, "min_delta": 0.25}, [1, 0.75], 1, ""),
    ("by more than min_delta: yes", {"patience": 1, "min_delta": 0.25}, [1, 0.7], None, ""),
    ("by exactly the percent: no", {"patience": 1, "min_delta_percent": 25}, [1, 0.75], 1, ""),
    ("by more than the percent: yes", {"patience": 1, "min_delta_percent": 25}, [1, 0.7], None, ""),
    (
        "the larger margin applies",
        {"patience": 1, "min_delta": 0.1, "min_delta_percent": 50},
        [1, 0.6],
        1,
        "",
    ),
    (
        "best of 0: relative margin 0",
        {"patience": 1, "min_delta_percent": 50},
        [0.0, -0.5],
        None,
        "",
    ),
    ("best of 0 repeated stops", {"patience": 1, "min_delta_percent": 50}, [0.0, 0.0], 1, ""),
    ("NaN stops when check_finite", {}, [1, NAN], 1, "nan, not finite"),
    ("inf stops when check_finite", {}, [1, INF], 1, "inf, not finite"),
    ("NaN is never the best", {"check_finite": False, "patience": 2}, [NAN, NAN], 1, "best none"),
    (
        "NaN counts as no improvement",
        {"check_finite": False, "patience": 2},
        [1, NAN, 0.5, NAN, NAN],
        4,
        "best 0.5",
    ),
    (
        "stopping threshold reached (min)",
        {"stopping_threshold": 0.5},
        [1, 0.5],
        1,
        "reached the stopping threshold 0.5",
    ),
    ("stopping threshold not yet", {"stopping_threshold": 0.5}, [1, 0.6], None, ""),
    ("divergence: equal is fine", {"divergence_threshold": 10}, [1, 10], None, ""),
    ("divergence: worse stops", {"divergence_threshold": 10}, [1, 10, 11], 2, "diverged beyond 10"),
    (
        "warm-up epochs are ignored",
        {"patience": 1, "start_from_epoch": 2},
        [5, 6, 1, 2],
        3,
        "best 1 at epoch 2",
    ),
    ("without warm-up it stops early", {"patience": 1}, [5, 6, 1, 2], 1, ""),
    (
        "non-strict: missing epochs do not count",
        {"patience": 1, "strict": False},
        [1, MISSING, MISSING, 1],
        3,
        "",
    ),
    ("mode max, explicit", {"mode": "max", "patience": 1}, [0.5, 0.4], 1, ""),
]
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize(("name", "params", "values", "epoch", "words"), CASES, ids=IDS)
def test_early_stopping_table(
    name: str, params: dict[str, Any], values: list[Any], epoch: int | None, words: str
) -> None:
    """Each row: the metric values of successive epochs and the epoch at which it stops."""
    stopper = EarlyStopping(metric="loss", **params)
    assert stop_epoch(stopper, values) == epoch
    if epoch is not None:
        assert stopper.stop_reason is not None
        assert words in stopper.stop_reason
        assert stopper.stopped_epoch == epoch


@pytest.mark.parametrize(
    ("metric", "values", "epoch"),
    [
        ("val_loss", [0.5, 0.4, 0.45], 2),  # auto -> min
        ("val_acc", [0.5, 0.6, 0.55], 2),  # auto -> max
        ("val_acc", [0.5, 0.4], 1),
        ("mean_squared_error", [1.0, 2.0], 1),
        ("f1_score", [0.2, 0.3], None),
    ],
)
def test_mode_auto_reads_the_metric_name(metric: str, values: list[float], epoch: int) -> None:
    """mode auto: names with loss/err go down, names with acc/f1/score go up."""
    assert stop_epoch(EarlyStopping(metric=metric, patience=1), values) == epoch


def test_a_missing_metric_is_an_error_when_strict() -> None:
    """strict (the default): an epoch without the metric raises, naming the metrics it had."""
    stopper = EarlyStopping(metric="val_loss")
    with pytest.raises(
        CallbackError, match=r"'val_loss' is not among epoch 0's metrics \(acc, loss\)"
    ):
        stopper.check(0, {"loss": 1.0, "acc": 0.5})
    with pytest.raises(CallbackError, match="is 'high' at epoch 1, not a number"):
        stopper.check(1, {"val_loss": "high"})


def test_it_asks_to_stop_once() -> None:
    """After the stop it decides nothing more (the run is ending)."""
    stopper = EarlyStopping(metric="loss", patience=1)
    assert stop_epoch(stopper, [1, 1]) == 1
    assert stopper.check(2, {"loss": 5.0}) is None
    assert stopper.stopped_epoch == 1


def test_state_dict_round_trips_through_json() -> None:
    """Counters saved as JSON and loaded into a fresh instance continue where they were."""
    first = EarlyStopping(metric="loss", patience=3)
    assert stop_epoch(first, [1.0, 2.0]) is None
    second = EarlyStopping(metric="loss", patience=3)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert second.check(2, {"loss": 2.0}) is None
    assert second.check(3, {"loss": 2.0}) is not None
    assert (second.best, second.best_epoch, second.wait) == (1.0, 0, 3)


FLAKY = textwrap.dedent(
    '''
    import anyio

    from expman import Pipeline


    class Flaky(Pipeline):
        """Fails once at epoch 3 (first attempt); saves its epoch as a checkpoint."""

        LOSSES = [1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]

        def __init__(self, **params):
            super().__init__(**params)
            self.epoch = None

        async def run(self, ctx):
            for epoch in range(ctx.start_epoch, len(self.LOSSES)):
                if epoch == 3 and ctx.attempt == 1:
                    raise RuntimeError("lost the GPU")
                self.epoch = epoch
                if await ctx.epoch_end(epoch, {"loss": self.LOSSES[epoch]}):
                    break

        async def save_checkpoint(self, path):
            await anyio.Path(path).write_text(str(self.epoch))
    '''
)


async def test_counters_survive_a_restart_from_a_checkpoint(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A retried run resumes from its checkpoint with EarlyStopping's wait restored."""
    root = make_experiment(
        base={
            "pipeline": {"type": "flaky:Flaky"},
            "callbacks": [
                {"type": "EarlyStopping", "metric": "loss", "patience": 3},
                {"type": "CheckpointCallback", "save_top_k": -1},
            ],
        },
        env={"execution": {"max_retries": 1}},
    )
    (root / "flaky.py").write_text(FLAKY)
    result = await expman.run_experiment(root, workspace=workspace)
    (run,) = result.runs
    assert run.attempt == 2
    assert run.status == "stopped"
    # Best 0.5 at epoch 1, misses at 2 (before the failure), 3 and 4 (after): stop at 4.
    # A fresh EarlyStopping would have stopped at epoch 6.
    assert run.reason is not None
    assert "did not improve for 3 epochs (best 0.5 at epoch 1)" in run.reason
    metrics = [
        json.loads(line)
        for line in (workspace / "exp/trials/a/run_0/logs/metrics.log").read_text().splitlines()
    ]
    assert [m["epoch"] for m in metrics] == [0, 1, 2, 3, 4]
