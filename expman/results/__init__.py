"""Reading an experiment back: runs, aggregation over repeats, tables and the HTML report."""

from expman.direction import infer_mode
from expman.results.loaded import Results, load_results
from expman.results.reading import ExperimentView, RunView, TrialView, list_experiments
from expman.results.summary import History, Stats, TrialCurve, TrialSummary

__all__ = [
    "ExperimentView",
    "History",
    "Results",
    "RunView",
    "Stats",
    "TrialCurve",
    "TrialSummary",
    "TrialView",
    "infer_mode",
    "list_experiments",
    "load_results",
]
