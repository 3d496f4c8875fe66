"""Reproducible runs on the in-process executors: each run draws from its own generators."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import expman

DRAWS = textwrap.dedent(
    '''
    import json

    import anyio

    from expman import Pipeline, seed_everything


    class Draws(Pipeline):
        """Interleaves with the other runs; reports what its own generators gave."""

        def __init__(self, seed_all=False, **params):
            super().__init__(**params)
            self.seed_all = seed_all
            self.loaded_with = None

        async def run(self, ctx):
            if self.seed_all:
                seed_everything(ctx.seed)
            values = []
            for epoch in range(5):
                await anyio.sleep(0.002 * (ctx.repeat + 1))  # runs overlap, in turns
                values.append(ctx.random.random() + float(ctx.rng.random()))
                await ctx.epoch_end(epoch, {"loss": 1.0})
            return {"values": values, "loaded_with": self.loaded_with}

        def save_checkpoint(self, path):
            path.write_text("{}")

        def load_checkpoint(self, path, ctx):
            self.loaded_with = ctx.seed
    '''
)


def _experiment(make_experiment: Callable[..., Path], folder: str, **pipeline: object) -> Path:
    root = make_experiment(
        folder=folder,
        base={"pipeline": {"type": "draws:Draws", **pipeline}},
        trials=[{"name": "a", "id": 1, "repeat": 3}],
        experiment={"name": "exp", "id": 1, "settings": {}, "execution": {"max_concurrency": 3}},
    )
    (root / "draws.py").write_text(DRAWS)
    return root


async def test_overlapping_runs_reproduce_with_their_own_generators(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    values = []
    for session in ("one", "two"):
        root = _experiment(make_experiment, f"configs-{session}")
        result = await expman.run_experiment(root, workspace=tmp_path / f"ws-{session}")
        values.append([run.metrics["values"] for run in result.runs])
    assert values[0] == values[1]
    assert values[0][0] != values[0][1]  # each run has its own seed


async def test_seed_everything_says_when_runs_share_the_process(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    pytest.importorskip("numpy")
    import expman.seeding

    expman.seeding._shared["warned"] = False
    root = _experiment(make_experiment, "configs", seed_all=True)
    result = await expman.run_experiment(root, workspace=workspace)
    logs = "".join(
        (result.path / "trials" / "a" / f"run_{k}" / "logs" / "run.log").read_text()
        for k in range(3)
    )
    entries = [json.loads(line) for line in logs.splitlines()]
    warned = [e for e in entries if e["event"] == "seed_everything_shared"]
    assert len(warned) == 1
    assert "ctx.rng" in warned[0]["hint"]


def test_load_checkpoint_gets_the_run_context_when_it_asks_for_it() -> None:
    from expman.pipeline import checkpoint_args

    class Old:
        def load_checkpoint(self, path: object) -> None: ...

    class New:
        def load_checkpoint(self, path: object, ctx: object) -> None: ...

    assert checkpoint_args(Old().load_checkpoint, "p", "ctx") == ("p",)
    assert checkpoint_args(New().load_checkpoint, "p", "ctx") == ("p", "ctx")
