"""How a run ended: one enum that the runtime, resume, results and displays all read.

=========  ===========================================  ==========  ==========
status     meaning                                      resume      a result
=========  ===========================================  ==========  ==========
completed  ``run`` returned without a stop request      skipped     yes
stopped    a decision about the run (early stopping,    skipped     yes
           a stop of the run or its trial)
failed     the pipeline or a callback raised            runs again  no
cancelled  an interruption (experiment stop, Ctrl-C)    runs again  no
pruned     a pruner stopped its trial against the       skipped     no (ranked
           other trials (``pruning:``)                              after)
=========  ===========================================  ==========  ==========

Adding a status is one change here: every reader asks the enum's properties, never
a list of strings of its own.  A ``RunStatus`` is a ``str``: it compares equal to
its value and is written to the logs and the journal as that value.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """The status a run ends with (``RunFinished.status``)."""

    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PRUNED = "pruned"

    @property
    def is_finished(self) -> bool:
        """The run's outcome stands: resume skips it and reports it as before."""
        return self in _FINISHED

    @property
    def counts_as_result(self) -> bool:
        """Its metrics count in summaries and comparisons (best trial, mean ± std)."""
        return self in _RESULTS

    @property
    def is_failure(self) -> bool:
        """The run failed: an error to show, a retry to consider, a failing exit code."""
        return self is RunStatus.FAILED

    @property
    def log_level(self) -> str:
        """The level of its ``RunFinished`` line in the logs."""
        return "error" if self is RunStatus.FAILED else "info"


_RESULTS = frozenset({RunStatus.COMPLETED, RunStatus.STOPPED})
_FINISHED = _RESULTS | {RunStatus.PRUNED}


def run_status(value: str | None) -> RunStatus | None:
    """``value`` (read from a file) as a RunStatus; None when absent or unknown."""
    return _BY_VALUE.get(value)  # type: ignore[arg-type]


#: A dict lookup: resume and results call run_status once per run, 10,000s of times.
_BY_VALUE: dict[str, RunStatus] = {status.value: status for status in RunStatus}
