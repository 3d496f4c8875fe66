"""expman: run machine-learning experiments from YAML on an async, event-driven runtime."""

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
    EpochEnd,
    Event,
    ExperimentFinished,
    ExperimentStarted,
    RunEnding,
    RunFinished,
    RunRetrying,
    RunStalled,
    RunStarted,
    StopRequested,
    TrialFinished,
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
from expman.subscribers.callbacks import Callback, CheckpointCallback, EarlyStopping, MetricsTracker

__version__ = "0.1.0"

__all__ = [
    "CONTROL",
    "AdmissionPolicy",
    "Admit",
    "Callback",
    "CallbackError",
    "CheckpointCallback",
    "CheckpointDue",
    "CheckpointSaved",
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
