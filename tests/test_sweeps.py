"""The ``sweep:`` block of trials.yaml: expansion, identity, growing, errors and the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from expman.config import load_plan
from expman.config.expansion import MAX_RUNS
from expman.config.resolution import run_seed
from expman.config.sweeps import HEX_DIGITS
from expman.errors import ConfigError
from expman.jsonlines import read_lines

from .conftest import run_cli, write_yaml

Make = Callable[..., Path]

#: The settings every swept key of these tests exists in.
SETTINGS = {
    "seed": 3,
    "lr": 0.1,
    "batch_size": 16,
    "dropout": 0.0,
    "weight_decay": 0.0,
    "warmup": 0,
    "act": "relu",
    "p": 0.0,
    "model": {"depth": 1, "width": 8},
}

ISSUE_EXAMPLE = {
    "name": "mlp",
    "id": 1,
    "repeat": 3,
    "settings": {"optimizer": "adam", "model": {"depth": 2, "width": 64}},
    "sweep": {
        "grid": {
            "lr": {"loguniform": [1.0e-4, 1.0e-1], "num": 4},
            "batch_size": [32, 64],
            "model.depth": {"range": [2, 8, 2]},
        },
        "zip": [{"model.width": [128, 256], "dropout": [0.1, 0.3]}],
        "random": {
            "samples": 5,
            "seed": 7,
            "weight_decay": {"loguniform": [1.0e-6, 1.0e-2]},
            "warmup": {"randint": [0, 10]},
            "act": {"choice": ["relu", "gelu"]},
            "p": {"uniform": [0.0, 0.5]},
        },
    },
}


def swept(make_experiment: Make, *trials: dict[str, Any], settings: Any = None) -> Path:
    return make_experiment(settings=SETTINGS if settings is None else settings, trials=list(trials))


def grid_entry(sweep: dict[str, Any], **entry: Any) -> dict[str, Any]:
    return {"name": "t", "id": 1, **entry, "sweep": sweep}


def test_issue_example_expands_to_every_point(make_experiment: Make) -> None:
    """The issue's example: 4 x 2 x 3 grid points x 2 zipped pairs x 5 samples, repeat 3 each."""
    plan = load_plan(swept(make_experiment, ISSUE_EXAMPLE))
    assert len(plan.trials) == 4 * 2 * 3 * 2 * 5
    assert len(plan.runs) == 3 * len(plan.trials)
    first = plan.trials[0]
    assert re.fullmatch(rf"mlp-[0-9a-f]{{{HEX_DIGITS}}}", first.name)
    assert first.id == f"1.{first.name[4:]}"
    assert len(first.name) == 4 + HEX_DIGITS
    assert first.settings["optimizer"] == "adam"
    assert first.settings["model"] == {"depth": 2, "width": 128}
    assert first.settings["dropout"] == 0.1
    assert first.settings["lr"] == 1.0e-4
    for trial in plan.trials:
        assert trial.repeat == 3
        for key, value in trial.swept.items():
            node: Any = trial.settings
            for part in key.split("."):
                node = node[part]
            assert node == value
        assert 1e-6 <= trial.settings["weight_decay"] <= 1e-2
        assert trial.settings["act"] in ("relu", "gelu")
        assert (trial.settings["model"]["width"], trial.settings["dropout"]) in (
            (128, 0.1),
            (256, 0.3),
        )
    points = {
        tuple(v for k, v in t.swept.items() if "." in k or k in ("lr", "batch_size"))
        for t in plan.trials
    }
    assert len(points) == 48
    seeds = {(r.trial.name, r.repeat): r.seed for r in plan.runs}
    assert seeds[(first.name, 2)] == run_seed(3, first.id, 2)


def test_grid_order_is_as_written_last_axis_fastest(make_experiment: Make) -> None:
    """Grid points come in cartesian order of the axes as written, the last one fastest."""
    entry = grid_entry({"grid": {"lr": [0.1, 0.2], "batch_size": [1, 2, 3]}})
    plan = load_plan(swept(make_experiment, entry))
    assert [(t.settings["lr"], t.settings["batch_size"]) for t in plan.trials] == [
        (0.1, 1), (0.1, 2), (0.1, 3), (0.2, 1), (0.2, 2), (0.2, 3),
    ]  # fmt: skip


def test_written_entries_beside_swept_ones_stay_as_they_were(make_experiment: Make) -> None:
    """An entry without a sweep is one trial, named and numbered as written."""
    plan = load_plan(
        swept(
            make_experiment,
            {"name": "plain", "id": 7, "settings": {"lr": 0.5}},
            grid_entry({"grid": {"lr": [0.1, 0.2]}}, id=8),
        )
    )
    assert plan.trials[0].name == "plain"
    assert plan.trials[0].id == "7"
    assert not plan.trials[0].swept
    assert "swept" not in plan.describe()["trials"][0]
    assert plan.describe()["trials"][1]["swept"] == {"lr": 0.1}


