"""Workload pruning: what ASHA saves on SyntheticCurves, and what sequential determinism costs.

For each of ``--instances`` problems (default 40), 81 configurations x 81 epochs of
``expman.testing.SyntheticCurves`` run twice as real experiments (YAML folders in a
temporary directory, ``expman.run_experiment``, the async executor, max_concurrency
81): the full grid, and the same grid with

    pruning: {type: asha, metric: val_loss, grace_period: 1, reduction_factor: 3,
              max_epochs: 81, determinism: <--determinism>, rule: <--rule>}

The figures, read back with ``expman.load_results``: the epochs ASHA trained as a
fraction of the full grid's (each run's ``epochs``; the mean over instances, target
<= 12%), and in how many instances ASHA's best trial (``best_trial("val_loss")``:
complete trials by their last value, pruned ones after them) is exactly the known
best configuration (``SyntheticCurves.best`` at 81 epochs; target >= 75%).  The full
grid's own best is reported beside it (noise can hide the best even there), and
``epochs_as_simulated``: in how many instances every trial trained exactly the epochs
the simulation below predicts (all of them, for ``determinism: sequential``).

The second measurement (``--timing-instances``, default 5; 0 skips it): the same
ASHA sweep at max_concurrency 8 with a random sleep per epoch (``sleep: [lo, hi]``
drawn from each run's own generator), in sequential and in arrival mode; the ratio
of their wall times (target <= 1.25).

``--simulate`` replaces the experiments by a pure simulation of sequential ASHA
(trials in plan order, one at a time) on the same values, each run's noise drawn
with the seed the plan gives it, so it predicts what ``determinism: sequential``
must decide.  ``--rule ray`` is Ray Tune's cutoff: trial k at rung r (r epochs
completed) stops if its loss is worse than the (1 - 1/rf) quantile of the negated
losses the earlier trials recorded at that rung (``np.nanpercentile``, as Ray does;
no cutoff with none recorded).  ``--rule optuna`` is Optuna's successive-halving
promotion: a trial goes on past a rung if its loss is among the best
``max(n // rf, 1)`` of the n values recorded there, its own included.

    python benchmarks/pruning.py                       # experiments, 40 instances
    python benchmarks/pruning.py --simulate            # the simulation only (seconds)
    python benchmarks/pruning.py --instances 5 --determinism arrival --rule optuna
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _measure
import anyio
import numpy as np
import yaml

import expman
from expman.testing.synthetic import SyntheticCurves, curve

CONFIGS = 81
EPOCHS = 81
#: The benchmark's noise (the pipeline's default is 0.01): see the module docstring.
NOISE = 0.002
GRACE, RF = 1, 3
SLEEP = (0.0, 0.01)  # seconds per epoch in the timing measurement


def pruning_block(determinism: str, rule: str, max_epochs: int) -> dict[str, Any]:
    return {
        "type": "asha",
        "metric": "val_loss",
        "grace_period": GRACE,
        "reduction_factor": RF,
        "max_epochs": max_epochs,
        "determinism": determinism,
        "rule": rule,
    }


def write_folder(
    root: Path,
    *,
    instance: int,
    configs: int,
    epochs: int,
    pruning: Mapping[str, Any] | None,
    concurrency: int,
    noise: float = NOISE,
    sleep: Sequence[float] | None = None,
) -> Path:
    """One experiment folder: ``configs`` one-run trials ``c0``, ``c1``, ... of one instance."""
    root.mkdir(parents=True, exist_ok=True)
    experiment: dict[str, Any] = {
        "name": root.name,
        "id": 1,
        "desc": f"SyntheticCurves instance {instance}",
        "settings": {},
    }
    if pruning is not None:
        experiment["pruning"] = dict(pruning)
    pipeline: dict[str, Any] = {
        "type": "expman.testing.SyntheticCurves",
        "config": 0,
        "configs": configs,
        "instance": instance,
        "epochs": epochs,
        "noise": noise,
    }
    if sleep is not None:
        pipeline["sleep"] = list(sleep)
    trials = [
        {
            "name": "c",
            "id": 1,
            "repeat": 1,
            "sweep": {
                "name": "c{pipeline.config}",
                "grid": {"pipeline.config": {"range": [0, configs]}},
            },
        }
    ]
    documents = {
        "experiment.yaml": experiment,
        "base.yaml": {"settings": {"seed": 0, "pipeline": pipeline}},
        "trials.yaml": trials,
        "env.yaml": {"execution": {"executor": "async", "max_concurrency": concurrency}},
    }
    for name, data in documents.items():
        (root / name).write_text(yaml.safe_dump(data, sort_keys=False))
    return root


@dataclass(frozen=True)
class Outcome:
    """What one sweep of one instance did: epochs trained, and the best trial's configuration."""

    epochs: int
    best: int | None
    pruned: int
    #: Each configuration's epochs trained.
    trained: Mapping[int, int]


