"""Config loading: precedence, interpolation, helpers, hostile YAML and workspace paths.

The catalogue of config mistakes is in ``test_config_catalogue.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from expman.config import insert_value, load_plan, multiply
from expman.errors import ConfigError
from expman.experiment import prepare

from .conftest import run_cli
from .test_config_catalogue import KNOWN, both, pipeline_type, write_text


class TestMerging:
    def test_precedence_base_experiment_trial_override(
        self, make_experiment: Callable[..., Path]
    ) -> None:
        """base < experiment < trial < command-line overrides, key by key."""
        root = make_experiment(
            base={
                "pipeline": {"type": "pipelines:Sleeper"},
                "a": "base",
                "b": "base",
                "c": "base",
                "d": "base",
                "nested": {"x": 1, "y": 1},
            },
            settings={"b": "experiment", "c": "experiment", "d": "experiment", "nested": {"y": 2}},
            trials=[{"name": "t", "id": 1, "settings": {"c": "trial", "d": "trial"}}],
        )
        plan = load_plan(root, overrides=["settings.d=override"])
        settings = plan.trials[0].settings
        assert (settings["a"], settings["b"], settings["c"], settings["d"]) == (
            "base",
            "experiment",
            "trial",
            "override",
        )
        assert settings["nested"] == {"x": 1, "y": 2}

    def test_interpolation_across_levels(self, make_experiment: Callable[..., Path]) -> None:
        """A trial's value can refer to base settings, the trial and the experiment."""
        root = make_experiment(
            base={"pipeline": {"type": "pipelines:Sleeper"}, "base_lr": 0.1},
            trials=[
                {
                    "name": "t",
                    "id": 7,
                    "settings": {
                        "lr": "${settings.base_lr}",
                        "tag": "${experiment.name}-${trial.name}-${trial.id}",
                    },
                }
            ],
        )
        settings = load_plan(root).trials[0].settings
        assert settings["lr"] == 0.1
        assert settings["tag"] == "exp-t-7"

    def test_with_interpolations_a_later_value_replaces_whatever_kind_it_meets(
        self, make_experiment: Callable[..., Path]
    ) -> None:
        """A mapping over a list, a string over a mapping: replaced, interpolated or not."""
        root = make_experiment(
            base={"pipeline": {"type": "pipelines:Sleeper"}, "sizes": [1, 2], "opt": "sgd"},
            trials=[
                {"name": "a", "id": 1, "settings": {"pipeline": "${settings.kind}", "kind": "p:X"}},
                {"name": "b", "id": 2, "settings": {"sizes": {"first": "${settings.opt}"}}},
            ],
        )
        a, b = (trial.settings for trial in load_plan(root).trials)
        assert (a["pipeline"], a["sizes"]) == ("p:X", [1, 2])
        assert (b["pipeline"], b["sizes"]) == ({"type": "pipelines:Sleeper"}, {"first": "sgd"})

    def test_override_values_are_typed_and_bare_keys_mean_settings(
        self, make_experiment: Callable[..., Path]
    ) -> None:
        """lr=1e-3 is a float, epochs=3 an int; execution.* changes execution settings."""
        root = make_experiment()
        plan = load_plan(
            root, overrides=["lr=1e-3", "settings.epochs=3", "execution.max_retries=2"]
        )
        assert plan.trials[0].settings["lr"] == 0.001
        assert plan.trials[0].settings["epochs"] == 3
        assert plan.execution.max_retries == 2

    def test_repeats_expand_with_distinct_deterministic_seeds(
        self, make_experiment: Callable[..., Path]
    ) -> None:
        """Each repeat is a run with its own seed; the same config gives the same seeds."""
        root = make_experiment(
            trials=[{"name": "a", "id": 1, "repeat": 3}, {"name": "b", "id": 2, "repeat": 2}]
        )
        plan = load_plan(root)
        assert [(r.trial.name, r.repeat) for r in plan.runs] == [
            ("a", 0),
            ("a", 1),
            ("a", 2),
            ("b", 0),
            ("b", 1),
        ]
        seeds = [r.seed for r in plan.runs]
        assert len(set(seeds)) == 5
        assert seeds == [r.seed for r in load_plan(root).runs]
        changed = load_plan(root, overrides=["seed=1"])
        assert [r.seed for r in changed.runs] != seeds

    def test_yaml_floats_in_exponent_form(self, make_experiment: Callable[..., Path]) -> None:
        """1e-3 in YAML is a number, as ML configs expect (plain PyYAML reads a string)."""
        root = make_experiment(settings={"lr": "x"})
        (root / "experiment.yaml").write_text("name: exp\nid: 1\nsettings:\n  lr: 1e-3\n")
        assert load_plan(root).trials[0].settings["lr"] == 0.001


