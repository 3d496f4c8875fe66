"""One integration at run time: a mailbox subscriber, an export task and one thread.

:class:`Integration` is a batched mailbox subscriber (unbounded queue) whose handler
only turns events into export operations, so it never holds up a run.  Its export
task (:meth:`Integration.run`, started by the experiment) hands the waiting
operations to the backend (:class:`~expman.integrations.base.Exporter`) in its one
worker thread, each run's epochs coalesced into one ``write``:

* **Bounded memory.**  Past ``max_pending`` values in memory, a run's further epochs
  are kept as a range (first, last) and read back from its metrics log when their
  turn comes: a tracker that is slow costs memory for the waiting operations, not
  for their values.
* **Retries.**  A failed call is retried with back-off (0.2 s doubling to 5 s) for
  as long as the experiment runs; once the end's ``flush_timeout`` passes, what is
  still unsent is counted lost, run by run.  :class:`~expman.integrations.base.Refused`
  points are lost at once.  ``IntegrationLagging`` says it fell behind (operations
  older than :data:`LAG_AFTER` seconds, or a failing tracker); ``IntegrationCaughtUp``
  that it has sent everything again.
* **Exactly once.**  The first export of a run journals its identity
  (``IntegrationBound``); each checkpoint and the run's end journal its watermark
  (``IntegrationWatermark``) once the backend made it final.  A run that starts
  again (a retry, a resumed session) is opened with ``rewind``: the first epoch
  whose earlier export is an orphan; the epochs between the watermark and where it
  restarts are re-sent from its metrics log.  Runs that ended in an earlier session
  beyond their watermark (a crash while the tracker lagged) are caught up first.
* **The end.**  :meth:`Integration.finish` waits until everything published was
  sent (at most ``flush_timeout``), closes the backend and publishes
  ``IntegrationReport`` (sent, lost, retries), which the journal and the summary
  keep.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import structlog

from expman.bus import mailbox
from expman.config import ExperimentPlan, IntegrationSpec, RunSpec
from expman.events import (
    CheckpointSaved,
    EpochEnd,
    Event,
    IntegrationBound,
    IntegrationCaughtUp,
    IntegrationLagging,
    IntegrationReport,
    IntegrationWatermark,
    RunFinished,
    RunStarted,
)
from expman.integrations.base import Binding, Exporter, ExportRun, Point, Refused, scalars
from expman.integrations.history import read_points
from expman.status import RunStatus
from expman.workspace.journal import ExportRecord
from expman.workspace.layout import ExperimentLayout

log = structlog.get_logger("expman.integrations")

#: Seconds an operation may wait before the integration says it is lagging.
LAG_AFTER = 2.0
#: Retry back-off: the first pause and the longest, in seconds.
BACKOFF = (0.2, 5.0)
#: Operations handed to the worker thread at once.
CHUNK = 4096
#: Seconds the export task lets operations gather after a hand-off before the next:
#: epochs that arrive one at a time are sent a tracker's call (and a thread hop) per
#: tenth of a second, not per epoch.
GATHER = 0.1

Publish = Callable[[Event], Awaitable[None]]
Settled = Callable[[str], Awaitable[bool]]
#: Waits until the lines published so far are in the given metrics logs (readable).
LogsWritten = Callable[[Sequence[str]], Awaitable[None]]
_NONE = ExportRecord()


@dataclass(slots=True)
class _Op:
    """One export operation of one run; ``points``/``first``-``last`` grow while queued."""

    kind: str  # open | points | range | final | finish
    key: tuple[str, int]
    points: list[Point] = field(default_factory=list)
    values: int = 0
    first: int = 0
    last: int = -1
    attempt: int = 1
    status: RunStatus | None = None
    reason: str | None = None
    queued: float = 0.0  # when it was queued (monotonic)


@dataclass(slots=True)
class _RunState:
    """What the integration knows of one run's export."""

    run: ExportRun
    record: ExportRecord
    binding: Binding | None = None
    opened: bool = False
    #: The highest epoch handed to the backend (or held for it).
    upto: int = -1
    #: The highest epoch the backend has (written, not held).
    written: int = -1
    held: list[Point] = field(default_factory=list)
    sent: int = 0
    lost: int = 0
    broken: bool = False  # open failed for good: its points are lost


