"""``expman status | results | report``: read an experiment folder back, from the command line.

Each command reads files only, so it works on a running experiment (in another
process), a finished one and a crashed one.  Mistakes (a missing folder, a folder that
is not an experiment, an unknown metric) raise :class:`~expman.errors.ExpmanError`
subclasses, which the CLI prints as one line and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from expman.errors import ExpmanError, ResultsError, WorkspaceError
from expman.formatting import printable, printable_json
from expman.jsonlines import dumps
from expman.results.loaded import Results
from expman.results.reading import (
    ExperimentRecord,
    is_experiment_dir,
    list_experiments,
    read_experiment,
)
from expman.results.report import PLOTTED_TRIALS, write_report
from expman.results.summary import default_metric
from expman.results.tables import (
    experiment_heading,
    experiments_table,
    ranked_runs,
    results_csv,
    results_json,
    results_table,
    runs_csv,
    runs_ranked_table,
    runs_records,
    runs_table,
)
from expman.tablefit import print_table


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


def experiment_dir(path: Path, workspace: str | None = None) -> Path:
    """The experiment folder ``path`` names: itself, or the one its config folder ran into."""
    if is_experiment_dir(path) or not (path / "experiment.yaml").is_file():
        return path  # reading it says what is wrong, if anything
    # Imported here: only a config folder needs the config machinery (and OmegaConf).
    from expman.config import load_plan

    plan = load_plan(path, workspace=workspace)
    if not is_experiment_dir(plan.path):
        raise WorkspaceError(
            f"{path.absolute()} is a config folder and its experiment {plan.path} has not"
            " run yet (another workspace? pass -w)"
        )
    return plan.path


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


def _console() -> Console:
    """stdout for people: tables fit a terminal; in a pipe nothing is wrapped or cut."""
    console = Console(highlight=False, markup=False, emoji=False)
    if not console.is_terminal:
        console = Console(highlight=False, markup=False, emoji=False, soft_wrap=True)
    return console


def _write_csv(text: str) -> None:
    """CSV on stdout: as data in a pipe or file; controls escaped on a terminal."""
    sys.stdout.write(printable(text, newlines=True) if sys.stdout.isatty() else text)


def _ranked_metric(view: ExperimentRecord) -> str | None:
    """The metric ``expman results`` would rank by, if any run reported one."""
    try:
        return default_metric(view)
    except ResultsError:
        return None


def warn_problems(view: ExperimentRecord) -> None:
    """Say on stderr which journal records were skipped (stdout stays the table/data)."""
    for problem in view.problems:
        print(f"warning: {problem}", file=sys.stderr)


def cmd_status(args: argparse.Namespace) -> int:
    path = experiment_dir(Path(args.path), args.workspace)
    console = _console()
    if path.is_dir() and not is_experiment_dir(path):
        views = list_experiments(path)
        if not views:
            raise WorkspaceError(
                f"{path.absolute()}: neither an experiment folder nor a workspace holding any"
            )
        console.print(printable(f"workspace {path.absolute()}: {len(views)} experiment(s)"))
        print_table(console, experiments_table(views))
        return 0
    view = read_experiment(path)
    warn_problems(view)
    console.print(experiment_heading(view))
    print_table(console, runs_table(view, _ranked_metric(view)))
    console.print(printable(f"path: {view.path}"))
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    results = Results(read_experiment(experiment_dir(Path(args.path), args.workspace)))
    view = results.view
    warn_problems(view)
    metric, mode = results.resolve_metric(args.metric, args.mode)
    if args.runs:
        ranked = ranked_runs(view, metric, mode, args.reduce)[: args.top]
        if args.format == "json":
            print(printable_json(dumps(runs_records(view, ranked, metric)).decode()))
        elif args.format == "csv":
            _write_csv(runs_csv(runs_records(view, ranked, metric), metric))
        else:
            console = _console()
            console.print(
                printable(f"{view.name}: runs ranked by {metric} ({mode}, {args.reduce} value)")
            )
            print_table(console, runs_ranked_table(view, ranked, metric))
        return 0
    every = results.summary(metric, mode, args.reduce)
    rows = every[: args.top]
    if args.format == "json":
        print(printable_json(results_json(view, rows, metric, mode, args.reduce)))
    elif args.format == "csv":
        _write_csv(results_csv(rows, results.metrics))
    else:
        console = _console()
        console.print(
            printable(
                f"{view.name} ({view.state}): trials ranked by the mean of {metric} over repeats"
                f" ({mode} is better, {args.reduce} value of each run; * marks the best)"
                + (
                    f"; the {len(rows)} best of {len(every)} trials"
                    if len(rows) < len(every)
                    else ""
                )
            )
        )
        print_table(console, results_table(rows, results.metrics))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    results = Results(read_experiment(experiment_dir(Path(args.path), args.workspace)))
    output = Path(args.output) if args.output else results.path / "report.html"
    try:
        written = write_report(results, output, args.metric, args.mode, args.reduce, top=args.top)
    except ImportError as exc:
        raise ExpmanError(str(exc)) from None
    except OSError as exc:
        raise WorkspaceError(f"cannot write {output}: {exc.strerror or exc}") from None
    print(printable(f"report: {written.absolute()}"))
    return 0


RESULTS_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "status": cmd_status,
    "results": cmd_results,
    "report": cmd_report,
}
