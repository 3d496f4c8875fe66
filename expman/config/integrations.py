"""The ``integrations:`` block: the trackers an experiment feeds (TensorBoard, MLflow, W&B, CSV).

::

    integrations:                      # experiment.yaml or env.yaml (env.yaml's list wins)
      - type: tensorboard              # <experiment>/tensorboard/<trial>/run_<k>/ (or dir:)
      - type: mlflow
        tracking_uri: sqlite:///mlflow.db   # relative paths: relative to the workspace
        experiment: ${experiment.name}
        export: live                   # live | checkpointed
      - type: wandb
        project: my-project
        mode: offline                  # online | offline | disabled
      - type: csv                      # <run>/logs/metrics.csv

Each entry is checked here, key by key, with the file and line of a
mistake; so is the package its type needs (``pip install 'expman[mlflow]'``),
without importing it.  ``${experiment.name}`` and ``${experiment.id}`` in a string
are the experiment's.  A ``type`` written ``module:Class`` is the user's own
backend (an :class:`expman.integrations.Exporter` subclass, in the config folder or
an installed module); its other keys are its options, passed as written.  What the
entries do is :mod:`expman.integrations`'.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from expman.config.loading import YamlDocument, join_key
from expman.config.schema import check_bool, check_int, check_number, shown, type_name
from expman.errors import ConfigError

#: Keys every integration takes: its name (two of one type need two names), how long
#: the end of a session waits for it to send what is left, how many values it holds
#: in memory before it reads the rest back from the runs' metrics logs.
COMMON_KEYS = {"type", "name", "flush_timeout", "max_pending"}


def _string(doc: YamlDocument, key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise doc.error(key, f"expected a non-empty string, got {type_name(value)} {shown(value)}")
    return value


def _choice(*choices: str) -> Callable[[YamlDocument, str, object], str]:
    def check(doc: YamlDocument, key: str, value: object) -> str:
        if value not in choices:
            raise doc.error(
                key, f"expected one of {', '.join(choices)}, got {type_name(value)} {shown(value)}"
            )
        return str(value)

    return check


def _strings(doc: YamlDocument, key: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise doc.error(key, f"expected a list of strings, got {type_name(value)} {shown(value)}")
    return list(value)


def _tags(doc: YamlDocument, key: str, value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise doc.error(key, f"expected a mapping of tags, got {type_name(value)}")
    for k, v in value.items():
        if not isinstance(k, str) or isinstance(v, (dict, list)) or v is None:
            raise doc.error(join_key(key, k), f"expected a string tag, got {type_name(v)}")
    return {k: str(v) for k, v in value.items()}


@dataclass(frozen=True, slots=True)
class IntegrationType:
    """What one type of integration takes: its keys, their checks and defaults, its package."""

    keys: Mapping[str, Callable[[YamlDocument, str, object], Any]]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: The module it imports and the extra that installs it (None: nothing to install).
    module: str | None = None
    extra: str | None = None


#: Every built-in type of integration.
TYPES: dict[str, IntegrationType] = {
    "csv": IntegrationType(keys={}),
    "tensorboard": IntegrationType(
        keys={"dir": _string, "hparams": check_bool},
        defaults={"dir": "tensorboard", "hparams": True},
        module="numpy",  # what the event-file writer imports (not tensorboardX)
        extra="tensorboard",
    ),
    "mlflow": IntegrationType(
        keys={
            "tracking_uri": _string,
            "experiment": _string,
            "export": _choice("live", "checkpointed"),
            "tags": _tags,
        },
        defaults={
            "tracking_uri": "sqlite:///mlflow.db",
            "experiment": "${experiment.name}",
            "export": "live",
            "tags": {},
        },
        module="mlflow",
        extra="mlflow",
    ),
    "wandb": IntegrationType(
        keys={
            "project": _string,
            "entity": _string,
            "mode": _choice("online", "offline", "disabled"),
            "dir": _string,
            "tags": _strings,
        },
        defaults={
            "project": "${experiment.name}",
            "entity": None,
            "mode": "online",
            "dir": ".",  # W&B's own dir: it writes its wandb/ folder inside (the workspace's)
            "tags": [],
        },
        module="wandb",
        extra="wandb",
    ),
}


@dataclass(frozen=True, slots=True)
class IntegrationSpec:
    """One checked entry of ``integrations:``."""

    type: str
    name: str
    #: Its type's options, defaults filled, ``${experiment.*}`` substituted.
    options: Mapping[str, Any]
    flush_timeout: float = 10.0
    max_pending: int = 100_000
    #: Where it was written (``experiment.yaml, integrations[0]``).
    source: str = ""
    #: Its document and key path (errors found later point here).
    doc: YamlDocument | None = field(default=None, compare=False, repr=False)
    key: str = ""

    @property
    def custom(self) -> bool:
        """A user's backend named by import path (``module:Class``)."""
        return ":" in self.type

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError at ``key`` of the entry (``type``, ``dir``, ...)."""
        where = join_key(self.key, key) if key else self.key
        if self.doc is None:
            return ConfigError(message, key=where or None)
        return self.doc.error(where, message)

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "name": self.name,
            **self.options,
            "flush_timeout": self.flush_timeout,
            "max_pending": self.max_pending,
        }


def parse_integrations(
    doc: YamlDocument, raw: object, *, experiment: Mapping[str, str]
) -> tuple[IntegrationSpec, ...]:
    """A document's ``integrations:`` list, checked; ``experiment``: its name and id."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise doc.error(
            "integrations", f"expected a list of {{type: ...}} mappings, got {type_name(raw)}"
        )
    specs: list[IntegrationSpec] = []
    for i, entry in enumerate(raw):
        key = join_key("integrations", i)
        specs.append(_entry(doc, key, entry, experiment))
    names: dict[str, str] = {}
    for i, spec in enumerate(specs):
        key = join_key("integrations", i)
        if spec.name in names:
            raise doc.error(
                key,
                f"a second integration named {spec.name!r} (the first is {names[spec.name]});"
                " give each of them its own name: key",
            )
        names[spec.name] = key
    return tuple(specs)


