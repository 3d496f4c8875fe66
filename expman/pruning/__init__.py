"""What a pruning rule decides: pure functions of a ``PruningSpec`` and the values seen.

No asyncio, no bus, no files: a rule is told one competitor's series and the other
competitors' (those the caller decided it may see) and says ``continue`` or
``prune``.  When a decision is taken and what is done then is
:mod:`expman.runtime.pruning`'s.

- :mod:`~expman.pruning.verdicts`: ``Series``, ``Verdict``, the ``Rule`` contract;
- :mod:`~expman.pruning.rungs`: asha and hyperband (Ray's cutoff or Optuna's
  promotion), rung positions, ``bracket_of``;
- :mod:`~expman.pruning.steps`: median, percentile, threshold (Optuna's pruners);
- :mod:`~expman.pruning.percentiles`: NumPy's ``nanpercentile`` in plain Python;
- :mod:`~expman.pruning.rules`: ``make_rule``.
"""

from expman.pruning.percentiles import nanpercentile
from expman.pruning.rules import make_rule
from expman.pruning.rungs import RungRule, bracket_budgets, bracket_of, rung_at, rung_epochs
from expman.pruning.steps import PercentileRule, ThresholdRule
from expman.pruning.verdicts import Compares, Rule, Series, Verdict

__all__ = [
    "Compares",
    "PercentileRule",
    "Rule",
    "RungRule",
    "Series",
    "ThresholdRule",
    "Verdict",
    "bracket_budgets",
    "bracket_of",
    "make_rule",
    "nanpercentile",
    "rung_at",
    "rung_epochs",
]
