"""Cross-trial pruning at run time: journaled decisions, pruned runs, determinism, resume."""

from __future__ import annotations

import json
import random
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import expman
from expman.events import PruneDecision, RunStarted, TrialSampled
from expman.testing import capture_events
from expman.workspace.journal import read_journal

from .conftest import run_cli, write_yaml
from .test_resume import journal, start_cli, wait_for

Make = Callable[..., Path]

#: Learning curves whose shape depends on the trial's ``c`` and whose noise and pace
#: depend on the run's seed: the same values whatever the timing; random sleeps when
#: ``jitter`` is set (drawn from the run's seed, so the order of arrivals varies
#: with concurrency but the values never do).
CURVES = textwrap.dedent(
    """
    import json
    import random
    import time

    import anyio

    from expman import Callback, CheckpointDue, Pipeline, StopRequested


    def loss(c, seed, epoch):
        noise = random.Random(f"{seed}/{epoch}").gauss(0.0, 0.01)
        return 0.1 + (c % 7) / 20 + (1 + c % 3) / (epoch + 1) ** 0.7 + noise


    class Curves(Pipeline):
        def __init__(self, epochs=9, jitter=0.0, pause=0.0, **params):
            super().__init__(**params)
            self.epochs, self.jitter, self.pause = epochs, jitter, pause

        async def run(self, ctx):
            c = ctx.settings["c"]
            pace = random.Random(f"pace/{ctx.seed}/{ctx.attempt}")
            for epoch in range(ctx.start_epoch, self.epochs):
                if self.jitter or self.pause:
                    await anyio.sleep(self.pause + pace.uniform(0, self.jitter))
                if await ctx.epoch_end(epoch, {"val_loss": loss(c, ctx.seed, epoch)}):
                    break
            return {}

        async def save_checkpoint(self, path):
            with open(path, "w") as f:
                f.write("{}")

        def load_checkpoint(self, path):
            json.loads(open(path).read())


    class SyncCurves(Curves):
        def run(self, ctx):
            c = ctx.settings["c"]
            pace = random.Random(f"pace/{ctx.seed}/{ctx.attempt}")
            for epoch in range(ctx.start_epoch, self.epochs):
                if self.jitter:
                    time.sleep(pace.uniform(0, self.jitter))
                if ctx.epoch_end(epoch, {"val_loss": loss(c, ctx.seed, epoch)}):
                    break
            return {}

        def save_checkpoint(self, path):
            with open(path, "w") as f:
                f.write("{}")


    class StopAtFirstPrune(Callback):
        # Stops the whole experiment the moment a pruner decides to prune.

        async def on_prune_decision(self, event):
            if event.action == "prune":
                await self.publish(StopRequested(
                    experiment=event.experiment, scope="experiment", reason="enough"))


    class KillAtFirstPrune(Callback):
        # SIGKILL the process once, right after a prune is journaled (before it acts).
        def __init__(self, marker="", **params):
            super().__init__(**params)
            self.marker = marker

        async def on_stop_requested(self, event):
            import os
            import signal

            if event.pruned and not os.path.exists(self.marker):
                open(self.marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)


    class EveryEpoch(Callback):
        async def on_epoch_end(self, event):
            await self.publish(CheckpointDue(
                experiment=event.experiment, trial=event.trial, repeat=event.repeat,
                path=f"checkpoint-{event.epoch}", epoch=event.epoch))
    """
)

ASHA = {
    "type": "asha",
    "metric": "val_loss",
    "grace_period": 1,
    "reduction_factor": 3,
    "max_epochs": 9,
}


def make_sweep(
    make_experiment: Make,
    *,
    trials: int = 12,
    repeat: int = 1,
    pruning: dict[str, Any] | None = None,
    pipeline: str = "curves:Curves",
    epochs: int = 9,
    jitter: float = 0.0,
    concurrency: int = 4,
    executor: str = "async",
    callbacks: list[dict[str, Any]] | None = None,
) -> Path:
    root = make_experiment(
        experiment={
            "name": "exp",
            "id": 1,
            "settings": {"seed": 3},
            "execution": {"executor": executor, "max_concurrency": concurrency},
            "pruning": pruning or ASHA,
        },
        base={
            "pipeline": {"type": pipeline, "epochs": epochs, "jitter": jitter},
            **({"callbacks": callbacks} if callbacks else {}),
        },
        trials=[
            {"name": f"t{i:02d}", "id": i, "repeat": repeat, "settings": {"c": (i * 5) % 12}}
            for i in range(trials)
        ],
    )
    (root / "curves.py").write_text(CURVES)
    return root