def _entry(
    doc: YamlDocument, key: str, entry: object, experiment: Mapping[str, str]
) -> IntegrationSpec:
    if not isinstance(entry, dict):
        raise doc.error(
            key, f"expected a mapping with a 'type' ({', '.join(TYPES)}), got {type_name(entry)}"
        )
    if "type" not in entry:
        raise doc.error(
            key, f"missing key 'type': which tracker ({', '.join(TYPES)}, or module:Class)"
        )
    kind = entry["type"]
    found = TYPES.get(kind) if isinstance(kind, str) else None
    if found is None and isinstance(kind, str) and ":" in kind:
        found = IntegrationType(keys={k: _as_written for k in entry if k not in COMMON_KEYS})
    if found is None:
        raise doc.error(
            join_key(key, "type"),
            f"unknown integration {shown(kind)}; expected one of: {', '.join(sorted(TYPES))}"
            " (or module:Class, a backend of your own)",
        )
    allowed = COMMON_KEYS | set(found.keys)
    for k in entry:
        if k not in allowed:
            raise doc.error(
                join_key(key, k),
                f"unknown key for the {kind} integration; expected one of:"
                f" {', '.join(sorted(allowed))}",
            )
    options = dict(found.defaults)
    for k, check in found.keys.items():
        if k in entry:
            options[k] = check(doc, join_key(key, k), entry[k])
    options = {k: _substitute(v, experiment) for k, v in options.items()}
    name = _string(doc, join_key(key, "name"), entry["name"]) if "name" in entry else kind
    flush = entry.get("flush_timeout", 10.0)
    flush = check_number(doc, join_key(key, "flush_timeout"), flush, positive=True)
    pending = check_int(
        doc, join_key(key, "max_pending"), entry.get("max_pending", 100_000), minimum=1
    )
    if found.module is not None and importlib.util.find_spec(found.module) is None:
        raise doc.error(
            join_key(key, "type"),
            f"the {kind} integration needs the {found.module} package, which is not installed:"
            f" pip install 'expman[{found.extra}]'",
        )
    return IntegrationSpec(
        type=kind,
        name=name,
        options=options,
        flush_timeout=flush,
        max_pending=pending,
        source=f"{doc.path.name}, {key}",
        doc=doc,
        key=key,
    )


def _as_written(doc: YamlDocument, key: str, value: object) -> object:
    return value


def _substitute(value: Any, experiment: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for field_name, text in experiment.items():
            value = value.replace("${experiment." + field_name + "}", text)
        return value
    if isinstance(value, list):
        return [_substitute(v, experiment) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, experiment) for k, v in value.items()}
    return value
