"""Resume planning: what the journal says is done, what runs again, and from where.

* A run whose last record is ``completed`` or ``stopped`` is skipped; its recorded
  result is reported as before.
* ``failed``, ``cancelled`` and unfinished runs run again; one that saved a
  checkpoint restarts from its newest recorded checkpoint whose file exists, with
  the older ones as fallbacks should it not load (:class:`ResumePoint.fallbacks`).
  A checkpoint whose rename a crash cut off (its ``CheckpointStaged`` is in the
  journal, its temporary file complete beside it) is renamed into place first:
  :func:`finish_staged`.
* A trial whose resolved config differs from the recorded one is refused unless the
  change is accepted explicitly: a resumed experiment never silently mixes configs.
* So is a changed ``search:`` block once trials were sampled (its sampler, seed,
  metric, mode, lag or space, compared with ``configs/resolved.yaml``): the trials
  sampled so far came from the recorded one.  Only ``trials`` may grow or shrink.
  Trials the journal says were sampled come into the plan with their recorded
  values first (:func:`expman.runtime.search.materialise`), so their hashes compare.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from expman.config import ExperimentPlan, RunSpec
from expman.errors import ConfigChanged
from expman.jsonlines import dumps, loads
from expman.run.records import ResumePlan, ResumePoint, RunOutcome
from expman.status import run_status
from expman.workspace.atomic import replace_into_place
from expman.workspace.journal import JournaledCheckpoint, JournaledRun, JournalState
from expman.workspace.safepaths import first_link, open_file


def finish_staged(journal: JournalState) -> None:
    """Complete the renames a crash cut off: the journal names their staged files.

    Call it under the experiment's lock, before anything removes temporary files.
    """
    root = journal.root
    if root is None:
        return
    folders = _Listing()
    for run in journal.runs.values():
        for checkpoint in run.checkpoints.values():
            staged = checkpoint.staged_at
            if staged is None or not folders.holds(staged):
                continue  # one listing per folder, not a stat per record
            staged_path, path = Path(staged), checkpoint.path
            if first_link(staged_path, root) is None and first_link(path, root) is None:
                if staged_path.exists():
                    replace_into_place(staged_path, path)


def resume_point(record: JournaledRun) -> ResumePoint:
    """Where ``record``'s run continues: its newest checkpoint on disk, older ones behind it."""
    folders = _Listing()
    found = [c for c in reversed(record.checkpoints.values()) if folders.holds(c.where)]
    points = [_point(c, record.attempts) for c in found]
    if not points:
        return ResumePoint(checkpoint=None, epoch=0, attempts=record.attempts)
    first, *rest = points
    return ResumePoint(
        checkpoint=first.checkpoint,
        epoch=first.epoch,
        state=first.state,
        attempts=first.attempts,
        metrics=first.metrics,
        fallbacks=tuple(rest),
    )


class _Listing:
    """Whether a path names something on disk that is not a link, one listing per folder.

    A run checkpointed every epoch has a journal record per epoch and a file or two
    left on disk (retention): listing its folder once beats a stat per record.
    """

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str]] = {}

    def holds(self, where: str) -> bool:
        folder, name = os.path.split(where)
        names = self._names.get(folder)
        if names is None:
            try:
                with os.scandir(folder) as entries:
                    names = frozenset(e.name for e in entries if not e.is_symlink())
            except OSError:  # no such folder, or not a folder: nothing of it is there
                names = frozenset()
            self._names[folder] = names
        return name in names


def _point(checkpoint: JournaledCheckpoint, attempts: int) -> ResumePoint:
    return ResumePoint(
        checkpoint=checkpoint.path,
        epoch=checkpoint.epoch + 1,
        state=checkpoint.state,
        attempts=attempts,
        metrics=checkpoint.metrics,
    )


def plan_resume(
    plan: ExperimentPlan, journal: JournalState, *, accept_changes: bool = False
) -> ResumePlan:
    """Split ``plan`` into what to run and what the journal says is done."""
    if not accept_changes:
        # A block once used (trials sampled, runs judged) may not change under them.
        blocks = [
            (
                "search",
                journal.sampled,
                search_changes,
                "trials were sampled",
                "trials sampled so far keep their values",
            ),
            (
                "pruning",
                journal.runs,
                pruning_changes,
                "trials were judged",
                "the decisions taken so far stand",
            ),
        ]
        for name, used, changes, what, kept in blocks:
            keys = changes(plan) if used else []
            if keys:
                raise ConfigChanged(_describe_block_changes(plan, name, keys, done=what, kept=kept))
    if not journal.runs:
        return ResumePlan(
            todo=plan.runs,
            done=(),
            resumed=journal.lines > 0,
            problems=tuple(journal.problems),
        )
    if not accept_changes:
        changed = [
            t.name
            for t in plan.trials
            if t.name in journal.trial_hashes and journal.trial_hashes[t.name] != t.config_hash
        ]
        if changed:
            raise ConfigChanged(_describe_changes(plan, changed))
    todo: list[RunSpec] = []
    done: list[RunOutcome] = []
    points: dict[tuple[str, int], ResumePoint] = {}
    for spec in plan.runs:
        record = journal.runs.get(spec.key)
        if record is None:
            todo.append(spec)
            continue
        same_config = record.config_hash == spec.config_hash
        status = run_status(record.status)
        if status is not None and status.is_finished and same_config:
            done.append(
                RunOutcome(
                    trial=record.trial,
                    repeat=record.repeat,
                    status=status,
                    metrics=record.metrics,
                    error=record.error,
                    reason=record.reason,
                    duration=record.total_duration,  # every attempt's time
                    epochs=record.epochs,
                    attempt=record.attempts,
                    seed=spec.seed,
                    skipped=True,
                )
            )
            continue
        todo.append(spec)
        if same_config and record.checkpoints:
            points[spec.key] = resume_point(record)
        elif record.attempts:
            points[spec.key] = ResumePoint(checkpoint=None, epoch=0, attempts=record.attempts)
    return ResumePlan(
        todo=tuple(todo),
        done=tuple(done),
        points=points,
        resumed=True,
        previously_run=frozenset(journal.runs),
        problems=tuple(journal.problems),
        decisions=tuple(journal.decisions),
        exports=journal.exports,
    )


