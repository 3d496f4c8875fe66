"""``make_rule``: the rule a ``pruning:`` block names."""

from __future__ import annotations

from expman.config.pruning import PruningSpec
from expman.pruning.rungs import RungRule
from expman.pruning.steps import PercentileRule, ThresholdRule
from expman.pruning.verdicts import Rule


def make_rule(spec: PruningSpec, *, seed: int, noun: str = "trials") -> Rule:
    """The rule of ``spec``; ``seed`` (the experiment's) places hyperband's competitors in
    brackets; ``noun`` (``trials`` or ``runs``, a plural) is what a reason counts."""
    if spec.uses_rungs:
        return RungRule(spec, seed, noun)
    if spec.type == "threshold":
        return ThresholdRule(spec, noun)
    return PercentileRule(spec, noun)
