"""RunContext as a pipeline uses it: from any thread, awaited or not, with bad values."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import expman

#: Pipelines that use ctx the ways these tests are about.
CODE = textwrap.dedent(
    '''
    from concurrent.futures import ThreadPoolExecutor

    from expman import Pipeline


    class FromOwnThread(Pipeline):
        """A sync pipeline that reports epochs and stops from a thread it started itself."""

        def run(self, ctx):
            with ThreadPoolExecutor(1) as pool:
                for epoch in range(3):
                    pool.submit(ctx.epoch_end, epoch, {"loss": 1.0 / (epoch + 1)}).result()
                pool.submit(ctx.request_stop, "enough from my thread").result()
            return {"done": 1}
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
