"""Reading an experiment back: runs, aggregation over repeats, tables and the HTML report.

The names below load on first use: every ``expman`` command imports this package
(its arguments live in :mod:`expman.results.arguments`), and only the results
commands need what reading a workspace back imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from expman.direction import infer_mode
    from expman.results.loaded import Results, load_results
    from expman.results.reading import ExperimentRecord, RunRecord, TrialRecord, list_experiments
    from expman.results.summary import History, Stats, TrialCurve, TrialSummary

_PUBLIC = {
    "ExperimentRecord": "expman.results.reading",
    "History": "expman.results.summary",
    "Results": "expman.results.loaded",
    "RunRecord": "expman.results.reading",
    "Stats": "expman.results.summary",
    "TrialCurve": "expman.results.summary",
    "TrialRecord": "expman.results.reading",
    "TrialSummary": "expman.results.summary",
    "infer_mode": "expman.direction",
    "list_experiments": "expman.results.reading",
    "load_results": "expman.results.loaded",
}

__all__ = [
    "ExperimentRecord",
    "History",
    "Results",
    "RunRecord",
    "Stats",
    "TrialCurve",
    "TrialRecord",
    "TrialSummary",
    "infer_mode",
    "list_experiments",
    "load_results",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'expman.results' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value
