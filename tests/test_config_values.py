"""Typed values as overrides: load_plan(values=...) with real config files in tmp_path."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from expman.config import load_plan
from expman.config.overrides import check_values
from expman.errors import ConfigError

from .conftest import write_yaml


class TestTypedValues:
    @pytest.mark.parametrize(
        "value",
        [
            None,
            0.25,
            1e-3,
            float("inf"),
            7,
            -3,
            True,
            False,
            "text",
            "None",
            [1, "two", None, [3.5]],
            {"depth": {"more": [1, {"x": None}]}},
        ],
    )
    def test_a_value_arrives_as_given(
        self, make_experiment: Callable[..., Path], value: Any
    ) -> None:
        """None, floats, ints, bools, strings, lists and nested mappings are taken as they are."""
        plan = load_plan(make_experiment(), values={"x": value})
        got = plan.trials[0].settings["x"]
        assert got == value
        assert type(got) is type(value)

    def test_none_clears_an_execution_setting(self, make_experiment: Callable[..., Path]) -> None:
        """execution.timeout: None is YAML's null: the timeout set in experiment.yaml is gone."""
        root = make_experiment(
            experiment={"name": "exp", "id": 1, "execution": {"timeout": 5, "stall_timeout": 9}}
        )
        assert load_plan(root).execution.timeout == 5.0
        nested = load_plan(root, values={"execution": {"timeout": None}})
        dotted = load_plan(root, values={"execution.stall_timeout": None})
        assert (nested.execution.timeout, nested.execution.stall_timeout) == (None, 9.0)
        assert (dotted.execution.timeout, dotted.execution.stall_timeout) == (5.0, None)

    def test_the_string_none_in_an_override_stays_a_string(
        self, make_experiment: Callable[..., Path]
    ) -> None:
        """`execution.timeout=None` as a string is still YAML: the string 'None', refused."""
        with pytest.raises(ConfigError, match=r"execution\.timeout: .*got a string 'None'"):
            load_plan(make_experiment(), overrides=["execution.timeout=None"])

    def test_execution_values_are_typed(self, make_experiment: Callable[..., Path]) -> None:
        """Execution values pass the file's checks: numbers, booleans, device lists, ray."""
        execution = {
            "max_concurrency": 3,
            "fail_fast": True,
            "grace_period": 2,
            "devices": ("0", 1),
            "ray": {"address": "local"},
        }
        plan = load_plan(make_experiment(), values={"execution": execution})
        got = plan.execution
        assert (got.max_concurrency, got.fail_fast, got.grace_period) == (3, True, 2.0)
        assert (got.devices, got.ray) == (("0", "1"), {"address": "local"})

    def test_dotted_and_nested_keys_mean_the_same(
        self, make_experiment: Callable[..., Path]
    ) -> None:
        """{"opt.lr": 1} and {"opt": {"lr": 1}} and {"settings": {"opt": ...}} agree."""
        root = make_experiment(base={"pipeline": {"type": "x:Y"}, "opt": {"lr": 0, "m": 0.9}})
        forms: list[dict[str, Any]] = [
            {"opt.lr": 1},
            {"settings.opt.lr": 1},
            {"opt": {"lr": 1}},
            {"settings": {"opt": {"lr": 1}}},
        ]
        for values in forms:
            settings = load_plan(root, values=values).trials[0].settings
            assert settings["opt"] == {"lr": 1, "m": 0.9}, values

    def test_a_tuple_is_a_list(self) -> None:
        """A tuple is taken as the list YAML would have given."""
        assert check_values({"sizes": (1, 2)}).settings == {"sizes": [1, 2]}

    def test_values_hash_like_the_same_settings_in_a_file(
        self, make_experiment: Callable[..., Path]
    ) -> None:
        """lr given as a value gives the config hash of lr written in trials.yaml."""
        root = make_experiment()
        from_value = load_plan(root, values={"lr": 0.5}).trials[0]
        write_yaml(root / "trials.yaml", [{"name": "a", "id": 1, "settings": {"lr": 0.5}}])
        from_file = load_plan(root).trials[0]
        assert from_value.config_hash == from_file.config_hash


