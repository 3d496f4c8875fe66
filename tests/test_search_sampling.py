"""Adaptive search, the core: the search block in the plan, and what the samplers suggest.

The runtime's side (journaling, admission, resume) is tests/test_search_runtime.py;
here everything is a pure function: a real config folder in tmp_path goes through
``load_plan``, and ``suggest`` is called in loops, in this process and in others.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import textwrap
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import yaml

from expman.config import config_hash, load_plan, sampled_runs, sampled_trial, with_sampled
from expman.config.distributions import Distribution
from expman.config.search import SearchSpec
from expman.search import Told, suggest

from .conftest import write_yaml

SOURCE = str(Path(__file__).resolve().parents[1])

SPACE = {
    "lr": {"loguniform": [1.0e-5, 1.0e-1]},
    "depth": {"randint": [2, 9]},
    "act": {"choice": ["relu", "gelu", [1, 2]]},
    "model.dropout": {"uniform": [0.0, 0.5]},
}
SETTINGS = {"lr": 0.1, "depth": 2, "act": "relu", "model": {"dropout": 0.0, "width": 8}}
HAS_TORCH = find_spec("torch") is not None
SAMPLERS = [
    "random",
    "tpe",
    "cmaes",
    pytest.param("gp", marks=pytest.mark.skipif(not HAS_TORCH, reason="gp needs torch")),
]


def search_block(**changes: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "sampler": {"type": "tpe", "seed": 7},
        "metric": "val_loss",
        "mode": "min",
        "trials": 6,
        "lag": 2,
        "space": SPACE,
    }
    block.update(changes)
    return block


@pytest.fixture
def searching(make_experiment: Callable[..., Path]) -> Callable[..., Path]:
    """An experiment folder whose experiment.yaml has a search block."""

    def make(block: dict[str, Any] | None = None, **kwargs: Any) -> Path:
        root = make_experiment(**kwargs)
        experiment = yaml.safe_load((root / "experiment.yaml").read_text())
        experiment["settings"] = {**SETTINGS, **experiment.get("settings", {})}
        experiment["search"] = block if block is not None else search_block()
        write_yaml(root / "experiment.yaml", experiment)
        return root

    return make


def objective(values: dict[str, Any]) -> float:
    """A synthetic loss, lowest at lr 1e-3, depth 6, gelu and dropout 0.1."""
    act = values["act"]
    return (
        (math.log10(values["lr"]) + 3) ** 2 / 4
        + ((values["depth"] - 6) / 4) ** 2
        + (0.0 if act == "gelu" else 0.4)
        + ((values["model.dropout"] - 0.1) / 0.5) ** 2
    )


def run_search(spec: SearchSpec, study: str, f: Callable[[dict[str, Any]], float]) -> list[Told]:
    """Every trial of one study, sampled in number order as the runtime would with ``lag``."""
    history: list[Told] = []
    for number in range(spec.trials):
        told = [t for t in history if t.number <= number - spec.lag]
        values = suggest(spec, study, number, told)
        history.append(Told(number, values, "complete", f(values)))
    return history


def spec_of(root: Path) -> SearchSpec:
    plan = load_plan(root)
    assert plan.search is not None
    return plan.search


# -- the plan ---------------------------------------------------------------------


def test_every_entry_stands_for_its_studys_placeholder_trials(
    searching: Callable[..., Path],
) -> None:
    """Each entry makes `trials` placeholders <name>-<n:04d>, id <id>.<n>, with its settings."""
    root = searching(
        trials=[{"name": "a", "id": 1, "repeat": 2}, {"name": "b", "id": "x", "resources": {}}]
    )
    plan = load_plan(root)
    names = [t.name for t in plan.trials]
    assert names == [f"a-{n:04d}" for n in range(6)] + [f"b-{n:04d}" for n in range(6)]
    assert [t.id for t in plan.trials[:2]] == ["1.0", "1.1"]
    assert {t.study for t in plan.trials} == {"1", "x"}
    assert [t.search_number for t in plan.trials[6:]] == list(range(6))
    assert all(t.is_placeholder for t in plan.trials)
    assert plan.trials[0].settings["lr"] == 0.1  # the entry's own, not sampled yet
    assert len({t.config_hash for t in plan.trials}) == 12
    assert [r.label for r in plan.runs[:3]] == ["a-0000/run_0", "a-0000/run_1", "a-0001/run_0"]
    assert len(plan.runs) == 6 * 2 + 6


def test_resolved_yaml_records_the_search_block_with_its_defaults(
    searching: Callable[..., Path],
) -> None:
    """describe() lists the block (lag, mode, seed filled in) and each trial as a placeholder."""
    block = search_block(mode=None, lag=None, sampler="random")
    del block["mode"], block["lag"]
    root = searching(block, env={"execution": {"max_concurrency": 3}})
    described = load_plan(root).describe()
    assert described["search"] == {
        "sampler": {"type": "random", "seed": 0},
        "metric": "val_loss",
        "mode": "min",
        "trials": 6,
        "lag": 3,
        "space": SPACE,
    }
    assert described["trials"][1]["search"] == {"study": "1", "number": 1, "sampled": None}
    assert load_plan(root, overrides=["execution.max_concurrency=5"]).search.lag == 5  # type: ignore[union-attr]


def test_sampled_trial_puts_the_values_above_every_layer(
    searching: Callable[..., Path],
) -> None:
    """Sampled settings hold the values (interpolations see them), with a new hash, same seeds."""
    root = searching(
        trials=[{"name": "a", "id": 1, "repeat": 3, "settings": {"x": "${settings.lr}"}}]
    )
    plan = load_plan(root)
    values = {"lr": 0.003, "depth": 5, "act": [1, 2], "model.dropout": 0.25}
    trial = sampled_trial(plan, "a-0002", values)
    assert trial.settings["lr"] == 0.003
    assert trial.settings["x"] == 0.003
    assert trial.settings["model"] == {"dropout": 0.25, "width": 8}
    assert trial.settings["act"] == [1, 2]
    assert (trial.name, trial.id, trial.index, trial.repeat) == ("a-0002", "1.2", 2, 3)
    assert (trial.study, trial.search_number, trial.sampled) == ("1", 2, values)
    assert not trial.is_placeholder
    assert trial.config_hash not in {t.config_hash for t in plan.trials}
    assert sampled_trial(plan, "a-0002", dict(values)).config_hash == trial.config_hash
    placeholder_seeds = [r.seed for r in plan.runs if r.trial.name == "a-0002"]
    assert [r.seed for r in sampled_runs(plan, trial)] == placeholder_seeds
    materialised = with_sampled(plan, {"a-0002": values})
    assert [r.trial.config_hash for r in materialised.runs[6:9]] == [trial.config_hash] * 3
    assert [r.seed for r in materialised.runs] == [r.seed for r in plan.runs]
    assert materialised.trials[1] is plan.trials[1]


def test_sampled_trial_refuses_what_the_plan_does_not_hold(
    searching: Callable[..., Path],
) -> None:
    """An unknown trial, a trial of no search or a value at no setting is a ValueError."""
    plan = load_plan(searching())
    with pytest.raises(ValueError, match="no trial named 'zz'"):
        sampled_trial(plan, "zz", {"lr": 0.1})
    with pytest.raises(ValueError, match="'nope' is not a setting of trial 'a-0000'"):
        sampled_trial(plan, "a-0000", {"nope": 1})


# -- suggest ----------------------------------------------------------------------

DETERMINISM_SCRIPT = textwrap.dedent(
    """
    import json, math, sys
    from expman.config import load_plan
    from expman.config.search import SearchSpec
    from expman.search import Told, suggest
    from dataclasses import replace

    spec = load_plan(sys.argv[1]).search
    out = {}
    for sampler in sys.argv[2:]:
        s = replace(spec, sampler=sampler, options={}, trials=14)
        history = []
        for n in range(s.trials):
            v = suggest(s, "1", n, [t for t in history if t.number <= n - s.lag])
            loss = math.log10(v["lr"]) ** 2 + v["depth"] + v["model.dropout"]
            history.append(Told(n, v, "failed" if n % 5 == 3 else "complete", loss))
        out[sampler] = [t.values for t in history]
    print(json.dumps(out, sort_keys=True))
    """
)


@pytest.mark.slow
def test_suggestions_are_the_same_in_any_process(searching: Callable[..., Path]) -> None:
    """Three processes under three PYTHONHASHSEEDs suggest the same sequences, per sampler."""
    root = searching()
    samplers = ["random", "tpe", "cmaes", *(["gp"] if HAS_TORCH else [])]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DETERMINISM_SCRIPT, str(root), *samplers],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": hashseed, "PYTHONPATH": SOURCE},
        )
        for hashseed in ("0", "1", "12345")
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out)
    assert outputs[0] == outputs[1] == outputs[2]
    sequences = json.loads(outputs[0])
    for sampler in samplers:  # not one value drawn again and again
        assert len({json.dumps(v, sort_keys=True) for v in sequences[sampler]}) == 14


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_history_past_number_minus_lag_is_never_read(
    searching: Callable[..., Path], sampler: str
) -> None:
    """Trials after n - lag, finished or not, in any order, change nothing of trial n's values."""
    options = {"n_startup_trials": 2} if sampler == "tpe" else {}
    base = _fields(spec_of(searching()))
    spec = SearchSpec(**{**base, "sampler": sampler, "lag": 3, "trials": 12, "options": options})
    history = run_search(spec, "1", objective)
    number = 12
    allowed = [t for t in history if t.number <= number - spec.lag]
    expected = suggest(spec, "1", number, allowed)
    later = [Told(t.number, t.values, "complete", -1e9) for t in history[number - 2 :]]
    assert suggest(spec, "1", number, list(reversed(allowed)) + later) == expected
    if sampler != "random":  # while what it may read does matter
        worse = [Told(t.number, t.values, "complete", -t.value) for t in allowed]  # type: ignore[operator]
        assert suggest(spec, "1", number, worse) != expected


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_stays_inside_the_space(searching: Callable[..., Path], sampler: str) -> None:
    """Every value lies in its dimension: ints in [lo, hi), floats in [lo, hi], choices as given."""
    spec = SearchSpec(
        **{**_fields(spec_of(searching())), "sampler": sampler, "lag": 1, "trials": 25}
    )
    for told in run_search(spec, "study-a", objective):
        values = told.values
        assert list(values) == list(SPACE)
        assert 1e-5 <= values["lr"] <= 1e-1
        assert type(values["depth"]) is int
        assert 2 <= values["depth"] < 9
        assert values["act"] in ("relu", "gelu", [1, 2])
        assert type(values["model.dropout"]) is float
        assert 0.0 <= values["model.dropout"] <= 0.5


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_a_nan_metric_is_told_as_a_failed_trial(
    searching: Callable[..., Path], sampler: str
) -> None:
    """NaN and infinite values are failures to the sampler, not the best results ever."""
    spec = SearchSpec(**{**_fields(spec_of(searching())), "sampler": sampler, "lag": 1})
    history = run_search(spec, "1", objective)[:4]
    for bad in (math.nan, -math.inf):
        told = [*history[:3], Told(3, history[3].values, "complete", bad)]
        failed = [*history[:3], Told(3, history[3].values, "failed", None)]
        assert suggest(spec, "1", 4, told) == suggest(spec, "1", 4, failed)


