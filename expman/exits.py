"""How a pipeline may not end expman's process: by exiting it, or by forking expman along.

A pipeline runs inside expman's process (the ``async``/``thread`` executors) or inside a
worker that expman drives (``process``).  Either way it must never make a run look
finished by ending the process itself:

* ``SystemExit``, ``KeyboardInterrupt`` and ``GeneratorExit`` escaping ``run`` (or a
  hook) are that run's failure, :class:`PipelineExit` ("pipeline raised
  SystemExit(0)"); the other runs go on (:func:`pipeline_exits`).
* ``os._exit`` called by a pipeline while it runs in expman's own process raises
  :class:`PipelineExit` in the pipeline instead of ending the process
  (:func:`guarding_os_exit` replaces ``os._exit`` while at least one in-process run is
  going).  expman itself ends the process with :func:`real_exit`.
* A child made by ``os.fork()`` in a pipeline never runs expman's code: it is marked
  right after the fork (``os.register_at_fork``), and every expman path the child can
  reach (the pipeline's return into expman, the event loop's heartbeat) ends it with
  :func:`end_if_forked`.  In the child, ``os._exit`` is the real one again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import NoReturn

from expman.errors import ExpmanError

#: ``os._exit`` as the interpreter made it: expman ends the process with this one.
real_exit: Callable[[int], NoReturn] = os._exit

_owner_pid = os.getpid()
_forked = False
_guards = 0
_guards_lock = threading.Lock()


class PipelineExit(ExpmanError):
    """A pipeline tried to end the process (``sys.exit``, ``os._exit``, an interrupt it raised).

    It is that run's failure; the process, and every other run, go on.
    """


def in_forked_child() -> bool:
    """Whether this process is a child a pipeline forked from expman's process."""
    return _forked or os.getpid() != _owner_pid


def end_if_forked(code: int = 0) -> None:
    """End this process at once if it is a pipeline's forked child (expman's code must not run)."""
    if in_forked_child():
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        real_exit(code)


def _after_fork_in_child() -> None:
    global _forked, _guards
    _forked = True
    _guards = 0
    os._exit = real_exit  # type: ignore[assignment]
    # The child gets Python's own signal behaviour back, not expman's (see interrupts).
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, signal.default_int_handler):
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_after_fork_in_child)


def describe_exit(exc: BaseException) -> str:
    """``pipeline raised SystemExit(0)``: what a pipeline's exit looked like."""
    if isinstance(exc, SystemExit):
        return f"pipeline raised SystemExit({exc.code!r})"
    detail = str(exc)
    return f"pipeline raised {type(exc).__name__}" + (f"({detail!r})" if detail else "")


#: What a pipeline may raise that must not travel on as an exit of expman's process.
EXITS = (SystemExit, KeyboardInterrupt, GeneratorExit)


@contextlib.contextmanager
def pipeline_exits() -> Iterator[None]:
    """Turn an exit raised by the pipeline inside the block into :class:`PipelineExit`.

    In a forked child the block's end (a return or any exception) ends the child.
    """
    try:
        yield
    except EXITS as exc:
        end_if_forked(1)
        raise PipelineExit(describe_exit(exc)) from exc
    except BaseException:
        end_if_forked(1)
        raise
    end_if_forked(0)


def _guarded_exit(code: int) -> NoReturn:
    if in_forked_child():
        real_exit(code)
    raise PipelineExit(f"pipeline called os._exit({code!r})")


@contextlib.contextmanager
def guarding_os_exit() -> Iterator[None]:
    """While the block runs, ``os._exit`` in this process raises :class:`PipelineExit`."""
    global _guards
    with _guards_lock:
        _guards += 1
        os._exit = _guarded_exit  # type: ignore[assignment]
    try:
        yield
    finally:
        with _guards_lock:
            _guards -= 1
            if _guards <= 0:
                _guards = 0
                os._exit = real_exit  # type: ignore[assignment]
