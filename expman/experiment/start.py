"""start_experiment and run_experiment: the async API.

Both take a config folder (or a prepared :class:`~expman.config.ExperimentPlan`),
check everything first (:mod:`~expman.experiment.preflight`; subscribers that are
not async callables are refused with a TypeError at the call), take the
experiment's lock, work out what resuming means from the journal, then run the plan
(:mod:`~expman.experiment.execution`) in a task group of their own.  An experiment
folder that exists already is resumed; ``fresh=True`` sets it aside first.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from expman.bus import declared
from expman.config import ExperimentPlan
from expman.errors import WorkspaceLocked
from expman.experiment.execution import ExperimentRun
from expman.experiment.handle import ExperimentHandle, single_errors
from expman.experiment.preflight import build_subscribers, prepare
from expman.experiment.result import ExperimentResult
from expman.run.records import ResumePlan
from expman.runtime.admission import AdmissionPolicy
from expman.runtime.resume import finish_staged, plan_resume
from expman.runtime.search import materialise
from expman.subscribers.base import AnySubscriber
from expman.subscribers.display import Display, LiveDisplay, choose_display
from expman.workspace.journal import read_journal
from expman.workspace.layout import ExperimentLayout
from expman.workspace.lock import ExperimentLock, lock_holder


@contextlib.asynccontextmanager
async def start_experiment(
    config_dir: str | os.PathLike[str] | ExperimentPlan,
    *,
    workspace: str | os.PathLike[str] | None = None,
    max_concurrency: int | None = None,
    overrides: Sequence[str] = (),
    subscribers: Sequence[AnySubscriber] = (),
    executor: str | None = None,
    fresh: bool = False,
    accept_changes: bool = False,
    on_plan: Callable[[ExperimentPlan, ResumePlan], None] | None = None,
    admission: AdmissionPolicy | None = None,
    callbacks: Sequence[Any] = (),
    integrations: bool = True,
) -> AsyncIterator[ExperimentHandle]:
    """Start an experiment in the background; yields a handle with its live events.

    ::

        async with expman.start_experiment("configs/") as handle:
            async for event in handle.events():
                ...
            result = await handle.wait()

    ``subscribers`` receive the experiment's events as each declares
    (:mod:`expman.subscribers.base`: a plain ``async def`` gets every event through
    its own mailbox, so it never slows the runs).  ``admission`` chooses which
    waiting run starts next (:mod:`expman.runtime.admission`; default plan order).
    ``callbacks`` join every run, as a fresh copy each, after the YAML ones.
    ``integrations=False`` feeds none of the trackers ``integrations:`` names.
    Leaving the block early (an exception, a cancellation) cancels the experiment.
    """
    for sub in subscribers:
        declared(sub)  # a TypeError now, not a failure on every event
    if isinstance(config_dir, ExperimentPlan):
        plan = config_dir
    else:
        plan = await anyio.to_thread.run_sync(
            lambda: prepare(
                config_dir,
                workspace=workspace,
                overrides=overrides,
                max_concurrency=max_concurrency,
                executor=executor,
            )
        )
    plan_subscribers = build_subscribers(plan)
    if fresh:
        await anyio.to_thread.run_sync(_set_aside, plan.path)
    layout = ExperimentLayout(plan.path)
    lock = ExperimentLock(layout.lock_file)
    await anyio.to_thread.run_sync(lock.acquire)
    try:
        journal_state = await anyio.to_thread.run_sync(
            functools.partial(read_journal, layout.journal_file, experiment=plan.name)
        )
        await anyio.to_thread.run_sync(finish_staged, journal_state)
        # Trials an adaptive search sampled before: with their recorded values, so
        # their finished runs are skipped and they are never sampled again.
        plan, unusable = materialise(plan, journal_state.sampled)
        resume = plan_resume(plan, journal_state, accept_changes=accept_changes)
        if on_plan is not None:
            on_plan(plan, resume)
        runner = ExperimentRun(
            plan,
            layout,
            resume,
            subscribers,
            plan_subscribers=plan_subscribers,
            admission=admission,
            run_callbacks=callbacks,
            integrations=integrations,
        )
        for problem in resume.problems:
            runner.notes.append(("journal_record_skipped", {"problem": problem}))
        for problem in unusable:
            runner.notes.append(("sampled_values_unusable", {"problem": problem}))
        if lock.previous.get("pid"):
            runner.notes.append(
                (
                    "lock_taken_over",
                    {
                        "previous_pid": lock.previous.get("pid"),
                        "previous_host": lock.previous.get("host"),
                    },
                )
            )
        with single_errors():
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.execute)
                try:
                    yield runner.handle
                except BaseException:
                    runner.handle.cancel()
                    raise
                if not runner.handle._events_taken:
                    await runner.handle.wait()
    finally:
        lock.release()


async def run_experiment(
    config_dir: str | os.PathLike[str],
    *,
    workspace: str | os.PathLike[str] | None = None,
    max_concurrency: int | None = None,
    overrides: Sequence[str] = (),
    subscribers: Sequence[AnySubscriber] = (),
    executor: str | None = None,
    fresh: bool = False,
    accept_changes: bool = False,
    admission: AdmissionPolicy | None = None,
    callbacks: Sequence[Any] = (),
    progress: bool | None = None,
    integrations: bool = True,
) -> ExperimentResult:
    """Run the experiment in ``config_dir`` to its end and return its result.

    Works in any running asyncio loop (a notebook cell included).  An experiment
    directory that already exists is resumed: finished runs are not run again.
    ``progress`` shows the runs' progress as ``expman run`` does and the summary at the
    end; by default only in a Jupyter notebook (live there, plain lines elsewhere).
    """
    display = progress_display(progress)
    if display is not None:
        subscribers = [*subscribers, display]
    async with start_experiment(
        config_dir,
        workspace=workspace,
        max_concurrency=max_concurrency,
        overrides=overrides,
        subscribers=subscribers,
        executor=executor,
        fresh=fresh,
        accept_changes=accept_changes,
        admission=admission,
        callbacks=callbacks,
        integrations=integrations,
        on_plan=display.on_plan if display is not None else None,
    ) as handle:
        result = await handle.wait()
    if display is not None:
        display.summary(result)
    return result


def progress_display(progress: bool | None) -> Display | None:
    """The display ``progress`` asks for: None (auto) shows one only in a notebook."""
    if progress is None:
        progress = in_notebook()
    if not progress:
        return None
    from rich.console import Console

    console = Console()
    if console.is_jupyter:  # rich draws its live view in the notebook's output
        return LiveDisplay(console)
    return choose_display()


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (an IPython shell with a kernel)."""
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    return get_ipython is not None and getattr(get_ipython(), "kernel", None) is not None


def _set_aside(path: Path) -> None:
    """Move an existing experiment directory to a new name (never delete it)."""
    if not path.exists():
        return
    holder = lock_holder(ExperimentLayout(path).lock_file)
    if holder is not None:
        raise WorkspaceLocked(
            f"{path} is being run by pid {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')}; --fresh would move it away under that run"
        )
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.{stamp}-{n}")
        n += 1
    path.rename(target)
