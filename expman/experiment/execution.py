"""One execution of a plan: the bus, its subscribers, the scheduler, in one task group.

The bus's subscribers are wired from one declared list (:meth:`ExperimentRun.subscribers`),
each attached as it declares itself (:mod:`expman.subscribers.base`), in this order:

1. the caller's ``events()`` stream (a bounded stream, read by the caller);
2. ``writer.logs``: the JSON logs and metrics (batched mailbox);
3. ``writer.journal``: the resume journal (batched mailbox, its events only);
4. ``writer.workspace``: folders and snapshots (control, RunStarted only: a run's
   folders exist before its pipeline is called);
5. subscribers named in YAML (``subscribers:``), then the caller's (``subscribers=``);
6. the integrations (``integrations:``): mailbox subscribers whose export tasks run
   beside the scheduler and are flushed before ``ExperimentFinished``;
7. the runtime's own, from the scheduler: per-run callbacks, stops, checkpoints
   (control).

Control subscribers that come first see an event before whatever later ones publish
in response to it; a mailbox subscriber's queue holds its events in publish order
whatever its place.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from expman.bus import EventBus
from expman.config import ExperimentPlan, IntegrationSpec, RunSpec
from expman.errors import WorkspaceError, WorkspaceLinkError
from expman.events import (
    CheckpointStaged,
    Event,
    ExperimentFinished,
    ExperimentStarted,
    RunFinished,
)
from expman.executors.base import Executor
from expman.executors.choice import make_executor
from expman.experiment.handle import STREAM_BUFFER, ExperimentHandle
from expman.experiment.result import ExperimentResult, experiment_status, in_plan_order
from expman.experiment.subscriber_errors import SubscriberErrors
from expman.integrations import ExportContext, Exporter, make_exporter
from expman.integrations.driver import Integration
from expman.run.records import ResumePlan, RunOutcome
from expman.runtime.admission import AdmissionPolicy
from expman.runtime.scheduler import Scheduler
from expman.serializable import import_path
from expman.status import RunStatus
from expman.subscribers.callbacks.base import Callback
from expman.subscribers.writers.eventlog import EventLogWriter
from expman.subscribers.writers.workspace import WorkspaceWriter
from expman.workspace.journal import ExportRecord, JournalWriter
from expman.workspace.layout import ExperimentLayout
from expman.workspace.logrouting import configure_structlog, log_to
from expman.workspace.logsink import LogFiles

log = structlog.get_logger("expman")
_NO_EXPORT = ExportRecord()


class ExperimentRun:
    """One execution of a plan: wires the bus, writers and scheduler, then runs."""

    def __init__(
        self,
        plan: ExperimentPlan,
        layout: ExperimentLayout,
        resume: ResumePlan,
        subscribers: Sequence[Any] = (),
        *,
        plan_subscribers: Sequence[Any] = (),
        admission: AdmissionPolicy | None = None,
        run_callbacks: Sequence[Any] = (),
        integrations: bool = True,
    ) -> None:
        self.plan = plan
        self.layout = layout
        self.resume = resume
        #: The caller's subscribers (``subscribers=``), and those named in YAML.
        self.caller_subscribers = tuple(subscribers)
        self.plan_subscribers = tuple(plan_subscribers)
        self.admission = admission
        #: Callbacks every run gets a fresh copy of (after its YAML ones).
        self.run_callbacks = tuple(run_callbacks)
        #: The integrations' specs (none with ``integrations=False``), built in ``_execute``.
        self.integration_specs = plan.integrations if integrations else ()
        self.integrations: list[Integration] = []
        #: Integrations whose backend could not start: their error (the summary says so).
        self.unavailable: dict[str, str] = {}
        self.files = LogFiles(on_error=self._workspace_failed, within=layout.root)
        self.subscriber_errors = SubscriberErrors(self.files, str(layout.log_file), plan.name)
        self.bus = EventBus(on_error=self.subscriber_errors)
        self.handle = ExperimentHandle(plan, self.bus)
        # The caller's events(): read straight from a bounded stream (no consumer task),
        # so a caller that never reads cannot hold up the end of the experiment.
        self.handle._stream_sub, self.handle._stream = self.bus.open_stream(
            Event, size=STREAM_BUFFER, name="caller.events"
        )
        self.journal = JournalWriter(
            layout.journal_file,
            on_error=self._workspace_failed,
            before_durable=self._logs_durable,
            on_unencodable=self._unencodable,
        )
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
        problem = (
            str(exc)
            if isinstance(exc, WorkspaceLinkError)
            else f"cannot write {where}: {exc.strerror or exc}"
        )
        self.fault = WorkspaceError(
            f"{problem}. Runs were stopped and what was "
            "recorded is intact; fix the workspace (space, permissions) and run again to resume."
        )
        if self._task_group is not None:
            self._task_group.start_soon(self.handle.stop, f"workspace error: {exc.strerror}")

    async def _logs_durable(self, events: Sequence[Event]) -> None:
        """Before the journal durably says a run ended or saved: its logs are on disk."""
        paths: set[str] = set()
        for event in events:
            if isinstance(event, (RunFinished, CheckpointStaged)) and event.trial is not None:
                # A checkpoint: the metrics it continues from (MetricsTracker, results);
                # a run's end: its metrics and its log.
                run = self.layout.run(event.trial, event.repeat or 0)
                paths.add(str(run.metrics_file))
                if isinstance(event, RunFinished):
                    paths.add(str(run.log_file))
        if paths:
            await self.bus.settled(EventLogWriter.name)
            paths.add(str(self.layout.metrics_file))
            await self.files.sync(paths)

    def _unencodable(self, event: Event, exc: Exception) -> None:
        """An event the journal could not encode: said in its run's log (or the experiment's)."""
        trial, repeat = getattr(event, "trial", None), getattr(event, "repeat", None)
        if isinstance(trial, str) and isinstance(repeat, int):
            where, context = (
                self.layout.run(trial, repeat).log_file,
                {"trial": trial, "repeat": repeat},
            )
        else:
            where, context = self.layout.log_file, {}
        with log_to(self.files, str(where), experiment=self.plan.name, **context):
            log.error("journal_event_unencodable", type=type(event).__name__, error=str(exc))

    async def execute(self) -> None:
        handle = self.handle
        handle._cancel_scope = anyio.CancelScope()
        try:
            with handle._cancel_scope:
                await self._execute()
        except WorkspaceLinkError as exc:
            handle._error = exc  # it names the link already
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
                    await self._build_integrations()
                    async with bus:
                        executor = make_executor(
                            plan.execution, self.max_concurrency, config_dir=plan.config_dir
                        )
                        scheduler, workspace = self._wire(executor)
                        for integration in self.integrations:
                            tg.start_soon(integration.run, name=integration.name)
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
                            # The integrations finish one after the other.
                            flush = sum(i.spec.flush_timeout for i in self.integrations)
                            with anyio.move_on_after(10 + flush, shield=True):
                                await self._finish()
                    # Every mailbox has drained: the totals of failing subscribers.
                    self.subscriber_errors.summarise()
            finally:
                await self.files.aclose()

    def subscribers(self) -> list[Any]:
        """Every subscriber of the experiment's bus but the runtime's, in wiring order."""
        self.workspace = WorkspaceWriter(
            self.plan,
            self.layout,
            on_error=self._workspace_failed,
            todo=self.resume.todo,
            attempts={key: point.attempts for key, point in self.resume.points.items()},
            ahead=max(self.max_concurrency, WorkspaceWriter.BATCH),
        )
        return [
            EventLogWriter(self.layout, self.files),
            self.journal,
            self.workspace,
            *self.plan_subscribers,
            *self.caller_subscribers,
            *self.integrations,
        ]

    async def _build_integrations(self) -> None:
        """Each named integration's backend (imported off the loop) and its driver."""
        plan, resume = self.plan, self.resume
        context = ExportContext(
            experiment=plan.name,
            experiment_id=plan.id,
            desc=plan.desc,
            workspace=plan.workspace,
            root=self.layout.root,
        )
        in_plan = {spec.key: spec for spec in plan.runs}
        for spec in self.integration_specs:
            try:
                exporter = await anyio.to_thread.run_sync(self._make_exporter, spec, context)
            except Exception as exc:  # a tracker that cannot start never stops the runs
                error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("integration_unavailable", integration=spec.name, error=error)
                self.unavailable[spec.name] = error
                continue
            records = {
                (trial, repeat): record
                for (name, trial, repeat), record in resume.exports.items()
                if name == spec.name
            }
            # Runs that ended before, past what this tracker was known to have.
            catch_up = [
                (in_plan[o.trial, o.repeat], o.status, o.reason)
                for o in resume.done
                if (o.trial, o.repeat) in in_plan
                and o.epochs > 0
                and _behind(records.get((o.trial, o.repeat), _NO_EXPORT), o.epochs)
            ]
            self.integrations.append(
                Integration(
                    spec,
                    exporter,
                    plan=plan,
                    layout=self.layout,
                    publish=self.bus.publish,
                    settled=self.bus.settled,
                    records=records,
                    catch_up=catch_up,
                    logs_written=self._logs_written,
                )
            )

    def _make_exporter(self, spec: IntegrationSpec, context: ExportContext) -> Exporter:
        with import_path(self.plan.config_dir):  # a backend of the user's own
            return make_exporter(spec, context)

    async def _logs_written(self, paths: Sequence[str]) -> None:
        """Once this returns, the lines published so far are in ``paths`` (readable)."""
        await self.bus.settled(EventLogWriter.name)
        await self.files.flush()

    def _callbacks_of(self, spec: RunSpec) -> list[Any]:
        return build_callbacks(spec, self.run_callbacks)

    def _wire(self, executor: Executor) -> tuple[Scheduler, WorkspaceWriter]:
        plan, bus = self.plan, self.bus
        for sub in self.subscribers():
            if isinstance(sub, Callback):
                sub.bind(bus, plan.name)
            bus.attach(sub)
        scheduler = Scheduler(
            plan,
            bus,
            executor,
            self.layout,
            self.files,
            max_concurrency=self.max_concurrency,
            todo=self.resume.todo,
            resume=self.resume.points,
            callbacks=self._callbacks_of,
            admission=self.admission,
            done=self.resume.done,
            decisions=self.resume.decisions,
        )
        return scheduler, self.workspace

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
        for integration in self.integrations:
            await integration.finish()
        runs = in_plan_order(self.plan, (*self.outcomes, *cut))
        status = experiment_status(runs)
        duration = time.monotonic() - self.started
        result = ExperimentResult(
            name=self.plan.name,
            status=status,
            path=self.plan.path,
            runs=runs,
            duration=duration,
            integrations={
                **{i.spec.name: i.totals() for i in self.integrations},
                **{
                    name: {"sent": 0, "lost": 0, "retries": 0, "runs": [], "error": error}
                    | {"unavailable": True}
                    for name, error in self.unavailable.items()
                },
            },
        )
        self.handle._result = result
        await self.bus.publish(
            ExperimentFinished(
                experiment=self.plan.name, status=status, duration=duration, counts=result.counts
            )
        )


def _behind(record: ExportRecord, epochs: int) -> bool:
    """Whether a run that ended with ``epochs`` epochs is not all in the tracker yet."""
    return record.watermark < epochs - 1 or not record.ended


def build_callbacks(spec: RunSpec, shared: Sequence[Any] = ()) -> list[Any]:
    """Fresh callback objects for one run: ``settings.callbacks``, then copies of ``shared``."""
    # Callback.from_config refuses a type that is no Callback before building it.
    built = [Callback.from_config(cb) for cb in spec.settings.get("callbacks") or ()]
    return built + [copy.deepcopy(template) for template in shared]