def config_of(trial: str) -> int:
    return int(trial.removeprefix("c"))


async def run_sweep(root: Path, workspace: Path) -> Outcome:
    result = await expman.run_experiment(root, workspace=workspace)
    if result.status != "completed":
        raise SystemExit(f"{root.name} ended {result.status}: {result.counts}")
    results = expman.load_results(workspace / root.name)
    trained = {config_of(run.trial): run.epochs for run in results.runs}
    pruned = sum(1 for run in results.runs if run.status == "pruned")
    best = config_of(results.best_trial("val_loss").trial)
    return Outcome(epochs=sum(trained.values()), best=best, pruned=pruned, trained=trained)


# -- the simulation ---------------------------------------------------------------------


def planned_losses(root: Path) -> list[tuple[int, list[float]]]:
    """Each run of the folder's plan, in plan order: its configuration and its losses."""
    plan = expman.load_plan(root)
    runs = []
    for spec in plan.runs:
        settings = spec.settings["pipeline"]
        shape = curve(settings["instance"], settings["config"])
        losses = [
            shape.noisy_loss(t, spec.seed, settings["noise"]) for t in range(settings["epochs"])
        ]
        runs.append((settings["config"], losses))
    return runs


def milestones(grace: int, rf: int, max_t: int) -> list[int]:
    """Ray's rungs: grace * rf**k up to max_t (ASHAScheduler with one bracket)."""
    count = int(math.log(max_t / grace) / math.log(rf) + 1)
    return [grace * rf**k for k in range(count)]


def simulate(runs: Sequence[tuple[int, Sequence[float]]], rule: str, max_t: int) -> Outcome:
    """Sequential ASHA: each run's epochs trained, and the best complete run's configuration."""
    rungs = milestones(GRACE, RF, max_t)
    recorded: dict[int, list[float]] = {m: [] for m in rungs}  # losses, plan order
    trained: dict[int, int] = {}
    finals: list[tuple[float, int]] = []
    for config, losses in runs:
        done = 0
        for t, loss in enumerate(losses[:max_t]):
            done = t + 1
            if done not in recorded:
                continue
            earlier = recorded[done]
            stop = cut(loss, earlier, rule)
            earlier.append(loss)
            if stop and done < max_t:
                break
        trained[config] = done
        if done == len(losses):
            finals.append((losses[-1], config))
    return Outcome(
        epochs=sum(trained.values()),
        best=min(finals)[1] if finals else None,
        pruned=sum(1 for config, losses in runs if trained[config] < len(losses)),
        trained=trained,
    )


def full_grid(runs: Sequence[tuple[int, Sequence[float]]]) -> Outcome:
    """The grid without pruning: every epoch of every run, the lowest last value wins."""
    trained = {config: len(losses) for config, losses in runs}
    best = min((losses[-1], config) for config, losses in runs)[1]
    return Outcome(epochs=sum(trained.values()), best=best, pruned=0, trained=trained)


