"""What a pipeline reads of its run, and the checks on what it reports.

:class:`RunView` is shared by the driver's :class:`~expman.run.context.RunContext`
and the worker-side context of a process or Ray run, so a pipeline sees the same
attributes wherever it runs.  ``epoch_number`` and ``metric_values`` are the checks
``ctx.epoch_end`` applies in both places; :class:`EpochReport` is what it returns
in the event loop.
"""

from __future__ import annotations

import abc
import operator
import random
from collections.abc import Coroutine, Generator, Mapping
from pathlib import Path
from typing import Any

import orjson
import structlog

from expman.events import Event, StopRequested, to_dict
from expman.values import INT_MAX, INT_MIN, Conversion, UnloggableValue
from expman.workspace.layout import RunPaths

log = structlog.get_logger("expman.runtime")


def epoch_number(epoch: Any) -> int:
    """``epoch`` as an int; a TypeError for anything else (a bool, a float, a string)."""
    if type(epoch) is int:
        return epoch
    if not isinstance(epoch, bool):
        try:
            return operator.index(epoch)  # numpy integers
        except TypeError:
            pass
    raise TypeError(f"ctx.epoch_end: epoch must be an int; got {epoch!r}")


def metric_values(
    metrics: Any, more: Mapping[str, Any], notes: list[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """The epoch's metrics as plain JSON data; a TypeError naming a value it cannot hold.

    numpy and torch scalars become Python numbers, arrays lists; an int beyond 64 bits
    becomes a float, a set a sorted list, bytes text, each with a note appended to
    ``notes`` (the rules: :mod:`expman.values`).  NaN and infinities stay floats.
    """
    if metrics is None:
        values: dict[str, Any] = {}
    elif isinstance(metrics, Mapping):
        values = dict(metrics)
    else:
        raise TypeError(
            "ctx.epoch_end: metrics must be a mapping of metric names to values; "
            f"got {type(metrics).__name__}"
        )
    if more:
        values.update(more)
    conversion: Conversion | None = None
    for name, value in values.items():
        if type(name) is not str:
            raise TypeError(f"ctx.epoch_end: metric names must be strings; got {name!r}")
        kind = type(value)
        if kind is float or kind is str or kind is bool or value is None:
            continue
        if kind is int and INT_MIN <= value <= INT_MAX:
            continue
        if conversion is None:
            conversion = Conversion(strict=True)
        try:
            values[name] = conversion.convert(value, f"metric {name!r}")
        except UnloggableValue as exc:
            raise TypeError(
                f"ctx.epoch_end: metric {name!r} ({kind.__name__}) cannot be written to the "
                f"logs: {exc}; expected a number, bool, string, None, or a list/dict of those"
            ) from None
    if conversion is not None and notes is not None:
        notes.extend(conversion.notes)
    return values


def plain_values(value: Any, name: str, notes: list[tuple[str, str]]) -> Any:
    """``value`` as plain JSON data, never refused: what has no JSON form becomes its repr.

    For what a run hands over at its end (its result, its callbacks' summaries and
    state): converting costs nothing the run did, refusing would cost all of it.
    """
    conversion = Conversion()
    plain = conversion.convert(value, name)
    notes.extend(conversion.notes)
    return plain


def is_plain_data(value: Any) -> bool:
    """True if ``value`` is plain JSON data already (NaN and infinities allowed)."""
    try:
        orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


#: How many converted values one run's log notes.
_MAX_NOTES = 100


class EpochReport:
    """``ctx.epoch_end(...)`` in the event loop: await it for whether to stop.

    Testing it without ``await`` (``if ctx.epoch_end(...)``) raises TypeError instead
    of being always true (a coroutine is), which would end the run after no epoch.
    One never awaited is closed quietly, with an error in the run's log.
    """

    __slots__ = ("_report",)

    def __init__(self, report: Coroutine[Any, Any, bool]) -> None:
        # Invariant: _report is None once awaited (the await owns the coroutine then).
        self._report: Coroutine[Any, Any, bool] | None = report

    def __await__(self) -> Generator[Any, None, bool]:
        report, self._report = self._report, None
        if report is None:
            raise RuntimeError("ctx.epoch_end(...) can be awaited only once")
        return report.__await__()

    def __bool__(self) -> bool:
        # Closed now: the TypeError's traceback keeps self alive past the run.
        report, self._report = self._report, None
        if report is not None:
            report.close()
        raise TypeError(
            "ctx.epoch_end(...) must be awaited in an async pipeline: "
            "use `if await ctx.epoch_end(...)`"
        )

    def __del__(self) -> None:
        if self._report is not None:
            self._report.close()
            log.error("epoch_end_not_awaited", hint="use `await ctx.epoch_end(...)`")


class RunView(abc.ABC):
    """What a pipeline reads of its run, in the driver and in a worker process alike.

    Subclasses set ``experiment``, ``trial``, ``repeat``, ``settings``, ``paths``,
    ``_config`` (None), ``_stop_reason`` and ``_stop_scope``, and implement
    :meth:`publish`.
    """

    experiment: str
    trial: str
    repeat: int
    seed: int
    settings: Mapping[str, Any]
    paths: RunPaths
    _config: Any
    _stop_reason: str | None
    _stop_scope: str | None

    @property
    def config(self) -> Any:
        """The run's resolved settings, read-only, with attribute access (``cfg.lr``)."""
        if self._config is None:
            # Imported on first use: a worker process need not load OmegaConf otherwise.
            from expman.config import settings_view

            self._config = settings_view(self.settings)
        return self._config

    @property
    def random(self) -> random.Random:
        """The run's own ``random.Random``, seeded with ``ctx.seed`` (shared with nothing)."""
        own = self.__dict__.get("_random")
        if own is None:
            own = self.__dict__["_random"] = random.Random(self.seed)
        return own

    @property
    def rng(self) -> Any:
        """The run's own ``numpy.random.Generator``, seeded with ``ctx.seed``."""
        own = self.__dict__.get("_rng")
        if own is None:
            import numpy  # only for runs that ask: numpy is optional

            own = self.__dict__["_rng"] = numpy.random.default_rng(self.seed)
        return own

    @property
    def torch_generator(self) -> Any:
        """The run's own ``torch.Generator`` (CPU), seeded with ``ctx.seed``.

        Pass it where torch takes ``generator=`` (``DataLoader``, ``randperm``,
        ``nn.init`` functions ...); it is created on first use, so torch is optional.
        """
        own = self.__dict__.get("_torch_generator")
        if own is None:
            import torch  # only for runs that ask: torch is optional

            own = self.__dict__["_torch_generator"] = torch.Generator().manual_seed(self.seed)
        return own

    @property
    def artifacts(self) -> Path:
        return self.paths.artifacts

    @property
    def should_stop(self) -> bool:
        """True once anything asked this run (its trial, the experiment) to stop."""
        return self._stop_reason is not None

    @property
    def stop_reason(self) -> str | None:
        return self._stop_reason

    @property
    def stop_scope(self) -> str | None:
        return self._stop_scope

    def note_values(self, notes: list[tuple[str, str]]) -> None:
        """Say in the run's log how each value was stored: once per value, at most 100."""
        if not notes:
            return
        seen: set[str] = self.__dict__.setdefault("_noted_values", set())
        for label, sentence in notes:
            if label in seen or len(seen) > _MAX_NOTES:
                continue
            seen.add(label)
            if len(seen) > _MAX_NOTES:
                log.warning("value_converted", note="further converted values are not noted")
            else:
                log.warning("value_converted", note=sentence)

    def final_metrics(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """The metrics of the run's end (its result, summaries) as plain data, noted."""
        notes: list[tuple[str, str]] = []
        try:
            if is_plain_data(metrics):
                return dict(metrics)
            items = list(metrics.items())
        except Exception as exc:  # a Mapping whose own code raised: the run keeps its record
            self.note_values([("metrics", f"the metrics cannot be read ({exc!r}); none stored")])
            return {}
        plain: dict[str, Any] = {}
        for name, value in items:
            key = name if type(name) is str else str(name)
            if key is not name:
                notes.append((f"metric {name!r}", f"metric {name!r} is named {key!r}"))
            plain[key] = plain_values(value, f"metric {name!r}", notes)
        self.note_values(notes)
        return plain

    def event_values(self, event: Event) -> dict[str, Any]:
        """``to_dict(event)`` as plain data, each change noted (what the logs will hold)."""
        data = to_dict(event)
        if is_plain_data(data):
            return data
        plain: dict[str, Any] = self.plain_value(data, f"event {type(event).__name__}")
        return plain

    def plain_value(self, value: Any, name: str) -> Any:
        """``value`` (a result, a callback's state) as plain data, each change noted."""
        if is_plain_data(value):
            return value
        notes: list[tuple[str, str]] = []
        plain = plain_values(value, name, notes)
        self.note_values(notes)
        return plain

    @abc.abstractmethod
    def publish(self, event: Event) -> Any:
        """Publish ``event`` on the experiment's bus (each context says how)."""

    def request_stop(self, reason: str = "requested by pipeline") -> Any:
        """Ask for this run to stop (publishes StopRequested); awaitable in async code."""
        return self.publish(
            StopRequested(
                experiment=self.experiment,
                trial=self.trial,
                repeat=self.repeat,
                scope="run",
                reason=reason,
                source="pipeline",
            )
        )
