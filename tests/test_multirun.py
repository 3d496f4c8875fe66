"""The multirun command line: `-m` overrides become a sweep block; without -m a sweep is refused."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import QuotedString

from expman.cli import build_parser, main, parse_arguments, sweep_arguments
from expman.config.distributions import parse_distribution
from expman.config.multirun import parse_multirun
from expman.config.override_syntax import function_call, split_top_level, sweep_shape
from expman.config.overrides import parse_overrides
from expman.errors import ConfigError

from .conftest import run_cli


def grid_of(overrides: list[str]) -> dict[str, Any]:
    sweep = parse_multirun(overrides).sweep
    assert sweep is not None
    return dict(sweep["grid"])


def refused(overrides: list[str], samples: int | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_multirun(overrides, samples=samples)
    assert info.value.file == "<command line>"
    return info.value


class _Site:
    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, key=key)


def points(form: object) -> list[Any]:
    return list(parse_distribution(_Site(), "k", form, grid=True).grid_points())


# -- Hydra's override parser as the oracle ---------------------------------------------

#: Elements whose meaning Hydra and YAML (which types expman's overrides) share.
SHARED_ELEMENTS = [
    "1",
    "-3",
    "0",
    "64",
    "0.5",
    "-2.25",
    "1e-6",
    "1.0e-4",
    "-10e3",
    "3.14",
    "true",
    "false",
    "True",
    "null",
    "NULL",
    "relu",
    "gelu",
    "adam_w",
    "a b",
    '"a,b"',
    '"x y, z"',
    "'q,r'",
    '"[1,2]"',
    "[1,2]",
    "[a,[b,c]]",
    "[]",
    "{a: 1, b: [2, 3]}",
    "{}",
]


def hydra_values(override: str) -> list[Any]:
    """What Hydra's basic sweeper would iterate for ``override``."""
    parsed = OverridesParser.create().parse_overrides([override])[0]
    assert parsed.is_discrete_sweep()

    def plain(value: Any) -> Any:
        if isinstance(value, QuotedString):
            return value.text
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return [plain(v) for v in parsed.sweep_iterator()]


class TestHydraOracle:
    def test_comma_sweeps_give_hydras_values(self) -> None:
        """For 300 random comma sweeps of shared elements, the grid axis is Hydra's choice."""
        rng = random.Random("comma sweeps")
        for _ in range(300):
            elements = rng.sample(SHARED_ELEMENTS, rng.randint(2, 5))
            spaced = [
                f" {e} " if rng.random() < 0.2 and e[0] not in "'\"[{" else e for e in elements
            ]
            override = "k=" + ",".join(spaced)
            assert grid_of([override]) == {"k": hydra_values(override)}, override

    def test_choice_gives_hydras_values(self) -> None:
        """choice(a,b,...) holds the values Hydra's choice sweep iterates, as a grid axis."""
        rng = random.Random("choice")
        for _ in range(100):
            # Hydra's choice() refuses null (expman's takes it, as in a comma sweep).
            shared = [e for e in SHARED_ELEMENTS if e.lower() != "null"]
            override = "k=choice(" + ",".join(rng.sample(shared, rng.randint(1, 4))) + ")"
            form = grid_of([override])["k"]
            assert points(form) == hydra_values(override), override

    def test_range_gives_hydras_points(self) -> None:
        """range(start,stop[,step]) of ints and binary-exact floats: Hydra's points, in order."""
        rng = random.Random("range")
        for _ in range(200):
            start = rng.randint(-20, 20)
            stop = start + rng.choice([-1, 1]) * rng.randint(1, 40)
            step = (1 if stop > start else -1) * rng.choice([1, 2, 3, 7, 0.5, 0.25])
            override = f"k=range({start},{stop},{step})"
            if step == 1 and rng.random() < 0.5:
                override = f"k=range({start},{stop})"
            assert points(grid_of([override])["k"]) == hydra_values(override), override


