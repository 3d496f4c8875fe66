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
expman.executors.worker import main; main()" FD PID`` with ``FD`` one end of a socket
pair carrying length-prefixed JSON frames and ``PID`` the driver's process id.  The
worker dies with the driver: on Linux the kernel sends it SIGKILL when the driver
ends, however it ends (``PR_SET_PDEATHSIG``); elsewhere it ends when it finds the
channel closed or its parent changed.  A child the pipeline forks ends when the
pipeline returns in it (:mod:`expman.exits`); it never speaks on the channel.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import faulthandler
import inspect
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from expman.executors.channel import MARK, Channel, Message, SocketChannel
from expman.executors.worker_context import WorkerContext, describe
from expman.executors.worker_logging import configure_logging, output_record
from expman.exits import EXITS, PipelineExit, describe_exit, end_if_forked, real_exit
from expman.pipeline import build_pipeline, checkpoint_args, checkpoint_load_error
from expman.serializable import import_path

__all__ = ["MARK", "configure_logging", "main", "output_record", "run_worker"]


def run_worker(start: Mapping[str, Any], channel: Channel) -> None:
    """Build, (re)load and run the pipeline ``start`` names; report its end on ``channel``."""
    ctx = WorkerContext(start, channel)
    # Context variables belong to a thread: bind the run's identity where it runs.
    structlog.contextvars.bind_contextvars(**(start.get("log_context") or {}))
    # Before any user code: CUDA and friends read these when they initialise.
    os.environ.update(start.get("env") or {})
    try:
        for entry in reversed(start.get("sys_path") or ()):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        config_dir = start.get("config_dir")
        if config_dir:
            # The config folder's own modules first, as in the driver: their names resolve.
            with import_path(Path(config_dir)):
                pipeline = build_pipeline(start["settings"]["pipeline"])
        else:
            pipeline = build_pipeline(start["settings"]["pipeline"])
        ctx.pipeline = pipeline
        if ctx.checkpoint is not None:
            load = getattr(pipeline, "load_checkpoint", None)
            if callable(load):
                try:
                    _call(load, *checkpoint_args(load, ctx.checkpoint, ctx))
                except Exception as exc:
                    raise checkpoint_load_error(ctx.checkpoint, exc) from exc
        ready: Message = {"op": "ready"}
        ready["has_saver"] = callable(getattr(pipeline, "save_checkpoint", None))
        ready.update(_pickled_callbacks(pipeline))
        channel.send(ready)
        result = _call(pipeline.run, ctx)
        ctx.serve_pending()
    except BaseException as exc:  # everything the run raised is its result
        end_if_forked(1)  # a child the pipeline forked never speaks for the run
        if isinstance(exc, EXITS):
            exc = PipelineExit(describe_exit(exc))
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
    end_if_forked(0)
    channel.send(ctx.result_message(result))
    ctx.linger()


def _pickled_callbacks(pipeline: Any) -> Message:
    """The pipeline's own callbacks (``register_callback``), pickled for the driver's bus."""
    callbacks = list(getattr(pipeline, "callbacks", None) or ())
    if not callbacks:
        return {}
    try:
        return {"callbacks": base64.b64encode(pickle.dumps(callbacks)).decode()}
    except Exception as exc:
        return {"callbacks_error": describe(exc)}


def _call(function: Callable[..., Any], *args: Any) -> Any:
    result = function(*args)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(pending: Awaitable[Any]) -> Any:
    return await pending


#: ``prctl`` option: the signal the kernel sends this process when its parent dies.
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """End this process as soon as the process ``parent`` (the driver) ends.

    On Linux the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``); a
    parent that died before that call is caught by comparing ``os.getppid()`` after it.
    Elsewhere a daemon thread checks the parent every 0.2 s.
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:
        real_exit(70)
    if not armed:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.2)
            real_exit(70)

        threading.Thread(target=watch, name="expman-parent-watch", daemon=True).start()


def main() -> None:
    """Entry point of a worker process: serve the one run the driver sends on fd ``argv[1]``."""
    if len(sys.argv) > 2:
        die_with_parent(int(sys.argv[2]))
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
