"""Short names: a config folder's modules are imported before its types are resolved."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import expman
from expman.errors import ConfigError
from expman.experiment import prepare
from expman.serializable import import_path, resolve_type

from .conftest import run_cli

#: The README's custom callback, in the config folder's callbacks.py.
STOP_WHEN_PERFECT = textwrap.dedent(
    """
    from expman import Callback, register


    @register("StopWhenPerfect")
    class StopWhenPerfect(Callback):
        def __init__(self, metric: str = "val_acc"):
            super().__init__()
            self.metric, self.perfect_epochs = metric, 0

        async def on_epoch_end(self, event):
            if event.metrics.get(self.metric) == 1.0:
                self.perfect_epochs += 1
            if self.perfect_epochs == 2:
                await self.request_stop("perfect twice", scope="trial")
    """
)

PERFECT_PIPELINE = textwrap.dedent(
    '''
    import expman


    class Perfect(expman.Pipeline):
        """Reports val_acc 1.0 from the first epoch on, for 10 epochs."""

        async def run(self, ctx):
            for epoch in range(10):
                if await ctx.epoch_end(epoch, {"val_acc": 1.0}):
                    break
            return {"epochs_run": epoch + 1}
    '''
)


def perfect_experiment(make_experiment: Callable[..., Path]) -> Path:
    root = make_experiment(
        base={
            "pipeline": {"type": "perfect:Perfect"},
            "callbacks": [{"type": "StopWhenPerfect"}],
        }
    )
    (root / "perfect.py").write_text(PERFECT_PIPELINE)
    (root / "callbacks.py").write_text(STOP_WHEN_PERFECT)
    return root


async def test_a_name_registered_in_the_config_folder_is_usable_from_base_yaml(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """type: StopWhenPerfect works with nothing imported: callbacks.py beside the YAML is."""
    root = perfect_experiment(make_experiment)
    result = await expman.run_experiment(root, workspace=workspace)
    (run,) = result.runs
    assert run.status == expman.RunStatus.STOPPED
    assert run.reason == "perfect twice"
    assert run.metrics["epochs_run"] == 2


def test_a_fresh_process_validates_a_config_naming_a_folder_registered_type(
    make_experiment: Callable[..., Path],
) -> None:
    """expman validate in a new interpreter resolves StopWhenPerfect from callbacks.py."""
    root = perfect_experiment(make_experiment)
    done = run_cli("validate", str(root))
    assert done.returncode == 0, done.stderr
    assert "configs are valid" in done.stdout


def test_only_top_level_modules_not_private_or_tests_are_imported(
    make_experiment: Callable[..., Path],
) -> None:
    """_*.py, test_*.py, setup.py, conftest.py and subfolders' modules are never imported."""
    root = perfect_experiment(make_experiment)
    bomb = "raise RuntimeError('must not be imported')\n"
    for name in ("_private.py", "test_model.py", "setup.py", "conftest.py"):
        (root / name).write_text(bomb)
    (root / "sub").mkdir()
    (root / "sub" / "deep.py").write_text(bomb)
    (root / "sub" / "__init__.py").write_text(bomb)
    plan = prepare(root)
    assert plan.trials[0].settings["callbacks"] == [{"type": "StopWhenPerfect"}]


def test_the_folder_modules_are_imported_once_per_process(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """Preparing the same folder twice imports its modules once."""
    root = perfect_experiment(make_experiment)
    marks = tmp_path / "imports.txt"
    (root / "counting.py").write_text(
        f"with open({str(marks)!r}, 'a') as f:\n    f.write('imported\\n')\n"
    )
    prepare(root)
    prepare(root)
    assert marks.read_text() == "imported\n"


def test_a_module_that_fails_to_import_is_a_config_error_naming_its_file_and_line(
    make_experiment: Callable[..., Path],
) -> None:
    """An exception while importing callbacks.py names the file, its line and the error."""
    root = perfect_experiment(make_experiment)
    (root / "callbacks.py").write_text(STOP_WHEN_PERFECT + "\nundefined_name + 1\n")
    with pytest.raises(ConfigError) as caught:
        prepare(root)
    error = caught.value
    assert error.file == str(root / "callbacks.py")
    assert error.line == STOP_WHEN_PERFECT.count("\n") + 2
    assert "NameError: name 'undefined_name' is not defined" in error.message
    done = run_cli("validate", str(root))
    assert done.returncode == 2
    assert "callbacks.py" in done.stderr
    assert "NameError" in done.stderr


def test_a_syntax_error_in_a_folder_module_points_at_its_line(
    make_experiment: Callable[..., Path],
) -> None:
    """A SyntaxError in a folder module is a ConfigError at the line Python reports."""
    root = perfect_experiment(make_experiment)
    (root / "broken.py").write_text("x = 1\ndef oops(:\n")
    with pytest.raises(ConfigError, match="SyntaxError") as caught:
        prepare(root)
    assert caught.value.file == str(root / "broken.py")
    assert caught.value.line == 2


def test_two_folders_registering_the_same_name_each_resolve_their_own(tmp_path: Path) -> None:
    """A name registered by a folder's own module wins there, also after another folder's."""
    folders = []
    for label in ("first", "second"):
        folder = tmp_path / label
        folder.mkdir()
        (folder / "shared_names.py").write_text(
            textwrap.dedent(
                f"""
                import expman

                @expman.register("SameName")
                class SameName(expman.Callback):
                    label = {label!r}
                """
            )
        )
        folders.append(folder)
    labels = []
    for folder in (*folders, folders[0]):
        with import_path(folder):
            labels.append(resolve_type("SameName").label)
    assert labels == ["first", "second", "first"]


@pytest.mark.slow
async def test_a_folder_registered_pipeline_name_works_in_a_worker_process(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """The process worker imports the config folder's modules before resolving names too."""
    root = make_experiment(
        base={"pipeline": {"type": "ShortNamed"}},
        experiment={"name": "exp", "id": 1, "settings": {}, "execution": {"executor": "process"}},
    )
    (root / "short.py").write_text(
        "import expman\n\n\n@expman.register('ShortNamed')\nclass ShortNamed(expman.Pipeline):\n"
        "    def run(self, ctx):\n        ctx.epoch_end(0, {'loss': 0.5})\n        return {}\n"
    )
    result = await expman.run_experiment(root, workspace=workspace)
    assert result.status == "completed", result.runs[0].error
