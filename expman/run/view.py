"""What a pipeline reads of its run, and the checks on what it reports.

:class:`RunView` is shared by the driver's :class:`~expman.run.context.RunContext`
and the worker-side context of a process or Ray run, so a pipeline sees the same
attributes wherever it runs.  ``epoch_number`` and ``metric_values`` are the checks
``ctx.epoch_end`` applies in both places; :class:`EpochReport` is what it returns
in the event loop.
"""

from __future__ import annotations

import abc
import numbers
import operator
import random
from collections.abc import Coroutine, Generator, Mapping
from pathlib import Path
from typing import Any

import structlog

from expman.events import Event, StopRequested
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


def metric_values(metrics: Any, more: Mapping[str, Any]) -> dict[str, Any]:
    """The epoch's metrics as a dict (scalars as Python numbers); a TypeError for the rest."""
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
    for name, value in values.items():
        if type(name) is not str:
            raise TypeError(f"ctx.epoch_end: metric names must be strings; got {name!r}")
        kind = type(value)
        if kind is float or kind is int:
            continue
        plain = _plain_scalar(value)
        if plain is not _NOT_SCALAR:
            values[name] = plain  # a numpy or torch scalar: a Python number from here on
            continue
        if _json_like(value, 0):
            continue
        raise TypeError(
            f"ctx.epoch_end: metric {name!r} ({kind.__name__}) cannot be written to the logs; "
            "expected a number, bool, string, None, or a list/dict of those"
        )
    return values


_NOT_SCALAR = object()


def _plain_scalar(value: Any) -> Any:
    """``value`` as a Python bool/int/float/str/None if it is a scalar, else _NOT_SCALAR.

    A numpy scalar, a 0-d array or a 0-d tensor becomes the Python number ``.item()``
    gives, where metrics enter: every callback, log and result then sees a number.
    """
    if value is None or type(value) in (bool, str):
        return value
    item = getattr(value, "item", None)
    if callable(item) and (
        isinstance(value, numbers.Number) or getattr(value, "shape", None) == ()
    ):
        try:
            plain = item()
        except (TypeError, ValueError, RuntimeError):
            return _NOT_SCALAR
        if isinstance(plain, (bool, int, float)):
            return plain
    return _NOT_SCALAR


def _json_like(value: Any, depth: int) -> bool:
    # What the JSON logs hold as itself: not the repr() they fall back to for the rest.
    if value is None or isinstance(value, (str, int, float, numbers.Real)):
        return True
    if depth > 32:  # a list that holds itself
        return False
    if isinstance(value, (list, tuple)):
        return all(_json_like(item, depth + 1) for item in value)
    if isinstance(value, Mapping):
        return all(
            isinstance(key, (str, int, float)) and _json_like(item, depth + 1)
            for key, item in value.items()
        )
    # numpy.bool_, 0-d arrays and tensors: scalars through .item()
    item = getattr(value, "item", None)
    if getattr(value, "shape", None) == () and callable(item):
        return isinstance(item(), (bool, int, float))
    return False


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
