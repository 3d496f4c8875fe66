"""Experiment: the original object API (``Experiment(...).run()``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

from expman.config import ExperimentPlan
from expman.config.schema import name_problem
from expman.errors import ConfigError
from expman.experiment.environment import Environment
from expman.experiment.preflight import prepare
from expman.experiment.result import ExperimentResult
from expman.experiment.start import start_experiment
from expman.subscribers.base import AnySubscriber


class Experiment:
    """The original object API: ``await Experiment(...).run()``.

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

        The environment's ``execution`` settings (and ``max_concurrency``) are passed as
        values, after the override strings: ``{"timeout": None}`` means no timeout.
        """
        execution = dict(self.env.config.get("execution") or {})
        if "max_concurrency" in self.env.config:
            execution["max_concurrency"] = self.env.config["max_concurrency"]
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
        if self.desc is not None:
            changes["desc"] = self.desc
        return replace(plan, **changes) if changes else plan

    async def run(
        self, *, overrides: Sequence[str] = (), subscribers: Sequence[AnySubscriber] = ()
    ) -> ExperimentResult:
        plan = await anyio.to_thread.run_sync(lambda: self.plan(overrides))
        async with start_experiment(plan, subscribers=subscribers) as handle:
            return await handle.wait()