def test_studies_and_seeds_draw_apart(searching: Callable[..., Path]) -> None:
    """Another study, or another seed, gets other values; the same ones get the same."""
    spec = spec_of(searching(search_block(sampler={"type": "random", "seed": 3})))
    first = suggest(spec, "1", 0, [])
    assert suggest(spec, "1", 0, []) == first
    assert suggest(spec, "2", 0, []) != first
    assert suggest(SearchSpec(**{**_fields(spec), "seed": 4}), "1", 0, []) != first


def test_sampler_options_reach_optuna(searching: Callable[..., Path]) -> None:
    """n_startup_trials: 2 makes TPE model from the third trial; the default waits for ten."""
    spec = spec_of(searching(search_block(sampler={"type": "tpe", "n_startup_trials": 2})))
    default = SearchSpec(**{**_fields(spec), "options": {}})
    history = run_search(SearchSpec(**{**_fields(spec), "lag": 1, "trials": 4}), "1", objective)
    assert suggest(spec, "1", 4, history) != suggest(default, "1", 4, history)


@pytest.mark.slow
def test_tpe_beats_random_search_on_a_six_dimensional_objective() -> None:
    """Over 20 seeds, the median best of 50 TPE trials is below that of 50 random ones."""
    space = {
        "lr": Distribution("loguniform", (1e-5, 1e-1)),
        "wd": Distribution("loguniform", (1e-6, 1e-2)),
        "depth": Distribution("randint", (1, 11)),
        "act": Distribution("choice", ("relu", "gelu", "tanh")),
        "dropout": Distribution("uniform", (0.0, 0.5)),
        "momentum": Distribution("uniform", (0.8, 1.0)),
    }

    def loss(v: dict[str, Any]) -> float:
        return (
            (math.log10(v["lr"]) + 3) ** 2 / 4
            + (math.log10(v["wd"]) + 4) ** 2 / 4
            + ((v["depth"] - 6) / 5) ** 2
            + {"relu": 0.3, "gelu": 0.0, "tanh": 0.6}[v["act"]]
            + 2 * ((v["dropout"] - 0.1) / 0.5) ** 2
            + 2 * ((v["momentum"] - 0.9) / 0.2) ** 2
        )

    medians = {}
    for sampler in ("random", "tpe"):
        bests = []
        for seed in range(20):
            spec = SearchSpec(sampler, seed, "loss", "min", 50, 1, space)
            bests.append(min(t.value for t in run_search(spec, "1", loss) if t.value is not None))
        medians[sampler] = statistics.median(bests)
    assert medians["tpe"] < medians["random"], medians


