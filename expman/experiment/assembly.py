"""Experiment: plan an experiment and run it; ``run_experiment`` and ``start_experiment``.

One experiment, one task group.  Its bus carries, in subscription order: the
mailbox writers (JSON logs and metrics, the journal), the workspace writer
(control: folders exist before a run starts), the caller's subscribers, the
runtime's own subscribers (per-run callbacks, stops, checkpoints), then the caller's
live event stream.  Control subscribers that come first see an event before
whatever later ones publish in response to it.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import inspect
import os
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from expman.bus import EventBus
from expman.config import ExperimentPlan, RunSpec, TrialSpec, load_plan
from expman.errors import ConfigError, WorkspaceError, WorkspaceLocked
from expman.events import Event, ExperimentFinished, ExperimentStarted, StopRequested
from expman.executors import make_executor
from expman.executors.devices import detect_devices, resource_problem
from expman.experiment.environment import Environment
from expman.pipeline import Pipeline
from expman.run.records import ResumePlan, RunOutcome
from expman.run.records import RunOutcome as RunResult
from expman.runtime.resume import plan_resume
from expman.runtime.scheduler import Scheduler
from expman.serializable import (
    InvalidParam,
    UnknownType,
    YAMLSerializable,
    import_path,
    resolve_type,
    signature_of,
)
from expman.status import RunStatus
from expman.subscribers.callbacks.base import Callback
from expman.subscribers.writers.eventlog import EventLogWriter
from expman.subscribers.writers.workspace import WorkspaceWriter
from expman.workspace.journal import JOURNALED, JournalWriter, read_journal
from expman.workspace.layout import ExperimentLayout
from expman.workspace.lock import ExperimentLock, lock_holder
from expman.workspace.logrouting import configure_structlog, log_to
from expman.workspace.logsink import LogFiles

Subscriber = Callback | Callable[[Event], Awaitable[None]]
log = structlog.get_logger("expman")

#: Events a caller's ``events()`` stream may hold before the experiment waits for it.
STREAM_BUFFER = 10_000


@dataclass(frozen=True, slots=True)
class ExperimentResult:
    """How an experiment ended: its status, directory and every run's result."""

    name: str
    status: str
    path: Path
    runs: tuple[RunResult, ...]
    duration: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(run.status for run in self.runs))

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.runs if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return self.status == "completed"


def experiment_status(runs: Iterable[RunResult]) -> RunStatus:
    """``failed`` if a run failed, else ``cancelled`` if one was interrupted, else completed."""
    statuses = {r.status for r in runs}
    for status in (RunStatus.FAILED, RunStatus.CANCELLED):
        if status in statuses:
            return status
    return RunStatus.COMPLETED


# -- planning -------------------------------------------------------------------------


def check_buildables(plan: ExperimentPlan) -> None:
    """Resolve every pipeline and callback type before anything runs (ConfigError if not)."""
    with import_path(plan.config_dir):
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
            _check_buildable(trial, "pipeline", pipeline, "run")
            callbacks = trial.settings.get("callbacks") or []
            if not isinstance(callbacks, list):
                raise trial.error("callbacks", "expected a list of {type: ..., ...} mappings")
            for i, cb in enumerate(callbacks):
                _check_buildable(trial, f"callbacks.{i}", cb, None)


def _check_buildable(trial: TrialSpec, key: str, config: Any, method: str | None) -> None:
    if not isinstance(config, Mapping) or "type" not in config:
        raise trial.error(key, "expected a mapping with a 'type' key")
    try:
        target = resolve_type(str(config["type"]))
    except UnknownType as exc:
        known = ", ".join(_known_names(method)) or "(none registered)"
        raise trial.error(
            f"{key}.type", f"unknown type {exc.name!r} ({exc.detail}); known names: {known}"
        ) from None
    if method is not None and not callable(getattr(target, method, None)):
        raise trial.error(f"{key}.type", f"{config['type']!r} has no {method}(ctx) method")
    if inspect.isabstract(target):
        missing = ", ".join(sorted(getattr(target, "__abstractmethods__", ())))
        raise trial.error(
            f"{key}.type",
            f"{config['type']!r} is abstract: expected it to define {missing}",
        )
    params = {k: v for k, v in config.items() if k != "type"}
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
            raise trial.error(
                f"{key}.{unknown[0]}",
                f"{config['type']}: unknown parameter {unknown[0]!r};"
                f" expected one of: {', '.join(accepted) or '(no parameters)'}",
            ) from None
        raise trial.error(key, f"{config['type']}: {exc}") from None
    except ValueError:
        pass
    validate = getattr(target, "validate_params", None)
    if callable(validate):
        try:
            validate(params)
        except InvalidParam as exc:
            if exc.param.split(".")[0] in params:
                raise trial.error(
                    f"{key}.{exc.param}", f"{config['type']}: {exc.message}"
                ) from None
            # A default that does not fit (mode: auto for an unknown name): the entry.
            raise trial.error(key, f"{config['type']}: {exc.param}: {exc.message}") from None


