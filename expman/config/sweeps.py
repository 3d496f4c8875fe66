"""The sweep expander: a trial entry's ``sweep:`` block becomes one trial per point.

A block has up to four keys (axes are dotted paths into the merged settings, their
values written in the grammar of :mod:`~expman.config.distributions`)::

    sweep:
      name: "mlp-lr{lr:.0e}-bs{batch_size}"   # optional name template (swept keys)
      grid: {lr: [0.1, 0.01], batch_size: {range: [16, 65, 16]}}  # cartesian product
      zip: [{model.width: [128, 256], dropout: [0.1, 0.3]}]       # paired axes
      random: {samples: 5, seed: 7, wd: {loguniform: [1.0e-6, 1.0e-2]}}

The points are the product of the grid axes and the zip groups, in the order
written, the last one fastest; with a ``random`` block, each point stands for
``samples`` trials, each drawing every random axis. The command line's ``-m`` sweep
(the same form, given to :class:`SweepExpander`) joins every entry's own block.

Identity, independent of every other point (so growing an axis or ``samples``
changes no existing trial): the hex of a point is the SHA-256 of the canonical JSON
of its swept values ``{dotted key: value}`` (sorted keys; with a random block,
``[values, sample index]``), cut to :data:`HEX_DIGITS` (12) digits. A generated trial is named
``<entry name>-<hex>`` (or by the template) and has the id ``<entry id>.<hex>``;
its seeds derive from that id as any trial's. Sample ``k`` of point ``P`` draws from
``random.Random(f"{seed}/{entry id}/{hash of P's grid and zip values}/{k}")``.

The walk is lazy, and a sweep whose product passes the plan's run limit is refused
before one entry is made.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import math
import random
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from expman.config.distributions import Distribution, parse_distribution
from expman.config.entries import EntrySource, TrialEntry
from expman.config.expansion import MAX_RUNS
from expman.config.loading import join_key
from expman.config.merging import deep_merge
from expman.config.overrides import COMMAND_LINE
from expman.config.schema import (
    RESERVED_TRIAL_NAMES,
    ErrorSite,
    check_int,
    check_keys,
    check_name,
    expect_mapping,
    shown,
    type_name,
)
from expman.config.specs import Layer
from expman.errors import ConfigError

SWEEP_KEYS = {"name", "grid", "zip", "random"}
#: Keys of a ``random`` block that are not axes.
RANDOM_OPTIONS = ("samples", "seed")
#: Hex digits of a point's hash in generated names and ids. Not 8: with 32 bits, two of
#: 100,000 points share a name with probability 0.69 (the birthday bound, n^2 / 2^33);
#: with 48 bits, 2e-5 at 100,000 points and 2e-3 at the plan's limit of 1,000,000.
HEX_DIGITS = 12


@dataclass(frozen=True, slots=True)
class Axis:
    """One swept key, where it was written, and its values."""

    key: str
    dist: Distribution
    #: The key path of the axis in its site (``sweep.grid.lr``, or ``lr`` on the command line).
    at: str
    site: ErrorSite


@dataclass(frozen=True, slots=True)
class Sweep:
    """A parsed sweep block (or the join of an entry's and the command line's)."""

    grid: tuple[Axis, ...] = ()
    zips: tuple[tuple[Axis, ...], ...] = ()
    random: tuple[Axis, ...] = ()
    samples: int | None = None
    seed: int | None = None
    template: str | None = None
    #: Where the block itself is (for errors about the whole sweep).
    site: ErrorSite | None = None
    at: str = "sweep"
    has_random: bool = False

    @property
    def axes(self) -> tuple[Axis, ...]:
        return (*self.grid, *(a for group in self.zips for a in group), *self.random)

    @property
    def is_empty(self) -> bool:
        return not self.axes and not self.has_random


class _CommandLine:
    """The error site of the ``-m`` sweep: keys are the swept keys as typed."""

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, file=COMMAND_LINE, key=key or None)


COMMAND_LINE_SITE = _CommandLine()


def parse_sweep(site: ErrorSite, raw: object, *, prefix: str) -> Sweep:
    """The sweep block ``raw`` written at ``prefix`` of ``site`` ("" for the command line)."""
    block = expect_mapping(site, prefix, raw, allow_null=False)
    check_keys(site, prefix, block, SWEEP_KEYS)

    def at(*parts: object) -> str:
        key = prefix
        for part in parts:
            key = join_key(key, part)
        return key

    def axes(section_key: str, mapping: Mapping[str, Any], *, grid: bool) -> list[Axis]:
        out = []
        for key, value in mapping.items():
            if not isinstance(key, str) or not key or key.startswith(".") or key.endswith("."):
                raise site.error(section_key, f"expected dotted settings keys, got {shown(key)}")
            where = join_key(section_key, key) if prefix else key
            # ``settings.lr`` means ``lr``, as on the command line.
            name = key.removeprefix("settings.") if key != "settings." else key
            out.append(Axis(name, parse_distribution(site, where, value, grid=grid), where, site))
        return out

    grid = axes(at("grid"), expect_mapping(site, at("grid"), block.get("grid")), grid=True)
    for axis in grid:
        _check_distinct(axis)
    zips = []
    raw_zip = block.get("zip")
    groups = [raw_zip] if isinstance(raw_zip, dict) else raw_zip
    if groups is not None and not isinstance(groups, list):
        raise site.error(
            at("zip"), f"expected a list of mappings of paired axes, got {type_name(groups)}"
        )
    for i, group in enumerate(groups or []):
        group_key = at("zip", i) if isinstance(raw_zip, list) else at("zip")
        group_axes = axes(group_key, expect_mapping(site, group_key, group), grid=True)
        lengths = {a.key: len(a.dist.grid_points()) for a in group_axes}
        if len(set(lengths.values())) > 1:
            first = group_axes[0]
            odd = next(a for a in group_axes if lengths[a.key] != lengths[first.key])
            raise site.error(
                odd.at,
                f"zip axes must have equal lengths: {odd.key!r} has {lengths[odd.key]} values,"
                f" {first.key!r} has {lengths[first.key]}",
            )
        if group_axes:
            zips.append(tuple(group_axes))
    samples = seed = None
    random_axes: list[Axis] = []
    has_random = "random" in block
    if has_random:
        random_key = at("random")
        random_block = expect_mapping(site, random_key, block["random"])
        options = {k: random_block[k] for k in RANDOM_OPTIONS if k in random_block}
        if "samples" in options:
            samples = check_int(site, at("random", "samples"), options["samples"], minimum=1)
        if "seed" in options:
            seed = check_int(site, at("random", "seed"), options["seed"])
        drawn = {k: v for k, v in random_block.items() if k not in RANDOM_OPTIONS}
        random_axes = axes(random_key, drawn, grid=False)
    template = block.get("name")
    if template is not None and not isinstance(template, str):
        raise site.error(at("name"), f"expected a name template (a string), got {shown(template)}")
    sweep = Sweep(
        grid=tuple(grid),
        zips=tuple(zips),
        random=tuple(random_axes),
        samples=samples,
        seed=seed,
        template=template,
        site=site,
        at=prefix,
        has_random=has_random,
    )
    _check_unique(sweep.axes)
    return sweep


def _check_distinct(axis: Axis) -> None:
    """A grid axis's written values differ: a repeated one would make the same point twice."""
    if axis.dist.kind not in ("values", "choice"):
        return  # ranges and spaced points never repeat
    seen: set[bytes] = set()
    for value in axis.dist.grid_points():
        try:
            text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        except TypeError:  # what JSON cannot hold is refused later, where it is resolved
            continue
        if text in seen:
            raise axis.site.error(
                axis.at, f"the value {shown(value)} appears twice; expected distinct values"
            )
        seen.add(text)


