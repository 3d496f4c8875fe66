"""The worker's side of a run that executes away from the driver (a process, a Ray actor).

The driver sends one ``start`` message; the worker builds the pipeline (the config
folder is put on ``sys.path`` first), loads its checkpoint when resuming, runs it and
answers with ``result`` or ``error``.  The pipeline's own callbacks
(``register_callback``) travel pickled in ``ready`` and run on the driver's bus.
In between, the conversation is:

=====================  ===========================================================
worker -> driver       meaning
=====================  ===========================================================
``ready``              the pipeline is built (``has_saver``: it can save checkpoints)
``epoch``              ``ctx.epoch_end``; the worker waits for ``reply``
``publish``            ``ctx.publish(event)``; the worker waits for ``reply``
``saved``              answer to ``save`` (``error`` set when the hook failed)
``log``                one JSON log line for run.log (Ray; processes use stdout)
``result``/``error``   the run's end (after ``result`` the worker still serves ``save``)
``finished``           answer to ``finish``: the worker is about to exit
=====================  ===========================================================

=====================  ===========================================================
driver -> worker       meaning
=====================  ===========================================================
``reply``              answer to ``epoch``/``publish``: ``stop`` and its reason
``stop``               the run was asked to stop (``ctx.should_stop`` becomes True)
``save``               call the pipeline's ``save_checkpoint`` on ``path``
``finish``             the run has ended on the driver (``RunEnding`` published)
=====================  ===========================================================

Requests that need the pipeline's own thread (``save``) are served while the
worker waits inside ``epoch_end``/``publish`` (a callback asking for a checkpoint on
an epoch is answered before ``epoch_end`` returns) or else at the next of those
calls; ``stop`` is noticed whenever the pipeline reads ``ctx.should_stop``.

The process worker's entry point is :func:`main`: ``python -c "from
expman.executors.worker import main; main()" FD`` with ``FD`` one end of a socket
pair carrying length-prefixed JSON frames.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import faulthandler
import inspect
import logging
import os
import pickle
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from pathlib import Path
from typing import Any, Protocol

import structlog

from expman.events import Event, to_dict
from expman.jsonlines import dumps, loads
from expman.run.view import RunView, epoch_number, metric_values
from expman.workspace.layout import RunPaths
from expman.workspace.logrouting import iso, log_processors, logging_entry

Message = dict[str, Any]
LineSink = Callable[[str], None]
_HEADER = struct.Struct(">I")
#: A line on a process worker's stdout that starts with this byte is a sync mark.
MARK = b"\x1e"


class Channel(Protocol):
    """Messages between the worker and the driver."""

    def send(self, message: Message) -> None: ...

    def receive(self, timeout: float | None) -> Message | None:
        """The next message; None when ``timeout`` passed; EOFError once closed."""
        ...


class SocketChannel:
    """Length-prefixed JSON frames over a blocking socket (the process worker's end).

    Before each message it flushes stdout/stderr and writes a mark line to fd 1, so
    the driver publishes what the run printed before the message first.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._marks = 0
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        with self._lock:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            self._marks += 1
            message["mark"] = self._marks
            with contextlib.suppress(OSError):
                os.write(1, MARK + str(self._marks).encode() + b"\n")
            body = dumps(message)
            self._sock.sendall(_HEADER.pack(len(body)) + body)

    def receive(self, timeout: float | None) -> Message | None:
        if timeout is not None:
            ready, _, _ = select.select([self._sock], [], [], timeout)
            if not ready:
                return None
        header = self._read(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        message: Message = loads(self._read(size))
        return message

    def _read(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self._sock.recv(size - len(data))
            if not chunk:
                raise EOFError("the driver closed the channel")
            data += chunk
        return bytes(data)


# -- log lines ------------------------------------------------------------------------


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


# -- the pipeline's ctx -----------------------------------------------------------------


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
        values = metric_values(metrics, more)
        self.epochs_reported += 1
        self.last_epoch = epoch
        self.last_metrics = values
        message = {"op": "epoch", "epoch": epoch, "metrics": values}
        return self._request(message, lambda reply: bool(reply.get("stop")))

    def publish(self, event: Event) -> Any:
        return self._request({"op": "publish", "event": to_dict(event)}, lambda reply: None)

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

    def _serve_pending_sync(self) -> None:
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
            self._channel.send({"op": "saved", "id": ident, "error": _describe(exc)})
            return None
        if inspect.isawaitable(result):
            return self._finish_save(ident, result)
        self._channel.send({"op": "saved", "id": ident, "error": None})
        return None

    async def _finish_save(self, ident: int, pending: Awaitable[Any]) -> None:
        try:
            await pending
        except Exception as exc:
            self._channel.send({"op": "saved", "id": ident, "error": _describe(exc)})
        else:
            self._channel.send({"op": "saved", "id": ident, "error": None})

    def _linger(self) -> None:
        """After ``run`` returned: answer checkpoint requests until the driver says finish.

        The driver publishes ``RunEnding`` meanwhile, so a callback can still ask for a
        final checkpoint while the pipeline is alive.
        """
        self._serve_pending_sync()
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


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


# -- running one pipeline -----------------------------------------------------------------


def run_worker(start: Mapping[str, Any], channel: Channel) -> None:
    """Build, (re)load and run the pipeline ``start`` names; report its end on ``channel``."""
    from expman.pipeline import build_pipeline

    ctx = WorkerContext(start, channel)
    # Context variables belong to a thread: bind the run's identity where it runs.
    structlog.contextvars.bind_contextvars(**(start.get("log_context") or {}))
    # Before any user code: CUDA and friends read these when they initialise.
    os.environ.update(start.get("env") or {})
    try:
        for entry in reversed(start.get("sys_path") or ()):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        pipeline = ctx.pipeline = build_pipeline(start["settings"]["pipeline"])
        if ctx.checkpoint is not None:
            load = getattr(pipeline, "load_checkpoint", None)
            if callable(load):
                _call(load, ctx.checkpoint)
        ready: Message = {"op": "ready"}
        ready["has_saver"] = callable(getattr(pipeline, "save_checkpoint", None))
        ready.update(_pickled_callbacks(pipeline))
        channel.send(ready)
        result = _call(pipeline.run, ctx)
        ctx._serve_pending_sync()
    except BaseException as exc:  # everything the run raised is its result
        channel.send(
            {
                "op": "error",
                "type": type(exc).__qualname__,
                "module": type(exc).__module__,
                "message": str(exc),
                "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            }
        )
        return
    channel.send({"op": "result", "value": result})
    ctx._linger()


def _pickled_callbacks(pipeline: Any) -> Message:
    """The pipeline's own callbacks (``register_callback``), pickled for the driver's bus."""
    callbacks = list(getattr(pipeline, "callbacks", None) or ())
    if not callbacks:
        return {}
    try:
        return {"callbacks": base64.b64encode(pickle.dumps(callbacks)).decode()}
    except Exception as exc:
        return {"callbacks_error": _describe(exc)}


def _call(function: Callable[..., Any], *args: Any) -> Any:
    result = function(*args)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(pending: Awaitable[Any]) -> Any:
    return await pending


def main() -> None:
    """Entry point of a worker process: serve the one run the driver sends on fd ``argv[1]``."""
    # The driver decides what Ctrl-C means (a graceful stop); the worker does not die of it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A crash (segfault, abort) prints the Python stack to stderr, hence to run.log.
    faulthandler.enable()
    sock = socket.socket(fileno=int(sys.argv[1]))
    channel = SocketChannel(sock)
    try:
        start = channel.receive(None)
    except EOFError:
        return
    assert start is not None

    def to_stdout(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    configure_logging(to_stdout, start.get("log_context") or {})
    run_worker(start, channel)
    sys.stdout.flush()
    sys.stderr.flush()
    sock.close()