# -- The grammar -------------------------------------------------------------------------


class TestValues:
    def test_elements_are_typed_like_plain_overrides(self) -> None:
        """Each value of a sweep is what the same text gives as a plain override."""
        for element in [*SHARED_ELEMENTS, "yes", "inf", ".inf", "1_000", "0x10", "${other}"]:
            plain = parse_overrides([f"k={element}"]).settings["k"]
            assert grid_of([f"k={element},0"])["k"] == [plain, 0], element

    def test_numbers_booleans_null_and_quoted_commas(self) -> None:
        """1e-6 and 1.0e-4 are floats, -3 an int, true a boolean, null None, "a,b" one string."""
        assert grid_of(["lr=1e-6,1.0e-4,-3"])["lr"] == [1e-6, 1e-4, -3]
        assert [type(v) for v in grid_of(["lr=1e-6,1.0e-4,-3"])["lr"]] == [float, float, int]
        assert grid_of(["flag=true,false,null"])["flag"] == [True, False, None]
        assert grid_of(['name="a,b",c'])["name"] == ["a,b", "c"]
        assert grid_of(["x=[1,2],[3,4]"])["x"] == [[1, 2], [3, 4]]

    def test_one_quoted_list_or_mapping_stays_a_plain_override(self) -> None:
        """A quoted comma, a list, a mapping or an interpolation is one value, not a sweep."""
        given = ['s="a,b"', "l=[1,2]", "d={a: 1, b: 2}", "i=${oc.env:X,y}", "f=act(x,y)", "n=3"]
        split = parse_multirun(given)
        assert split.sweep is None
        assert split.overrides == tuple(given)

    def test_forms_become_the_yaml_of_a_sweep_block(self) -> None:
        """Each form becomes its YAML axis, grid or random, with --samples as random.samples."""
        split = parse_multirun(
            [
                "lr=0.01,0.1",
                "act=choice(relu,gelu)",
                "bs=range(16,65,16)",
                "p=interval(0,1)",
                "q=uniform(0.1,0.5)",
                "wd=loguniform(1e-6,1e-2)",
                "warmup=randint(0,10)",
                "epochs=3",
            ],
            samples=4,
        )
        assert split.overrides == ("epochs=3",)
        assert split.sweep == {
            "grid": {
                "lr": [0.01, 0.1],
                "act": {"choice": ["relu", "gelu"]},
                "bs": {"range": [16, 65, 16]},
            },
            "random": {
                "samples": 4,
                "p": {"uniform": [0, 1]},
                "q": {"uniform": [0.1, 0.5]},
                "wd": {"loguniform": [1e-6, 1e-2]},
                "warmup": {"randint": [0, 10]},
            },
        }

    def test_named_arguments_as_in_hydra(self) -> None:
        """range(start=..., stop=..., step=...) and interval(start=, end=) name their arguments."""
        assert grid_of(["k=range(stop=9, start=1, step=4)"])["k"] == {"range": [1, 9, 4]}
        assert grid_of(["k=range(0, stop=3)"])["k"] == {"range": [0, 3]}
        sweep = parse_multirun(["k=interval(start=0, end=2)"], samples=1).sweep
        assert sweep == {"random": {"samples": 1, "k": {"uniform": [0, 2]}}}


