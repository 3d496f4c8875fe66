"""Ray executor: each run in its own Ray actor, on a local or an existing Ray cluster.

Ray is an optional extra (``pip install expman[ray]``) imported only when this
executor is used.  ``execution.ray`` holds the options:

* ``address``: join that cluster (``auto``, ``ray://host:10001``, ...); without it a
  local Ray instance is started (``num_cpus`` / ``num_gpus`` / any other
  ``ray.init`` option from ``execution.ray``) and shut down when the experiment ends.
  A Ray that is already initialised in this process (a notebook, a test) is used as
  it is and left running.

Each run is one actor (a threaded actor with its own worker process) created with the
trial's ``resources`` as ``num_cpus`` (default 1) and ``num_gpus``: Ray schedules
them, and ``ctx.devices`` in the worker is what Ray assigned
(``ray.get_gpu_ids()``).  The actor's ``run`` method is a streaming generator: it
yields the worker's messages (epochs, log lines, the end) as they happen, and the
driver answers through the actor's ``send`` method (replies, stop, checkpoint
requests); the conversation is the one of :mod:`expman.executors.worker`.  Whatever
the run logs through structlog, ``logging``, ``print`` or ``sys.stderr`` is sent as
log lines to its run.log (output written below Python, at the C level, stays in
Ray's own worker logs).  A cancelled run's actor is killed (``ray.kill``); an actor
that dies fails its run with :class:`~expman.errors.WorkerLost`.

The config folder and the driver's ``sys.path`` are put on the worker's
``sys.path``, which is enough on one machine; on a remote cluster ship the code with
``execution.ray.runtime_env`` (e.g. ``working_dir``).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from expman.errors import ExecutorError, WorkerLost
from expman.executors.base import Executor
from expman.executors.channel import Message
from expman.executors.remote import RemoteRun, start_message

if TYPE_CHECKING:
    from expman.run.context import RunContext


def import_ray() -> Any:
    """The ``ray`` module, or an ExecutorError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ExecutorError(
            f"the ray executor needs Ray: pip install 'expman[ray]' ({exc})"
        ) from None
    return ray


@dataclass(frozen=True, slots=True)
class RayStatistics:
    """A snapshot of a Ray executor's counts."""

    actors_started: int
    started_ray: bool
    startup_seconds: float | None


class RayExecutor(Executor):
    """Runs each run as a Ray actor; the bus, callbacks and writers stay on the driver."""

    name = "ray"

    def __init__(
        self, options: Mapping[str, Any] | None = None, *, config_dir: Path | None = None
    ) -> None:
        self.options = dict(options or {})
        self.config_dir = config_dir
        self.started_ray = False
        self.startup_seconds = 0.0
        self.actors_started = 0
        self._ray: Any = None
        self._actor_class: Any = None

    async def __aenter__(self) -> RayExecutor:
        self._ray = import_ray()
        if not self._ray.is_initialized():
            started = anyio.current_time()
            await anyio.to_thread.run_sync(self._init)
            self.started_ray = True
            self.startup_seconds = anyio.current_time() - started
        self._actor_class = self._ray.remote(RunActor)
        return self

    def _init(self) -> None:
        options = dict(self.options)
        options.setdefault("include_dashboard", False)
        options.setdefault("log_to_driver", False)  # run output goes to run.log instead
        options.setdefault("logging_level", "ERROR")
        if not options.get("address"):
            options.pop("address", None)
            options.setdefault("num_cpus", os.cpu_count() or 1)
        try:
            self._ray.init(**options)
        except Exception as exc:
            where = options.get("address") or "a local instance"
            raise ExecutorError(f"cannot start Ray ({where}): {_gist(exc)}") from exc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.started_ray and self._ray is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._ray.shutdown)
            self.started_ray = False

    def statistics(self) -> RayStatistics:
        """Actors started so far; whether (and how fast) this executor started Ray itself."""
        return RayStatistics(self.actors_started, self.started_ray, self.startup_seconds)

    def sys_path(self) -> list[str]:
        paths = [str(self.config_dir)] if self.config_dir is not None else []
        paths.extend(p for p in sys.path if p and p not in paths)
        return paths

    async def execute(self, ctx: RunContext) -> Mapping[str, Any] | None:
        ray = self._ray
        if ray is None:
            raise ExecutorError("the ray executor is used outside of `async with executor`")
        resources = ctx.spec.trial.resources
        actor = self._actor_class.options(
            num_cpus=resources.get("cpus", 1),
            num_gpus=resources.get("gpus", 0),
            max_concurrency=4,  # run() streams while send() delivers the driver's answers
        ).remote()
        self.actors_started += 1
        generator = actor.run.options(num_returns="streaming").remote(
            start_message(ctx, self.sys_path(), self.config_dir)
        )

        async def send(message: Message) -> None:
            await actor.send.remote(message)

        async def messages() -> AsyncIterator[Message]:
            try:
                async for ref in generator:
                    yield await ref
            except ray.exceptions.RayActorError as exc:
                lost = f"the Ray actor died before its run ended ({_gist(exc)})"
                raise WorkerLost(lost) from None
            except ray.exceptions.RayError as exc:
                raise WorkerLost(f"Ray lost the run before it ended ({_gist(exc)})") from None

        remote = RemoteRun(ctx, send)
        try:
            return await remote.serve(messages())  # type: ignore[no-any-return]
        finally:
            with anyio.CancelScope(shield=True):
                # The run has ended (or is cancelled): its actor is not needed anymore.
                await anyio.to_thread.run_sync(_kill, ray, actor)


