"""expman: run machine-learning experiments from YAML on an async, event-driven runtime.

Everything public is importable from here (``expman.run_experiment``, ``expman.Callback``
...), loaded on first use: ``import expman`` itself is cheap, and a worker process that
imports ``expman.executors.worker`` loads only what a run in it needs.
"""

from __future__ import annotations as _annotations

import importlib as _importlib
import importlib.util as _importlib_util
import typing as _typing

if _typing.TYPE_CHECKING:
    from expman.bus import CONTROL, Delivery, EventBus, Subscription, mailbox
    from expman.config import ExperimentPlan, RunSpec, TrialSpec, insert_value, load_plan, multiply
    from expman.errors import (
        CallbackError,
        ConfigChanged,
        ConfigError,
        ExecutorError,
        ExpmanError,
        PipelineError,
        ResultsError,
        WorkspaceError,
        WorkspaceLocked,
    )
    from expman.events import (
        CheckpointDue,
        CheckpointSaved,
        CheckpointStaged,
        EpochEnd,
        Event,
        ExperimentFinished,
        ExperimentStarted,
        PruneDecision,
        RunEnding,
        RunFinished,
        RunRetrying,
        RunStalled,
        RunStarted,
        StopRequested,
        TrialFinished,
        TrialSampled,
        TrialStarted,
    )
    from expman.experiment import (
        Experiment,
        ExperimentHandle,
        ExperimentResult,
        run_experiment,
        start_experiment,
    )
    from expman.experiment.environment import Environment
    from expman.pipeline import Pipeline
    from expman.results import Results, load_results
    from expman.run.context import RunContext
    from expman.run.records import RunOutcome as RunResult
    from expman.runtime.admission import AdmissionPolicy, Admit, Drop, PlanOrder
    from expman.seeding import seed_everything
    from expman.serializable import YAMLSerializable, register
    from expman.status import RunStatus
    from expman.subscribers.base import Subscriber, subscriber
    from expman.subscribers.callbacks import (
        Callback,
        CheckpointCallback,
        EarlyStopping,
        MetricsTracker,
    )

__version__ = "0.1.0"

