"""``nanpercentile``: NumPy's default (linear) percentile, NaN ignored, in plain Python.

Ray Tune's ASHA cutoff and Optuna's PercentilePruner both call
``numpy.nanpercentile``; a decision at a tie must come out the same, so this is
NumPy's arithmetic step for step (``numpy/lib/_function_base_impl.py``: the
"linear" method's virtual index ``(n - 1) * q``, ``_get_indexes``, ``_get_gamma``
and ``_lerp``, which interpolates from the upper neighbour when the weight is at
least one half), not merely the same formula.  expman does not depend on NumPy;
``tests/test_pruning_rules.py`` checks the two agree bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def nanpercentile(values: Iterable[float], percent: float) -> float:
    """The ``percent`` percentile (0..100) of ``values`` with NaNs left out; NaN if none remain."""
    ordered = sorted(value for value in values if not math.isnan(value))
    n = len(ordered)
    if n == 0:
        return math.nan
    quantile = percent / 100
    virtual = (n - 1) * quantile
    previous = math.floor(virtual)
    if virtual >= n - 1:
        # NumPy points both neighbours at the last element and measures the weight
        # from index -1 (so it is above 1); kept because inf - inf makes it matter.
        low = high = ordered[-1]
        weight = virtual - (-1)
    else:
        low, high = ordered[previous], ordered[previous + 1]
        weight = virtual - previous
    diff = high - low
    if weight >= 0.5:
        return high - diff * (1 - weight)
    return low + diff * weight
