"""Each stage of planning on its own: load, validate, expand, resolve (real files in tmp_path)."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from expman.config import load_plan
from expman.config.entries import EntrySource, TrialEntry, check_entry
from expman.config.expansion import DEFAULT_EXPANDERS, MAX_RUNS, expand_entries, unchanged
from expman.config.loading import load_yaml
from expman.config.overrides import check_values, parse_overrides
from expman.config.resolution import config_hash, plan_runs, resolve_trial, run_seed
from expman.config.sources import read_config_dir
from expman.config.validation import validate_config, validate_trials
from expman.errors import ConfigError

EXPERIMENT = """\
name: exp
id: 7
desc: stages
settings:
  lr: 0.1
  tag: ${experiment.name}-${trial.name}
execution:
  max_retries: 1
"""

BASE = """\
settings:
  pipeline:
    type: pipelines:Sleeper
  lr: 1.0
  epochs: 2
"""

TRIALS = """\
- name: a
  id: 1
  settings:
    lr: 0.5
- name: b
  id: 2
  repeat: 3
  resources:
    cpus: 2
"""


def write_config(root: Path, **files: str) -> Path:
    """A config folder of the given files (``experiment``, ``trials``, ``base``, ``env``)."""
    root.mkdir(parents=True, exist_ok=True)
    texts = {"experiment": EXPERIMENT, "trials": TRIALS, "base": BASE, **files}
    for name, text in texts.items():
        if text is not None:
            (root / f"{name}.yaml").write_text(textwrap.dedent(text))
    return root


def entries_of(tmp_path: Path, text: str) -> tuple[TrialEntry, ...]:
    path = tmp_path / "trials.yaml"
    path.write_text(textwrap.dedent(text))
    return validate_trials(load_yaml(path))


class TestLoad:
    def test_reads_required_and_optional_documents(self, tmp_path: Path) -> None:
        """experiment.yaml and trials.yaml are read, base.yaml and env.yaml when present."""
        sources = read_config_dir(write_config(tmp_path / "c"))
        assert sources.experiment.data["name"] == "exp"
        assert [t["name"] for t in sources.trials.data] == ["a", "b"]
        assert sources.base is not None
        assert sources.env is None
        assert list(sources.documents) == ["experiment.yaml", "base.yaml", "trials.yaml"]

    def test_keeps_the_line_of_every_key(self, tmp_path: Path) -> None:
        """Each document knows the line of each key path (errors need it later)."""
        sources = read_config_dir(write_config(tmp_path / "c"))
        assert sources.trials.line("[1].repeat") == 7
        assert sources.experiment.line("execution.max_retries") == 8

    def test_missing_trials_file_is_named(self, tmp_path: Path) -> None:
        """A config folder without trials.yaml is a ConfigError naming that file."""
        root = write_config(tmp_path / "c")
        (root / "trials.yaml").unlink()
        with pytest.raises(ConfigError, match=r"trials\.yaml: required file is missing"):
            read_config_dir(root)

    def test_empty_experiment_file_is_refused(self, tmp_path: Path) -> None:
        """An empty experiment.yaml is refused as empty, not as a missing key."""
        root = write_config(tmp_path / "c", experiment="")
        with pytest.raises(ConfigError, match=r"experiment\.yaml: file is empty"):
            read_config_dir(root)

    def test_a_file_instead_of_a_folder_is_refused(self, tmp_path: Path) -> None:
        """A path that is not a folder says what a config folder holds."""
        (tmp_path / "f").write_text("x")
        with pytest.raises(ConfigError, match=r"not a directory with experiment\.yaml"):
            read_config_dir(tmp_path / "f")


class TestValidate:
    def test_header_layers_execution_and_workspace(self, tmp_path: Path) -> None:
        """Settings layers are base then experiment; env.yaml's execution wins; paths resolve."""
        env = "workspace: ../ws\nexecution:\n  max_retries: 3\nmax_concurrency: 2\n"
        config = validate_config(read_config_dir(write_config(tmp_path / "c", env=env)))
        assert (config.name, config.id, config.desc) == ("exp", "7", "stages")
        assert [layer.doc.path.name for layer in config.layers] == ["base.yaml", "experiment.yaml"]
        assert config.layers[0].settings["lr"] == 1.0
        assert config.execution == {"max_retries": 3, "max_concurrency": 2}
        assert config.workspace == (tmp_path / "ws").resolve()

    def test_entries_carry_their_source_and_defaults(self, tmp_path: Path) -> None:
        """Each entry knows its file and key path; repeat, desc and resources default."""
        a, b = entries_of(tmp_path, TRIALS)
        assert (a.name, a.id, a.repeat, a.desc, a.resources) == ("a", "1", 1, "", {})
        assert a.settings == {"lr": 0.5}
        assert (b.repeat, b.resources) == (3, {"cpus": 2.0})
        assert (a.source.doc.path.name, a.source.key, b.source.key) == ("trials.yaml", "[0]", "[1]")

    def test_a_wrong_entry_is_named_by_file_line_and_key(self, tmp_path: Path) -> None:
        """A repeat of the wrong type names trials.yaml, its line and [1].repeat."""
        with pytest.raises(ConfigError) as info:
            entries_of(tmp_path, TRIALS.replace("repeat: 3", "repeat: three"))
        assert str(info.value).endswith(
            "trials.yaml:7: [1].repeat: expected an integer, got a string 'three'"
        )

    def test_plan_wide_rules_wait_for_expansion(self, tmp_path: Path) -> None:
        """Two entries of the same name pass validation; the expand stage refuses them."""
        entries = entries_of(tmp_path, TRIALS.replace("name: b", "name: a"))
        assert [e.name for e in entries] == ["a", "a"]
        with pytest.raises(ConfigError, match=r":5: \[1\]\.name: duplicate trial name 'a'"):
            expand_entries(entries)

    def test_an_unknown_experiment_key_is_named(self, tmp_path: Path) -> None:
        """experiment.yaml with a misspelled key names that key and its line."""
        root = write_config(tmp_path / "c", experiment=EXPERIMENT + "setings: {}\n")
        with pytest.raises(ConfigError, match=r"experiment\.yaml:9: setings: unknown key"):
            validate_config(read_config_dir(root))


