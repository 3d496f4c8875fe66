"""A watchdog outside the event loop, for a pipeline that blocks it.

An ``async def run`` that never awaits (``while True: pass``, a long computation)
holds the event loop: no timeout, stop request or second Ctrl-C handled in the loop can
reach it.  So while ``expman run`` runs an experiment, the loop beats every
:data:`BEAT` seconds (:meth:`Watchdog.heartbeat`) and a daemon thread watches the beats
and the deadlines the runtime gives it (:func:`deadline`: a run's ``execution.timeout``;
the stop a signal asked for).  When a deadline is due and the loop has not beaten for
:data:`BLOCKED_AFTER` seconds, the watchdog prints which run is blocking the loop (the
run whose pipeline the loop's thread is executing, found on that thread's stack),
flushes what it can, and ends the process with the deadline's exit code.  The journal
is left as a kill would leave it: the next ``expman run`` resumes.

Outside ``expman run`` (the Python API) no watchdog runs and :func:`deadline` is free.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

from expman.exits import end_if_forked, real_exit

#: How often the event loop beats.
BEAT = 0.1
#: Seconds without a beat after which a due deadline ends the process.
BLOCKED_AFTER = 2.0
#: The local name that marks the frame running a run's pipeline (``executors/local.py``).
RUN_MARK = "_expman_run_label"


@dataclass(frozen=True, slots=True)
class Deadline:
    """Something due at ``when`` (monotonic): ``what`` for the message, ``code`` to exit with.

    ``still``, when given, says (from the watchdog's thread) whether it still matters;
    a deadline for which it answers False is dropped.  ``moving``, when given, is the
    time it is due now, in place of ``when`` (a stall deadline moves with each epoch).
    """

    when: float
    what: str
    code: int
    still: Callable[[], bool] | None = None
    moving: Callable[[], float] | None = None

    def due_at(self) -> float:
        return self.moving() if self.moving is not None else self.when


@dataclass(frozen=True, slots=True)
class WatchdogStatistics:
    """A snapshot of a watchdog: deadlines it holds, seconds since the loop's last beat."""

    deadlines: int
    silent_for: float


class Watchdog:
    """Ends the process when a deadline is due and the event loop does not answer."""

    def __init__(self, *, blocked_after: float = BLOCKED_AFTER) -> None:
        self.blocked_after = blocked_after
        # Invariant: written by the loop's thread only (beat), read by the watchdog's.
        self._last_beat = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._deadlines: dict[int, Deadline] = {}
        self._next_key = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the loop's side ------------------------------------------------------------------

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    async def heartbeat(self) -> None:
        """Beat every :data:`BEAT` seconds (a task in the experiment's task group)."""
        import anyio  # only the loop's side needs it

        while True:
            end_if_forked()  # a pipeline's forked child running a copy of our loop
            self.beat()
            await anyio.sleep(BEAT)

    def start(self) -> None:
        """Start watching from a daemon thread (the caller's thread is the loop's)."""
        self._loop_thread = threading.get_ident()
        self.beat()
        self._thread = threading.Thread(target=self._watch, name="expman-watchdog", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()

    def add(self, deadline: Deadline) -> int:
        with self._lock:
            self._next_key += 1
            self._deadlines[self._next_key] = deadline
            return self._next_key

    def remove(self, key: int) -> None:
        with self._lock:
            self._deadlines.pop(key, None)

    # -- the watchdog's side -------------------------------------------------------------

    def statistics(self) -> WatchdogStatistics:
        with self._lock:
            held = len(self._deadlines)
        return WatchdogStatistics(held, self.silent_for())

    def silent_for(self) -> float:
        """Seconds since the loop last beat."""
        return time.monotonic() - self._last_beat

    def due(self, now: float) -> Deadline | None:
        """The earliest deadline whose time has come while the loop is silent, if one has."""
        if now - self._last_beat < self.blocked_after:
            return None
        with self._lock:
            for key, found in list(self._deadlines.items()):
                if found.still is not None and not found.still():
                    del self._deadlines[key]
            passed = [d for d in self._deadlines.values() if now - d.due_at() >= self.blocked_after]
        return min(passed, key=lambda d: d.due_at()) if passed else None

    def _watch(self) -> None:
        while not self._closed.wait(BEAT):
            found = self.due(time.monotonic())
            if found is not None:
                self.end(found)

    def blocker(self) -> str:
        """Which run the loop's thread is executing, and where: ``run a/0 (pipelines.py:12)``."""
        frame = sys._current_frames().get(self._loop_thread)
        return describe_blocker(frame)

    def end(self, deadline: Deadline) -> None:
        silent = self.silent_for()
        say(
            f"\nexpman: the event loop has not answered for {silent:.1f}s: {self.blocker()} "
            f"blocks it (an async pipeline that does not await); {deadline.what} is due, "
            "so expman ends now. The next `expman run` resumes; run CPU-bound code in a "
            "sync `def run` or with the process executor.\n"
        )
        flush_streams()
        real_exit(deadline.code)


def describe_blocker(frame: FrameType | None) -> str:
    """The run whose pipeline runs in ``frame``'s stack, and the innermost user frame."""
    label: str | None = None
    where: str | None = None
    package = os.path.dirname(os.path.abspath(__file__))
    while frame is not None:
        code = frame.f_code
        if where is None and not _is_library(code.co_filename, package):
            where = f"{os.path.basename(code.co_filename)}:{frame.f_lineno} in {code.co_name}"
        if label is None and RUN_MARK in code.co_varnames:
            with contextlib.suppress(Exception):
                label = str(frame.f_locals[RUN_MARK])
        frame = frame.f_back
    text = f"run {label}" if label is not None else "a run"
    return f"{text} (at {where})" if where is not None else text


_STDLIB = os.path.dirname(os.path.abspath(os.__file__)) + os.sep


def _is_library(filename: str, package: str) -> bool:
    """expman's own code, the standard library's, anyio's: not where a pipeline is."""
    path = os.path.abspath(filename)
    return (
        path.startswith(package + os.sep)
        or (path.startswith(_STDLIB) and "site-packages" not in path)
        or f"{os.sep}anyio{os.sep}" in path
        or filename.startswith("<")
    )


def say(text: str) -> None:
    """Write ``text`` to stderr past Python's stream objects (safe in any thread or handler)."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode("utf-8", "replace"))


def flush_streams(timeout: float = 0.5) -> None:
    """Flush stdout and stderr, giving up after ``timeout`` (a blocked thread may hold them)."""

    def flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()

    flusher = threading.Thread(target=flush, daemon=True)
    flusher.start()
    flusher.join(timeout)


_current: Watchdog | None = None


def current() -> Watchdog | None:
    """The watchdog of the experiment running now, if ``expman run`` started one."""
    return _current


@contextlib.contextmanager
def watching(dog: Watchdog) -> Iterator[Watchdog]:
    """Make ``dog`` the current watchdog and run its thread for the block's duration."""
    global _current
    dog.start()
    _current = dog
    try:
        yield dog
    finally:
        _current = None
        dog.close()


def expect(
    seconds: float,
    what: str,
    code: int,
    *,
    still: Callable[[], bool],
    moving: Callable[[], float] | None = None,
) -> None:
    """Tell the current watchdog (if any) that ``what`` is due ``seconds`` from now.

    Given at once, not from a task that might start too late: a pipeline that blocks
    the loop may do so before any other task runs.  ``still`` ends the deadline;
    ``moving`` makes it move (see :class:`Deadline`).
    """
    dog = _current
    if dog is not None:
        dog.add(Deadline(time.monotonic() + seconds, what, code, still, moving))
