"""Environment: where experiments live, and this machine's execution defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from expman.workspace.layout import ExperimentLayout


class Environment:
    """Where experiments live and the execution defaults of this machine.

    ``config`` holds what ``env.yaml`` may hold (``execution`` settings such as
    ``max_concurrency``); values given here win over the experiment's files.
    """

    def __init__(
        self,
        workspace: str | os.PathLike[str] = "workspace",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.workspace = Path(workspace).absolute()
        self.config: dict[str, Any] = dict(config or {})

    def layout(self, experiment_name: str) -> ExperimentLayout:
        return ExperimentLayout(self.workspace / experiment_name)

    def __repr__(self) -> str:
        return f"Environment(workspace={str(self.workspace)!r}, config={self.config!r})"
