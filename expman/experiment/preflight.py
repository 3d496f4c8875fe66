"""Preflight: everything checked before an experiment writes anything.

:func:`prepare` loads, validates and resolves the config (a ConfigError naming the
file, line and key otherwise), applies the command line's choices, then checks what
only the code can: the workspace path is usable, the config folder's own modules
import, every pipeline, callback and subscriber type resolves and accepts its
parameters (the names its constructor declares, see :mod:`expman.experiment.parameters`,
then its ``validate_params``), and no trial asks for more GPUs or CPUs than there are.
Nothing is written until all of it passes.

:func:`parameter_notes` lists the types whose parameter names could not be checked
(a ``**kwargs`` constructor, an own ``from_config``), for ``expman validate``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from expman.config import ExperimentPlan, TrialSpec, load_plan
from expman.config.schema import EXECUTORS, shown, type_name
from expman.delivery import calls_are_async
from expman.errors import ConfigError
from expman.events import ExperimentFinished, ExperimentStarted, TrialFinished, TrialStarted
from expman.executors.devices import detect_devices, resource_problem
from expman.experiment.parameters import accepted_parameters, unchecked_reason
from expman.import_paths import ConfigModuleError, RefusedType, user_frames
from expman.integrations import exporter_class
from expman.pipeline import Pipeline, pipeline_problem
from expman.serializable import (
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
    sweep: Mapping[str, Any] | None = None,
) -> ExperimentPlan:
    """Load, validate and resolve an experiment; raises ConfigError, writes nothing.

    ``overrides`` are ``key=value`` strings (the command line's); ``values`` already
    typed values (dotted or nested keys), applied after them; ``sweep`` a sweep block
    of trials.yaml's form (the command line's ``-m``), joined to every entry's own.
    """
    plan = load_plan(
        config_dir, overrides=overrides, values=values, workspace=workspace, sweep=sweep
    )
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
    """Refuse a workspace (or experiment folder in it) that exists but is not a directory.

    A path that cannot even be looked at (a folder of mode 000 above it) is refused too.
    """

    def refuse(message: str) -> ConfigError:
        env = plan.documents.get("env.yaml")
        if not from_argument and env is not None and "workspace" in (env.data or {}):
            return env.error("workspace", message)
        return ConfigError(message, file="<command line>", key="workspace")

    if "\x00" in str(plan.workspace):  # from Python (argv cannot hold one); exists() says no
        raise refuse(
            f"workspace {str(plan.workspace)!r} cannot be used: it holds a NUL character;"
            " expected a directory path"
        )
    try:
        blocker = next((p for p in (plan.workspace, *plan.workspace.parents) if p.exists()), None)
        blocked = blocker is not None and not blocker.is_dir()
        experiment_is_file = plan.path.exists() and not plan.path.is_dir()
    except OSError as exc:
        raise refuse(
            f"workspace {str(plan.workspace)!r} cannot be used: {exc.filename}:"
            f" {exc.strerror or type(exc).__name__}; expected a directory you can read and write"
        ) from None
    if blocked:
        what = "it" if blocker == plan.workspace else f"{str(blocker)!r} in it"
        raise refuse(
            f"workspace {str(plan.workspace)!r} cannot be used: {what} is a file;"
            " expected a directory (or a path that does not exist yet)"
        )
    if experiment_is_file:
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
    # A config found buildable once is not checked again: a sweep's trials share theirs.
    buildable: set[bytes] = set()

    def seen(kind: str, config: Any) -> bool:
        try:
            mark = orjson.dumps([kind, config], option=orjson.OPT_SORT_KEYS)
        except TypeError:  # not plain data: checked every time
            return False
        if mark in buildable:
            return True
        buildable.add(mark)  # a config that fails raises before the next trial
        return False

    with import_path(plan.config_dir):
        check_config_modules(plan)
        for trial in plan.trials:
            pipeline = _pipeline_entry(trial)
            if not seen("pipeline", pipeline):
                _check_buildable(_pipeline_error(trial), "pipeline", pipeline, "pipeline")
            for i, cb in enumerate(_callback_entries(trial)):
                if seen("callback", cb):
                    continue
                target = _check_buildable(trial.error, f"callbacks.{i}", cb, "callback")
                _refuse_wider_hooks(trial.error, f"callbacks.{i}.type", cb["type"], target)
        for entry in plan.subscribers:
            _check_buildable(entry.error, entry.key, entry.config, "subscriber")
        for integration in plan.integrations:
            if integration.custom:
                exporter_class(integration)  # a ConfigError at its type if it is none


def check_config_modules(plan: ExperimentPlan) -> None:
    """Import the config folder's own modules (their ``register`` calls name types).

    One that raises is a ConfigError naming its file, the line where the traceback
    says, and the error.
    """
    try:
        import_config_modules(plan.config_dir)
    except ConfigModuleError as exc:
        where = plan.config_dir / exc.file.name
        raise _import_failed(exc, where, "this module of the config folder") from exc.error


def _import_failed(exc: ConfigModuleError, file: Any, what: str) -> ConfigError:
    """The ConfigError of a module that raised at import: its error, then its last frames."""
    error = exc.error
    text = str(error).splitlines()[0] if str(error) else ""
    if isinstance(error, SystemExit):
        text = f"sys.exit({error.code!r}) while it was imported"
    frames = "".join(f"\n  {frame}" for frame in exc.frames)
    return ConfigError(
        f"{what} cannot be imported: {type(error).__name__}: {text}{frames}",
        file=file,
        line=exc.line,
    )


def parameter_notes(plan: ExperimentPlan) -> list[str]:
    """One line per pipeline, callback or subscriber type whose parameters go unchecked.

    ``trial a: pipeline digits_pipeline:Mlp takes **kwargs: its parameters are not
    checked``: a misspelled key of such a type is not refused before it runs.  Call
    it on a plan from :func:`prepare`.
    """
    reasons: dict[str, str | None] = {}

    def reason(config: Any) -> str | None:
        name = str(config["type"])
        if name not in reasons:
            reasons[name] = unchecked_reason(resolve_type(name))
        return reasons[name]

    found: dict[tuple[str, str, str], list[str]] = {}
    notes: list[str] = []
    with import_path(plan.config_dir):
        for trial in plan.trials:
            entries = [("pipeline", _pipeline_entry(trial))]
            entries += [("callback", cb) for cb in _callback_entries(trial)]
            for kind, config in entries:
                why = reason(config)
                if why is not None:
                    found.setdefault((kind, str(config["type"]), why), []).append(trial.name)
        for (kind, name, why), trials in found.items():
            notes.append(f"{_trials_label(trials, len(plan.trials))}: {kind} {name} {why}")
        for entry in plan.subscribers:
            why = reason(entry.config)
            if why is not None:
                where = f"{entry.doc.path.name} {entry.key}"
                notes.append(f"{where}: subscriber {entry.config['type']} {why}")
    return notes


def _trials_label(names: list[str], of: int) -> str:
    if len(names) == 1:
        return f"trial {names[0]}"
    if len(names) == of:
        return "every trial"
    shown = ", ".join(names[:3])
    return f"trials {shown}" + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _pipeline_entry(trial: TrialSpec) -> Mapping[str, Any]:
    """``settings.pipeline`` as a mapping (a bare string is its type)."""
    pipeline = trial.settings.get("pipeline")
    if pipeline is None:
        raise trial.error(
            "pipeline",
            "missing: settings.pipeline.type must name the pipeline"
            " (a registered name or 'module:attr')",
        )
    if isinstance(pipeline, str):
        return {"type": pipeline}
    return pipeline  # type: ignore[no-any-return]


def _pipeline_error(trial: TrialSpec) -> ErrorAt:
    """Errors about ``settings.pipeline``: a bare string is its type, at ``pipeline`` itself.

    (Located at ``pipeline.type``, the error would name whichever file last set a
    mapping there, even when an override replaced it by the string.)
    """
    if not isinstance(trial.settings.get("pipeline"), str):
        return trial.error

    def error(key: str, message: str) -> ConfigError:
        return trial.error("pipeline" if key == "pipeline.type" else key, message)

    return error


def _callback_entries(trial: TrialSpec) -> list[Any]:
    callbacks = trial.settings.get("callbacks") or []
    if not isinstance(callbacks, list):
        raise trial.error("callbacks", "expected a list of {type: ..., ...} mappings")
    return callbacks


def build_subscribers(plan: ExperimentPlan) -> list[Any]:
    """The subscribers named in YAML (``subscribers:``), built through the registry.

    Each is checked first, as :func:`prepare` checks it (a plan from ``load_plan``
    did not go through it): nothing is built that is not a subscriber class.
    """
    if not plan.subscribers:
        return []
    built = []
    with import_path(plan.config_dir):
        for entry in plan.subscribers:
            _check_buildable(entry.error, entry.key, entry.config, "subscriber")
        for integration in plan.integrations:
            if integration.custom:
                exporter_class(integration)  # a ConfigError at its type if it is none
        for entry in plan.subscribers:
            try:
                built.append(YAMLSerializable.from_config(entry.config))
            except Exception as exc:  # its constructor raised: nothing has started yet
                name = entry.config["type"]
                raise entry.error(entry.key, f"{name!r} cannot be built: {_cause(exc)}") from exc
    return built


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
    """Resolve ``config``'s type and check its kind, then its parameters; returns the type.

    Nothing of the type is called before its kind is known to fit the key (importing
    its module is all): a pipeline class with ``run(ctx)``, a ``Callback`` subclass, a
    subscriber class with an async ``__call__``.  Only then is its own
    ``validate_params`` asked about the parameters.
    """
    if not isinstance(config, Mapping) or "type" not in config:
        raise error(key, "expected a mapping with a 'type' key")
    name = config["type"]
    if not isinstance(name, str):
        raise error(
            f"{key}.type",
            f"expected a string naming a registered {kind} or an import path"
            f" 'module:Class', got {type_name(name)}",
        )
    try:
        target = resolve_type(name)
    except UnknownType as exc:
        known = ", ".join(_known_names(kind)) or "(none registered)"
        raise error(
            f"{key}.type", f"unknown type {shown(exc.name)} ({exc.detail}); known names: {known}"
        ) from None
    except RefusedType as exc:
        raise error(f"{key}.type", f"{shown(name)} cannot be used: {exc.reason}") from None
    except ConfigModuleError as exc:
        raise _import_failed(exc, exc.file, f"the module of {shown(name)}") from exc.error
    problem = _kind_problem(target, kind)
    if problem is not None:
        raise error(f"{key}.type", f"{shown(name)} {problem}")
    if inspect.isabstract(target):
        missing = ", ".join(sorted(getattr(target, "__abstractmethods__", ())))
        raise error(
            f"{key}.type",
            f"{config['type']!r} is abstract: expected it to define {missing}",
        )
    params = {k: v for k, v in config.items() if k != "type"}
    accepted = accepted_parameters(target)
    if accepted is not None and accepted.checked:
        unknown = [k for k in params if k not in accepted.names]
        if unknown:
            raise error(
                f"{key}.{unknown[0]}",
                f"{config['type']}: unknown parameter {unknown[0]!r};"
                f" expected one of: {', '.join(accepted.names) or '(no parameters)'}",
            )
    if not builds_itself(target):  # its own from_config: no signature to hold it to
        try:
            signature_of(target).bind(**params)
        except TypeError as exc:
            raise error(key, f"{config['type']}: {exc}") from None
        except ValueError:  # no signature (a builtin)
            pass
    validate = getattr(target, "validate_params", None)
    if callable(validate):
        try:
            validate(params)
        except InvalidParam as exc:
            if exc.param.split(".")[0] in params:
                raise error(f"{key}.{exc.param}", f"{config['type']}: {exc.message}") from None
            # A default that does not fit (mode: auto for an unknown name): the entry.
            raise error(key, f"{config['type']}: {exc.param}: {exc.message}") from None
        except Exception as exc:  # its own check failed unexpectedly: the entry, and why
            raise error(key, f"{config['type']}: validate_params raised {_cause(exc)}") from exc
    return target


def _cause(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, then its last frames in the user's files, indented."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" + "".join(f"\n  {f}" for f in user_frames(exc))


def _kind_problem(target: Any, kind: str) -> str | None:
    """Why ``target`` cannot be the ``kind`` a key asks for, or None (nothing is called)."""
    if kind == "pipeline":
        return pipeline_problem(target)
    if not isinstance(target, type):
        return f"is not a class; expected a {kind} class"
    if kind == "callback" and not issubclass(target, Callback):
        return (
            "is not a callback: expected a subclass of expman.Callback"
            " (a run's callbacks receive its events and may stop it)"
        )
    if kind == "subscriber" and not calls_are_async(target):
        return (
            "is not a subscriber: expected a class with an async __call__"
            " (an expman.Subscriber or expman.Callback)"
        )
    return None


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
