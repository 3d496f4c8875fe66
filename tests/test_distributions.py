"""The distribution grammar of sweep axes: grid points, draws, and every mistake refused."""

from __future__ import annotations

import itertools
import math
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from expman.config.distributions import Distribution, parse_distribution
from expman.config.loading import YamlDocument, load_yaml
from expman.errors import ConfigError


def axis_doc(tmp_path: Path, body: str) -> YamlDocument:
    """A real YAML file holding one axis under ``grid.x`` (on line 2)."""
    path = tmp_path / "trials.yaml"
    path.write_text(f"grid:\n  x: {body}\n")
    return load_yaml(path)


def parsed(tmp_path: Path, body: str, *, grid: bool = True) -> Distribution:
    doc = axis_doc(tmp_path, body)
    return parse_distribution(doc, "grid.x", doc.data["grid"]["x"], grid=grid)


def refused(tmp_path: Path, body: str, *, grid: bool = True) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parsed(tmp_path, body, grid=grid)
    error = info.value
    assert error.file == str(tmp_path / "trials.yaml")
    assert error.line == 2
    assert error.key is not None
    assert error.key.startswith("grid.x")
    return error


@pytest.mark.parametrize(
    ("body", "points"),
    [
        ("[32, 64]", (32, 64)),
        ("{choice: [relu, gelu]}", ("relu", "gelu")),
        ("{range: [2, 8, 2]}", (2, 4, 6)),
        ("{range: [0, 3]}", (0, 1, 2)),
        ("{range: [5, 0, -2]}", (5, 3, 1)),
        ("{range: [0, 1, 0.25]}", (0.0, 0.25, 0.5, 0.75)),
        ("{range: [0, 0.3, 0.1]}", (0.0, 0.1, 0.2)),
        ("{uniform: [0.0, 1.0], num: 5}", (0.0, 0.25, 0.5, 0.75, 1.0)),
        ("{loguniform: [1.0e-4, 1.0e-1], num: 4}", (1e-4, 1e-3, 1e-2, 1e-1)),
        ("{randint: [3, 6]}", (3, 4, 5)),
    ],
)
def test_grid_points_of_every_form(tmp_path: Path, body: str, points: tuple[Any, ...]) -> None:
    """Each YAML form gives the documented grid points, in order, both ends where promised."""
    dist = parsed(tmp_path, body)
    got = dist.grid_points()
    assert len(got) == len(points) == dist.size()
    for a, b in zip(got, points, strict=True):
        if isinstance(b, float):
            assert math.isclose(a, b, rel_tol=1e-12)
        else:
            assert a == b
            assert type(a) is type(b)


def test_log_grid_ends_are_exact(tmp_path: Path) -> None:
    """A log-spaced grid's ends are the written bounds, bit for bit."""
    points = parsed(tmp_path, "{loguniform: [3.0e-5, 0.7], num: 7}").grid_points()
    assert points[0] == 3.0e-5
    assert points[-1] == 0.7
    assert all(a < b for a, b in itertools.pairwise(points))


def test_describe_gives_the_yaml_form_back(tmp_path: Path) -> None:
    """describe() is the form as written, and parsing it again gives the same distribution."""
    for i, body in enumerate(
        [
            "[1, 2]",
            "{choice: [a, b]}",
            "{range: [0, 10, 3]}",
            "{uniform: [0.0, 2.0], num: 3}",
            "{loguniform: [0.001, 0.1], num: 2}",
            "{randint: [0, 4]}",
        ]
    ):
        sub = tmp_path / str(i)
        sub.mkdir()
        dist = parsed(sub, body)
        doc = axis_doc(sub, body)
        again = parse_distribution(doc, "grid.x", dist.describe(), grid=True)
        assert again == dist


@pytest.mark.parametrize(
    ("body", "check"),
    [
        ("{choice: [relu, gelu]}", lambda v: v in ("relu", "gelu")),
        ("{range: [2, 8, 2]}", lambda v: v in (2, 4, 6)),
        ("{uniform: [0.0, 0.5]}", lambda v: isinstance(v, float) and 0.0 <= v <= 0.5),
        ("{loguniform: [1.0e-6, 1.0e-2]}", lambda v: 1e-6 <= v <= 1e-2),
        ("{randint: [0, 10]}", lambda v: isinstance(v, int) and 0 <= v < 10),
        ("{randint: [0, 1000000000000]}", lambda v: 0 <= v < 10**12),
    ],
)
def test_draws_stay_in_range(tmp_path: Path, body: str, check: Any) -> None:
    """Random draws fall where the distribution says (hi excluded for randint)."""
    dist = parsed(tmp_path, body, grid=False)
    rng = random.Random("draws")
    assert all(check(dist.sample(rng)) for _ in range(500))


