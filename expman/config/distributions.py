"""STAND-IN until the sweeps branch lands (it owns this module): the shared API only.

Written by search-core against the API of issue 14's shared decisions, so that
SearchSpec and the samplers can be built and tested; replaced whole by the sweeps
helper's module when its branch is merged.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from expman.config.loading import join_key
from expman.config.schema import ErrorSite, shown, type_name

KINDS = ("values", "choice", "range", "uniform", "loguniform", "randint")


@dataclass(frozen=True, slots=True)
class Distribution:
    """One axis or dimension: its kind, its arguments and (grid only) a point count."""

    kind: str
    args: tuple[Any, ...]
    num: int | None = None

    def grid_points(self) -> tuple[Any, ...]:
        if self.kind in ("values", "choice"):
            return self.args
        if self.kind == "range":
            start, stop, step = (*self.args, 1)[:3] if len(self.args) == 2 else self.args
            out = []
            x = start
            while (x < stop) if step > 0 else (x > stop):
                out.append(x)
                x += step
            return tuple(out)
        if self.kind == "randint":
            return tuple(range(self.args[0], self.args[1]))
        if self.num is None:
            raise ValueError(f"{self.kind} needs num: N to be a grid axis")
        lo, hi = self.args
        if self.num == 1:
            return (lo,)
        if self.kind == "uniform":
            return tuple(lo + (hi - lo) * i / (self.num - 1) for i in range(self.num))
        a, b = math.log(lo), math.log(hi)
        return tuple(math.exp(a + (b - a) * i / (self.num - 1)) for i in range(self.num))

    def sample(self, rng: random.Random) -> Any:
        if self.kind in ("values", "choice"):
            return self.args[rng.randrange(len(self.args))]
        if self.kind == "range":
            points = self.grid_points()
            return points[rng.randrange(len(points))]
        if self.kind == "randint":
            return rng.randrange(self.args[0], self.args[1])
        lo, hi = self.args
        if self.kind == "uniform":
            return rng.uniform(lo, hi)
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))

    def describe(self) -> object:
        if self.kind == "values":
            return list(self.args)
        out: dict[str, Any] = {self.kind: list(self.args)}
        if self.num is not None:
            out["num"] = self.num
        return out


def parse_distribution(site: ErrorSite, key: str, raw: object, *, grid: bool) -> Distribution:
    """The distribution ``raw`` writes at ``key``; a ConfigError for any mistake."""
    if isinstance(raw, list):
        if not raw:
            raise site.error(key, "expected at least one value")
        return Distribution("values", tuple(raw))
    if not isinstance(raw, dict) or not (1 <= len(raw) <= 2):
        raise site.error(
            key, f"expected a list or a mapping such as {{choice: [...]}}, got {type_name(raw)}"
        )
    num = raw.get("num")
    kinds = [k for k in raw if k != "num"]
    if len(kinds) != 1 or kinds[0] not in KINDS[1:]:
        raise site.error(
            key, f"unknown distribution {shown(kinds)}; expected one of {', '.join(KINDS[1:])}"
        )
    kind = kinds[0]
    at = join_key(key, kind)
    args = raw[kind]
    if not isinstance(args, list):
        raise site.error(at, f"expected a list, got {type_name(args)}")
    if kind == "choice":
        if not args:
            raise site.error(at, "expected at least one value")
        return Distribution(kind, tuple(args))
    for v in args:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise site.error(at, f"expected numbers, got {type_name(v)} {shown(v)}")
    if kind == "range":
        if len(args) not in (2, 3) or (len(args) == 3 and args[2] == 0):
            raise site.error(at, "expected [start, stop] or [start, stop, step], step not 0")
        return Distribution(kind, tuple(args))
    if len(args) != 2:
        raise site.error(at, f"expected [lo, hi], got {len(args)} values")
    lo, hi = args
    if not lo < hi:
        raise site.error(at, f"expected lo < hi, got {shown(args)}")
    if kind == "loguniform" and lo <= 0:
        raise site.error(at, f"expected bounds > 0, got {shown(args)}")
    if kind == "randint" and not all(isinstance(v, int) for v in args):
        raise site.error(at, f"expected integers, got {shown(args)}")
    if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 1):
        raise site.error(join_key(key, "num"), f"expected an integer >= 1, got {shown(num)}")
    return Distribution(kind, (lo, hi), num)
