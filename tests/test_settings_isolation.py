"""A run's settings are its own: what a pipeline changes no other run (nor the snapshot) sees."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import expman

MUTATORS = textwrap.dedent(
    """
    from expman import Pipeline


    def mutate(ctx):
        seen = {"x": ctx.settings.get("x"), "items": list(ctx.settings["nested"]["items"])}
        ctx.settings["x"] = ctx.repeat
        ctx.settings["nested"]["items"].append(ctx.repeat)
        ctx.settings["nested"]["new"] = "added"
        return seen


    class SyncMutator(Pipeline):
        def run(self, ctx):
            seen = mutate(ctx)
            ctx.epoch_end(0, {"loss": 1.0})
            return {"saw_x": seen["x"], "saw_items": len(seen["items"])}


    class AsyncMutator(Pipeline):
        async def run(self, ctx):
            seen = mutate(ctx)
            await ctx.epoch_end(0, {"loss": 1.0})
            return {"saw_x": seen["x"], "saw_items": len(seen["items"])}
    """
)


@pytest.mark.parametrize(
    ("executor", "pipeline"),
    [
        ("async", "AsyncMutator"),
        ("thread", "SyncMutator"),
        pytest.param("process", "SyncMutator", marks=pytest.mark.slow),
    ],
)
async def test_a_pipeline_that_changes_its_settings_affects_no_other_run(
    make_experiment: Callable[..., Path], workspace: Path, executor: str, pipeline: str
) -> None:
    root = make_experiment(
        base={"pipeline": {"type": f"mutators:{pipeline}"}, "nested": {"items": [1, 2]}},
        trials=[{"name": "a", "id": 1, "repeat": 3}],
        experiment={
            "name": "exp",
            "id": 1,
            "settings": {},
            "execution": {"executor": executor, "max_concurrency": 1},
        },
    )
    (root / "mutators.py").write_text(MUTATORS)
    result = await expman.run_experiment(root, workspace=workspace)
    assert result.status == "completed"
    # One at a time: each repeat ran after the previous one had changed its settings.
    for run in result.runs:
        assert run.metrics["saw_x"] is None
        assert run.metrics["saw_items"] == 2
    # The snapshots on disk are the resolved settings, untouched.
    resolved = yaml.safe_load((result.path / "configs" / "resolved.yaml").read_text())
    for trial in resolved["trials"]:
        assert "x" not in trial["settings"]
        assert trial["settings"]["nested"] == {"items": [1, 2]}
    for repeat in range(3):
        run_yaml = result.path / "trials" / "a" / f"run_{repeat}" / "configs" / "run.yaml"
        settings = yaml.safe_load(run_yaml.read_text())["settings"]
        assert "x" not in settings
        assert settings["nested"] == {"items": [1, 2]}