def test_growing_an_axis_keeps_every_existing_trial(make_experiment: Make) -> None:
    """A value added to an axis (or more samples) changes no existing name, id, seed or draw."""
    small = grid_entry(
        {"grid": {"lr": [0.1, 0.2]}, "random": {"samples": 2, "p": {"uniform": [0.0, 1.0]}}}
    )
    before = load_plan(swept(make_experiment, small))
    big = grid_entry(
        {"grid": {"lr": [0.1, 0.3, 0.2]}, "random": {"samples": 3, "p": {"uniform": [0.0, 1.0]}}}
    )
    after = load_plan(swept(make_experiment, big))
    old = {t.name: (t.id, dict(t.settings), t.config_hash) for t in before.trials}
    new = {t.name: (t.id, dict(t.settings), t.config_hash) for t in after.trials}
    assert len(new) == 9
    assert {k: new[k] for k in old} == old
    old_seeds = {r.key: r.seed for r in before.runs}
    assert {k: r.seed for r in after.runs for k in [r.key] if k in old_seeds} == old_seeds


def test_random_draws_follow_the_seed(make_experiment: Make) -> None:
    """Draws depend on sweep.random.seed, else on settings.seed, and on nothing else."""

    def draws(settings_seed: int, sweep_seed: int | None) -> list[float]:
        block: dict[str, Any] = {"samples": 3, "p": {"uniform": [0.0, 1.0]}}
        if sweep_seed is not None:
            block["seed"] = sweep_seed
        root = swept(make_experiment, grid_entry({"random": block}), settings={**SETTINGS})
        write_yaml(root / "base.yaml", {"settings": {"pipeline": {"type": "x:Y"}, "seed": 0}})
        exp = yaml.safe_load((root / "experiment.yaml").read_text())
        exp["settings"]["seed"] = settings_seed
        write_yaml(root / "experiment.yaml", exp)
        return [t.settings["p"] for t in load_plan(root).trials]

    assert draws(1, None) == draws(1, None)
    assert draws(1, None) != draws(2, None)
    assert draws(1, 9) == draws(2, 9)
    assert draws(1, 9) != draws(1, None)


def test_name_template_with_dotted_fields(make_experiment: Make) -> None:
    """A name template formats the swept values, dotted keys included; ids keep the hash."""
    entry = grid_entry(
        {
            "name": "mlp-lr{lr:.0e}-d{model.depth}",
            "grid": {"lr": [0.1, 0.01], "model.depth": [2, 4]},
        },
        name="mlp",
    )
    plan = load_plan(swept(make_experiment, entry))
    assert [t.name for t in plan.trials] == [
        "mlp-lr1e-01-d2", "mlp-lr1e-01-d4", "mlp-lr1e-02-d2", "mlp-lr1e-02-d4",
    ]  # fmt: skip
    assert all(re.fullmatch(rf"1\.[0-9a-f]{{{HEX_DIGITS}}}", t.id) for t in plan.trials)


def test_command_line_sweep_joins_every_entry(make_experiment: Make) -> None:
    """load_plan(sweep=...) adds its axes to every entry, sweeping or not."""
    root = swept(
        make_experiment,
        grid_entry({"grid": {"lr": [0.1, 0.2]}}),
        {"name": "plain", "id": 2},
    )
    plan = load_plan(root, sweep={"grid": {"batch_size": [8, 16]}})
    assert len(plan.trials) == 4 + 2
    assert {t.swept["batch_size"] for t in plan.trials} == {8, 16}
    assert sum(t.name.startswith("plain-") for t in plan.trials) == 2
    random = load_plan(root, sweep={"random": {"samples": 3, "p": {"uniform": [0.0, 1.0]}}})
    assert len(random.trials) == 2 * 3 + 3


def test_command_line_sweep_errors_name_the_command_line(make_experiment: Make) -> None:
    """A mistake in the command line's sweep names <command line> and the key as typed."""
    root = swept(make_experiment, grid_entry({"grid": {"lr": [0.1, 0.2]}}))
    with pytest.raises(ConfigError) as info:
        load_plan(root, sweep={"grid": {"lr": [0.3]}})
    assert info.value.file == "<command line>"
    assert info.value.key == "lr"
    assert "in the trial entry" in str(info.value)
    assert "trials.yaml" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_plan(root, sweep={"grid": {"batch_sise": [1]}})
    assert str(info.value).startswith("<command line>: batch_sise:")
    assert "did you mean 'batch_size'" in str(info.value)
    with pytest.raises(ConfigError, match=r"^<command line>: a sweep needs at least one axis"):
        load_plan(root, sweep={})
    with pytest.raises(ConfigError) as info:
        load_plan(root, sweep={"grid": {"wd": {"range": [0, 4, 0]}}})
    assert str(info.value) == "<command line>: wd.range: the step must not be 0"