class TestHelpers:
    def test_insert_value_replaces_nested_placeholders(self) -> None:
        """Every "?" is replaced, in mappings and lists, and the input is untouched."""
        config = OmegaConf.create({"a": "?", "b": {"c": ["?", 1, {"d": "?"}]}, "e": "??"})
        out = insert_value(config, 5)
        assert isinstance(out, DictConfig)
        assert OmegaConf.to_container(out) == {"a": 5, "b": {"c": [5, 1, {"d": 5}]}, "e": "??"}
        assert config.a == "?"
        assert insert_value(["?", {"x": "?"}], "v") == ["v", {"x": "v"}]

    def test_multiply_is_the_cartesian_product_merged_pairwise(self) -> None:
        """multiply(a, b) has len(a)*len(b) configs; b's values win on clashes."""
        a = [{"lr": 0.1, "opt": "sgd"}, {"lr": 0.01, "opt": "sgd"}]
        b = [{"bs": 32}, {"bs": 64, "opt": "adam"}]
        out = multiply(a, b)
        assert isinstance(out, ListConfig)
        assert OmegaConf.to_container(out) == [
            {"lr": 0.1, "opt": "sgd", "bs": 32},
            {"lr": 0.1, "opt": "adam", "bs": 64},
            {"lr": 0.01, "opt": "sgd", "bs": 32},
            {"lr": 0.01, "opt": "adam", "bs": 64},
        ]