def decisions(workspace: Path) -> list[tuple[Any, ...]]:
    """Every judgement in the journal, once each, sorted: of whom, at which epochs, what,
    over how many, and the values compared (a trial's mean over its repeats included)."""
    found = {
        (e["trial"], e["repeat"], e["epochs"], e["action"], e["compared"], e["value"], e["cutoff"])
        for e in journal(workspace)
        if e["type"] == "PruneDecision"
    }
    return sorted(found)


def reached(workspace: Path) -> dict[tuple[str, int], int]:
    """The epochs each run got to: its last RunFinished's, or a judgement's beyond it."""
    out: dict[tuple[str, int], int] = {}
    for e in journal(workspace):
        key = (e.get("trial"), e.get("repeat"))
        if e["type"] == "RunFinished":
            out[key] = max(out.get(key, 0), e["epochs"])
        elif e["type"] == "PruneDecision":
            out[key] = max(out.get(key, 0), e["epochs"])
    return out


def statuses(workspace: Path) -> dict[tuple[str, int], str]:
    state = read_journal(workspace / "exp" / "logs" / "events.jsonl", experiment="exp")
    return {key: str(run.status) for key, run in state.runs.items()}


# -- what a decision is and does ----------------------------------------------------------


async def test_asha_prunes_losers_journals_each_decision_before_it_acts(
    make_experiment: Make, workspace: Path
) -> None:
    """Judged at rungs 1 and 3 (max 9): losers end pruned, their decision durable first."""
    root = make_sweep(make_experiment, concurrency=1)
    async with capture_events() as events:
        result = await expman.run_experiment(
            root, workspace=workspace, subscribers=[events.subscriber]
        )
    assert result.status == "completed"
    judged = [e for e in events.of_type(PruneDecision)]
    assert {e.epochs for e in judged} == {1, 3}  # rungs 1 * 3**k below max_epochs 9
    assert all(e.epoch == e.epochs - 1 for e in judged)
    pruned = [e for e in judged if e.action == "prune"]
    assert pruned, "no trial was pruned"
    runs = statuses(workspace)
    assert {runs[(e.trial, e.repeat)] for e in pruned} == {"pruned"}
    assert "completed" in runs.values()
    # The reason names the rule, the rung, the epochs, the value and the cutoff.
    first = pruned[0]
    assert first.reason.startswith("asha: rung ")
    assert f"({first.epochs} epoch" in first.reason
    assert "cutoff" in first.reason
    # A prune is in the journal before the stop it causes (write-ahead).
    lines = journal(workspace)
    for decision in pruned:
        at = next(
            i
            for i, e in enumerate(lines)
            if e["type"] == "PruneDecision"
            and e["trial"] == decision.trial
            and e["action"] == "prune"
        )
        stop = next(
            i
            for i, e in enumerate(lines)
            if e["type"] == "StopRequested" and e.get("trial") == decision.trial
        )
        assert at < stop
    # A pruned run stopped at the epoch it was judged: it trained exactly that many.
    finished = {(e["trial"], e["repeat"]): e for e in lines if e["type"] == "RunFinished"}
    for decision in pruned:
        assert finished[(decision.trial, decision.repeat)]["epochs"] == decision.epochs
        assert finished[(decision.trial, decision.repeat)]["reason"] == decision.reason


async def test_a_pruned_trials_running_repeats_stop_and_unstarted_ones_never_start(
    make_experiment: Make, workspace: Path
) -> None:
    """unit trial, 3 repeats, 2 slots: a prune stops the running repeats and settles the rest."""
    root = make_sweep(make_experiment, trials=9, repeat=3, concurrency=2)
    async with capture_events() as events:
        await expman.run_experiment(root, workspace=workspace, subscribers=[events.subscriber])
    started = {(e.trial, e.repeat) for e in events.of_type(RunStarted)}
    pruned_trials = {e.trial for e in events.of_type(PruneDecision) if e.action == "prune"}
    assert pruned_trials
    runs = statuses(workspace)
    never = [key for key in runs if key[0] in pruned_trials and key not in started]
    assert never, "every repeat of every pruned trial had started: the case is not exercised"
    for key, status in runs.items():
        if key[0] in pruned_trials:
            assert status == "pruned", key
    finished = {
        (e["trial"], e["repeat"]): e for e in journal(workspace) if e["type"] == "RunFinished"
    }
    for key in never:
        assert finished[key]["reason"].startswith("not started: asha: ")


