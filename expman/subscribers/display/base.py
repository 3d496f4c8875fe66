"""The progress display's contract: a batched mailbox subscriber with a summary at the end.

A display never blocks training: it is subscribed with its own bounded mailbox, its
handler only folds events into a :class:`ProgressState` and hands any writing to a
worker thread, so a slow terminal or a slow reader of a pipe delays only the
display.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

import anyio

from expman.bus import mailbox
from expman.events import Event
from expman.formatting import printable
from expman.subscribers.display.state import ProgressState, epochs_of
from expman.subscribers.display.summary import plain_summary

#: Events a display may hold before publishers wait for it.
MAILBOX = 10_000

if TYPE_CHECKING:
    from expman.bus import EventBus, Subscription
    from expman.config import ExperimentPlan
    from expman.run.records import ResumePlan


class Display:
    """Base class: folds events into :attr:`state`; subclasses show it."""

    events = (Event,)
    delivery = mailbox(MAILBOX, batch=True)
    name = "display"

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self.state = ProgressState()
        self._broken = False

    def attach(self, bus: EventBus) -> Subscription[Event]:
        """Subscribe to ``bus`` as declared: every event, through a bounded, batched mailbox."""
        return bus.attach(self)

    def on_plan(self, plan: ExperimentPlan, resume: ResumePlan) -> None:
        """Learn the plan (epochs per trial, runs already done) and say what resumes."""
        for trial in plan.trials:
            epochs = epochs_of(trial.settings)
            if epochs is not None:
                self.state.max_epochs[trial.name] = epochs
        self.state.done_before = len(resume.done)
        if resume.problems:
            self.note("\n".join(f"warning: {problem}" for problem in resume.problems))
        if resume.done:
            lines = [
                f"resuming {plan.path}: {len(resume.done)} run(s) already done, "
                f"{len(resume.todo)} to run"
            ]
            shown = ", ".join(f"{r.trial}/run_{r.repeat} ({r.status})" for r in resume.done[:8])
            more = f" and {len(resume.done) - 8} more" if len(resume.done) > 8 else ""
            lines.append(f"  skipping {shown}{more}")
            for spec, point in resume.restarting:
                resumes = point is not None and point.checkpoint is not None
                where = f"from epoch {point.epoch}" if resumes and point else "from scratch"
                lines.append(f"  {spec.label}: runs again {where}")
            self.note("\n".join(lines))

    def note(self, text: str) -> None:
        """A message for people (before or after the live part)."""
        self._write(text + "\n")

    async def __call__(self, events: Sequence[Event] | Event) -> None:
        if isinstance(events, Event):  # subscribed without batch=True
            events = [events]
        lines = []
        for event in events:
            self.state.apply(event)
            line = self.line_for(event)
            if line is not None:
                lines.append(self.shown_line(line) + "\n")
        if lines:
            await anyio.to_thread.run_sync(self._write, "".join(lines))

    def line_for(self, event: Event) -> str | None:
        """The line to show for ``event`` once the state has seen it (subclasses)."""
        return None

    def shown(self, text: str) -> str:
        """``text`` as it may reach a terminal: control characters escaped, lines kept."""
        return printable(text, newlines=True)

    def shown_line(self, line: str) -> str:
        """One event's line: a newline inside (a metric key, a reason) is escaped too."""
        return printable(line)

    def _write(self, text: str) -> None:
        if self._broken:
            return
        try:
            self.out.write(self.shown(text))
            self.out.flush()
        except (BrokenPipeError, ValueError):  # the reader went away / stream closed
            self._broken = True

    def summary(self, result: Any) -> None:
        """Show how the experiment ended (the ``ExperimentResult``)."""
        self._write(plain_summary(result))

    def close(self) -> None:
        """Release the terminal (idempotent)."""
