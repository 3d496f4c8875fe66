"""Reading an experiment back from its workspace folder: the journal, configs and metrics.

Only files are read, never a live process, so this works while another process is
writing (a torn last line is skipped) and on an experiment that crashed.  The journal
is read through :func:`expman.workspace.journal.read_journal`, the same fold resume
decides from, so ``expman status`` and a resume never disagree about a run.

An :class:`ExperimentRecord` holds a :class:`TrialRecord` per trial (from
``configs/resolved.yaml``; an adaptive search's trial with the values the journal's
``TrialSampled`` records put into its settings, as its runs had them) and a
:class:`RunRecord` per run (the journal, with the epoch curves of ``logs/metrics.log``).

A run's status is its last ``RunFinished`` status (a
:class:`~expman.status.RunStatus`: ``completed``, ``stopped``, ``failed``,
``cancelled``, ``pruned``).  A run that started but has no ``RunFinished`` after its
last ``RunStarted`` is ``running`` while the experiment is live and ``interrupted``
otherwise; a planned run that never started is ``waiting`` while the experiment is
live and ``not started`` otherwise.  Whether the experiment is live is decided by
:mod:`expman.results.liveness`.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from expman.errors import WorkspaceError
from expman.formatting import pruned_reason
from expman.jsonlines import open_plain_file, read_lines
from expman.results.liveness import Owner, lock_owner, owner_alive
from expman.status import RunStatus, run_status
from expman.workspace.journal import JournaledRun, JournalState, read_journal
from expman.workspace.layout import ExperimentLayout, RunPaths

#: An experiment's states, as ``expman status`` shows them.
ExperimentState = Literal["running", "finished", "interrupted", "not started"]


@dataclass(frozen=True, slots=True)
class TrialRecord:
    """One trial as the workspace records it (``configs/resolved.yaml``, the journal).

    ``sampled``: the values an adaptive search chose for it (already in ``settings``);
    None for any other trial, and for a search trial not sampled yet.
    """

    name: str
    id: str
    repeat: int
    settings: Mapping[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    sampled: Mapping[str, Any] | None = None
    #: False for a trial the journal has runs of but the plan no longer holds
    #: (a value removed from a sweep): its results stay visible, marked.
    in_plan: bool = True


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as the workspace records it: its latest attempt, its history, its status now.

    ``status`` is a RunStatus value once the run finished, else ``running``,
    ``interrupted``, ``waiting`` or ``not started`` (see the module's docstring).
    Over the run's whole history (every attempt, every session): ``attempts``,
    ``epochs_trained`` (epochs trained again after a crash count again) and
    ``duration`` (the time all attempts took).  ``epochs`` is how far it got.
    """

    trial: str
    repeat: int
    status: str
    path: Path
    attempt: int = 0
    epochs: int = 0
    duration: float | None = None
    attempts: int = 0
    epochs_trained: int = 0
    metrics: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    reason: str | None = None
    seed: int | None = None
    config_hash: str = ""
    started: float | None = None
    finished: float | None = None
    checkpoint: str | None = None  # the newest checkpoint the journal recorded

    @property
    def label(self) -> str:
        return f"{self.trial}/run_{self.repeat}"

    def identity(self) -> dict[str, Any]:
        """The columns every table of runs starts with (JSON, CSV, data frames)."""
        return {
            "trial": self.trial,
            "repeat": self.repeat,
            "status": self.status,
            "seed": self.seed,
            "epochs": self.epochs,
            "duration": self.duration,
            "attempts": self.attempts,
            "epochs_trained": self.epochs_trained,
        }

    @property
    def log_file(self) -> Path:
        return RunPaths(self.path).log_file


