"""The values one swept key may take: a list, a choice, a range or a random distribution.

One axis of a sweep's ``grid`` or ``random`` block (and one dimension of a search
space) is written in one of these YAML forms:

==============================  =========================================================
form                            meaning
==============================  =========================================================
``[32, 64]``                    these values (grid only)
``{choice: [relu, gelu]}``      these values (grid: all; random: one drawn uniformly)
``{range: [start, stop]}``      like Python's ``range`` (``step`` 1), stop excluded
``{range: [start, stop, step]}``  ints, or floats if any bound is a float; random: one point
``{uniform: [lo, hi]}``         a float in [lo, hi] (grid only with ``num: N``: N evenly
                                spaced points, both ends included)
``{loguniform: [lo, hi]}``      a float whose log is uniform (bounds > 0; grid only with
                                ``num: N``: N log-spaced points, both ends included)
``{randint: [lo, hi]}``         an int in [lo, hi), hi excluded (grid: every one of them)
==============================  =========================================================

:func:`parse_distribution` turns that form into a :class:`Distribution` or raises a
:class:`~expman.errors.ConfigError` naming the file, the line and the key. Draws take
a :class:`random.Random` the caller seeded (with a str seed: hashed by SHA-512, so the
same in every process and under any ``PYTHONHASHSEED``).
"""

from __future__ import annotations

import difflib
import math
import random
from dataclasses import dataclass
from typing import Any

from expman.config.loading import join_key
from expman.config.schema import ErrorSite, shown, type_name

#: The keys of the mapping forms, in the order messages list them.
KINDS = ("choice", "range", "uniform", "loguniform", "randint")
#: Kinds that draw from a continuum: a grid needs ``num`` to place points on them.
CONTINUOUS = ("uniform", "loguniform")
#: The most points one grid axis may hold (more could never fit the plan's run limit).
MAX_POINTS = 1_000_000


@dataclass(frozen=True, slots=True)
class Distribution:
    """The values one swept key takes: its grid points and how to draw one at random.

    ``kind`` is ``"values"`` for a plain list and otherwise the mapping form's key;
    ``args`` are the list's items or the form's arguments as written; ``num`` is the
    number of grid points placed on a continuous distribution.
    """

    kind: str
    args: tuple[Any, ...]
    num: int | None = None

    def grid_points(self) -> tuple[Any, ...]:
        """Every value in grid order; ValueError for a continuous one without ``num``."""
        if self.kind in ("values", "choice"):
            return self.args
        if self.kind == "range":
            start, step, count = _range_parts(self.args)
            return tuple(start + i * step for i in range(count))
        if self.kind == "randint":
            return tuple(range(self.args[0], self.args[1]))
        if self.num is None:
            raise ValueError(f"a {self.kind} distribution has no grid points without 'num'")
        lo, hi = float(self.args[0]), float(self.args[1])
        if self.kind == "uniform":
            inner = tuple(lo + (hi - lo) * i / (self.num - 1) for i in range(1, self.num - 1))
        else:
            a, b = math.log10(lo), math.log10(hi)
            inner = tuple(
                10.0 ** (a + (b - a) * i / (self.num - 1)) for i in range(1, self.num - 1)
            )
        return (lo, *inner, hi)

    def size(self) -> int | None:
        """How many grid points (without building them); None for a continuous one without num."""
        if self.kind in ("values", "choice"):
            return len(self.args)
        if self.kind == "range":
            return _range_parts(self.args)[2]
        if self.kind == "randint":
            return int(self.args[1] - self.args[0])
        return self.num

    def sample(self, rng: random.Random) -> Any:
        """One draw, a function of ``rng``'s state alone."""
        if self.kind in ("values", "choice"):
            return self.args[rng.randrange(len(self.args))]
        if self.kind == "range":
            start, step, count = _range_parts(self.args)
            return start + rng.randrange(count) * step
        if self.kind == "randint":
            return rng.randrange(self.args[0], self.args[1])
        lo, hi = float(self.args[0]), float(self.args[1])
        if self.kind == "uniform":
            return rng.uniform(lo, hi)
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))

    def describe(self) -> object:
        """The YAML form back (what ``resolved.yaml`` and the journal hold)."""
        if self.kind == "values":
            return list(self.args)
        form: dict[str, object] = {self.kind: list(self.args)}
        if self.num is not None:
            form["num"] = self.num
        return form


