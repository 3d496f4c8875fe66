"""The driver's side of a run executing elsewhere (a worker process, a Ray actor).

:class:`RemoteRun` speaks the conversation described in :mod:`expman.executors.worker`
for one :class:`~expman.runtime.context.RunContext`: it publishes the worker's epochs
on the bus through ``ctx`` (so control callbacks see each epoch before the worker's
``epoch_end`` returns), forwards stop requests, serves checkpoint requests with the
worker's save hook, and turns the worker's end into a result, the pipeline's own
exception, or :class:`~expman.errors.WorkerLost` when the worker vanished.

Messages are read by one task and handled by another: an epoch's control callbacks
may ask for a checkpoint, and the worker's ``saved`` answer must be read while the
handler still waits inside that epoch.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import math
import pickle
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

import expman.errors as errors
from expman.errors import WorkerLost
from expman.events import LogRecord, from_dict
from expman.executors.channel import Message

if TYPE_CHECKING:
    from expman.run.context import RunContext

log = structlog.get_logger("expman.executors")
_ENDED = "the worker ended before saving the checkpoint"
Send = Callable[[Message], Awaitable[None]]


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker (shown as the cause)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


class RemoteError(Exception):
    """Base of the exceptions rebuilt from a worker's ``error`` message."""


_remote_types: dict[tuple[str, str], type[RemoteError]] = {}


def remote_exception(message: Mapping[str, Any]) -> RemoteError:
    """An exception that formats like the worker's (``ValueError: boom``), with its traceback.

    The class is a :class:`RemoteError` named and placed like the original, so a run's
    error reads the same whichever executor ran it.
    """
    name, module = str(message.get("type") or "Exception"), str(message.get("module") or "")
    cls = _remote_types.get((module, name))
    if cls is None:
        # expman's own errors keep their class (the runtime tells them apart).
        own = getattr(errors, name, None) if module == errors.__name__ else None
        bases = (
            (RemoteError, own)
            if isinstance(own, type) and issubclass(own, Exception)
            else (RemoteError,)
        )
        cls = type(name, bases, {"__module__": module, "__qualname__": name})
        _remote_types[(module, name)] = cls
    exc = cls(message.get("message", ""))
    if message.get("traceback"):
        exc.__cause__ = RemoteTraceback(str(message["traceback"]))
    return exc


def start_message(ctx: RunContext, sys_path: list[str], config_dir: Path | None = None) -> Message:
    """The ``start`` message that tells a worker which run to execute.

    ``config_dir``: the experiment's config folder, whose modules the worker imports
    before it resolves the pipeline's name (names they register work there too).
    """
    return {
        "op": "start",
        "sys_path": sys_path,
        "config_dir": str(config_dir) if config_dir is not None else None,
        "experiment": ctx.experiment,
        "trial": ctx.trial,
        "trial_id": ctx.trial_id,
        "repeat": ctx.repeat,
        "seed": ctx.seed,
        "settings": dict(ctx.settings),
        "root": str(ctx.paths.root),
        "attempt": ctx.attempt,
        "start_epoch": ctx.start_epoch,
        "checkpoint": str(ctx.checkpoint) if ctx.checkpoint is not None else None,
        "devices": list(ctx.devices),
        "stop": [ctx.stop_reason, ctx.stop_scope] if ctx.should_stop else None,
        "log_context": {"experiment": ctx.experiment, "trial": ctx.trial, "repeat": ctx.repeat},
    }


