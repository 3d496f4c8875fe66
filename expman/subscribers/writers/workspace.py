"""The workspace writer: folders and config snapshots, created as events happen.

It is a control subscriber so that a run's folders exist before its pipeline is
called.  All file work happens in a worker thread; every file is written atomically
(temporary file, then ``os.replace``) so a crash never leaves a half-written config.
Nothing is made through a link (:mod:`expman.workspace.safepaths`): an existing
folder must be a real one and a snapshot's name must not be a link, else the run
never starts and the error names the link.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from expman.bus import CONTROL
from expman.config import ExperimentPlan, RunSpec, TrialSpec, sampled_trial
from expman.events import Event, RunFinished, RunStarted, TrialSampled
from expman.workspace.atomic import atomic_write, make_folders
from expman.workspace.layout import ExperimentLayout
from expman.workspace.safepaths import make_dirs
from expman.workspace.snapshots import dump_yaml

#: One run's folders to make: its trial, repeat, and what its run.yaml records.
_RunJob = tuple[TrialSpec, int, int, int, str]  # trial, repeat, seed, attempt, config_hash


class WorkspaceWriter:
    """Creates the experiment, trial and run folders and their config snapshots.

    Run folders are made ahead of need, off the runs' critical path: while the
    experiment runs (:meth:`prepare_ahead`), a background task works through the
    runs in dispatch order, a batch of runs per worker-thread hop, staying ``ahead``
    runs past the newest started one.  The RunStarted handler (a control subscriber, so a
    pipeline never starts without its folders) then only waits for its run's batch,
    which is normally done already.  Folders made for runs that never started (a
    stop came first) are removed again when the experiment ends, unless the run was
    settled without starting (a RunFinished, e.g. a policy dropped it): its run.log
    records that, so its folder stays.

    A trial of an adaptive search whose values are not sampled yet (a placeholder)
    is never prepared ahead: its folders and snapshots are made when its run starts,
    with the sampled settings, which the writer learns from ``TrialSampled``.
    """

    #: The events to subscribe it to (it is a control subscriber: only these).  An
    #: experiment calls :meth:`prepare_experiment` itself before its journal opens.
    events = (RunStarted, RunFinished, TrialSampled)
    delivery = CONTROL
    name = "writer.workspace"
    #: Runs prepared per worker-thread hop.
    BATCH = 8

    def __init__(
        self,
        plan: ExperimentPlan,
        layout: ExperimentLayout,
        on_error: Callable[[OSError], None] | None = None,
        *,
        todo: Sequence[RunSpec] = (),
        attempts: Mapping[tuple[str, int], int] | None = None,
        ahead: int = BATCH,
    ) -> None:
        self.plan = plan
        self.layout = layout
        self._trials = {t.name: t for t in plan.trials}
        self._on_error = on_error
        # Each trial's settings rendered once: trial.yaml and every run.yaml end with
        # them, and YAML representation is the costly part of writing a snapshot.
        self._settings_yaml: dict[str, bytes] = {}
        # A placeholder's settings are not known yet: it is made when it starts.
        self._order = [spec for spec in todo if not spec.trial.is_placeholder]
        self._position = {spec.key: i for i, spec in enumerate(self._order)}
        self._attempts = attempts or {}
        self._ahead = max(1, ahead)
        # Invariants: the runs _order[:_ready] have their folders; the preparer may go
        # as far as _wanted; _written maps a prepared run to the attempt its run.yaml
        # records (absent: not written, e.g. a resumed run's existing folder).
        self._ready = 0
        self._wanted = min(self._ahead, len(self._order))
        self._written: dict[tuple[str, int], int] = {}
        self._trials_made: set[str] = set()
        self._created_runs: set[tuple[str, int]] = set()
        self._created_trials: set[str] = set()
        # Runs whose folders are in use: started, or settled without starting.
        self._used: set[tuple[str, int]] = set()
        self._failure: OSError | None = None
        self._closed = False
        self._changed: anyio.Event | None = None
        self._ended: anyio.Event | None = None  # set once prepare_ahead has returned

    # -- the experiment's folder -------------------------------------------------------

    def prepare_experiment(self) -> None:
        layout = self.layout
        root = layout.root
        for folder in (layout.configs, layout.logs, layout.artifacts, layout.trials / "logs"):
            make_dirs(folder, root)
        for name, doc in self.plan.documents.items():
            atomic_write(layout.configs / name, doc.path.read_bytes(), within=root)
        atomic_write(layout.configs / "resolved.yaml", dump_yaml(self.plan.describe()), within=root)

    # -- runs' folders, ahead of need --------------------------------------------------

    async def prepare_ahead(self) -> None:
        """Make run folders ahead of the dispatcher until :meth:`aclose`.

        Start it in a task group before the scheduler runs; :meth:`aclose` stops it.
        """
        # One task: three at once measured slower (0.3 ms more per run on tmpfs, half
        # again the kernel time on ext4: threads contend for the GIL and the file
        # system's locks) and did not start the first wave sooner.
        self._ended = anyio.Event()
        try:
            await self._prepare_batches()
        finally:
            self._ended.set()

    async def aclose(self) -> None:
        """Stop preparing; once in-flight batches are done, remove unused folders.

        Unused: made ahead for runs that never started (a stop came first).
        """
        self._closed = True
        self._signal()
        with anyio.move_on_after(10, shield=True):
            if self._ended is not None:
                await self._ended.wait()
            unused = [key for key in self._created_runs if key not in self._used]
            if unused:
                await anyio.to_thread.run_sync(self._remove_unused, unused)

    async def _prepare_batches(self) -> None:
        order = self._order
        while self._ready < len(order) and not self._closed and self._failure is None:
            start = self._ready
            if start >= self._wanted:
                await self._wait()
                continue
            # Small batches first (1, 1, 2, 4, ...): the first runs start sooner.
            end = min(self._wanted, start + min(self.BATCH, max(1, start)))
            jobs = [
                (s.trial, s.repeat, s.seed, self._attempts.get(s.key, 0) + 1, s.config_hash)
                for s in order[start:end]
            ]
            # Shielded: what a batch made is always recorded (for aclose's clean-up).
            with anyio.CancelScope(shield=True):
                try:
                    made = await anyio.to_thread.run_sync(self._make_runs, jobs, True)
                except OSError as exc:
                    self._fail(exc)
                    return
                self._record(made)
                self._ready = end
                self._signal()

    async def __call__(self, event: Event) -> None:
        if isinstance(event, TrialSampled):
            self._sampled(event)
            return
        if event.trial is None or event.repeat is None:
            return
        key = (event.trial, event.repeat)
        # Before aclose can remove it: the event log writes this run's RunFinished
        # into the folder whether or not the run started.
        self._used.add(key)
        if not isinstance(event, RunStarted):
            return
        try:
            position = self._position.get(key)
            if position is not None and self._ended is not None:
                if self._wanted <= position + self._ahead:
                    self._wanted = min(position + 1 + self._ahead, len(self._order))
                    self._signal()
                try:
                    while self._ready <= position:
                        if self._failure is not None:
                            raise self._failure
                        await self._wait()
                except anyio.get_cancelled_exc_class():
                    # The journal has this RunStarted already: its folder and run.yaml
                    # must exist even if the experiment is being cancelled meanwhile.
                    await self._write_run(event, *key)
                    raise
                if self._written.get(key) == event.attempt:
                    return
            # Not prepared ahead, or run.yaml must record another attempt (a retry).
            await self._write_run(event, *key)
        except OSError as exc:
            self._fail(exc)
            raise

    def _sampled(self, event: TrialSampled) -> None:
        """A search trial's values: its snapshots will hold the sampled settings."""
        assert event.trial is not None
        trial = self._trials.get(event.trial)
        if trial is not None and trial.is_placeholder:
            self._trials[event.trial] = sampled_trial(self.plan, event.trial, event.values)
            self._settings_yaml.pop(event.trial, None)

    async def _write_run(self, event: RunStarted, trial: str, repeat: int) -> None:
        """Make the run's folder and write its run.yaml now (shielded: it is journaled)."""
        job = (self._trials[trial], repeat, event.seed, event.attempt, event.config_hash)
        with anyio.CancelScope(shield=True):
            self._record(await anyio.to_thread.run_sync(self._make_runs, [job], False))

    def _fail(self, exc: OSError) -> None:
        if self._failure is None:
            self._failure = exc
            if self._on_error is not None:
                self._on_error(exc)
        self._signal()

    def _record(self, made: list[tuple[str, int, bool, bool, int | None]]) -> None:
        for trial, repeat, trial_created, run_created, attempt in made:
            self._trials_made.add(trial)
            if trial_created:
                self._created_trials.add(trial)
            if run_created:
                self._created_runs.add((trial, repeat))
            if attempt is not None:
                self._written[(trial, repeat)] = attempt

    async def _wait(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def _signal(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    # -- file work (worker threads) ----------------------------------------------------

    def _make_runs(
        self, jobs: list[_RunJob], ahead: bool
    ) -> list[tuple[str, int, bool, bool, int | None]]:
        """Make each job's trial (once) and run folders; returns what was made.

        Ahead of a run's start, a resumed run's folder keeps its run.yaml (and its
        files): RunStarted rewrites run.yaml when the run really starts.
        """
        made = []
        trials_made = set()  # this batch's (_trials_made is updated after it)
        for trial, repeat, seed, attempt, config_hash in jobs:
            trial_created = False
            if trial.name not in self._trials_made and trial.name not in trials_made:
                trial_created = self._make_trial(trial)
                trials_made.add(trial.name)
            paths = self.layout.run(trial.name, repeat)
            run_created = make_folders(
                paths.root, "configs", "logs", "artifacts", within=self.layout.root
            )
            written: int | None = None
            # A first attempt has no earlier run.yaml to keep (its folder may exist:
            # the log writer makes a run's logs folder if its first line comes first).
            if run_created or attempt == 1 or not ahead:
                head = {
                    "experiment": self.plan.name,
                    "trial": trial.name,
                    "trial_id": trial.yaml_id,
                    "repeat": repeat,
                    "seed": seed,
                    "attempt": attempt,
                    "config_hash": config_hash,
                }
                snapshot = self._with_settings(trial, head)
                atomic_write(paths.config_file, snapshot, make_parent=False)
                written = attempt
            made.append((trial.name, repeat, trial_created, run_created, written))
        return made

    def _make_trial(self, trial: TrialSpec) -> bool:
        created = make_folders(
            self.layout.trial_dir(trial.name),
            "configs",
            "logs",
            "artifacts",
            within=self.layout.root,
        )
        head = {
            "name": trial.name,
            "id": trial.yaml_id,
            "desc": trial.desc,
            "repeat": trial.repeat,
            "config_hash": trial.config_hash,
            "resources": dict(trial.resources),
        }
        atomic_write(
            self.layout.trial_config_file(trial.name),
            self._with_settings(trial, head),
            make_parent=False,
        )
        return created

    def _with_settings(self, trial: TrialSpec, head: Mapping[str, Any]) -> bytes:
        """``dump_yaml({**head, "settings": trial.settings})``, settings rendered once."""
        block = self._settings_yaml.get(trial.name)
        if block is None:
            block = self._settings_yaml[trial.name] = dump_yaml({"settings": trial.settings})
        return dump_yaml(head) + block

    def _remove_unused(self, keys: list[tuple[str, int]]) -> None:
        """Remove the folders made ahead for runs (and trials) that never started."""
        trials = set()
        for trial, repeat in keys:
            paths = self.layout.run(trial, repeat)
            _remove_tree(paths.root, paths.config_file)
            trials.add(trial)
        used_trials = {trial for trial, _ in self._used}
        for trial in (trials & self._created_trials) - used_trials:
            _remove_tree(self.layout.trial_dir(trial), self.layout.trial_config_file(trial))


def _remove_tree(root: Path, config_file: Path) -> None:
    """Remove a folder made ahead: its empty subfolders, its snapshot, itself.

    Anything written there since (a log line, a checkpoint) stops it before the
    snapshot goes: rmdir refuses a folder that is not empty.
    """
    try:
        for name in ("logs", "artifacts"):
            (root / name).rmdir()
        config_file.unlink()
        config_file.parent.rmdir()
        root.rmdir()
    except OSError:
        pass