def _fields(spec: SearchSpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in SearchSpec.__slots__}


def test_more_trials_keep_every_hash_and_sampled_hashes_are_their_settings(
    searching: Callable[..., Path],
) -> None:
    """Raising `trials` keeps names, ids, seeds, hashes; a sampled hash digests its settings."""
    values = {"lr": 0.003, "depth": 5, "act": "gelu", "model.dropout": 0.25}
    before = load_plan(searching())
    grown = load_plan(searching(search_block(trials=9)))
    assert [t.name for t in grown.trials[:6]] == [t.name for t in before.trials]
    assert [t.config_hash for t in grown.trials[:6]] == [t.config_hash for t in before.trials]
    assert [r.seed for r in grown.runs[:6]] == [r.seed for r in before.runs]
    sampled = sampled_trial(before, "a-0001", values)
    assert sampled_trial(grown, "a-0001", values).config_hash == sampled.config_hash
    assert sampled.config_hash == config_hash(sampled.settings)
    # A changed block is for the resume plan to refuse; accepted, finished trials stay done.
    lagged = load_plan(searching(search_block(lag=3)))
    assert sampled_trial(lagged, "a-0001", values).config_hash == sampled.config_hash


def test_cmaes_options_shape_its_steps(searching: Callable[..., Path]) -> None:
    """cmaes's sigma0 and popsize reach its optimizer: other values, other suggestions."""
    spec = spec_of(searching(search_block(sampler={"type": "cmaes", "popsize": 4})))
    assert spec.options == {"popsize": 4}
    wide = SearchSpec(**{**_fields(spec), "options": {"popsize": 4, "sigma0": 0.5}})
    history = run_search(SearchSpec(**{**_fields(spec), "lag": 1, "trials": 8}), "1", objective)
    assert suggest(spec, "1", 9, history) != suggest(wide, "1", 9, history)
    default = SearchSpec(**{**_fields(spec), "options": {}})
    assert suggest(spec, "1", 9, history) != suggest(default, "1", 9, history)


