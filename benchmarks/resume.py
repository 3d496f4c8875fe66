"""Workload 5, resume planning: read a journal of 10,000 finished runs and plan the rest.

The experiment has 1,100 trials x 10 repeats; its journal (written with the journal's
own codec, as a real session would leave it: experiment, trial and run lifecycle
events with config hashes and final metrics) says the first 10,000 runs completed.
Timed: folding the journal (``read_journal``) and deciding what runs again
(``plan_resume``), which is what ``run_experiment`` does before anything starts.
Loading the YAML plan itself is reported beside it (``load_plan_s``).
"""

from __future__ import annotations

from pathlib import Path

import _measure
from _folders import write_experiment

import expman
from expman.events import (
    ExperimentStarted,
    RunFinished,
    RunStarted,
    TrialFinished,
    TrialStarted,
    to_dict,
)
from expman.jsonlines import dump_line
from expman.runtime.resume import plan_resume
from expman.workspace.journal import read_journal

REPEAT = 10


def write_journal(plan: expman.ExperimentPlan, path: Path, finished: int) -> int:
    name = plan.name
    events: list[expman.Event] = [
        ExperimentStarted(
            experiment=name, path=str(plan.path), runs=len(plan.runs), trials=len(plan.trials)
        )
    ]
    for spec in plan.runs[:finished]:
        trial = spec.trial
        if spec.repeat == 0:
            events.append(
                TrialStarted(
                    experiment=name, trial=trial.name, trial_id=trial.id, repeats=trial.repeat
                )
            )
        events.append(
            RunStarted(
                experiment=name,
                trial=trial.name,
                repeat=spec.repeat,
                seed=spec.seed,
                config_hash=spec.config_hash,
            )
        )
        events.append(
            RunFinished(
                experiment=name,
                trial=trial.name,
                repeat=spec.repeat,
                status="completed",
                duration=0.01,
                metrics={"loss": 0.1, "acc": 0.9},
                epochs=10,
                config_hash=spec.config_hash,
            )
        )
        if spec.repeat == trial.repeat - 1:
            events.append(
                TrialFinished(
                    experiment=name,
                    trial=trial.name,
                    trial_id=trial.id,
                    counts={"completed": trial.repeat},
                )
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"".join(dump_line(to_dict(e)) for e in events))
    return len(events)


def main() -> None:
    finished = _measure.size(10_000, 100)
    trials = finished // REPEAT + max(1, finished // REPEAT // 10)
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        root = write_experiment(
            workdir / "configs",
            name="resume",
            trials=trials,
            repeat=REPEAT,
            pipeline={"type": "bench_pipes:NoOp"},
        )
        with _measure.stopwatch() as load:
            plan = expman.load_plan(root, workspace=workdir / "ws")
        journal = plan.path / "logs" / "events.jsonl"
        lines = write_journal(plan, journal, finished)
        samples = []
        for _ in range(_measure.REPEATS):
            with _measure.stopwatch() as t:
                state = read_journal(journal)
                resume = plan_resume(plan, state)
            samples.append(t.sample)
        if len(resume.done) != finished or len(resume.todo) != len(plan.runs) - finished:
            raise SystemExit(f"resume planned {len(resume.done)} done, {len(resume.todo)} to do")
    _measure.emit(
        "resume",
        f"journal of {finished} finished runs",
        params={
            "finished_runs": finished,
            "planned_runs": len(plan.runs),
            "trials": trials,
            "repeat": REPEAT,
            "journal_lines": lines,
        },
        wall_s=samples,
        items=finished,
        item="finished run",
        result=("read journal + plan", min(samples), "s"),
        target=("<=", 0.5),
        load_plan_s=round(load.wall, 4),
    )


if __name__ == "__main__":
    main()
