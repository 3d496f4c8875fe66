"""The ``expman`` command: ``run``, ``validate``, ``status``, ``results`` and ``report``.

Each command imports what it uses when it runs (a function-local import on purpose:
``expman --version`` and ``expman status`` start without the runtime, OmegaConf or
the report's matplotlib; ``benchmarks/startup.py`` measures it).

Exit codes: 0 every run completed (or was stopped on purpose), 1 some run failed,
2 usage or config error, 130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM (128 + the
signal's number, whenever it arrives: :mod:`expman.interrupts`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import anyio

from expman import __version__, interrupts, watchdog
from expman.errors import ConfigChanged, ConfigError, ExpmanError, WorkspaceError, WorkspaceLocked
from expman.escaping import printable
from expman.exits import real_exit

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # usage errors exit 2 with one line
        self.print_usage(sys.stderr)
        print(printable(f"expman: error: {message}"), file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="expman", description="Run machine-learning experiments from YAML.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"expman {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run (or resume) an experiment")
    run.add_argument("config_dir", help="folder with experiment.yaml, base.yaml, trials.yaml")
    run.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="setting overrides, e.g. settings.lr=0.01 or execution.max_retries=2",
    )
    run.add_argument(
        "-w", "--workspace", help="workspace folder (default: env.yaml or ./workspace)"
    )
    run.add_argument(
        "-j",
        "--max-concurrency",
        type=int,
        metavar="N",
        help="how many runs at once (default: env.yaml or the number of CPUs)",
    )
    run.add_argument(
        "--executor",
        choices=["local", "async", "thread", "process", "ray"],
        help="where runs execute (default: execution.executor or local)",
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="start anew; an existing experiment folder is kept under a new name",
    )
    run.add_argument(
        "--accept-changes",
        action="store_true",
        help="resume even though the config differs from the recorded one",
    )
    run.add_argument(
        "--no-integrations",
        action="store_true",
        help="feed none of the trackers integrations: names (TensorBoard, MLflow, W&B, CSV)",
    )
    run.add_argument(
        "-q", "--quiet", action="store_true", help="plain lines instead of the live display"
    )
    run.add_argument(
        "--json", action="store_true", help="one JSON event per line on stdout, nothing else"
    )
    run.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    _add_multirun_options(run)

    validate = commands.add_parser("validate", help="check configs and print the plan")
    validate.add_argument("config_dir")
    validate.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    validate.add_argument("-w", "--workspace")
    validate.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    _add_multirun_options(validate)
    from expman.results.arguments import add_results_commands

    add_results_commands(commands)
    return parser


def _add_multirun_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="sweep: lr=0.01,0.1 'bs=range(16,65,16)' 'wd=loguniform(1e-6,1e-2)' "
        "make one trial per combination, for every trial entry",
    )
    command.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help="with -m: how many draws the random axes (uniform, loguniform, randint) get",
    )


def parse_arguments(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """The command line, KEY=VALUE overrides collected wherever they stand among options.

    ``expman run CFG -m a=1,2 -j 2 b=3``: argparse's ``nargs="*"`` positional takes only
    the overrides next to the config folder; the rest come back unknown and join them
    (in the order given). Anything unknown that is not ``KEY=VALUE`` is a usage error.
    """
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or "=" not in e]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def sweep_arguments(args: argparse.Namespace) -> tuple[list[str], dict[str, Any] | None]:
    """The plain overrides and the ``-m`` sweep block (None without -m or without axes)."""
    if not args.multirun:
        if args.samples is not None:
            raise ConfigError(
                "draws from the random axes of a sweep; add -m"
                " (e.g. -m 'lr=loguniform(1e-5,1e-1)' --samples 8)",
                file="<command line>",
                key="--samples",
            )
        return list(args.overrides), None
    from expman.config.multirun import parse_multirun

    split = parse_multirun(args.overrides, samples=args.samples)
    return list(split.overrides), split.sweep


def main(argv: Sequence[str] | None = None) -> int:
    interrupts.install()  # done already by ``expman.__main__``; here for other callers
    given = list(sys.argv[1:] if argv is None else argv)
    if given == ["--version"]:  # answered before the commands' modules load
        print(f"expman {__version__}")
        return EXIT_OK
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help(sys.stderr)  # bare `expman`: show what it can do
        return EXIT_USAGE
    args = parse_arguments(parser, given)
    code = _dispatch(parser, args)
    # However the run ended, an abandoned pipeline thread must not hold the process.
    return _exit_now(code) if args.command == "run" else code


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        if args.command == "validate":
            return cmd_validate(args)
        if args.command in ("status", "results", "report"):
            from expman.results.commands import RESULTS_COMMANDS

            return RESULTS_COMMANDS[args.command](args)
        if args.command == "run":
            if args.max_concurrency is not None and args.max_concurrency < 1:
                parser.error("-j/--max-concurrency must be at least 1")
            return _run_command(args)
    except ConfigError as exc:
        print(printable(f"expman: config error: {exc}", newlines=True), file=sys.stderr)
        if args.debug:
            _print_traceback()
        return EXIT_USAGE
    except (WorkspaceLocked, ConfigChanged) as exc:
        print(printable(f"expman: error: {exc}", newlines=True), file=sys.stderr)
        return EXIT_USAGE
    except WorkspaceError as exc:
        # While running, a workspace that fails (disk full, read-only) fails the run.
        print(printable(f"expman: error: {exc}", newlines=True), file=sys.stderr)
        if args.debug:
            _print_traceback()
        return EXIT_FAILED if args.command == "run" else EXIT_USAGE
    except ExpmanError as exc:
        print(printable(f"expman: error: {exc}", newlines=True), file=sys.stderr)
        if args.debug:
            _print_traceback()
        return EXIT_USAGE
    except KeyboardInterrupt:  # raised by code of the user's (signals never raise it)
        print("expman: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (``expman ... | head``): not an error of ours.
        sys.stderr.close()
        return EXIT_OK
    return EXIT_USAGE


def _run_command(args: argparse.Namespace) -> int:
    try:
        return anyio.run(cmd_run, args)
    except (ExpmanError, BrokenPipeError):
        raise  # the user's mistakes and the workspace's failures: their own messages
    except Exception:
        # A bug of expman's own: its traceback, then a non-zero exit (what the journal
        # recorded is intact; the next run resumes).
        _print_traceback()
        print(
            "expman: internal error (the traceback above is expman's; please report it);"
            " the next `expman run` resumes from what the journal recorded",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _print_traceback() -> None:
    """``--debug``: the traceback, its messages escaped like every other line."""
    print(printable(traceback.format_exc(), newlines=True), end="", file=sys.stderr)


#: Seconds the command waits for non-daemon threads to end before exiting past them.
LINGER = 1.0


def _exit_now(code: int) -> int:
    """Exit with ``code`` even if a cancelled sync pipeline's thread is still running.

    A thread cannot be killed; once the summary is printed and every file is closed,
    waiting for an abandoned pipeline thread would only hang the command.
    """
    lingering = [
        t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
    ]
    # Threads that are only finishing (an executor's workers shutting down) get a moment:
    # exiting past them would skip the atexit functions of the user's own code.
    deadline = time.monotonic() + LINGER
    for t in lingering:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in lingering):
        sys.stdout.flush()
        sys.stderr.flush()
        real_exit(code)
    return code


def cmd_validate(args: argparse.Namespace) -> int:
    from expman.experiment import prepare
    from expman.experiment.preflight import parameter_notes
    from expman.subscribers.display.lines import plural

    overrides, sweep = sweep_arguments(args)
    plan = prepare(args.config_dir, workspace=args.workspace, overrides=overrides, sweep=sweep)
    print(
        printable(
            f"experiment {plan.name} (id {plan.id}): {plural(len(plan.trials), 'trial')}, "
            f"{plural(len(plan.runs), 'run')} -> {plan.path}"
        )
    )
    if plan.search is not None:  # its trials are placeholders until sampled
        for line in _search_summary(plan.search):
            print(printable(line))
    if plan.pruning is not None:
        print(printable(_pruning_summary(plan.pruning)))
    for integration in plan.integrations:
        print(printable(_integration_summary(integration)))
    runs: dict[int, list[Any]] = {}
    for spec in plan.runs:
        runs.setdefault(id(spec.trial), []).append(spec)
    written = [t for t in plan.trials if not t.swept]
    for trial in written[:VALIDATE_ROWS]:
        pipeline = trial.settings.get("pipeline", {})
        kind = pipeline.get("type") if isinstance(pipeline, dict) else pipeline
        print(
            printable(
                f"  trial {trial.name} (id {trial.id}): repeat {trial.repeat}, "
                f"pipeline {kind}, config {trial.config_hash}"
            )
        )
        for spec in runs.get(id(trial), []):
            print(f"    run_{spec.repeat}: seed {spec.seed}")
    if len(written) > VALIDATE_ROWS:
        print(f"  ... and {len(written) - VALIDATE_ROWS:,} more trials")
    swept = [t for t in plan.trials if t.swept]
    if swept:
        for line in _swept_table(swept, VALIDATE_ROWS):
            print(printable(line))
        if written:
            swept_runs = sum(t.repeat for t in swept)
            print(f"swept: {plural(len(swept), 'trial')}, {plural(swept_runs, 'run')}")
    print(f"total: {plural(len(plan.trials), 'trial')}, {plural(len(plan.runs), 'run')}")
    for note in parameter_notes(plan):
        print(printable(f"note: {note}"))
    print("configs are valid; nothing was run")
    return EXIT_OK


def _search_summary(search: Any) -> list[str]:
    """``expman validate``'s lines about the search block (a SearchSpec)."""
    from expman.jsonlines import dumps

    block = search.describe()
    options = "".join(
        f", {k}={v}" for k, v in block["sampler"].items() if k not in ("type", "seed")
    )
    lines = [
        f"search: {search.sampler} sampler (seed {search.seed}{options}), {search.mode} of"
        f" {search.metric}, {search.trials} trials per entry sampled, lag {search.lag}"
    ]
    for key, dist in block["space"].items():
        form = dist.items() if isinstance(dist, dict) else [("values", dist)]
        lines.append(f"  {key}: " + ", ".join(f"{k} {dumps(v).decode()}" for k, v in form))
    return lines