#: Each public name and where it lives: (module, attribute).
_PUBLIC: dict[str, tuple[str, str]] = {
    "AdmissionPolicy": ("expman.runtime.admission", "AdmissionPolicy"),
    "Admit": ("expman.runtime.admission", "Admit"),
    "CONTROL": ("expman.bus", "CONTROL"),
    "Callback": ("expman.subscribers.callbacks", "Callback"),
    "CallbackError": ("expman.errors", "CallbackError"),
    "CheckpointCallback": ("expman.subscribers.callbacks", "CheckpointCallback"),
    "CheckpointDue": ("expman.events", "CheckpointDue"),
    "CheckpointSaved": ("expman.events", "CheckpointSaved"),
    "CheckpointStaged": ("expman.events", "CheckpointStaged"),
    "ConfigChanged": ("expman.errors", "ConfigChanged"),
    "ConfigError": ("expman.errors", "ConfigError"),
    "Delivery": ("expman.bus", "Delivery"),
    "Drop": ("expman.runtime.admission", "Drop"),
    "EarlyStopping": ("expman.subscribers.callbacks", "EarlyStopping"),
    "Environment": ("expman.experiment.environment", "Environment"),
    "EpochEnd": ("expman.events", "EpochEnd"),
    "Event": ("expman.events", "Event"),
    "EventBus": ("expman.bus", "EventBus"),
    "ExecutorError": ("expman.errors", "ExecutorError"),
    "Experiment": ("expman.experiment", "Experiment"),
    "ExperimentFinished": ("expman.events", "ExperimentFinished"),
    "ExperimentHandle": ("expman.experiment", "ExperimentHandle"),
    "ExperimentPlan": ("expman.config", "ExperimentPlan"),
    "ExperimentResult": ("expman.experiment", "ExperimentResult"),
    "ExperimentStarted": ("expman.events", "ExperimentStarted"),
    "ExpmanError": ("expman.errors", "ExpmanError"),
    "MetricsTracker": ("expman.subscribers.callbacks", "MetricsTracker"),
    "Pipeline": ("expman.pipeline", "Pipeline"),
    "PipelineError": ("expman.errors", "PipelineError"),
    "PlanOrder": ("expman.runtime.admission", "PlanOrder"),
    "PruneDecision": ("expman.events", "PruneDecision"),
    "Results": ("expman.results", "Results"),
    "ResultsError": ("expman.errors", "ResultsError"),
    "RunContext": ("expman.run.context", "RunContext"),
    "RunEnding": ("expman.events", "RunEnding"),
    "RunFinished": ("expman.events", "RunFinished"),
    "RunResult": ("expman.run.records", "RunOutcome"),
    "RunRetrying": ("expman.events", "RunRetrying"),
    "RunSpec": ("expman.config", "RunSpec"),
    "RunStalled": ("expman.events", "RunStalled"),
    "RunStarted": ("expman.events", "RunStarted"),
    "RunStatus": ("expman.status", "RunStatus"),
    "StopRequested": ("expman.events", "StopRequested"),
    "Subscriber": ("expman.subscribers.base", "Subscriber"),
    "Subscription": ("expman.bus", "Subscription"),
    "TrialFinished": ("expman.events", "TrialFinished"),
    "TrialSampled": ("expman.events", "TrialSampled"),
    "TrialSpec": ("expman.config", "TrialSpec"),
    "TrialStarted": ("expman.events", "TrialStarted"),
    "WorkspaceError": ("expman.errors", "WorkspaceError"),
    "WorkspaceLocked": ("expman.errors", "WorkspaceLocked"),
    "YAMLSerializable": ("expman.serializable", "YAMLSerializable"),
    "insert_value": ("expman.config", "insert_value"),
    "load_plan": ("expman.config", "load_plan"),
    "load_results": ("expman.results", "load_results"),
    "mailbox": ("expman.bus", "mailbox"),
    "multiply": ("expman.config", "multiply"),
    "register": ("expman.serializable", "register"),
    "run_experiment": ("expman.experiment", "run_experiment"),
    "seed_everything": ("expman.seeding", "seed_everything"),
    "start_experiment": ("expman.experiment", "start_experiment"),
    "subscriber": ("expman.subscribers.base", "subscriber"),
}


def __getattr__(name: str) -> _typing.Any:
    try:
        module, attribute = _PUBLIC[name]
    except KeyError:
        # A subpackage used as an attribute (``expman.experiment.prepare``).
        if not name.startswith("_") and _importlib_util.find_spec(f"expman.{name}") is not None:
            return _importlib.import_module(f"expman.{name}")
        raise AttributeError(f"module 'expman' has no attribute {name!r}") from None
    value = getattr(_importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


__all__ = [
    "CONTROL",
    "AdmissionPolicy",
    "Admit",
    "Callback",
    "CallbackError",
    "CheckpointCallback",
    "CheckpointDue",
    "CheckpointSaved",
    "CheckpointStaged",
    "ConfigChanged",
    "ConfigError",
    "Delivery",
    "Drop",
    "EarlyStopping",
    "Environment",
    "EpochEnd",
    "Event",
    "EventBus",
    "ExecutorError",
    "Experiment",
    "ExperimentFinished",
    "ExperimentHandle",
    "ExperimentPlan",
    "ExperimentResult",
    "ExperimentStarted",
    "ExpmanError",
    "MetricsTracker",
    "Pipeline",
    "PipelineError",
    "PlanOrder",
    "PruneDecision",
    "Results",
    "ResultsError",
    "RunContext",
    "RunEnding",
    "RunFinished",
    "RunResult",
    "RunRetrying",
    "RunSpec",
    "RunStalled",
    "RunStarted",
    "RunStatus",
    "StopRequested",
    "Subscriber",
    "Subscription",
    "TrialFinished",
    "TrialSampled",
    "TrialSpec",
    "TrialStarted",
    "WorkspaceError",
    "WorkspaceLocked",
    "YAMLSerializable",
    "__version__",
    "insert_value",
    "load_plan",
    "load_results",
    "mailbox",
    "multiply",
    "register",
    "run_experiment",
    "seed_everything",
    "start_experiment",
    "subscriber",
]
