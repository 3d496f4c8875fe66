"""The resolve stage: each trial entry's settings merged, interpolated, seeded and hashed.

Precedence of run settings, key by key (mappings merge, anything else replaces)::

    base.yaml < experiment.yaml < the trial entry < override strings < values

Interpolations (``${settings.lr}``, ``${trial.name}``, ``${experiment.id}``) are
resolved per trial against ``{experiment, trial, settings}``; settings without any
``${`` skip OmegaConf. ``settings.seed`` (default 0) must be an integer: each of a
trial's ``repeat`` runs gets the seed :func:`run_seed` derives from it, the trial's id
and the repeat index. A trial's :func:`config_hash` digests its resolved settings, so
a resumed experiment can tell whether a run's configuration changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from expman.config.entries import TrialEntry
from expman.config.loading import int_problem
from expman.config.merging import deep_merge, has_interpolation
from expman.config.schema import shown, type_name
from expman.config.specs import Layer, RunSpec, TrialSpec
from expman.errors import ConfigError


def config_hash(settings: Mapping[str, Any]) -> str:
    """A short, stable digest of resolved settings (key order does not matter)."""
    blob = orjson.dumps(settings, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(blob).hexdigest()[:16]


def run_seed(experiment_seed: object, trial_id: str, repeat: int) -> int:
    """The deterministic seed of one run (a 31-bit integer)."""
    digest = hashlib.blake2b(f"{experiment_seed}/{trial_id}/{repeat}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") & 0x7FFFFFFF


def resolve_trial(
    entry: TrialEntry,
    index: int,
    *,
    files: Sequence[Layer],
    caller: Sequence[Layer] = (),
    experiment: Mapping[str, str],
) -> TrialSpec:
    """The trial spec of ``entry``, ``index``-th in the plan.

    ``files`` are the settings layers below the entry (base.yaml, experiment.yaml),
    ``caller`` those above it (override strings, values); ``experiment`` is the
    ``{name, id, desc}`` interpolations see.
    """
    own = Layer(
        entry.source.doc,
        entry.source.at("settings"),
        entry.settings,
        note=entry.source.note,
    )
    layers = (*files, own, *caller)
    settings = _merge(layers, experiment, entry)
    try:
        digest = config_hash(settings)
    except TypeError:  # what an interpolation made (${oc.decode:...}) that JSON cannot hold
        digest = ""
    trial = TrialSpec(
        name=entry.name,
        id=entry.id,
        index=index,
        repeat=entry.repeat,
        settings=settings,
        config_hash=digest,
        desc=entry.desc,
        resources=entry.resources,
        layers=layers,
        source=entry.source,
        written_id=entry.written_id,
        swept=entry.swept,
    )
    if not digest:
        key, problem = _unstorable(settings, "") or ("", "cannot be stored as JSON")
        raise trial.error(key, problem)
    seed = settings.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise trial.error(
            "seed",
            f"expected an integer (the experiment's seed), got {type_name(seed)} {shown(seed)}",
        )
    return trial


def _unstorable(value: Any, key: str) -> tuple[str, str] | None:
    """The dotted key of the first value in ``value`` the journal cannot hold, and why."""
    if isinstance(value, int) and not isinstance(value, bool):
        problem = int_problem(value)
        return (key, problem) if problem else None
    if value is None or isinstance(value, (bool, float, str)):
        return None
    items: Iterable[tuple[object, Any]]
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return (key, f"expected a plain YAML value, got {type(value).__name__}")
    for k, v in items:
        found = _unstorable(v, f"{key}.{k}" if key else str(k))
        if found is not None:
            return found
    return None


def plan_runs(trials: Iterable[TrialSpec]) -> tuple[RunSpec, ...]:
    """Every trial's ``repeat`` runs, in plan order, each with its own seed."""
    return tuple(
        RunSpec(trial=t, repeat=k, seed=run_seed(t.settings.get("seed", 0), t.id, k))
        for t in trials
        for k in range(t.repeat)
    )


def _merge(
    layers: Iterable[Layer], experiment: Mapping[str, str], entry: TrialEntry
) -> dict[str, Any]:
    layer_list = [layer.settings for layer in layers]
    if not any(has_interpolation(s) for s in layer_list):
        return deep_merge(layer_list)
    # Merged as without interpolations (a mapping replaces a string and back, where
    # OmegaConf.merge would refuse), then resolved against the merged whole.
    merged = deep_merge(layer_list)
    try:
        root = OmegaConf.create(
            {
                "experiment": dict(experiment),
                "trial": {"name": entry.name, "id": entry.id},
                "settings": merged,
            }
        )
        resolved = OmegaConf.to_container(root, resolve=True)
    except (OmegaConfBaseException, TypeError, ValueError) as exc:
        key = getattr(exc, "full_key", None) or ""
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        at = f"{entry.source.key} ({entry.name})"
        raise ConfigError(
            f"cannot resolve interpolation: {msg}",
            file=entry.source.doc.path,
            key=f"{at}: {key}" if key else at,
            line=entry.source.doc.line(entry.source.key),
        ) from None
    assert isinstance(resolved, dict)
    settings = resolved["settings"]
    assert isinstance(settings, dict)
    return settings
