"""The trials of an adaptive search in the plan: placeholders, then sampled trials.

With a ``search:`` block (:mod:`expman.config.search`) every trial entry E (after
sweep expansion) stands for ``trials`` trials of its own study (the study's key is
E's id): ``<E.name>-<n:04d>`` with id ``<E.id>.<n>``, each with E's repeat and
resources. Until the search samples it, a trial is a *placeholder*: its settings are
E's merged settings and its config hash is its own (never that of a sampled trial).
A sampled trial's config hash is that of its settings, as for any trial: whether
the search block itself changed since trials were sampled is the resume plan's
question (``expman.runtime.resume``), so accepting such a change keeps the results
of trials already sampled; more ``trials`` only add trials.
:func:`sampled_trial` re-resolves a placeholder with the sampled values as the top
layer of its settings (above the caller's overrides, which may not name a searched
key); its runs keep the placeholder's seeds (:func:`sampled_runs`).

Everything here is a pure function of the plan and the values: the runtime samples,
journals the values, and on resume materialises the same trials from the journal
(:func:`with_sampled`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from expman.config.entries import TrialEntry
from expman.config.expansion import MAX_RUNS
from expman.config.loading import YamlDocument, join_key
from expman.config.resolution import config_hash, resolve_trial, run_seed
from expman.config.schema import name_problem
from expman.config.search import SearchSpec, parse_search
from expman.config.specs import ExperimentPlan, Layer, RunSpec, TrialSpec
from expman.config.validation import ValidatedConfig

#: The document sampled values are said to come from, in errors and layers.
SAMPLED = Path("<search>")


def search_trial_name(entry_name: str, number: int) -> str:
    """The name of trial ``number`` of the study of the entry named ``entry_name``."""
    return f"{entry_name}-{number:04d}"


def search_trials(
    config: ValidatedConfig,
    entries: Sequence[TrialEntry],
    execution: Mapping[str, Any],
    caller: Sequence[Layer],
    experiment: Mapping[str, str],
) -> tuple[SearchSpec, tuple[TrialSpec, ...]]:
    """The plan stage of ``config.search``: the spec and every entry's placeholders.

    ``execution`` is the execution settings after the caller's changes (its
    ``max_concurrency`` is the default ``lag``).
    """
    assert config.search is not None
    site = config.sources.experiment
    spec = parse_search(site, config.search, max_concurrency=execution.get("max_concurrency"))
    trials = placeholder_trials(
        spec, entries, site=site, files=config.layers, caller=caller, experiment=experiment
    )
    return spec, trials


def placeholder_trials(
    spec: SearchSpec,
    entries: Iterable[TrialEntry],
    *,
    site: YamlDocument,
    files: Sequence[Layer],
    caller: Sequence[Layer],
    experiment: Mapping[str, str],
) -> tuple[TrialSpec, ...]:
    """Every entry's ``spec.trials`` placeholder trials, in plan order.

    ``site`` is experiment.yaml (where ``search:`` is written); ``files``, ``caller``
    and ``experiment`` are what :func:`~expman.config.resolution.resolve_trial` takes.
    A space key missing from an entry's merged settings, or also set by the caller,
    is a ConfigError; so are generated names that clash and a plan past MAX_RUNS.
    """
    _refuse_overridden(spec, caller)
    trials: list[TrialSpec] = []
    names: dict[str, str] = {}
    total_runs = 0
    for entry in entries:
        _refuse_swept(spec, entry)
        total_runs += entry.repeat * spec.trials
        if total_runs > MAX_RUNS:
            raise site.error(
                join_key("search", "trials"),
                f"{spec.trials} trials of every entry bring the plan to {total_runs:,} runs"
                f" (at trial {entry.name!r}); expected at most {MAX_RUNS:,} runs in total",
            )
        for number in range(spec.trials):
            name = search_trial_name(entry.name, number)
            problem = name_problem(name)
            if problem:
                raise entry.error("name", f"the search trial name {name!r} is unusable: {problem}")
            if name in names:
                raise entry.error(
                    "name",
                    f"the search trial name {name!r} is also the name of trial {names[name]}"
                    " (rename one of them)",
                )
            names[name] = entry.source.key
            generated = replace(
                entry,
                name=name,
                id=f"{entry.id}.{number}",
                source=replace(entry.source, generated=name),
            )
            trial = resolve_trial(
                generated, len(trials), files=files, caller=caller, experiment=experiment
            )
            if number == 0:
                _check_space_keys(spec, trial, site, entry)
            trials.append(
                replace(
                    trial,
                    search_number=number,
                    study=entry.id,
                    config_hash=_placeholder_hash(trial, entry.id, number),
                )
            )
    return tuple(trials)


def sampled_trial(plan: ExperimentPlan, trial_name: str, values: Mapping[str, Any]) -> TrialSpec:
    """Placeholder ``trial_name`` of ``plan`` resolved with ``values`` (dotted keys) on top.

    The trial keeps its name, id, index, repeat and resources; its settings and config
    hash are those of its entry's settings with ``values`` put at their keys (then
    interpolated, so ``${settings.lr}`` sees the sampled lr). A ValueError when the
    trial is not a search trial of the plan or a key of ``values`` is not a setting.
    """
    return _sampled(plan, _placeholder(plan.trials, trial_name), values)


def sampled_runs(plan: ExperimentPlan, trial: TrialSpec) -> tuple[RunSpec, ...]:
    """The runs of sampled ``trial``, with the seeds its placeholder's runs have."""
    return _runs(_placeholder(plan.trials, trial.name), trial)