class Integration:
    """A tracker fed from the bus (see the module's docstring)."""

    events = (RunStarted, EpochEnd, CheckpointSaved, RunFinished)
    # Unbounded: the handler only queues; memory is bounded by max_pending (spilled).
    delivery = mailbox(0, batch=True)

    def __init__(
        self,
        spec: IntegrationSpec,
        exporter: Exporter,
        *,
        plan: ExperimentPlan,
        layout: ExperimentLayout,
        publish: Publish,
        settled: Settled,
        records: Mapping[tuple[str, int], ExportRecord] | None = None,
        catch_up: Sequence[tuple[RunSpec, RunStatus, str | None]] = (),
        logs_written: LogsWritten,
    ) -> None:
        self.spec = spec
        self.exporter = exporter
        self.name = f"integration.{spec.name}"
        self._plan = plan
        self._layout = layout
        self._publish = publish
        self._settled = settled
        self._logs_written = logs_written
        self._specs = {s.key: s for s in plan.runs}
        self._records = dict(records or {})
        self._runs: dict[tuple[str, int], _RunState] = {}
        self._queue: deque[_Op] = deque()
        #: Each run's last queued operation (a points or range op still growing).
        self._tail: dict[tuple[str, int], _Op] = {}
        self._pending = 0  # values held in queued operations
        self._inflight: float | None = None  # when the oldest operation being sent was queued
        self._wake = anyio.Event()
        self._closed = anyio.Event()
        self._lock = anyio.Lock()
        self._limiter = anyio.CapacityLimiter(1)
        self._notices: list[Event] = []
        #: When the end's flush_timeout runs out (monotonic; set by finish()).
        self._deadline: float | None = None
        self._failing: str = ""
        self._lagging_since: float | None = None
        self.retries = 0
        self.sent = 0
        self.lost = 0
        self._lost_runs: set[str] = set()
        self._last_error = ""
        for spec_, status, reason in catch_up:
            self._queue_catch_up(spec_, status, reason)

    # -- the mailbox side (the event loop; never waits) ----------------------------

    async def __call__(self, events: Sequence[Event]) -> None:
        for event in events:
            key = event.run_key
            if key is None or key not in self._specs:
                continue
            if isinstance(event, EpochEnd):
                self._queue_epoch(key, event)
            elif isinstance(event, RunStarted):
                self._push(_Op("open", key, attempt=event.attempt, first=event.start_epoch))
            elif isinstance(event, CheckpointSaved):
                self._push(_Op("final", key, last=event.epoch))
            elif isinstance(event, RunFinished):
                self._push(_Op("finish", key, status=event.status, reason=event.reason))
        self._wake.set()

    def _push(self, op: _Op) -> None:
        op.queued = time.monotonic()
        self._queue.append(op)
        self._tail[op.key] = op

    def _queue_epoch(self, key: tuple[str, int], event: EpochEnd) -> None:
        tail = self._tail.get(key)
        if self._pending >= self.spec.max_pending:
            # Coalesced into a range: read back from the run's metrics log when sent.
            if tail is not None and tail.kind == "range" and tail.last < event.epoch:
                tail.last = event.epoch
            else:
                self._push(_Op("range", key, first=event.epoch, last=event.epoch))
            return
        values = scalars(event.metrics)
        point = Point(event.epoch, event.time, values)
        if tail is not None and tail.kind == "points":
            tail.points.append(point)
            tail.values += len(values)
        else:
            self._push(_Op("points", key, points=[point], values=len(values)))
        self._pending += len(values)

    def _queue_catch_up(self, spec: RunSpec, status: RunStatus, reason: str | None) -> None:
        """A run that ended in an earlier session past its watermark: send the rest."""
        self._push(_Op("open", spec.key, first=-1))  # -1: up to where its log ends
        self._push(_Op("finish", spec.key, status=status, reason=reason))

    # -- the export task -------------------------------------------------------------

    async def run(self) -> None:
        """Export until :meth:`finish` (started in the experiment's task group)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_lag)
            pumped = -GATHER
            while not (self._closed.is_set() and not self._queue):
                if not self._queue:
                    with anyio.move_on_after(1.0):
                        await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                pause = pumped + GATHER - time.monotonic()
                if pause > 0 and not self._closed.is_set():
                    with anyio.move_on_after(pause):
                        await self._closed.wait()  # the end sends at once
                await self._pump()
                pumped = time.monotonic()
            tg.cancel_scope.cancel()

    async def _watch_lag(self) -> None:
        """Say when the integration falls behind and when it has caught up again."""
        while True:
            await anyio.sleep(LAG_AFTER / 4)
            now = time.monotonic()
            oldest = self._inflight or (self._queue[0].queued if self._queue else None)
            behind = now - oldest if oldest is not None else 0.0
            if self._lagging_since is None and (behind > LAG_AFTER or self._failing):
                self._lagging_since = now - behind  # since the oldest waiting operation
                await self._publish(
                    IntegrationLagging(
                        experiment=self._plan.name,
                        integration=self.spec.name,
                        pending=self._pending,
                        behind=behind,
                        error=self._failing,
                    )
                )
            elif self._lagging_since is not None and not self._busy and not self._failing:
                lagged, self._lagging_since = now - self._lagging_since, None
                await self._publish(
                    IntegrationCaughtUp(
                        experiment=self._plan.name, integration=self.spec.name, lagged=lagged
                    )
                )

    @property
    def _give_up(self) -> bool:
        """Past the end's flush deadline, on the thread's own clock (a cancel cannot
        reach a worker thread): nothing more is tried, the rest is counted lost."""
        return self._deadline is not None and time.monotonic() > self._deadline

    @property
    def _busy(self) -> bool:
        return bool(self._queue) or self._lock.locked()

    async def _pump(self) -> None:
        """Hand the waiting operations to the worker thread, once."""
        async with self._lock:
            if not self._queue:
                return
            chunk: list[_Op] = []
            while self._queue and len(chunk) < CHUNK:
                op = self._queue.popleft()
                if self._tail.get(op.key) is op:
                    del self._tail[op.key]
                self._pending -= op.values
                chunk.append(op)
            logs = self._logs_of(chunk)
            if logs:
                await self._logs_written(logs)  # what it reads back is there
            self._inflight = chunk[0].queued
            try:
                await anyio.to_thread.run_sync(self._apply, chunk, limiter=self._limiter)
            finally:
                self._inflight = None
            notices, self._notices = self._notices, []
            for notice in notices:
                await self._publish(notice)

    def _reads_log(self, op: _Op) -> bool:
        """Whether ``op`` reads the run's metrics log (a range, or an open that re-sends)."""
        if op.kind == "range":
            return True
        if op.kind != "open":
            return False
        state = self._runs.get(op.key)
        known = state.upto if state is not None else self._records.get(op.key, _NONE).watermark
        return op.first < 0 or op.first > known + 1

    def _logs_of(self, chunk: Sequence[_Op]) -> list[str]:
        return [str(self._layout.run(*op.key).metrics_file) for op in chunk if self._reads_log(op)]

    async def finish(self) -> None:
        """Send what is left (at most ``flush_timeout`` s), close, report (then publish)."""
        self._deadline = time.monotonic() + self.spec.flush_timeout
        self._wake.set()
        self._closed.set()
        with anyio.move_on_after(self.spec.flush_timeout) as scope:
            await self._settled(self.name)
            # An operation popped by the export task may still be on its way to the thread.
            while self._queue or self._lock.locked():
                await self._pump()
        if scope.cancelled_caught:  # the thread stops retrying; the rest is counted lost
            with anyio.CancelScope(shield=True):
                while self._queue or self._lock.locked():
                    await self._pump()
        await anyio.to_thread.run_sync(self._close, limiter=self._limiter)
        if self._lagging_since is not None and not self._failing and not scope.cancelled_caught:
            lagged, self._lagging_since = time.monotonic() - self._lagging_since, None
            self._notices.append(
                IntegrationCaughtUp(
                    experiment=self._plan.name, integration=self.spec.name, lagged=lagged
                )
            )
        for notice in self._notices:
            await self._publish(notice)
        self._notices = []
        totals = self.totals()
        totals["runs"] = tuple(totals["runs"])
        await self._publish(
            IntegrationReport(experiment=self._plan.name, integration=self.spec.name, **totals)
        )

    def totals(self) -> dict[str, Any]:
        """This session's counts: what the summary and ``ExperimentResult`` show."""
        return {
            "sent": self.sent,
            "lost": self.lost,
            "retries": self.retries,
            "runs": sorted(self._lost_runs),
            "error": self._last_error,
        }

    # -- the worker thread ---------------------------------------------------------

    def _apply(self, chunk: Sequence[_Op]) -> None:
        for op in chunk:
            state = self._state(op.key, op.attempt)
            try:
                if op.kind == "open":
                    self._open(state, op)
                elif op.kind == "points":
                    self._send(state, op.points)
                elif op.kind == "range":
                    self._send(state, read_points(self._metrics_of(state), op.first, op.last))
                elif op.kind == "final":
                    self._final(state, op.last)
                elif op.kind == "finish":
                    self._finish_run(state, op)
            except Exception as exc:  # a backend's bug: reported, never a run's failure
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "integration_failed",
                    integration=self.spec.name,
                    run=state.run.label,
                    operation=op.kind,
                    error=self._last_error,
                )

    def _metrics_of(self, state: _RunState) -> Path:
        return self._layout.run(*state.run.key).metrics_file

    def _state(self, key: tuple[str, int], attempt: int) -> _RunState:
        state = self._runs.get(key)
        if state is None:
            record = self._records.get(key, ExportRecord())
            run = ExportRun.of(self._specs[key], self._layout.run(*key).root, attempt)
            state = self._runs[key] = _RunState(run=run, record=record)
            if record.external:
                state.binding = Binding(record.external, record.location)
                state.written = state.upto = record.watermark
            state.sent, state.lost = record.sent, record.lost
        return state

    def _open(self, state: _RunState, op: _Op) -> None:
        """Bind the run for an attempt starting at ``op.first`` (-1: a catch-up)."""
        if op.attempt != state.run.attempt:
            state.run = replace(state.run, attempt=op.attempt)
        # Epochs past what is known to be final there may have reached the tracker
        # (a crash before the watermark was journaled): they are rewound and re-sent.
        known = state.upto if state.binding is not None else -1
        start = op.first
        rewind = min(known + 1, start) if start >= 0 else known + 1
        binding = self._call(
            state,
            lambda: self.exporter.open(
                state.run,
                external=state.binding.external if state.binding else None,
                rewind=rewind,
            ),
        )
        if binding is None:
            state.broken = True
            if start < 0 or start > rewind:
                # Given up or refused: what it would have re-sent from the log (a
                # catch-up's whole rest) is lost, and counted.
                last = None if start < 0 else start - 1
                points = read_points(self._metrics_of(state), rewind, last)
                self._lose(state, sum(len(p.metrics) for p in points))
            return
        state.broken = False
        state.opened = True
        if state.binding != binding:
            state.binding = binding
            self._notices.append(
                IntegrationBound(
                    experiment=self._plan.name,
                    trial=state.run.trial,
                    repeat=state.run.repeat,
                    integration=self.spec.name,
                    external=binding.external,
                    location=binding.location,
                )
            )
        state.upto = rewind - 1
        state.written = min(state.written, rewind - 1)
        state.held = [p for p in state.held if p.epoch < rewind]
        last = None if start < 0 else start - 1
        if last is None or last >= rewind:
            self._send(state, read_points(self._metrics_of(state), rewind, last))

    def _send(self, state: _RunState, points: Sequence[Point]) -> None:
        fresh = [p for p in points if p.epoch > state.upto]
        if not fresh:
            return
        if state.broken or not state.opened:
            if not state.opened and not state.broken:
                # Epochs of a run this session never opened (it started before the
                # integration saw RunStarted): open it where they begin.
                self._open(
                    state,
                    _Op("open", state.run.key, attempt=state.run.attempt, first=fresh[0].epoch),
                )
            if state.broken:
                self._lose(state, sum(len(p.metrics) for p in fresh))
                return
        state.upto = fresh[-1].epoch
        if self.exporter.holds_until_final:
            state.held.extend(fresh)
            return
        self._write(state, fresh)

    def _write(self, state: _RunState, points: Sequence[Point]) -> None:
        values = sum(len(p.metrics) for p in points)
        if self._call(state, lambda: self.exporter.write(state.run, points), values=values):
            state.written = points[-1].epoch
            state.sent += values
            self.sent += values

    def _final(self, state: _RunState, epoch: int) -> None:
        """A checkpoint at ``epoch``: what it covers is final; the watermark is journaled."""
        if not state.opened:
            return
        if state.held:
            ready = [p for p in state.held if p.epoch <= epoch]
            state.held = [p for p in state.held if p.epoch > epoch]
            if ready:
                self._write(state, ready)
        self._mark(state)

    def _finish_run(self, state: _RunState, op: _Op) -> None:
        if not state.opened:
            return
        if state.held:
            ready, state.held = state.held, []
            self._write(state, ready)
        assert op.status is not None
        self._call(state, lambda: self.exporter.finish(state.run, op.status, op.reason))  # type: ignore[arg-type]
        self._mark(state, ended=True)
        state.opened = False

    def _mark(self, state: _RunState, *, ended: bool = False) -> None:
        if self._call(state, lambda: self.exporter.flush(state.run)) is None:
            return
        state.record.watermark = state.written
        self._notices.append(
            IntegrationWatermark(
                experiment=self._plan.name,
                trial=state.run.trial,
                repeat=state.run.repeat,
                integration=self.spec.name,
                epoch=state.written,
                sent=state.sent,
                lost=state.lost,
                ended=ended,
            )
        )

    def _call(self, state: _RunState, fn: Callable[[], Any], *, values: int = 0) -> Any:
        """``fn()`` with retries and back-off; None (and ``values`` lost) when given up."""
        pause = BACKOFF[0]
        while True:
            if self._give_up:  # past the flush deadline: nothing more is tried
                self._lose(state, values)
                return None
            try:
                result = fn()
            except Refused as exc:
                self._last_error = str(exc)
                self._lose(state, values)
                return None
            except Exception as exc:
                self.retries += 1
                # One line (a server's error may carry a whole SQL statement).
                error = " ".join(f"{type(exc).__name__}: {exc}".split())
                self._failing = self._last_error = error[:500]
                deadline = time.monotonic() + pause
                if self._deadline is not None:
                    deadline = min(deadline, self._deadline)
                while time.monotonic() < deadline and not self._give_up:
                    time.sleep(min(0.05, pause))
                pause = min(pause * 2, BACKOFF[1])
                continue
            self._failing = ""
            return True if result is None else result

    def _lose(self, state: _RunState, values: int) -> None:
        if values:
            state.lost += values
            self.lost += values
            self._lost_runs.add(state.run.label)

    def _close(self) -> None:
        try:
            self.exporter.close()
        except Exception as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
            log.error("integration_close_failed", integration=self.spec.name, error=str(exc))