def test_cmaes_searches_a_single_dimension(searching: Callable[..., Path]) -> None:
    """One numeric dimension (beside a choice) is searched by CMA-ES, not refused."""
    block = search_block(
        sampler={"type": "cmaes", "popsize": 4},
        lag=1,
        trials=24,
        space={"lr": SPACE["lr"], "act": SPACE["act"]},
    )
    spec = spec_of(searching(block))
    history = run_search(spec, "1", lambda v: (math.log10(v["lr"]) + 3) ** 2)
    assert all(1e-5 <= t.values["lr"] <= 1e-1 for t in history)
    first, last = history[:4], history[-4:]
    assert statistics.mean(t.value for t in last) < statistics.mean(t.value for t in first)  # type: ignore[misc]


def test_a_swept_entry_has_a_study_per_generated_trial(searching: Callable[..., Path]) -> None:
    """After sweep expansion each generated entry gets its own study; sampling keeps `swept`."""
    sweep = {"name": "w{model.width}", "grid": {"model.width": [8, 16]}}
    plan = load_plan(searching(trials=[{"name": "a", "id": 1, "sweep": sweep}]))
    names = [t.name for t in plan.trials]
    assert names == [f"w{w}-{n:04d}" for w in (8, 16) for n in range(6)]
    assert len({t.study for t in plan.trials}) == 2
    values = {"lr": 0.003, "depth": 5, "act": "gelu", "model.dropout": 0.25}
    trial = sampled_trial(plan, "w16-0003", values)
    assert trial.swept == {"model.width": 16}
    assert trial.settings["model"] == {"dropout": 0.25, "width": 16}