def _known_names(method: str | None) -> list[str]:
    """Registered names that fit the key: pipelines for ``run``, callbacks otherwise."""

    def fits(cls: Any) -> bool:
        if method is not None:
            return isinstance(cls, type) and (
                issubclass(cls, Pipeline) or callable(getattr(cls, method, None))
            )
        return isinstance(cls, type) and issubclass(cls, Callback)

    return sorted(name for name, cls in YAMLSerializable.registered().items() if fits(cls))


def pipeline_settings(spec: RunSpec) -> Mapping[str, Any]:
    pipeline = spec.settings["pipeline"]
    return {"type": pipeline} if isinstance(pipeline, str) else pipeline


def build_callbacks(spec: RunSpec) -> list[Any]:
    """Fresh callback objects for one run, from ``settings.callbacks``."""
    return [YAMLSerializable.from_config(cb) for cb in spec.settings.get("callbacks") or ()]


# -- running --------------------------------------------------------------------------


class ExperimentHandle:
    """A running experiment: its live events, its result, and a way to stop it."""

    def __init__(self, plan: ExperimentPlan, bus: EventBus) -> None:
        self.plan = plan
        self.bus = bus
        self._stream: MemoryObjectReceiveStream[Event] | None = None
        self._stream_sub: Any = None
        self._events_taken = False
        self._done = anyio.Event()
        self._result: ExperimentResult | None = None
        self._error: BaseException | None = None
        self._cancel_scope: anyio.CancelScope | None = None

    @property
    def path(self) -> Path:
        return self.plan.path

    def events(self) -> AsyncIterator[Event]:
        """Every event of the experiment, in order, ending when the experiment ends."""
        if self._events_taken:
            raise RuntimeError("events() can be iterated once per experiment")
        self._events_taken = True
        assert self._stream is not None
        return self._iterate(self._stream)

    @staticmethod
    async def _iterate(stream: MemoryObjectReceiveStream[Event]) -> AsyncIterator[Event]:
        async with stream:
            async for event in stream:
                yield event

    async def wait(self) -> ExperimentResult:
        """The experiment's result, once it has ended."""
        if not self._events_taken:
            # Nobody will read the stream: stop feeding it.
            self._events_taken = True
            if self._stream_sub is not None:
                self._stream_sub.unsubscribe()
            if self._stream is not None:
                self._stream.close()
        await self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        """Cancel every run now (no grace period); cleanup still records what happened."""
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    async def stop(self, reason: str = "stopped by caller") -> None:
        """Ask every run to stop (cooperatively first, then after the grace period)."""
        await self.bus.publish(
            StopRequested(
                experiment=self.plan.name, scope="experiment", reason=reason, source="user"
            )
        )


def prepare(
    config_dir: str | os.PathLike[str],
    *,
    workspace: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    max_concurrency: int | None = None,
    executor: str | None = None,
) -> ExperimentPlan:
    """Load, validate and resolve an experiment; raises ConfigError, writes nothing."""
    plan = load_plan(config_dir, overrides=overrides, workspace=workspace)
    if executor is not None:
        from expman.config.schema import EXECUTORS

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
        from expman.executors.ray import import_ray

        import_ray()
        return
    if not any(t.resources for t in plan.trials):
        return
    devices = detect_devices(plan.execution.devices)
    doc = plan.documents["trials.yaml"]
    for trial in plan.trials:
        problem = resource_problem(trial.resources, devices)
        if problem is not None:
            key, message = problem
            raise doc.error(f"[{trial.index}].resources.{key}", f"trial {trial.name!r} {message}")