async def test_unit_run_prunes_single_runs(make_experiment: Make, workspace: Path) -> None:
    """unit: run: each repeat competes; a prune stops that run only, its trial goes on."""
    root = make_sweep(make_experiment, trials=4, repeat=3, pruning={**ASHA, "unit": "run"})
    async with capture_events() as events:
        await expman.run_experiment(root, workspace=workspace, subscribers=[events.subscriber])
    pruned = {(e.trial, e.repeat) for e in events.of_type(PruneDecision) if e.action == "prune"}
    assert pruned
    runs = statuses(workspace)
    assert {runs[key] for key in pruned} == {"pruned"}
    assert any(runs[(trial, k)] != "pruned" for trial, _ in pruned for k in range(3)), (
        "every repeat of a pruned run's trial was pruned: unit run acted like unit trial"
    )


# -- determinism ---------------------------------------------------------------------------


def _sequential(make_experiment: Make, tmp_path: Path, **options: Any) -> dict[int, Any]:
    seen: dict[int, Any] = {}
    for slots in options.pop("slots"):
        workspace = tmp_path / f"ws{slots}"
        root = make_sweep(make_experiment, concurrency=slots, jitter=0.02, **options)
        result = run_cli("run", str(root), "-w", str(workspace), "--quiet")
        assert result.returncode == 0, result.stderr
        seen[slots] = (decisions(workspace), reached(workspace))
    return seen


@pytest.mark.slow
@pytest.mark.parametrize(
    ("executor", "pipeline", "slots"),
    [
        ("async", "curves:Curves", (1, 4, 8, 16)),
        ("thread", "curves:SyncCurves", (1, 8)),
        ("process", "curves:Curves", (1, 4)),
    ],
)
def test_sequential_decisions_do_not_depend_on_concurrency(
    make_experiment: Make, tmp_path: Path, executor: str, pipeline: str, slots: tuple[int, ...]
) -> None:
    """Random per-epoch sleeps, 1 to 16 slots: the same decisions, the same epochs per run."""
    trials = 16 if executor == "async" else 10
    seen = _sequential(
        make_experiment, tmp_path, slots=slots, executor=executor, pipeline=pipeline, trials=trials
    )
    reference = seen[1]
    assert any(d[3] == "prune" for d in reference[0])
    for count, found in seen.items():
        assert found == reference, f"max_concurrency {count} decided otherwise than 1"


def test_sequential_with_repeats_equals_one_slot(make_experiment: Make, tmp_path: Path) -> None:
    """unit trial over 2 repeats: the decisions equal those of one slot (means over repeats).

    The epochs may not: at one slot a trial pruned by its first repeat never starts the
    second; with more slots the second may have started, and stops at its next epoch.
    """
    seen = _sequential(make_experiment, tmp_path, slots=(1, 6), trials=8, repeat=2)
    assert seen[6][0] == seen[1][0]
    assert any(d[3] == "prune" for d in seen[1][0])


async def test_arrival_mode_judges_against_whatever_arrived(
    make_experiment: Make, workspace: Path
) -> None:
    """arrival: no waiting, every judgement journaled; the first judged has nothing to compare."""
    root = make_sweep(make_experiment, pruning={**ASHA, "determinism": "arrival"}, concurrency=6)
    async with capture_events() as events:
        result = await expman.run_experiment(
            root, workspace=workspace, subscribers=[events.subscriber]
        )
    assert result.status == "completed"
    judged = events.of_type(PruneDecision)
    assert judged[0].cutoff is None
    assert judged[0].compared == 0
    assert len(decisions(workspace)) == len(judged)


# -- resume ----------------------------------------------------------------------------------


#: A sweep with a checkpoint every epoch and random pace, for the interruption loops.
INTERRUPTED_SWEEP: dict[str, Any] = {
    "trials": 12,
    "epochs": 9,
    "concurrency": 4,
    "callbacks": [{"type": "curves:EveryEpoch"}],
}


