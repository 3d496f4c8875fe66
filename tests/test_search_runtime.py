"""Adaptive search at run time: sampled trials journaled, admitted, written and resumed."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

import expman
from expman import Admit, Drop, RunSpec
from expman.events import RunFinished, RunStarted, TrialSampled
from expman.jsonlines import read_lines
from expman.run.records import RunOutcome
from expman.runtime.search import told
from expman.search.samplers import suggest
from expman.status import RunStatus
from expman.testing import capture_events
from expman.workspace.journal import encode, read_journal

from .conftest import run_cli, write_yaml

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
    assert [(e.repeat, e.config_hash) for e in events.of_type(RunStarted)] == [
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
    """Every TrialSampled of trial n comes after the RunFinished of every run of trials <= n-lag."""
    ended: dict[tuple[str, int], set[int]] = {}  # (study, number) -> repeats ended
    numbers: dict[str, tuple[str, int]] = {}
    for e in journal(workspace):
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


def start_cli(root: Path, workspace: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    source = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "expman", "run", str(root), "-w", str(workspace), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def count(workspace: Path, kind: str) -> int:
    path = workspace / "exp" / "logs" / "events.jsonl"
    return sum(1 for e in read_lines(path) if e["type"] == kind) if path.exists() else 0


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
            lambda t=target, p=proc: count(workspace, "TrialSampled") >= t or p.poll() is not None
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
