"""CheckpointCallback with real files: what is kept, what is deleted and when, failures."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import expman
from expman.events import CheckpointSaved, Event

SCRIPTED = textwrap.dedent(
    '''
    import json
    import math
    from pathlib import Path

    from expman import Pipeline


    class Scripted(Pipeline):
        """Reports scripted losses; saves its epoch (a file, or a folder of two files)."""

        def __init__(self, losses, folder=False, fail_save_at=None, **params):
            super().__init__(**params)
            self.losses = [math.nan if v == "nan" else v for v in losses]
            self.folder, self.fail_save_at = folder, fail_save_at
            self.epoch = None

        def run(self, ctx):  # sync: runs in a thread, save hook too
            for epoch, loss in enumerate(self.losses):
                self.epoch = epoch
                if ctx.epoch_end(epoch, {"loss": loss}):
                    break

        def save_checkpoint(self, path):
            path = Path(path)
            if self.folder:
                path.mkdir()
                (path / "meta.json").write_text(json.dumps({"epoch": self.epoch}))
                target = path / "weights.txt"
            else:
                target = path
            with open(target, "w") as f:
                f.write(str(self.epoch))
                if self.epoch == self.fail_save_at:
                    f.flush()
                    raise OSError("disk full")
    '''
)

RUN = Path("exp") / "trials" / "a" / "run_0"


def experiment(
    make_experiment: Callable[..., Path], losses: list[Any], callback: dict[str, Any], **pipe: Any
) -> Path:
    root = make_experiment(
        base={
            "pipeline": {"type": "scripted:Scripted", "losses": losses, **pipe},
            "callbacks": [{"type": "CheckpointCallback", **callback}],
        }
    )
    (root / "scripted.py").write_text(SCRIPTED)
    return root


def files(workspace: Path) -> list[str]:
    return sorted(p.name for p in (workspace / RUN / "artifacts").iterdir())


def saved(workspace: Path) -> list[tuple[str, str, int]]:
    journal = workspace / "exp" / "logs" / "events.jsonl"
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    return [
        (Path(e["path"]).name, e["reason"], e["epoch"])
        for e in entries
        if e["type"] == "CheckpointStaged"
    ]


async def test_top_k_keeps_the_best_never_nan_and_deletes_only_after_saving(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """save_top_k 2 on loss: the two best stay; a NaN is never saved; olds go after news exist."""
    losses = [0.5, 0.3, 0.4, 0.2, 0.6, "nan"]
    root = experiment(
        make_experiment,
        losses,
        {"monitor": "loss", "save_top_k": 2, "save_last": True},
    )
    listings: list[tuple[str, list[str]]] = []
    artifacts = workspace / RUN / "artifacts"

    @expman.subscriber(delivery=expman.CONTROL)
    async def watch(event: Event) -> None:
        # Runs when the new checkpoint exists, before the callback prunes.
        if isinstance(event, CheckpointSaved) and event.reason == "top_k":
            listings.append((Path(event.path).name, files(workspace)))

    result = await expman.run_experiment(root, workspace=workspace, subscribers=[watch])
    assert result.runs[0].status == "completed"
    assert files(workspace) == [
        "checkpoint-1",
        "checkpoint-3",
        "checkpoint-final",
        "checkpoint-last",
    ]
    assert (artifacts / "checkpoint-3").read_text() == "3"
    assert (artifacts / "checkpoint-last").read_text() == "5"
    assert (artifacts / "checkpoint-final").read_text() == "5"
    assert [name for name, _, _ in saved(workspace) if name.split("-")[1].isdigit()] == [
        "checkpoint-0",
        "checkpoint-1",
        "checkpoint-2",  # 0.4 beats the worse of the two kept (0.5 at epoch 0)
        "checkpoint-3",
    ]
    assert listings == [
        ("checkpoint-0", ["checkpoint-0"]),  # checkpoint-last comes after it
        ("checkpoint-1", ["checkpoint-0", "checkpoint-1", "checkpoint-last"]),
        ("checkpoint-2", ["checkpoint-0", "checkpoint-1", "checkpoint-2", "checkpoint-last"]),
        ("checkpoint-3", ["checkpoint-1", "checkpoint-2", "checkpoint-3", "checkpoint-last"]),
    ]


async def test_without_monitor_the_most_recent_are_kept_every_interval(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """interval 2, save_top_k 2, no monitor: epochs 1, 3, 5 saved; 3 and 5 kept; folders work."""
    root = experiment(
        make_experiment,
        [0.5] * 7,
        {"interval": 2, "save_top_k": 2},
        folder=True,
    )
    await expman.run_experiment(root, workspace=workspace)
    assert files(workspace) == ["checkpoint-3", "checkpoint-5", "checkpoint-final"]
    meta = workspace / RUN / "artifacts" / "checkpoint-5" / "meta.json"
    assert json.loads(meta.read_text()) == {"epoch": 5}
    assert [(n, r) for n, r, _ in saved(workspace)] == [
        ("checkpoint-1", "top_k"),
        ("checkpoint-3", "top_k"),
        ("checkpoint-5", "top_k"),
        ("checkpoint-final", "final"),
    ]


async def test_top_k_minus_one_keeps_all_and_zero_keeps_none(
    make_experiment: Callable[..., Path], workspace: Path, tmp_path: Path
) -> None:
    """save_top_k -1 keeps every epoch; 0 with save_last keeps only last and final."""
    root = experiment(make_experiment, [0.5, 0.4, 0.6], {"save_top_k": -1, "save_final": False})
    await expman.run_experiment(root, workspace=workspace)
    assert files(workspace) == ["checkpoint-0", "checkpoint-1", "checkpoint-2"]

    other = tmp_path / "ws2"
    root = experiment(make_experiment, [0.5, 0.4, 0.6], {"save_top_k": 0, "save_last": True})
    await expman.run_experiment(root, workspace=other)
    assert files(other) == ["checkpoint-final", "checkpoint-last"]


async def test_a_failing_save_leaves_nothing_partial_and_keeps_the_older_checkpoint(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """save_checkpoint raises half-way at epoch 2: no partial file or folder, checkpoint-1 stays."""
    for folder in (False, True):
        ws = workspace / f"folder-{folder}"
        root = experiment(
            make_experiment, [0.5, 0.4, 0.3, 0.2], {"save_top_k": 1}, folder=folder, fail_save_at=2
        )
        result = await expman.run_experiment(root, workspace=ws)
        (run,) = result.runs
        # A save during an epoch reaches the pipeline's epoch_end: the run fails there.
        assert (run.status, run.epochs) == ("failed", 3)
        assert run.error is not None
        assert "OSError: disk full" in run.error
        assert files(ws) == ["checkpoint-1"], folder
        assert [n for n, _, _ in saved(ws)] == ["checkpoint-0", "checkpoint-1"]


async def test_a_failing_final_save_is_reported_and_leaves_nothing(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Only checkpoint-final (epoch 2) fails to save: no file is left, run.log says why."""
    root = experiment(
        make_experiment, [0.5, 0.4, 0.3], {"interval": 0}, folder=True, fail_save_at=2
    )
    result = await expman.run_experiment(root, workspace=workspace)
    assert result.runs[0].status == "completed"
    assert files(workspace) == []
    assert saved(workspace) == []
    assert "disk full" in (workspace / RUN / "logs" / "run.log").read_text()


async def test_a_missing_monitor_metric_fails_the_run(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """monitor names a metric the pipeline never reports: the run fails, saying which it has."""
    root = experiment(make_experiment, [0.5, 0.4], {"monitor": "val_loss"})
    result = await expman.run_experiment(root, workspace=workspace)
    (run,) = result.runs
    assert run.status == "failed"
    assert run.error is not None
    assert "monitor 'val_loss' is not a number among epoch 0's metrics (loss)" in run.error
