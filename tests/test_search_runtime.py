"""Adaptive search at run time: sampled trials journaled, admitted, written and resumed."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

import expman
from expman import Admit, Drop, RunSpec
from expman.errors import ConfigChanged
from expman.events import RunFinished, RunStarted, StopRequested, TrialSampled
from expman.jsonlines import read_lines
from expman.results.reading import read_experiment
from expman.run.records import RunOutcome
from expman.runtime.search import told
from expman.search.samplers import suggest
from expman.status import RunStatus
from expman.testing import capture_events
from expman.workspace.journal import encode, read_journal

from .conftest import run_cli, write_yaml
from .test_resume import count, start_cli, wait_for

Make = Callable[..., Path]


# -- the journal -----------------------------------------------------------------------


def _write_journal(path: Path, lines: Sequence[bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    return path


def test_the_journal_folds_sampled_values_and_the_newest_record_stands(tmp_path: Path) -> None:
    """TrialSampled records give each trial's values; a trial sampled again has its newest."""
    first = TrialSampled(experiment="e", trial="a-0000", number=0, values={"lr": 0.1}, study="1")
    again = TrialSampled(experiment="e", trial="a-0000", number=0, values={"lr": 0.5}, study="1")
    other = TrialSampled(experiment="e", trial="a-0001", number=1, values={"d": 3}, study="1")
    path = _write_journal(
        tmp_path / "e" / "logs" / "events.jsonl", [encode(first), encode(again), encode(other)]
    )
    state = read_journal(path, experiment="e")
    assert state.sampled == {"a-0000": {"lr": 0.5}, "a-0001": {"d": 3}}
    assert state.problems == []
    assert state.runs == {}


def test_a_malformed_sampled_record_is_skipped_with_its_line(tmp_path: Path) -> None:
    """Values that are not an object, or a negative number, are skipped and named."""
    good = TrialSampled(experiment="e", trial="a-0000", number=0, values={"lr": 0.1})
    path = _write_journal(
        tmp_path / "e" / "logs" / "events.jsonl",
        [
            b'{"type":"TrialSampled","experiment":"e","trial":"a-0001","number":1,"values":[1]}\n',
            b'{"type":"TrialSampled","experiment":"e","trial":"a-0002","number":-1,"values":{}}\n',
            b'{"type":"TrialSampled","experiment":"e","number":3,"values":{}}\n',
            encode(good),
        ],
    )
    state = read_journal(path, experiment="e")
    assert state.sampled == {"a-0000": {"lr": 0.1}}
    assert [p.split(": ", 1)[0].rsplit(", ", 1)[1] for p in state.problems] == [
        "line 1",
        "line 2",
        "line 3",
    ]
    assert "'values' must be an object" in state.problems[0]
    assert "'number' must be >= 0" in state.problems[1]
    assert "without 'trial'" in state.problems[2]


# -- the admission seam ------------------------------------------------------------------


def _experiment(make_experiment: Make, repeats: int = 2) -> Path:
    return make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "epochs": 2}},
        trials=[{"name": "a", "id": 1, "repeat": repeats}],
        experiment={"name": "exp", "id": 1, "settings": {}, "execution": {"max_concurrency": 2}},
    )


def _with_epochs(spec: RunSpec, epochs: int) -> RunSpec:
    settings = dict(spec.settings)
    settings["pipeline"] = {**settings["pipeline"], "epochs": epochs}
    trial = dataclasses.replace(spec.trial, settings=settings, config_hash=f"epochs{epochs}")
    return RunSpec(trial=trial, repeat=spec.repeat, seed=spec.seed)


class ThreeEpochs:
    """Starts every run as a variant of itself that trains three epochs."""

    async def choose(self, waiting: Sequence[RunSpec]) -> Admit | Drop:
        return Admit(waiting[0], start_as=_with_epochs(waiting[0], 3))


