"""Where log lines go: structlog and stdlib ``logging`` routed to a run's log files.

:func:`configure_structlog` makes ``structlog.get_logger()`` (and stdlib ``logging``)
inside a run land in that run's run.log: the destination travels in a context
variable (:func:`log_to`), so concurrent runs never mix their lines.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import logging
import math
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import structlog

from expman.jsonlines import dumps
from expman.workspace.logsink import LogFiles

_route: contextvars.ContextVar[tuple[LogFiles, tuple[str, ...]] | None] = contextvars.ContextVar(
    "expman_log_route", default=None
)
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