class TestKeys:
    def test_lr_and_settings_lr_are_one_key(self) -> None:
        """A settings key may be written with or without `settings.`; twice is refused."""
        assert grid_of(["settings.model.depth=2,4"]) == {"model.depth": [2, 4]}
        error = refused(["lr=1,2", "settings.lr=3,4"])
        assert error.key == "settings.lr"
        assert "swept twice" in error.message

    def test_a_key_swept_and_set_is_refused(self) -> None:
        """lr=1,2 with lr=3 would silently drop one of them: refused, naming both."""
        error = refused(["settings.lr=3", "lr=1,2"])
        assert "'settings.lr=3'" in error.message
        assert "'lr=1,2'" in error.message

    @pytest.mark.parametrize(
        "override", ["execution.max_retries=1,2", "execution.timeout=range(1,3)"]
    )
    def test_execution_keys_cannot_be_swept(self, override: str) -> None:
        """Execution settings are the experiment's, not a trial's: sweeping one is refused."""
        error = refused([override])
        assert error.key == override.partition("=")[0]
        assert "cannot be swept" in error.message

    @pytest.mark.parametrize("override", ["settings=1,2", "a..b=1,2", "=1,2"])
    def test_malformed_swept_keys_are_refused(self, override: str) -> None:
        """A key with an empty part, or the settings as a whole, cannot be swept."""
        assert "expected" in refused([override]).message


class TestMistakes:
    @pytest.mark.parametrize(
        ("overrides", "samples", "expected"),
        [
            (["wd=loguniform(1e-6,1e-2)"], None, "add --samples N"),
            (["lr=1,2"], 3, "no override is one"),
            (["wd=loguniform(1e-6,1e-2)"], 0, "expected an integer >= 1"),
            (["lr=logunifrom(1,2)"], None, "did you mean 'loguniform'"),
            (["lr=tag(log,interval(1,2))"], None, "for a log scale write loguniform"),
            (["lr=glob(*)"], None, "not supported"),
            (["lr=range(1)"], None, "missing 'stop'"),
            (["lr=range(1,5,0)"], None, "step must not be 0"),
            (["lr=range(1,5,-1)"], None, "goes away from stop"),
            (["lr=range(1,2,3,4)"], None, "at most 3 arguments"),
            (["lr=range(start=1,2)"], None, "positional argument after a named one"),
            (["lr=range(begin=1,stop=2)"], None, "no parameter 'begin'"),
            (["lr=range(a,5)"], None, "expected a number"),
            (["lr=loguniform(0,1)"], 2, "must be > 0"),
            (["lr=uniform(2,1)"], 2, "expected lo < hi"),
            (["lr=randint(0,2.5)"], 2, "expected an integer"),
            (["lr=choice()"], None, "at least one value"),
            (["lr=1,,2"], None, "an empty value between commas"),
            (["lr=1,2,"], None, "an empty value between commas"),
            (["lr=1,range(1,3)"], None, "inside a sweep"),
            (["lr=1,[2"], None, "cannot parse value '[2'"),
            (["lr=range(1,5"], None, "range( is not closed"),
            (["lr=choice(1,2) x"], None, "choice( is not closed (or text follows its ')')"),
        ],
    )
    def test_each_mistake_names_the_override_and_what_was_expected(
        self, overrides: list[str], samples: int | None, expected: str
    ) -> None:
        """A mistake in a sweep is one ConfigError at <command line> with what was expected."""
        error = refused(overrides, samples)
        assert expected in error.message
        assert error.key is not None
        assert "\n" not in str(error)