def test_loguniform_draws_are_spread_in_log_space(tmp_path: Path) -> None:
    """Half of loguniform draws over [1e-6, 1e-2] fall below 1e-4, the log midpoint."""
    dist = parsed(tmp_path, "{loguniform: [1.0e-6, 1.0e-2]}", grid=False)
    rng = random.Random("log")
    below = sum(dist.sample(rng) < 1e-4 for _ in range(4000))
    assert 1800 < below < 2200


def test_draws_are_the_same_in_any_process(tmp_path: Path) -> None:
    """A str-seeded draw sequence is identical across processes and PYTHONHASHSEED values."""
    script = textwrap.dedent(
        """
        import random
        from expman.config.distributions import Distribution
        dists = [Distribution("loguniform", (1e-6, 1e-2)), Distribution("choice", ("a", "b", "c")),
                 Distribution("randint", (0, 100)), Distribution("uniform", (0.0, 1.0)),
                 Distribution("range", (0, 1, 0.1))]
        rng = random.Random("7/1/abc/0")
        print([d.sample(rng) for d in dists for _ in range(5)])
        """
    )
    outputs = set()
    for seed in ("0", "1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("{logunifrom: [1.0e-4, 1.0e-1]}", ["unknown distribution 'logunifrom'", "loguniform"]),
        ("{range: [0, 10, 0]}", ["step must not be 0"]),
        ("{range: [0, 10, -1]}", ["empty", "positive step"]),
        ("{range: [10, 0]}", ["empty", "negative step"]),
        ("{range: [3, 3]}", ["empty"]),
        ("{range: [0]}", ["[start, stop]"]),
        ("{range: [0, a]}", ["expected a number", "'a'"]),
        ("{loguniform: [0.0, 1.0], num: 3}", ["must be > 0"]),
        ("{loguniform: [-1.0, 1.0], num: 3}", ["must be > 0"]),
        ("{uniform: [1.0, 1.0], num: 3}", ["lo < hi"]),
        ("{uniform: [0.0, 1.0]}", ["num: N", "random block"]),
        ("{uniform: [0.0, 1.0, 2.0], num: 2}", ["[lo, hi]"]),
        ("{uniform: [0.0, .inf], num: 2}", ["finite"]),
        ("{uniform: [0.0, 1.0], num: 0}", ["integer >= 2"]),
        # One point could not include both ends, as the grammar promises.
        ("{loguniform: [1.0e-4, 1.0e-1], num: 1}", ["integer >= 2 (both ends are points)"]),
        ("{randint: [0, 2.5]}", ["expected an integer"]),
        ("{randint: [5, 5]}", ["lo < hi"]),
        ("{randint: [0, 10], num: 3}", ["'num'"]),
        ("{randint: [0, 100000000]}", ["at most 1,000,000"]),
        ("{choice: []}", ["non-empty list"]),
        ("{choice: [a], range: [0, 2]}", ["exactly one distribution"]),
        ("{num: 3}", ["expected one of"]),
        ("[]", ["at least one value"]),
        ("3", ["expected a list of values or a distribution", "an integer"]),
    ],
)
def test_mistakes_name_file_line_and_key(tmp_path: Path, body: str, words: list[str]) -> None:
    """Every malformed axis is one ConfigError naming the file, the line and the key."""
    error = refused(tmp_path, body)
    for word in words:
        assert word in str(error)


def test_random_axes_refuse_grid_only_forms(tmp_path: Path) -> None:
    """A random axis refuses a plain list (hinting at choice) and a 'num'."""
    assert "{choice: [...]}" in str(refused(tmp_path, "[1, 2]", grid=False))
    assert "'num' is for grid axes" in str(
        refused(tmp_path, "{uniform: [0.0, 1.0], num: 3}", grid=False)
    )


def test_continuous_without_num_has_no_grid_points() -> None:
    """grid_points() of a continuous distribution without num is a ValueError."""
    with pytest.raises(ValueError, match="num"):
        Distribution("uniform", (0.0, 1.0)).grid_points()
