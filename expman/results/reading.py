"""Reading an experiment back from its workspace folder: the journal, configs and metrics.

Only files are read, never a live process, so this works while another process is
writing (a torn last line is skipped) and on an experiment that crashed.

A run's status is its last ``RunFinished`` status (``completed``, ``stopped``,
``failed``, ``cancelled``).  A run that started but has no ``RunFinished`` after its
last ``RunStarted`` is ``running`` while the experiment is live and ``interrupted``
otherwise; a planned run that never started is ``waiting`` while the experiment is
live and ``not started`` otherwise.  Whether the experiment is live is decided by
:mod:`expman.results.liveness`.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from expman.errors import WorkspaceError
from expman.jsonlines import read_lines
from expman.results.liveness import Owner, lock_owner, owner_alive
from expman.workspace.layout import ExperimentLayout, RunPaths

#: An experiment's states, as ``expman status`` shows them.
ExperimentState = Literal["running", "finished", "interrupted", "not started"]


@dataclass(frozen=True, slots=True)
class TrialView:
    """One trial as the workspace records it."""

    name: str
    id: str
    repeat: int
    settings: Mapping[str, Any] = field(default_factory=dict)
    config_hash: str = ""


@dataclass(frozen=True, slots=True)
class RunView:
    """One run as the workspace records it."""

    trial: str
    repeat: int
    status: str
    path: Path
    attempt: int = 0
    epochs: int = 0
    duration: float | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    reason: str | None = None
    seed: int | None = None
    config_hash: str = ""
    started: float | None = None
    finished: float | None = None

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
        }

    @property
    def log_file(self) -> Path:
        return RunPaths(self.path).log_file


#: One run's epoch metrics: epoch -> metrics (a later line for the same epoch wins).
Curve = dict[int, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ExperimentView:
    """Everything the workspace says about one experiment."""

    name: str
    path: Path
    state: ExperimentState
    status: str | None  # ExperimentFinished's status, when the last session finished
    trials: tuple[TrialView, ...]
    runs: tuple[RunView, ...]
    curves: Mapping[tuple[str, int], Curve]
    owner: Owner | None = None
    started: float | None = None
    finished: float | None = None

    @property
    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(run.status for run in self.runs))


def is_experiment_dir(path: Path) -> bool:
    layout = ExperimentLayout(path)
    return layout.journal_file.is_file() or (layout.configs / "resolved.yaml").is_file()


def read_experiment(path: str | Path) -> ExperimentView:
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
    trials = _read_trials(layout)
    journal = _fold_journal(layout)
    has_lock, holder = lock_owner(layout.lock_file)
    owner = holder or journal.owner
    alive = holder is not None if has_lock else owner_alive(owner, layout.logs)
    live = journal.open_session and alive
    state: ExperimentState
    if journal.sessions == 0:
        state = "not started"
    elif not journal.open_session:
        state = "finished"
    else:
        state = "running" if live else "interrupted"
    curves = _read_curves(layout)

    runs: list[RunView] = []
    seen: set[tuple[str, int]] = set()
    planned = [(t.name, k) for t in trials for k in range(t.repeat)]
    for key in [*planned, *journal.runs]:  # planned order, then runs no longer planned
        if key in seen:
            continue
        seen.add(key)
        entry = journal.runs.get(key)
        stale = entry is not None and entry.status is None and entry.session < journal.sessions
        if live and stale:
            entry = None  # started in an earlier, crashed session; not (yet) again in this one
        runs.append(_run_view(layout, key, entry, curves.get(key), live))
    if not trials:
        trials = _trials_from_runs(runs)
    return ExperimentView(
        name=journal.name or root.name,
        path=root,
        state=state,
        status=journal.status,
        trials=tuple(trials),
        runs=tuple(runs),
        curves=curves,
        owner=owner,
        started=journal.started,
        finished=journal.finished,
    )


def list_experiments(workspace: str | Path) -> list[ExperimentView]:
    """Every experiment folder directly inside ``workspace``, by name."""
    root = Path(workspace).absolute()
    if not root.is_dir():
        raise WorkspaceError(f"{root}: no such folder")
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and is_experiment_dir(p)]
    return [read_experiment(p) for p in folders]


# -- pieces -------------------------------------------------------------------------


def _read_trials(layout: ExperimentLayout) -> list[TrialView]:
    resolved = layout.configs / "resolved.yaml"
    try:
        doc = yaml.safe_load(resolved.read_text()) or {}
    except FileNotFoundError:
        return []
    except yaml.YAMLError as exc:
        raise WorkspaceError(f"{resolved}: not readable YAML ({exc})") from None
    out = []
    for entry in doc.get("trials") or []:
        if not isinstance(entry, Mapping) or "name" not in entry:
            continue
        out.append(
            TrialView(
                name=str(entry["name"]),
                id=str(entry.get("id", "")),
                repeat=int(entry.get("repeat", 1)),
                settings=entry.get("settings") or {},
                config_hash=str(entry.get("config_hash", "")),
            )
        )
    return out


def _trials_from_runs(runs: list[RunView]) -> list[TrialView]:
    repeats: dict[str, int] = {}
    for run in runs:
        repeats[run.trial] = max(repeats.get(run.trial, 0), run.repeat + 1)
    return [TrialView(name=n, id="", repeat=k) for n, k in repeats.items()]


@dataclass(slots=True)
class _RunEntry:
    status: str | None = None
    attempt: int = 0
    seed: int | None = None
    config_hash: str = ""
    started: float | None = None
    finished: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    reason: str | None = None
    duration: float | None = None
    epochs: int = 0
    session: int = 0


@dataclass(slots=True)
class _Journal:
    name: str | None = None
    sessions: int = 0
    open_session: bool = False
    status: str | None = None
    owner: Owner = field(default_factory=lambda: Owner(None, None, "unknown"))
    started: float | None = None
    finished: float | None = None
    runs: dict[tuple[str, int], _RunEntry] = field(default_factory=dict)


def _fold_journal(layout: ExperimentLayout) -> _Journal:
    journal = _Journal()
    for entry in read_lines(layout.journal_file):
        kind = entry.get("type")
        if kind == "ExperimentStarted":
            journal.name = entry.get("experiment") or journal.name
            journal.sessions += 1
            journal.open_session = True
            journal.status = None
            journal.started = entry.get("time")
            journal.finished = None
            pid = entry.get("pid")
            journal.owner = Owner(
                pid=pid if isinstance(pid, int) else None,
                host=entry.get("host") or None,
                source="journal" if isinstance(pid, int) else "unknown",
            )
            continue
        if kind == "ExperimentFinished":
            journal.open_session = False
            journal.status = entry.get("status")
            journal.finished = entry.get("time")
            continue
        trial, repeat = entry.get("trial"), entry.get("repeat")
        if not isinstance(trial, str) or not isinstance(repeat, int):
            continue
        run = journal.runs.setdefault((trial, repeat), _RunEntry())
        if kind == "RunStarted":
            run.status = None
            run.attempt = entry.get("attempt", run.attempt + 1)
            run.seed = entry.get("seed")
            run.config_hash = entry.get("config_hash", "")
            run.started = entry.get("time")
            run.session = journal.sessions
            run.finished = run.duration = None
            run.error = run.reason = None
        elif kind == "RunFinished":
            run.status = entry.get("status")
            run.attempt = entry.get("attempt", run.attempt)
            run.metrics = entry.get("metrics") or {}
            run.error = entry.get("error")
            run.reason = entry.get("reason")
            run.duration = entry.get("duration")
            run.epochs = entry.get("epochs", 0)
            run.finished = entry.get("time")
    return journal


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


def _run_view(
    layout: ExperimentLayout,
    key: tuple[str, int],
    entry: _RunEntry | None,
    curve: Curve | None,
    live: bool,
) -> RunView:
    trial, repeat = key
    path = layout.run(trial, repeat).root
    last_epoch_metrics = curve[max(curve)] if curve else {}
    epochs_seen = max(curve) + 1 if curve else 0
    if entry is None:
        return RunView(
            trial=trial, repeat=repeat, status="waiting" if live else "not started", path=path
        )
    if entry.status is None:
        started = entry.started
        return RunView(
            trial=trial,
            repeat=repeat,
            status="running" if live else "interrupted",
            path=path,
            attempt=entry.attempt,
            epochs=epochs_seen,
            duration=(time.time() - started) if (live and started) else None,
            metrics=last_epoch_metrics,
            seed=entry.seed,
            config_hash=entry.config_hash,
            started=started,
        )
    metrics = dict(last_epoch_metrics)
    metrics.update(entry.metrics)
    return RunView(
        trial=trial,
        repeat=repeat,
        status=entry.status,
        path=path,
        attempt=entry.attempt,
        epochs=entry.epochs or epochs_seen,
        duration=entry.duration,
        metrics=metrics,
        error=entry.error,
        reason=entry.reason,
        seed=entry.seed,
        config_hash=entry.config_hash,
        started=entry.started,
        finished=entry.finished,
    )
