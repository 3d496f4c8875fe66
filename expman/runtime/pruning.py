"""Cross-trial pruning at run time: when a rule judges a run, what it sees, and what follows.

A plan with a ``pruning:`` block gets a :class:`PruningDriver`, an experiment-level
control subscriber of ``EpochEnd`` (and the scheduler's hooks for outcomes and stops).
The rule (:mod:`expman.pruning`) says what a judgement is; the driver says when:

* Each run's value of the metric is recorded at every epoch, as ``epochs`` completed
  (``epoch + 1``).  Where the rule is ``due`` (a rung; every step for the step rules)
  the run is judged while its pipeline waits in ``epoch_end``: a
  :class:`~expman.events.PruneDecision` is published (and journaled), and a prune is
  acted on only once the journal has it durably: ``StopRequested(scope="trial")``
  (``"run"`` with ``unit: run``), ``pruned=True``.  The trial's running repeats see
  ``epoch_end`` return True at once or at their next epoch; its repeats not yet
  started never start.  All of them end ``pruned``.
* A competitor is a trial (``unit: trial``: its value at a rung is the mean over its
  repeats that reached it) or a run (``unit: run``).
* ``determinism: sequential`` (the default): the judgement of a run at ``epochs``
  waits until every run of another competitor earlier in plan order has been judged
  at ``epochs`` (what a rung rule reads) or ended (what median/percentile read: only
  complete trials count, as in Optuna), and until its own trial's earlier repeats
  ended (at one slot they had); it sees exactly those runs, never a later one that
  happened to get there first.  A run that ends any way (failed, cancelled,
  stopped, pruned) releases the wait, so it never deadlocks; to keep it so, runs are
  admitted in plan order.  The decisions are then those of a ``max_concurrency: 1``
  run, whatever the concurrency, executor or timing.
* ``determinism: arrival``: judged at once against every competitor seen so far, as
  Ray Tune and Optuna do.
* Resume: the journal's decisions are folded back first (each run's recorded values,
  each decision taken); a run that reaches an epoch already judged gets the journaled
  decision again, never a new one, and the trials a journaled prune reached are
  stopped before anything is admitted, so their unfinished runs settle ``pruned``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import structlog

from expman.bus import EventBus
from expman.config import ExperimentPlan, PruningSpec, RunSpec
from expman.errors import WorkspaceError
from expman.events import EpochEnd, PruneDecision, RunFinished, StopRequested
from expman.pruning import Rule, Series, make_rule
from expman.run.records import RunOutcome
from expman.runtime.active import ActiveRuns
from expman.runtime.admission import AdmissionPolicy, Admit, Drop, PlanOrder
from expman.runtime.stopping import Stopping
from expman.status import RunStatus, run_status
from expman.workspace.journal import JOURNAL

log = structlog.get_logger("expman.runtime")

RunKey = tuple[str, int]
#: How often a run waiting for its judgement tells the stall watch it is alive (s).
_PATIENCE = 1.0
State = Literal["running", "complete", "pruned", "failed"]


def _state_of(status: RunStatus | None) -> State:
    if status is None:
        return "failed"
    if status is RunStatus.PRUNED:
        return "pruned"
    if status.counts_as_result:
        return "complete"
    return "failed"  # failed or cancelled: not a result, never "complete"


@dataclass(frozen=True, slots=True)
class PruningStatistics:
    """What the driver has done in this session (for tests, benchmarks and logs)."""

    decisions: int  # judgements taken in this session
    pruned: int  # of which prunes
    replayed: int  # epochs that met a decision the journal already held
    waits: int  # judgements that had to wait for earlier runs


class _Competitor:
    """One trial (or run) in the competition: its runs, and the rule's view of it."""

    __slots__ = ("ident", "runs", "series", "state", "values")

    def __init__(self, ident: str) -> None:
        self.ident = ident
        self.runs: list[RunKey] = []
        #: epochs -> the mean over its runs that have a value there (all of its runs).
        self.values: dict[int, float] = {}
        self.state: State = "running"
        self.series = Series(values=self.values, state="running")