def _check_unique(axes: Sequence[Axis]) -> None:
    seen: dict[str, Axis] = {}
    for axis in axes:
        if axis.key in seen:
            raise axis.site.error(
                axis.at,
                f"{axis.key!r} is swept twice (also at {seen[axis.key].at or 'the command line'})",
            )
        seen[axis.key] = axis


def join_sweeps(own: Sweep, extra: Sweep) -> Sweep:
    """An entry's sweep with the command line's axes added (a key in both is an error)."""
    for axis in extra.axes:
        mine = next((a for a in own.axes if a.key == axis.key), None)
        if mine is not None:
            raise COMMAND_LINE_SITE.error(
                axis.key,
                f"{axis.key!r} is swept on the command line and in the trial entry"
                f" ({_where(mine)}); sweep it in one place",
            )

    def one(name: str, a: Any, b: Any) -> Any:
        if a is not None and b is not None and a != b:
            raise COMMAND_LINE_SITE.error(
                name, f"the command line's {name} {b!r} differs from the entry's {a!r}"
            )
        return a if a is not None else b

    return Sweep(
        grid=(*own.grid, *extra.grid),
        zips=(*own.zips, *extra.zips),
        random=(*own.random, *extra.random),
        samples=one("samples", own.samples, extra.samples),
        seed=one("seed", own.seed, extra.seed),
        template=one("name", own.template, extra.template),
        site=own.site,
        at=own.at,
        has_random=own.has_random or extra.has_random,
    )


