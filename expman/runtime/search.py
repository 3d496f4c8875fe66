"""Adaptive search at run time: each search trial sampled when its turn comes, journaled first.

A plan with a ``search:`` block holds placeholder trials (``TrialSpec.is_placeholder``:
trial *n* of the study of a trial entry, its settings still the entry's).  The
:class:`SearchDriver` is then the experiment's admission policy
(:mod:`expman.runtime.admission`):

* A waiting run of placeholder trial *n* waits until trials ``0 .. n - lag`` of its
  study have finished (every run of theirs ended, in this session or an earlier one),
  then the history is built from exactly those results (:func:`told`), ``suggest``
  samples the values (in a worker thread), ``TrialSampled`` is published and the run
  is admitted only once the journal has it (write-ahead: a crash can never start a
  trial whose values the journal does not know), as the sampled trial
  (``Admit(start_as=...)``).  So trial *n*'s values depend on the space, the seed,
  ``lag`` and the first ``n - lag`` results, never on timing, concurrency or crashes.
* The other runs of a sampled trial (its other repeats, or a trial sampled in an
  earlier session: :func:`with_sampled` puts the journal's values into the plan
  before resume planning) start with the recorded values: nothing is sampled twice.
* Runs of other trials never wait; among the runs ready to start, the policy the
  experiment was given (plan order by default) chooses.
* A failed or stopped trial counts as finished (told ``failed`` / ``pruned``), so it
  never holds a wait up; a stop that reaches a waiting run ends its wait at once
  (the run is handed back as planned and the admission loop settles it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import structlog

from expman.bus import EventBus
from expman.config import ExperimentPlan, RunSpec, TrialSpec, sampled_trial
from expman.errors import WorkspaceError
from expman.events import StopRequested, TrialSampled
from expman.jsonlines import dumps, loads
from expman.run.records import RunOutcome
from expman.runtime.admission import AdmissionPolicy, Admit, Drop, PlanOrder
from expman.runtime.stopping import Stopping
from expman.search.samplers import Told, suggest
from expman.status import RunStatus, run_status
from expman.workspace.journal import JOURNAL

log = structlog.get_logger("expman.runtime")


def materialise(
    plan: ExperimentPlan, sampled: Mapping[str, Mapping[str, Any]]
) -> tuple[ExperimentPlan, list[str]]:
    """``plan`` with every placeholder trial the journal says was sampled made that trial.

    Resume calls it before planning, so the config hashes match the recorded ones
    and the finished runs are skipped.  Values of trials the plan no longer holds
    are ignored, and so are values a changed config cannot use (a searched key that
    is no setting any more; resume refuses such a change unless it is accepted):
    that trial is sampled again; the second value returned says so, one line each.
    """
    if plan.search is None or not sampled:
        return plan, []
    trials: list[TrialSpec] = []
    problems: list[str] = []
    changed = False
    for trial in plan.trials:
        values = sampled.get(trial.name)
        if values is not None and trial.is_placeholder:
            try:
                trial = sampled_trial(plan, trial.name, values)
            except ValueError as exc:
                problems.append(f"trial {trial.name!r} is sampled again: {exc}")
            else:
                changed = True
        trials.append(trial)
    if not changed:
        return plan, problems
    by_name = {t.name: t for t in trials}
    runs = tuple(_as_run_of(spec, by_name[spec.trial.name]) for spec in plan.runs)
    return dataclasses.replace(plan, trials=tuple(trials), runs=runs), problems


def _as_run_of(spec: RunSpec, trial: TrialSpec) -> RunSpec:
    """``spec`` as a run of ``trial`` (the same repeat and seed), or itself if unchanged."""
    return spec if spec.trial is trial else RunSpec(trial=trial, repeat=spec.repeat, seed=spec.seed)


def told(
    number: int,
    values: Mapping[str, Any],
    outcomes: Iterable[RunOutcome],
    *,
    metric: str,
) -> Told:
    """What the sampler is told of a finished trial: its state and the mean of ``metric``.

    ``failed`` when a run failed, or a run that completed has no finite number for
    ``metric``; ``pruned`` when a pruner stopped the trial, or a run was stopped or
    cancelled before it reported the metric (and none failed); else ``complete`` with
    the mean over the runs (whatever order they are given in).  A run stopped early
    (EarlyStopping) that reported the metric counts with its last value: that is its
    result.
    """
    statuses: list[RunStatus | None] = []
    found: list[float] = []
    pruned = False
    for outcome in outcomes:
        status = run_status(outcome.status)
        statuses.append(status)
        value = outcome.metrics.get(metric)
        if status is RunStatus.PRUNED:
            pruned = True  # a pruner judged it: its last value is no result
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append(float(value))
        elif status is not RunStatus.COMPLETED:
            pruned = True
    if not statuses or any(s is None or s.is_failure for s in statuses):
        return Told(number=number, values=values, state="failed", value=None)
    if pruned:
        return Told(number=number, values=values, state="pruned", value=None)
    if len(found) != len(statuses) or not all(math.isfinite(v) for v in found):
        return Told(number=number, values=values, state="failed", value=None)
    # fsum: exactly rounded, so the mean does not depend on the order the runs ended in.
    mean = math.fsum(found) / len(found)
    return Told(number=number, values=values, state="complete", value=mean)


def missing_metric(outcomes: Iterable[RunOutcome], metric: str) -> str | None:
    """Why ``metric`` looks misnamed: a run that ended with metrics but not this one."""
    for outcome in outcomes:
        status = run_status(outcome.status)
        if status is None or status.is_failure or not outcome.metrics:
            continue
        if metric not in outcome.metrics:
            reported = ", ".join(sorted(outcome.metrics)[:12])
            return (
                f"search.metric {metric!r} is not among the metrics run"
                f" {outcome.trial}/run_{outcome.repeat} reported ({reported});"
                " fix search.metric in experiment.yaml"
            )
    return None


@dataclass(frozen=True, slots=True)
class SearchStatistics:
    """What the driver has done so far (for tests and logs)."""

    sampled: int  # trials sampled in this session
    reused: int  # runs started with values recorded before (other repeats, earlier sessions)
    waits: int  # times a choice had to wait for results


class SearchDriver:
    """The admission policy of a plan with a search: samples each search trial in turn.

    ``done`` are the runs resume found finished (their results are the history of
    earlier sessions); ``todo`` the runs this session executes.  The scheduler calls
    :meth:`run_ended` with each run's outcome and :meth:`stop_requested` on every stop.
    """

    def __init__(
        self,
        plan: ExperimentPlan,
        bus: EventBus,
        stopping: Stopping,
        *,
        todo: Sequence[RunSpec],
        done: Sequence[RunOutcome] = (),
        inner: AdmissionPolicy | None = None,
    ) -> None:
        if plan.search is None:
            raise ValueError(f"the plan of {plan.name!r} has no search block")
        self._plan = plan
        self._search = plan.search
        self._bus = bus
        self._stopping = stopping
        self._inner: AdmissionPolicy = inner or PlanOrder()
        #: Each study's trials by number (the study is its trial entry's id).
        self._studies: dict[str, dict[int, str]] = {}
        #: Trial name -> the sampled trial (from the plan, or sampled in this session).
        self._sampled: dict[str, TrialSpec] = {}
        for trial in plan.trials:
            if trial.search_number is None or trial.study is None:
                continue
            self._studies.setdefault(trial.study, {})[trial.search_number] = trial.name
            if trial.sampled is not None:
                self._sampled[trial.name] = trial
        # Invariant: _left[name] counts the trial's runs of todo that have not ended;
        # a trial of the plan with none left has finished (its outcomes are complete).
        self._left: dict[str, int] = {}
        for spec in todo:
            self._left[spec.trial.name] = self._left.get(spec.trial.name, 0) + 1
        self._outcomes: dict[str, list[RunOutcome]] = {}
        for outcome in done:
            self._outcomes.setdefault(outcome.trial, []).append(outcome)
        self._changed = anyio.Event()
        #: Set once a run ended without the search's metric: the search cannot go on
        #: (the sampler would be told nothing but failures); the owner stops it.
        self.problem: str | None = None
        self._stopped_for_problem = False
        self._count_sampled = 0
        self._count_reused = 0
        self._count_waits = 0

    def statistics(self) -> SearchStatistics:
        return SearchStatistics(self._count_sampled, self._count_reused, self._count_waits)

    # -- what the scheduler tells it -------------------------------------------------

    def run_ended(self, outcome: RunOutcome) -> None:
        """A run of this session ended (or was settled without starting)."""
        self._outcomes.setdefault(outcome.trial, []).append(outcome)
        if outcome.trial in self._left:
            self._left[outcome.trial] -= 1
        if self.problem is None and outcome.trial in self._sampled:
            self.problem = missing_metric((outcome,), self._search.metric)
        self._wake()

    async def stop_requested(self, event: StopRequested) -> None:
        """Any stop: a waiting run it reached is handed back at once."""
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # -- the policy --------------------------------------------------------------------

    async def choose(self, waiting: Sequence[RunSpec]) -> Admit | Drop:
        while True:
            if self.problem is not None and not self._stopped_for_problem:
                # A misnamed metric: every suggestion from here on would be blind.
                self._stopped_for_problem = True
                log.error("search_metric_missing", message=self.problem)
                await self._bus.publish(
                    StopRequested(
                        experiment=self._plan.name,
                        scope="experiment",
                        reason=self.problem,
                        source="search",
                    )
                )
            ready = [spec for spec in waiting if self._ready(spec)]
            if ready:
                break
            self._count_waits += 1
            await self._changed.wait()
        choice = await self._inner.choose(ready)
        if isinstance(choice, Drop) or choice.start_as is not None:
            return choice
        spec = choice.spec
        if spec.trial.search_number is None or self._stopping.stopping(spec):
            return choice
        if not spec.trial.is_placeholder:
            self._count_reused += 1
            return choice
        sampled = self._sampled.get(spec.trial.name)
        if sampled is None:
            sampled = await self._sample(spec)
            if sampled is None:  # a stop came while the sampler ran
                return choice
        else:
            self._count_reused += 1
        return Admit(spec, start_as=_as_run_of(spec, sampled))

    def _ready(self, spec: RunSpec) -> bool:
        """Whether ``spec`` may start now (or be handed back to be settled)."""
        trial = spec.trial
        if not trial.is_placeholder or trial.name in self._sampled:
            return True
        if self._stopping.stopping(spec):
            return True
        assert trial.study is not None
        assert trial.search_number is not None
        numbers = self._studies[trial.study]
        last = trial.search_number - self._search.lag
        return all(self._finished(numbers[k]) for k in range(last + 1) if k in numbers)

    def _finished(self, name: str) -> bool:
        return self._left.get(name, 0) == 0

    async def _sample(self, spec: RunSpec) -> TrialSpec | None:
        """Sample ``spec``'s trial, journal its values, and return the sampled trial."""
        trial = spec.trial
        assert trial.study is not None
        assert trial.search_number is not None
        number = trial.search_number
        history = self.history(trial.study, number - self._search.lag)
        values = await anyio.to_thread.run_sync(
            suggest, self._search, trial.study, number, history, abandon_on_cancel=True
        )
        # Exactly what the journal will hold (a float's text round-trips exactly), so a
        # resumed session materialises the same settings and config hash.
        values = loads(dumps(dict(values)))
        if self._stopping.stopping(spec):
            return None  # nothing journaled: resume samples it again, the same way
        sampled = sampled_trial(self._plan, trial.name, values)
        await self._bus.publish(
            TrialSampled(
                experiment=self._plan.name,
                trial=trial.name,
                number=number,
                values=values,
                study=trial.study,
            )
        )
        if not await self._bus.settled(JOURNAL):
            raise WorkspaceError(
                f"the journal could not record the values sampled for trial {trial.name!r};"
                " it was not started"
            )
        self._sampled[trial.name] = sampled
        self._count_sampled += 1
        return sampled

    def history(self, study: str, last: int) -> list[Told]:
        """What the sampler is told: trials ``0 .. last`` of ``study`` (all finished)."""
        numbers = self._studies[study]
        out: list[Told] = []
        for number in range(last + 1):
            name = numbers.get(number)
            trial = self._sampled.get(name) if name is not None else None
            if trial is None or trial.sampled is None:
                continue  # never sampled (stopped before its turn): nothing to tell
            outcomes = self._outcomes.get(trial.name, [])
            out.append(told(number, trial.sampled, outcomes, metric=self._search.metric))
        return out
