"""What SIGINT and SIGTERM mean to the ``expman`` command, from its first instruction to its last.

:func:`install` is the first thing the command does (``expman/__main__.py``, before
any heavy import).  From then on a signal never raises ``KeyboardInterrupt`` and never
kills the process with the default action; what it does depends on the moment:

* **No experiment listening** (starting up, reading configs, the results commands,
  after the experiment ended, shutting down): one short line on stderr and the process
  ends at once with :func:`exit_code` (130 for SIGINT, 143 for SIGTERM: 128 + the
  signal's number).  Nothing has run yet, or everything is recorded; what was being
  written is left as a kill would leave it, which resume repairs.
* **An experiment listening** (:func:`listening`): the first signal is handed to the
  event loop (the command asks every run to stop: checkpoints, ``cancelled``, resume
  later) and the watchdog is told a stop is due; a second one is handed over too (the
  command cancels at once, still recording every run), unless the loop has not answered
  for a second (a pipeline blocks it): then the process ends at once.  A third ends the
  process at once whatever the loop does.
* **A pipeline's forked child** gets Python's own behaviour back (:mod:`expman.exits`).

The exit code of an interrupted command is that of the first signal.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

import expman.watchdog as watchdog
from expman.exits import in_forked_child, real_exit

if TYPE_CHECKING:
    import asyncio

#: The signals the command handles.
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds without a heartbeat after which a second signal no longer waits for the loop.
UNANSWERED = 1.0

_first: int | None = None
_count = 0
_listener: tuple[asyncio.AbstractEventLoop, Callable[[int], None]] | None = None
#: What the line says about the moment when nobody listens.
_moment = ""
_installed = False
#: The command's exit code once it has returned (see :func:`ending`).
_final_code: int | None = None


def exit_code(signum: int | None = None) -> int:
    """The exit code of a command interrupted by ``signum`` (default: the first signal seen)."""
    number = signum if signum is not None else (_first or signal.SIGINT)
    return 128 + int(number)


def received() -> int | None:
    """The first signal the command received, if any."""
    return _first


def starting_experiment() -> None:
    """Say, for a signal that comes before the experiment listens, that no run started yet."""
    global _moment
    _moment = " before any run started; run the same command again to resume"


def install() -> None:
    """Handle SIGINT and SIGTERM as this module describes, from now on."""
    global _installed
    for signum in SIGNALS:
        with contextlib.suppress(ValueError, OSError):  # not the main thread: leave them
            signal.signal(signum, _on_signal)
    if not _installed:
        _installed = True
        # Registered first, so it runs last, after every other atexit function.
        atexit.register(_leave)


def ending(code: int) -> None:
    """The command returned ``code``: the process will end with it, past Python's finalization.

    Python's finalization puts the signals' default actions back before the process
    is gone; a signal in that moment would kill it (exit -2, -15) with no message.
    So, once the other atexit functions have run, the process ends with ``code``
    (stdout and stderr flushed) while expman's handlers still stand.
    """
    global _final_code
    _final_code = code


def _leave() -> None:
    if _final_code is None or in_forked_child():
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    real_exit(_final_code)


@contextlib.contextmanager
def listening(on_signal: Callable[[int], None]) -> Iterator[None]:
    """Hand signals to ``on_signal`` in the running event loop while the block runs.

    The block runs in the loop; ``on_signal(signum)`` is called there for the first and
    second signal.  When the block ends, signals end the process again (with the line
    saying the experiment had ended).
    """
    import asyncio  # here, not at the top: install() runs before anything heavy loads

    global _listener, _moment
    previous = _listener
    _listener = (asyncio.get_running_loop(), on_signal)
    try:
        yield
    finally:
        _listener = previous
        _moment = " after the experiment ended"


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _first, _count
    if in_forked_child():  # a pipeline's child: as if expman had never been here
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
        return
    _count += 1
    if _first is None:
        _first = signum
    name = signal.Signals(signum).name
    listener = _listener
    if listener is None:
        _end(f"\nexpman: {name}: interrupted{_moment}\n")
        return
    dog = watchdog.current()
    if _count == 1 and dog is not None:
        dog.add(watchdog.Deadline(time.monotonic(), f"the stop {name} asked for", exit_code()))
    elif _count == 2 and dog is not None and dog.silent_for() > UNANSWERED:
        _end(
            f"\nexpman: {name} again while {dog.blocker()} blocks the event loop: "
            "exiting now; the next `expman run` resumes\n"
        )
    elif _count >= 3:
        _end(f"\nexpman: {name} again: exiting now; the next `expman run` resumes\n")
    loop, callback = listener
    try:
        loop.call_soon_threadsafe(callback, signum)
    except RuntimeError:  # the loop is closed: nobody listens any more
        _end(f"\nexpman: {name}: interrupted while finishing\n")


def _end(message: str) -> None:
    watchdog.say(message)
    watchdog.flush_streams()
    real_exit(exit_code())
