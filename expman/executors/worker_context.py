"""WorkerContext: the ``ctx`` a pipeline sees in a worker, talking to the driver.

The same API as the driver's :class:`~expman.run.context.RunContext` (both are a
:class:`~expman.run.view.RunView`); each ``epoch_end``/``publish`` is a request on the
channel that waits for the driver's reply, serving the driver's own requests
(``save``, ``stop``) meanwhile.  See :mod:`expman.executors.worker` for the messages.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from pathlib import Path
from typing import Any

import structlog

from expman.events import Event
from expman.executors.channel import Channel, Message
from expman.run.view import RunView, epoch_number, metric_values
from expman.workspace.layout import RunPaths


class WorkerContext(RunView):
    """The ``ctx`` a pipeline sees in a worker: the same API as in the driver.

    ``epoch_end``/``publish``/``request_stop`` return the value directly in sync code
    and an awaitable inside a running event loop (``await ctx.epoch_end(...)``).
    ``ctx.spec`` is not available in a worker (it holds the driver's config objects).
    """

    def __init__(self, start: Mapping[str, Any], channel: Channel) -> None:
        self.experiment: str = start["experiment"]
        self.trial: str = start["trial"]
        self.trial_id: str = start["trial_id"]
        self.repeat: int = start["repeat"]
        self.seed: int = start["seed"]
        self.settings: Mapping[str, Any] = start["settings"]
        self.paths = RunPaths(Path(start["root"]))
        self.attempt: int = start["attempt"]
        self.start_epoch: int = start["start_epoch"]
        self.checkpoint = Path(start["checkpoint"]) if start.get("checkpoint") else None
        self.devices: tuple[str, ...] = tuple(start.get("devices") or ())
        self.logger = structlog.get_logger("expman.run")
        self.epochs_reported = 0
        self.last_epoch: int | None = None
        self.last_metrics: Mapping[str, Any] = {}
        self.pipeline: Any = None
        self._channel = channel
        self._config: Any = None
        self._lock = threading.RLock()
        # Invariant: like RunContext, the first stop reason is kept.
        stop = start.get("stop")
        self._stop_reason: str | None = stop[0] if stop else None
        self._stop_scope: str | None = stop[1] if stop else None
        self._pending: list[Message] = []  # save requests seen while polling

    @property
    def should_stop(self) -> bool:
        # A stop request may be waiting on the channel: look before answering.
        if self._stop_reason is None:
            self._poll()
        return self._stop_reason is not None

    def epoch_end(self, epoch: int, metrics: Mapping[str, Any] | None = None, **more: Any) -> Any:
        # The same checks as in the driver's RunContext: a clear TypeError here.
        epoch = epoch_number(epoch)
        notes: list[tuple[str, str]] = []
        values = metric_values(metrics, more, notes)
        if notes:
            self.note_values(notes)
        self.epochs_reported += 1
        self.last_epoch = epoch
        self.last_metrics = values
        message = {"op": "epoch", "epoch": epoch, "metrics": values}
        return self._request(message, lambda reply: bool(reply.get("stop")))

    def publish(self, event: Event) -> Any:
        # Plain data, as the logs will hold it: the driver rebuilds the event from it.
        message = {"op": "publish", "event": self.event_values(event)}
        return self._request(message, lambda reply: None)

    def result_message(self, result: Any) -> Message:
        """The ``result`` message of ``run``'s return value, as plain data, changes noted."""
        if isinstance(result, Mapping):
            return {"op": "result", "value": self.final_metrics(result)}
        # The driver stores any other value as the metric "result": named so here too.
        return {"op": "result", "value": self.final_metrics({"result": result})["result"]}

    # -- the conversation ------------------------------------------------------------

    def _request(self, message: Message, answer: Callable[[Message], Any]) -> Any:
        if _in_event_loop():
            return self._arequest(message, answer)
        with self._lock:
            talk = self._conversation(message, answer)
            while True:
                try:
                    pending = next(talk)
                except StopIteration as done:
                    return done.value
                asyncio.run(pending)

    async def _arequest(self, message: Message, answer: Callable[[Message], Any]) -> Any:
        # One run per worker: blocking this loop while the driver answers is fine.
        with self._lock:
            talk = self._conversation(message, answer)
            while True:
                try:
                    pending = next(talk)
                except StopIteration as done:
                    return done.value
                await pending

    def _conversation(
        self, message: Message, answer: Callable[[Message], Any]
    ) -> Generator[Coroutine[Any, Any, None], None, Any]:
        """Send ``message`` and wait for the reply, serving the driver's requests meanwhile.

        Yields each async save hook to run (the caller runs it in its own way: in this
        thread's loop or a fresh one); returns ``answer(reply)``.
        """
        for queued in self._take_pending():
            pending = self._handle(queued)
            if pending is not None:
                yield pending
        self._channel.send(message)
        while True:
            incoming = self._receive(None)
            if incoming["op"] == "reply":
                self._note_stop(incoming)
                return answer(incoming)
            pending = self._handle(incoming)
            if pending is not None:
                yield pending

    def _receive(self, timeout: float | None) -> Message:
        try:
            message = self._channel.receive(timeout)
        except (EOFError, OSError):
            # The driver is gone: nobody will ever read this run's results.
            os._exit(70)
        assert message is not None
        return message

    def _poll(self) -> None:
        if not self._lock.acquire(blocking=False):
            return
        try:
            while True:
                try:
                    message = self._channel.receive(0)
                except (EOFError, OSError):
                    os._exit(70)
                if message is None:
                    return
                if message["op"] == "save":
                    self._pending.append(message)
                else:
                    self._handle(message)
        finally:
            self._lock.release()

    def _take_pending(self) -> list[Message]:
        pending, self._pending = self._pending, []
        return pending

    def serve_pending(self) -> None:
        for queued in self._take_pending():
            pending = self._handle(queued)
            if pending is not None:
                asyncio.run(pending)

    def _note_stop(self, message: Message) -> None:
        if message.get("stop") and self._stop_reason is None:
            self._stop_reason = message.get("reason") or "stop requested"
            self._stop_scope = message.get("scope") or "run"

    def _handle(self, message: Message) -> Coroutine[Any, Any, None] | None:
        """Serve one driver request; an awaitable when the save hook is async."""
        op = message["op"]
        if op == "stop":
            self._note_stop({**message, "stop": True})
            return None
        if op != "save":
            return None
        ident, path = message["id"], Path(message["path"])
        hook = getattr(self.pipeline, "save_checkpoint", None)
        try:
            result = hook(path) if callable(hook) else None
        except Exception as exc:
            self._channel.send({"op": "saved", "id": ident, "error": describe(exc)})
            return None
        if inspect.isawaitable(result):
            return self._finish_save(ident, result)
        self._channel.send({"op": "saved", "id": ident, "error": None})
        return None

    async def _finish_save(self, ident: int, pending: Awaitable[Any]) -> None:
        try:
            await pending
        except Exception as exc:
            self._channel.send({"op": "saved", "id": ident, "error": describe(exc)})
        else:
            self._channel.send({"op": "saved", "id": ident, "error": None})

    def linger(self) -> None:
        """After ``run`` returned: answer checkpoint requests until the driver says finish.

        The driver publishes ``RunEnding`` meanwhile, so a callback can still ask for a
        final checkpoint while the pipeline is alive.
        """
        self.serve_pending()
        while True:
            message = self._receive(None)
            if message["op"] == "finish":
                break
            pending = self._handle(message)
            if pending is not None:
                asyncio.run(pending)
        self._channel.send({"op": "finished"})

    def __repr__(self) -> str:
        return f"WorkerContext({self.experiment}/{self.trial}/run_{self.repeat}, seed={self.seed})"


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
