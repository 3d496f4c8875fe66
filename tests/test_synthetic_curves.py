"""SyntheticCurves: real experiments report the known curves, on every executor and after a crash.

The oracle is the curve family itself (``expman.testing.synthetic.curve``): every value a
run reports is ``Curve.noisy_loss(epoch, run seed, noise)``, computed here without
running anything, and ``SyntheticCurves.best`` must name the trial a full run ranks first.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import expman
from expman.testing import SyncSyntheticCurves, SyntheticCurves
from expman.testing.synthetic import curve

from .conftest import run_cli
from .test_resume import start_cli, wait_for

CHECKPOINT_EVERY_EPOCH = {"type": "CheckpointCallback", "interval": 1, "save_last": True}


def write_curves(
    root: Path,
    *,
    configs: int = 3,
    epochs: int = 4,
    instance: int = 0,
    repeat: int = 1,
    executor: str = "async",
    kind: str = "expman.testing.SyntheticCurves",
    concurrency: int = 4,
    callbacks: list[dict[str, Any]] | None = None,
    **pipeline: Any,
) -> Path:
    """An experiment of ``configs`` trials ``c0``, ``c1``, ... (a sweep of pipeline.config)."""
    root.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "seed": 0,
        "pipeline": {
            "type": kind,
            "config": 0,
            "configs": configs,
            "instance": instance,
            "epochs": epochs,
            **pipeline,
        },
    }
    if callbacks:
        settings["callbacks"] = callbacks
    trial = {
        "name": "c",
        "id": 1,
        "repeat": repeat,
        "sweep": {
            "name": "c{pipeline.config}",
            "grid": {"pipeline.config": {"range": [0, configs]}},
        },
    }
    documents = {
        "experiment.yaml": {"name": "exp", "id": 1, "desc": "curves", "settings": {}},
        "base.yaml": {"settings": settings},
        "trials.yaml": [trial],
        "env.yaml": {"execution": {"executor": executor, "max_concurrency": concurrency}},
    }
    for name, data in documents.items():
        (root / name).write_text(yaml.safe_dump(data, sort_keys=False))
    return root


def expected_losses(results: expman.Results, *, instance: int, noise: float) -> dict[Any, list]:
    """What each run of ``results`` must have reported, from the curves and the run's seed."""
    expected = {}
    for run in results.runs:
        shape = curve(instance, int(run.trial.removeprefix("c")))
        expected[(run.trial, run.repeat)] = [
            shape.noisy_loss(epoch, run.seed, noise) for epoch in range(run.epochs)
        ]
    return expected


def reported_losses(results: expman.Results) -> dict[Any, list]:
    return {key: [v for _, v in points] for key, points in results.history("val_loss").runs.items()}


class TestTheFamily:
    def test_the_curves_come_from_the_instance_alone_in_any_process(self) -> None:
        """A fresh interpreter with another hash seed draws the same curves; instances differ."""
        here = [curve(3, c) for c in range(5)]
        code = (
            "from expman.testing.synthetic import curve;"
            "print([[c.final, c.scale, c.rate] for c in (curve(3, k) for k in range(5))])"
        )
        env = {**os.environ, "PYTHONHASHSEED": "12345"}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        assert json.loads(done.stdout) == [[c.final, c.scale, c.rate] for c in here]
        assert [curve(4, c) for c in range(5)] != here

    def test_curves_cross_so_the_early_leader_is_not_always_the_best(self) -> None:
        """Over 20 instances of 81 configurations, curves cross: the leader after one epoch
        is often not the best at 81 epochs, the best at 81 epochs is not always the lowest
        plateau, and every best is among the better third after one epoch more often than not."""
        early_leader_wins = best_is_lowest_plateau = best_in_top_third_early = 0
        for instance in range(20):
            shapes = [curve(instance, c) for c in range(81)]
            best = SyntheticCurves.best(instance=instance, configs=81, epochs=81)
            assert best == min(range(81), key=lambda c: shapes[c].loss(80))
            first = sorted(range(81), key=lambda c: shapes[c].loss(0))
            early_leader_wins += first[0] == best
            best_is_lowest_plateau += best == SyntheticCurves.best(instance=instance, configs=81)
            best_in_top_third_early += first.index(best) < 27
            crossing = [
                (a, b)
                for a in range(81)
                for b in range(81)
                if shapes[a].loss(0) < shapes[b].loss(0) and shapes[a].loss(80) > shapes[b].loss(80)
            ]
            assert crossing, f"instance {instance}: no two curves cross"
        assert early_leader_wins < 20
        assert best_is_lowest_plateau < 20
        assert best_in_top_third_early > 10

    def test_noise_is_per_seed_and_epoch_and_zero_noise_is_the_curve(self) -> None:
        """Two seeds give different noise around the same curve; noise 0 is the curve itself."""
        shape = curve(0, 7)
        assert shape.noisy_loss(5, seed=1, noise=0.0) == shape.loss(5)
        one = [shape.noisy_loss(t, seed=1, noise=0.01) for t in range(10)]
        assert one == [shape.noisy_loss(t, seed=1, noise=0.01) for t in range(10)]
        assert one != [shape.noisy_loss(t, seed=2, noise=0.01) for t in range(10)]
        assert all(abs(v - shape.loss(t)) < 0.06 for t, v in enumerate(one))