async def test_a_policy_starts_a_run_as_the_run_it_has_become(
    make_experiment: Make, workspace: Path
) -> None:
    """Admit(start_as=...) runs the given spec in the planned run's place, recorded as such."""
    root = _experiment(make_experiment)
    async with capture_events() as events:
        result = await expman.run_experiment(
            root, workspace=workspace, admission=ThreeEpochs(), subscribers=[events.subscriber]
        )
    assert result.status == "completed"
    assert sorted((e.repeat, e.config_hash) for e in events.of_type(RunStarted)) == [
        (0, "epochs3"),
        (1, "epochs3"),
    ]
    assert [e.epochs for e in events.of_type(RunFinished)] == [3, 3]
    state = read_journal(workspace / "exp" / "logs" / "events.jsonl")
    assert {key: run.config_hash for key, run in state.runs.items()} == {
        ("a", 0): "epochs3",
        ("a", 1): "epochs3",
    }


def test_start_as_must_be_the_same_run(make_experiment: Make) -> None:
    """A start_as with another trial name or repeat is refused when the Admit is made."""
    plan = expman.load_plan(_experiment(make_experiment))
    first, second = plan.runs
    Admit(first, start_as=_with_epochs(first, 3))  # the same run: fine
    with pytest.raises(ValueError, match=r"a/run_1 is not the run a/run_0"):
        Admit(first, start_as=second)


# -- a search, end to end ----------------------------------------------------------------

#: A synthetic objective of the settings, sleeping a random time per epoch (never seeded:
#: each process times its runs differently), failing on purpose below ``fail_below``,
#: holding each epoch while the file ``hold_while`` exists (until a stop).
OBJECTIVE = textwrap.dedent(
    """
    import math
    import os
    import random

    import anyio

    from expman import Pipeline


    class Objective(Pipeline):
        def __init__(self, epochs=2, sleep=0.01, fail_below=0, hold_while=None, **params):
            super().__init__(**params)
            self.epochs, self.sleep = epochs, sleep
            self.fail_below, self.hold_while = fail_below, hold_while

        async def run(self, ctx):
            s = ctx.settings
            if s["depth"] < self.fail_below:
                raise ValueError(f"depth {s['depth']} is too shallow")
            loss = (math.log10(s["lr"]) + 3) ** 2 + (s["depth"] - 5) ** 2 / 10
            loss += 0.3 if s["act"] == "gelu" else 0.0
            for epoch in range(ctx.start_epoch, self.epochs):
                await anyio.sleep(random.random() * self.sleep)
                while self.hold_while and os.path.exists(self.hold_while) and not ctx.should_stop:
                    await anyio.sleep(0.02)
                if await ctx.epoch_end(epoch, {"val_loss": loss + 1 / (epoch + 1)}):
                    break
            return {"val_loss": loss}
    """
)


def search_experiment(
    root: Path,
    *,
    sampler: object = None,
    trials: int = 40,
    lag: int = 4,
    repeat: int = 1,
    pipeline: dict[str, object] | None = None,
    entries: int = 1,
) -> Path:
    """An experiment folder searching lr, depth and act of the objective above."""
    root.mkdir(parents=True, exist_ok=True)
    write_yaml(
        root / "experiment.yaml",
        {
            "name": "exp",
            "id": 1,
            "settings": {},
            "execution": {"max_concurrency": 4},
            "search": {
                "sampler": sampler if sampler is not None else {"type": "tpe", "seed": 7},
                "metric": "val_loss",
                "mode": "min",
                "trials": trials,
                "lag": lag,
                "space": {
                    "lr": {"loguniform": [1.0e-5, 1.0e-1]},
                    "depth": {"randint": [2, 9]},
                    "act": {"choice": ["relu", "gelu"]},
                },
            },
        },
    )
    write_yaml(
        root / "base.yaml",
        {
            "settings": {
                "pipeline": {"type": "objective:Objective", **(pipeline or {})},
                "lr": 0.01,
                "depth": 3,
                "act": "relu",
            }
        },
    )
    write_yaml(
        root / "trials.yaml",
        [
            {"name": f"mlp{i}" if i else "mlp", "id": i + 1, "repeat": repeat}
            for i in range(entries)
        ],
    )
    (root / "objective.py").write_text(OBJECTIVE)
    return root


def journal(workspace: Path) -> list[dict[str, Any]]:
    return list(read_lines(workspace / "exp" / "logs" / "events.jsonl"))


