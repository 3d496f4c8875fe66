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

import time
from collections.abc import Sequence
from typing import Any

import orjson

from expman.bus import mailbox
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
from expman.jsonlines import dumps, fast_body
from expman.workspace.layout import ExperimentLayout
from expman.workspace.logrouting import iso
from expman.workspace.logsink import LogFiles

_LIFECYCLE = (RunStarted, RunFinished, RunRetrying, RunStalled)


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
    # orjson reads the dataclass's fields itself; every event has some (experiment).
    body = fast_body(event)
    if body is None:
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
    body = fast_body(fields, orjson.OPT_SERIALIZE_NUMPY) or fast_body(fields)
    if body is None:  # a NaN, a big int, a value orjson does not know
        return dumps(event_record(event)) + b"\n", dumps(metrics_record(event)) + b"\n"
    return _head(event) + body[1:] + b"\n", body + b"\n"


def _unwritable(event: Event, exc: BaseException) -> bytes:
    """The line that stands for an event that could not be written (experiment.log)."""
    entry = {
        "timestamp": iso(time.time()),
        "level": "error",
        "event": "event_unwritable",
        "type": type(event).__name__,
        "trial": getattr(event, "trial", None),
        "repeat": getattr(event, "repeat", None),
        "error": repr(exc),
    }
    return dumps(entry) + b"\n"


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
        return event.status.log_level
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

    events = (Event,)
    delivery = mailbox(1024, batch=True)
    name = "writer.logs"

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
            try:
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
            except Exception as exc:  # dumps never raises; an event's own code might
                line = _unwritable(event, exc)
                out.setdefault(self._experiment, []).append(line)
        self.files.emit_batch(out)
        await self.files.wait_writable()
