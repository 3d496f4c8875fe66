"""Sweep expansion against the field's oracles: Ray Tune's variant generator, Hydra's sweeper.

A seeded generator writes 50 grid specs (plain lists, ``choice`` and integer
``range`` axes on flat and dotted keys); for each, the set of settings expman's plan
holds equals the set Ray Tune's ``generate_variants`` makes of ``tune.grid_search``
axes, and the set Hydra's ``BasicSweeper.split_arguments`` makes of ``key=a,b,c`` /
``key=choice(...)`` / ``key=range(...)`` overrides.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from expman.config import load_plan

#: Swept keys (none a prefix of another) and the settings they exist in.
KEYS = ("lr", "bs", "model.depth", "model.width", "opt.name", "opt.beta.one", "act")
BASE = {
    "lr": 0.0,
    "bs": 0,
    "model": {"depth": 0, "width": 0},
    "opt": {"name": "", "beta": {"one": 0.0}},
    "act": "",
    "fixed": "kept",
}
WORDS = ("relu", "gelu", "tanh", "adam", "sgd", "lamb", "mish", "silu")


def random_spec(rng: random.Random) -> list[tuple[str, str, list[Any]]]:
    """Axes ``(key, form, values)``: form is list, choice or range ([start, stop, step])."""
    axes = []
    for key in rng.sample(KEYS, rng.randint(1, 4)):
        form = rng.choice(("list", "choice", "range"))
        if form == "range":
            start, step = rng.randint(-5, 5), rng.randint(1, 3)
            axes.append((key, form, [start, start + step * rng.randint(1, 4), step]))
            continue
        kind = rng.choice(("int", "float", "word"))
        n = rng.randint(1, 4)
        if kind == "int":
            values: list[Any] = rng.sample(range(-50, 50), n)
        elif kind == "float":
            values = [v / 4 for v in rng.sample(range(1, 40), n)]
        else:
            values = rng.sample(WORDS, n)
        axes.append((key, form, values))
    return axes


def expman_settings(root: Path, axes: list[tuple[str, str, list[Any]]]) -> list[str]:
    grid: dict[str, Any] = {}
    for key, form, values in axes:
        grid[key] = values if form == "list" else {form: values}
    (root / "experiment.yaml").write_bytes(
        orjson.dumps({"name": "oracle", "id": 1, "settings": BASE})
    )
    (root / "trials.yaml").write_bytes(
        orjson.dumps([{"name": "t", "id": 1, "sweep": {"grid": grid}}])
    )
    return canonical(dict(t.settings) for t in load_plan(root).trials)


def with_values(values: dict[str, Any]) -> dict[str, Any]:
    settings = copy.deepcopy(BASE)
    for key, value in values.items():
        node = settings
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return settings


def points(form: str, values: list[Any]) -> list[Any]:
    return list(range(*values)) if form == "range" else list(values)


def ray_settings(axes: list[tuple[str, str, list[Any]]]) -> list[str]:
    from ray import tune
    from ray.tune.search.variant_generator import generate_variants

    spec = copy.deepcopy(BASE)
    for key, form, values in axes:
        node = spec
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = tune.grid_search(points(form, values))
    return canonical(resolved for _, resolved in generate_variants(spec))


def hydra_settings(axes: list[tuple[str, str, list[Any]]]) -> list[str]:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    def text(value: Any) -> str:
        return str(value)

    overrides = []
    for key, form, values in axes:
        if form == "range":
            overrides.append(f"{key}=range({','.join(map(text, values))})")
        elif form == "choice":
            overrides.append(f"{key}=choice({','.join(map(text, values))})")
        elif len(values) == 1:  # one value is no sweep for Hydra: choice() makes it one
            overrides.append(f"{key}=choice({text(values[0])})")
        else:
            overrides.append(f"{key}={','.join(map(text, values))}")
    parser = OverridesParser.create()
    (batch,) = BasicSweeper.split_arguments(parser.parse_overrides(overrides), None)
    jobs = []
    for job in batch:
        parsed = parser.parse_overrides(job)
        jobs.append(with_values({o.key_or_group: o.value() for o in parsed}))
    return canonical(jobs)


def canonical(settings: Any) -> list[str]:
    """Each settings mapping as sorted-key JSON (expman's pipeline key left out), sorted."""
    out = []
    for s in settings:
        s = {k: v for k, v in s.items() if k != "pipeline"}
        out.append(orjson.dumps(s, option=orjson.OPT_SORT_KEYS).decode())
    return sorted(out)


SPECS = [random_spec(random.Random(f"oracle/{i}")) for i in range(50)]


@pytest.mark.parametrize(
    "oracle", [pytest.param(ray_settings, id="ray"), pytest.param(hydra_settings, id="hydra")]
)
def test_grid_expansion_matches_the_oracle(
    make_experiment: Callable[..., Path],
    oracle: Callable[[list[tuple[str, str, list[Any]]]], list[str]],
) -> None:
    """For 50 random grid specs the expanded settings are exactly the oracle's, no more, no less."""
    root = make_experiment()
    sizes = []
    for axes in SPECS:
        ours = expman_settings(root, axes)
        theirs = oracle(axes)
        assert ours == theirs, axes
        assert len(set(ours)) == len(ours)
        sizes.append(len(ours))
    assert max(sizes) >= 16  # the generator makes real products, not only single points