def _where(axis: Axis) -> str:
    """``file:line: key`` of an axis, as its errors would name it."""
    error = axis.site.error(axis.at, "")
    line = f":{error.line}" if error.line is not None else ""
    return f"{error.file}{line}: {error.key}"


class SweepExpander:
    """The :class:`~expman.config.expansion.Expander` of ``sweep:`` blocks.

    ``lower`` are the settings layers below the entries (base.yaml, experiment.yaml):
    a swept key must exist in their merge with the entry's settings. ``sweep`` is the
    command line's block (the YAML form), joined to every entry's own.
    """

    #: Each generated entry is the checked entry with a checked name and swept settings.
    checks_entries = True

    def __init__(self, lower: Sequence[Layer] = (), sweep: Mapping[str, Any] | None = None):
        self.lower = tuple(lower)
        self.extra = (
            parse_sweep(COMMAND_LINE_SITE, dict(sweep), prefix="") if sweep is not None else None
        )
        if self.extra is not None and self.extra.is_empty:
            raise COMMAND_LINE_SITE.error("", "a sweep needs at least one axis")

    def __repr__(self) -> str:
        return f"SweepExpander(command line: {self.extra is not None})"

    def __call__(self, entry: TrialEntry, /) -> Iterator[TrialEntry] | tuple[TrialEntry]:
        sweep = None
        if entry.sweep is not None:
            sweep = parse_sweep(entry.source, entry.sweep, prefix="sweep")
            if sweep.is_empty and self.extra is None:
                raise entry.error("sweep", "expected at least one axis in grid, zip or random")
        if self.extra is not None:
            sweep = join_sweeps(sweep, self.extra) if sweep is not None else self.extra
        if sweep is None:
            return (entry,)
        merged = deep_merge([*(layer.settings for layer in self.lower), entry.settings])
        for axis in sweep.axes:
            _check_exists(axis, merged, entry)
        seed = sweep.seed if sweep.seed is not None else merged.get("seed", 0)
        fields = _template_fields(sweep, entry)
        _check_size(sweep, entry)
        return _points(entry, sweep, seed, fields)


