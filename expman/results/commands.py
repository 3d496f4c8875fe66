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
from expman.results.report import write_report
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