def interrupted_then_resumed(
    make_experiment: Make, tmp_path: Path, sig: int, *, times: int, seed: int, jitter: float
) -> tuple[Any, Any]:
    """The uninterrupted sweep's (decisions, epochs), and the same after ``times`` signals
    ``sig`` at random moments (each a run of ``expman run`` until it) and a last resume."""
    root = make_sweep(make_experiment, jitter=jitter, **INTERRUPTED_SWEEP)
    reference_ws = tmp_path / "reference"
    done = run_cli("run", str(root), "-w", str(reference_ws), "--quiet")
    assert done.returncode == 0, done.stderr
    expected = (decisions(reference_ws), reached(reference_ws))

    workspace = tmp_path / "interrupted"
    moments = random.Random(seed)
    sent = 0
    for _ in range(times):
        before = len(journal(workspace)) if (workspace / "exp").exists() else 0
        proc = start_cli(root, workspace, "--quiet")
        try:
            target = before + moments.randint(3, 30)

            def due(proc: Any = proc, target: int = target) -> bool:
                exists = (workspace / "exp").exists()
                return proc.poll() is not None or (exists and len(journal(workspace)) >= target)

            wait_for(due, timeout=60)
        finally:
            if proc.poll() is None:
                proc.send_signal(sig)
                sent += 1
            proc.wait(timeout=60)
    assert sent >= times // 2, "the sweep finished before most signals: the case is not exercised"
    final = run_cli("run", str(root), "-w", str(workspace), "--quiet")
    assert final.returncode == 0, final.stderr
    assert set(statuses(workspace).values()) <= {"completed", "pruned"}
    return expected, (decisions(workspace), reached(workspace))


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_decisions(
    make_experiment: Make, tmp_path: Path
) -> None:
    """SIGKILL ten times mid-sweep, resume each time: decisions and epochs as if never killed."""
    expected, found = interrupted_then_resumed(
        make_experiment, tmp_path, signal.SIGKILL, times=10, seed=15, jitter=0.03
    )
    assert found == expected


def test_resume_keeps_pruned_runs_and_replays_decisions(
    make_experiment: Make, tmp_path: Path
) -> None:
    """A finished sweep resumed: nothing runs again, no judgement is taken twice."""
    workspace = tmp_path / "ws"
    root = make_sweep(make_experiment)
    assert run_cli("run", str(root), "-w", str(workspace), "--quiet").returncode == 0
    before = decisions(workspace)
    again = run_cli("run", str(root), "-w", str(workspace))
    assert again.returncode == 0, again.stderr
    assert decisions(workspace) == before
    assert sum(1 for e in journal(workspace) if e["type"] == "RunStarted") == 12


def test_a_changed_pruning_block_is_a_config_change(make_experiment: Make, tmp_path: Path) -> None:
    """Resuming with another reduction factor is refused (exit 2), nothing written."""
    workspace = tmp_path / "ws"
    root = make_sweep(make_experiment, epochs=3)
    assert run_cli("run", str(root), "-w", str(workspace), "--quiet").returncode == 0
    lines = (workspace / "exp" / "logs" / "events.jsonl").read_bytes()
    text = (
        (root / "experiment.yaml").read_text().replace("reduction_factor: 3", "reduction_factor: 2")
    )
    (root / "experiment.yaml").write_text(text)
    refused = run_cli("run", str(root), "-w", str(workspace))
    assert refused.returncode == 2
    assert "pruning.reduction_factor" in refused.stderr
    assert (workspace / "exp" / "logs" / "events.jsonl").read_bytes() == lines


