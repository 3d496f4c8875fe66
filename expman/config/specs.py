"""What planning produces: frozen trial and run specs, and the plan that holds them.

A :class:`TrialSpec` keeps the :class:`Layer` s its settings were merged from, so an
error found later about a setting (an unknown pipeline type, a misspelled callback
parameter) is reported in the file, at the line, that last set it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from expman.config.entries import EntrySource
from expman.config.integrations import IntegrationSpec
from expman.config.loading import YamlDocument, join_key
from expman.config.pruning import PruningSpec
from expman.config.schema import ExecutionSettings
from expman.config.search import SearchSpec
from expman.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Layer:
    """One source of settings: a document and where in it the settings mapping sits.

    ``caller`` marks settings the caller gave (override strings, values) rather than a
    file of the config directory; ``note`` is appended to errors located in this layer
    (it names a generated trial).
    """

    doc: YamlDocument
    prefix: str
    settings: Mapping[str, Any]
    caller: bool = False
    note: str = ""

    def locate(self, key: str) -> str | None:
        """The document's key path where this layer sets dotted ``key``, or None."""
        node: Any = self.settings
        path = self.prefix
        for part in key.split("."):
            if isinstance(node, Mapping) and part in node:
                node, path = node[part], join_key(path, part)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node, path = node[int(part)], join_key(path, int(part))
            else:
                return None
        return path


@dataclass(frozen=True, slots=True, eq=False)
class TrialSpec:
    """One trial: a resolved configuration and how many times to run it.

    ``index`` is the trial's position in the plan; ``source`` is where its entry was
    written (for an expanded entry, the entry it was generated from).
    """

    name: str
    id: str
    index: int
    repeat: int
    settings: Mapping[str, Any]
    config_hash: str
    desc: str = ""
    resources: Mapping[str, float] = field(default_factory=dict)
    layers: tuple[Layer, ...] = ()
    source: EntrySource | None = None
    #: The id as written in trials.yaml (``1`` or ``"a1"``), for the snapshots.
    written_id: str | int | None = None
    #: A swept trial's swept values ``{dotted key: value}`` (empty for a written trial).
    swept: Mapping[str, Any] = field(default_factory=dict)
    #: A trial of an adaptive search: its number in its study (None for any other trial).
    search_number: int | None = None
    #: The study (the trial entry's id) a search trial belongs to; None for any other trial.
    study: str | None = None
    #: The values sampled into ``settings``; None while the trial is a placeholder.
    sampled: Mapping[str, Any] | None = None

    @property
    def is_placeholder(self) -> bool:
        """A search trial whose values are not sampled yet (its settings are its entry's)."""
        return self.search_number is not None and self.sampled is None

    @property
    def yaml_id(self) -> str | int:
        """The id as the snapshots write it: with the type it was written with."""
        # An expander (or Experiment(id=...)) that changed the id: its text, as given.
        written = self.written_id
        return written if written is not None and str(written) == self.id else self.id

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError for ``settings.<key>``, in the file that last set it.

        ``key`` is dotted; list indices are plain numbers (``callbacks.0.type``).
        """
        for layer in reversed(self.layers):
            path = layer.locate(key)
            if path is not None:
                return layer.doc.error(path, message + layer.note)
        # Set nowhere: point at the trial's own settings (the layer before the caller's).
        own = next((la for la in reversed(self.layers) if not la.caller), None)
        if own is None:
            return ConfigError(message, key=f"settings.{key}")
        note = own.note or f" (trial {self.name!r})"
        return own.doc.error(join_key(own.prefix, key), message + note)

    def entry_error(self, key: str, message: str) -> ConfigError:
        """A ConfigError for a key of the trial's entry (``repeat``, ``resources.gpus``)."""
        if self.source is None:
            return ConfigError(f"{message} (trial {self.name!r})", key=key)
        return self.source.error(key, message)