def test_swept_key_must_exist_in_the_merged_settings(make_experiment: Make) -> None:
    """A typo in a swept key is refused at its line, with the closest existing key."""
    root = swept(make_experiment, grid_entry({"grid": {"model.dpeth": [1, 2]}}))
    with pytest.raises(ConfigError) as info:
        load_plan(root)
    error = info.value
    assert error.file == str(root / "trials.yaml")
    assert error.key == "[0].sweep.grid.model.dpeth"
    lines = (root / "trials.yaml").read_text().splitlines()
    assert error.line is not None
    assert "model.dpeth" in lines[error.line - 1]
    assert "did you mean 'model.depth'" in str(error)


def test_a_key_set_only_in_base_yaml_can_be_swept(make_experiment: Make) -> None:
    """Existence counts every lower layer: base.yaml's key is sweepable from an entry."""
    root = swept(make_experiment, grid_entry({"grid": {"pipeline.seconds": [0, 1]}}), settings={})
    write_yaml(
        root / "base.yaml", {"settings": {"pipeline": {"type": "pipelines:Sleeper", "seconds": 2}}}
    )
    plan = load_plan(root)
    assert [t.settings["pipeline"] for t in plan.trials] == [
        {"type": "pipelines:Sleeper", "seconds": 0},
        {"type": "pipelines:Sleeper", "seconds": 1},
    ]


def test_huge_grid_is_refused_before_it_is_built(make_experiment: Make) -> None:
    """A 10^8-point grid is refused at once (counted, not built), naming the sweep."""
    axis = {"range": [0, 100]}
    entry = grid_entry({"grid": {k: axis for k in ("lr", "batch_size", "warmup", "p")}})
    with pytest.raises(ConfigError) as info:
        load_plan(swept(make_experiment, entry))
    assert "100,000,000 trials" in str(info.value)
    assert f"at most {MAX_RUNS:,} runs" in str(info.value)
    assert info.value.key == "[0].sweep"


def test_duplicate_generated_names_are_refused(make_experiment: Make) -> None:
    """A template that does not tell the points apart meets the duplicate-name error."""
    entry = grid_entry({"name": "t-{lr}", "grid": {"lr": [0.1, 0.2], "batch_size": [1, 2]}})
    with pytest.raises(ConfigError, match=r"duplicate trial name 't-0\.1'"):
        load_plan(swept(make_experiment, entry))


RESOLVED_SCRIPT = textwrap.dedent(
    """
    import sys
    from expman.config import load_plan
    from expman.workspace.snapshots import dump_yaml
    sys.stdout.buffer.write(dump_yaml(load_plan(sys.argv[1]).describe()))
    """
)