class TestWithoutMultirun:
    @pytest.mark.parametrize(
        ("override", "shape"),
        [
            ("lr=0.01,0.1", "an unquoted comma"),
            ("x=[1,2],[3,4]", "an unquoted comma"),
            ("bs=range(16,65,16)", "range(...)"),
            ("act=choice(relu,gelu)", "choice(...)"),
            ("wd=loguniform(1e-6,1e-2)", "loguniform(...)"),
        ],
    )
    def test_a_sweep_is_refused_with_the_hint(self, override: str, shape: str) -> None:
        """Without -m a sweep would be a string no one meant: refused, saying what to do."""
        with pytest.raises(ConfigError) as info:
            parse_overrides([override])
        message = info.value.message
        assert shape in message
        assert "to sweep, add -m" in message
        assert "to pass a string, quote it" in message
        assert info.value.key == override.partition("=")[0]

    def test_an_unclosed_sweep_function_is_refused(self) -> None:
        """`lr=choice(1,2` is no string anyone meant either: refused, naming the function."""
        with pytest.raises(ConfigError) as info:
            parse_overrides(["lr=choice(1,2"])
        assert "choice( is not closed" in info.value.message
        assert info.value.key == "lr"

    def test_the_hint_quotes_the_override(self) -> None:
        """The suggested quoting, pasted into a shell, passes the text as one string."""
        with pytest.raises(ConfigError) as info:
            parse_overrides(["tag=a,b"])
        assert "'tag=\"a,b\"'" in info.value.message
        assert "tag=[a,b]" in info.value.message
        assert parse_overrides(['tag="a,b"']).settings == {"tag": "a,b"}

    @pytest.mark.parametrize(
        "override",
        ['s="a,b"', "s='a,b'", "l=[1,2]", "d={a: 1, b: 2}", "i=${oc.env:X,y}", "f=act(x,y)"],
    )
    def test_quoted_commas_lists_and_mappings_stay_plain(self, override: str) -> None:
        """Commas inside quotes, brackets, braces and parentheses are not a sweep."""
        assert parse_overrides([override]).settings


class TestSyntax:
    @pytest.mark.parametrize(
        ("text", "parts"),
        [
            ("a,b", ["a", "b"]),
            ("'a''b,c',d", ["'a''b,c'", "d"]),
            ('"a\\",b",c', ['"a\\",b"', "c"]),
            ("it's,b", ["it's", "b"]),
            ("[1,[2,3]],{a: [4,5]}", ["[1,[2,3]]", "{a: [4,5]}"]),
            ("f(a,b),c", ["f(a,b)", "c"]),
            ("", [""]),
        ],
    )
    def test_split_at_top_level_commas(self, text: str, parts: list[str]) -> None:
        """Commas split only outside quotes (YAML's rules), brackets, braces and parentheses."""
        assert split_top_level(text) == parts

    def test_a_call_is_the_whole_value(self) -> None:
        """name(...) is a call only when nothing follows its closing parenthesis."""
        call = function_call(" range( 1 , 2 ) ")
        assert call is not None
        assert (call.name, call.args) == ("range", (" 1 ", " 2 "))
        assert function_call("range(1,2)x") is None
        assert function_call("f(a)(b)") is None
        assert sweep_shape("range(1,2)x") is None
        assert sweep_shape('"range(1,2)"') is None


# -- The command line --------------------------------------------------------------------


class TestArguments:
    @pytest.mark.parametrize(
        "argv",
        [
            ["run", "CFG", "-m", "a=1,2", "b=3"],
            ["run", "-m", "CFG", "a=1,2", "b=3"],
            ["run", "CFG", "a=1,2", "b=3", "-m"],
            ["run", "CFG", "a=1,2", "-m", "b=3"],
            ["run", "CFG", "-j", "2", "a=1,2", "-m", "-q", "b=3"],
            ["run", "CFG", "--multirun", "a=1,2", "--debug", "b=3"],
            ["validate", "CFG", "a=1,2", "-m", "b=3", "-w", "ws"],
        ],
    )
    def test_overrides_and_options_in_any_order(self, argv: list[str]) -> None:
        """-m, --samples and other options may stand before, between or after overrides."""
        args = parse_arguments(build_parser(), argv)
        assert args.config_dir == "CFG"
        assert args.overrides == ["a=1,2", "b=3"]
        assert args.multirun is True
        overrides, sweep = sweep_arguments(args)
        assert overrides == ["b=3"]
        assert sweep is not None
        assert sweep["grid"] == {"a": [1, 2]}

    def test_samples_between_overrides(self) -> None:
        """--samples N may stand anywhere; its N is not taken for an override."""
        argv = ["run", "CFG", "--samples", "2", "a=1,2", "-m", "w=uniform(0,1)", "--fresh"]
        args = parse_arguments(build_parser(), argv)
        assert (args.samples, args.fresh, args.overrides) == (2, True, ["a=1,2", "w=uniform(0,1)"])
        assert sweep_arguments(args)[1] == {
            "grid": {"a": [1, 2]},
            "random": {"samples": 2, "w": {"uniform": [0, 1]}},
        }

    def test_samples_without_multirun_is_a_config_error(self) -> None:
        """--samples without -m: exit 2 with one line saying to add -m."""
        args = parse_arguments(build_parser(), ["run", "CFG", "--samples", "3"])
        with pytest.raises(ConfigError, match="add -m"):
            sweep_arguments(args)


