"""Reading an experiment back: runs, aggregation over repeats, tables and the HTML report."""

from expman.direction import infer_mode
from expman.results.loaded import Results, load_results
from expman.results.reading import ExperimentRecord, RunRecord, TrialRecord, list_experiments
from expman.results.summary import History, Stats, TrialCurve, TrialSummary

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
