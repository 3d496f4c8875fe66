"""Config files: loading, validation, expansion and resolution into a plan.

The stages (see :mod:`expman.config.plan`): ``sources`` (load) -> ``validation`` ->
``expansion`` -> ``resolution``. OmegaConf stays inside this package; the runtime
receives frozen plain objects.
"""

from collections.abc import Mapping
from typing import Any

from expman.config.entries import EntrySource, TrialEntry
from expman.config.expansion import DEFAULT_EXPANDERS, Expander
from expman.config.integrations import IntegrationSpec
from expman.config.loading import YamlDocument, load_yaml
from expman.config.merging import deep_merge, insert_value, multiply
from expman.config.plan import load_plan
from expman.config.pruning import PruningSpec
from expman.config.resolution import config_hash, run_seed
from expman.config.schema import ExecutionSettings, name_problem
from expman.config.search import SearchSpec
from expman.config.search_plan import sampled_runs, sampled_trial, with_sampled
from expman.config.specs import ExperimentPlan, RunSpec, TrialSpec

__all__ = [
    "DEFAULT_EXPANDERS",
    "EntrySource",
    "ExecutionSettings",
    "Expander",
    "ExperimentPlan",
    "IntegrationSpec",
    "PruningSpec",
    "RunSpec",
    "SearchSpec",
    "TrialEntry",
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
    "sampled_runs",
    "sampled_trial",
    "with_sampled",
]


def settings_view(settings: Mapping[str, Any]) -> Any:
    """A read-only OmegaConf view of resolved settings (attribute access for pipelines)."""
    from omegaconf import OmegaConf

    view = OmegaConf.create(dict(settings))
    OmegaConf.set_readonly(view, True)
    return view
