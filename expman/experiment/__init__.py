"""Assembly and API: run_experiment, start_experiment, Experiment."""

from expman.experiment.assembly import (
    Experiment,
    ExperimentHandle,
    ExperimentResult,
    prepare,
    run_experiment,
    single_errors,
    start_experiment,
)
from expman.experiment.environment import Environment

__all__ = [
    "Environment",
    "Experiment",
    "ExperimentHandle",
    "ExperimentResult",
    "prepare",
    "run_experiment",
    "single_errors",
    "start_experiment",
]
