"""From a config directory to an :class:`ExperimentPlan` of frozen run specs.

Loading order and precedence of run settings::

    base.yaml settings < experiment.yaml settings < trial settings < overrides

Each trial expands into ``repeat`` runs, each with its own deterministic seed.
Interpolations (``${settings.lr}``, ``${trial.name}``, ``${experiment.id}``) are
resolved per trial against ``{experiment, trial, settings}``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from expman.config.loading import YamlDocument, join_key, load_yaml
from expman.config.merging import deep_merge, has_interpolation
from expman.config.schema import (
    BASE_KEYS,
    ENV_KEYS,
    EXPERIMENT_KEYS,
    RESERVED_TRIAL_NAMES,
    TRIAL_KEYS,
    ExecutionSettings,
    check_devices,
    check_execution,
    check_id,
    check_int,
    check_keys,
    check_name,
    check_resources,
    expect_mapping,
    type_name,
)
from expman.errors import ConfigError

EXPERIMENT_FILE = "experiment.yaml"
BASE_FILE = "base.yaml"
TRIALS_FILE = "trials.yaml"
ENV_FILE = "env.yaml"
COMMAND_LINE = Path("<command line>")
#: The most runs one plan may hold (every run is a RunSpec in memory before anything runs).
MAX_RUNS = 1_000_000


@dataclass(frozen=True, slots=True)
class Layer:
    """One source of settings: a file and where in it the settings mapping sits."""

    doc: YamlDocument
    prefix: str
    settings: Mapping[str, Any]


@dataclass(frozen=True, slots=True, eq=False)
class TrialSpec:
    """One trial: a resolved configuration and how many times to run it."""

    name: str
    id: str
    index: int
    repeat: int
    settings: Mapping[str, Any]
    config_hash: str
    desc: str = ""
    resources: Mapping[str, float] = field(default_factory=dict)
    layers: tuple[Layer, ...] = ()

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError for ``settings.<key>``, in the file that last set it.

        ``key`` is dotted; list indices are plain numbers (``callbacks.0.type``).
        """
        parts = key.split(".")
        for layer in reversed(self.layers):
            node: Any = layer.settings
            path = layer.prefix
            for part in parts:
                if isinstance(node, Mapping) and part in node:
                    node, path = node[part], join_key(path, part)
                elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                    node, path = node[int(part)], join_key(path, int(part))
                else:
                    break
            else:
                return layer.doc.error(path, message)
        # Set nowhere: point at the trial's own settings (the layer before the CLI's).
        own = next((la for la in reversed(self.layers) if la.doc.path != COMMAND_LINE), None)
        if own is None:
            return ConfigError(message, key=f"settings.{key}")
        return own.doc.error(join_key(own.prefix, key), f"{message} (trial {self.name!r})")


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
            "experiment": {"name": self.name, "id": self.id, "desc": self.desc},
            "execution": {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in ((f, getattr(self.execution, f)) for f in ExecutionSettings.__slots__)
            },
            "trials": [
                {
                    "name": t.name,
                    "id": t.id,
                    "repeat": t.repeat,
                    "config_hash": t.config_hash,
                    "resources": dict(t.resources),
                    "settings": t.settings,
                }
                for t in self.trials
            ],
            "runs": len(self.runs),
        }


