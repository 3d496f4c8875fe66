"""Pruned trials shown apart wherever a user reads results: status, results, report, displays.

The experiments are real: a pipeline whose loss falls with a per-trial scale, and an
experiment-level callback (named under ``subscribers:``) that acts as a pruner would,
publishing ``PruneDecision`` and then ``StopRequested(scope="trial", pruned=True)`` at a
chosen epoch of a chosen trial.  The pruned trials are given the *better* values, so a
display that ranked them as results would show them first.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import expman
from expman.events import PruneDecision, RunFinished
from expman.experiment.result import ExperimentResult
from expman.run.records import RunOutcome
from expman.status import RunStatus
from expman.subscribers.display import ProgressState
from expman.subscribers.display.summary import digest, plain_summary, stop_text

from .conftest import run_cli
from .test_progress import run_in_terminal

PRUNER = '''
import anyio

from expman import Callback, Pipeline
from expman.events import PruneDecision, StopRequested


class Curve(Pipeline):
    """val_loss = scale / (epoch + 1): a smaller scale is a better trial."""

    def __init__(self, epochs=6, scale=1.0, seconds=0.0, **params):
        super().__init__(**params)
        self.epochs, self.scale, self.seconds = epochs, scale, seconds

    async def run(self, ctx):
        for epoch in range(ctx.start_epoch, self.epochs):
            await anyio.sleep(self.seconds)
            if await ctx.epoch_end(epoch, {"val_loss": self.scale / (epoch + 1)}):
                break
        return {}


class TrialPruner(Callback):
    """Prunes trial T at epoch E for each T: E of ``at``; says continue for ``keep``."""

    def __init__(self, at=None, keep=None, **params):
        super().__init__(**params)
        self.at, self.keep = dict(at or {}), dict(keep or {})

    async def on_epoch_end(self, event):
        prune = self.at.get(event.trial) == event.epoch
        if not prune and self.keep.get(event.trial) != event.epoch:
            return
        value = event.metrics["val_loss"]
        epochs = event.epoch + 1
        reason = (
            f"asha: rung 1 ({epochs} epochs) val_loss {value:.3g} worse than cutoff 0.001"
            " of 2 trials"
        ) if prune else ""
        await self.publish(PruneDecision(
            experiment=event.experiment, trial=event.trial, repeat=event.repeat,
            rule="asha", epoch=event.epoch, epochs=epochs, rung=1, reported=value,
            value=value, cutoff=0.001, compared=2,
            action="prune" if prune else "continue", reason=reason,
        ))
        if prune:
            await self.publish(StopRequested(
                experiment=event.experiment, trial=event.trial, scope="trial",
                reason=reason, source="pruning", pruned=True,
            ))
'''

#: trial -> scale of its loss; b and d are the best curves, and both get pruned.
SCALES = {"a": 1.0, "b": 0.1, "c": 2.0, "d": 0.05}

REASON_B = "asha: rung 1 (2 epochs) val_loss 0.05 worse than cutoff 0.001 of 2 trials"
REASON_D = "asha: rung 1 (4 epochs) val_loss 0.0125 worse than cutoff 0.001 of 2 trials"


def write_experiment(
    root: Path,
    scales: dict[str, float],
    at: dict[str, int],
    keep: dict[str, int] | None = None,
    seconds: float = 0.0,
) -> Path:
    root.mkdir(parents=True)
    experiment = {
        "name": "prune",
        "id": 1,
        "settings": {},
        "subscribers": [{"type": "prunes:TrialPruner", "at": at, "keep": keep or {}}],
    }
    trials = [
        {"name": name, "id": i + 1, "repeat": 2, "settings": {"pipeline": {"scale": scale}}}
        for i, (name, scale) in enumerate(scales.items())
    ]
    base = {"settings": {"pipeline": {"type": "prunes:Curve", "epochs": 6, "seconds": seconds}}}
    for name, doc in (("experiment", experiment), ("base", base), ("trials", trials)):
        (root / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (root / "prunes.py").write_text(PRUNER)
    return root


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The four-trial experiment run once through the CLI (one slot: b's and d's second
    repeats never start); its folder and the lines the run printed."""
    tmp = tmp_path_factory.mktemp("pruned")
    root = write_experiment(tmp / "configs", SCALES, at={"b": 1, "d": 3}, keep={"a": 1})
    done = run_cli("run", str(root), "-w", str(tmp / "ws"), "-j", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp / "ws" / "prune", done.stdout


def cli(*args: str) -> str:
    done = run_cli(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def line_of(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


# -- expman status ----------------------------------------------------------------------


def test_status_counts_pruned_apart_and_shows_each_pruned_runs_reason(
    pruned_run: tuple[Path, str],
) -> None:
    """The heading counts pruned runs and trials apart; each pruned run shows its reason."""
    path, _ = pruned_run
    out = cli("status", str(path))
    assert out.splitlines()[0] == (
        "experiment prune: finished (4 completed, 4 pruned; 2 trials pruned),"
        " last session completed"
    )
    first = line_of(out, "b/run_0")
    assert first.split()[1] == "pruned"
    assert first.endswith(REASON_B)
    unstarted = line_of(out, "b/run_1")
    assert unstarted.split()[1] == "pruned"
    assert unstarted.endswith(f"not started: {REASON_B}")
    assert line_of(out, "d/run_0").endswith(REASON_D)
    assert line_of(out, "a/run_0").split()[1] == "completed"


def test_status_of_a_workspace_counts_pruned_runs(pruned_run: tuple[Path, str]) -> None:
    path, _ = pruned_run
    out = cli("status", str(path.parent))
    assert "4 completed, 4 pruned" in line_of(out, "prune ")


# -- expman results ---------------------------------------------------------------------


def test_pruned_trials_rank_after_every_complete_trial_and_are_never_best(
    pruned_run: tuple[Path, str],
) -> None:
    """b and d stopped with the lowest losses, yet rank after a and c, the longer-trained
    d first; each shows its last value, its epochs and the pruner's reason."""
    path, _ = pruned_run
    doc = json.loads(cli("results", str(path), "--format", "json"))
    rows = {row["trial"]: row for row in doc["trials"]}
    assert [row["trial"] for row in doc["trials"]] == ["a", "c", "d", "b"]
    assert [row["best"] for row in doc["trials"]] == [True, False, False, False]
    assert {name: row["status"] for name, row in rows.items()} == {
        "a": "complete",
        "c": "complete",
        "d": "pruned",
        "b": "pruned",
    }
    assert (rows["b"]["pruned"], rows["b"]["epochs"], rows["b"]["reason"]) == (True, 2, REASON_B)
    assert (rows["d"]["epochs"], rows["d"]["reason"]) == (4, REASON_D)
    # Its last value, from the one repeat that ran; not averaged in as a result.
    assert (rows["b"]["n"], rows["b"]["mean"], rows["b"]["runs"]) == (1, 0.05, 2)
    assert rows["b"]["counts"] == {"pruned": 2}
    assert rows["a"]["mean"] == pytest.approx(1.0 / 6)
    assert (rows["a"]["pruned"], rows["a"]["epochs"], rows["a"]["reason"]) == (False, 6, None)


def test_a_pruned_trials_json_row_carries_the_journaled_decision(
    pruned_run: tuple[Path, str],
) -> None:
    """The journal's decision to prune b, as written; a's continue decisions are no prune."""
    path, _ = pruned_run
    rows = {
        r["trial"]: r for r in json.loads(cli("results", str(path), "--format", "json"))["trials"]
    }
    assert rows["b"]["decision"] == {
        "rule": "asha",
        "unit": "trial",
        "repeat": 0,
        "rung": 1,
        "epoch": 1,
        "epochs": 2,
        "reported": 0.05,
        "value": 0.05,
        "cutoff": 0.001,
        "compared": 2,
        "reason": REASON_B,
    }
    assert rows["d"]["decision"]["epochs"] == 4
    assert rows["a"]["decision"] is None
    assert rows["c"]["decision"] is None


def test_the_results_table_marks_pruned_trials(pruned_run: tuple[Path, str]) -> None:
    path, _ = pruned_run
    out = cli("results", str(path))
    lines = [line for line in out.splitlines()[2:] if line.strip()]
    assert [line.removeprefix("*").split()[1] for line in lines] == [
        "a",
        "c",
        "d",
        "b",
    ]
    assert lines[0].startswith("*")
    assert "pruned after 4 epochs" in lines[2]
    assert "pruned after 2 epochs" in lines[3]
    assert "pruned" not in lines[0] + lines[1]


def test_csv_carries_each_trials_status_and_epochs(pruned_run: tuple[Path, str]) -> None:
    path, _ = pruned_run
    rows = list(csv.DictReader(io.StringIO(cli("results", str(path), "--format", "csv"))))
    assert [(r["trial"], r["status"], r["epochs"], r["best"]) for r in rows] == [
        ("a", "complete", "6", "True"),
        ("c", "complete", "6", "False"),
        ("d", "pruned", "4", "False"),
        ("b", "pruned", "2", "False"),
    ]


def test_ranked_runs_put_pruned_runs_after_the_others(pruned_run: tuple[Path, str]) -> None:
    """--runs: the completed runs first (by value), then the pruned ones, whatever they had."""
    path, _ = pruned_run
    runs = json.loads(cli("results", str(path), "--runs", "--format", "json"))
    assert [r["status"] for r in runs] == ["completed"] * 4 + ["pruned"] * 4
    assert [r["trial"] for r in runs[:4]] == ["a", "a", "c", "c"]
    assert runs[4]["reason"] in (REASON_B, REASON_D)


def test_best_trial_in_python_is_never_a_pruned_one(pruned_run: tuple[Path, str]) -> None:
    """load_results: best_trial is a, with reduce best as with last; pruned rows say so."""
    path, _ = pruned_run
    results = expman.load_results(path)
    for reduce in ("last", "best"):
        assert results.best_trial("val_loss", reduce=reduce).trial == "a"  # type: ignore[arg-type]
    pruned = [row.trial for row in results.summary("val_loss") if row.pruned]
    assert pruned == ["d", "b"]


async def test_an_experiment_whose_only_valued_trials_are_pruned_has_no_best(
    tmp_path: Path,
) -> None:
    """Every trial pruned: rows are listed, none is best, best_trial says none completed."""
    root = write_experiment(tmp_path / "configs", {"x": 0.5, "y": 0.2}, at={"x": 0, "y": 1})
    result = await expman.run_experiment(root, workspace=tmp_path / "ws", max_concurrency=1)
    assert {run.status for run in result.runs} == {RunStatus.PRUNED}
    results = expman.load_results(result.path)
    rows = results.summary("val_loss")
    assert [(row.trial, row.best, row.status) for row in rows] == [
        ("y", False, "pruned"),
        ("x", False, "pruned"),
    ]
    with pytest.raises(expman.ResultsError, match="no completed run"):
        results.best_trial("val_loss")


# -- the HTML report --------------------------------------------------------------------


def test_the_report_shows_pruned_trials_apart(pruned_run: tuple[Path, str], tmp_path: Path) -> None:
    """Marked rows with the reason on hover, a count of trials by status, a note that the
    comparison leaves them out, and their runs among the troubled ones."""
    pytest.importorskip("matplotlib")
    path, _ = pruned_run
    output = tmp_path / "report.html"
    cli("report", str(path), "-o", str(output))
    page = output.read_text()
    assert "trials: 2 complete, 2 pruned" in page
    assert page.count('<tr class="pruned">') == 2
    assert f'<td class="pruned" title="{REASON_B}">pruned after 2 epochs</td>' in page
    assert "2 pruned trials are left out of the comparison" in page
    troubled = page[page.index("Failed, stopped, pruned and unfinished runs") :]
    assert f"<code>not started: {REASON_B}</code>" in troubled


# -- the displays -----------------------------------------------------------------------


def test_the_lines_display_says_each_prune_and_the_summary_lists_pruned_trials(
    pruned_run: tuple[Path, str],
) -> None:
    """One ``pruned <trial>: <reason>`` line per prune (none for continue), then the
    summary lists the pruned trials with their reasons."""
    _, out = pruned_run
    prunes = [line for line in out.splitlines() if line.startswith("pruned ")]
    assert prunes == [f"pruned b: {REASON_B}", f"pruned d: {REASON_D}"]
    summary = out[out.index("experiment prune: completed") :]
    assert "  pruned trials (2):\n" in summary
    assert f"    b: {REASON_B}\n" in summary
    assert f"    d: {REASON_D}\n" in summary


def test_the_json_display_carries_the_decisions(tmp_path: Path) -> None:
    """--json: every PruneDecision (continue and prune) as an event; the runs end pruned."""
    root = write_experiment(tmp_path / "configs", {"a": 1.0, "b": 0.1}, at={"b": 1}, keep={"a": 1})
    done = run_cli("run", str(root), "-w", str(tmp_path / "ws"), "-j", "1", "--json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    decisions = [(e["trial"], e["action"]) for e in events if e["type"] == "PruneDecision"]
    assert decisions == [("a", "continue"), ("a", "continue"), ("b", "prune")]
    ended = {(e["trial"], e["repeat"]): e["status"] for e in events if e["type"] == "RunFinished"}
    assert ended == {
        ("a", 0): "completed",
        ("a", 1): "completed",
        ("b", 0): "pruned",
        ("b", 1): "pruned",
    }
    assert f"    b: {REASON_B}" in done.stderr  # the summary, for people


def test_the_live_display_counts_and_names_the_pruned(tmp_path: Path) -> None:
    """On a terminal: the prune printed as it happens, pruned in the counts, the pruned
    trial named, and the summary's list of pruned trials."""
    root = write_experiment(tmp_path / "configs", {"b": 0.1, "a": 1.0}, at={"b": 1}, seconds=0.1)
    code, out = run_in_terminal("run", str(root), "-w", str(tmp_path / "ws"), "-j", "1")
    assert code == 0, out
    assert f"pruned b: {REASON_B}" in out
    # Redrawn while a's runs train (b's first): the counts and the name.
    assert "pruned 2" in out
    assert "pruned trials: b" in out
    assert "pruned trials (1):" in out
    assert f"b: {REASON_B}" in out[out.index("pruned trials (1):") :]


def test_progress_state_folds_prune_decisions() -> None:
    """A prune names its trial (its run with unit run); a continue changes nothing."""
    state = ProgressState()
    common: dict[str, Any] = {"experiment": "e", "rule": "asha", "epoch": 1, "epochs": 2}
    state.apply(PruneDecision(trial="a", repeat=0, action="continue", **common))
    assert state.pruned == {}
    state.apply(PruneDecision(trial="b", repeat=1, action="prune", reason="worse", **common))
    state.apply(
        PruneDecision(trial="c", repeat=1, action="prune", reason="low", unit="run", **common)
    )
    state.apply(
        RunFinished(experiment="e", trial="b", repeat=1, status=RunStatus.PRUNED, duration=0.0)
    )
    assert state.pruned == {"b": "worse", "c/run_1": "low"}
    assert state.counts == {"pruned": 1}


def test_a_large_experiments_digest_never_ranks_a_pruned_trial(tmp_path: Path) -> None:
    """Over 20 runs the summary digests: the best trials leave the pruned ones out (they
    had the lowest losses when they stopped) and list them apart with their reasons."""
    scales = {f"t{i:02d}": 1.0 + i for i in range(10)} | {"p1": 0.01, "p2": 0.02}
    root = write_experiment(tmp_path / "configs", scales, at={"p1": 0, "p2": 2})
    done = run_cli("run", str(root), "-w", str(tmp_path / "ws"), "-j", "2", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout[done.stdout.index("experiment prune: completed") :]
    best = summary[summary.index("trials by val_loss") : summary.index("pruned trials")]
    assert "p1" not in best
    assert "p2" not in best
    assert "   1. t00  val_loss=0.1667  (2 of 2 runs)" in best
    assert "  pruned trials (2):\n" in summary
    assert "    p1: asha: rung 1 (1 epochs) val_loss 0.01 worse" in summary


def test_stop_text_gives_the_experiments_stop_not_a_pruners_reason(tmp_path: Path) -> None:
    """A cancelled experiment with pruned runs: why it stopped is the cancelled run's reason."""
    runs = tuple(
        RunOutcome("a", k, RunStatus.PRUNED, reason=f"not started: {REASON_B}") for k in range(2)
    ) + tuple(
        RunOutcome("z", k, RunStatus.CANCELLED, reason="interrupted (Ctrl-C)") for k in range(21)
    )
    result = ExperimentResult(name="e", status="cancelled", path=tmp_path, runs=runs)
    assert stop_text(result) == "stopped: interrupted (Ctrl-C)"
    found = digest(result)
    assert (found.pruned, found.pruned_trials) == ((("a", REASON_B),), 1)
    assert f"    a: {REASON_B}\n" in plain_summary(result)


def test_a_resume_keeps_pruned_runs_and_says_so(tmp_path: Path) -> None:
    """Run again: the pruned runs are skipped as done, and still listed as pruned trials."""
    root = write_experiment(tmp_path / "configs", {"a": 1.0, "b": 0.1}, at={"b": 1})
    args = ("run", str(root), "-w", str(tmp_path / "ws"), "-j", "1")
    assert run_cli(*args).returncode == 0
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    out = again.stdout + again.stderr
    assert "b/run_0 (pruned)" in out  # the resume note's list of skipped runs
    assert "started" not in out.split("experiment prune: completed")[0].split("->", 1)[1]
    assert "  b/run_1: pruned (done before)" in out
    assert f"    b: {REASON_B}" in out
