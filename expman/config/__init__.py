"""Config files: loading, validation, merging and expansion into a plan.

OmegaConf stays inside this package; the runtime receives frozen plain objects.
"""

from collections.abc import Mapping
from typing import Any

from expman.config.loading import YamlDocument, load_yaml
from expman.config.merging import deep_merge, insert_value, multiply
from expman.config.plan import ExperimentPlan, RunSpec, TrialSpec, config_hash, load_plan, run_seed
from expman.config.schema import ExecutionSettings, name_problem

__all__ = [
    "ExecutionSettings",
    "ExperimentPlan",
    "RunSpec",
    "TrialSpec",
    "YamlDocument",
    "config_hash",
    "deep_merge",
    "insert_value",
    "load_plan",
    "load_yaml",
    "multiply",
    "name_problem",
    "run_seed",
]


def settings_view(settings: Mapping[str, Any]) -> Any:
    """A read-only OmegaConf view of resolved settings (attribute access for pipelines)."""
    from omegaconf import OmegaConf

    view = OmegaConf.create(dict(settings))
    OmegaConf.set_readonly(view, True)
    return view