def _settings_of_runs(experiment: Path) -> list[dict[str, Any]]:
    runs = sorted(experiment.glob("trials/*/run_*/configs/run.yaml"))
    return [yaml.safe_load(p.read_text()) for p in runs]


def _finished(experiment: Path) -> list[dict[str, Any]]:
    lines = (experiment / "logs" / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["type"] == "RunFinished"]


@pytest.fixture
def sweepable(make_experiment: Callable[..., Path]) -> Path:
    return make_experiment(
        settings={"lr": 0.001, "batch_size": 8, "wd": 0.0},
        trials=[{"name": "a", "id": 1, "repeat": 1}, {"name": "b", "id": 2, "repeat": 1}],
    )


class TestCommandLine:
    def test_a_grid_sweep_runs_every_combination_for_every_entry(
        self, sweepable: Path, workspace: Path
    ) -> None:
        """`-m lr=0.01,0.1 'batch_size=range(16,65,16)'`: 2x4 trials per entry, all completed."""
        proc = run_cli(
            "run", str(sweepable), "-m", "lr=0.01,0.1", "batch_size=range(16,65,16)",
            "-w", str(workspace), "-q", "-j", "4",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        runs = _settings_of_runs(workspace / "exp")
        combos = sorted(
            (r["trial"][0], r["settings"]["lr"], r["settings"]["batch_size"]) for r in runs
        )
        expected = sorted(
            (entry, lr, bs) for entry in "ab" for lr in (0.01, 0.1) for bs in (16, 32, 48, 64)
        )
        assert combos == expected
        finished = _finished(workspace / "exp")
        assert len(finished) == 16
        assert {e["status"] for e in finished} == {"completed"}

    def test_random_axes_draw_samples_values_in_range(
        self, make_experiment: Callable[..., Path], workspace: Path
    ) -> None:
        """`-m 'wd=loguniform(1e-6,1e-2)' --samples 3`: 3 trials, each value inside the bounds."""
        root = make_experiment(settings={"wd": 0.0, "warmup": 0})
        proc = run_cli(
            "run", str(root), "-w", str(workspace), "-q", "--samples", "3", "-m",
            "wd=loguniform(1e-6,1e-2)", "warmup=randint(0,10)",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        runs = _settings_of_runs(workspace / "exp")
        assert len(runs) == 3
        assert len({r["trial"] for r in runs}) == 3
        for run in runs:
            wd, warmup = run["settings"]["wd"], run["settings"]["warmup"]
            assert 1e-6 <= wd <= 1e-2
            assert isinstance(warmup, int)
            assert 0 <= warmup < 10
        assert len({r["settings"]["wd"] for r in runs}) == 3
        assert all(math.isfinite(r["settings"]["wd"]) for r in runs)

    def test_validate_shows_the_expanded_trials(self, sweepable: Path, workspace: Path) -> None:
        """`validate -m` lists every generated trial and their count; nothing is written."""
        proc = run_cli("validate", str(sweepable), "-w", str(workspace), "-m", "lr=0.01,0.1,1")
        assert proc.returncode == 0, proc.stderr
        assert "6 trials, 6 runs" in proc.stdout
        rows = re.findall(r"^\s*([ab])-[0-9a-f]{12}\s+(\S+)", proc.stdout, re.M)
        assert sorted(rows) == sorted((e, lr) for e in "ab" for lr in ("0.01", "0.1", "1"))
        assert not workspace.exists()

    @pytest.mark.slow
    def test_refusals_exit_2_with_one_line_and_leave_the_workspace_untouched(
        self, sweepable: Path, workspace: Path
    ) -> None:
        """Each refusal: exit 2, one line on stderr, no traceback, the workspace as it was."""
        proc = run_cli("run", str(sweepable), "-w", str(workspace), "-q")
        assert proc.returncode == 0, proc.stderr
        before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in workspace.rglob("*")}
        refusals = [
            (["lr=0.01,0.1"], "to sweep, add -m"),
            (["batch_size=range(16,65,16)"], "to sweep, add -m"),
            (["--samples", "3", "lr=0.1"], "add -m"),
            (["-m", "wd=loguniform(1e-6,1e-2)"], "add --samples N"),
            (["-m", "--samples", "3", "lr=1,2"], "no override is one"),
            (["-m", "execution.max_retries=1,2"], "cannot be swept"),
            (["-m", "lr=logunifrom(1,2)"], "did you mean 'loguniform'"),
            (["-m", "lr=range(1,5,0)"], "step must not be 0"),
        ]
        for extra, expected in refusals:
            proc = run_cli("run", str(sweepable), "-w", str(workspace), *extra)
            assert proc.returncode == 2, (extra, proc.stdout, proc.stderr)
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1, (extra, proc.stderr)
            assert lines[0].startswith("expman: config error: <command line>: "), lines
            assert expected in lines[0], lines
            assert "Traceback" not in proc.stderr + proc.stdout
            after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in workspace.rglob("*")}
            assert after == before, extra

    def test_main_in_process_gives_exit_2_for_a_sweep_without_m(self, sweepable: Path) -> None:
        """The same refusal through `expman.cli.main`, as the test of a caller's script."""
        assert main(["validate", str(sweepable), "lr=0.01,0.1"]) == 2
        assert main(["validate", str(sweepable), "-m", "lr=0.01,0.1"]) == 0

    def test_growing_an_axis_runs_only_the_new_points(
        self, sweepable: Path, workspace: Path
    ) -> None:
        """`-m lr=0.01,0.1` then `-m lr=0.01,0.1,1 --accept-changes`: one new run per entry."""
        first = run_cli("run", str(sweepable), "-w", str(workspace), "-q", "-m", "lr=0.01,0.1")
        assert first.returncode == 0, first.stderr
        grown = run_cli(
            "run", str(sweepable), "-w", str(workspace), "-q", "-m", "lr=0.01,0.1,1",
            "--accept-changes",
        )  # fmt: skip
        assert grown.returncode == 0, grown.stderr
        lines = (workspace / "exp" / "logs" / "events.jsonl").read_text().splitlines()
        started = [e for e in map(json.loads, lines) if e["type"] == "RunStarted"]
        assert len(started) == 6
        runs = {r["trial"]: r["settings"]["lr"] for r in _settings_of_runs(workspace / "exp")}
        assert sorted(runs.values()) == [0.01, 0.01, 0.1, 0.1, 1, 1]
        assert sorted(e["trial"] for e in started[4:]) == sorted(
            t for t, lr in runs.items() if lr == 1
        )


def test_the_readme_multirun_example_validates(tmp_path: Path) -> None:
    """The README's `validate -m` example stands in the README and plans 2x3 trials per entry."""
    command = "expman validate examples/quickstart -m lr=0.01,0.1 'epochs=range(10,31,10)'"
    root = Path(__file__).resolve().parents[1]
    assert command in (root / "README.md").read_text()
    args = ["validate", str(root / "examples" / "quickstart"), "-w", str(tmp_path / "ws")]
    proc = run_cli(*args, "-m", "lr=0.01,0.1", "epochs=range(10,31,10)", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "12 trials, 36 runs" in proc.stdout
