"""Log lines in a worker: structlog and logging as JSON lines, raw output as records.

A process worker writes its JSON log lines to stdout, which the driver copies into the
run's run.log (a line starting with :data:`~expman.executors.channel.MARK` is a sync
mark, not output).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from expman.jsonlines import dumps
from expman.workspace.logrouting import iso, log_processors, logging_entry

LineSink = Callable[[str], None]


def iso_now() -> str:
    return iso(time.time())


def output_record(text: str, context: Mapping[str, Any], stream: str = "output") -> bytes:
    """A run.log line for raw text a run printed (not already a JSON log entry)."""
    entry: dict[str, Any] = {"timestamp": iso_now(), "level": "info", "event": text}
    entry["logger"] = stream
    entry.update(context)
    return dumps(entry)


class _LineLogger:
    def __init__(self, sink: LineSink) -> None:
        self._sink = sink

    def msg(self, message: str | bytes) -> None:
        self._sink(message.decode() if isinstance(message, bytes) else message)

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg


class _LineHandler(logging.Handler):
    def __init__(self, sink: LineSink) -> None:
        super().__init__()
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self._sink(dumps(logging_entry(record)).decode())


def configure_logging(sink: LineSink, context: Mapping[str, Any]) -> None:
    """structlog and stdlib logging in this worker write JSON lines to ``sink``."""
    structlog.configure(
        processors=[*log_processors(), lambda _, __, event_dict: dumps(event_dict)],
        logger_factory=lambda *args: _LineLogger(sink),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**context)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _LineHandler):
            root.removeHandler(handler)
    root.addHandler(_LineHandler(sink))
