"""The ``pruning:`` block of experiment.yaml: cross-trial pruning, validated into a PruningSpec.

::

    pruning:
      type: asha               # asha | hyperband | median | percentile | threshold
      metric: val_loss
      mode: auto               # min | max | auto (from the metric's name)
      grace_period: 1          # epochs completed before the first rung
      reduction_factor: 3
      max_epochs: 81           # rungs lie below it (asha, hyperband)
      brackets: 1              # hyperband: how many brackets
      unit: trial              # trial: a rung's value is the mean over the trial's repeats
      determinism: sequential  # sequential | arrival
      rule: ray                # asha/hyperband: ray (Ray Tune's cutoff) | optuna (promotion)

``median`` takes ``n_startup_trials``, ``n_warmup_steps``, ``interval_steps`` and
``n_min_trials`` as Optuna's ``MedianPruner``; ``percentile`` those and ``percentile``;
``threshold`` ``lower`` and/or ``upper`` (and ``n_warmup_steps``, ``interval_steps``).
A step is an epoch completed: the value reported with ``epoch == k - 1`` is step ``k``.

What a rule decides is :mod:`expman.pruning`; when it decides, and what it does then,
is :mod:`expman.runtime.pruning`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from expman.config.loading import join_key
from expman.config.schema import (
    ErrorSite,
    check_int,
    check_keys,
    check_mode,
    check_number,
    expect_mapping,
    shown,
    type_name,
)

PruningType = Literal["asha", "hyperband", "median", "percentile", "threshold"]
TYPES: tuple[str, ...] = ("asha", "hyperband", "median", "percentile", "threshold")
UNITS = ("trial", "run")
DETERMINISM = ("sequential", "arrival")
RULES = ("ray", "optuna")

_COMMON = {"type", "metric", "mode", "unit", "determinism"}
_RUNGS = {"grace_period", "reduction_factor", "max_epochs", "brackets", "rule"}
_STEPS = {"n_warmup_steps", "interval_steps"}
#: The keys each type accepts besides the common ones.
TYPE_KEYS: Mapping[str, frozenset[str]] = {
    "asha": frozenset(_RUNGS),
    "hyperband": frozenset(_RUNGS),
    "median": frozenset(_STEPS | {"n_startup_trials", "n_min_trials"}),
    "percentile": frozenset(_STEPS | {"n_startup_trials", "n_min_trials", "percentile"}),
    "threshold": frozenset(_STEPS | {"lower", "upper"}),
}


@dataclass(frozen=True, slots=True)
class PruningSpec:
    """A pruner: its rule, the metric it compares and its parameters (defaults filled in).

    ``max_epochs`` None: rungs without an end.  ``brackets`` is 1 for asha; for
    hyperband the default is one bracket per rung.  ``percentile`` is 50 for median.
    """

    type: PruningType
    metric: str
    mode: Literal["min", "max"]
    unit: Literal["trial", "run"] = "trial"
    determinism: Literal["sequential", "arrival"] = "sequential"
    # asha, hyperband
    grace_period: int = 1
    reduction_factor: float = 4
    max_epochs: int | None = None
    brackets: int = 1
    rule: Literal["ray", "optuna"] = "ray"
    # median, percentile, threshold
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1
    percentile: float = 50.0
    lower: float | None = None
    upper: float | None = None
    #: The experiment's ``settings.seed`` (base.yaml < experiment.yaml < command line):
    #: hyperband's brackets derive from it and the trial ids.
    seed: int = 0

    @property
    def uses_rungs(self) -> bool:
        """asha and hyperband judge at rungs; the others at steps."""
        return self.type in ("asha", "hyperband")

    def describe(self) -> dict[str, Any]:
        """The block as resolved.yaml records it: the keys of its type, defaults filled in."""
        keys = ("type", "metric", "mode", "unit", "determinism", *sorted(TYPE_KEYS[self.type]))
        if self.type == "hyperband":
            keys = (*keys, "seed")
        out = {key: getattr(self, key) for key in keys}
        if self.type == "threshold":
            out = {k: v for k, v in out.items() if v is not None or k not in ("lower", "upper")}
        return out


def parse_pruning(site: ErrorSite, raw: object) -> PruningSpec:
    """The ``pruning`` block of ``site`` (experiment.yaml) as a PruningSpec.

    Every mistake is a ConfigError naming the file, line and key.
    """
    key = "pruning"
    block = expect_mapping(site, key, raw, allow_null=False)
    kind = block.get("type")
    if not isinstance(kind, str) or kind not in TYPES:
        at = join_key(key, "type") if "type" in block else key
        got = "nothing" if "type" not in block else f"{type_name(kind)} {shown(kind)}"
        raise site.error(at, f"expected a pruner type, one of {', '.join(TYPES)}; got {got}")
    check_keys(site, key, block, _COMMON | TYPE_KEYS[kind], {"type", "metric"})
    metric = block["metric"]
    if not isinstance(metric, str) or not metric.strip():
        raise site.error(
            join_key(key, "metric"),
            f"expected the name of a metric, got {type_name(metric)} {shown(metric)}",
        )
    values: dict[str, Any] = {
        "type": kind,
        "metric": metric,
        "mode": check_mode(site, join_key(key, "mode"), block.get("mode", "auto"), metric),
    }
    for name, choices in (("unit", UNITS), ("determinism", DETERMINISM), ("rule", RULES)):
        if name in block:
            values[name] = _choice(site, join_key(key, name), block[name], choices)
    if kind in ("asha", "hyperband"):
        values.update(_rungs(site, key, block, kind))
    else:
        values.update(_steps(site, key, block, kind))
    return PruningSpec(**values)


def _rungs(site: ErrorSite, key: str, block: Mapping[str, Any], kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    grace = check_int(site, join_key(key, "grace_period"), block.get("grace_period", 1), minimum=1)
    out["grace_period"] = grace
    at = join_key(key, "reduction_factor")
    factor = check_number(site, at, block.get("reduction_factor", 4))
    if not factor >= 2 or math.isinf(factor):
        raise site.error(
            at,
            "expected a number >= 2 (a rung keeps 1/reduction_factor),"
            f" got {shown(block.get('reduction_factor'))}",
        )
    out["reduction_factor"] = int(factor) if factor == int(factor) else factor
    max_epochs = block.get("max_epochs")
    if max_epochs is not None:
        max_epochs = check_int(site, join_key(key, "max_epochs"), max_epochs, minimum=1)
        if grace > max_epochs:
            raise site.error(
                join_key(key, "grace_period"),
                f"grace_period {grace} is above max_epochs {max_epochs}: no rung would be judged",
            )
        out["max_epochs"] = max_epochs
    at = join_key(key, "brackets")
    if kind == "asha":
        if block.get("brackets", 1) != 1:
            brackets = check_int(site, at, block["brackets"], minimum=1)
            if brackets != 1:
                raise site.error(at, "asha has one bracket; for more, use type: hyperband")
        out["brackets"] = 1
    else:
        possible = _rung_count(grace, out["reduction_factor"], max_epochs)
        if "brackets" in block:
            brackets = check_int(site, at, block["brackets"], minimum=1)
            if possible is not None and brackets > possible:
                raise site.error(
                    at,
                    f"expected at most {possible} brackets: with grace_period {grace},"
                    f" reduction_factor {out['reduction_factor']} and max_epochs {max_epochs}"
                    f" there are {possible} rungs",
                )
        else:
            if possible is None:
                raise site.error(
                    key, "hyperband needs max_epochs (or brackets) to know how many brackets"
                )
            brackets = possible
        out["brackets"] = brackets
    return out


def _rung_count(grace: int, factor: float, max_epochs: int | None) -> int | None:
    """How many rungs lie below ``max_epochs`` (at least one); None without a maximum."""
    if max_epochs is None:
        return None
    count = 0
    while grace * factor**count < max_epochs:
        count += 1
    return max(count, 1)


def _steps(site: ErrorSite, key: str, block: Mapping[str, Any], kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, minimum in (
        ("n_warmup_steps", 0),
        ("interval_steps", 1),
        ("n_startup_trials", 0),
        ("n_min_trials", 1),
    ):
        if name in block:
            out[name] = check_int(site, join_key(key, name), block[name], minimum=minimum)
    if kind == "percentile":
        at = join_key(key, "percentile")
        if "percentile" not in block:
            raise site.error(key, "missing key 'percentile' (a number in [0, 100])")
        value = check_number(site, at, block["percentile"])
        if not 0 <= value <= 100:
            raise site.error(at, f"expected a number in [0, 100], got {value}")
        out["percentile"] = float(value)
    if kind == "threshold":
        for name in ("lower", "upper"):
            if block.get(name) is not None:
                number = check_number(site, join_key(key, name), block[name])
                if math.isnan(number):
                    raise site.error(join_key(key, name), "expected a number, got NaN")
                out[name] = float(number)
        if "lower" not in out and "upper" not in out:
            raise site.error(key, "threshold needs lower, upper or both")
        if "lower" in out and "upper" in out and out["lower"] > out["upper"]:
            raise site.error(
                join_key(key, "lower"), f"lower {out['lower']} is above upper {out['upper']}"
            )
    return out


def _choice(site: ErrorSite, key: str, raw: object, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise site.error(
            key, f"expected one of {', '.join(choices)}, got {type_name(raw)} {shown(raw)}"
        )
    return str(raw)