def _integration_summary(spec: Any) -> str:
    """``integration mlflow: mlflow, tracking_uri=sqlite:///mlflow.db, export=live``."""
    options = ", ".join(f"{k}={v}" for k, v in spec.options.items() if v not in (None, [], {}))
    named = f"{spec.name}: " if spec.name != spec.type else ""
    return f"integration {named}{spec.type}{', ' + options if options else ''}"


def _pruning_summary(pruning: Any) -> str:
    """``expman validate``'s line about the pruning block (a PruningSpec)."""
    head = (
        f"pruning: {pruning.type}, {pruning.mode} of {pruning.metric}, unit {pruning.unit},"
        f" {pruning.determinism}"
    )
    if pruning.uses_rungs:
        from expman.pruning import rung_epochs

        rungs = rung_epochs(pruning, 0, up_to=None if pruning.max_epochs else 10_000)[:8]
        shown = ", ".join(str(r) for r in rungs) or "none"
        brackets = f", {pruning.brackets} brackets" if pruning.brackets > 1 else ""
        return (
            f"{head}, rule {pruning.rule}{brackets}; rungs at {shown}"
            f" epoch{'' if rungs == (1,) else 's'}"
            f" (reduction factor {pruning.reduction_factor}"
            + (f", below max_epochs {pruning.max_epochs})" if pruning.max_epochs else ")")
        )
    if pruning.type == "threshold":
        bounds = [
            f"{k} {getattr(pruning, k):g}"
            for k in ("lower", "upper")
            if getattr(pruning, k) is not None
        ]
        return (
            f"{head}; outside {' and '.join(bounds)} after {pruning.n_warmup_steps} warm-up epochs"
        )
    return (
        f"{head}; percentile {pruning.percentile:g} of complete trials after"
        f" {pruning.n_startup_trials} of them and {pruning.n_warmup_steps} warm-up epochs"
    )


