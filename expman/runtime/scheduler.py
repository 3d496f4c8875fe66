"""Scheduler: runs an experiment plan's runs concurrently under a capacity limit.

Structured concurrency only: one task group owns every run task, and each run owns
a task group for its watchers.  The scheduler wires the runtime's parts together,
each its own module with its semantics written down:

========================  ==========================================================
:mod:`.admission`         which waiting run starts when a slot is free (the policy)
:mod:`.attempts`          one run's attempts, retries and outcome
:mod:`.stopping`          stop requests, grace period, timeout, stall
:mod:`.checkpoints`       ``CheckpointDue`` answered atomically
:mod:`.dispatch`          the bus's events about a run to that run's callbacks
:mod:`.trials`            ``TrialStarted`` / ``TrialFinished``
:mod:`.active`            the runs between RunStarted and RunFinished
:mod:`.search`            a plan's adaptive search: the admission policy that samples
:mod:`.pruning`           a plan's pruner: judges runs at their rungs, stops losers
========================  ==========================================================

Its control subscriptions, in order (the order is what callbacks rely on): the
per-run callback dispatch for every event first, so callbacks see a
``CheckpointDue`` before the save it causes publishes ``CheckpointSaved`` and a
``StopRequested`` in the order it was asked; then stopping; then checkpoints; then
the search driver's wake-up on stops (after stopping: it asks stopping what a stop reached);
then the pruner (``EpochEnd`` after the run's callbacks: a run an EarlyStopping just
stopped is not judged; its wake-up on stops after stopping).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio

from expman.bus import EventBus, Subscription
from expman.config import ExperimentPlan, RunSpec
from expman.events import CheckpointDue, EpochEnd, Event, RunFinished, StopRequested
from expman.executors.base import Executor
from expman.run.records import ResumePoint, RunOutcome
from expman.runtime.active import ActiveRuns
from expman.runtime.admission import AdmissionPolicy, PlanOrder, admit
from expman.runtime.attempts import Attempts, CallbackFactory
from expman.runtime.checkpoints import Checkpoints
from expman.runtime.dispatch import CallbackDispatch
from expman.runtime.pruning import PruningDriver
from expman.runtime.search import SearchDriver
from expman.runtime.stopping import Stopping
from expman.runtime.trials import Trials
from expman.workspace.layout import ExperimentLayout
from expman.workspace.logsink import LogFiles


class Scheduler:
    """Executes the runs of a plan; the owner publishes experiment-level events."""

    def __init__(
        self,
        plan: ExperimentPlan,
        bus: EventBus,
        executor: Executor,
        layout: ExperimentLayout,
        files: LogFiles,
        *,
        max_concurrency: int,
        todo: Sequence[RunSpec] | None = None,
        resume: Mapping[tuple[str, int], ResumePoint] | None = None,
        callbacks: CallbackFactory | None = None,
        on_outcome: Callable[[RunOutcome], None] | None = None,
        admission: AdmissionPolicy | None = None,
        done: Sequence[RunOutcome] = (),
        decisions: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.plan = plan
        self.bus = bus
        self.limiter = anyio.CapacityLimiter(max_concurrency)
        self.todo = tuple(plan.runs if todo is None else todo)
        self.policy: AdmissionPolicy = admission or PlanOrder()
        self._on_outcome = on_outcome
        self.outcomes: list[RunOutcome] = []
        resume_points = dict(resume or {})
        active = ActiveRuns()
        self.stopping = Stopping(plan.name, bus, active, plan.execution)
        checkpoints = Checkpoints(bus, active, resume_points)
        self.attempts = Attempts(
            plan,
            bus,
            executor,
            layout,
            files,
            active=active,
            stopping=self.stopping,
            trials=Trials(plan.name, bus, self.todo),
            checkpoints=checkpoints,
            resume=resume_points,
            callbacks=callbacks,
            record=self._record,
        )
        self._subscriptions: list[Subscription[Any]] = [
            bus.subscribe(Event, CallbackDispatch(active), name="runtime.callbacks"),
            bus.subscribe(StopRequested, self.stopping, name="runtime.stops"),
            bus.subscribe(CheckpointDue, checkpoints, name="runtime.checkpoints"),
        ]
        #: The adaptive search (a plan with a ``search:`` block): it chooses, with
        #: ``admission`` (or plan order) choosing among the runs it lets start.
        self.search: SearchDriver | None = None
        if plan.search is not None:
            self.search = SearchDriver(
                plan, bus, self.stopping, todo=self.todo, done=done, inner=self.policy
            )
            self.policy = self.search
            self._subscriptions.append(
                bus.subscribe(StopRequested, self.search.stop_requested, name="runtime.search")
            )
        #: The pruner (a plan with a ``pruning:`` block); in sequential mode it admits
        #: in plan order, around the policy chosen so far.
        self.pruning: PruningDriver | None = None
        if plan.pruning is not None:
            self.pruning = PruningDriver(
                plan, bus, self.stopping, active, done=done, decisions=decisions
            )
            self.policy = self.pruning.policy(self.policy)
            self.attempts.judged_out = self.pruning.judged_out
            self._subscriptions += [
                bus.subscribe(EpochEnd, self.pruning, name="runtime.pruning"),
                bus.subscribe(RunFinished, self.pruning.run_finished, name="runtime.pruning.ends"),
                bus.subscribe(
                    StopRequested, self.pruning.stop_requested, name="runtime.pruning.stops"
                ),
            ]

    async def run(self) -> list[RunOutcome]:
        """Run every run of ``todo``; returns their outcomes in completion order."""
        attempts = self.attempts
        try:
            if self.pruning is not None:
                await self.pruning.replay()
            async with anyio.create_task_group() as tg:

                def start(spec: RunSpec, release: Callable[[], None]) -> None:
                    tg.start_soon(attempts.run, spec, release, name=f"run:{spec.label}")

                await admit(
                    self.todo,
                    self.limiter,
                    self.policy,
                    settle_stopped=attempts.settle_stopped,
                    settle_dropped=attempts.settle_dropped,
                    start=start,
                )
        finally:
            for sub in self._subscriptions:
                sub.unsubscribe()
        return self.outcomes

    def _record(self, outcome: RunOutcome) -> None:
        self.outcomes.append(outcome)
        if self.search is not None:
            self.search.run_ended(outcome)
        if self.pruning is not None:
            self.pruning.run_ended(outcome)
        if self._on_outcome is not None:
            self._on_outcome(outcome)
