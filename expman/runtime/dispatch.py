"""Per-run callback dispatch: the bus's events about a run go to that run's callbacks.

One control subscriber for every event (:class:`CallbackDispatch`), subscribed before
the runtime's own handlers, so a run's callbacks see a ``CheckpointDue`` before the
save it causes publishes ``CheckpointSaved``, and a ``StopRequested`` in the order it
was asked.  An event about one run reaches its callbacks only; a trial's or the
experiment's ``StopRequested`` reaches the callbacks of every run it stops.  How the
callbacks of one run receive their events is :mod:`expman.run.callbacks`.
"""

from __future__ import annotations

from expman.events import Event, StopRequested
from expman.runtime.active import ActiveRuns


class CallbackDispatch:
    """Routes events to the active runs' callbacks."""

    def __init__(self, active: ActiveRuns) -> None:
        self._active = active

    async def __call__(self, event: Event) -> None:
        key = event.run_key
        if key is not None:  # one run's event (most of them: every epoch)
            run = self._active.get(key)
            if run is not None:
                await run.ctx.callbacks.notify(event)
            return
        if isinstance(event, StopRequested):
            for run in self._active.matching(event.scope, event.trial, None):
                await run.ctx.callbacks.notify(event)