#: How many trials ``expman validate`` lists before "... and K more".
VALIDATE_ROWS = 20


def _swept_table(trials: Sequence[Any], rows: int) -> list[str]:
    """The first ``rows`` swept trials as a table: name, swept values, repeat."""
    from expman.formatting import fmt

    keys: list[str] = []
    for trial in trials[:rows]:
        keys.extend(k for k in trial.swept if k not in keys)
    header = ["trial", *keys, "repeat"]
    body = [
        [t.name, *(fmt(t.swept[k]) if k in t.swept else "" for k in keys), str(t.repeat)]
        for t in trials[:rows]
    ]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    lines = [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *body)
    ]
    if len(trials) > rows:
        lines.append(f"  ... and {len(trials) - rows:,} more swept trials")
    return lines


async def cmd_run(args: argparse.Namespace) -> int:
    from expman.experiment import prepare, single_errors, start_experiment
    from expman.subscribers.display import choose_display

    interrupts.starting_experiment()
    overrides, sweep = sweep_arguments(args)
    plan = await anyio.to_thread.run_sync(
        lambda: prepare(
            args.config_dir,
            workspace=args.workspace,
            overrides=overrides,
            sweep=sweep,
            max_concurrency=args.max_concurrency,
            executor=args.executor,
        )
    )
    interrupted = False
    # The progress display: live on a terminal, lines in a pipe, JSON events with --json.
    display = choose_display(json=args.json, quiet=args.quiet)
    if args.json:
        # stdout carries JSON events only: what pipelines print goes to stderr meanwhile.
        sys.stdout = sys.stderr

    async with start_experiment(
        plan,
        fresh=args.fresh,
        accept_changes=args.accept_changes,
        on_plan=display.on_plan,
        subscribers=[display],
        integrations=not args.no_integrations,
    ) as handle:
        with single_errors():
            async with anyio.create_task_group() as tg:

                def on_signal(signum: int) -> None:
                    # Called in the loop by expman.interrupts: first a stop, then at once.
                    nonlocal interrupted
                    name = signal.Signals(signum).name
                    if not interrupted:
                        interrupted = True
                        print(
                            f"\nexpman: {name}: stopping runs (again to stop at once)",
                            file=sys.stderr,
                        )
                        tg.start_soon(handle.stop, f"interrupted by {name}")
                    else:
                        print("expman: stopping now", file=sys.stderr)
                        handle.cancel()

                dog = watchdog.Watchdog()
                with watchdog.watching(dog), interrupts.listening(on_signal):
                    tg.start_soon(dog.heartbeat)
                    try:
                        result = await handle.wait()
                    finally:
                        tg.cancel_scope.cancel()
    display.summary(result)
    if interrupted:
        return interrupts.exit_code()
    # Cancelled without a signal: fail_fast, or a search that cannot go on.
    return EXIT_FAILED if result.status in ("failed", "cancelled") else EXIT_OK
