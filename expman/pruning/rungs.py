"""The rung rules, asha and hyperband: where the rungs lie, a competitor's bracket, the cutoff.

A bracket ``s`` has rungs at ``grace_period * reduction_factor ** (s + k)`` epochs,
k = 0, 1, ...; a rung whose milestone is not a whole number is judged at the first
epoch that reaches it (Ray compares ``training_iteration >= milestone``, Optuna
``step >= promotion step``), and only rungs judged before ``max_epochs`` count: at
``max_epochs`` a competitor is done, not pruned.  asha has the one bracket 0.

Two rules decide at a rung, each exactly as its library does:

- ``ray``: Ray Tune's ``AsyncHyperBandScheduler`` (``_Bracket.on_result``).  The
  metric is signed as Ray signs it (negated in min mode); the cutoff is
  ``nanpercentile(recorded, (1 - 1/rf) * 100)`` over the *other* competitors' values
  at the rung (NaN ones included, so ignored by the percentile); none yet: continue.
  A competitor's own NaN is never below a cutoff, so it continues.
- ``optuna``: Optuna's ``SuccessiveHalvingPruner`` (``min_resource`` grace_period,
  ``min_early_stopping_rate`` the bracket, ``bootstrap_count`` 0): a NaN is pruned;
  otherwise the competing values are the others' non-NaN values at the rung plus the
  own one, and the competitor is promoted if it is within the best
  ``len(competing) // rf`` of them (at least the best one).

A competitor's bracket is a function of ``(seed, competitor)`` by SHA-256, weighted
as Optuna's ``HyperbandPruner`` budgets its brackets: bracket ``b`` of ``n`` gets
``ceil(n * rf ** s / (s + 1))`` with ``s = n - 1 - b`` (the most aggressive bracket,
0, gets the most).  Ray draws a bracket from a global RNG with a softmax of rung
counts, which no resume could repeat.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from expman.config.pruning import PruningSpec
from expman.pruning.percentiles import nanpercentile
from expman.pruning.verdicts import Compares, Series, Verdict, counted, epochs_text, shown


def milestones(spec: PruningSpec, bracket: int) -> Iterator[tuple[int, int]]:
    """``(rung index, epoch judged at)`` of ``bracket``'s rungs, in order, without end
    when ``spec.max_epochs`` is None."""
    k = 0
    while True:
        # The same expression, in the same order, as Ray's and Optuna's milestones.
        at = math.ceil(spec.grace_period * spec.reduction_factor ** (k + bracket))
        if spec.max_epochs is not None and at >= spec.max_epochs:
            return
        yield k, at
        k += 1


def rung_epochs(spec: PruningSpec, bracket: int, *, up_to: int | None = None) -> tuple[int, ...]:
    """The epochs ``bracket``'s rungs are judged at, those up to ``up_to`` epochs (needed
    when ``spec.max_epochs`` is None)."""
    if spec.max_epochs is None and up_to is None:
        raise ValueError("rungs without max_epochs never end: pass up_to")
    out = []
    for _, at in milestones(spec, bracket):
        if up_to is not None and at > up_to:
            break
        out.append(at)
    return tuple(out)


def rung_at(spec: PruningSpec, bracket: int, epochs: int) -> int | None:
    """The index of ``bracket``'s rung judged after ``epochs`` epochs, or None."""
    for k, at in milestones(spec, bracket):
        if at == epochs:
            return k
        if at > epochs:
            return None
    return None


def bracket_budgets(spec: PruningSpec) -> tuple[int, ...]:
    """How many of every ``sum(budgets)`` competitors each bracket gets (Optuna's budgets)."""
    n = spec.brackets
    budgets = []
    for bracket in range(n):
        s = n - 1 - bracket
        budgets.append(math.ceil(n * spec.reduction_factor**s / (s + 1)))
    return tuple(budgets)


def bracket_of(spec: PruningSpec, seed: int, competitor: str) -> int:
    """The bracket ``competitor`` competes in: from SHA-256 of ``"<seed>/<competitor>"``
    (never ``hash()``, never a shared RNG), weighted by :func:`bracket_budgets`."""
    if spec.brackets == 1:
        return 0
    budgets = bracket_budgets(spec)
    digest = hashlib.sha256(f"{seed}/{competitor}".encode()).digest()
    n = int.from_bytes(digest[:8], "big") % sum(budgets)
    for bracket, budget in enumerate(budgets):
        n -= budget
        if n < 0:
            return bracket
    raise AssertionError("unreachable: n < sum(budgets)")


