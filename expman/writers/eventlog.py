"""JSON log writers: events into the workspace's log files, and structlog routing.

:class:`EventLogWriter` is a batched mailbox subscriber that turns every event into
one JSON line and appends it to each log it belongs in:

=====================  ===========================================================
file                   what it holds
=====================  ===========================================================
logs/experiment.log    experiment, trial and run lifecycle events; expman's notes
logs/metrics.log       every run's EpochEnd metrics
trials/logs/trials.log trial and run lifecycle events of every trial
<trial>/logs/trial.log that trial's lifecycle events and its runs'
run_<k>/logs/run.log   everything about the run, and whatever its pipeline logs
run_<k>/logs/metrics.log  the run's EpochEnd metrics
=====================  ===========================================================

:func:`configure_structlog` makes ``structlog.get_logger()`` (and stdlib ``logging``)
inside a run land in that run's run.log: the destination travels in a context
variable, so concurrent runs never mix their lines.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import logging
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
import structlog

from expman.environment import ExperimentLayout
from expman.events import (
    EpochEnd,
    Event,
    LogRecord,
    RunFinished,
    RunRetrying,
    RunStalled,
    RunStarted,
    to_dict,
)
from expman.jsonlines import JSON_OPTIONS, dumps, json_default
from expman.writers.logfiles import LogFiles

_route: contextvars.ContextVar[tuple[LogFiles, tuple[str, ...]] | None] = contextvars.ContextVar(
    "expman_log_route", default=None
)
_LIFECYCLE = (RunStarted, RunFinished, RunRetrying, RunStalled)
_UTC = datetime.UTC


_iso_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def iso(ts: float) -> str:
    """An ISO-8601 UTC timestamp, written like structlog's (``...Z``)."""
    # Formatting a datetime per log line is a large share of the writer's time; events
    # arrive many per second, so the "YYYY-MM-DDTHH:MM:SS" part is formatted once a second.
    second = math.floor(ts)
    micro = round((ts - second) * 1e6)
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    cached = _iso_second
    if cached[0] != second:
        text = datetime.datetime.fromtimestamp(second, _UTC).isoformat()
        cached[0], cached[1] = second, text[:19]
    if micro:  # str() of 1000000 + micro, sliced: faster than the :06d format spec
        return f"{cached[1]}.{str(1_000_000 + micro)[1:]}Z"
    return f"{cached[1]}Z"


@contextlib.contextmanager
def log_to(files: LogFiles, *paths: str, **context: Any) -> Iterator[None]:
    """Within the block, structlog/logging lines go to ``paths``, with ``context`` bound."""
    token = _route.set((files, paths))
    bound = structlog.contextvars.bound_contextvars(**context)
    try:
        with bound:
            yield
    finally:
        _route.reset(token)


class _RoutedLogger:
    """structlog's final logger: writes rendered lines where the context says."""

    def msg(self, message: bytes | str) -> None:
        data = message if isinstance(message, bytes) else message.encode()
        route = _route.get()
        if route is None:
            sys.stderr.buffer.write(data + b"\n")
            sys.stderr.flush()
        else:
            route[0].emit_many(route[1], data + b"\n")

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg


def _render(_: Any, __: str, event_dict: Mapping[str, Any]) -> bytes:
    return dumps(event_dict)


def logging_entry(record: logging.LogRecord) -> dict[str, Any]:
    """A stdlib logging record as a log line's fields (with the bound structlog context)."""
    entry: dict[str, Any] = {
        "timestamp": iso(record.created),
        "level": record.levelname.lower(),
        "event": record.getMessage(),
        "logger": record.name,
    }
    entry.update(structlog.contextvars.get_contextvars())
    if record.exc_info:
        entry["exception"] = logging.Formatter().formatException(record.exc_info)
    return entry


class _RouteHandler(logging.Handler):
    """Sends stdlib logging records made inside a run to that run's log."""

    def emit(self, record: logging.LogRecord) -> None:
        route = _route.get()
        if route is None:
            return
        route[0].emit_many(route[1], dumps(logging_entry(record)) + b"\n")


_configured = False
_handler = _RouteHandler()