def sampled_sequence(workspace: Path) -> list[tuple[str, str, int, dict[str, Any]]]:
    """(study, trial, number, values) of every TrialSampled record, by study and number."""
    records = [e for e in journal(workspace) if e["type"] == "TrialSampled"]
    return sorted(
        ((e["study"], e["trial"], e["number"], e["values"]) for e in records),
        key=lambda r: (r[0], r[2]),
    )


def assert_told_from_the_journal(root: Path, workspace: Path) -> None:
    """Each recorded suggestion is what suggest() gives from the journal's first n-lag results."""
    plan = expman.load_plan(root)
    assert plan.search is not None
    lag, metric = plan.search.lag, plan.search.metric
    latest: dict[tuple[str, int], RunOutcome] = {}  # a run's last RunFinished stands
    for e in journal(workspace):
        if e["type"] == "RunFinished":
            outcome = RunOutcome(e["trial"], e["repeat"], RunStatus(e["status"]), e["metrics"])
            latest[(e["trial"], e["repeat"])] = outcome
    finished: dict[str, list[RunOutcome]] = {}
    for (trial, _), outcome in sorted(latest.items()):
        finished.setdefault(trial, []).append(outcome)
    sequence = sampled_sequence(workspace)
    by_number = {(study, number): (trial, values) for study, trial, number, values in sequence}
    for study, _trial, number, values in sequence:
        history = [
            told(k, by_number[(study, k)][1], finished[by_number[(study, k)][0]], metric=metric)
            for k in range(number - lag + 1)
        ]
        assert suggest(plan.search, study, number, history) == values, (study, number)


def assert_sampled_after_the_lagged_results(workspace: Path, lag: int, repeats: int = 1) -> None:
    """TrialSampled(n) follows every run of trials <= n-lag ending, and precedes n's runs."""
    ended: dict[tuple[str, int], set[int]] = {}  # (study, number) -> repeats ended
    numbers: dict[str, tuple[str, int]] = {}
    for e in journal(workspace):
        if e["type"] == "RunStarted":
            assert e["trial"] in numbers, f"{e['trial']} started before its TrialSampled"
        if e["type"] == "TrialSampled":
            numbers[e["trial"]] = (e["study"], e["number"])
            for k in range(e["number"] - lag + 1):
                assert len(ended.get((e["study"], k), ())) == repeats, (e["trial"], k)
        elif e["type"] == "RunFinished" and e["trial"] in numbers:
            ended.setdefault(numbers[e["trial"]], set()).add(e["repeat"])


def overlapped(workspace: Path) -> int:
    """The most runs the journal shows running at once."""
    running: set[tuple[str, int]] = set()
    most = 0
    for e in journal(workspace):
        if e["type"] == "RunStarted":
            running.add((e["trial"], e["repeat"]))
            most = max(most, len(running))
        elif e["type"] == "RunFinished":
            running.discard((e["trial"], e["repeat"]))
    return most


Sequence_ = list[tuple[str, str, int, dict[str, Any]]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Sequence_]:
    """TPE, lag 4, 40 trials, run at -j 1: its folder, workspace and sampled sequence."""
    tmp = tmp_path_factory.mktemp("reference")
    root = search_experiment(tmp / "configs", pipeline={"sleep": 0.03})
    workspace = tmp / "ws"
    proc = run_cli("run", str(root), "-w", str(workspace), "-j", "1")
    assert proc.returncode == 0, proc.stderr
    return root, workspace, sampled_sequence(workspace)


def test_each_suggestion_comes_from_exactly_the_first_n_minus_lag_results(
    reference: tuple[Path, Path, Sequence_],
) -> None:
    """Trial n's recorded values are suggest() of the journal's trials 0..n-lag, nothing else."""
    root, workspace, sequence = reference
    assert [(trial, number) for _, trial, number, _ in sequence] == [
        (f"mlp-{n:04d}", n) for n in range(40)
    ]
    assert_told_from_the_journal(root, workspace)
    assert_sampled_after_the_lagged_results(workspace, lag=4)
    # TPE learned something: its later half beats its random start.
    finals = {
        e["trial"]: e["metrics"]["val_loss"]
        for e in journal(workspace)
        if e["type"] == "RunFinished" and e["status"] == "completed"
    }
    first = [finals[f"mlp-{n:04d}"] for n in range(10)]
    last = [finals[f"mlp-{n:04d}"] for n in range(30, 40)]
    assert sorted(last)[5] < sorted(first)[5]