class RemoteRun:
    """Serves one worker's messages for ``ctx`` until the run ends."""

    def __init__(
        self,
        ctx: RunContext,
        send: Send,
        *,
        before: Callable[[Message], Awaitable[None]] | None = None,
    ) -> None:
        self.ctx = ctx
        self._send = send
        self._send_lock = anyio.Lock()
        self._before = before
        self._ids = itertools.count(1)
        # Invariant: every save awaiting the worker's answer has an entry here; they
        # are all answered (with an error) once the worker's messages end.
        self._saves: dict[int, tuple[anyio.Event, list[str | None]]] = {}
        self._ended = False
        self._lost: WorkerLost | None = None  # why the worker's messages ended early
        self._reader_done = anyio.Event()

    async def send(self, message: Message) -> None:
        async with self._send_lock:
            await self._send(message)

    async def serve(self, messages: AsyncIterator[Message]) -> Any:
        """The run's result; raises the pipeline's exception or WorkerLost."""
        send, receive = anyio.create_memory_object_stream[Message | None](math.inf)
        result: Any = None
        failure: BaseException | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._read, messages, send)
            tg.start_soon(self._forward_stop)
            try:
                result = await self._handle(receive)
            except WorkerLost as exc:
                # Say why the worker went, as its messages' end tells (Ray's reason).
                with anyio.move_on_after(5):
                    await self._reader_done.wait()
                failure = self._lost or exc
            except Exception as exc:
                # Raised outside the task group, so callers see it as is (not in a group).
                failure = exc
            finally:
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return result

    async def _handle(self, receive: MemoryObjectReceiveStream[Message | None]) -> Any:
        async with receive:
            async for message in receive:
                if message is None:
                    break
                op = message["op"]
                if self._before is not None:
                    await self._before(message)
                if op == "epoch":
                    stop = await self.ctx.report_epoch(
                        int(message["epoch"]), message.get("metrics") or {}
                    )
                    await self._answer(self._reply(stop))
                elif op == "publish":
                    await self.ctx.emit(from_dict(message["event"]))
                    await self._answer(self._reply(self.ctx.should_stop))
                elif op == "result":
                    await self._run_ending()
                    return message.get("value")
                elif op == "error":
                    raise remote_exception(message)
        raise self._lost or WorkerLost("the worker ended before its run did")

    async def _run_ending(self) -> None:
        """``run`` returned: publish RunEnding while the worker still answers, then finish."""
        await self.ctx.publish_run_ending()
        await self._answer({"op": "finish"})

    async def _attach_callbacks(self, ready: Message) -> None:
        """The pipeline's own callbacks (pickled by the worker) join the run's, here."""
        if ready.get("callbacks_error"):
            log.warning("pipeline_callbacks_not_sent", error=ready["callbacks_error"])
        blob = ready.get("callbacks")
        if not blob:
            return
        try:
            callbacks = pickle.loads(base64.b64decode(blob))
        except Exception as exc:
            log.warning("pipeline_callbacks_not_loaded", error=repr(exc))
            return
        await self.ctx.attach_callbacks(callbacks)

    async def _answer(self, reply: Message) -> None:
        try:
            await self.send(reply)
        except Exception:
            # The worker died while its request was being served: its messages end
            # next, and the run fails with WorkerLost.
            return

    def _reply(self, stop: bool) -> Message:
        ctx = self.ctx
        return {"op": "reply", "stop": stop, "reason": ctx.stop_reason, "scope": ctx.stop_scope}

    async def _read(
        self, messages: AsyncIterator[Message], out: MemoryObjectSendStream[Message | None]
    ) -> None:
        """Answer saves and forward logs at once; queue everything else for the handler."""
        try:
            async for message in messages:
                op = message.get("op")
                if op == "saved":
                    entry = self._saves.get(int(message["id"]))
                    if entry is not None:
                        entry[1].append(message.get("error"))
                        entry[0].set()
                elif op == "log":
                    await self.publish_line(str(message["line"]))
                elif op == "ready":
                    if message.get("has_saver"):
                        self.ctx.set_checkpoint_saver(self._save)
                    await self._attach_callbacks(message)
                else:
                    await out.send(message)
        except WorkerLost as exc:
            self._lost = exc
        except Exception as exc:
            self._lost = WorkerLost(f"lost the worker: {exc!r}")
        finally:
            self._ended = True
            for event, answer in self._saves.values():
                answer.append(_ENDED)
                event.set()
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                out.send_nowait(None)
            self._reader_done.set()

    async def publish_line(self, line: str) -> None:
        """One line for the run's run.log (a JSON object), via the bus."""
        ctx = self.ctx
        await ctx.emit(
            LogRecord(experiment=ctx.experiment, trial=ctx.trial, repeat=ctx.repeat, line=line)
        )

    async def _forward_stop(self) -> None:
        ctx = self.ctx
        await ctx.wait_for_stop()
        # A worker that has just ended cannot hear it; that is not an error.
        with contextlib.suppress(Exception):
            await self.send({"op": "stop", "reason": ctx.stop_reason, "scope": ctx.stop_scope})

    async def _save(self, path: Path) -> None:
        """The run's checkpoint saver: the worker's hook writes ``path``.

        A worker that is gone (or goes while saving) raises WorkerLost, so the run
        fails for that reason rather than for a broken channel.
        """
        if self._ended:
            raise WorkerLost("the worker ended before it could save a checkpoint")
        ident = next(self._ids)
        done = anyio.Event()
        answer: list[str | None] = []
        self._saves[ident] = (done, answer)
        try:
            try:
                await self.send({"op": "save", "id": ident, "path": str(path)})
            except Exception as exc:
                lost = f"the worker cannot be reached to save a checkpoint: {exc!r}"
                raise WorkerLost(lost) from None
            await done.wait()
        finally:
            del self._saves[ident]
        if self._ended and answer and answer[0] == _ENDED:
            raise WorkerLost("the worker ended before it saved the checkpoint")
        if answer and answer[0]:
            raise RuntimeError(f"save_checkpoint failed in the worker: {answer[0]}")
