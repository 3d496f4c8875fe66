"""Pipeline, callback and subscriber parameters are checked at plan time, or said not to be."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from expman.errors import ConfigError
from expman.experiment import prepare
from expman.experiment.preflight import parameter_notes

from .conftest import run_cli

MODELS = textwrap.dedent(
    '''
    import expman
    from expman.serializable import InvalidParam


    class Mlp(expman.Pipeline):
        """Named parameters only; its base takes none."""

        def __init__(self, hidden=32, lr=0.1):
            super().__init__()
            self.hidden, self.lr = hidden, lr

        async def run(self, ctx):
            await ctx.epoch_end(0, {"loss": 1.0 / self.hidden})
            return {}


    class TunedMlp(Mlp):
        """No constructor of its own: Mlp's parameters are its parameters."""


    class WideMlp(Mlp):
        """Adds a parameter and hands the rest to Mlp through **params."""

        def __init__(self, dropout=0.0, **params):
            super().__init__(**params)
            self.dropout = dropout


    class Bare(expman.Pipeline):
        """No constructor of its own: takes no parameters."""

        async def run(self, ctx):
            await ctx.epoch_end(0, {"loss": 1.0})
            return {}


    class Loose(expman.Pipeline):
        """Takes **params itself: any key may be meant for it."""

        def __init__(self, hidden=32, **params):
            super().__init__(**params)
            self.hidden = hidden

        async def run(self, ctx):
            await ctx.epoch_end(0, {"loss": 1.0})
            return {}


    class SelfBuilt(expman.Pipeline):
        """Builds itself from its config; validate_params is all that checks it."""

        @classmethod
        def from_config(cls, config):
            pipeline = cls()
            pipeline.size = config.get("size", 1)
            return pipeline

        @classmethod
        def validate_params(cls, params):
            if params.get("size", 1) < 1:
                raise InvalidParam("size", "expected an integer >= 1")

        async def run(self, ctx):
            await ctx.epoch_end(0, {"loss": 1.0})
            return {}


    class LooseCallback(expman.Callback):
        def __init__(self, **options):
            super().__init__()


    class LooseSubscriber(expman.Subscriber):
        def __init__(self, **options):
            super().__init__()

        async def __call__(self, event):
            pass
    '''
)


@pytest.fixture
def models_experiment(make_experiment: Callable[..., Path]) -> Callable[..., Path]:
    def make(pipeline: dict[str, object], **kwargs: object) -> Path:
        root = make_experiment(
            base={"pipeline": pipeline},
            trials=[{"name": "a", "id": 1}, {"name": "b", "id": 2}],
            **kwargs,
        )
        (root / "models.py").write_text(MODELS)
        return root

    return make


def test_a_misspelled_pipeline_parameter_is_refused_naming_the_accepted_ones(
    models_experiment: Callable[..., Path],
) -> None:
    """pipeline.hiden=16 for __init__(hidden, lr) is a ConfigError at that key."""
    root = models_experiment({"type": "models:Mlp", "hidden": 8})
    assert prepare(root).trials[0].settings["pipeline"]["hidden"] == 8
    with pytest.raises(ConfigError) as caught:
        prepare(root, overrides=["pipeline.hiden=16"])
    assert caught.value.key == "settings.pipeline.hiden"
    assert caught.value.message == (
        "models:Mlp: unknown parameter 'hiden'; expected one of: hidden, lr"
    )


def test_expman_validate_refuses_a_misspelled_pipeline_parameter(
    models_experiment: Callable[..., Path],
) -> None:
    """The CLI exits 2 with the key and the accepted parameters, as the README promises."""
    root = models_experiment({"type": "models:Mlp"})
    done = run_cli("validate", str(root), "pipeline.hiden=16")
    assert done.returncode == 2
    assert "settings.pipeline.hiden" in done.stderr
    assert "expected one of: hidden, lr" in done.stderr
    assert run_cli("validate", str(root), "pipeline.hidden=16").returncode == 0


def test_expman_validate_refuses_a_misspelled_parameter_of_the_digits_example() -> None:
    """The README's example command: expman validate examples/digits pipeline.hiden=16."""
    pytest.importorskip("sklearn")
    digits = Path(__file__).resolve().parents[1] / "examples" / "digits"
    done = run_cli("validate", str(digits), "pipeline.hiden=16")
    assert done.returncode == 2
    assert "settings.pipeline.hiden" in done.stderr
    assert "expected one of: hidden, batch_size" in done.stderr


def test_a_subclass_without_a_constructor_is_checked_against_the_inherited_one(
    models_experiment: Callable[..., Path],
) -> None:
    """TunedMlp(Mlp) inherits Mlp(hidden, lr): those are accepted, nothing else."""
    root = models_experiment({"type": "models:TunedMlp", "lr": 0.2})
    assert parameter_notes(prepare(root)) == []
    with pytest.raises(ConfigError, match="expected one of: hidden, lr"):
        prepare(root, overrides=["pipeline.hiden=16"])


def test_a_subclass_handing_kwargs_to_its_parent_opts_out(
    models_experiment: Callable[..., Path],
) -> None:
    """WideMlp(dropout, **params): its own **params may keep any key, so none is refused."""
    root = models_experiment({"type": "models:WideMlp", "dropout": 0.5, "lr": 0.2})
    assert parameter_notes(prepare(root, overrides=["pipeline.hiden=16"])) == [
        "every trial: pipeline models:WideMlp takes **kwargs: its parameters are not checked"
    ]


def test_a_pipeline_without_a_constructor_takes_no_parameters(
    models_experiment: Callable[..., Path],
) -> None:
    """The base Pipeline's catch-all **params does not make every key valid."""
    root = models_experiment({"type": "models:Bare", "hidden": 8})
    with pytest.raises(ConfigError, match=r"unknown parameter 'hidden'; expected one of: \(no"):
        prepare(root)


def test_a_pipeline_taking_kwargs_opts_out_and_validate_says_so(
    models_experiment: Callable[..., Path],
) -> None:
    """**params of the pipeline's own __init__: any key passes, and a note says it is unchecked."""
    root = models_experiment({"type": "models:Loose"})
    plan = prepare(root, overrides=["pipeline.hiden=16"])
    assert parameter_notes(plan) == [
        "every trial: pipeline models:Loose takes **kwargs: its parameters are not checked"
    ]
    done = run_cli("validate", str(root), "pipeline.hiden=16")
    assert done.returncode == 0, done.stderr


def test_notes_name_the_trials_and_the_callbacks_and_subscribers_concerned(
    models_experiment: Callable[..., Path],
) -> None:
    """One note per type and reason, naming the trials (or the subscriber entry)."""
    root = models_experiment(
        {"type": "models:Mlp"},
        experiment={
            "name": "exp",
            "id": 1,
            "subscribers": [{"type": "models:LooseSubscriber", "any": 1}],
        },
    )
    (root / "trials.yaml").write_text(
        textwrap.dedent(
            """
            - name: a
              id: 1
              settings: {callbacks: [{type: "models:LooseCallback", x: 1}]}
            - name: b
              id: 2
            """
        )
    )
    assert parameter_notes(prepare(root)) == [
        "trial a: callback models:LooseCallback takes **kwargs: its parameters are not checked",
        "experiment.yaml subscribers[0]: subscriber models:LooseSubscriber takes **kwargs:"
        " its parameters are not checked",
    ]


def test_a_pipeline_with_its_own_from_config_is_checked_only_by_its_validate_params(
    models_experiment: Callable[..., Path],
) -> None:
    """Unknown keys pass to its from_config; its validate_params still refuses bad values."""
    root = models_experiment({"type": "models:SelfBuilt", "size": 3, "anything": True})
    plan = prepare(root)
    assert parameter_notes(plan) == [
        "every trial: pipeline models:SelfBuilt builds itself (from_config):"
        " only its validate_params checks its parameters"
    ]
    with pytest.raises(ConfigError) as caught:
        prepare(root, overrides=["pipeline.size=0"])
    assert caught.value.key == "settings.pipeline.size"
    assert "expected an integer >= 1" in caught.value.message


def test_a_missing_required_callback_parameter_is_still_refused(
    models_experiment: Callable[..., Path],
) -> None:
    """A callback whose constructor needs a value: the signature is still bound.

    (EarlyStopping's ``metric`` defaults to ``loss``, as the original API's
    ``EarlyStopping(env, patience=5)`` needs.)
    """
    root = models_experiment(
        {"type": "models:Mlp"}, settings={"callbacks": [{"type": "needs:Needs"}]}
    )
    (root / "needs.py").write_text(
        "from expman import Callback\n\n\nclass Needs(Callback):\n"
        "    def __init__(self, threshold):\n        super().__init__()\n"
    )
    with pytest.raises(ConfigError, match="needs:Needs: missing a required argument: 'threshold'"):
        prepare(root)
    plain = models_experiment(
        {"type": "models:Mlp"}, settings={"callbacks": [{"type": "EarlyStopping"}]}
    )
    prepare(plain)  # metric defaults to loss