@pytest.mark.parametrize("jobs", [4, 8])
def test_the_sampled_sequence_is_the_same_at_any_concurrency(
    reference: tuple[Path, Path, Sequence_], tmp_path: Path, jobs: int
) -> None:
    """-j 4 and -j 8, with random sleeps per epoch, sample what -j 1 sampled."""
    root, _, expected = reference
    workspace = tmp_path / "ws"
    proc = run_cli("run", str(root), "-w", str(workspace), "-j", str(jobs))
    assert proc.returncode == 0, proc.stderr
    assert sampled_sequence(workspace) == expected
    assert_sampled_after_the_lagged_results(workspace, lag=4)
    assert overlapped(workspace) >= 3  # runs really went at once


@pytest.mark.parametrize("sampler", ["random", "cmaes"])
async def test_every_sampler_samples_the_same_sequence_at_any_concurrency(
    tmp_path: Path, sampler: str
) -> None:
    """random and CMA-ES too: one run at a time or four, the same values, from n-lag results."""
    if sampler == "cmaes":
        pytest.importorskip("optuna")
        pytest.importorskip("cmaes")
    root = search_experiment(
        tmp_path / "configs",
        sampler={"type": sampler, "seed": 5},
        trials=16,
        lag=3,
        pipeline={"sleep": 0.02},
    )
    sequences = []
    for jobs in (1, 4):
        workspace = tmp_path / f"ws{jobs}"
        await expman.run_experiment(root, workspace=workspace, max_concurrency=jobs)
        assert_sampled_after_the_lagged_results(workspace, lag=3)
        sequences.append(sampled_sequence(workspace))
    assert sequences[0] == sequences[1]
    assert len(sequences[0]) == 16
    assert overlapped(tmp_path / "ws4") >= 2


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_samples_the_same_sequence(
    reference: tuple[Path, Path, Sequence_], tmp_path: Path
) -> None:
    """Killed three times mid-search and resumed: the same values, each trial sampled once."""
    root, _, expected = reference
    workspace = tmp_path / "ws"
    rng = random.Random(14)
    for target in sorted(rng.sample(range(2, 38), 3)):
        proc = start_cli(root, workspace, "-j", "4")
        wait_for(
            lambda t=target, p=proc: count(workspace, "TrialSampled") >= t or p.poll() is not None,
            timeout=60,
        )
        time.sleep(rng.random() * 0.03)
        proc.kill()
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
    assert count(workspace, "TrialSampled") < 40
    final = run_cli("run", str(root), "-w", str(workspace), "-j", "4")
    assert final.returncode == 0, final.stderr
    assert sampled_sequence(workspace) == expected
    assert_sampled_after_the_lagged_results(workspace, lag=4)
    records = journal(workspace)
    sampled = [e["trial"] for e in records if e["type"] == "TrialSampled"]
    assert len(sampled) == len(set(sampled)) == 40
    completed = [
        e["trial"] for e in records if e["type"] == "RunFinished" and e["status"] == "completed"
    ]
    assert len(completed) == len(set(completed)) == 40  # nothing finished ran again


def test_sigint_during_a_wait_exits_130_promptly_and_resumes(tmp_path: Path) -> None:
    """Ctrl-C while trial 1 waits for trial 0: exit 130 at once; resume samples the rest."""
    root = search_experiment(
        tmp_path / "configs",
        sampler={"type": "tpe", "seed": 7},
        trials=4,
        lag=1,
        pipeline={"epochs": 1, "hold_while": str(tmp_path / "hold")},
    )
    (tmp_path / "hold").touch()
    workspace = tmp_path / "ws"
    proc = start_cli(root, workspace)
    wait_for(lambda: count(workspace, "RunStarted") >= 1)
    time.sleep(0.3)  # the driver waits for trial 0's result
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - signalled < 5
    first = sampled_sequence(workspace)
    assert [trial for _, trial, _, _ in first] == ["mlp-0000"]
    # The waiting trials were never prepared: no folders with unsampled settings.
    assert sorted(p.name for p in (workspace / "exp" / "trials").iterdir()) == ["logs", "mlp-0000"]
    (tmp_path / "hold").unlink()
    resumed = run_cli("run", str(root), "-w", str(workspace))
    assert resumed.returncode == 0, resumed.stderr
    after = sampled_sequence(workspace)
    assert after[0] == first[0]  # recorded before the interruption: never sampled again
    assert [trial for _, trial, _, _ in after] == [f"mlp-{n:04d}" for n in range(4)]


