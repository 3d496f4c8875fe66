"""Preflight: everything checked before an experiment writes anything.

:func:`prepare` loads, validates and resolves the config (a ConfigError naming the
file, line and key otherwise), applies the command line's choices, then checks what
only the code can: the workspace path is usable, the config folder's own modules
import, every pipeline, callback and subscriber type resolves and accepts its
parameters, and no trial asks for more GPUs or CPUs than there are.  Nothing is
written until all of it passes.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from expman.config import ExperimentPlan, load_plan
from expman.config.schema import EXECUTORS
from expman.errors import ConfigError
from expman.events import ExperimentFinished, ExperimentStarted, TrialFinished, TrialStarted
from expman.executors.devices import detect_devices, resource_problem
from expman.pipeline import Pipeline
from expman.serializable import (
    ConfigModuleError,
    InvalidParam,
    UnknownType,
    YAMLSerializable,
    builds_itself,
    import_config_modules,
    import_path,
    resolve_type,
    signature_of,
)
from expman.subscribers.base import Subscriber
from expman.subscribers.callbacks.base import Callback, hook_name

#: Raises the ConfigError for ``key`` of the document an entry came from.
ErrorAt = Callable[[str, str], ConfigError]


def prepare(
    config_dir: str | os.PathLike[str],
    *,
    workspace: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    max_concurrency: int | None = None,
    executor: str | None = None,
    values: Mapping[str, Any] | None = None,
) -> ExperimentPlan:
    """Load, validate and resolve an experiment; raises ConfigError, writes nothing.

    ``overrides`` are ``key=value`` strings (the command line's); ``values`` already
    typed values (dotted or nested keys), applied after them.
    """
    plan = load_plan(config_dir, overrides=overrides, values=values, workspace=workspace)
    if executor is not None:
        if executor not in EXECUTORS:
            raise ConfigError(
                f"unknown executor {executor!r}; expected one of {', '.join(EXECUTORS)}",
                file="<command line>",
                key="executor",
            )
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool)
        or not isinstance(max_concurrency, int)
        or max_concurrency < 1
    ):
        raise ConfigError(
            f"expected an integer >= 1, got {max_concurrency!r}",
            file="<command line>",
            key="max_concurrency",
        )
    plan = plan.with_execution(max_concurrency=max_concurrency, executor=executor)
    check_workspace_path(plan, from_argument=workspace is not None)
    check_buildables(plan)
    check_resources(plan)
    return plan


def check_workspace_path(plan: ExperimentPlan, *, from_argument: bool) -> None:
    """Refuse a workspace (or experiment folder in it) that exists but is not a directory."""
    blocker = next((p for p in (plan.workspace, *plan.workspace.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        what = "it" if blocker == plan.workspace else f"{str(blocker)!r} in it"
        message = (
            f"workspace {str(plan.workspace)!r} cannot be used: {what} is a file;"
            " expected a directory (or a path that does not exist yet)"
        )
        env = plan.documents.get("env.yaml")
        if not from_argument and env is not None and "workspace" in (env.data or {}):
            raise env.error("workspace", message)
        raise ConfigError(message, file="<command line>", key="workspace")
    if plan.path.exists() and not plan.path.is_dir():
        raise plan.documents["experiment.yaml"].error(
            "name",
            f"{str(plan.path)!r} is a file; expected the experiment's directory there"
            " (move the file or choose another workspace)",
        )


def check_resources(plan: ExperimentPlan) -> None:
    """Refuse a trial asking for more GPUs or CPUs than the local executors have.

    With Ray, resources are Ray's to schedule; Ray itself must be installed.
    """
    if plan.execution.executor == "ray":
        # Imported here: the Ray executor's module is loaded only for Ray experiments.
        from expman.executors.ray import import_ray

        import_ray()
        return
    if not any(t.resources for t in plan.trials):
        return
    devices = detect_devices(plan.execution.devices)
    for trial in plan.trials:
        problem = resource_problem(trial.resources, devices)
        if problem is not None:
            key, message = problem
            raise trial.entry_error(f"resources.{key}", f"trial {trial.name!r} {message}")


def check_buildables(plan: ExperimentPlan) -> None:
    """Import the config folder's modules, then resolve and check every buildable type."""
    with import_path(plan.config_dir):
        check_config_modules(plan)
        for trial in plan.trials:
            pipeline = trial.settings.get("pipeline")
            if pipeline is None:
                raise trial.error(
                    "pipeline",
                    "missing: settings.pipeline.type must name the pipeline"
                    " (a registered name or 'module:attr')",
                )
            if isinstance(pipeline, str):
                pipeline = {"type": pipeline}
            _check_buildable(trial.error, "pipeline", pipeline, "pipeline")
            callbacks = trial.settings.get("callbacks") or []
            if not isinstance(callbacks, list):
                raise trial.error("callbacks", "expected a list of {type: ..., ...} mappings")
            for i, cb in enumerate(callbacks):
                target = _check_buildable(trial.error, f"callbacks.{i}", cb, "callback")
                _refuse_wider_hooks(trial.error, f"callbacks.{i}.type", cb["type"], target)
        for entry in plan.subscribers:
            _check_buildable(entry.error, entry.key, entry.config, "subscriber")


def check_config_modules(plan: ExperimentPlan) -> None:
    """Import the config folder's own modules (their ``register`` calls name types).

    One that raises is a ConfigError naming its file, the line where the traceback
    says, and the error.
    """
    try:
        import_config_modules(plan.config_dir)
    except ConfigModuleError as exc:
        error = exc.error
        raise ConfigError(
            f"this module of the config folder cannot be imported: {type(error).__name__}: {error}",
            file=plan.config_dir / exc.file.name,
            line=exc.line,
        ) from error


def build_subscribers(plan: ExperimentPlan) -> list[Any]:
    """The subscribers named in YAML (``subscribers:``), built through the registry."""
    if not plan.subscribers:
        return []
    with import_path(plan.config_dir):
        return [YAMLSerializable.from_config(entry.config) for entry in plan.subscribers]


#: The events a run's callbacks never receive: they are about more than one run.
_WIDER_EVENTS = (ExperimentStarted, ExperimentFinished, TrialStarted, TrialFinished)


def _refuse_wider_hooks(error: ErrorAt, key: str, name: Any, target: Any) -> None:
    """A run's callback with experiment or trial hooks: say where such a callback belongs."""
    if not (isinstance(target, type) and issubclass(target, Callback)):
        return
    for event_type in _WIDER_EVENTS:
        hook = hook_name(event_type)
        if getattr(target, hook, None) is not getattr(Callback, hook, None):
            raise error(
                key,
                f"{name!r} defines {hook}, but a trial's callbacks see only their own run's "
                f"events, never {event_type.__name__}; to receive experiment and trial "
                "events, name it under subscribers: in experiment.yaml (or env.yaml) instead",
            )


def _check_buildable(error: ErrorAt, key: str, config: Any, kind: str) -> Any:
    """Resolve ``config``'s type and check its parameters; returns the type."""
    if not isinstance(config, Mapping) or "type" not in config:
        raise error(key, "expected a mapping with a 'type' key")
    try:
        target = resolve_type(str(config["type"]))
    except UnknownType as exc:
        known = ", ".join(_known_names(kind)) or "(none registered)"
        raise error(
            f"{key}.type", f"unknown type {exc.name!r} ({exc.detail}); known names: {known}"
        ) from None
    if kind == "pipeline" and not callable(getattr(target, "run", None)):
        raise error(f"{key}.type", f"{config['type']!r} has no run(ctx) method")
    if inspect.isabstract(target):
        missing = ", ".join(sorted(getattr(target, "__abstractmethods__", ())))
        raise error(
            f"{key}.type",
            f"{config['type']!r} is abstract: expected it to define {missing}",
        )
    if kind == "subscriber" and isinstance(target, type) and not is_async_callable_type(target):
        raise error(
            f"{key}.type",
            f"{config['type']!r} is not a subscriber: expected a class with an async __call__"
            " (an expman.Subscriber or expman.Callback)",
        )
    params = {k: v for k, v in config.items() if k != "type"}
    if not builds_itself(target):  # its own from_config: no signature to hold it to
        _check_signature(error, key, config, target, params)
    validate = getattr(target, "validate_params", None)
    if callable(validate):
        try:
            validate(params)
        except InvalidParam as exc:
            if exc.param.split(".")[0] in params:
                raise error(f"{key}.{exc.param}", f"{config['type']}: {exc.message}") from None
            # A default that does not fit (mode: auto for an unknown name): the entry.
            raise error(key, f"{config['type']}: {exc.param}: {exc.message}") from None
    return target


def _check_signature(
    error: ErrorAt, key: str, config: Any, target: Any, params: dict[str, Any]
) -> None:
    """Bind ``params`` to ``target``'s signature: an unknown or missing one is refused."""
    try:
        signature = signature_of(target)
        signature.bind(**params)
    except TypeError as exc:
        accepted = [
            name
            for name, p in signature.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        unknown = [] if takes_any else [k for k in params if k not in accepted]
        if unknown:
            raise error(
                f"{key}.{unknown[0]}",
                f"{config['type']}: unknown parameter {unknown[0]!r};"
                f" expected one of: {', '.join(accepted) or '(no parameters)'}",
            ) from None
        raise error(key, f"{config['type']}: {exc}") from None
    except ValueError:
        pass


def is_async_callable_type(cls: type) -> bool:
    """Whether instances of ``cls`` are async callables."""
    return inspect.iscoroutinefunction(cls.__call__)


def _known_names(kind: str) -> list[str]:
    """Registered names that fit the key: pipelines, callbacks or subscribers."""

    def fits(cls: Any) -> bool:
        if not isinstance(cls, type):
            return False
        if kind == "pipeline":
            return issubclass(cls, Pipeline) or callable(getattr(cls, "run", None))
        if kind == "subscriber":
            return issubclass(cls, (Subscriber, Callback))
        return issubclass(cls, Callback)

    return sorted(name for name, cls in YAMLSerializable.registered().items() if fits(cls))
