"""The validate stage: each file of a config directory holds what it may.

Shape, keys and types, file by file (see :mod:`expman.config.schema`):

- ``experiment.yaml``: ``name`` and ``id`` (required), ``desc``, ``settings`` (a
  mapping), ``execution``, ``subscribers`` (a list of ``{type: Name, ...}``),
  ``search`` (a mapping, parsed by :mod:`~expman.config.search` in the plan stage);
- ``base.yaml``: ``settings``;
- ``env.yaml``: ``workspace`` (a path, relative to the config directory),
  ``execution``, ``subscribers``, and ``max_concurrency`` / ``devices`` as shorthands that win over
  its ``execution`` block;
- ``trials.yaml``: a non-empty list of entries, each checked by
  :func:`~expman.config.entries.check_entry`.

Every mistake is a ConfigError naming the file, the line and the key path. Nothing
is merged or interpolated here, and plan-wide rules (unique names, the run limit)
wait for the expand stage, which may add entries.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expman.config.entries import EntrySource, TrialEntry, check_entry
from expman.config.integrations import IntegrationSpec, parse_integrations
from expman.config.loading import YamlDocument, join_key
from expman.config.pruning import PruningSpec, parse_pruning
from expman.config.schema import (
    BASE_KEYS,
    ENV_KEYS,
    EXPERIMENT_KEYS,
    check_devices,
    check_execution,
    check_id,
    check_int,
    check_keys,
    check_name,
    expect_mapping,
    type_name,
)
from expman.config.sources import ConfigSources
from expman.config.specs import Layer, SubscriberEntry


@dataclass(frozen=True, slots=True)
class ValidatedConfig:
    """A config directory whose files hold what they may, ready to expand and resolve."""

    sources: ConfigSources
    name: str
    id: str
    desc: str
    #: The settings of base.yaml (when present), then of experiment.yaml.
    layers: tuple[Layer, ...]
    #: experiment.yaml's execution, updated by env.yaml's (validated values).
    execution: Mapping[str, Any]
    #: env.yaml's workspace, resolved against the config directory (None if not set).
    workspace: Path | None
    entries: tuple[TrialEntry, ...]
    #: experiment.yaml's id as written (``id`` is its text).
    written_id: str | int | None = None
    #: ``subscribers:`` of experiment.yaml, then of env.yaml.
    subscribers: tuple[SubscriberEntry, ...] = ()
    #: experiment.yaml's ``search:`` block, a mapping not yet parsed (its default
    #: ``lag`` waits for the caller's execution changes); None without one.
    search: Mapping[str, Any] | None = None
    #: experiment.yaml's ``pruning:`` block; None without one.
    pruning: PruningSpec | None = None
    #: ``integrations:`` of env.yaml when it has the key, else of experiment.yaml.
    integrations: tuple[IntegrationSpec, ...] = ()


def validate_config(sources: ConfigSources) -> ValidatedConfig:
    """Check every document of ``sources``; the first mistake is a ConfigError."""
    experiment = sources.experiment
    exp = expect_mapping(experiment, "", experiment.data, allow_null=False)
    check_keys(experiment, "", exp, EXPERIMENT_KEYS, {"name", "id"})
    name = check_name(experiment, "name", exp["name"])
    exp_id = check_id(experiment, "id", exp["id"])
    desc = exp.get("desc") or ""
    if not isinstance(desc, str):
        raise experiment.error("desc", f"expected a string, got {type_name(desc)}")
    layers = [_settings_layer(experiment, exp)]
    execution = check_execution(experiment, "execution", exp.get("execution"))

    if sources.base is not None:
        base = expect_mapping(sources.base, "", sources.base.data)
        check_keys(sources.base, "", base, BASE_KEYS)
        layers.insert(0, _settings_layer(sources.base, base))

    subscribers = _subscribers(experiment, exp)
    named = {"name": name, "id": exp_id}
    integrations = parse_integrations(experiment, exp.get("integrations"), experiment=named)
    workspace = None
    if sources.env is not None:
        workspace = _check_env(sources.env, sources.root, execution)
        subscribers += _subscribers(sources.env, sources.env.data)
        if isinstance(sources.env.data, dict) and "integrations" in sources.env.data:
            # env.yaml's list wins, as its execution does ([] turns them off here).
            integrations = parse_integrations(
                sources.env, sources.env.data["integrations"] or [], experiment=named
            )

    return ValidatedConfig(
        sources=sources,
        name=name,
        id=exp_id,
        desc=desc,
        layers=tuple(layers),
        execution=execution,
        workspace=workspace,
        entries=validate_trials(sources.trials),
        subscribers=subscribers,
        written_id=exp["id"],
        search=expect_mapping(experiment, "search", exp["search"], allow_null=False)
        if "search" in exp
        else None,
        pruning=parse_pruning(experiment, exp["pruning"]) if "pruning" in exp else None,
        integrations=integrations,
    )


def validate_trials(doc: YamlDocument) -> tuple[TrialEntry, ...]:
    """The entries of ``trials.yaml``, each checked, each with its source."""
    if not isinstance(doc.data, list):
        raise doc.error("", f"expected a list of trials, got {type_name(doc.data)}")
    if not doc.data:
        raise doc.error("", "expected at least one trial")
    return tuple(
        check_entry(EntrySource(doc, join_key("", i)), raw) for i, raw in enumerate(doc.data)
    )


def _subscribers(doc: YamlDocument, data: Mapping[str, Any]) -> tuple[SubscriberEntry, ...]:
    """A document's ``subscribers:`` list, each entry a mapping with a ``type``."""
    listed = data.get("subscribers")
    if listed is None:
        return ()
    if not isinstance(listed, list):
        raise doc.error(
            "subscribers",
            f"expected a list of {{type: ..., ...}} mappings, got {type_name(listed)}",
        )
    entries = []
    for i, raw in enumerate(listed):
        key = join_key("subscribers", i)
        if not isinstance(raw, Mapping) or "type" not in raw:
            raise doc.error(
                key, "expected a mapping with a 'type' key (a registered name or 'module:attr')"
            )
        entries.append(SubscriberEntry(config=dict(raw), doc=doc, key=key))
    return tuple(entries)