class PruningDriver:
    """The experiment's pruner: judges runs at their rungs, journals, stops the losers.

    ``done`` are the runs resume found finished; ``decisions`` the journal's
    ``PruneDecision`` records (:attr:`~expman.workspace.journal.JournalState.decisions`).
    The scheduler calls :meth:`run_ended` with each outcome, :meth:`replay` before it
    admits anything, and wraps the admission policy with :meth:`policy`.
    """

    def __init__(
        self,
        plan: ExperimentPlan,
        bus: EventBus,
        stopping: Stopping,
        active: ActiveRuns,
        *,
        done: Sequence[RunOutcome] = (),
        decisions: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        if plan.pruning is None:
            raise ValueError(f"the plan of {plan.name!r} has no pruning block")
        self._plan = plan
        self._spec: PruningSpec = plan.pruning
        self._bus = bus
        self._stopping = stopping
        self._active = active
        self._sequential = self._spec.determinism == "sequential"
        self._by_run = self._spec.unit == "run"
        noun = "runs" if self._by_run else "trials"
        self.rule: Rule = make_rule(self._spec, seed=self._spec.seed, noun=noun)
        self._metric = self._spec.metric
        # Plan order: each run's rank, each competitor in order of its first run.
        self._rank: dict[RunKey, int] = {}
        self._specs: dict[RunKey, RunSpec] = {}
        self._competitor_of: dict[RunKey, _Competitor] = {}
        self._competitors: list[_Competitor] = []
        by_ident: dict[str, _Competitor] = {}
        for index, spec in enumerate(plan.runs):
            key = spec.key
            self._rank[key] = index
            self._specs[key] = spec
            ident = f"{spec.trial.id}/{spec.repeat}" if self._by_run else spec.trial.id
            competitor = by_ident.get(ident)
            if competitor is None:
                competitor = by_ident[ident] = _Competitor(ident)
                self._competitors.append(competitor)
            competitor.runs.append(key)
            self._competitor_of[key] = competitor
        self._order = {c.ident: i for i, c in enumerate(self._competitors)}
        self._keys = [spec.key for spec in plan.runs]
        #: (what, epochs) -> how many runs, from the first in plan order, have settled.
        self._frontier: dict[tuple[str, int], int] = {}
        #: Each run's recorded values: epochs completed -> the metric.
        self._values: dict[RunKey, dict[int, float]] = {key: {} for key in self._rank}
        self._ended: dict[RunKey, State] = {}
        #: (run, epochs) -> the journaled decision (this session's too).
        self._decided: dict[tuple[RunKey, int], Mapping[str, Any]] = {}
        #: (run, epochs) whose judgement is over: taken, replayed, or not needed (due
        #: elsewhere, or the run was ending): what a later run's judgement waits for.
        self._judged: set[tuple[RunKey, int]] = set()
        #: The competitors a journaled prune reached, with its reason.
        self._journaled_prunes: dict[str, tuple[RunKey, str]] = {}
        #: Runs the journal says were judged out, at how many epochs, and why.
        self._judged_out: dict[RunKey, tuple[int, str]] = {}
        #: The competitors pruned so far (journaled, or in this session).
        self._pruned: set[str] = set()
        #: The runs whose values count in their competitor's (see :meth:`_counts`).
        self._counted: set[RunKey] = set()
        self._changed = anyio.Event()
        self._stopped_for_missing = False
        #: Runs that reported the metric's name without a number (None, a string).
        self._named: set[RunKey] = set()
        self._count_decisions = 0
        self._count_pruned = 0
        self._count_replayed = 0
        self._count_waits = 0
        for record in decisions:
            self._fold(record)
        for outcome in done:
            self._end((outcome.trial, outcome.repeat), run_status(outcome.status))

    def statistics(self) -> PruningStatistics:
        return PruningStatistics(
            self._count_decisions, self._count_pruned, self._count_replayed, self._count_waits
        )

    # -- the journal folded back --------------------------------------------------------

    def _fold(self, record: Mapping[str, Any]) -> None:
        trial, repeat = record.get("trial"), record.get("repeat")
        if not isinstance(trial, str) or not isinstance(repeat, int):
            return
        run: RunKey = (trial, repeat)
        if run not in self._rank:
            return  # a trial the plan no longer holds
        epochs = int(record["epochs"])
        if record.get("metric", self._metric) != self._metric:
            # Judged on another metric (a block changed with --accept-changes): its
            # values do not compare with this one's; the decision still stands.
            if record.get("action") == "prune":
                self._journaled_prunes.setdefault(
                    self._competitor_of[run].ident, (run, str(record.get("reason") or ""))
                )
                self._pruned.add(self._competitor_of[run].ident)
            self._decided[(run, epochs)] = record
            self._judged.add((run, epochs))
            return
        reported = record.get("reported")
        if isinstance(reported, (int, float)):
            self._record(run, epochs, float(reported))
        self._decided[(run, epochs)] = record
        self._judged.add((run, epochs))
        if record.get("action") == "prune":
            self._judged_out[run] = (epochs, str(record.get("reason") or ""))
            ident = self._competitor_of[run].ident
            self._journaled_prunes.setdefault(ident, (run, str(record.get("reason") or "")))
            self._pruned.add(ident)

    def judged_out(self, spec: RunSpec) -> tuple[int, str] | None:
        """``(epochs, reason)`` if the journal says ``spec`` itself was pruned (a crash
        came before its RunFinished): it is settled as what it was, not as never started."""
        return self._judged_out.get(spec.key)

    async def replay(self) -> None:
        """Stop again what a journaled prune reached (before anything is admitted)."""
        for run, reason in self._journaled_prunes.values():
            competitor = self._competitor_of[run]
            if all(r in self._ended for r in competitor.runs):
                continue  # every run of it settled already
            await self._bus.publish(self._stop(self._specs[run], reason))

    # -- what the scheduler tells it ------------------------------------------------------

    def run_ended(self, outcome: RunOutcome) -> None:
        """A run of this session ended (or was settled without starting)."""
        self._end((outcome.trial, outcome.repeat), run_status(outcome.status))
        self._wake()

    async def stop_requested(self, event: StopRequested) -> None:
        """Any stop: a run waiting for its judgement that the stop reached stops waiting."""
        self._wake()

    def _end(self, run: RunKey, status: RunStatus | None) -> None:
        if run not in self._rank:
            return
        self._ended[run] = _state_of(status)
        competitor = self._competitor_of[run]
        for sibling in competitor.runs:
            if sibling not in self._counted and self._counts(sibling):
                for epochs in self._values[sibling]:
                    self._aggregate(competitor, epochs)
        if all(r in self._ended for r in competitor.runs):
            states = {self._ended[r] for r in competitor.runs}
            state: State = next(
                (s for s in ("failed", "pruned") if s in states), "complete"
            )  # any failure, else any prune, else complete
            competitor.state = state
            competitor.series = Series(values=competitor.values, state=state)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # -- the admission policy (sequential mode) -----------------------------------------

    def policy(self, inner: AdmissionPolicy | None) -> AdmissionPolicy:
        """The admission policy to use: plan order first in sequential mode, else ``inner``."""
        if not self._sequential:
            return inner or PlanOrder()
        return _FirstInPlan(self._rank, inner or PlanOrder())

    # -- judging ---------------------------------------------------------------------------

    def _record(self, run: RunKey, epochs: int, value: float) -> None:
        self._values[run][epochs] = value
        if self._counts(run):
            self._aggregate(self._competitor_of[run], epochs)

    def _counts(self, run: RunKey) -> bool:
        """Whether ``run``'s values count in its competitor's, as they would at one slot.

        Never once its competitor is pruned (what a pruned trial's other repeats report
        after that, no one-slot run has reported).  In sequential mode a trial's later
        repeat counts once its earlier repeats have ended (at one slot it started then).
        """
        competitor = self._competitor_of[run]
        if competitor.ident in self._pruned:
            return False
        if run in self._counted:
            return True
        if self._sequential:
            rank = self._rank[run]
            if any(r not in self._ended for r in competitor.runs if self._rank[r] < rank):
                return False
        self._counted.add(run)
        return True

    def _aggregate(self, competitor: _Competitor, epochs: int) -> None:
        found = [
            self._values[r][epochs]
            for r in competitor.runs
            if r in self._counted and epochs in self._values[r]
        ]
        if found:
            competitor.values[epochs] = found[0] if len(found) == 1 else _mean(found)

    async def __call__(self, event: EpochEnd) -> None:
        run = event.run_key
        if run is None or run not in self._rank:
            return
        epochs = event.epoch + 1
        value = _number(event.metrics.get(self._metric))
        if value is None:
            if self._metric in event.metrics:
                self._named.add(run)  # named, with no number: not a misnamed metric
            # Not reported (or not a number) at this epoch: not judged here, as Ray
            # continues a trial whose result lacks the metric; never waited on.
            self._judged.add((run, epochs))
            self._wake()
            return
        if (run, epochs) in self._decided:
            self._count_replayed += 1  # judged before this run resumed: the same again
            return
        self._record(run, epochs, value)
        try:
            await self._judge(run, event.epoch, epochs, value)
        finally:
            self._judged.add((run, epochs))
            self._wake()

    async def _judge(self, run: RunKey, epoch: int, epochs: int, value: float) -> None:
        competitor = self._competitor_of[run]
        if not self.rule.due(competitor.ident, epochs):
            return
        spec = self._specs[run]
        if self._stopping.stopping(spec):
            self._unjudged(run, spec, epoch)
            return  # it is ending anyway: its value counts, no judgement needed
        needs = self.rule.compares(competitor.ident, epochs)
        if self._sequential and needs != "none":
            if not await self._wait_for_earlier(run, epochs, needs):
                self._unjudged(run, spec, epoch)
                return  # a stop reached it while it waited
        own, others = self._view(run, epochs)
        verdict = self.rule.judge(competitor.ident, epochs, own, others)
        decision = PruneDecision(
            experiment=self._plan.name,
            trial=run[0],
            repeat=run[1],
            rule=self.rule.name,
            epoch=epoch,
            epochs=epochs,
            rung=verdict.rung,
            reported=value,
            value=verdict.value,
            cutoff=verdict.cutoff,
            compared=verdict.compared,
            action=verdict.action,
            reason=verdict.reason,
            unit=self._spec.unit,
            metric=self._metric,
        )
        self._decided[(run, epochs)] = {"action": verdict.action, "reason": verdict.reason}
        self._count_decisions += 1
        await self._bus.publish(decision)
        if verdict.action != "prune":
            return
        self._count_pruned += 1
        self._pruned.add(competitor.ident)
        if not await self._bus.settled(JOURNAL):
            raise WorkspaceError(
                f"the journal could not record the decision to prune {spec.label};"
                " the experiment stops rather than act on an unrecorded decision"
            )
        await self._bus.publish(self._stop(spec, verdict.reason))

    def _unjudged(self, run: RunKey, spec: RunSpec, epoch: int) -> None:
        """An interruption came before the judgement due at ``epoch``: keep it due.

        The run will run again on resume; a checkpoint of this epoch would resume it
        past the rung, never judged, so none is saved from here on (the interrupt's,
        a callback's, the final one): resume re-trains to the rung and judges it there.
        """
        stop = self._stopping.reason_for(spec)
        if stop is None or stop[1] != "experiment":
            return  # its trial or itself stopped: a decision, not run again
        active = self._active.get(run)
        if active is not None and active.ctx.checkpoints_from is None:
            active.ctx.checkpoints_from = epoch

    def _stop(self, spec: RunSpec, reason: str) -> StopRequested:
        return StopRequested(
            experiment=self._plan.name,
            trial=spec.trial.name,
            repeat=spec.repeat if self._by_run else None,
            scope="run" if self._by_run else "trial",
            reason=reason,
            source="pruning",
            pruned=True,
        )

    def _view(self, run: RunKey, epochs: int) -> tuple[Series, dict[str, Series]]:
        """The run's competitor and the others it is judged against."""
        competitor = self._competitor_of[run]
        if not self._sequential:
            others = {c.ident: c.series for c in self._competitors if c is not competitor}
            return competitor.series, others
        # Only what a max_concurrency 1 run would have seen: the earlier competitors,
        # and of its own, the repeats up to this one (later ones do not count yet).
        place = self._order[competitor.ident]
        others = {c.ident: c.series for c in self._competitors[:place]}
        return competitor.series, others

    async def _wait_for_earlier(self, run: RunKey, epochs: int, needs: str) -> bool:
        """Wait until every earlier run recorded ``epochs`` (or ended); False if stopped."""
        rank = self._rank[run]
        spec = self._specs[run]
        waited = False
        while not self._earlier_settled(rank, epochs, needs):
            if self._stopping.stopping(spec):
                return False
            if not waited:
                waited = True
                self._count_waits += 1
            with anyio.move_on_after(_PATIENCE):
                await self._changed.wait()
            # Waiting for a judgement is no stall: the stall watch sees the run alive.
            active = self._active.get(run)
            if active is not None:
                active.ctx.last_report = time.monotonic()
        # What the earlier runs decided may have reached this one (its trial pruned).
        return not self._stopping.stopping(spec)

    def _earlier_settled(self, rank: int, epochs: int, needs: str) -> bool:
        """Whether what a one-slot run would have seen before run ``rank`` is all there.

        The runs of other competitors before it have settled for ``epochs`` (judged
        there, or ended); its own competitor's earlier runs (a trial's earlier repeats)
        have ended, as they had at one slot before this one started.
        """
        run = self._keys[rank]
        competitor = self._competitor_of[run]
        first = self._rank[competitor.runs[0]]
        if not self._frontier_reaches(first, epochs, needs):
            return False
        return all(r in self._ended for r in competitor.runs if self._rank[r] < rank)

    def _frontier_reaches(self, rank: int, epochs: int, needs: str) -> bool:
        """Whether runs ``0 .. rank - 1`` of the plan have all settled for ``epochs``.

        What settles stays settled, so each (what, epochs) keeps a frontier that only
        moves on: over a whole experiment every run is looked at once per frontier.
        """
        at = ("end", 0) if needs == "end" else (needs, epochs)
        i = self._frontier.get(at, 0)
        keys = self._keys
        while i < rank and self._settled(keys[i], epochs, needs):
            i += 1
        if i > self._frontier.get(at, 0):
            self._frontier[at] = i
        return i >= rank

    def _settled(self, run: RunKey, epochs: int, needs: str) -> bool:
        if run in self._ended:
            return True
        return needs == "rung" and (run, epochs) in self._judged

    async def run_finished(self, event: RunFinished) -> None:
        """A run ended: one that never reported the metric, but others, means a misnamed one.

        Then the experiment stops (as a misnamed search metric does: a pruner that can
        judge nothing is a mistake, not a sweep without pruning).  A run that reported
        it at some epochs only, or NaN, or None now and then, is judged where it did.
        """
        run = event.run_key
        if run is None or run not in self._rank or self._stopped_for_missing:
            return
        if self._values[run] or run in self._named or not event.metrics:
            return
        if self._metric in event.metrics:
            return
        if event.status.is_failure or event.epochs == 0:
            return
        self._stopped_for_missing = True
        reported = ", ".join(sorted(event.metrics)[:12])
        message = (
            f"pruning.metric {self._metric!r} was never reported by {run[0]}/run_{run[1]},"
            f" which reported {reported}; fix pruning.metric in experiment.yaml"
        )
        log.error("pruning_metric_missing", message=message)
        await self._bus.publish(
            StopRequested(
                experiment=self._plan.name, scope="experiment", reason=message, source="pruning"
            )
        )


class _FirstInPlan:
    """Admits only the first waiting run in plan order (``inner`` may still hold it back)."""

    def __init__(self, rank: Mapping[RunKey, int], inner: AdmissionPolicy) -> None:
        self._rank = rank
        self._inner = inner

    async def choose(self, waiting: Sequence[RunSpec]) -> Admit | Drop:
        first = min(waiting, key=lambda spec: self._rank.get(spec.key, -1))
        return await self._inner.choose([first])


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _mean(values: Sequence[float]) -> float:
    # fsum: exactly rounded, so the mean does not depend on the order the runs reported.
    return math.fsum(values) / len(values)