def doubled(entry: TrialEntry) -> Iterator[TrialEntry]:
    """A test expander: each entry becomes two, ``<name>-0`` and ``<name>-1``."""
    for k in range(2):
        yield replace(entry, name=f"{entry.name}-{k}", id=f"{entry.id}.{k}")


class TestExpand:
    def test_the_default_is_the_identity(self, tmp_path: Path) -> None:
        """Without other expanders each entry stands for itself (the very object)."""
        entries = entries_of(tmp_path, TRIALS)
        assert DEFAULT_EXPANDERS == (unchanged,)
        expanded = expand_entries(entries)
        assert len(expanded) == 2
        assert all(x is y for x, y in zip(expanded, entries, strict=True))

    def test_generated_entries_keep_the_original_source(self, tmp_path: Path) -> None:
        """One entry into two: both keep the file and key of the entry they came from."""
        expanded = expand_entries(entries_of(tmp_path, TRIALS), [doubled])
        assert [e.name for e in expanded] == ["a-0", "a-1", "b-0", "b-1"]
        assert [e.source.key for e in expanded] == ["[0]", "[0]", "[1]", "[1]"]
        assert [e.source.generated for e in expanded] == ["a-0", "a-1", "b-0", "b-1"]
        assert expanded[2].repeat == 3

    def test_expanders_apply_in_order(self, tmp_path: Path) -> None:
        """Each expander's outputs go through the next one, in plan order."""
        entries = entries_of(tmp_path, "- name: a\n  id: 1\n")
        assert [e.name for e in expand_entries(entries, [doubled, doubled])] == [
            "a-0-0",
            "a-0-1",
            "a-1-0",
            "a-1-1",
        ]

    def test_an_invalid_generated_entry_names_the_original_line(self, tmp_path: Path) -> None:
        """A generated entry with repeat 0 is refused at the original entry's line."""

        def second_broken(entry: TrialEntry) -> list[TrialEntry]:
            return [replace(entry, name="ok", id="1"), replace(entry, name="bad", id="2", repeat=0)]

        entries = entries_of(tmp_path, "- name: a\n  id: 1\n  repeat: 2\n")
        with pytest.raises(ConfigError) as info:
            expand_entries(entries, [second_broken])
        assert str(info.value) == (
            f"{tmp_path / 'trials.yaml'}:3: [0].repeat: expected an integer >= 1, got 0"
            " (trial 'bad', generated from trial [0])"
        )

    def test_a_generated_name_that_cannot_be_a_folder_is_refused(self, tmp_path: Path) -> None:
        """A generated name with a slash is refused like a written one, at [0].name."""
        entries = entries_of(tmp_path, "- name: a\n  id: 1\n")
        slash = [lambda e: [replace(e, name="a/1")]]
        with pytest.raises(ConfigError, match=r"trials\.yaml:1: \[0\]\.name: 'a/1' is not usable"):
            expand_entries(entries, slash)

    def test_generated_duplicates_are_refused(self, tmp_path: Path) -> None:
        """Two generated trials of one id name the entry they came from."""
        entries = entries_of(tmp_path, "- name: a\n  id: 1\n")
        same_id = [lambda e: [replace(e, name="x"), replace(e, name="y")]]
        with pytest.raises(ConfigError, match=r":2: \[0\]\.id: duplicate trial id '1'"):
            expand_entries(entries, same_id)

    def test_runs_are_counted_as_entries_come_out(self, tmp_path: Path) -> None:
        """An endless expander is stopped at MAX_RUNS runs, not built in full."""

        def endless(entry: TrialEntry) -> Iterator[TrialEntry]:
            for k in itertools.count():
                yield replace(entry, name=f"a{k}", id=str(k), repeat=MAX_RUNS // 10)

        entries = entries_of(tmp_path, "- name: a\n  id: 1\n")
        with pytest.raises(ConfigError, match=r"\[0\]\.repeat: repeat 100000 brings the plan"):
            expand_entries(entries, [endless])

    def test_expanding_to_nothing_is_refused(self, tmp_path: Path) -> None:
        """Expanders that drop every entry leave no trial: a ConfigError on trials.yaml."""
        entries = entries_of(tmp_path, "- name: a\n  id: 1\n")
        with pytest.raises(ConfigError, match="expected at least one trial"):
            expand_entries(entries, [lambda e: []])

    def test_an_expander_returning_something_else_is_a_bug(self, tmp_path: Path) -> None:
        """An expander that yields a dict is a TypeError (a bug in the expander)."""
        entries = entries_of(tmp_path, "- name: a\n  id: 1\n")
        with pytest.raises(TypeError, match="expected TrialEntry"):
            expand_entries(entries, [lambda e: [{"name": "a"}]])  # type: ignore[list-item]

    def test_errors_after_expansion_point_at_the_original_file_and_line(
        self, tmp_path: Path
    ) -> None:
        """A bad seed in a generated trial, found while resolving, names trials.yaml:3."""

        def seeds(entry: TrialEntry) -> list[TrialEntry]:
            return [
                replace(entry, name=f"{entry.name}1", id=f"{entry.id}.1", settings={"seed": 1}),
                replace(entry, name=f"{entry.name}2", id=f"{entry.id}.2", settings={"seed": "x"}),
            ]

        root = write_config(tmp_path / "c")
        with pytest.raises(ConfigError) as info:
            load_plan(root, expanders=[seeds])
        assert str(info.value) == (
            f"{root / 'trials.yaml'}:3: [0].settings.seed: expected an integer (the"
            " experiment's seed), got a string 'x' (trial 'a2', generated from trial [0])"
        )

    def test_a_later_error_about_a_generated_trials_setting_names_its_line(
        self, tmp_path: Path
    ) -> None:
        """TrialSpec.error on a generated trial points at the original key's line."""
        plan = load_plan(write_config(tmp_path / "c"), expanders=[doubled])
        assert [t.name for t in plan.trials] == ["a-0", "a-1", "b-0", "b-1"]
        assert [t.index for t in plan.trials] == [0, 1, 2, 3]
        message = str(plan.trials[1].error("lr", "too large"))
        assert message.endswith(
            "trials.yaml:4: [0].settings.lr: too large (trial 'a-1', generated from trial [0])"
        )
        entry_message = str(plan.trials[3].entry_error("resources.cpus", "too many"))
        assert entry_message.endswith(
            "trials.yaml:9: [1].resources.cpus: too many (trial 'b-1', generated from trial [1])"
        )
        assert len(plan.runs) == 2 * 1 + 2 * 3


class TestResolve:
    def test_layers_merge_and_interpolate_per_trial(self, tmp_path: Path) -> None:
        """base < experiment < trial < overrides < values; ${...} sees experiment and trial."""
        config = validate_config(read_config_dir(write_config(tmp_path / "c")))
        caller = (parse_overrides(["epochs=5"]).layer(), check_values({"lr": 0.01}).layer())
        a, b = config.entries
        header = {"name": config.name, "id": config.id, "desc": config.desc}
        trial = resolve_trial(b, 1, files=config.layers, caller=caller, experiment=header)
        assert trial.settings == {
            "pipeline": {"type": "pipelines:Sleeper"},
            "lr": 0.01,
            "epochs": 5,
            "tag": "exp-b",
        }
        assert (trial.index, trial.repeat, trial.resources) == (1, 3, {"cpus": 2.0})
        assert trial.config_hash == config_hash(dict(sorted(trial.settings.items(), reverse=True)))
        own = resolve_trial(a, 0, files=config.layers, experiment=header)
        assert own.settings["lr"] == 0.5

    def test_runs_get_deterministic_seeds(self, tmp_path: Path) -> None:
        """Each repeat is a run seeded from settings.seed, the trial id and its index."""
        config = validate_config(read_config_dir(write_config(tmp_path / "c")))
        header = {"name": "exp", "id": "7", "desc": ""}
        trials = [
            resolve_trial(e, i, files=config.layers, experiment=header)
            for i, e in enumerate(config.entries)
        ]
        runs = plan_runs(trials)
        assert [r.label for r in runs] == ["a/run_0", "b/run_0", "b/run_1", "b/run_2"]
        assert [r.seed for r in runs[1:]] == [run_seed(0, "2", k) for k in range(3)]

    def test_an_unresolvable_interpolation_names_the_entry(self, tmp_path: Path) -> None:
        """${settings.nope} is a ConfigError naming trials.yaml, the entry's line and trial."""
        trials = "- name: a\n  id: 1\n- name: b\n  id: 2\n  settings:\n    x: ${settings.nope}\n"
        root = write_config(tmp_path / "c", trials=trials)
        with pytest.raises(ConfigError, match=r"trials\.yaml:3: \[1\] \(b\): .*cannot resolve"):
            load_plan(root)

    def test_the_stages_compose_into_load_plan(self, tmp_path: Path) -> None:
        """load_plan gives what the stages give one after the other."""
        root = write_config(tmp_path / "c")
        config = validate_config(read_config_dir(root))
        header = {"name": config.name, "id": config.id, "desc": config.desc}
        by_stages = [
            resolve_trial(e, i, files=config.layers, experiment=header)
            for i, e in enumerate(expand_entries(config.entries))
        ]
        plan = load_plan(root)
        assert [t.settings for t in plan.trials] == [t.settings for t in by_stages]
        assert [r.seed for r in plan.runs] == [r.seed for r in plan_runs(by_stages)]
        assert plan.execution.max_retries == 1


def test_check_entry_is_the_same_check_for_written_and_generated(tmp_path: Path) -> None:
    """check_entry of an entry's own YAML gives back an equal entry."""
    (entry,) = entries_of(tmp_path, "- name: a\n  id: 3\n  desc: d\n  settings: {x: 1}\n")
    again = check_entry(EntrySource(entry.source.doc, "[0]"), entry.as_yaml())
    assert again == entry
