"""Environment: where experiments live, this machine's execution defaults, shared callbacks.

``config`` holds what ``env.yaml`` may hold and is checked by the same rules, at once:
``execution`` settings (``{"timeout": None}`` is no timeout), ``max_concurrency``,
``devices``, ``workspace`` (when not given as the argument) and ``subscribers``; an
unknown key or a wrong type is a ConfigError naming ``<Environment(config=...)>`` and
the key.  Its values win over the experiment's files.

The original API's ``Pipeline(env)`` registers with its environment: callbacks
registered on it (``pipeline.register_callback(EarlyStopping(env, ...))``) are given,
as fresh copies, to every run of every experiment run with this environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from expman.config.validation import EnvironmentConfig, check_environment
from expman.workspace.layout import ExperimentLayout


class Environment:
    """Where experiments live and the execution defaults of this machine."""

    def __init__(
        self,
        workspace: str | os.PathLike[str] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.config: dict[str, Any] = dict(config or {})
        self.checked: EnvironmentConfig = check_environment(self.config, Path.cwd())
        if workspace is None:
            workspace = self.checked.workspace or "workspace"
        self.workspace = Path(workspace).absolute()
        #: Pipelines made with ``Pipeline(env)``: their callbacks join every run.
        self.pipelines: list[Any] = []

    def setup_environment(self) -> Environment:
        """Create the workspace folder (experiments create theirs when they run)."""
        self.workspace.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def callbacks(self) -> list[Any]:
        """The callbacks registered on this environment's pipelines, in order."""
        return [cb for pipeline in self.pipelines for cb in getattr(pipeline, "callbacks", ())]

    def layout(self, experiment_name: str) -> ExperimentLayout:
        return ExperimentLayout(self.workspace / experiment_name)

    def __repr__(self) -> str:
        return f"Environment(workspace={str(self.workspace)!r}, config={self.config!r})"
