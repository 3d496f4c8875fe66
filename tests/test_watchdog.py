"""The watchdog's decisions, in-process: when a deadline counts as due, whom it names."""

from __future__ import annotations

import sys
import threading
import time

from expman.watchdog import Deadline, Watchdog, describe_blocker


def test_a_deadline_is_due_only_once_the_loop_has_been_silent_long_enough() -> None:
    """A passed deadline waits for blocked_after seconds of silence; a beat resets it."""
    dog = Watchdog(blocked_after=0.2)
    dog.add(Deadline(time.monotonic(), "the stop", 130))
    assert dog.due(time.monotonic()) is None  # the loop just beat
    later = time.monotonic() + 0.25
    found = dog.due(later)
    assert found is not None
    assert (found.what, found.code) == ("the stop", 130)
    dog.beat()
    assert dog.due(time.monotonic()) is None


def test_a_deadline_that_no_longer_matters_is_dropped() -> None:
    """``still`` answering False (the run ended) drops the deadline for good."""
    dog = Watchdog(blocked_after=0.1)
    running = [True]
    dog.add(Deadline(time.monotonic() - 1, "a timeout", 1, still=lambda: running[0]))
    assert dog.due(time.monotonic() + 1) is not None
    running[0] = False
    assert dog.due(time.monotonic() + 1) is None
    running[0] = True
    assert dog.due(time.monotonic() + 1) is None
    assert dog.statistics().deadlines == 0


def test_a_moving_deadline_is_due_from_where_it_has_moved() -> None:
    """A stall deadline moves with each epoch: due only once its latest time has passed."""
    dog = Watchdog(blocked_after=0.1)
    now = time.monotonic()
    last_epoch = [now - 10]
    dog.add(Deadline(now, "a stall", 1, moving=lambda: last_epoch[0] + 1))
    assert dog.due(now + 1) is not None
    last_epoch[0] = now + 1
    assert dog.due(now + 1) is None
    assert dog.due(now + 2.2) is not None


def test_the_earliest_due_deadline_wins() -> None:
    dog = Watchdog(blocked_after=0.1)
    now = time.monotonic()
    dog.add(Deadline(now - 1, "later", 1))
    dog.add(Deadline(now - 5, "earlier", 130))
    found = dog.due(now + 1)
    assert found is not None
    assert found.what == "earlier"


def test_the_blocker_is_the_run_whose_frame_holds_the_thread() -> None:
    """The frame carrying the run mark names the run; the innermost user frame says where."""
    release = threading.Event()
    ready = threading.Event()

    def pipeline_body() -> None:
        ready.set()
        while not release.is_set():
            pass

    def run_in_loop() -> None:
        _expman_run_label = "a/run_0"  # what executors/local._run_in_loop carries
        pipeline_body()
        del _expman_run_label

    thread = threading.Thread(target=run_in_loop, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        assert thread.ident is not None
        text = describe_blocker(sys._current_frames()[thread.ident])
    finally:
        release.set()
        thread.join(5)
    assert text.startswith("run a/run_0 (at test_watchdog.py:")
    assert text.endswith("in pipeline_body)")


def test_no_frame_names_no_run() -> None:
    assert describe_blocker(None) == "a run"