# -- config mistakes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({**ASHA, "reduction_factor": 1}, "pruning.reduction_factor: expected a number >= 2"),
        (
            {**ASHA, "grace_period": 10},
            "pruning.grace_period: grace_period 10 is above max_epochs 9",
        ),
        ({**ASHA, "type": "sha"}, "pruning.type: expected a pruner type, one of asha, hyperband"),
        ({**ASHA, "mode": "lowest"}, "pruning.mode: expected min, max or auto"),
        ({**ASHA, "metric": "wobble"}, "pruning.mode: cannot tell from the name 'wobble'"),
        (
            {**ASHA, "determinism": "fast"},
            "pruning.determinism: expected one of sequential, arrival",
        ),
        ({**ASHA, "brackets": 2}, "pruning.brackets: asha has one bracket"),
        (
            {"type": "median", "metric": "val_loss", "grace_period": 2},
            "pruning.grace_period: unknown key",
        ),
        ({"type": "percentile", "metric": "val_loss"}, "missing key 'percentile'"),
        ({"type": "threshold", "metric": "val_loss"}, "threshold needs lower, upper or both"),
        ({"type": "hyperband", "metric": "val_loss"}, "hyperband needs max_epochs"),
    ],
)
def test_pruning_mistakes_are_config_errors_at_their_key(
    make_experiment: Make, tmp_path: Path, block: dict[str, Any], message: str
) -> None:
    root = make_sweep(make_experiment, pruning=block)
    result = run_cli("validate", str(root))
    assert result.returncode == 2, result.stdout
    assert "experiment.yaml:" in result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_validate_shows_the_resolved_pruning_block(make_experiment: Make) -> None:
    root = make_sweep(make_experiment, pruning={"type": "median", "metric": "val_loss"})
    plan = expman.load_plan(root)
    assert plan.pruning is not None
    described = plan.describe()["pruning"]
    assert (described["type"], described["mode"]) == ("median", "min")
    assert (described["n_startup_trials"], described["determinism"]) == (5, "sequential")
    assert json.loads(json.dumps(described)) == described


async def test_a_search_hears_of_pruned_trials_and_keeps_its_order(
    make_experiment: Make, workspace: Path
) -> None:
    """search + asha: sampled trials judged at rungs; a pruned one is told pruned, in order."""
    root = make_sweep(make_experiment, trials=1, concurrency=3)
    text = (root / "experiment.yaml").read_text()
    text += (
        "search:\n  sampler: {type: random, seed: 1}\n  metric: val_loss\n  trials: 10\n"
        "  lag: 3\n  space:\n    c: {randint: [0, 12]}\n"
    )
    (root / "experiment.yaml").write_text(text)
    async with capture_events() as events:
        result = await expman.run_experiment(
            root, workspace=workspace, subscribers=[events.subscriber]
        )
    assert result.status == "completed"
    pruned = {e.trial for e in events.of_type(PruneDecision) if e.action == "prune"}
    assert pruned
    sampled = [e.number for e in events.of_type(TrialSampled)]
    assert sampled == list(range(10))  # admitted in plan order, sampled in turn
    runs = statuses(workspace)
    assert {runs[(t, 0)] for t in pruned} == {"pruned"}


def test_a_metric_no_run_reports_stops_the_experiment_with_its_name(
    make_experiment: Make, tmp_path: Path
) -> None:
    """pruning.metric misspelt: the first run to end without it stops everything, exit 1."""
    root = make_sweep(make_experiment, pruning={**ASHA, "metric": "val_los", "mode": "min"})
    result = run_cli("run", str(root), "-w", str(tmp_path / "ws"), "--quiet")
    assert result.returncode == 1, result.stdout + result.stderr
    shown = result.stdout + result.stderr
    assert "pruning.metric 'val_los' was never reported by t00/run_0, which reported" in shown
    assert "Traceback" not in shown


CURVES_WITH_GAPS = '''
from curves import Curves, loss


class Gaps(Curves):
    """Reports val_loss on odd epochs only, and None for trial c == 5."""

    async def run(self, ctx):
        c = ctx.settings["c"]
        for epoch in range(ctx.start_epoch, self.epochs):
            value = None if c == 5 else loss(c, ctx.seed, epoch)
            metrics = {"val_loss": value} if epoch % 2 else {"other": 1.0}
            if await ctx.epoch_end(epoch, metrics):
                break
        return {}
'''


async def test_a_metric_missing_at_some_epochs_or_none_is_judged_where_reported(
    make_experiment: Make, workspace: Path
) -> None:
    """Ray continues a result without the metric: so do we; nothing is cancelled."""
    rungs = {**ASHA, "grace_period": 2, "reduction_factor": 2, "max_epochs": 27}  # 2, 4, 8, 16
    root = make_sweep(make_experiment, pipeline="gaps:Gaps", pruning=rungs)
    (root / "gaps.py").write_text(CURVES_WITH_GAPS)
    async with capture_events() as events:
        result = await expman.run_experiment(
            root, workspace=workspace, subscribers=[events.subscriber]
        )
    assert result.status == "completed"
    judged = events.of_type(PruneDecision)
    assert {e.epochs for e in judged} == {2, 4, 8}  # the rungs within 9 epochs
    assert not [e for e in judged if e.trial == "t01"]  # c == 5 reports None: never judged
    assert "cancelled" not in set(statuses(workspace).values())


