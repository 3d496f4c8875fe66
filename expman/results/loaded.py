"""``expman.load_results(path)``: an experiment's results, read back from its folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from expman.errors import ResultsError
from expman.results.reading import ExperimentRecord, RunRecord, TrialRecord, read_experiment
from expman.results.summary import (
    History,
    Mode,
    Reduce,
    TrialSummary,
    differing_settings,
    history,
    metric_names,
    resolve_metric,
    summarize,
)


class Results:
    """The runs, trials and metrics of one experiment folder (a snapshot when loaded).

    ::

        results = expman.load_results("workspace/digits")
        for row in results.summary("val_acc"):          # one row per trial, best first
            print(row.rank, row.trial, row.mean, row.std, row.n, row.settings)
        best = results.best_trial("val_acc")
        curves = results.history("val_loss")            # per run, and mean ± std per trial
    """

    def __init__(self, view: ExperimentRecord) -> None:
        self.view = view
        self._metrics: list[str] | None = None  # the view is a snapshot: read them once

    @property
    def name(self) -> str:
        return self.view.name

    @property
    def path(self) -> Path:
        return self.view.path

    @property
    def state(self) -> str:
        """``running``, ``finished``, ``interrupted`` or ``not started``."""
        return self.view.state

    @property
    def runs(self) -> tuple[RunRecord, ...]:
        return self.view.runs

    @property
    def trials(self) -> tuple[TrialRecord, ...]:
        return self.view.trials

    @property
    def metrics(self) -> list[str]:
        """Every numeric metric any run reported."""
        if self._metrics is None:
            self._metrics = metric_names(self.view)
        return list(self._metrics)

    def resolve_metric(self, metric: str | None, mode: str | None) -> tuple[str, Mode]:
        """The metric and mode a query uses (the default metric, the mode from the name)."""
        return resolve_metric(self.view, metric, mode, self.metrics)

    def differing_settings(self) -> dict[str, dict[str, Any]]:
        """Per trial, the settings whose values differ between trials (dotted keys)."""
        return differing_settings(self.view.trials)

    def summary(
        self, metric: str | None = None, mode: Mode | None = None, reduce: Reduce = "last"
    ) -> list[TrialSummary]:
        """One row per trial over its repeats, best first.

        ``mode`` defaults from the metric's name (loss/error: min; acc/score: max);
        ``reduce`` takes each run's final (``last``) or best epoch's value.
        """
        if reduce not in ("last", "best"):
            raise ResultsError(f"reduce must be 'last' or 'best', got {reduce!r}")
        metric, mode = self.resolve_metric(metric, mode)
        return summarize(self.view, metric, mode, reduce, self.metrics)

    def best_trial(
        self, metric: str | None = None, mode: Mode | None = None, reduce: Reduce = "last"
    ) -> TrialSummary:
        """The trial with the best mean (ResultsError when no run has a value yet)."""
        top = self.summary(metric, mode, reduce)[0] if self.view.trials else None
        if top is None or not top.best:
            raise ResultsError(f"{self.path}: no completed run reported {metric or 'a metric'}")
        return top

    def history(self, metric: str) -> History:
        """Epoch curves of ``metric``: per run, and per trial as mean ± std over repeats."""
        self.resolve_metric(metric, "min")  # only checks that the metric exists
        return history(self.view, metric)

    def to_dataframe(self) -> Any:
        """One row per run: status, seed, differing settings and final metrics (pandas)."""
        try:
            import pandas as pd  # lazily: optional, and slow to import
        except ImportError:
            raise ImportError(
                "Results.to_dataframe() needs pandas: pip install 'expman[pandas]'"
            ) from None
        settings = self.differing_settings()
        rows = []
        for run in self.runs:
            row: dict[str, Any] = {
                **run.identity(),
                "attempt": run.attempt,
                "error": run.error,
                "reason": run.reason,
            }
            # Settings and metrics never overwrite a column: a clash gets a prefix.
            for key, value in settings.get(run.trial, {}).items():
                row[key if key not in row else f"settings.{key}"] = value
            for key, value in run.metrics.items():
                row[key if key not in row else f"metrics.{key}"] = value
            rows.append(row)
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return f"Results({str(self.path)!r}, state={self.state!r}, runs={len(self.runs)})"


def load_results(path: str | os.PathLike[str]) -> Results:
    """Read the experiment folder at ``path`` (it may be running, finished or crashed)."""
    return Results(read_experiment(Path(path)))