def test_resolved_yaml_is_byte_identical_in_any_process(make_experiment: Make) -> None:
    """Three processes under PYTHONHASHSEED 0, 1, 2 write the same resolved.yaml bytes."""
    root = swept(make_experiment, ISSUE_EXAMPLE)
    env = dict(os.environ)
    source = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    outputs = set()
    for hash_seed in ("0", "1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", RESOLVED_SCRIPT, str(root)],
            env={**env, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            check=True,
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1
    (text,) = outputs
    assert text.count(b"\n- name: mlp-") == 240


def events(workspace: Path) -> list[dict[str, Any]]:
    return list(read_lines(workspace / "exp" / "logs" / "events.jsonl"))


def started(workspace: Path) -> list[str]:
    return [e["trial"] for e in events(workspace) if e["type"] == "RunStarted"]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    source = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return env


def test_kill_9_and_resume_keep_the_plan_byte_identical(
    make_experiment: Make, workspace: Path
) -> None:
    """Killed with SIGKILL mid-sweep, resumed: resolved.yaml is the same bytes, every run once."""
    entry = grid_entry(
        {"grid": {"lr": [0.1, 0.2, 0.3]}, "random": {"samples": 2, "p": {"uniform": [0.0, 1.0]}}}
    )
    root = swept(make_experiment, entry)
    base = {"settings": {"pipeline": {"type": "pipelines:Sleeper", "seconds": 0.3, "epochs": 2}}}
    write_yaml(root / "base.yaml", base)
    resolved = workspace / "exp" / "configs" / "resolved.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "expman", "run", str(root), "-w", str(workspace), "-j", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    try:
        deadline = time.monotonic() + 60
        while not any(e["type"] == "RunFinished" for e in _events_or_none(workspace)):
            assert time.monotonic() < deadline, "no run finished in time"
            time.sleep(0.02)
        first = resolved.read_bytes()
    finally:
        proc.kill()
        proc.wait()
    resumed = run_cli("run", str(root), "-w", str(workspace), "-j", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert resolved.read_bytes() == first
    finished = [
        (e["trial"], e["repeat"])
        for e in events(workspace)
        if e["type"] == "RunFinished" and e["status"] == "completed"
    ]
    assert len(finished) == len(set(finished)) == 6


def _events_or_none(workspace: Path) -> list[dict[str, Any]]:
    path = workspace / "exp" / "logs" / "events.jsonl"
    return list(read_lines(path)) if path.exists() else []


def test_growing_then_shrinking_a_sweep_end_to_end(make_experiment: Make, workspace: Path) -> None:
    """expman run, one value added, run again: only the new point runs; one removed: still shown."""
    root = swept(make_experiment, grid_entry({"grid": {"lr": [0.1, 0.2]}}, repeat=2))
    first = run_cli("run", str(root), "-w", str(workspace))
    assert first.returncode == 0, first.stderr
    before = events(workspace)
    old_names = set(started(workspace))
    assert len(old_names) == 2

    write_yaml(root / "trials.yaml", [grid_entry({"grid": {"lr": [0.1, 0.2, 0.4]}}, repeat=2)])
    grown = run_cli("run", str(root), "-w", str(workspace), "--accept-changes")
    assert grown.returncode == 0, grown.stderr
    after = events(workspace)
    assert after[: len(before)] == before
    new_records = [e for e in after[len(before) :] if e.get("trial") is not None]
    assert {e["trial"] for e in new_records} == {load_plan(root).trials[2].name}, (
        "records about old trials appeared"
    )
    assert "4 run(s) already done" in grown.stdout

    removed = load_plan(root).trials[0].name
    write_yaml(root / "trials.yaml", [grid_entry({"grid": {"lr": [0.2, 0.4]}}, repeat=2)])
    shrunk = run_cli("run", str(root), "-w", str(workspace))
    assert shrunk.returncode == 0, shrunk.stderr
    results = run_cli("results", str(workspace / "exp"), "--format", "json")
    assert results.returncode == 0, results.stderr
    rows = {row["trial"]: row for row in json.loads(results.stdout)["trials"]}
    assert rows[removed]["in_plan"] is False
    assert rows[removed]["counts"] == {"completed": 2}
    assert all(row["in_plan"] for name, row in rows.items() if name != removed)
    table = run_cli("results", str(workspace / "exp"))
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if removed in line)
    assert "not in the plan" in row
    # Its settings come from its own trial.yaml: the table's columns stay the swept key's.
    assert rows[removed]["settings"]["lr"] == 0.1
    header = next(line for line in table.stdout.splitlines() if " trial " in f" {line} ")
    words = header.split()
    assert words[words.index("trial") + 1 : words.index("n")] == ["lr"]


def test_validate_shows_a_short_table_of_swept_trials(make_experiment: Make) -> None:
    """expman validate lists swept trials (name, swept values, repeat), cut after 20 rows."""
    root = swept(make_experiment, ISSUE_EXAMPLE, {"name": "plain", "id": 9})
    done = run_cli("validate", str(root))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    header = next(line for line in out.splitlines() if line.split()[:2] == ["trial", "lr"])
    assert header.split() == [
        "trial", "lr", "batch_size", "model.depth", "model.width", "dropout",
        "weight_decay", "warmup", "act", "p", "repeat",
    ]  # fmt: skip
    rows = [line for line in out.splitlines() if line.strip().startswith("mlp-")]
    assert len(rows) == 20
    assert rows[0].split()[1:3] == ["0.0001", "32"]
    assert rows[0].split()[-1] == "3"
    assert "... and 220 more swept trials" in out
    assert "total: 241 trials, 721 runs" in out
    assert "trial plain (id 9)" in out
    assert len(out.splitlines()) < 40


def test_the_readme_sweep_example_is_the_one_described(make_experiment: Make) -> None:
    """The README's sweep example, as printed, expands to the 240 trials of 3 runs it says."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Sweeps") :]
    block = section[section.index("```yaml") + len("```yaml") : section.index("```\n", 10)]
    entries = yaml.safe_load(block)
    assert "240 trials of 3\nruns each" in section
    plan = load_plan(swept(make_experiment, *entries))
    assert (len(plan.trials), len(plan.runs)) == (240, 720)


@pytest.mark.parametrize(
    ("sweep", "key", "words"),
    [
        ("grid", "[0].sweep", "expected a mapping, got a string"),
        ({}, "[0].sweep", "expected at least one axis"),
        ({"grdi": {"lr": [1]}}, "[0].sweep.grdi", "unknown key; expected one of"),
        ({"grid": {"lr": [1]}, "random": {"lr": {"choice": [2]}}}, "[0].sweep.random.lr",
         "'lr' is swept twice"),
        ({"grid": {"lr": [1, 1]}}, "[0].sweep.grid.lr", "the value 1 appears twice"),
        ({"zip": {"lr": [1, 2], "batch_size": [3]}}, "[0].sweep.zip.batch_size",
         "equal lengths"),
        ({"random": {"samples": 0}}, "[0].sweep.random.samples", "integer >= 1"),
        ({"name": 3, "grid": {"lr": [1]}}, "[0].sweep.name", "expected a name template"),
        ({"name": "x-{lr:d}", "grid": {"lr": [0.5]}}, "[0].sweep.name",
         "the name template cannot format"),
        ({"name": "a/{lr}", "grid": {"lr": [1]}}, "[0].name", "not usable as a directory name"),
    ],
)  # fmt: skip
def test_sweep_block_mistakes(make_experiment: Make, sweep: Any, key: str, words: str) -> None:
    """Each malformed sweep block is one ConfigError at its key in trials.yaml."""
    root = swept(make_experiment, grid_entry(sweep))
    with pytest.raises(ConfigError) as info:
        load_plan(root)
    assert info.value.file == str(root / "trials.yaml")
    assert info.value.key == key
    assert words in str(info.value)


def test_one_zip_group_may_be_written_as_a_mapping(make_experiment: Make) -> None:
    """`zip: {a: [...], b: [...]}` is one group of paired axes, like a one-item list."""
    entry = grid_entry({"zip": {"lr": [0.1, 0.2], "batch_size": [8, 16]}})
    plan = load_plan(swept(make_experiment, entry))
    assert [(t.settings["lr"], t.settings["batch_size"]) for t in plan.trials] == [
        (0.1, 8),
        (0.2, 16),
    ]


def test_interpolations_see_the_swept_values(make_experiment: Make) -> None:
    """`${settings.lr}` in a lower layer resolves to each trial's swept lr."""
    settings = {**SETTINGS, "tag": "lr=${settings.lr}"}
    entry = grid_entry({"grid": {"lr": [0.1, 0.2]}, "name": "t{lr}"})
    plan = load_plan(swept(make_experiment, entry, settings=settings))
    assert [t.settings["tag"] for t in plan.trials] == ["lr=0.1", "lr=0.2"]
    own = grid_entry({"grid": {"lr": [0.3]}}, settings={"tag": "${trial.name}"})
    (trial,) = load_plan(swept(make_experiment, own)).trials
    assert trial.settings["tag"] == trial.name


def test_command_line_sweep_options_must_agree_with_the_entry(make_experiment: Make) -> None:
    """A command-line samples that differs from the entry's is refused, naming both."""
    entry = grid_entry({"random": {"samples": 2, "p": {"uniform": [0.0, 1.0]}}})
    root = swept(make_experiment, entry)
    with pytest.raises(ConfigError) as info:
        load_plan(root, sweep={"random": {"samples": 3}})
    assert info.value.file == "<command line>"
    assert "samples 3 differs from the entry's 2" in str(info.value)
    assert len(load_plan(root, sweep={"random": {"samples": 2}}).trials) == 2


def test_a_sweep_key_may_be_written_with_settings_as_on_the_command_line(
    make_experiment: Callable[..., Path],
) -> None:
    """``settings.lr`` in a sweep axis is ``lr``: the same trials as writing ``lr``."""
    base = {"pipeline": {"type": "pipelines:Sleeper"}, "lr": 0.1}
    plain = make_experiment(
        base=base,
        trials=[{"name": "a", "id": 1, "sweep": {"grid": {"lr": [0.1, 0.2]}}}],
        folder="plain",
    )
    prefixed = make_experiment(
        base=base,
        trials=[{"name": "a", "id": 1, "sweep": {"grid": {"settings.lr": [0.1, 0.2]}}}],
        folder="prefixed",
    )
    one, two = load_plan(plain), load_plan(prefixed)
    assert [t.name for t in one.trials] == [t.name for t in two.trials]
    assert [t.settings["lr"] for t in two.trials] == [0.1, 0.2]