@dataclass(frozen=True, slots=True, eq=False)
class RunSpec:
    """One run: a trial's configuration, a repeat index and its seed."""

    trial: TrialSpec
    repeat: int
    seed: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.trial.name, self.repeat)

    @property
    def settings(self) -> Mapping[str, Any]:
        return self.trial.settings

    @property
    def config_hash(self) -> str:
        return self.trial.config_hash

    @property
    def label(self) -> str:
        return f"{self.trial.name}/run_{self.repeat}"


@dataclass(frozen=True, slots=True, eq=False)
class SubscriberEntry:
    """One entry of ``subscribers:`` (experiment.yaml or env.yaml): ``{type: Name, ...}``."""

    config: Mapping[str, Any]
    doc: YamlDocument
    #: Where the entry is in its document (``subscribers[0]``).
    key: str

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError at ``key`` (a full key path in the entry's document)."""
        return self.doc.error(key, message)


@dataclass(frozen=True, slots=True, eq=False)
class ExperimentPlan:
    """Everything needed to run an experiment, validated and resolved."""

    name: str
    id: str
    desc: str
    config_dir: Path
    workspace: Path
    execution: ExecutionSettings
    trials: tuple[TrialSpec, ...]
    runs: tuple[RunSpec, ...]
    documents: Mapping[str, YamlDocument]
    overrides: tuple[str, ...] = ()
    #: The experiment's subscribers named in YAML, experiment.yaml's then env.yaml's.
    subscribers: tuple[SubscriberEntry, ...] = ()
    #: The id as written in experiment.yaml (an int stays an int in resolved.yaml).
    written_id: str | int | None = None
    #: experiment.yaml's ``search:`` block; its trials are placeholders until sampled.
    search: SearchSpec | None = None
    #: experiment.yaml's ``pruning:`` block: the pruner that judges the trials' epochs.
    pruning: PruningSpec | None = None
    #: The trackers the experiment feeds (``integrations:``; env.yaml's list wins).
    integrations: tuple[IntegrationSpec, ...] = ()

    @property
    def yaml_id(self) -> str | int:
        """The id as resolved.yaml writes it: with the type it was written with."""
        # An expander (or Experiment(id=...)) that changed the id: its text, as given.
        written = self.written_id
        return written if written is not None and str(written) == self.id else self.id

    @property
    def path(self) -> Path:
        """The experiment's directory inside the workspace."""
        return self.workspace / self.name

    def with_execution(self, **changes: Any) -> ExperimentPlan:
        """A copy whose execution settings differ as given (None values ignored)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return replace(self, execution=replace(self.execution, **given)) if given else self

    def describe(self) -> dict[str, Any]:
        """A plain summary of the plan, for ``expman validate`` and resolved.yaml."""
        return {
            "experiment": {"name": self.name, "id": self.yaml_id, "desc": self.desc},
            "execution": {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in ((f, getattr(self.execution, f)) for f in ExecutionSettings.__slots__)
            },
            "trials": [_describe_trial(t) for t in self.trials],
            "runs": len(self.runs),
            "subscribers": [dict(entry.config) for entry in self.subscribers],
            **({"search": self.search.describe()} if self.search is not None else {}),
            **({"pruning": self.pruning.describe()} if self.pruning is not None else {}),
            **(
                {"integrations": [i.describe() for i in self.integrations]}
                if self.integrations
                else {}
            ),
        }


def _describe_trial(trial: TrialSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": trial.name,
        "id": trial.yaml_id,
        "repeat": trial.repeat,
        "config_hash": trial.config_hash,
        "resources": dict(trial.resources),
        "settings": trial.settings,
    }
    if trial.swept:  # only a swept trial: the snapshots of a written one stay as they were
        out["swept"] = dict(trial.swept)
    if trial.search_number is not None:
        # A placeholder: its settings are its entry's until the search samples it.
        out["search"] = {
            "study": trial.study,
            "number": trial.search_number,
            "sampled": None if trial.sampled is None else dict(trial.sampled),
        }
    return out
