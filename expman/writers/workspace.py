"""The workspace writer: folders and config snapshots, created as events happen.

It is a control subscriber so that a run's folders exist before its pipeline is
called.  All file work happens in a worker thread; every file is written atomically
(temporary file, then ``os.replace``) so a crash never leaves a half-written config.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import yaml

from expman.config import ExperimentPlan, TrialSpec
from expman.environment import ExperimentLayout
from expman.events import Event, RunStarted, TrialStarted


def atomic_write(
    path: Path, data: bytes, *, durable: bool = False, make_parent: bool = True
) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half.

    ``make_parent=False`` skips creating the folder (the caller just made it).
    """
    if make_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def make_folders(root: Path, *subfolders: str) -> None:
    """Create ``root`` and its subfolders (existing ones are fine).

    Each run creates a small tree on a metadata-bound disk, so this makes one
    ``mkdir`` per folder, where ``makedirs`` would retry and stat its way down.
    """
    try:
        os.mkdir(root)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(root, exist_ok=True)
    for name in subfolders:
        with contextlib.suppress(FileExistsError):
            os.mkdir(root / name)


#: libyaml's emitter when PyYAML was built with it: the same YAML, several times faster.
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump_yaml(data: Any) -> bytes:
    text: str = yaml.dump(_plain(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    return text.encode()


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class WorkspaceWriter:
    """Creates the experiment, trial and run folders and their config snapshots."""

    #: The events to subscribe it to (it is a control subscriber: only these).  An
    #: experiment calls :meth:`prepare_experiment` itself before its journal opens, so
    #: ExperimentStarted would only write the same files a second time.
    EVENTS = (TrialStarted, RunStarted)

    def __init__(
        self,
        plan: ExperimentPlan,
        layout: ExperimentLayout,
        on_error: Callable[[OSError], None] | None = None,
    ) -> None:
        self.plan = plan
        self.layout = layout
        self._trials = {t.name: t for t in plan.trials}
        self._on_error = on_error
        # Trials started whose folders come with their first run's (see __call__).
        self._unprepared: dict[str, TrialStarted] = {}
        # Each trial's settings rendered once: trial.yaml and every run.yaml end with
        # them, and YAML representation is the costly part of writing a snapshot.
        self._settings_yaml: dict[str, bytes] = {}

    def _with_settings(self, trial: TrialSpec, head: Mapping[str, Any]) -> bytes:
        """``dump_yaml({**head, "settings": trial.settings})``, settings rendered once."""
        block = self._settings_yaml.get(trial.name)
        if block is None:
            block = self._settings_yaml[trial.name] = dump_yaml({"settings": trial.settings})
        return dump_yaml(head) + block

    async def __call__(self, event: Event) -> None:
        try:
            if isinstance(event, RunStarted):
                # One worker-thread hop per run: a trial's folders are made with its first
                # run's (a hop costs more than the mkdirs, under a loaded event loop).
                trial = self._unprepared.pop(event.trial, None) if event.trial else None
                await anyio.to_thread.run_sync(self._prepare_run, event, trial)
            elif isinstance(event, TrialStarted):
                self._unprepared[event.trial or ""] = event
        except OSError as exc:
            if self._on_error is not None:
                self._on_error(exc)
            raise

    def prepare_experiment(self) -> None:
        layout = self.layout
        for folder in (layout.configs, layout.logs, layout.artifacts, layout.trials / "logs"):
            folder.mkdir(parents=True, exist_ok=True)
        for name, doc in self.plan.documents.items():
            atomic_write(layout.configs / name, doc.path.read_bytes())
        atomic_write(layout.configs / "resolved.yaml", dump_yaml(self.plan.describe()))

    def _prepare_trial(self, event: TrialStarted) -> None:
        assert event.trial is not None
        trial = self._trials[event.trial]
        make_folders(self.layout.trial_dir(trial.name), "configs", "logs", "artifacts")
        atomic_write(
            self.layout.trial_config_file(trial.name),
            self._with_settings(
                trial,
                {
                    "name": trial.name,
                    "id": trial.id,
                    "desc": trial.desc,
                    "repeat": trial.repeat,
                    "config_hash": trial.config_hash,
                    "resources": dict(trial.resources),
                },
            ),
            make_parent=False,
        )

    def _prepare_run(self, event: RunStarted, trial_started: TrialStarted | None = None) -> None:
        if trial_started is not None:
            self._prepare_trial(trial_started)
        assert event.trial is not None
        assert event.repeat is not None
        trial = self._trials[event.trial]
        paths = self.layout.run(trial.name, event.repeat)
        make_folders(paths.root, "configs", "logs", "artifacts")
        atomic_write(
            paths.config_file,
            self._with_settings(
                trial,
                {
                    "experiment": self.plan.name,
                    "trial": trial.name,
                    "trial_id": trial.id,
                    "repeat": event.repeat,
                    "seed": event.seed,
                    "attempt": event.attempt,
                    "config_hash": event.config_hash,
                },
            ),
            make_parent=False,
        )