def _settings_layer(doc: YamlDocument, data: Mapping[str, Any]) -> Layer:
    return Layer(doc, "settings", expect_mapping(doc, "settings", data.get("settings")))


def _check_env(env: YamlDocument, root: Path, execution: dict[str, Any]) -> Path | None:
    """Check env.yaml, updating ``execution``; its workspace, if it names one."""
    data = expect_mapping(env, "", env.data)
    check_keys(env, "", data, ENV_KEYS)
    execution.update(check_execution(env, "execution", data.get("execution")))
    if "max_concurrency" in data:
        execution["max_concurrency"] = check_int(
            env, "max_concurrency", data["max_concurrency"], minimum=1
        )
    if "devices" in data:
        execution["devices"] = check_devices(env, "devices", data["devices"])
    workspace = data.get("workspace")
    if workspace is None:
        return None
    if not isinstance(workspace, str) or not workspace.strip():
        raise env.error("workspace", f"expected a path, got {type_name(workspace)}")
    if "\x00" in workspace:
        raise env.error("workspace", "expected a path, got a string with a NUL character")
    return (root / os.path.expanduser(workspace)).resolve()


@dataclass(frozen=True, slots=True)
class EnvironmentConfig:
    """An ``Environment(config=...)`` mapping, checked as env.yaml is."""

    execution: Mapping[str, Any]
    workspace: Path | None
    subscribers: tuple[SubscriberEntry, ...]


#: How errors name an Environment's config (it has no file).
ENVIRONMENT_SOURCE = Path("<Environment(config=...)>")


def check_environment(config: Mapping[str, Any], root: Path) -> EnvironmentConfig:
    """Check a mapping with env.yaml's rules (keys, types; ``None`` is null).

    ``root`` is what a relative ``workspace`` is relative to.  The first mistake is a
    ConfigError naming ``<Environment(config=...)>`` and the key.
    """
    doc = YamlDocument(ENVIRONMENT_SOURCE, dict(config))
    execution: dict[str, Any] = {}
    workspace = _check_env(doc, root, execution)
    return EnvironmentConfig(execution, workspace, _subscribers(doc, doc.data))