def with_sampled(plan: ExperimentPlan, sampled: Mapping[str, Mapping[str, Any]]) -> ExperimentPlan:
    """``plan`` with the trials named in ``sampled`` (name -> values) materialised.

    What resume does with the journal's sampled values before comparing config
    hashes; trials not named stay placeholders. Plan order is kept.
    """
    if not sampled:
        return plan
    by_name = {trial.name: trial for trial in plan.trials}
    trials: dict[str, TrialSpec] = {}
    runs: dict[str, tuple[RunSpec, ...]] = {}
    for name, values in sampled.items():
        placeholder = _placeholder((by_name[name],) if name in by_name else (), name)
        trials[name] = _sampled(plan, placeholder, values)
        runs[name] = _runs(placeholder, trials[name])
    return replace(
        plan,
        trials=tuple(trials.get(t.name, t) for t in plan.trials),
        runs=tuple(runs[r.trial.name][r.repeat] if r.trial.name in runs else r for r in plan.runs),
    )


def _sampled(plan: ExperimentPlan, placeholder: TrialSpec, values: Mapping[str, Any]) -> TrialSpec:
    nested = _nested(placeholder, values)
    layer = Layer(
        YamlDocument(SAMPLED, {"settings": nested}),
        "settings",
        nested,
        caller=True,
        note=f" (sampled for trial {placeholder.name!r})",
    )
    own = max(i for i, la in enumerate(placeholder.layers) if not la.caller)
    entry = TrialEntry(
        name=placeholder.name,
        id=placeholder.id,
        repeat=placeholder.repeat,
        settings=placeholder.layers[own].settings,
        source=placeholder.source,  # type: ignore[arg-type]  # a search trial has one
        desc=placeholder.desc,
        resources=placeholder.resources,
        written_id=placeholder.written_id,
        swept=placeholder.swept,
    )
    resolved = resolve_trial(
        entry,
        placeholder.index,
        files=placeholder.layers[:own],
        caller=(*placeholder.layers[own + 1 :], layer),
        experiment={"name": plan.name, "id": plan.id, "desc": plan.desc},
    )
    return replace(
        resolved,
        search_number=placeholder.search_number,
        study=placeholder.study,
        sampled=dict(values),
    )


def _runs(placeholder: TrialSpec, trial: TrialSpec) -> tuple[RunSpec, ...]:
    seed = placeholder.settings.get("seed", 0)
    return tuple(
        RunSpec(trial=trial, repeat=k, seed=run_seed(seed, placeholder.id, k))
        for k in range(trial.repeat)
    )


def _placeholder(trials: Iterable[TrialSpec], trial_name: str) -> TrialSpec:
    for trial in trials:
        if trial.name == trial_name:
            if trial.search_number is None:
                raise ValueError(f"trial {trial_name!r} is not a trial of the plan's search")
            return trial
    raise ValueError(f"no trial named {trial_name!r} in the plan")


def _nested(placeholder: TrialSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (dotted keys) as a nested mapping; each key must be a setting."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if _lookup(placeholder.settings, key) is _ABSENT:
            raise ValueError(f"{key!r} is not a setting of trial {placeholder.name!r}")
        *parents, last = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return nested


_ABSENT = object()


def _lookup(settings: Mapping[str, Any], key: str) -> Any:
    node: Any = settings
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _check_space_keys(
    spec: SearchSpec, trial: TrialSpec, site: YamlDocument, entry: TrialEntry
) -> None:
    for key in spec.space:
        found = _lookup(trial.settings, key)
        if found is _ABSENT:
            raise site.error(
                join_key(join_key("search", "space"), key),
                f"{key!r} is not a setting of trial {entry.name!r} ({entry.source.doc.path.name}"
                f" {entry.source.key}); expected a key of its merged settings (a typo would"
                " search a setting nobody reads)",
            )
        if isinstance(found, Mapping):
            raise site.error(
                join_key(join_key("search", "space"), key),
                f"{key!r} is a mapping of settings in trial {entry.name!r}; expected the"
                f" key of a single value (search its keys one by one: {key}.<name>)",
            )


def _refuse_overridden(spec: SearchSpec, caller: Sequence[Layer]) -> None:
    for layer in caller:
        for key in spec.space:
            path = layer.locate(key)
            if path is not None:
                raise layer.doc.error(
                    path,
                    f"{key!r} is searched (search.space in experiment.yaml), so the sampled"
                    " value would replace this one; expected either the override or the"
                    " search dimension, not both",
                )


def _refuse_swept(spec: SearchSpec, entry: TrialEntry) -> None:
    """A key both swept (trials.yaml's sweep, or -m) and searched: the sweep would be lost."""
    for swept in entry.swept:
        for key in spec.space:
            if swept == key or swept.startswith(key + ".") or key.startswith(swept + "."):
                raise entry.error(
                    "sweep",
                    f"{swept!r} is swept (a sweep block or -m) and {key!r} is searched"
                    " (search.space in experiment.yaml): the sampled value would replace"
                    " the swept one; expected either the sweep axis or the search"
                    " dimension, not both",
                )


def _placeholder_hash(trial: TrialSpec, study: str, number: int) -> str:
    """A placeholder's own config hash: never equal to a sampled trial's."""
    return config_hash(
        {"placeholder": {"study": study, "number": number}, "settings": trial.settings}
    )