def cut(loss: float, earlier: Sequence[float], rule: str) -> bool:
    """Whether a run with ``loss`` at a rung stops, given the earlier runs' values there."""
    if rule == "ray":
        if not earlier:
            return False
        # Ray compares rewards (the negated loss for mode min) with their quantile.
        cutoff = np.nanpercentile([-x for x in earlier], (1 - 1 / RF) * 100)
        return bool(-loss < cutoff)
    competing = sorted([*earlier, loss])
    index = max(len(competing) // RF - 1, 0)
    return not loss <= competing[index]


# -- the measurements -------------------------------------------------------------------


def summary(
    outcomes: Sequence[tuple[int, Outcome, Outcome]], grid_epochs: int
) -> tuple[float, int, int]:
    """The mean fraction of the grid's epochs trained, ASHA's exact finds, the grid's."""
    fraction = sum(asha.epochs / grid_epochs for _, _, asha in outcomes) / len(outcomes)
    found = sum(1 for best, _, asha in outcomes if asha.best == best)
    grid_found = sum(1 for best, grid, _ in outcomes if grid.best == best)
    return fraction, found, grid_found


def emit_efficiency(
    mode: str,
    outcomes: Sequence[tuple[int, Outcome, Outcome]],
    wall: float,
    params: Mapping[str, Any],
    grid_epochs: int,
    **extra: Any,
) -> None:
    fraction, found, grid_found = summary(outcomes, grid_epochs)
    count = len(outcomes)
    fractions = [round(asha.epochs / grid_epochs, 4) for _, _, asha in outcomes]
    _measure.emit(
        "pruning",
        f"{mode}: epochs trained by ASHA, {count} instances",
        params=params,
        wall_s=wall,
        items=count,
        item="instance",
        result=("epochs trained / full grid's", fraction * 100, "%"),
        target=("<=", 12.0),
        fractions=fractions,
        **extra,
    )
    _measure.emit(
        "pruning",
        f"{mode}: ASHA's best trial is the known best, {count} instances",
        params=params,
        wall_s=wall,
        items=count,
        item="instance",
        result=("instances", found / count * 100, "%"),
        target=(">=", 75.0),
        found=found,
        full_grid_found=grid_found,
        agrees_with_full_grid=sum(1 for _, grid, asha in outcomes if asha.best == grid.best),
        misses=[
            {"instance": i, "best": best, "asha": asha.best, "grid": grid.best}
            for i, (best, grid, asha) in enumerate(outcomes)
            if asha.best != best
        ],
    )


async def efficiency(args: argparse.Namespace, workdir: Path) -> None:
    configs, epochs = args.configs, args.epochs
    block = pruning_block(args.determinism, args.rule, epochs)
    params = {
        "configs": configs,
        "epochs": epochs,
        "instances": args.instances,
        "noise": args.noise,
        "pruning": block,
        "simulated": args.simulate,
    }
    outcomes = []
    agree = 0  # instances where the experiments trained what the simulation predicts
    with _measure.stopwatch() as t:
        for instance in range(args.instances):
            best = SyntheticCurves.best(instance=instance, configs=configs, epochs=epochs)
            folder = dict(
                instance=instance,
                configs=configs,
                epochs=epochs,
                concurrency=configs,
                noise=args.noise,
            )
            grid_root = write_folder(workdir / f"grid-{instance}", pruning=None, **folder)
            asha_root = write_folder(workdir / f"asha-{instance}", pruning=block, **folder)
            runs = planned_losses(grid_root)
            simulated = simulate(runs, args.rule, max_t=epochs)
            if args.simulate:
                grid_outcome, asha_outcome = full_grid(runs), simulated
            else:
                grid_outcome = await run_sweep(grid_root, workdir / "ws")
                asha_outcome = await run_sweep(asha_root, workdir / "ws")
                agree += asha_outcome.trained == simulated.trained
            outcomes.append((best, grid_outcome, asha_outcome))
    mode = "simulated" if args.simulate else "experiments"
    extra = {} if args.simulate else {"epochs_as_simulated": agree}
    emit_efficiency(mode, outcomes, t.wall, params, configs * epochs, **extra)


async def timing(args: argparse.Namespace, workdir: Path) -> None:
    """Sequential against arrival: the wall time of ASHA sweeps at 8 slots with random sleeps."""
    configs, epochs, count = args.configs, args.epochs, args.timing_instances
    walls: dict[str, list[float]] = {"sequential": [], "arrival": []}
    epochs_trained: dict[str, int] = {"sequential": 0, "arrival": 0}
    for attempt in range(_measure.REPEATS):
        for determinism in ("sequential", "arrival"):
            block = pruning_block(determinism, args.rule, epochs)
            total = 0.0
            for instance in range(count):
                root = write_folder(
                    workdir / f"timing-{determinism}-{attempt}-{instance}",
                    instance=instance,
                    configs=configs,
                    epochs=epochs,
                    pruning=block,
                    concurrency=8,
                    sleep=SLEEP,
                )
                with _measure.stopwatch() as t:
                    outcome = await run_sweep(root, workdir / "ws")
                total += t.wall
                if attempt == 0:
                    epochs_trained[determinism] += outcome.epochs
            walls[determinism].append(total)
    ratio = min(walls["sequential"]) / min(walls["arrival"])
    params = {
        "configs": configs,
        "epochs": epochs,
        "instances": count,
        "max_concurrency": 8,
        "sleep_s": list(SLEEP),
        "rule": args.rule,
    }
    for determinism in ("sequential", "arrival"):
        _measure.emit(
            "pruning",
            f"wall time at 8 slots, {determinism}",
            params={**params, "determinism": determinism},
            wall_s=walls[determinism],
            items=epochs_trained[determinism] or 1,
            item="epoch",
        )
    _measure.emit(
        "pruning",
        "wall time at 8 slots, sequential / arrival",
        params=params,
        wall_s=min(walls["sequential"]),
        items=count,
        item="instance",
        result=("sequential / arrival", ratio, "x"),
        target=("<=", 1.25),
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=_measure.size(40, 2))
    parser.add_argument("--determinism", choices=("sequential", "arrival"), default="sequential")
    parser.add_argument("--rule", choices=("ray", "optuna"), default="ray")
    parser.add_argument("--noise", type=float, default=NOISE, help="the curves' noise (std)")
    parser.add_argument(
        "--simulate", action="store_true", help="the pure simulation, no experiments"
    )
    parser.add_argument("--timing-instances", type=int, default=_measure.size(5, 1))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (as EXPMAN_BENCH_SMOKE=1)")
    args = parser.parse_args(argv)
    args.configs = _measure.size(CONFIGS, 9)
    args.epochs = _measure.size(EPOCHS, 9)
    return args


async def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        await efficiency(args, workdir)
        if not args.simulate and args.timing_instances > 0:
            await timing(args, workdir)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