class TestBadValues:
    @pytest.mark.parametrize(
        ("values", "expected"),
        [
            (
                {"execution": {"timeout": "abc"}},
                "<values>: execution.timeout: expected a number, got a string 'abc'",
            ),
            (
                {"execution.max_concurrency": 0},
                "<values>: execution.max_concurrency: expected an integer >= 1, got 0",
            ),
            (
                {"execution": {"fail_fast": 1}},
                "<values>: execution.fail_fast: expected true or false, got an integer 1",
            ),
            (
                {"execution": {"executor": "gpu"}},
                "<values>: execution.executor: expected one of",
            ),
            ({"execution": {"timout": 1}}, "<values>: execution.timout: unknown key"),
            ({"execution": 5}, "<values>: execution: expected a mapping, got an integer"),
            ({"settings": [1]}, "<values>: settings: expected a mapping, got a list"),
            ({"seed": "abc"}, "<values>: settings.seed: expected an integer"),
            ({"model.path": Path("/x")}, "<values>: settings.model.path: expected a value YAML"),
            ({"m": {"k": [object()]}}, "<values>: settings.m.k[0]: expected a value YAML"),
            ({"m": {1: "a"}}, "<values>: settings.m: keys must be strings"),
            ({"a..b": 1}, "<values>: key 'a..b': expected a dotted key"),
        ],
    )
    def test_a_bad_value_names_its_key(
        self, make_experiment: Callable[..., Path], values: dict[str, Any], expected: str
    ) -> None:
        """A wrong value is one ConfigError naming <values> and the key path."""
        with pytest.raises(ConfigError) as info:
            load_plan(make_experiment(), values=values)
        assert str(info.value).startswith(expected)

    def test_too_deep_a_value_is_refused(self, make_experiment: Callable[..., Path]) -> None:
        """A value nested past the YAML depth limit (or cyclic) is refused, not recursed into."""
        cyclic: list[Any] = []
        cyclic.append(cyclic)
        with pytest.raises(ConfigError, match=r"<values>: settings\.c.*nesting deeper than"):
            load_plan(make_experiment(), values={"c": cyclic})


class TestPrecedence:
    def test_values_beat_overrides_beat_trials_beat_experiment_beat_base(
        self, make_experiment: Callable[..., Path]
    ) -> None:
        """Each layer wins over the ones below it, key by key."""
        layers = ["base", "experiment", "trial", "override", "value"]
        root = make_experiment(
            base={"pipeline": {"type": "pipelines:Sleeper"}, **{k: "base" for k in layers}},
            settings={k: "experiment" for k in layers[1:]},
            trials=[{"name": "t", "id": 1, "settings": {k: "trial" for k in layers[2:]}}],
        )
        plan = load_plan(
            root,
            overrides=["override=override", "value=override"],
            values={"value": "value"},
        )
        settings = plan.trials[0].settings
        assert [settings[k] for k in layers] == layers

    def test_execution_values_beat_overrides_beat_env_beat_experiment(
        self, make_experiment: Callable[..., Path]
    ) -> None:
        """Execution settings take the same order as run settings."""
        root = make_experiment(
            experiment={
                "name": "exp",
                "id": 1,
                "execution": {
                    "max_retries": 1,
                    "grace_period": 1,
                    "timeout": 1,
                    "stall_timeout": 1,
                },
            },
            env={"execution": {"grace_period": 2, "timeout": 2, "stall_timeout": 2}},
        )
        plan = load_plan(
            root,
            overrides=["execution.timeout=3", "execution.stall_timeout=3"],
            values={"execution": {"stall_timeout": 4}},
        )
        got = plan.execution
        assert (got.max_retries, got.grace_period, got.timeout, got.stall_timeout) == (1, 2, 3, 4)

    def test_an_error_about_a_value_names_values_not_a_file(self, tmp_path: Path) -> None:
        """A later error about a setting given as a value points at <values>, not a file."""
        root = tmp_path / "c"
        root.mkdir()
        (root / "experiment.yaml").write_text("name: e\nid: 1\n")
        (root / "trials.yaml").write_text(
            textwrap.dedent(
                """\
                - name: a
                  id: 1
                  settings:
                    pipeline: {type: p:P}
                """
            )
        )
        plan = load_plan(root, values={"pipeline": {"type": "q:Q"}})
        message = str(plan.trials[0].error("pipeline.type", "unknown type 'q:Q'"))
        assert message == "<values>: settings.pipeline.type: unknown type 'q:Q'"
        assert str(load_plan(root).trials[0].error("pipeline.type", "no")).endswith(
            "trials.yaml:4: [0].settings.pipeline.type: no"
        )
