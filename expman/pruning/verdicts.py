"""What a pruning rule reads and says: ``Series`` in, ``Verdict`` out, and the ``Rule`` contract."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

SeriesState = Literal["running", "complete", "pruned", "failed"]
Action = Literal["continue", "prune"]
Compares = Literal["rung", "end", "none"]


@dataclass(frozen=True, slots=True)
class Series:
    """One competitor as a rule sees it.

    ``values`` maps epochs completed (>= 1) to the metric then (NaN possible); an
    epoch without a value was not reported.  ``state`` is how the competitor ended,
    or ``running``.
    """

    values: Mapping[int, float]
    state: SeriesState = "running"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One decision about one competitor after ``epochs`` epochs, as it is journaled.

    ``rung`` is the rung's index in the competitor's bracket (asha, hyperband; None for
    the step rules).  ``value`` is what was judged: the competitor's own value at that
    epoch, or for median/percentile its best value so far (Optuna's rule); None when it
    has none.  ``cutoff`` is what the value was compared with (None: nothing to compare
    with yet) and ``compared`` how many competitors' values the cutoff was computed
    over.  ``reason`` is one sentence for a prune, a short phrase for a continue.
    """

    action: Action
    rung: int | None
    value: float | None
    cutoff: float | None
    compared: int
    reason: str

    @property
    def pruned(self) -> bool:
        return self.action == "prune"


class Rule(Protocol):
    """A pruning rule: a pure function of its spec and the values it is shown.

    Contract (every rule):

    - ``due(competitor, epochs)``: whether a verdict is taken, and journaled, after
      ``epochs`` epochs.  asha/hyperband: at the rungs of the competitor's bracket
      only; median/percentile/threshold: at every epoch (their verdict before warm-up
      or off-interval is a ``continue``).
    - ``compares(competitor, epochs)``: what that verdict reads from the *other*
      competitors, so a sequential decision knows what to wait for: ``rung`` their
      values at these epochs, ``end`` how they ended (median/percentile read only
      complete ones), ``none`` nothing.  It assumes a value at every epoch.
    - ``judge(competitor, epochs, own, others)``: the verdict.  ``others`` excludes
      ``competitor`` and holds exactly the competitors the caller decided are visible;
      a rule never reads values past ``epochs`` of ``own`` and never keeps state
      between calls, so the same arguments give the same verdict in any process.
    """

    @property
    def name(self) -> str:
        """``asha``, ``hyperband``, ``median``, ``percentile`` or ``threshold``."""
        ...

    def due(self, competitor: str, epochs: int) -> bool: ...

    def compares(self, competitor: str, epochs: int) -> Compares: ...

    def judge(
        self, competitor: str, epochs: int, own: Series, others: Mapping[str, Series]
    ) -> Verdict: ...


def shown(value: float) -> str:
    """A metric value in a reason: four significant digits, ``nan`` for NaN."""
    return "nan" if math.isnan(value) else f"{value:.4g}"


def counted(count: int, noun: str) -> str:
    """``12 trials``, ``1 trial``: ``noun`` is the plural."""
    if count == 1 and noun.endswith("s"):
        return f"1 {noun[:-1]}"
    return f"{count} {noun}"


def epochs_text(epochs: int) -> str:
    return "1 epoch" if epochs == 1 else f"{epochs} epochs"