def _gist(exc: BaseException) -> str:
    """The first line of a Ray error (its full text spans many lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _kill(ray: Any, actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # an actor that is already gone is fine
        pass


class _QueueChannel:
    """The worker's channel inside the actor: two thread-safe queues."""

    def __init__(self, inbox: queue.Queue[Message], outbox: queue.Queue[Message]) -> None:
        self._inbox = inbox
        self._outbox = outbox

    def send(self, message: Message) -> None:
        self._outbox.put(message)

    def receive(self, timeout: float | None) -> Message | None:
        try:
            if timeout == 0:
                return self._inbox.get_nowait()
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None


class _LineWriter:
    """A text stream that sends each complete line as a run.log entry."""

    def __init__(self, channel: _QueueChannel, context: Mapping[str, Any], stream: str) -> None:
        self._channel = channel
        self._context = context
        self._stream = stream
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        # Imported where the actor runs (its process imports this module fresh).
        from expman.executors.worker import output_record

        with self._lock:
            lines = (self._pending + text).split("\n")
            self._pending = lines.pop()
            for line in lines:
                if line.strip():
                    record = output_record(line, self._context, self._stream).decode()
                    self._channel.send({"op": "log", "line": record})
        return len(text)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False


class RunActor:
    """One run on a Ray worker: ``run`` streams the worker's messages, ``send`` answers."""

    def __init__(self) -> None:
        self._inbox: queue.Queue[Message] = queue.Queue()
        self._outbox: queue.Queue[Message] = queue.Queue()

    def send(self, message: Message) -> None:
        self._inbox.put(message)

    def run(self, start: Message) -> Any:
        import ray

        from expman.executors.worker import configure_logging, run_worker

        channel = _QueueChannel(self._inbox, self._outbox)
        start = dict(start)
        start["devices"] = [str(d) for d in ray.get_gpu_ids()]
        context = start.get("log_context") or {}
        configure_logging(lambda line: channel.send({"op": "log", "line": line}), context)
        sys.stdout = _LineWriter(channel, context, "stdout")
        sys.stderr = _LineWriter(channel, context, "stderr")
        worker = threading.Thread(target=run_worker, args=(start, channel), daemon=True)
        worker.start()
        while True:
            message = self._outbox.get()
            yield message
            if message["op"] in ("finished", "error"):
                return
