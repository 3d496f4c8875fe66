"""Is the process that runs an experiment still alive?

The journal alone cannot tell a running experiment from a crashed one: both have an
``ExperimentStarted`` without a later ``ExperimentFinished``.  The rule, in order:

1. ``<experiment>/.lock`` is held (``flock``) by the process running the experiment;
   the kernel drops that lock when the process ends, however it ends.  A held lock
   means running (its file names the pid and host); a lock file nobody holds means
   not running (finished cleanly, or crashed).
2. With no lock file at all (a workspace copied elsewhere, an old layout), the last
   ``ExperimentStarted`` of the journal names the owner (``pid``/``host``), which is
   alive when its host is this machine and a process with that pid exists and is not
   a zombie.  An owner on another host is assumed alive (we cannot look), and so is
   an experiment whose owner is unknown if its logs changed in the last
   :data:`QUIET_SECONDS`.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expman.workspace.lock import lock_holder

#: With no owner recorded, an experiment whose logs were quiet this long is not running.
QUIET_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class Owner:
    """The process that runs (or ran) an experiment."""

    pid: int | None
    host: str | None
    source: str  # "lock", "journal" or "unknown"


def lock_owner(path: Path) -> tuple[bool, Owner | None]:
    """``(lock file exists, live owner or None)`` for the lock file at ``path``."""
    if not path.exists():
        return False, None
    holder = lock_holder(path)
    if holder is None:
        return True, None
    host = holder.get("host")
    return True, Owner(
        pid=_as_int(holder.get("pid")), host=str(host) if host else None, source="lock"
    )


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """True when a process with this pid exists on this machine and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours
    except OSError:
        return False
    try:
        # /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces and parentheses.
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def owner_alive(owner: Owner, logs: Path) -> bool:
    """Whether the journal's owner still runs the experiment (rule 2 of the module)."""
    if owner.pid is None:
        return _recently_written(logs)
    if owner.host and owner.host != socket.gethostname():
        return True
    return process_alive(owner.pid)


def _recently_written(logs: Path) -> bool:
    try:
        newest = max((p.stat().st_mtime for p in logs.iterdir() if p.is_file()), default=0.0)
    except OSError:
        return False
    return time.time() - newest < QUIET_SECONDS
