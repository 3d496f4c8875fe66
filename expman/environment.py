"""The workspace layout: where every config, log, metric and checkpoint lives.

::

    <workspace>/<experiment>/
      configs/  experiment.yaml base.yaml trials.yaml env.yaml resolved.yaml
      logs/     experiment.log metrics.log events.jsonl
      artifacts/
      trials/
        logs/trials.log
        <trial>/ configs/trial.yaml logs/trial.log artifacts/
          run_<k>/ configs/run.yaml logs/run.log logs/metrics.log artifacts/checkpoint-*
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class RunPaths:
    """The folders and files of one run."""

    root: Path

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def log_file(self) -> Path:
        return self.root / "logs" / "run.log"

    @property
    def metrics_file(self) -> Path:
        return self.root / "logs" / "metrics.log"

    @property
    def config_file(self) -> Path:
        return self.root / "configs" / "run.yaml"


@dataclass(frozen=True, slots=True)
class ExperimentLayout:
    """Paths inside one experiment directory."""

    root: Path

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def log_file(self) -> Path:
        return self.root / "logs" / "experiment.log"

    @property
    def metrics_file(self) -> Path:
        return self.root / "logs" / "metrics.log"

    @property
    def journal_file(self) -> Path:
        return self.root / "logs" / "events.jsonl"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def trials(self) -> Path:
        return self.root / "trials"

    @property
    def trials_log_file(self) -> Path:
        return self.root / "trials" / "logs" / "trials.log"

    def trial_dir(self, trial: str) -> Path:
        return self.root / "trials" / trial

    def trial_log_file(self, trial: str) -> Path:
        return self.root / "trials" / trial / "logs" / "trial.log"

    def trial_config_file(self, trial: str) -> Path:
        return self.root / "trials" / trial / "configs" / "trial.yaml"

    def run(self, trial: str, repeat: int) -> RunPaths:
        return RunPaths(self.root / "trials" / trial / f"run_{repeat}")


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
