"""The step rules, median, percentile and threshold: Optuna's pruners, a step an epoch.

Step ``k`` is ``k`` epochs completed (the value reported with ``epoch == k - 1``),
so Optuna's ``n_warmup_steps`` w means: no prune before ``w`` epochs.  Each rule is
its Optuna pruner's ``prune`` read line by line:

- warm-up: nothing before step ``n_warmup_steps``;
- interval: a step is checked when it is the first reported at or after the latest
  ``n_warmup_steps + j * interval_steps`` (Optuna's ``_is_first_in_interval_step``;
  with a value every epoch that is those steps, and also the very first one, since
  the step before it counts as -1);
- ``median`` / ``percentile`` (``MedianPruner`` / ``PercentilePruner``): nothing until
  ``n_startup_trials`` others are complete (and at least one); the competitor's best
  value so far (NaN only if all are: then it is pruned) against the percentile of the
  complete others' values at this step (``100 - percentile`` in max mode, so
  ``percentile`` is the share kept), when at least ``n_min_trials`` of them have one
  and not all of those are NaN; worse than it: pruned;
- ``threshold`` (``ThresholdPruner``): the value at this step, NaN or outside
  ``[lower, upper]``: pruned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from expman.config.pruning import PruningSpec
from expman.pruning.percentiles import nanpercentile
from expman.pruning.verdicts import Compares, Series, Verdict, counted, epochs_text, shown


def checked(spec: PruningSpec, step: int, reported: Iterable[int]) -> bool:
    """Whether ``step`` is checked, given the steps ``reported`` so far (``step`` among them)."""
    if step < spec.n_warmup_steps:
        return False
    interval = spec.interval_steps
    nearest = (step - spec.n_warmup_steps) // interval * interval + spec.n_warmup_steps
    before = max((s for s in reported if s != step and s <= step), default=-1)
    return before < nearest


def _checked_when_contiguous(spec: PruningSpec, step: int) -> bool:
    """:func:`checked` when every step up to ``step`` has a value."""
    return checked(spec, step, range(1, step + 1))


@dataclass(frozen=True, slots=True)
class PercentileRule:
    """median and percentile (see the module docstring)."""

    spec: PruningSpec
    noun: str = "trials"

    @property
    def name(self) -> str:
        return self.spec.type

    def due(self, competitor: str, epochs: int) -> bool:
        return epochs >= 1

    def compares(self, competitor: str, epochs: int) -> Compares:
        return "end" if _checked_when_contiguous(self.spec, epochs) else "none"

    def judge(
        self, competitor: str, epochs: int, own: Series, others: Mapping[str, Series]
    ) -> Verdict:
        spec = self.spec
        if epochs not in own.values:
            return Verdict("continue", None, None, None, 0, "no value at this epoch")
        seen = {step: v for step, v in own.values.items() if step <= epochs}
        best = _best(seen.values(), spec.mode)
        complete = [series for series in others.values() if series.state == "complete"]
        if not complete or len(complete) < spec.n_startup_trials:
            wanted = max(spec.n_startup_trials, 1)
            phrase = f"{len(complete)} of {wanted} complete {self.noun} needed"
            return Verdict("continue", None, best, None, 0, phrase)
        if not checked(spec, epochs, seen):
            phrase = "warming up" if epochs < spec.n_warmup_steps else "between checks"
            return Verdict("continue", None, best, None, 0, phrase)
        if math.isnan(best):
            reason = f"{self.name}: after {epochs_text(epochs)} every {spec.metric} is NaN"
            return Verdict("prune", None, best, None, 0, reason)
        at_step = [series.values[epochs] for series in complete if epochs in series.values]
        finite = sum(1 for v in at_step if not math.isnan(v))
        if len(at_step) < spec.n_min_trials or finite == 0:
            phrase = f"{finite} complete {self.noun} at this epoch"
            return Verdict("continue", None, best, None, finite, phrase)
        percent = spec.percentile if spec.mode == "min" else 100 - spec.percentile
        cutoff = nanpercentile(at_step, percent)
        worse = best < cutoff if spec.mode == "max" else best > cutoff
        if not worse:
            return Verdict("continue", None, best, cutoff, finite, "within the cutoff")
        return Verdict(
            "prune", None, best, cutoff, finite, self._worse(epochs, best, cutoff, finite)
        )

    def _worse(self, epochs: int, best: float, cutoff: float, count: int) -> str:
        spec = self.spec
        head = (
            f"{self.name}: after {epochs_text(epochs)} best {spec.metric} {shown(best)} worse than"
        )
        if spec.type == "median":
            return f"{head} the median {shown(cutoff)} of {counted(count, self.noun)}"
        return (
            f"{head} cutoff {shown(cutoff)} (the best {spec.percentile:g}%"
            f" of {counted(count, self.noun)})"
        )


def _best(values: Iterable[float], mode: str) -> float:
    """Optuna's best intermediate value: NaNs ignored, NaN if there is nothing else."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan
    return max(finite) if mode == "max" else min(finite)


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """threshold (see the module docstring); ``others`` are never read."""

    spec: PruningSpec
    noun: str = "trials"

    @property
    def name(self) -> str:
        return self.spec.type

    def due(self, competitor: str, epochs: int) -> bool:
        return epochs >= 1

    def compares(self, competitor: str, epochs: int) -> Compares:
        return "none"

    def judge(
        self, competitor: str, epochs: int, own: Series, others: Mapping[str, Series]
    ) -> Verdict:
        spec = self.spec
        value = own.values.get(epochs)
        if value is None:
            return Verdict("continue", None, None, None, 0, "no value at this epoch")
        seen = [step for step in own.values if step <= epochs]
        if not checked(spec, epochs, seen):
            phrase = "warming up" if epochs < spec.n_warmup_steps else "between checks"
            return Verdict("continue", None, value, None, 0, phrase)
        head = f"{self.name}: after {epochs_text(epochs)} {spec.metric}"
        if math.isnan(value):
            return Verdict("prune", None, value, None, 0, f"{head} is NaN")
        if spec.lower is not None and value < spec.lower:
            reason = f"{head} {shown(value)} below lower {shown(spec.lower)}"
            return Verdict("prune", None, value, spec.lower, 0, reason)
        if spec.upper is not None and value > spec.upper:
            reason = f"{head} {shown(value)} above upper {shown(spec.upper)}"
            return Verdict("prune", None, value, spec.upper, 0, reason)
        return Verdict("continue", None, value, None, 0, "within the bounds")