# -- failures, drops, stops -----------------------------------------------------------------


def test_told_says_how_a_trial_ended() -> None:
    """complete with the mean over repeats (early-stopped runs with their last value);
    failed on any failure or no finite metric; pruned when stopped before the metric."""

    def outcome(status: str, **metrics: Any) -> RunOutcome:
        return RunOutcome("t", 0, RunStatus(status), metrics)

    def state(*outcomes: RunOutcome) -> tuple[str, float | None]:
        result = told(0, {"x": 1}, outcomes, metric="loss")
        return result.state, result.value

    assert state(outcome("completed", loss=1.0), outcome("completed", loss=2.0)) == (
        "complete",
        1.5,
    )
    # The mean is the same whatever order the runs ended in (0.1 + 0.2 + 0.3 is not).
    tenths = [outcome("completed", loss=x) for x in (0.1, 0.2, 0.3)]
    assert state(*tenths) == state(*reversed(tenths)) == ("complete", 0.6 / 3)
    assert state(outcome("completed", loss=1.0), outcome("failed")) == ("failed", None)
    # Stopped early (EarlyStopping) with the metric: its last value is its result.
    assert state(outcome("completed", loss=1.0), outcome("stopped", loss=0.5)) == (
        "complete",
        0.75,
    )
    # Stopped or cancelled before it reported the metric (not started, a stop): pruned.
    assert state(outcome("completed", loss=1.0), outcome("stopped")) == ("pruned", None)
    assert state(outcome("cancelled", acc=0.5)) == ("pruned", None)
    # A pruner's decision: pruned, whatever it reported before.
    assert state(outcome("completed", loss=1.0), outcome("pruned", loss=0.5)) == ("pruned", None)
    assert state(outcome("stopped"), outcome("failed")) == ("failed", None)
    assert state(outcome("completed", acc=1.0)) == ("failed", None)  # no loss reported
    assert state(outcome("completed", loss=float("nan"))) == ("failed", None)
    assert state(outcome("completed", loss="low")) == ("failed", None)


async def test_failed_trials_are_told_as_failed_and_the_search_goes_on(tmp_path: Path) -> None:
    """Trials whose runs raise end failed; later trials are still sampled, from those failures."""
    root = search_experiment(
        tmp_path / "configs",
        sampler={"type": "tpe", "seed": 3, "n_startup_trials": 4},
        trials=14,
        lag=2,
        repeat=2,
        pipeline={"fail_below": 5, "sleep": 0.0},
    )
    workspace = tmp_path / "ws"
    result = await expman.run_experiment(root, workspace=workspace)
    by_trial: dict[str, set[str]] = {}
    for run in result.runs:
        by_trial.setdefault(run.trial, set()).add(run.status)
    assert len(by_trial) == 14
    failed = {trial for trial, statuses in by_trial.items() if statuses == {"failed"}}
    assert failed, "no trial failed: the test no longer tests failures"
    assert len(failed) < 14
    sampled = {trial: values for _, trial, _, values in sampled_sequence(workspace)}
    assert failed == {trial for trial, values in sampled.items() if values["depth"] < 5}
    assert_told_from_the_journal(root, workspace)
    assert_sampled_after_the_lagged_results(workspace, lag=2, repeats=2)


class DropTrialOne:
    """Never starts trial mlp-0001 (its runs end stopped, 'not started')."""

    async def choose(self, waiting: Sequence[RunSpec]) -> Admit | Drop:
        spec = waiting[0]
        return Drop(spec, "not this one") if spec.trial.name == "mlp-0001" else Admit(spec)


