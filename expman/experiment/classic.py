"""Experiment: the original object API (``Experiment(...).run()``).

``run()`` works from plain code and from async code:

* called outside any event loop (a script), it runs the experiment to its end and
  returns the :class:`~expman.experiment.result.ExperimentResult`;
* awaited in async code (``await experiment.run()``), the same, without blocking the
  loop;
* called inside a running loop by code that is not a coroutine (a sync callback, a
  notebook cell without ``await``), it raises at once, naming the fix: it never
  returns something that silently does nothing.

The environment's ``config`` is checked like env.yaml (at ``Environment(...)``); its
execution settings are passed as values and its ``subscribers`` join the experiment's;
callbacks registered on ``Pipeline(env)`` join every run as fresh copies.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

from expman.config import ExperimentPlan
from expman.config.schema import name_problem
from expman.errors import ConfigError
from expman.experiment.environment import Environment
from expman.experiment.preflight import check_buildables, prepare
from expman.experiment.result import ExperimentResult
from expman.experiment.start import progress_display, start_experiment
from expman.subscribers.base import AnySubscriber


class Experiment:
    """The original object API: ``experiment.run()`` (or ``await experiment.run()``).

    ``name``, ``id`` and ``desc`` given here override experiment.yaml's.
    """

    def __init__(
        self,
        name: str | None = None,
        id: str | int | None = None,
        desc: str | None = None,
        env: Environment | None = None,
        config_dir_path: str | os.PathLike[str] = "configs",
    ) -> None:
        self.name = name
        self.id = id
        self.desc = desc
        self.env = env or Environment()
        self.config_dir_path = Path(config_dir_path)

    def plan(self, overrides: Sequence[str] = ()) -> ExperimentPlan:
        """The validated plan this experiment would run.

        The environment's execution settings are passed as values, after the override
        strings: ``{"timeout": None}`` means no timeout.
        """
        checked = self.env.checked
        execution = dict(checked.execution)
        plan = prepare(
            self.config_dir_path,
            workspace=self.env.workspace,
            overrides=overrides,
            values={"execution": execution} if execution else None,
        )
        changes: dict[str, Any] = {}
        if self.name is not None:
            problem = name_problem(self.name)
            if problem:
                raise ConfigError(
                    f"{self.name!r} is not usable as a directory name: {problem}",
                    key="Experiment(name=...)",
                )
            changes["name"] = self.name
        if self.id is not None:
            changes["id"] = str(self.id)
            changes["written_id"] = self.id
        if self.desc is not None:
            changes["desc"] = self.desc
        if checked.subscribers:
            changes["subscribers"] = (*plan.subscribers, *checked.subscribers)
        if not changes:
            return plan
        plan = replace(plan, **changes)
        if checked.subscribers:
            check_buildables(plan)
        return plan

    def run(
        self,
        *,
        overrides: Sequence[str] = (),
        subscribers: Sequence[AnySubscriber] = (),
        progress: bool | None = None,
    ) -> Any:
        """Run the experiment: its result from plain code, an awaitable in async code.

        ``progress`` as for :func:`~expman.experiment.start.run_experiment` (default: shown
        in a notebook only).
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return anyio.run(self._run, tuple(overrides), tuple(subscribers), progress)
        caller = sys._getframe(1)
        if not caller.f_code.co_flags & (inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR):
            raise RuntimeError(
                "Experiment.run() was called inside a running event loop from code that "
                "cannot await it, so it would do nothing: write `await experiment.run()` "
                "(in a notebook cell too), or call it from plain code outside the loop"
            )
        return self._run(tuple(overrides), tuple(subscribers), progress)

    async def _run(
        self,
        overrides: Sequence[str],
        subscribers: Sequence[AnySubscriber],
        progress: bool | None,
    ) -> ExperimentResult:
        plan = await anyio.to_thread.run_sync(lambda: self.plan(overrides))
        display = progress_display(progress)
        async with start_experiment(
            plan,
            subscribers=[*subscribers, *([display] if display is not None else [])],
            callbacks=self.env.callbacks,
            on_plan=display.on_plan if display is not None else None,
        ) as handle:
            result = await handle.wait()
        if display is not None:
            display.summary(result)
        return result