def _check_exists(axis: Axis, merged: Mapping[str, Any], entry: TrialEntry) -> None:
    node: Any = merged
    for part in axis.key.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
            continue
        close = difflib.get_close_matches(axis.key, list(_dotted_keys(merged)), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise axis.site.error(
            axis.at,
            f"the settings have no key {axis.key!r} (trial {entry.name!r});"
            f" a sweep only varies keys that exist{hint}",
        )


def _dotted_keys(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in mapping.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        yield dotted
        if isinstance(value, Mapping):
            yield from _dotted_keys(value, dotted)


class _Fields(string.Formatter):
    """A formatter whose fields are dotted swept keys (``{model.depth}``), taken whole."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        return kwargs[field_name], field_name


_FORMATTER = _Fields()


def _template_fields(sweep: Sweep, entry: TrialEntry) -> tuple[str, ...]:
    if sweep.template is None:
        return ()
    site = sweep.site or entry.source
    key = join_key(sweep.at, "name")
    swept = [a.key for a in sweep.axes]
    try:
        parsed = list(_FORMATTER.parse(sweep.template))
    except ValueError as exc:
        raise site.error(key, f"not a valid name template: {exc}") from None
    fields = []
    for _, name, _spec, _conv in parsed:
        if name is None:
            continue
        if name not in swept:
            close = difflib.get_close_matches(name, swept, n=1)
            hint = f" (did you mean {{{close[0]}}}?)" if close else ""
            raise site.error(
                key,
                f"unknown field {{{name}}} in the name template{hint};"
                f" expected swept keys: {', '.join(swept) or '(none)'}",
            )
        fields.append(name)
    return tuple(fields)


def _check_size(sweep: Sweep, entry: TrialEntry) -> None:
    points = math.prod(a.dist.size() or 0 for a in sweep.grid) * math.prod(
        g[0].dist.size() or 0 for g in sweep.zips
    )
    trials = points * ((sweep.samples or 1) if sweep.has_random else 1)
    runs = trials * entry.repeat
    if runs > MAX_RUNS:
        site = sweep.site or entry.source
        raise site.error(
            sweep.at or "",
            f"the sweep expands to {trials:,} trials of {entry.repeat} repeat(s),"
            f" {runs:,} runs; expected at most {MAX_RUNS:,} runs in total",
        )


def point_hash(values: object) -> str:
    """The SHA-256 hex of the canonical JSON of ``values`` (sorted keys)."""
    blob = orjson.dumps(values, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(blob).hexdigest()


def _points(
    entry: TrialEntry, sweep: Sweep, seed: object, fields: tuple[str, ...]
) -> Iterator[TrialEntry]:
    grid_keys = [a.key for a in sweep.grid]
    axes: list[Sequence[Any]] = [a.dist.grid_points() for a in sweep.grid]
    for group in sweep.zips:
        grid_keys.extend(a.key for a in group)
        axes.append(list(zip(*(a.dist.grid_points() for a in group), strict=True)))
    n_grid = len(sweep.grid)
    samples = (sweep.samples or 1) if sweep.has_random else 0
    for combo in itertools.product(*axes):
        if sweep.zips:
            flat = list(combo[:n_grid])
            for values in combo[n_grid:]:
                flat.extend(values)
            point = dict(zip(grid_keys, flat, strict=True))
        else:
            point = dict(zip(grid_keys, combo, strict=True))
        if not samples:
            yield _generated(entry, sweep, point, point_hash(point), fields)
            continue
        base = point_hash(point)
        for k in range(samples):
            rng = random.Random(f"{seed}/{entry.id}/{base}/{k}")
            drawn = dict(point)
            for axis in sweep.random:
                drawn[axis.key] = axis.dist.sample(rng)
            yield _generated(entry, sweep, drawn, point_hash([drawn, k]), fields)


def _generated(
    entry: TrialEntry, sweep: Sweep, values: dict[str, Any], digest: str, fields: tuple[str, ...]
) -> TrialEntry:
    hexa = digest[:HEX_DIGITS]
    if sweep.template is not None:
        try:
            name = _FORMATTER.vformat(sweep.template, (), values)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            site = sweep.site or entry.source
            raise site.error(
                join_key(sweep.at, "name"),
                f"the name template cannot format {shown({f: values[f] for f in fields})}: {exc}",
            ) from None
    else:
        name = f"{entry.name}-{hexa}"
    trial_id = f"{entry.id}.{hexa}"
    # What check_entry would check again (the rest is the checked entry's): the name.
    # A default name is the checked one and "-<hex>": only its length can be wrong.
    source = EntrySource(entry.source.doc, entry.source.key, name)
    if sweep.template is not None or len(name.encode()) > 200:
        check_name(source, "name", name)
        if name in RESERVED_TRIAL_NAMES:
            raise source.error("name", f"{name!r} is reserved for expman's own folders")
    # Made directly, not by dataclasses.replace (several times slower, per trial).
    return TrialEntry(
        name=name,
        id=trial_id,
        repeat=entry.repeat,
        settings=_with_values(entry.settings, values),
        source=source,
        desc=entry.desc,
        resources=entry.resources,
        written_id=trial_id,
        swept=values,
    )


def _with_values(settings: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with each dotted key set (mappings on the way copied, not changed)."""
    out = dict(settings)
    copied: set[int] = set()
    for key, value in values.items():
        if "." not in key:
            out[key] = value
            continue
        node = out
        *parents, last = key.split(".")
        for part in parents:
            child: Any = node.get(part)
            if id(child) not in copied:
                child = dict(child) if isinstance(child, Mapping) else {}
                node[part] = child
                copied.add(id(child))
            node = child
        node[last] = value
    return out
