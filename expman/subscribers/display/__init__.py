"""Progress displays for ``expman run``: live on a terminal, lines in a pipe, JSON for programs.

Every display is a batched mailbox subscriber of the experiment's bus
(:meth:`Display.attach`), so a slow terminal never blocks training.
"""

from __future__ import annotations

import sys

from expman.subscribers.display.base import Display
from expman.subscribers.display.lines import JsonDisplay, LineDisplay
from expman.subscribers.display.live import LiveDisplay
from expman.subscribers.display.state import ActiveRun, ProgressState
from expman.subscribers.display.summary import plain_summary

__all__ = [
    "ActiveRun",
    "Display",
    "JsonDisplay",
    "LineDisplay",
    "LiveDisplay",
    "ProgressState",
    "choose_display",
    "plain_summary",
]


def choose_display(*, json: bool = False, quiet: bool = False) -> Display:
    """JSON events with ``json``; live on a terminal; plain lines in a pipe or with ``quiet``."""
    if json:
        return JsonDisplay(sys.stdout)
    if not quiet:
        from rich.console import Console

        console = Console()
        if console.is_terminal and not console.is_dumb_terminal:
            return LiveDisplay(console)
    return LineDisplay(sys.stdout)
