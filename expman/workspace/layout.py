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

from dataclasses import dataclass
from pathlib import Path


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
