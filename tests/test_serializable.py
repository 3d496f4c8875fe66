"""YAMLSerializable: the specification's contract (config in, from_config, saved back to YAML)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

import expman
from expman import YAMLSerializable
from expman.pipeline import build_pipeline
from expman.serializable import build

#: Every config a SpecModel.from_config was called with.
FROM_CONFIG_CALLS: list[dict[str, Any]] = []


@YAMLSerializable.register("SpecModel")
class SpecModel(YAMLSerializable):
    """The specification's example, as written there."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.hidden = config["hidden"]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SpecModel:
        FROM_CONFIG_CALLS.append(dict(config))
        return cls(config)


class Layered(YAMLSerializable):
    """Passes its keyword parameters to YAMLSerializable.__init__ (not registered)."""

    def __init__(self, width: int = 4, names: tuple[str, ...] = ()) -> None:
        super().__init__(width=width, names=list(names))
        self.width = width


class KeywordOnly(YAMLSerializable):
    """Stores nothing itself: the builder records the config it was built from."""

    def __init__(self, size: int) -> None:
        self.size = size


class Delegating(YAMLSerializable):
    """Its own from_config adds a default, then hands over to the base's."""

    def __init__(self, depth: int, scale: float = 1.0) -> None:
        super().__init__(depth=depth, scale=scale)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Any:
        return super().from_config({"scale": 2.0, **config})


def test_the_specification_example_builds_through_its_own_from_config() -> None:
    """YAMLSerializable.from_config({type: SpecModel, ...}) calls SpecModel.from_config."""
    FROM_CONFIG_CALLS.clear()
    model = YAMLSerializable.from_config({"type": "SpecModel", "hidden": 16})
    assert isinstance(model, SpecModel)
    assert model.hidden == 16
    assert model.config == {"hidden": 16}
    assert FROM_CONFIG_CALLS == [{"hidden": 16}]


def test_the_builder_calls_a_class_own_from_config_and_others_with_keywords() -> None:
    """build() uses from_config where a class defines it, else the constructor's keywords."""
    FROM_CONFIG_CALLS.clear()
    assert build(SpecModel, {"hidden": 3}).hidden == 3
    assert FROM_CONFIG_CALLS == [{"hidden": 3}]
    built = build(KeywordOnly, {"size": 5})
    assert built.size == 5
    assert built.config == {"size": 5}


def test_the_specification_example_round_trips_through_yaml(tmp_path: Path) -> None:
    """to_yaml writes {type, params}; from_config of that YAML builds an equal object."""
    model = SpecModel({"hidden": 8})
    assert model.to_config() == {"type": "SpecModel", "hidden": 8}
    path = tmp_path / "model.yaml"
    text = model.to_yaml(path)
    assert path.read_text() == text
    assert yaml.safe_load(text) == {"type": "SpecModel", "hidden": 8}
    again = YAMLSerializable.from_config(yaml.safe_load(path.read_text()))
    assert isinstance(again, SpecModel)
    assert again.hidden == 8
    assert again.to_config() == model.to_config()
    # The class's own from_config takes its saved config (type included) directly too.
    assert SpecModel.from_config(model.to_config()).to_config() == model.to_config()


def test_save_writes_the_object_config_and_names_an_unregistered_class_by_import_path(
    tmp_path: Path,
) -> None:
    """YAMLSerializable.save(obj, path): an unregistered class is saved as module:qualname."""
    layered = Layered(width=7, names=("a", "b"))
    path = YAMLSerializable.save(layered, tmp_path / "layered.yaml")
    saved = yaml.safe_load(path.read_text())
    assert saved == {"type": f"{__name__}:Layered", "width": 7, "names": ["a", "b"]}
    again = YAMLSerializable.from_config(saved)
    assert isinstance(again, Layered)
    assert again.width == 7


def test_a_subclass_from_config_builds_that_class_and_refuses_another_type() -> None:
    """Sub.from_config(params) needs no type; a type naming an unrelated class is refused."""
    assert Layered.from_config({"width": 2}).width == 2
    assert Layered.from_config({"type": f"{__name__}:Layered", "width": 3}).width == 3
    with pytest.raises(TypeError, match="'SpecModel' is not a Layered"):
        Layered.from_config({"type": "SpecModel", "hidden": 1})
    with pytest.raises(ValueError, match="expected a mapping with a 'type' key"):
        YAMLSerializable.from_config({"hidden": 1})