def test_validate_prints_the_pruner_and_its_rungs(make_experiment: Make) -> None:
    root = make_sweep(make_experiment)
    result = run_cli("validate", str(root))
    assert result.returncode == 0, result.stderr
    assert (
        "pruning: asha, min of val_loss, unit trial, sequential, rule ray; rungs at 1, 3 epochs"
        " (reduction factor 3, below max_epochs 9)"
    ) in result.stdout


@pytest.mark.slow
def test_ctrl_c_while_runs_wait_at_a_rung_then_resume_judges_that_rung(
    make_experiment: Make, tmp_path: Path
) -> None:
    """SIGINT at random moments (runs waiting to be judged, checkpoints every epoch), then
    resume: no rung is skipped, the decisions and epochs are the uninterrupted run's."""
    expected, found = interrupted_then_resumed(
        make_experiment, tmp_path, signal.SIGINT, times=6, seed=7, jitter=0.05
    )
    assert found == expected


async def test_a_prune_wins_over_an_experiment_stop_that_came_before_it_acted(
    make_experiment: Make, workspace: Path
) -> None:
    """An experiment stop between a prune's journal record and its stop: the trial is
    pruned (its decision is on disk), the other runs are cancelled."""
    root = make_sweep(make_experiment, concurrency=1)
    text = (root / "experiment.yaml").read_text()
    text += "subscribers:\n- type: curves:StopAtFirstPrune\n"
    (root / "experiment.yaml").write_text(text)
    async with capture_events() as events:
        result = await expman.run_experiment(
            root, workspace=workspace, subscribers=[events.subscriber]
        )
    assert result.status == "cancelled"
    (first,) = [e for e in events.of_type(PruneDecision) if e.action == "prune"]
    runs = statuses(workspace)
    assert runs[(first.trial, first.repeat)] == "pruned"
    assert {(r.trial, r.status) for r in result.runs if r.trial == first.trial} == {
        (first.trial, "pruned")
    }
    assert "cancelled" in {r.status for r in result.runs}


def test_a_pruning_override_on_the_command_line_is_refused_not_a_new_setting(
    make_experiment: Make, tmp_path: Path
) -> None:
    root = make_sweep(make_experiment)
    result = run_cli("run", str(root), "-w", str(tmp_path / "ws"), "pruning.max_epochs=3")
    assert result.returncode == 2
    assert "the pruning block of experiment.yaml is not changed from the command line" in (
        result.stderr
    )
    assert not (tmp_path / "ws").exists()


async def test_waiting_at_a_rung_is_no_stall(make_experiment: Make, workspace: Path) -> None:
    """A slow first trial keeps the others waiting past stall_timeout: none is stalled."""
    root = make_sweep(make_experiment, trials=3, epochs=3, concurrency=3)
    experiment = yaml.safe_load((root / "experiment.yaml").read_text())
    experiment["execution"]["stall_timeout"] = 0.5
    write_yaml(root / "experiment.yaml", experiment)
    trials = yaml.safe_load((root / "trials.yaml").read_text())
    # t00: the worst curve, 0.3 s per epoch (no stall of its own); t01, the best, waits
    # at its rung of 3 epochs for t00's third epoch, 0.9 s after the start.
    trials[0]["settings"].update(c=5, pipeline={"pause": 0.3})
    trials[1]["settings"]["c"] = 0
    write_yaml(root / "trials.yaml", trials)
    async with capture_events() as events:
        result = await expman.run_experiment(
            root, workspace=workspace, subscribers=[events.subscriber]
        )
    assert {r.status for r in result.runs} <= {"completed", "pruned"}, [
        (r.trial, r.status, r.error) for r in result.runs
    ]
    assert len(events.of_type(PruneDecision)) >= 3