@contextlib.asynccontextmanager
async def start_experiment(
    config_dir: str | os.PathLike[str] | ExperimentPlan,
    *,
    workspace: str | os.PathLike[str] | None = None,
    max_concurrency: int | None = None,
    overrides: Sequence[str] = (),
    subscribers: Sequence[Subscriber] = (),
    executor: str | None = None,
    fresh: bool = False,
    accept_changes: bool = False,
    on_plan: Callable[[ExperimentPlan, ResumePlan], None] | None = None,
) -> AsyncIterator[ExperimentHandle]:
    """Start an experiment in the background; yields a handle with its live events.

    ::

        async with expman.start_experiment("configs/") as handle:
            async for event in handle.events():
                ...
            result = await handle.wait()

    Leaving the block early (an exception, a cancellation) cancels the experiment.
    """
    if isinstance(config_dir, ExperimentPlan):
        plan = config_dir
    else:
        plan = await anyio.to_thread.run_sync(
            lambda: prepare(
                config_dir,
                workspace=workspace,
                overrides=overrides,
                max_concurrency=max_concurrency,
                executor=executor,
            )
        )
    if fresh:
        await anyio.to_thread.run_sync(_set_aside, plan.path)
    layout = ExperimentLayout(plan.path)
    lock = ExperimentLock(layout.lock_file)
    await anyio.to_thread.run_sync(lock.acquire)
    try:
        journal_state = await anyio.to_thread.run_sync(read_journal, layout.journal_file)
        resume = plan_resume(plan, journal_state, accept_changes=accept_changes)
        if on_plan is not None:
            on_plan(plan, resume)
        runner = _ExperimentRun(plan, layout, resume, subscribers)
        if lock.previous.get("pid"):
            runner.notes.append(
                (
                    "lock_taken_over",
                    {
                        "previous_pid": lock.previous.get("pid"),
                        "previous_host": lock.previous.get("host"),
                    },
                )
            )
        with single_errors():
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.execute)
                try:
                    yield runner.handle
                except BaseException:
                    runner.handle.cancel()
                    raise
                if not runner.handle._events_taken:
                    await runner.handle.wait()
    finally:
        lock.release()