def config_hash(settings: Mapping[str, Any]) -> str:
    """A short, stable digest of resolved settings (key order does not matter)."""
    blob = orjson.dumps(settings, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(blob).hexdigest()[:16]


def run_seed(experiment_seed: object, trial_id: str, repeat: int) -> int:
    """The deterministic seed of one run (a 31-bit integer)."""
    digest = hashlib.blake2b(f"{experiment_seed}/{trial_id}/{repeat}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") & 0x7FFFFFFF


def load_plan(
    config_dir: str | os.PathLike[str],
    *,
    overrides: Sequence[str] = (),
    workspace: str | os.PathLike[str] | None = None,
) -> ExperimentPlan:
    """Read, validate and resolve a config directory; nothing is written anywhere."""
    root = Path(config_dir)
    if not root.is_dir():
        raise ConfigError(
            "not a directory with experiment.yaml, base.yaml and trials.yaml", file=root
        )

    experiment = _require(root / EXPERIMENT_FILE)
    trials_doc = _require(root / TRIALS_FILE)
    base = load_yaml(root / BASE_FILE) if (root / BASE_FILE).exists() else None
    env = load_yaml(root / ENV_FILE) if (root / ENV_FILE).exists() else None

    exp = expect_mapping(experiment, "", experiment.data, allow_null=False)
    check_keys(experiment, "", exp, EXPERIMENT_KEYS, {"name", "id"})
    name = check_name(experiment, "name", exp["name"])
    exp_id = check_id(experiment, "id", exp["id"])
    desc = exp.get("desc") or ""
    if not isinstance(desc, str):
        raise experiment.error("desc", f"expected a string, got {type_name(desc)}")
    layers = [
        Layer(experiment, "settings", expect_mapping(experiment, "settings", exp.get("settings")))
    ]
    execution = check_execution(experiment, "execution", exp.get("execution"))

    if base is not None:
        base_data = expect_mapping(base, "", base.data)
        check_keys(base, "", base_data, BASE_KEYS)
        layers.insert(
            0, Layer(base, "settings", expect_mapping(base, "settings", base_data.get("settings")))
        )

    workspace_path: Path | None = Path(workspace) if workspace is not None else None
    if env is not None:
        env_data = expect_mapping(env, "", env.data)
        check_keys(env, "", env_data, ENV_KEYS)
        execution.update(check_execution(env, "execution", env_data.get("execution")))
        if "max_concurrency" in env_data:
            execution["max_concurrency"] = check_int(
                env, "max_concurrency", env_data["max_concurrency"], minimum=1
            )
        if "devices" in env_data:
            execution["devices"] = check_devices(env, "devices", env_data["devices"])
        if workspace_path is None and env_data.get("workspace") is not None:
            ws = env_data["workspace"]
            if not isinstance(ws, str) or not ws.strip():
                raise env.error("workspace", f"expected a path, got {type_name(ws)}")
            workspace_path = (root / os.path.expanduser(ws)).resolve()

    cli_settings, cli_execution = _parse_overrides(overrides)
    if cli_execution:
        cli_doc = YamlDocument(COMMAND_LINE, {"execution": cli_execution})
        execution.update(check_execution(cli_doc, "execution", cli_execution))
    cli_layer = Layer(YamlDocument(COMMAND_LINE, cli_settings), "settings", cli_settings)

    trials = _load_trials(trials_doc, {"name": name, "id": exp_id, "desc": desc}, layers, cli_layer)
    runs = tuple(
        RunSpec(trial=t, repeat=k, seed=run_seed(t.settings.get("seed", 0), t.id, k))
        for t in trials
        for k in range(t.repeat)
    )
    documents = {d.path.name: d for d in (experiment, base, trials_doc, env) if d is not None}
    return ExperimentPlan(
        name=name,
        id=exp_id,
        desc=desc,
        config_dir=root.resolve(),
        workspace=(workspace_path or Path("workspace")).absolute(),
        execution=ExecutionSettings(**execution),
        trials=tuple(trials),
        runs=runs,
        documents=documents,
        overrides=tuple(overrides),
    )


def _require(path: Path) -> YamlDocument:
    if not path.is_file():
        raise ConfigError("required file is missing", file=path)
    doc = load_yaml(path)
    if doc.data is None:
        raise ConfigError("file is empty", file=path)
    return doc


def _load_trials(
    doc: YamlDocument,
    experiment: Mapping[str, str],
    layers: Sequence[Layer],
    cli: Layer,
) -> list[TrialSpec]:
    if not isinstance(doc.data, list):
        raise doc.error("", f"expected a list of trials, got {type_name(doc.data)}")
    if not doc.data:
        raise doc.error("", "expected at least one trial")
    names: dict[str, int] = {}
    ids: dict[str, int] = {}
    trials = []
    total_runs = 0
    for i, raw in enumerate(doc.data):
        at = f"[{i}]"
        entry = expect_mapping(doc, at, raw, allow_null=False)
        check_keys(doc, at, entry, TRIAL_KEYS, {"name", "id"})
        name = check_name(doc, f"{at}.name", entry["name"])
        if name in RESERVED_TRIAL_NAMES:
            raise doc.error(f"{at}.name", f"{name!r} is reserved for expman's own folders")
        if name in names:
            raise doc.error(
                f"{at}.name", f"duplicate trial name {name!r} (also trial [{names[name]}])"
            )
        trial_id = check_id(doc, f"{at}.id", entry["id"])
        if trial_id in ids:
            raise doc.error(
                f"{at}.id", f"duplicate trial id {trial_id!r} (also trial [{ids[trial_id]}])"
            )
        names[name], ids[trial_id] = i, i
        repeat = check_int(doc, f"{at}.repeat", entry.get("repeat", 1), minimum=1)
        total_runs += repeat
        if total_runs > MAX_RUNS:
            raise doc.error(
                f"{at}.repeat",
                f"repeat {repeat} brings the plan to {total_runs:,} runs;"
                f" expected at most {MAX_RUNS:,} runs in total",
            )
        desc = entry.get("desc") or ""
        resources = check_resources(doc, f"{at}.resources", entry.get("resources"))
        own = Layer(
            doc, f"{at}.settings", expect_mapping(doc, f"{at}.settings", entry.get("settings"))
        )
        trial_layers = (*layers, own, cli)
        settings = _resolve(trial_layers, experiment, {"name": name, "id": trial_id}, doc, at)
        trial = TrialSpec(
            name=name,
            id=trial_id,
            index=i,
            repeat=repeat,
            settings=settings,
            config_hash=config_hash(settings),
            desc=str(desc),
            resources=resources,
            layers=trial_layers,
        )
        seed = settings.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise trial.error(
                "seed",
                f"expected an integer (the experiment's seed), got {type_name(seed)} {seed!r}",
            )
        trials.append(trial)
    return trials


def _resolve(
    layers: Iterable[Layer],
    experiment: Mapping[str, str],
    trial: Mapping[str, str],
    doc: YamlDocument,
    at: str,
) -> dict[str, Any]:
    layer_list = [layer.settings for layer in layers]
    if not any(has_interpolation(s) for s in layer_list):
        return deep_merge(layer_list)
    try:
        merged = OmegaConf.merge(*(OmegaConf.create(dict(s)) for s in layer_list))
        root = OmegaConf.create({"experiment": dict(experiment), "trial": dict(trial)})
        root.settings = merged
        resolved = OmegaConf.to_container(root, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or ""
        msg = str(exc).splitlines()[0]
        raise ConfigError(
            f"cannot resolve interpolation: {msg}",
            file=doc.path,
            key=f"{at} ({trial['name']}): {key}" if key else f"{at} ({trial['name']})",
        ) from None
    assert isinstance(resolved, dict)
    settings = resolved["settings"]
    assert isinstance(settings, dict)
    return settings


def _parse_overrides(overrides: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``KEY=VALUE`` overrides into settings and execution changes."""
    settings: list[str] = []
    execution: list[str] = []
    for item in overrides:
        key, sep, _value = item.partition("=")
        key = key.strip()
        if not sep or not key or key.startswith(".") or key.endswith("."):
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. settings.lr=0.01)",
                file=COMMAND_LINE,
            )
        if key.startswith("execution."):
            execution.append(item[len("execution.") :])
        elif key.startswith("settings."):
            settings.append(item[len("settings.") :])
        else:
            settings.append(item)
    try:
        parsed_settings = OmegaConf.to_container(OmegaConf.from_dotlist(settings), resolve=False)
        parsed_execution = OmegaConf.to_container(OmegaConf.from_dotlist(execution), resolve=False)
    except Exception as exc:  # OmegaConf or the YAML parser under it (lr=[1,2)
        raise _override_error(overrides, exc) from None
    assert isinstance(parsed_settings, dict)
    assert isinstance(parsed_execution, dict)
    return parsed_settings, parsed_execution  # type: ignore[return-value]


def _override_error(overrides: Sequence[str], exc: Exception) -> ConfigError:
    """A ConfigError naming the first override that does not parse on its own."""
    for item in overrides:
        key, _, value = item.partition("=")
        try:
            OmegaConf.from_dotlist([item])
        except Exception as own:  # any parser failure is the user's value
            reason = str(own).splitlines()[0] if str(own) else type(own).__name__
            return ConfigError(
                f"override {item!r}: cannot parse value {value!r} ({reason});"
                " expected a YAML value (quote strings with brackets or colons)",
                file=COMMAND_LINE,
                key=key.strip(),
            )
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError(f"cannot parse overrides: {reason}", file=COMMAND_LINE)