class TestRuns:
    async def test_a_full_run_reports_the_curves_and_best_names_its_winner(
        self, tmp_path: Path
    ) -> None:
        """Nine configurations by their registered name, noise 0: every epoch is the curve's
        value, and the trial ranked first is the one SyntheticCurves.best names."""
        root = write_curves(
            tmp_path / "configs", configs=9, epochs=6, kind="SyntheticCurves", noise=0
        )
        result = await expman.run_experiment(root, workspace=tmp_path / "ws")
        assert result.status == "completed"
        results = expman.load_results(tmp_path / "ws" / "exp")
        assert reported_losses(results) == expected_losses(results, instance=0, noise=0)
        assert {run.epochs for run in results.runs} == {6}
        best = SyntheticCurves.best(instance=0, configs=9, epochs=6)
        assert results.best_trial("val_loss").trial == f"c{best}"
        assert results.best_trial("score").trial == f"c{best}"  # exp(-loss): max mode
        (run,) = [r for r in results.runs if r.trial == f"c{best}"]
        assert run.metrics["best_val_loss"] == curve(0, best).loss(5)

    @pytest.mark.parametrize(
        ("executor", "kind"),
        [
            ("async", "expman.testing.SyntheticCurves"),
            ("thread", "expman.testing.SyncSyntheticCurves"),
            ("process", "expman.testing.SyntheticCurves"),
            ("process", "expman.testing.SyncSyntheticCurves"),
        ],
    )
    async def test_every_executor_reports_the_same_values(
        self, tmp_path: Path, executor: str, kind: str
    ) -> None:
        """With noise and random sleeps, 2 configurations x 2 repeats report exactly the
        curves' values for their seeds, whatever the executor and the pipeline's kind."""
        root = write_curves(
            tmp_path / "configs",
            configs=2,
            repeat=2,
            epochs=4,
            executor=executor,
            kind=kind,
            noise=0.01,
            sleep=[0.0, 0.01],
        )
        result = await expman.run_experiment(root, workspace=tmp_path / "ws")
        assert result.status == "completed", result.counts
        results = expman.load_results(tmp_path / "ws" / "exp")
        reported = reported_losses(results)
        assert len(reported) == 4
        assert reported == expected_losses(results, instance=0, noise=0.01)
        seeds = {run.seed for run in results.runs}
        assert len(seeds) == 4  # repeats differ in seed, hence in noise
        assert reported[("c0", 0)] != reported[("c0", 1)]

    @pytest.mark.slow
    def test_a_run_killed_and_resumed_from_its_checkpoint_reports_what_one_never_killed_does(
        self, tmp_path: Path
    ) -> None:
        """kill -9 after a checkpoint, then resume: the run starts from the checkpoint, and
        its epochs and result (the lowest value, reported before the kill and held in the
        checkpoint) equal an uninterrupted run's."""
        epochs, noise = 16, 1.0  # loud noise: the lowest value comes before the kill
        options: dict[str, Any] = dict(
            configs=1, epochs=epochs, noise=noise, callbacks=[CHECKPOINT_EVERY_EPOCH]
        )
        reference_root = write_curves(tmp_path / "reference", **options)
        done = run_cli("run", str(reference_root), "-w", str(tmp_path / "ws-reference"))
        assert done.returncode == 0, done.stderr
        expected = expman.load_results(tmp_path / "ws-reference" / "exp")
        (reference_run,) = expected.runs
        reference_values = reported_losses(expected)[("c0", 0)]
        lowest = reference_values.index(min(reference_values))
        kill_after = lowest + 1  # the checkpoint of this epoch holds the lowest value
        assert kill_after < epochs - 2, "the test needs the lowest value well before the end"

        root = write_curves(tmp_path / "configs", sleep=0.15, **options)
        workspace = tmp_path / "ws"
        events = workspace / "exp" / "logs" / "events.jsonl"

        def checkpointed() -> bool:
            if not events.exists():
                return False
            lines = events.read_text().splitlines()
            return any('"CheckpointStaged"' in x and f'"epoch":{kill_after}' in x for x in lines)

        proc = start_cli(root, workspace)
        try:
            wait_for(checkpointed)
        finally:
            proc.kill()
            proc.wait()
        done = run_cli("run", str(root), "-w", str(workspace))
        assert done.returncode == 0, done.stderr
        results = expman.load_results(workspace / "exp")
        (run,) = results.runs
        assert run.status == "completed"
        assert run.attempts == 2
        assert kill_after < run.epochs_trained < 2 * epochs  # resumed, not retrained from scratch
        assert reported_losses(results)[("c0", 0)] == reference_values
        assert run.metrics["best_val_loss"] == reference_run.metrics["best_val_loss"]
        assert run.metrics["best_val_loss"] == reference_values[lowest]
        starts = [json.loads(x) for x in events.read_text().splitlines() if '"RunStarted"' in x]
        assert [s["start_epoch"] > 0 for s in starts] == [False, True]