def test_an_own_from_config_may_hand_over_to_the_base_one() -> None:
    """super().from_config(config) inside a class's own from_config builds it with keywords."""
    built = YAMLSerializable.from_config({"type": f"{__name__}:Delegating", "depth": 2})
    assert isinstance(built, Delegating)
    assert built.to_config() == {"type": f"{__name__}:Delegating", "depth": 2, "scale": 2.0}


def test_built_in_callbacks_built_with_keywords_save_their_config() -> None:
    """A callback built from YAML keywords (EarlyStopping) saves and rebuilds the same way."""
    assert expman.EarlyStopping  # the built-in callbacks register when first imported
    stopper = YAMLSerializable.from_config(
        {"type": "EarlyStopping", "metric": "val_loss", "patience": 2}
    )
    assert isinstance(stopper, expman.EarlyStopping)
    saved = stopper.to_config()
    assert saved == {"type": "EarlyStopping", "metric": "val_loss", "patience": 2}
    again = YAMLSerializable.from_config(yaml.safe_load(stopper.to_yaml()))
    assert isinstance(again, expman.EarlyStopping)
    assert again.to_config() == saved


def test_a_pipeline_built_from_settings_saves_its_settings(
    make_experiment: Callable[..., Path],
) -> None:
    """build_pipeline records settings.pipeline on the object; to_config gives it back."""
    root = make_experiment()
    with expman.serializable.import_path(root):
        pipeline = build_pipeline({"type": "pipelines:Sleeper", "seconds": 0.0, "epochs": 3})
        assert pipeline.epochs == 3
        saved = pipeline.to_config()
        assert saved == {"type": "pipelines:Sleeper", "seconds": 0.0, "epochs": 3}
        assert build_pipeline(saved).epochs == 3


def test_an_object_without_a_config_or_with_a_non_yaml_value_cannot_be_saved() -> None:
    """to_config says what is missing, or which key holds a value YAML cannot hold."""
    with pytest.raises(TypeError, match=r"KeywordOnly\.to_config: the object has no config"):
        KeywordOnly(size=1).to_config()
    with pytest.raises(TypeError, match=r"Layered\.to_config: names\[0\]: a object is not"):
        Layered(names=(object(),)).to_config()  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected the config as a mapping, got list"):
        SpecModel([1, 2])  # type: ignore[arg-type]


async def test_an_experiment_builds_a_pipeline_and_a_callback_through_their_from_config(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """A pipeline and a callback with their own from_config run in a real experiment."""
    root = make_experiment(
        base={
            "pipeline": {"type": "ConfiguredPipeline", "epochs-to-run": 4},
            "callbacks": [{"type": "StopAfter", "stop-after": 2}],
        }
    )
    (root / "configured.py").write_text(
        textwrap.dedent(
            '''
            import expman


            @expman.register("ConfiguredPipeline")
            class ConfiguredPipeline(expman.Pipeline):
                """Takes a key no keyword could: built by its own from_config."""

                @classmethod
                def from_config(cls, config):
                    pipeline = cls()
                    pipeline.epochs = config["epochs-to-run"]
                    return pipeline

                async def run(self, ctx):
                    for epoch in range(self.epochs):
                        if await ctx.epoch_end(epoch, {"loss": 1.0}):
                            break
                    return {"ran": epoch + 1}


            @expman.register("StopAfter")
            class StopAfter(expman.Callback):
                def __init__(self, config):
                    super().__init__()
                    self.after = config["stop-after"]

                @classmethod
                def from_config(cls, config):
                    return cls(config)

                async def on_epoch_end(self, event):
                    if event.epoch + 1 == self.after:
                        await self.request_stop("enough")
            '''
        )
    )
    result = await expman.run_experiment(root, workspace=workspace)
    (run,) = result.runs
    assert run.status == expman.RunStatus.STOPPED
    assert run.metrics["ran"] == 2
