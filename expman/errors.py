"""The one exception tree of expman.

Every error a user can cause derives from :class:`ExpmanError`; anything else
escaping expman is a bug in expman itself::

    ExpmanError
     ├── ConfigError            a config file or override is wrong (file, key, expectation)
     ├── WorkspaceError         the workspace cannot be used (permissions, disk full, ...)
     │    ├── WorkspaceLocked   another process runs this experiment directory
     │    ├── ConfigChanged     resuming would silently run a different config
     │    └── WorkspaceLinkError  a link (or a non-file) planted where expman writes
     ├── PipelineError          a pipeline or callback cannot be built from its config
     ├── CallbackError          a run's callback raised: that run fails
     ├── ResultsError           a results query names a metric or mode that does not fit
     └── ExecutorError          an execution backend cannot start or lost a worker
          └── WorkerLost        a worker process or Ray actor died before its run ended
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class ExpmanError(Exception):
    """Base of every error a user of expman can cause."""


class ConfigError(ExpmanError):
    """A config file, key or override is not what expman expects.

    ``str(error)`` is one readable line: ``file:line: key: message``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        key: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.key = key
        self.line = line
        self.column = column
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.key:
            return f"{where}: {self.key}: {self.message}"
        return f"{where}: {self.message}"


class WorkspaceError(ExpmanError):
    """The workspace cannot be read or written as needed."""


class WorkspaceLocked(WorkspaceError):
    """Another live process holds the experiment directory's lock."""


class ConfigChanged(WorkspaceError):
    """The config differs from what the experiment's journal recorded."""


class WorkspaceLinkError(WorkspaceError, OSError):
    """A symbolic or hard link (or a FIFO, a device) stands where expman writes or deletes.

    expman never writes, truncates or deletes through a link it did not create: the
    error names the link and where it points.  It is an :class:`OSError` too
    (``errno`` ELOOP), so every place that turns a failed workspace write into
    "runs were stopped" handles it the same way.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        self.message = (
            f"{self.path} {problem}: expman does not write or delete through what it did "
            "not make there; remove it and run again"
        )
        super().__init__(errno.ELOOP, self.message, self.path)

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> WorkspaceLinkError:
        """The error for whatever unexpected thing ``path`` is (read with ``lstat``)."""
        try:
            target = os.readlink(path)
        except OSError:
            pass
        else:
            return cls(path, f"is a symbolic link to {target}")
        try:
            info = os.lstat(path)
        except OSError:
            return cls(path, "is not a plain file or folder")
        if info.st_nlink > 1 and not os.path.isdir(path):
            names = info.st_nlink
            return cls(path, f"is a hard link ({names} names for one file; a copy would do)")
        return cls(path, "is not a plain file")

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[WorkspaceLinkError], tuple[str, str]]:
        return type(self), (self.path, self.problem)


class PipelineError(ExpmanError):
    """A pipeline or callback named in a config cannot be built."""


class CheckpointLoadError(PipelineError):
    """A run's checkpoint could not be loaded (the message names the file and why).

    Resume then falls back on the run's next older checkpoint, then on a fresh start.
    """


class CallbackError(ExpmanError):
    """A callback of a run raised (or refused the run's metrics): that run fails.

    A run's callbacks are part of its training loop, as in Lightning and Keras; the
    experiment's own subscribers stay isolated (reported, never fatal).
    """


class ResultsError(ExpmanError):
    """A results query (metric, mode) does not fit what the experiment recorded."""


class ExecutorError(ExpmanError):
    """An execution backend failed outside of user code."""


class WorkerLost(ExecutorError):
    """A worker (process or Ray actor) died before its run ended: its run failed."""