async def test_a_trial_dropped_before_its_sampling_never_holds_the_search_up(
    tmp_path: Path,
) -> None:
    """With lag 1 every trial waits for the one before; a dropped one counts as finished."""
    root = search_experiment(tmp_path / "configs", sampler="random", trials=4, lag=1)
    workspace = tmp_path / "ws"
    with anyio.fail_after(30):
        result = await expman.run_experiment(root, workspace=workspace, admission=DropTrialOne())
    statuses = {run.trial: (run.status, run.reason) for run in result.runs}
    assert statuses == {
        "mlp-0000": ("completed", None),
        "mlp-0001": ("stopped", "not started: not this one"),
        "mlp-0002": ("completed", None),
        "mlp-0003": ("completed", None),
    }
    assert [trial for _, trial, _, _ in sampled_sequence(workspace)] == [
        "mlp-0000",
        "mlp-0002",
        "mlp-0003",
    ]


async def test_a_trial_stop_ends_a_wait_for_it(tmp_path: Path) -> None:
    """A stop of a waiting, unsampled trial settles it at once; the others go on."""
    root = search_experiment(
        tmp_path / "configs",
        sampler="random",
        trials=3,
        lag=1,
        pipeline={"epochs": 1, "hold_while": str(tmp_path / "hold")},
    )
    (tmp_path / "hold").touch()
    workspace = tmp_path / "ws"
    with anyio.fail_after(30):
        async with expman.start_experiment(root, workspace=workspace) as handle:
            async for event in handle.events():
                if isinstance(event, RunStarted) and event.trial == "mlp-0000":
                    await handle.bus.publish(
                        StopRequested(
                            experiment="exp", trial="mlp-0001", scope="trial", reason="enough"
                        )
                    )
                    (tmp_path / "hold").unlink()
            result = await handle.wait()
    statuses = {run.trial: (run.status, run.reason) for run in result.runs}
    assert statuses["mlp-0001"] == ("stopped", "not started: enough")
    assert statuses["mlp-0000"][0] == statuses["mlp-0002"][0] == "completed"
    assert "mlp-0001" not in {trial for _, trial, _, _ in sampled_sequence(workspace)}


# -- the workspace, results, resume ------------------------------------------------------------


