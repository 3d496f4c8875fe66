"""Subscriber errors, reported once each in logs/experiment.log, counted after that.

A subscriber that raises is isolated (the contract of :mod:`expman.subscribers.base`):
its first error is written to the experiment's log with its traceback, whatever
the event (a run's epoch included: never to that run's run.log); its later errors
are only counted, and when the experiment ends one line per failing subscriber
gives the total.  A tracker whose server is down thus costs two lines, not one
traceback per event.
"""

from __future__ import annotations

import structlog

from expman.events import Event
from expman.workspace.logrouting import log_to
from expman.workspace.logsink import LogFiles

log = structlog.get_logger("expman")


class SubscriberErrors:
    """The bus's error reporter for one experiment."""

    def __init__(self, files: LogFiles, log_file: str, experiment: str) -> None:
        self._files = files
        self._log_file = log_file
        self._experiment = experiment
        #: Errors per subscriber name, in the order they first failed.
        self.counts: dict[str, int] = {}

    def __call__(self, name: str, event: Event | None, exc: BaseException) -> None:
        count = self.counts[name] = self.counts.get(name, 0) + 1
        if count > 1:
            return
        with log_to(self._files, self._log_file, experiment=self._experiment):
            log.error(
                "subscriber_failed",
                subscriber=name,
                event_type=type(event).__name__ if event else None,
                note="its later errors are counted, not logged; it still receives events",
                exc_info=exc,
            )

    def summarise(self) -> None:
        """One line per subscriber that failed, with its number of errors."""
        with log_to(self._files, self._log_file, experiment=self._experiment):
            for name, count in self.counts.items():
                log.error("subscriber_errors", subscriber=name, errors=count)