def parse_distribution(site: ErrorSite, key: str, raw: object, *, grid: bool) -> Distribution:
    """The distribution written at ``key``; ConfigError (file, line, key) for any mistake.

    ``grid`` says whether the axis is a grid axis (every value is used: a plain list is
    fine, a continuous distribution needs ``num``) or a random one (one value drawn:
    ``num`` and plain lists are refused).
    """
    if isinstance(raw, list):
        if not grid:
            raise site.error(
                key,
                "a plain list is a grid axis; to draw one of these values write {choice: [...]}",
            )
        if not raw:
            raise site.error(key, "expected at least one value, got an empty list")
        return _sized(site, key, Distribution("values", tuple(raw)), grid)
    if not isinstance(raw, dict):
        raise site.error(
            key,
            f"expected a list of values or a distribution ({{{', '.join(KINDS)}: ...}}),"
            f" got {type_name(raw)} {shown(raw)}",
        )
    kinds = [k for k in raw if k != "num"]
    if len(kinds) != 1:
        if not kinds:
            raise site.error(key, f"expected one of: {', '.join(KINDS)}")
        raise site.error(
            key, f"expected exactly one distribution, got {', '.join(map(str, kinds))}"
        )
    kind = kinds[0]
    if kind not in KINDS:
        close = difflib.get_close_matches(str(kind), KINDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise site.error(
            join_key(key, kind),
            f"unknown distribution {str(kind)!r}{hint}; expected one of: {', '.join(KINDS)}",
        )
    at = join_key(key, kind)
    args = raw[kind]
    num = _num(site, key, kind, raw, grid=grid)
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise site.error(at, f"expected a non-empty list of values, got {shown(args)}")
        return _sized(site, key, Distribution("choice", tuple(args)), grid)
    if kind == "range":
        numbers = _numbers(site, at, args, (2, 3), "[start, stop] or [start, stop, step]")
        start, stop = numbers[0], numbers[1]
        step = numbers[2] if len(numbers) == 3 else 1
        if step == 0:
            raise site.error(at, "the step must not be 0")
        if start != stop and (stop - start > 0) != (step > 0):
            raise site.error(
                at,
                f"step {step} goes away from stop {stop}: the range from {start} is empty;"
                f" expected a {'positive' if stop > start else 'negative'} step",
            )
        if start == stop:
            raise site.error(at, f"the range from {start} to {stop} is empty (stop is excluded)")
        return _sized(site, key, Distribution("range", tuple(numbers)), grid)
    form = "[lo, hi]"
    numbers = _numbers(site, at, args, (2,), form, ints=kind == "randint")
    lo, hi = numbers
    if kind == "loguniform" and (lo <= 0 or hi <= 0):
        raise site.error(at, f"the bounds of a loguniform must be > 0, got {shown(args)}")
    if lo >= hi:
        raise site.error(at, f"expected lo < hi, got {shown(args)}")
    if kind in CONTINUOUS and grid and num is None:
        raise site.error(
            at,
            f"a {kind} distribution has no grid points; add 'num: N' for N points"
            " (both ends included) or move it to the random block",
        )
    return _sized(site, key, Distribution(kind, tuple(numbers), num), grid)


def _num(site: ErrorSite, key: str, kind: str, raw: dict[str, Any], *, grid: bool) -> int | None:
    if "num" not in raw:
        return None
    at = join_key(key, "num")
    if kind not in CONTINUOUS:
        raise site.error(at, f"'num' places grid points on uniform or loguniform, not on {kind}")
    if not grid:
        raise site.error(at, "'num' is for grid axes; a random axis draws one value")
    num = raw["num"]
    if isinstance(num, bool) or not isinstance(num, int) or num < 2:
        raise site.error(
            at,
            f"expected an integer >= 2 (both ends are points), got {type_name(num)} {shown(num)}",
        )
    return num


def _numbers(
    site: ErrorSite,
    key: str,
    args: object,
    arity: tuple[int, ...],
    form: str,
    *,
    ints: bool = False,
) -> list[int | float]:
    if not isinstance(args, list) or len(args) not in arity:
        raise site.error(key, f"expected {form}, got {shown(args)}")
    for i, value in enumerate(args):
        wanted = (int,) if ints else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            what = "an integer" if ints else "a number"
            raise site.error(
                join_key(key, i), f"expected {what}, got {type_name(value)} {shown(value)}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise site.error(join_key(key, i), f"expected a finite number, got {value}")
    return list(args)


def _sized(site: ErrorSite, key: str, dist: Distribution, grid: bool) -> Distribution:
    size = dist.size() if grid else None
    if size is not None and size > MAX_POINTS:
        raise site.error(key, f"{size:,} points; expected at most {MAX_POINTS:,} on one axis")
    return dist


def _range_parts(args: tuple[Any, ...]) -> tuple[Any, Any, int]:
    """(start, step, number of points) of a range's arguments, without building it."""
    start, stop = args[0], args[1]
    step = args[2] if len(args) == 3 else 1
    if all(isinstance(a, int) for a in args):
        return start, step, len(range(start, stop, step))
    count = max(0, math.ceil((stop - start) / step))
    # Rounding may put the last point on or past stop (stop is excluded, as in range).
    while count and (start + (count - 1) * step - stop) * step >= 0:
        count -= 1
    if isinstance(start, int):
        start = float(start)
    return start, step, count
