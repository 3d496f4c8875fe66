"""Metric direction: which way is better for a metric, and whether a value beats the best.

Shared by the callbacks (EarlyStopping, CheckpointCallback, MetricsTracker) and the
results (best trial, summaries) so that "better" means the same thing everywhere:

* ``mode`` is ``min``, ``max`` or ``auto``; ``auto`` reads the metric's name
  (``loss``, ``err``, ``mse`` ... go down; ``acc``, ``f1``, ``auc`` ... go up).
* A value improves on the best only if it beats it **strictly** by the margin.
* NaN is never better than anything, so it never becomes the best.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal

from expman.serializable import InvalidParam

Mode = Literal["min", "max"]

#: Name fragments of metrics that should go down; checked before the "up" ones.
LOWER_IS_BETTER = (
    "loss",
    "err",
    "mse",
    "mae",
    "mape",
    "nll",
    "perplexity",
    "ppl",
    "cost",
    "regret",
    "distance",
    "wer",
    "cer",
    "time",
)
#: Name fragments of metrics that should go up.
HIGHER_IS_BETTER = (
    "acc",
    "f1",
    "auc",
    "precision",
    "recall",
    "score",
    "r2",
    "iou",
    "dice",
    "map",
    "bleu",
    "rouge",
    "reward",
    "return",
    "ndcg",
)


def infer_mode(metric: str) -> Mode | None:
    """``min`` or ``max`` from a metric's name, or None when the name does not say."""
    name = metric.lower()
    if any(hint in name for hint in LOWER_IS_BETTER):
        return "min"
    if any(hint in name for hint in HIGHER_IS_BETTER):
        return "max"
    return None


def preferred_metric(names: Sequence[str]) -> str | None:
    """The metric to rank by when none is named (None for no names).

    Held-out metrics (``val``, ``test``) before training ones, accuracy-like (higher is
    better) before loss-like, then the first seen; a name whose direction is unknown
    only when no name says its direction.
    """
    known = [(i, n) for i, n in enumerate(names) if infer_mode(n) is not None]
    if not known:
        return names[0] if names else None
    return min(
        known,
        key=lambda item: (
            not any(w in item[1].lower() for w in ("val", "test")),
            infer_mode(item[1]) != "max",
            item[0],
        ),
    )[1]


def resolve_mode(metric: str, mode: str, *, param: str = "mode") -> Mode:
    """The direction of ``metric`` for ``mode`` (``auto`` infers it); InvalidParam if unclear."""
    if mode == "min":
        return "min"
    if mode == "max":
        return "max"
    if mode != "auto":
        raise InvalidParam(param, f"expected 'min', 'max' or 'auto', got {mode!r}")
    found = infer_mode(metric)
    if found is None:
        raise InvalidParam(
            param,
            f"cannot tell from the name {metric!r} whether lower or higher is better;"
            " set mode: min or max",
        )
    return found


def improves(value: float, best: float | None, mode: Mode, margin: float = 0.0) -> bool:
    """True if ``value`` beats ``best`` strictly by more than ``margin`` (NaN never does)."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    if mode == "min":
        return value < best - margin
    return value > best + margin


def as_number(value: Any) -> float | None:
    """``value`` as a float if it is a real number (NumPy scalars too, not bools), else None."""
    kind = type(value)
    if kind is float or kind is int:  # the common case, without an ABC check per epoch
        return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def check_int(param: str, value: Any, minimum: int) -> int:
    """``value`` if it is an integer >= ``minimum``, else InvalidParam."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidParam(param, f"expected an integer >= {minimum}, got {value!r}")
    return value


def check_number(param: str, value: Any, minimum: float | None = None) -> float:
    """``value`` as a float if it is a finite number (>= ``minimum``), else InvalidParam."""
    number = as_number(value)
    if number is None or not math.isfinite(number) or (minimum is not None and number < minimum):
        bound = f" >= {minimum:g}" if minimum is not None else ""
        raise InvalidParam(param, f"expected a finite number{bound}, got {value!r}")
    return number


def check_bool(param: str, value: Any) -> bool:
    """``value`` if it is a bool, else InvalidParam."""
    if not isinstance(value, bool):
        raise InvalidParam(param, f"expected true or false, got {value!r}")
    return value


def check_name(param: str, value: Any) -> str:
    """``value`` if it is a non-empty string, else InvalidParam."""
    if not isinstance(value, str) or not value:
        raise InvalidParam(param, f"expected a metric name, got {value!r}")
    return value