def test_hostile_yaml_alias_bomb_is_refused_quickly(make_experiment: Callable[..., Path]) -> None:
    """Aliases that would expand a small file into millions of nodes are refused."""
    root = make_experiment()
    lines = ["name: exp", "id: 1", "settings:", "  a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    previous = "a"
    for level in "bcdefgh":
        lines.append(f"  {level}: &{level} [" + ", ".join([f"*{previous}"] * 10) + "]")
        previous = level
    (root / "experiment.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="expands to more than"):
        prepare(root)


def test_hostile_yaml_deep_nesting_is_refused(make_experiment: Callable[..., Path]) -> None:
    """Nesting hundreds of levels deep is refused with a clear error."""
    root = make_experiment()
    (root / "experiment.yaml").write_text("name: e\nid: 1\nsettings: " + "[" * 500 + "]" * 500)
    with pytest.raises(ConfigError, match="nesting deeper than"):
        prepare(root)


def test_hostile_yaml_huge_file_is_refused_without_reading_it(
    make_experiment: Callable[..., Path],
) -> None:
    """A config file over the size limit is refused by its size alone."""
    root = make_experiment()
    with (root / "base.yaml").open("w") as f:
        f.write("settings:\n  blob: '")
        f.write("x" * (9 * 1024 * 1024))
        f.write("'\n")
    with pytest.raises(ConfigError, match="config files are limited to"):
        prepare(root)


@pytest.mark.parametrize("override", ["lr=[1,2", "execution.max_retries={x"])
def test_override_with_bad_yaml_is_a_config_error(
    make_experiment: Callable[..., Path], override: str
) -> None:
    """An override whose value is broken YAML is one ConfigError naming that override."""
    root = make_experiment()
    with pytest.raises(ConfigError) as info:
        prepare(root, overrides=["epochs=2", override])
    message = str(info.value)
    assert message.startswith("<command line>:")
    assert repr(override) in message
    assert "expected a YAML value" in message


def test_cli_override_with_bad_yaml_exits_2_without_writing(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """`expman run DIR 'lr=[1,2'` prints one message, exits 2 and creates no workspace."""
    root = make_experiment()
    workspace = tmp_path / "ws"
    proc = run_cli("run", str(root), "-w", str(workspace), "lr=[1,2")
    assert proc.returncode == 2, proc.stderr
    assert "override 'lr=[1,2'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not workspace.exists()


def test_workspace_from_env_yaml_that_is_a_file_is_named_in_env_yaml(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """env.yaml `workspace:` naming a file is a ConfigError at env.yaml's workspace key."""
    root = make_experiment(env={"workspace": "wsfile"})
    (root / "wsfile").write_text("not a folder\n")
    with pytest.raises(ConfigError) as info:
        prepare(root)
    assert "env.yaml:1: workspace:" in str(info.value)
    assert "expected a directory" in str(info.value)
    proc = run_cli("run", str(root), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "env.yaml:1: workspace:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (root / "wsfile").read_text() == "not a folder\n"


def test_workspace_argument_below_a_file_is_a_command_line_error(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """`-w FILE/sub` is a ConfigError on the command line's workspace, exit 2."""
    root = make_experiment()
    (tmp_path / "wsfile").write_text("x")
    with pytest.raises(ConfigError, match=r"^<command line>: workspace: .*is a file"):
        prepare(root, workspace=tmp_path / "wsfile" / "sub")
    proc = run_cli("run", str(root), "-w", str(tmp_path / "wsfile"))
    assert proc.returncode == 2, proc.stderr
    assert "<command line>: workspace:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_experiment_path_that_is_a_file_is_a_config_error(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """A file where the experiment's folder would go is refused before anything is written."""
    root = make_experiment()
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "exp").write_text("x")
    with pytest.raises(ConfigError, match=r"experiment\.yaml:1: name: .*is a file"):
        prepare(root, workspace=workspace)
    proc = run_cli("run", str(root), "-w", str(workspace))
    assert proc.returncode == 2, proc.stderr
    assert "is a file" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in workspace.iterdir()) == ["exp"]


@pytest.mark.parametrize("value", [0, -3, 1.5, True, "4"])
async def test_max_concurrency_argument_is_validated(
    make_experiment: Callable[..., Path], tmp_path: Path, value: Any
) -> None:
    """run_experiment(max_concurrency=0 / -3 / 1.5 / "4") is a ConfigError; nothing is written."""
    from expman import run_experiment

    root = make_experiment()
    workspace = tmp_path / "ws"
    with pytest.raises(ConfigError, match=r"max_concurrency: expected an integer >= 1"):
        await run_experiment(root, workspace=workspace, max_concurrency=value)
    assert not workspace.exists()


def test_seed_override_that_is_not_an_integer_is_refused(
    make_experiment: Callable[..., Path],
) -> None:
    """`seed=abc` on the command line is a ConfigError naming the override's settings.seed."""
    root = make_experiment()
    with pytest.raises(ConfigError, match=r"^<command line>: settings\.seed: expected an integer"):
        prepare(root, overrides=["seed=abc"])


SAME_NAMED_PIPES = """
from expman import Pipeline


FOLDER = {folder}


class Which(Pipeline):
    async def run(self, ctx):
        import pipes  # a lazy import of its own module, as helpers often are

        return {{"folder": {folder}, "module_folder": pipes.FOLDER}}
"""


async def test_two_config_folders_with_same_named_modules_each_get_their_own(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """mod1/pipes.py and mod2/pipes.py run their own code (and see their own module) in turn."""
    from expman import run_experiment

    results = []
    roots = {}
    for folder in (1, 2):
        roots[folder] = make_experiment(
            folder=f"mod{folder}", base={"pipeline": {"type": "pipes:Which"}}
        )
        (roots[folder] / "pipes.py").write_text(SAME_NAMED_PIPES.format(folder=folder))
    for k, folder in enumerate((1, 2, 1)):  # back to the first: its module again
        result = await run_experiment(roots[folder], workspace=tmp_path / f"ws{k}")
        results.append([(r.metrics["folder"], r.metrics["module_folder"]) for r in result.runs])
    assert results == [[(1, 1)], [(2, 2)], [(1, 1)]]


def test_unknown_pipeline_lists_only_pipeline_names(make_experiment: Callable[..., Path]) -> None:
    """An unknown settings.pipeline.type lists registered pipelines, not callbacks."""
    root = make_experiment()
    both(write_text("known.py", KNOWN), pipeline_type("known:Nope"))(root)
    with pytest.raises(ConfigError) as info:
        prepare(root)
    message = str(info.value)
    assert "settings.pipeline.type: unknown type 'known:Nope'" in message
    known = message.split("known names: ")[1].split(", ")
    assert {"KnownPipe", "RunOnly"} <= set(known)
    assert not {"CheckpointCallback", "EarlyStopping", "MetricsTracker"} & set(known)


def test_paths_with_a_nul_from_python_are_config_errors(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """prepare('cfg\\0x') and prepare(cfg, workspace='w\\0s'): ConfigErrors, not ValueErrors."""
    root = make_experiment()
    with pytest.raises(ConfigError, match="holds a NUL character"):
        prepare(f"{root}\0x")
    with pytest.raises(ConfigError, match=r"^<command line>: workspace: .*holds a NUL character"):
        prepare(root, workspace=f"{tmp_path}/w\0s")