@dataclass(frozen=True, slots=True)
class RungRule:
    """asha or hyperband under ``spec.rule`` (see the module docstring)."""

    spec: PruningSpec
    seed: int
    noun: str = "trials"

    @property
    def name(self) -> str:
        return self.spec.type

    @property
    def rule(self) -> Literal["ray", "optuna"]:
        return self.spec.rule

    def bracket(self, competitor: str) -> int:
        return bracket_of(self.spec, self.seed, competitor)

    def rung(self, competitor: str, epochs: int) -> int | None:
        """The index of the rung ``competitor`` is judged at after ``epochs``, or None."""
        return rung_at(self.spec, self.bracket(competitor), epochs)

    def due(self, competitor: str, epochs: int) -> bool:
        return self.rung(competitor, epochs) is not None

    def compares(self, competitor: str, epochs: int) -> Compares:
        return "rung" if self.due(competitor, epochs) else "none"

    def judge(
        self, competitor: str, epochs: int, own: Series, others: Mapping[str, Series]
    ) -> Verdict:
        bracket = self.bracket(competitor)
        rung = rung_at(self.spec, bracket, epochs)
        if rung is None:
            return Verdict("continue", None, own.values.get(epochs), None, 0, "not a rung")
        value = own.values.get(epochs)
        if value is None:
            return Verdict("continue", rung, None, None, 0, "no value at this rung")
        # The others' values at this rung: those in the same bracket that reached it.
        rivals = [
            series.values[epochs]
            for name, series in others.items()
            if epochs in series.values
            and (self.spec.brackets == 1 or self.bracket(name) == bracket)
        ]
        if self.rule == "ray":
            return self._ray(bracket, rung, epochs, value, rivals)
        return self._optuna(bracket, rung, epochs, value, rivals)

    def _ray(
        self, bracket: int, rung: int, epochs: int, value: float, rivals: list[float]
    ) -> Verdict:
        sign = 1.0 if self.spec.mode == "max" else -1.0
        recorded = [sign * rival for rival in rivals]
        counted_over = sum(1 for rival in rivals if not math.isnan(rival))
        if counted_over == 0:
            return Verdict("continue", rung, value, None, 0, "no cutoff yet")
        signed_cutoff = nanpercentile(recorded, (1 - 1 / self.spec.reduction_factor) * 100)
        cutoff = sign * signed_cutoff
        if sign * value < signed_cutoff:
            return Verdict(
                "prune",
                rung,
                value,
                cutoff,
                counted_over,
                self._worse(bracket, rung, epochs, value, cutoff, counted_over),
            )
        return Verdict("continue", rung, value, cutoff, counted_over, "within the cutoff")

    def _optuna(
        self, bracket: int, rung: int, epochs: int, value: float, rivals: list[float]
    ) -> Verdict:
        if math.isnan(value):
            reason = f"{self._at(bracket, rung, epochs)} {self.spec.metric} is NaN"
            return Verdict("prune", rung, value, None, 0, reason)
        competing = sorted([rival for rival in rivals if not math.isnan(rival)] + [value])
        promotable = max(int(len(competing) // self.spec.reduction_factor) - 1, 0)
        if self.spec.mode == "max":
            cutoff = competing[-(promotable + 1)]
            promoted = value >= cutoff
        else:
            cutoff = competing[promotable]
            promoted = value <= cutoff
        if promoted:
            return Verdict("continue", rung, value, cutoff, len(competing), "promoted")
        reason = self._worse(bracket, rung, epochs, value, cutoff, len(competing))
        return Verdict("prune", rung, value, cutoff, len(competing), reason)

    def _at(self, bracket: int, rung: int, epochs: int) -> str:
        where = f"rung {rung} ({epochs_text(epochs)})"
        if self.spec.type == "hyperband":
            where = f"bracket {bracket}, {where}"
        return f"{self.name}: {where}"

    def _worse(
        self, bracket: int, rung: int, epochs: int, value: float, cutoff: float, count: int
    ) -> str:
        return (
            f"{self._at(bracket, rung, epochs)} {self.spec.metric} {shown(value)}"
            f" worse than cutoff {shown(cutoff)} of {counted(count, self.noun)}"
        )