@contextlib.contextmanager
def single_errors() -> Iterator[None]:
    """Re-raise a task group's lone error as itself, not wrapped in an ExceptionGroup.

    The caller of ``start_experiment`` should see the ``WorkspaceError`` (or its own
    exception) it would see without expman's task groups in between.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        inner: BaseException = group
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if inner is group:
            raise
        raise inner from None


class _ExperimentRun:
    """One execution of a plan: wires the bus, writers and scheduler, then runs."""

    def __init__(
        self,
        plan: ExperimentPlan,
        layout: ExperimentLayout,
        resume: ResumePlan,
        subscribers: Sequence[Subscriber],
    ) -> None:
        self.plan = plan
        self.layout = layout
        self.resume = resume
        self.subscribers = subscribers
        self.bus = EventBus(on_error=_report_subscriber_error)
        self.handle = ExperimentHandle(plan, self.bus)
        # The caller's events(): read straight from a bounded stream (no consumer task),
        # so a caller that never reads cannot hold up the end of the experiment.
        self.handle._stream_sub, self.handle._stream = self.bus.open_stream(
            Event, size=STREAM_BUFFER, name="caller.events"
        )
        self.files = LogFiles(on_error=self._workspace_failed)
        self.journal = JournalWriter(layout.journal_file, on_error=self._workspace_failed)
        self.outcomes: list[RunOutcome] = list(resume.done)
        self.max_concurrency = plan.execution.max_concurrency or os.cpu_count() or 1
        self.started = time.monotonic()
        self.notes: list[tuple[str, dict[str, Any]]] = []
        # Invariant: fault is the first workspace write error; once set, runs are stopping.
        self.fault: WorkspaceError | None = None
        self._task_group: TaskGroup | None = None

    def _workspace_failed(self, exc: OSError, path: str | None = None) -> None:
        """A write to the workspace failed: stop every run, then report it (once)."""
        if self.fault is not None:
            return
        where = path or exc.filename or self.plan.path
        self.fault = WorkspaceError(
            f"cannot write {where}: {exc.strerror or exc}. Runs were stopped and what was "
            "recorded is intact; fix the workspace (space, permissions) and run again to resume."
        )
        if self._task_group is not None:
            self._task_group.start_soon(self.handle.stop, f"workspace error: {exc.strerror}")

    async def execute(self) -> None:
        handle = self.handle
        handle._cancel_scope = anyio.CancelScope()
        try:
            with handle._cancel_scope:
                await self._execute()
        except OSError as exc:
            handle._error = WorkspaceError(
                f"cannot write {exc.filename or self.plan.path}: {exc.strerror or exc}"
            )
        except Exception as exc:
            handle._error = exc
        finally:
            if self.fault is not None and handle._error is None:
                handle._error = self.fault
            self.journal.close()
            if self.handle._stream_sub is not None:
                self.handle._stream_sub.unsubscribe()  # the caller's stream ends here
            handle._done.set()

    async def _execute(self) -> None:
        plan, layout, bus = self.plan, self.layout, self.bus
        configure_structlog()
        await anyio.to_thread.run_sync(WorkspaceWriter(plan, layout).prepare_experiment)
        await anyio.to_thread.run_sync(self.journal.open)
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            await tg.start(self.files.run)
            try:
                with log_to(self.files, str(layout.log_file), experiment=plan.name):
                    for note, fields in self.notes:
                        log.warning(note, **fields)
                    async with bus:
                        executor = make_executor(
                            plan.execution, self.max_concurrency, config_dir=plan.config_dir
                        )
                        scheduler, workspace = self._wire(executor)
                        await bus.publish(
                            ExperimentStarted(
                                experiment=plan.name,
                                path=str(plan.path),
                                runs=len(plan.runs),
                                trials=len(plan.trials),
                                resumed=self.resume.resumed,
                            )
                        )
                        try:
                            with import_path(plan.config_dir):
                                async with executor:
                                    tg.start_soon(workspace.prepare_ahead)
                                    try:
                                        self.outcomes.extend(await scheduler.run())
                                    finally:
                                        await workspace.aclose()
                        finally:
                            with anyio.move_on_after(10, shield=True):
                                await self._finish()
            finally:
                await self.files.aclose()

    def _wire(self, executor: Any) -> tuple[Scheduler, WorkspaceWriter]:
        plan, bus = self.plan, self.bus
        # Writers first: they only enqueue, so their logs follow publish order.
        bus.subscribe(
            Event,
            EventLogWriter(self.layout, self.files),
            mailbox=1024,
            batch=True,
            name="writer.logs",
        )
        bus.subscribe(JOURNALED, self.journal, mailbox=1024, batch=True, name="writer.journal")
        workspace = WorkspaceWriter(
            plan,
            self.layout,
            on_error=self._workspace_failed,
            todo=self.resume.todo,
            attempts={key: point.attempts for key, point in self.resume.points.items()},
            ahead=max(self.max_concurrency, WorkspaceWriter.BATCH),
        )
        bus.subscribe(workspace.EVENTS, workspace, name="writer.workspace")
        # The caller's subscribers before the runtime's: they see an event before
        # anything the run's callbacks or the runtime publish in response to it.
        for sub in self.subscribers:
            if isinstance(sub, Callback):
                sub.bind(bus, plan.name)
            bus.subscribe(Event, sub, name=_name_of(sub))
        scheduler = Scheduler(
            plan,
            bus,
            executor,
            self.layout,
            self.files,
            max_concurrency=self.max_concurrency,
            todo=self.resume.todo,
            resume=self.resume.points,
            callbacks=build_callbacks,
        )
        return scheduler, workspace

    async def _finish(self) -> None:
        # Runs cut off by a cancellation never recorded an outcome: they count as cancelled.
        ended = {(o.trial, o.repeat) for o in self.outcomes}
        cut = [
            RunOutcome(
                spec.trial.name,
                spec.repeat,
                RunStatus.CANCELLED,
                reason="experiment cancelled",
                seed=spec.seed,
            )
            for spec in self.plan.runs
            if spec.key not in ended
        ]
        runs = _in_plan_order(self.plan, (*self.outcomes, *cut))
        status = experiment_status(runs)
        duration = time.monotonic() - self.started
        result = ExperimentResult(
            name=self.plan.name, status=status, path=self.plan.path, runs=runs, duration=duration
        )
        self.handle._result = result
        await self.bus.publish(
            ExperimentFinished(
                experiment=self.plan.name, status=status, duration=duration, counts=result.counts
            )
        )


def _in_plan_order(plan: ExperimentPlan, runs: tuple[RunResult, ...]) -> tuple[RunResult, ...]:
    order = {spec.key: i for i, spec in enumerate(plan.runs)}
    return tuple(sorted(runs, key=lambda r: order.get((r.trial, r.repeat), len(order))))


def _name_of(sub: Any) -> str:
    return getattr(sub, "__qualname__", None) or type(sub).__name__


def _report_subscriber_error(name: str, event: Event | None, exc: BaseException) -> None:
    log.error(
        "subscriber_failed",
        subscriber=name,
        event_type=type(event).__name__ if event else None,
        exc_info=exc,
    )


def _set_aside(path: Path) -> None:
    """Move an existing experiment directory to a new name (never delete it)."""
    if not path.exists():
        return
    holder = lock_holder(ExperimentLayout(path).lock_file)
    if holder is not None:
        raise WorkspaceLocked(
            f"{path} is being run by pid {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')}; --fresh would move it away under that run"
        )
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.{stamp}-{n}")
        n += 1
    path.rename(target)


async def run_experiment(
    config_dir: str | os.PathLike[str],
    *,
    workspace: str | os.PathLike[str] | None = None,
    max_concurrency: int | None = None,
    overrides: Sequence[str] = (),
    subscribers: Sequence[Subscriber] = (),
    executor: str | None = None,
    fresh: bool = False,
    accept_changes: bool = False,
) -> ExperimentResult:
    """Run the experiment in ``config_dir`` to its end and return its result.

    Works in any running asyncio loop (a notebook cell included).  An experiment
    directory that already exists is resumed: finished runs are not run again.
    """
    async with start_experiment(
        config_dir,
        workspace=workspace,
        max_concurrency=max_concurrency,
        overrides=overrides,
        subscribers=subscribers,
        executor=executor,
        fresh=fresh,
        accept_changes=accept_changes,
    ) as handle:
        return await handle.wait()


class Experiment:
    """The original object API: ``await Experiment(...).run()``.

    ``name``, ``id`` and ``desc`` given here override experiment.yaml's.
    """

    def __init__(
        self,
        name: str | None = None,
        id: str | int | None = None,
        desc: str | None = None,
        env: Environment | None = None,
        config_dir_path: str | os.PathLike[str] = "configs",
    ) -> None:
        self.name = name
        self.id = id
        self.desc = desc
        self.env = env or Environment()
        self.config_dir_path = Path(config_dir_path)

    def plan(self, overrides: Sequence[str] = ()) -> ExperimentPlan:
        """The validated plan this experiment would run."""
        from dataclasses import replace

        from expman.config.schema import name_problem

        execution = dict(self.env.config.get("execution") or {})
        if "max_concurrency" in self.env.config:
            execution["max_concurrency"] = self.env.config["max_concurrency"]
        plan = prepare(
            self.config_dir_path,
            workspace=self.env.workspace,
            overrides=[*overrides, *(f"execution.{k}={v}" for k, v in execution.items())],
        )
        changes: dict[str, Any] = {}
        if self.name is not None:
            problem = name_problem(self.name)
            if problem:
                raise ConfigError(
                    f"{self.name!r} is not usable as a directory name: {problem}",
                    key="Experiment(name=...)",
                )
            changes["name"] = self.name
        if self.id is not None:
            changes["id"] = str(self.id)
        if self.desc is not None:
            changes["desc"] = self.desc
        return replace(plan, **changes) if changes else plan

    async def run(
        self, *, overrides: Sequence[str] = (), subscribers: Sequence[Subscriber] = ()
    ) -> ExperimentResult:
        plan = await anyio.to_thread.run_sync(lambda: self.plan(overrides))
        async with start_experiment(plan, subscribers=subscribers) as handle:
            return await handle.wait()
