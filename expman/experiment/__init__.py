"""The experiment layer: preflight, one execution of a plan, and the public API.

======================  ============================================================
:mod:`.preflight`       load, validate, resolve and check everything; writes nothing
:mod:`.start`           ``start_experiment`` / ``run_experiment``: lock, resume, run
:mod:`.execution`       one execution: the bus and its subscribers, the scheduler
:mod:`.handle`          ``ExperimentHandle``: live events, result, stop
:mod:`.result`          ``ExperimentResult``
:mod:`.classic`         ``Experiment``: the original object API
:mod:`.environment`     ``Environment``: workspace and settings for ``Experiment``
======================  ============================================================
"""

from expman.experiment.classic import Experiment
from expman.experiment.environment import Environment
from expman.experiment.handle import ExperimentHandle, single_errors
from expman.experiment.preflight import prepare
from expman.experiment.result import ExperimentResult
from expman.experiment.start import run_experiment, start_experiment

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