#: One run's epoch metrics: epoch -> metrics (a later line for the same epoch wins).
Curve = dict[int, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ExperimentRecord:
    """Everything the workspace says about one experiment."""

    name: str
    path: Path
    state: ExperimentState
    status: str | None  # ExperimentFinished's status, when the last session finished
    trials: tuple[TrialRecord, ...]
    runs: tuple[RunRecord, ...]
    curves: Mapping[tuple[str, int], Curve]
    owner: Owner | None = None
    started: float | None = None
    finished: float | None = None
    #: Journal records that were skipped (one line each, naming file and line).
    problems: tuple[str, ...] = ()
    #: An adaptive search's (metric, mode): what results rank by unless told otherwise.
    objective: tuple[str, str] | None = None
    #: The pruners' decisions (``PruneDecision`` records of the journal), in file order.
    decisions: tuple[Mapping[str, Any], ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(run.status for run in self.runs))

    def prune_of(self, trial: str) -> Mapping[str, Any] | None:
        """The journal's last decision to prune ``trial`` (or one of its runs), if any."""
        for decision in reversed(self.decisions):
            if decision.get("trial") == trial and decision.get("action") == "prune":
                return dict(decision)
        return None

    @property
    def pruned_trials(self) -> dict[str, str]:
        """The trials a pruner stopped (one of their runs is ``pruned``) -> its reason."""
        out: dict[str, str] = {}
        for run in self.runs:
            if run_status(run.status) is RunStatus.PRUNED and not out.get(run.trial):
                out[run.trial] = pruned_reason(run.reason or "")
        return out


def is_experiment_dir(path: Path) -> bool:
    layout = ExperimentLayout(path)
    return layout.journal_file.is_file() or (layout.configs / "resolved.yaml").is_file()


def read_experiment(path: str | Path) -> ExperimentRecord:
    """Read the experiment folder at ``path`` (WorkspaceError when it is not one)."""
    root = Path(path).absolute()
    if not root.exists():
        raise WorkspaceError(f"{root}: no such folder")
    if not root.is_dir():
        raise WorkspaceError(f"{root}: not a folder")
    if not is_experiment_dir(root):
        raise WorkspaceError(
            f"{root}: not an experiment folder (expected logs/events.jsonl or"
            " configs/resolved.yaml inside)"
        )
    layout = ExperimentLayout(root)
    journal = read_journal(layout.journal_file)
    written, objective = _read_trials(layout)
    trials = _with_sampled(written, journal.sampled)
    has_lock, holder = lock_owner(layout.lock_file)
    owner = holder or _journal_owner(journal)
    alive = holder is not None if has_lock else owner_alive(owner, layout.logs)
    live = journal.session_open and alive
    state: ExperimentState
    if journal.experiments == 0:
        state = "not started"
    elif not journal.session_open:
        state = "finished"
    else:
        state = "running" if live else "interrupted"
    curves = _read_curves(layout)

    runs: list[RunRecord] = []
    seen: set[tuple[str, int]] = set()
    planned = [(t.name, k) for t in trials for k in range(t.repeat)]
    for key in [*planned, *journal.runs]:  # planned order, then runs no longer planned
        if key in seen:
            continue
        seen.add(key)
        entry = journal.runs.get(key)
        stale = entry is not None and entry.status is None and entry.session < journal.experiments
        if live and stale:
            entry = None  # started in an earlier, crashed session; not (yet) again in this one
        runs.append(_run_record(layout, key, entry, curves.get(key), live))
    if not trials:
        trials = _trials_from_runs(runs)
    else:
        planned_names = {t.name for t in trials}
        gone = [r for r in runs if r.trial not in planned_names]
        gone_trials = [
            replace(t, in_plan=False, settings=_recorded_settings(layout, t.name))
            for t in _trials_from_runs(gone)
        ]
        trials.extend(_with_sampled(gone_trials, journal.sampled))
    return ExperimentRecord(
        name=journal.name or root.name,
        path=root,
        state=state,
        status=journal.status,
        trials=tuple(trials),
        runs=tuple(runs),
        curves=curves,
        owner=owner,
        started=journal.started_at,
        finished=journal.finished_at,
        problems=tuple(journal.problems),
        objective=objective,
        decisions=tuple(journal.decisions),
    )


def list_experiments(workspace: str | Path) -> list[ExperimentRecord]:
    """Every experiment folder directly inside ``workspace``, by name."""
    root = Path(workspace).absolute()
    if not root.is_dir():
        raise WorkspaceError(f"{root}: no such folder")
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and is_experiment_dir(p)]
    return [read_experiment(p) for p in folders]


# -- pieces -------------------------------------------------------------------------


#: libyaml's loader when PyYAML has it (resolved.yaml of a 500-trial sweep: 0.8 s -> 0.1 s).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_trials(layout: ExperimentLayout) -> tuple[list[TrialRecord], tuple[str, str] | None]:
    """The trials resolved.yaml records, and its search's (metric, mode) if it has one."""
    resolved = layout.configs / "resolved.yaml"
    try:
        doc = yaml.load(resolved.read_text(), Loader=_LOADER) or {}
    except FileNotFoundError:
        return [], None
    except yaml.YAMLError as exc:
        raise WorkspaceError(f"{resolved}: not readable YAML ({exc})") from None
    if not isinstance(doc, Mapping):
        return [], None
    search = doc.get("search")
    objective = None
    if isinstance(search, Mapping):
        metric, mode = search.get("metric"), search.get("mode")
        if isinstance(metric, str) and mode in ("min", "max"):
            objective = (metric, str(mode))
    out = []
    for entry in doc.get("trials") or []:
        if not isinstance(entry, Mapping) or "name" not in entry:
            continue
        out.append(
            TrialRecord(
                name=str(entry["name"]),
                id=str(entry.get("id", "")),
                repeat=int(entry.get("repeat", 1)),
                settings=entry.get("settings") or {},
                config_hash=str(entry.get("config_hash", "")),
            )
        )
    return out, objective