async def test_snapshots_and_results_hold_the_sampled_settings(tmp_path: Path) -> None:
    """trial.yaml, run.yaml, resolved.yaml on resume and `results` show what each trial ran with."""
    root = search_experiment(tmp_path / "configs", sampler="random", trials=3, repeat=2)
    workspace = tmp_path / "ws"
    async with capture_events() as events:
        await expman.run_experiment(root, workspace=workspace, subscribers=[events.subscriber])
    sampled = {e.trial: dict(e.values) for e in events.of_type(TrialSampled)}
    hashes = {(e.trial, e.repeat): e.config_hash for e in events.of_type(RunStarted)}
    assert len(sampled) == 3
    exp = workspace / "exp"
    for trial, values in sampled.items():
        snapshot = yaml.safe_load((exp / "trials" / trial / "configs" / "trial.yaml").read_text())
        assert {k: snapshot["settings"][k] for k in values} == values
        for repeat in (0, 1):
            run = yaml.safe_load(
                (exp / "trials" / trial / f"run_{repeat}" / "configs" / "run.yaml").read_text()
            )
            assert {k: run["settings"][k] for k in values} == values
            assert run["config_hash"] == snapshot["config_hash"] == hashes[(trial, repeat)]
    record = read_experiment(exp)
    assert {t.name: dict(t.sampled or {}) for t in record.trials} == sampled
    assert all(t.settings["lr"] == sampled[t.name]["lr"] for t in record.trials)
    shown = run_cli("results", str(exp), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    rows = {row["trial"]: row for row in json.loads(shown.stdout)["trials"]}
    assert {trial: row["settings"]["lr"] for trial, row in rows.items()} == {
        trial: values["lr"] for trial, values in sampled.items()
    }
    # Resumed (nothing to do), resolved.yaml records the sampled trials as such.
    again = await expman.run_experiment(root, workspace=workspace)
    assert all(run.skipped for run in again.runs)
    resolved = yaml.safe_load((exp / "configs" / "resolved.yaml").read_text())
    assert {t["name"]: t["search"]["sampled"] for t in resolved["trials"]} == sampled


async def test_more_trials_on_resume_samples_only_the_new_ones(tmp_path: Path) -> None:
    """Growing `trials` runs only the new trials; recorded ones keep their values and results."""
    root = search_experiment(tmp_path / "configs", sampler={"type": "tpe", "seed": 1}, trials=5)
    workspace = tmp_path / "ws"
    await expman.run_experiment(root, workspace=workspace)
    before = sampled_sequence(workspace)
    text = (root / "experiment.yaml").read_text()
    (root / "experiment.yaml").write_text(text.replace("trials: 5", "trials: 8"))
    async with capture_events() as events:
        result = await expman.run_experiment(
            root, workspace=workspace, subscribers=[events.subscriber]
        )
    assert result.status == "completed"
    assert sorted(e.trial for e in events.of_type(RunStarted)) == [
        "mlp-0005",
        "mlp-0006",
        "mlp-0007",
    ]
    after = sampled_sequence(workspace)
    assert after[:5] == before
    assert [trial for _, trial, _, _ in after[5:]] == ["mlp-0005", "mlp-0006", "mlp-0007"]
    assert_told_from_the_journal(root, workspace)


def test_a_changed_search_block_is_refused_on_resume_unless_accepted(tmp_path: Path) -> None:
    """Changing how trials are sampled is a config change: exit 2 naming the key, or accepted."""
    root = search_experiment(tmp_path / "configs", trials=3)
    workspace = tmp_path / "ws"
    first = run_cli("run", str(root), "-w", str(workspace))
    assert first.returncode == 0, first.stderr
    before = sampled_sequence(workspace)
    text = (root / "experiment.yaml").read_text()
    (root / "experiment.yaml").write_text(text.replace("lag: 4", "lag: 2"))
    journal_before = (workspace / "exp" / "logs" / "events.jsonl").read_bytes()
    refused = run_cli("run", str(root), "-w", str(workspace))
    assert refused.returncode == 2
    assert "changed keys: search.lag\n" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (workspace / "exp" / "logs" / "events.jsonl").read_bytes() == journal_before
    accepted = run_cli("run", str(root), "-w", str(workspace), "--accept-changes")
    assert accepted.returncode == 0, accepted.stderr
    assert sampled_sequence(workspace) == before  # sampled before: kept, not run again
    assert count(workspace, "RunStarted") == 3


async def test_a_fifo_planted_at_resolved_yaml_never_holds_resume_up(tmp_path: Path) -> None:
    """Resume compares the search block with resolved.yaml; a FIFO there is not waited on."""
    root = search_experiment(tmp_path / "configs", sampler="random", trials=2)
    workspace = tmp_path / "ws"
    await expman.run_experiment(root, workspace=workspace)
    resolved = workspace / "exp" / "configs" / "resolved.yaml"
    resolved.unlink()
    os.mkfifo(resolved)
    again = run_cli("run", str(root), "-w", str(workspace), timeout=60)
    assert again.returncode == 0, again.stderr
    assert count(workspace, "RunStarted") == 2  # nothing ran again


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("seed: 7", "seed: 8", "search.sampler"),
        ("mode: min", "mode: max", "search.mode"),
        ("metric: val_loss", "metric: loss", "search.metric"),
        ("- relu", "- tanh", "search.space"),
    ],
)
async def test_every_key_of_the_search_block_but_trials_is_recorded_config(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    """Sampler, mode, metric and space changes are refused like lag; more trials are not."""
    root = search_experiment(tmp_path / "configs", sampler={"type": "tpe", "seed": 7}, trials=2)
    workspace = tmp_path / "ws"
    await expman.run_experiment(root, workspace=workspace)
    text = (root / "experiment.yaml").read_text()
    assert old in text
    (root / "experiment.yaml").write_text(text.replace(old, new).replace("trials: 2", "trials: 3"))
    with pytest.raises(ConfigChanged, match=rf"(?m)changed keys: {key}$"):
        await expman.run_experiment(root, workspace=workspace)
    (root / "experiment.yaml").write_text(text.replace("trials: 2", "trials: 3"))
    grown = await expman.run_experiment(root, workspace=workspace)
    assert [run.skipped for run in grown.runs] == [True, True, False]


async def test_each_trial_entry_has_its_own_study(tmp_path: Path) -> None:
    """Two entries: two studies numbered from 0, each with its own seed and its own waits."""
    root = search_experiment(tmp_path / "configs", sampler="random", trials=3, entries=2, lag=1)
    workspace = tmp_path / "ws"
    await expman.run_experiment(root, workspace=workspace)
    sequence = sampled_sequence(workspace)
    assert [(study, trial, number) for study, trial, number, _ in sequence] == [
        ("1", "mlp-0000", 0),
        ("1", "mlp-0001", 1),
        ("1", "mlp-0002", 2),
        ("2", "mlp1-0000", 0),
        ("2", "mlp1-0001", 1),
        ("2", "mlp1-0002", 2),
    ]
    assert [v for *_, v in sequence[:3]] != [v for *_, v in sequence[3:]]


def test_validate_prints_the_search_block(tmp_path: Path) -> None:
    """`expman validate` says how trials will be sampled, and lists the placeholders."""
    root = search_experiment(
        tmp_path / "configs", sampler={"type": "tpe", "seed": 7, "n_startup_trials": 5}, trials=2
    )
    shown = run_cli("validate", str(root))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[1] == (
        "search: tpe sampler (seed 7, n_startup_trials=5), min of val_loss,"
        " 2 trials per entry sampled, lag 4"
    )
    assert lines[2:5] == [
        "  lr: loguniform [0.00001,0.1]",
        "  depth: randint [2,9]",
        '  act: choice ["relu","gelu"]',
    ]
    assert "trial mlp-0001 (id 1.1)" in shown.stdout


def test_a_metric_no_run_reports_stops_the_search_with_its_name(tmp_path: Path) -> None:
    """search.metric misspelled: the first run that ends without it stops the search (exit 1)
    with a message naming the metric and what the runs report; nothing more is sampled."""
    root = search_experiment(tmp_path / "configs", sampler={"type": "random", "seed": 1}, lag=1)
    config = yaml.safe_load((root / "experiment.yaml").read_text())
    config["search"]["metric"] = "val_los"
    write_yaml(root / "experiment.yaml", config)
    done = run_cli("run", str(root), "-w", str(tmp_path / "ws"), "-q", "-j", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "search.metric 'val_los' is not among the metrics run mlp-0000/run_0 reported" in (
        done.stdout
    )
    assert "val_loss" in done.stdout
    assert "Traceback" not in done.stderr
    assert len(sampled_sequence(tmp_path / "ws")) < 3


@pytest.mark.parametrize("where", ["trials.yaml", "-m"])
def test_a_key_both_swept_and_searched_is_refused(tmp_path: Path, where: str) -> None:
    """The sampled value would silently replace the swept one: a config error, exit 2."""
    root = search_experiment(tmp_path / "configs", sampler={"type": "random", "seed": 1})
    args: list[str] = []
    if where == "trials.yaml":
        write_yaml(
            root / "trials.yaml",
            [{"name": "mlp", "id": 1, "sweep": {"grid": {"lr": [0.1, 0.2]}}}],
        )
    else:
        args = ["-m", "lr=0.1,0.2"]
    done = run_cli("validate", str(root), *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "'lr' is swept (a sweep block or -m) and 'lr' is searched" in done.stderr
    assert "Traceback" not in done.stderr


def test_results_rank_a_search_by_its_metric_and_mode(tmp_path: Path) -> None:
    """`expman results` of a search ranks by search.metric in search.mode, not by guesswork."""
    root = search_experiment(tmp_path / "configs", sampler={"type": "random", "seed": 1}, trials=6)
    config = yaml.safe_load((root / "experiment.yaml").read_text())
    config["search"]["mode"] = "max"  # against the name's hint (a loss): the block decides
    write_yaml(root / "experiment.yaml", config)
    done = run_cli("run", str(root), "-w", str(tmp_path / "ws"), "-q")
    assert done.returncode == 0, done.stderr
    shown = run_cli("results", str(tmp_path / "ws" / "exp"))
    assert shown.returncode == 0, shown.stderr
    assert "val_loss over repeats (max is better" in shown.stdout