def log_processors() -> list[Any]:
    """structlog's processors before rendering, the same in the driver and in workers."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]


def configure_structlog() -> None:
    """Route structlog (and stdlib logging) output by run; idempotent."""
    global _configured
    if _configured and structlog.is_configured():
        return
    structlog.configure(
        processors=[*log_processors(), _render],
        logger_factory=lambda *args: _RoutedLogger(),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    if _handler not in root.handlers:
        root.addHandler(_handler)
    _configured = True


def event_record(event: Event) -> dict[str, Any]:
    """The log entry of an event: timestamp, level, event name and fields."""
    data = to_dict(event)
    entry: dict[str, Any] = {
        "timestamp": iso(event.time),
        "level": _level(event),
        "event": data.pop("type"),
    }
    entry.update(data)
    return entry


def render_event(event: Event) -> bytes:
    """The log line of an event: ``dumps(event_record(event))`` plus a newline, built faster."""
    try:
        # orjson reads the dataclass's fields itself; every event has some (experiment).
        body = orjson.dumps(event, default=json_default, option=JSON_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        return dumps(event_record(event)) + b"\n"
    return _head(event) + body[1:] + b"\n"


def render_epoch(event: EpochEnd) -> tuple[bytes, bytes]:
    """An epoch's run.log line and its metrics.log line, from one encoding of the event.

    The metrics line is the event's fields (experiment, trial, repeat, seq, time,
    epoch, metrics); the log line is the same with the timestamp, level and event
    name in front.  orjson encodes a dict about twice as fast as a slotted
    dataclass, and non-string metric names (rare) cost every line its own option.
    """
    if type(event) is not EpochEnd:  # a subclass's own fields too
        return render_event(event), dumps(metrics_record(event)) + b"\n"
    fields = {
        "experiment": event.experiment,
        "trial": event.trial,
        "repeat": event.repeat,
        "seq": event.seq,
        "time": event.time,
        "epoch": event.epoch,
        "metrics": event.metrics,
    }
    try:
        body = orjson.dumps(fields, default=json_default, option=orjson.OPT_SERIALIZE_NUMPY)
    except (TypeError, orjson.JSONEncodeError):
        try:
            body = orjson.dumps(fields, default=json_default, option=JSON_OPTIONS)
        except (TypeError, orjson.JSONEncodeError):
            return dumps(event_record(event)) + b"\n", dumps(metrics_record(event)) + b"\n"
    return _head(event) + body[1:] + b"\n", body + b"\n"


def _head(event: Event) -> bytes:
    """``{"timestamp":"...","level":"...","event":"...",`` as bytes (nothing to escape)."""
    cls = type(event)
    tail = _HEAD_TAILS.get(cls)
    if tail is None or cls is RunFinished:
        tail = f'","level":"{_level(event)}","event":"{cls.__name__}",'.encode()
        if cls is not RunFinished:
            _HEAD_TAILS[cls] = tail
    return b'{"timestamp":"' + iso(event.time).encode() + tail


#: The constant part of each event class's log line head (RunFinished's level varies).
_HEAD_TAILS: dict[type[Event], bytes] = {}


def _level(event: Event) -> str:
    if isinstance(event, RunFinished):
        return "error" if event.status == "failed" else "info"
    if isinstance(event, (RunStalled, RunRetrying)):
        return "warning"
    return "info"


def metrics_record(event: EpochEnd) -> dict[str, Any]:
    """One line of a metrics.log: the epoch's fields."""
    data = to_dict(event)
    del data["type"]
    return data


class EventLogWriter:
    """Batched subscriber writing every event into the logs it belongs in."""

    def __init__(self, layout: ExperimentLayout, files: LogFiles) -> None:
        self.files = files
        self._experiment = str(layout.log_file)
        self._experiment_metrics = str(layout.metrics_file)
        self._trials = str(layout.trials_log_file)
        self._layout = layout
        self._trial_paths: dict[str, tuple[str, ...]] = {}
        self._run_paths: dict[tuple[str, int], tuple[str, str, tuple[str, ...]]] = {}

    def _trial(self, trial: str) -> tuple[str, ...]:
        paths = self._trial_paths.get(trial)
        if paths is None:
            paths = (self._experiment, self._trials, str(self._layout.trial_log_file(trial)))
            self._trial_paths[trial] = paths
        return paths

    def _run(self, trial: str, repeat: int) -> tuple[str, str, tuple[str, ...]]:
        key = (trial, repeat)
        paths = self._run_paths.get(key)
        if paths is None:
            run = self._layout.run(trial, repeat)
            run_log = str(run.log_file)
            paths = (run_log, str(run.metrics_file), (run_log, *self._trial(trial)))
            self._run_paths[key] = paths
        return paths

    async def __call__(self, events: Sequence[Event]) -> None:
        # The batch's lines are gathered per file here and handed over in one call.
        out: dict[str, list[bytes]] = {}
        # EpochEnd is most of the traffic: its two run files' lists, per run, per batch.
        epoch_lists: dict[tuple[str, int], tuple[list[bytes], list[bytes]]] = {}
        experiment_metrics: list[bytes] | None = None
        for event in events:
            trial, repeat = event.trial, event.repeat
            if isinstance(event, EpochEnd) and trial is not None and repeat is not None:
                lists = epoch_lists.get((trial, repeat))
                if lists is None:
                    run_log, run_metrics, _ = self._run(trial, repeat)
                    lists = out.setdefault(run_log, []), out.setdefault(run_metrics, [])
                    epoch_lists[(trial, repeat)] = lists
                if experiment_metrics is None:
                    experiment_metrics = out.setdefault(self._experiment_metrics, [])
                log_line, line = render_epoch(event)
                lists[0].append(log_line)
                lists[1].append(line)
                experiment_metrics.append(line)
                continue
            if trial is None:
                paths: tuple[str, ...] = (self._experiment,)
                line = render_event(event)
            elif repeat is None:
                paths, line = self._trial(trial), render_event(event)
            else:
                run_log, _, lifecycle = self._run(trial, repeat)
                if isinstance(event, LogRecord):
                    paths, line = (run_log,), event.line.encode() + b"\n"
                elif isinstance(event, _LIFECYCLE):
                    paths, line = lifecycle, render_event(event)
                else:
                    paths, line = (run_log,), render_event(event)
            for path in paths:
                out.setdefault(path, []).append(line)
        self.files.emit_batch(out)
        await self.files.wait_writable()
