"""Is the process that runs an experiment still alive?

The journal alone cannot tell a running experiment from a crashed one: both have an
``ExperimentStarted`` without a later ``ExperimentFinished``.  The rule, in order:

1. ``<experiment>/.lock``, if it exists, names the owner (``pid`` and ``host``; JSON,
   ``key: value`` / ``key=value`` lines, or bare ``PID HOST`` are all read).
2. Otherwise the last ``ExperimentStarted`` line of the journal names it
   (``pid``/``host`` fields).
3. The owner is alive when its host is this machine and a process with that pid
   exists and is not a zombie.  An owner on another host is assumed alive (we cannot
   look), and so is an experiment whose owner is unknown (a journal written before
   pids were recorded) if its logs changed in the last :data:`QUIET_SECONDS`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: With no owner recorded, an experiment whose logs were quiet this long is not running.
QUIET_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class Owner:
    """The process that runs (or ran) an experiment."""

    pid: int | None
    host: str | None
    source: str  # "lock", "journal" or "unknown"


def read_lock(path: Path) -> Owner | None:
    """The owner named by a lock file, or None when there is no (readable) lock."""
    try:
        text = path.read_text(errors="replace").strip()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None
    fields: dict[str, Any] = {}
    try:
        parsed = json.loads(text)
        if isinstance(parsed, Mapping):
            fields = dict(parsed)
        elif isinstance(parsed, int):
            fields = {"pid": parsed}
    except ValueError:
        tokens: list[str] = []
        for line in text.splitlines():
            for sep in (":", "="):
                key, found, value = line.partition(sep)
                if found and key.strip().isidentifier():
                    fields[key.strip().lower()] = value.strip()
                    break
            else:
                tokens.extend(line.split())
        for token in tokens:
            if token.isdigit() and "pid" not in fields:
                fields["pid"] = token
            elif "host" not in fields and not token.isdigit():
                fields["host"] = token
    pid = _as_int(fields.get("pid"))
    host = fields.get("host") or fields.get("hostname")
    return Owner(pid=pid, host=str(host) if host else None, source="lock")


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
    """Whether the owner still runs the experiment (see the module's rule)."""
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