#: The keys of a search block that may change on resume: how many trials to sample.
_SEARCH_MAY_CHANGE = frozenset({"trials"})


def search_changes(plan: ExperimentPlan) -> list[str]:
    """The keys of ``plan``'s search block that differ from the recorded one (resolved.yaml).

    Nothing recorded (an older or a missing resolved.yaml) is nothing to compare with.
    """
    now = plan.search.describe() if plan.search is not None else None
    return block_changes(plan, "search", now, may_change=_SEARCH_MAY_CHANGE)


def pruning_changes(plan: ExperimentPlan) -> list[str]:
    """The keys of ``plan``'s pruning block that differ from the recorded one (resolved.yaml)."""
    now = plan.pruning.describe() if plan.pruning is not None else None
    return block_changes(plan, "pruning", now)


def block_changes(
    plan: ExperimentPlan,
    name: str,
    now: Mapping[str, Any] | None,
    *,
    may_change: frozenset[str] = frozenset(),
) -> list[str]:
    """The keys of experiment.yaml's block ``name`` that differ from resolved.yaml's.

    Nothing recorded (a missing or unreadable resolved.yaml) is nothing to compare
    with; one recorded without the block makes adding it a change.
    """
    snapshot = _recorded(plan.path / "configs" / "resolved.yaml")
    recorded = snapshot.get(name)
    if now is not None:
        now = loads(dumps(dict(now)))
    if not isinstance(recorded, Mapping):
        if recorded is None and "experiment" in snapshot and now is not None:
            return [name]  # recorded without the block: adding one is a change too
        return [] if recorded is None or now is None else [name]
    if now is None:
        return [name]
    keys = sorted(set(recorded) | set(now), key=str)
    return [
        f"{name}.{key}"
        for key in keys
        if key not in may_change and recorded.get(key) != now.get(key)
    ]


def _describe_block_changes(
    plan: ExperimentPlan, name: str, keys: list[str], *, done: str, kept: str
) -> str:
    """The refusal of a changed ``search``/``pruning`` block: what changed, what to do."""
    return "\n".join(
        [
            f"the {name} block differs from what {plan.path} recorded, and {done}"
            f" with the recorded one; refusing to resume into a different {name}.",
            f"  changed keys: {', '.join(keys)}",
            "Use --fresh to start a new run of the experiment (the old directory is kept"
            f" under a new name), or --accept-changes to go on with the new block ({kept}).",
        ]
    )


def _describe_changes(plan: ExperimentPlan, changed: list[str]) -> str:
    config_snapshot = plan.path / "configs" / "resolved.yaml"
    recorded = _recorded_settings(config_snapshot)
    lines = [
        f"the config of {len(changed)} trial(s) differs from what {plan.path} recorded;"
        " refusing to resume into a different experiment."
    ]
    for name in changed:
        trial = next(t for t in plan.trials if t.name == name)
        before = recorded.get(name)
        keys = _changed_keys(before, trial.settings) if before is not None else ["(unknown)"]
        lines.append(f"  trial {name!r}: changed keys: {', '.join(keys) or '(none visible)'}")
    lines.append(
        "Use --fresh to start a new run of the experiment (the old directory is kept under"
        " a new name), or --accept-changes to resume with the new config."
    )
    return "\n".join(lines)


def _recorded(path: Path) -> dict[str, Any]:
    """resolved.yaml as recorded (empty when missing, unreadable, or not a plain file).

    Opened as the writers open files: a FIFO planted there is never waited on, a link
    never followed (writing resolved.yaml again refuses it, naming it).
    """
    import yaml

    try:
        fd = open_file(path, os.O_RDONLY)
        with open(fd, "rb") as f:
            data = yaml.safe_load(f.read())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _recorded_settings(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for trial in _recorded(path).get("trials", []) or []:
        if isinstance(trial, dict) and "name" in trial:
            out[str(trial["name"])] = trial.get("settings") or {}
    return out


def _changed_keys(before: Any, after: Any, prefix: str = "settings") -> list[str]:
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        keys = []
        for k in sorted(set(before) | set(after), key=str):
            path = f"{prefix}.{k}"
            if k not in before or k not in after:
                keys.append(path)
            else:
                keys.extend(_changed_keys(before[k], after[k], path))
        return keys
    return [] if before == after else [prefix]
