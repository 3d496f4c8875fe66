"""The ``status``, ``results`` and ``report`` commands' arguments (argparse only).

Light on purpose: every ``expman`` command builds the whole parser, so this imports
nothing of the results machinery (:mod:`expman.results.commands` runs them).
"""

from __future__ import annotations

import argparse
from typing import Any

#: Trials ``expman report`` plots unless told otherwise (the tables list every trial).
PLOTTED_TRIALS = 20


def add_results_commands(commands: Any) -> None:
    """Add ``status``, ``results`` and ``report`` to the CLI's subcommands."""
    status = commands.add_parser(
        "status", help="runs of an experiment, or experiments of a workspace, with their state"
    )
    status.add_argument(
        "path", help="an experiment folder, its config folder, or a workspace of experiments"
    )
    _workspace_option(status)
    status.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    results = commands.add_parser("results", help="trials ranked by a metric over their repeats")
    results.add_argument("path", help=EXPERIMENT_HELP)
    _workspace_option(results)
    _metric_options(results)
    results.add_argument(
        "--format", choices=["table", "csv", "json"], default="table", help="output format"
    )
    results.add_argument("--runs", action="store_true", help="one row per run, not per trial")
    results.add_argument(
        "--top",
        type=top_count,
        metavar="K",
        help="only the K best trials (runs with --runs); default: all",
    )
    results.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    report = commands.add_parser("report", help="write a self-contained HTML report")
    report.add_argument("path", help=EXPERIMENT_HELP)
    _workspace_option(report)
    report.add_argument(
        "-o", "--output", help="the HTML file to write (default: <experiment>/report.html)"
    )
    _metric_options(report)
    report.add_argument(
        "--top",
        type=top_count,
        default=PLOTTED_TRIALS,
        metavar="K",
        help=f"plot the K best trials (default {PLOTTED_TRIALS}); the tables list every trial",
    )
    report.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)


EXPERIMENT_HELP = "an experiment folder (workspace/<name>), or the config folder it ran from"


def top_count(text: str) -> int:
    """``--top K``: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _workspace_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-w",
        "--workspace",
        help="where a config folder's experiment ran (default: its env.yaml or ./workspace)",
    )


def _metric_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metric", help="the metric to rank by (default: guessed from names)")
    parser.add_argument(
        "--mode",
        choices=["min", "max"],
        help="lower or higher is better (default: from the name; loss/error min, acc/score max)",
    )
    parser.add_argument(
        "--reduce",
        choices=["last", "best"],
        default="last",
        help="each run's final value (last, default) or its best epoch's (best)",
    )