class TestSettings:
    @pytest.mark.parametrize(
        ("key", "value", "expected"),
        [
            ("config", 3, "expected 0 <= config < configs (3), got 3"),
            ("sleep", [0.2, 0.1], "expected seconds >= 0 or a range [lo, hi]"),
            ("noise", -1, "expected a number >= 0"),
            ("epochs", 2.5, "expected an integer"),
        ],
    )
    def test_a_setting_it_cannot_use_is_a_config_error_naming_the_key(
        self, tmp_path: Path, key: str, value: Any, expected: str
    ) -> None:
        """`expman run` exits 2 with one message naming base.yaml, the key and what was
        expected; no traceback, no workspace."""
        root = write_curves(tmp_path / "configs", configs=3)
        base = yaml.safe_load((root / "base.yaml").read_text())
        base["settings"]["pipeline"][key] = value
        (root / "base.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
        if key == "config":  # the sweep sets config: sweep values inside the range only
            trials = yaml.safe_load((root / "trials.yaml").read_text())
            del trials[0]["sweep"]
            (root / "trials.yaml").write_text(yaml.safe_dump(trials, sort_keys=False))
        done = run_cli("run", str(root), "-w", str(tmp_path / "ws"))
        assert done.returncode == 2, done.stderr
        assert "base.yaml" in done.stderr
        assert f"pipeline.{key}" in done.stderr
        assert expected in done.stderr
        assert "Traceback" not in done.stderr
        assert not (tmp_path / "ws" / "exp").exists()

    def test_both_kinds_build_from_the_same_settings(self) -> None:
        """The async and the sync pipeline take the same settings and draw the same curve."""
        settings = {"config": 2, "configs": 5, "instance": 9, "epochs": 3, "sleep": 0.0}
        assert SyntheticCurves(**settings).curve == SyncSyntheticCurves(**settings).curve
        assert SyntheticCurves(**settings).curve == curve(9, 2)
        assert math.isclose(SyntheticCurves(**settings).curve.loss(0), curve(9, 2).loss(0))


def sequential_asha(losses: list[list[float]], rungs: list[int], rf: int) -> list[int]:
    """Epochs each run trains under Ray's ASHA rule, the runs one after another in order."""
    recorded: dict[int, list[float]] = {rung: [] for rung in rungs}
    trained = []
    for curve_losses in losses:
        done = 0
        for done, loss in enumerate(curve_losses, start=1):
            if done not in recorded:
                continue
            earlier = recorded[done]
            cutoff = (
                np.nanpercentile([-x for x in earlier], (1 - 1 / rf) * 100) if earlier else None
            )
            earlier.append(loss)
            if cutoff is not None and -loss < cutoff and done < len(curve_losses):
                break
        trained.append(done)
    return trained


class TestUnderPruning:
    async def test_asha_stops_the_curves_at_their_rungs_as_sequential_asha_predicts(
        self, tmp_path: Path
    ) -> None:
        """27 configurations x 9 epochs under ASHA (rf 3) at 8 slots with random sleeps: a
        pruned run stops at the epoch of its rung's decision, and every run trains what
        sequential ASHA computed on the curves' values predicts."""
        root = write_curves(
            tmp_path / "configs", configs=27, epochs=9, concurrency=8, sleep=[0.0, 0.003]
        )
        experiment = yaml.safe_load((root / "experiment.yaml").read_text())
        experiment["pruning"] = {
            "type": "asha",
            "metric": "val_loss",
            "grace_period": 1,
            "reduction_factor": 3,
            "max_epochs": 9,
        }
        (root / "experiment.yaml").write_text(yaml.safe_dump(experiment, sort_keys=False))
        result = await expman.run_experiment(root, workspace=tmp_path / "ws")
        assert result.status == "completed", result.counts
        results = expman.load_results(tmp_path / "ws" / "exp")
        runs = sorted(results.runs, key=lambda r: int(r.trial.removeprefix("c")))
        expected = expected_losses(results, instance=0, noise=0.01)
        full = [
            [curve(0, c).noisy_loss(t, run.seed, 0.01) for t in range(9)]
            for c, run in enumerate(runs)
        ]
        assert [run.epochs for run in runs] == sequential_asha(full, [1, 3, 9], 3)
        assert {run.status for run in runs if run.epochs < 9} == {"pruned"}
        assert {run.status for run in runs if run.epochs == 9} == {"completed"}
        assert 0 < sum(run.epochs < 9 for run in runs) < 27
        assert reported_losses(results) == expected  # a pruned run's epochs are the curve's
