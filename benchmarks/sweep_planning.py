"""Workload: planning a sweep, ``load_plan`` of one ``sweep:`` grid of 1,000 to 100,000 trials.

One trial entry sweeps three axes (``range`` grids on two flat keys and a dotted
one) over settings that hold a pipeline and a few keys, as trials.yaml would; the
timed call is :func:`expman.load_plan` (read, validate, expand, resolve, plan the
runs: everything before anything runs). Each size is planned three times, the best
reported. Targets: 100,000 trials within 2 s, and linear: the time per trial at
100,000 within 1.5x that at 1,000.
"""

from __future__ import annotations

import gc
from pathlib import Path

import _measure

import expman
from expman.jsonlines import dumps

SETTINGS = {
    "pipeline": {"type": "bench_pipes:NoOp", "epochs": 1},
    "seed": 0,
    "optimizer": "adam",
    "lr": 0.0,
    "batch_size": 0,
    "model": {"depth": 0, "width": 64},
}


def write_sweep(root: Path, trials: int) -> Path:
    """A config folder whose one entry sweeps ``trials`` points (10 x 10 x trials / 100)."""
    root.mkdir(parents=True)
    experiment = {"name": f"plan{trials}", "id": 1, "settings": SETTINGS}
    grid = {
        "lr": {"range": [0, 10]},
        "batch_size": {"range": [0, 10]},
        "model.depth": {"range": [0, max(1, trials // 100)]},
    }
    entry = {"name": "t", "id": 1, "sweep": {"grid": grid}}
    # JSON is YAML: written without a YAML emitter, read by expman's own loader.
    (root / "experiment.yaml").write_text(dumps(experiment).decode())
    (root / "trials.yaml").write_text(dumps([entry]).decode())
    return root


def main() -> None:
    sizes = [1_000, 10_000, 100_000] if not _measure.SMOKE else [100, 1_000]
    per_trial: dict[int, float] = {}
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        expman.load_plan(write_sweep(workdir / "warm-up", 100))  # imports, caches
        for trials in sizes:
            root = write_sweep(workdir / f"configs-{trials}", trials)
            samples = []
            for _ in range(_measure.REPEATS):
                gc.collect()  # the previous plan's garbage is not this one's cost
                with _measure.stopwatch() as t:
                    plan = expman.load_plan(root, workspace=workdir / "ws")
                samples.append(t.sample)
                if len(plan.trials) != trials:
                    raise SystemExit(f"planned {len(plan.trials)} trials, expected {trials}")
                del plan
            best = min(samples)
            per_trial[trials] = best / trials
            first = sizes[0]
            target: tuple[str, float] | None
            if trials == 100_000:
                target = ("<=", 2.0)
            elif trials != first:  # linear: per trial no worse than 1.5x the smallest size's
                target = ("<=", round(per_trial[first] * 1.5 * 1e6, 3))
            else:
                target = None
            _measure.emit(
                "sweep_planning",
                f"grid of {trials} trials",
                params={"trials": trials, "axes": 3, "repeat": 1},
                wall_s=samples,
                items=trials,
                item="trial",
                result=("load_plan", best, "s")
                if trials == 100_000
                else ("per trial", best / trials * 1e6, "us"),
                target=target,
                per_trial_ratio=round(per_trial[trials] / per_trial[first], 3),
            )


if __name__ == "__main__":
    main()