def _with_sampled(
    trials: list[TrialRecord], sampled: Mapping[str, Mapping[str, Any]]
) -> list[TrialRecord]:
    """Search trials with the values the journal says were sampled put into their settings."""
    if not sampled:
        return trials
    out = []
    for trial in trials:
        values = sampled.get(trial.name)
        if values is not None:
            settings: Any = trial.settings
            for key, value in values.items():
                settings = _put(settings, key.split("."), value)
            trial = replace(trial, settings=settings, sampled=dict(values))
        out.append(trial)
    return out


def _put(node: Any, parts: list[str], value: Any) -> Any:
    """A copy of ``node`` with ``value`` at the dotted path ``parts`` (mappings made as needed)."""
    if not parts:
        return value
    copy = dict(node) if isinstance(node, Mapping) else {}
    copy[parts[0]] = _put(copy.get(parts[0]), parts[1:], value)
    return copy


def _recorded_settings(layout: ExperimentLayout, trial: str) -> Mapping[str, Any]:
    """The settings a trial's own trial.yaml recorded (a trial no longer in the plan)."""
    try:
        f = open_plain_file(layout.trial_config_file(trial))
    except (OSError, WorkspaceError):  # unreadable, or not a plain file: nothing recorded
        return {}
    if f is None:
        return {}
    with f:
        try:
            doc = yaml.load(f.read(), Loader=_LOADER)
        except (OSError, yaml.YAMLError):
            return {}
    settings = doc.get("settings") if isinstance(doc, Mapping) else None
    return settings if isinstance(settings, Mapping) else {}


def _trials_from_runs(runs: list[RunRecord]) -> list[TrialRecord]:
    repeats: dict[str, int] = {}
    for run in runs:
        repeats[run.trial] = max(repeats.get(run.trial, 0), run.repeat + 1)
    return [TrialRecord(name=n, id="", repeat=k) for n, k in repeats.items()]


def _journal_owner(journal: JournalState) -> Owner:
    """The owner the last ``ExperimentStarted`` names (rule 2 of :mod:`.liveness`)."""
    source = "journal" if journal.pid is not None else "unknown"
    return Owner(pid=journal.pid, host=journal.host, source=source)


def _read_curves(layout: ExperimentLayout) -> dict[tuple[str, int], Curve]:
    curves: dict[tuple[str, int], Curve] = {}
    lines = read_lines(layout.metrics_file)
    if not layout.metrics_file.exists():
        # Fall back to each run's own metrics.log.
        lines = (
            entry
            for path in sorted(layout.trials.glob("*/run_*/logs/metrics.log"))
            for entry in read_lines(path)
        )
    for entry in lines:
        trial, repeat, epoch = entry.get("trial"), entry.get("repeat"), entry.get("epoch")
        metrics = entry.get("metrics")
        if not (isinstance(trial, str) and isinstance(repeat, int) and isinstance(epoch, int)):
            continue
        if isinstance(metrics, Mapping):
            curves.setdefault((trial, repeat), {})[epoch] = dict(metrics)
    return curves


def _run_record(
    layout: ExperimentLayout,
    key: tuple[str, int],
    entry: JournaledRun | None,
    curve: Curve | None,
    live: bool,
) -> RunRecord:
    trial, repeat = key
    path = layout.run(trial, repeat).root
    last_epoch_metrics = curve[max(curve)] if curve else {}
    epochs_seen = max(curve) + 1 if curve else 0
    if entry is None:
        return RunRecord(
            trial=trial, repeat=repeat, status="waiting" if live else "not started", path=path
        )
    if entry.status is None:
        started = entry.started_at
        return RunRecord(
            trial=trial,
            repeat=repeat,
            status="running" if live else "interrupted",
            path=path,
            attempt=entry.attempt,
            epochs=epochs_seen,
            duration=(
                entry.closed_duration + time.time() - started
                if (live and started)
                else entry.total_duration or None
            ),
            attempts=entry.attempts,
            epochs_trained=entry.epochs_trained,
            metrics=last_epoch_metrics,
            seed=entry.seed,
            config_hash=entry.config_hash,
            started=started,
            checkpoint=entry.checkpoint,
        )
    metrics = dict(last_epoch_metrics)
    metrics.update(entry.metrics)
    return RunRecord(
        trial=trial,
        repeat=repeat,
        status=entry.status,
        path=path,
        attempt=entry.attempt,
        epochs=entry.epochs or epochs_seen,
        duration=entry.total_duration,
        attempts=entry.attempts,
        epochs_trained=entry.epochs_trained or entry.epochs or epochs_seen,
        metrics=metrics,
        error=entry.error,
        reason=entry.reason,
        seed=entry.seed,
        config_hash=entry.config_hash,
        started=entry.started_at,
        finished=entry.finished_at,
        checkpoint=entry.checkpoint,
    )