def test_the_lines_display_says_what_a_search_sampled(
    make_experiment: Make, tmp_path: Path
) -> None:
    root = make_sweep(make_experiment, trials=1, concurrency=2)
    text = (root / "experiment.yaml").read_text()
    text += (
        "search:\n  sampler: {type: random, seed: 1}\n  metric: val_loss\n  trials: 3\n"
        "  space:\n    c: {randint: [0, 12]}\n"
    )
    (root / "experiment.yaml").write_text(text)
    result = run_cli("run", str(root), "-w", str(tmp_path / "ws"), "--quiet")
    assert result.returncode == 0, result.stderr
    sampled = [line for line in result.stdout.splitlines() if ": sampled c=" in line]
    assert [line.split(":")[0] for line in sampled] == ["t00-0000", "t00-0001", "t00-0002"]


def test_adding_a_pruning_block_to_a_recorded_experiment_is_a_config_change(
    make_experiment: Make, tmp_path: Path
) -> None:
    """Run without pruning, add the block: refused (exit 2) unless --accept-changes."""
    workspace = tmp_path / "ws"
    root = make_sweep(make_experiment, epochs=3)
    experiment = yaml.safe_load((root / "experiment.yaml").read_text())
    block = experiment.pop("pruning")
    write_yaml(root / "experiment.yaml", experiment)
    assert run_cli("run", str(root), "-w", str(workspace), "--quiet").returncode == 0
    write_yaml(root / "experiment.yaml", {**experiment, "pruning": block})
    refused = run_cli("run", str(root), "-w", str(workspace))
    assert refused.returncode == 2
    assert "the pruning block differs" in refused.stderr
    accepted = run_cli("run", str(root), "-w", str(workspace), "--accept-changes", "--quiet")
    assert accepted.returncode == 0, accepted.stderr


def test_a_metric_changed_with_accept_changes_starts_the_rungs_afresh(
    make_experiment: Make, tmp_path: Path
) -> None:
    """Decisions on another metric stand; their values never enter the new cutoffs."""
    workspace = tmp_path / "ws"
    root = make_sweep(make_experiment, trials=4)
    assert run_cli("run", str(root), "-w", str(workspace), "--quiet").returncode == 0
    experiment = yaml.safe_load((root / "experiment.yaml").read_text())
    experiment["pruning"]["metric"] = "other_loss"
    write_yaml(root / "experiment.yaml", experiment)
    trials = yaml.safe_load((root / "trials.yaml").read_text())
    trials += [{"name": "t99", "id": 99, "repeat": 1, "settings": {"c": 3}}]
    write_yaml(root / "trials.yaml", trials)
    (root / "curves.py").write_text(
        CURVES.replace('{"val_loss": loss(c, ctx.seed, epoch)}', '{"other_loss": 1000.0}')
    )
    done = run_cli("run", str(root), "-w", str(workspace), "--accept-changes", "--quiet")
    assert done.returncode == 0, done.stderr
    (new,) = [
        e for e in journal(workspace) if e["type"] == "PruneDecision" and e["trial"] == "t99"
    ][:1]
    assert new["metric"] == "other_loss"
    assert (new["cutoff"], new["compared"], new["action"]) == (None, 0, "continue")


def test_a_run_pruned_just_before_a_kill_resumes_as_pruned_with_its_epochs(
    make_experiment: Make, tmp_path: Path
) -> None:
    """kill -9 between a prune's journal record and its run's end: resume settles the run
    pruned, with the epochs it was judged at and its reason, and does not run it again."""
    workspace = tmp_path / "ws"
    root = make_sweep(make_experiment, concurrency=1)
    experiment = yaml.safe_load((root / "experiment.yaml").read_text())
    marker = str(tmp_path / "killed")
    experiment["subscribers"] = [{"type": "curves:KillAtFirstPrune", "marker": marker}]
    write_yaml(root / "experiment.yaml", experiment)
    killed = run_cli("run", str(root), "-w", str(workspace), "--quiet")
    assert killed.returncode == -signal.SIGKILL
    (decision,) = [e for e in journal(workspace) if e["type"] == "PruneDecision"][-1:]
    assert decision["action"] == "prune"
    resumed = run_cli("run", str(root), "-w", str(workspace))
    assert resumed.returncode == 0, resumed.stderr
    key = (decision["trial"], decision["repeat"])
    assert f"{key[0]}/run_{key[1]}: runs again" not in resumed.stdout
    (last,) = [
        e
        for e in journal(workspace)
        if e["type"] == "RunFinished" and (e["trial"], e["repeat"]) == key
    ]
    assert (last["status"], last["epochs"], last["reason"]) == (
        "pruned",
        decision["epochs"],
        decision["reason"],
    )
