"""What a config may name: classes of the right kind, never arbitrary callables (issue 13).

The policy (``expman.serializable``): an import path is dotted identifiers naming a
class in the config folder or in an installed package, never Python's standard
library; preflight checks the class's kind (pipeline, callback, subscriber) before
anything of it is called.  The refusals themselves are entries of the catalogue
(``test_config_catalogue.py``); here: that nothing ran, that legitimate names still
work, and the paths that bypass ``prepare``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from expman import run_experiment
from expman.config import load_plan
from expman.errors import ConfigError
from expman.experiment import prepare
from expman.pipeline import pipeline_problem

from .conftest import run_cli

#: Constructing ``Touches`` writes a marker beside it: it must never happen.
TOUCHES = textwrap.dedent(
    """
    import pathlib

    MARK = pathlib.Path(__file__).with_name("constructed")


    class Touches:
        def __init__(self, **params):
            MARK.write_text("constructed")

        def run(self):  # no ctx: not a pipeline
            MARK.write_text("ran")

    """
)


def test_a_callback_naming_subprocess_never_runs(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """subprocess:getoutput as a callback: validate and run exit 2 and the command never runs."""
    marker = tmp_path / "pwned"
    root = make_experiment(
        trials=[
            {"name": "a", "id": 1},
            {
                "name": "b",
                "id": 2,
                "settings": {
                    "callbacks": [{"type": "subprocess:getoutput", "cmd": f"touch {marker}"}]
                },
            },
        ]
    )
    for command in ("validate", "run"):
        proc = run_cli(command, str(root), "-w", str(tmp_path / "ws"), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "[1].settings.callbacks[0].type: 'subprocess:getoutput' cannot be used" in (
            proc.stderr
        )
        assert "Traceback" not in proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "ws").exists()


def test_legitimate_names_still_resolve(make_experiment: Callable[..., Path]) -> None:
    """A folder module, a folder package, a stdlib-named folder module and expman's own paths."""
    root = make_experiment(
        base={
            "pipeline": {"type": "queue:Train"},
            "callbacks": [
                {"type": "expman.subscribers.callbacks:EarlyStopping", "metric": "loss"},
                {"type": "models.stop:Stop"},
                {"type": "EarlyStopping", "metric": "loss"},
            ],
        }
    )
    # queue.py shadows the standard library's queue: the folder's own module wins.
    (root / "queue.py").write_text(
        "from expman import Pipeline\n\n\nclass Train(Pipeline):\n"
        "    async def run(self, ctx):\n        return {}\n"
    )
    (root / "models").mkdir()
    (root / "models" / "__init__.py").write_text("")
    (root / "models" / "stop.py").write_text(
        "from expman import Callback\n\n\nclass Stop(Callback):\n    pass\n"
    )
    plan = prepare(root)
    assert plan.trials[0].settings["pipeline"]["type"] == "queue:Train"


@pytest.mark.parametrize(
    ("key", "entry"),
    [
        ("pipeline", {"type": "touches:Touches"}),
        ("callbacks", [{"type": "touches:Touches"}]),
    ],
)
async def test_a_plan_that_skipped_prepare_still_builds_nothing_of_the_wrong_kind(
    make_experiment: Callable[..., Path], tmp_path: Path, key: str, entry: object
) -> None:
    """load_plan then run_experiment(plan): the run fails and Touches is never constructed."""
    base = {"pipeline": {"type": "pipelines:Sleeper"}, key: entry}
    root = make_experiment(base=base)
    (root / "touches.py").write_text(TOUCHES)
    plan = load_plan(root, workspace=tmp_path / "ws")
    result = await run_experiment(plan)
    assert [r.status for r in result.runs] == ["failed"]
    assert not (root / "constructed").exists()


async def test_a_subscriber_of_the_wrong_kind_is_refused_even_without_prepare(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """subscribers: naming a class with no async __call__(event) is a ConfigError; not built."""
    root = make_experiment(
        experiment={"name": "exp", "id": 1, "subscribers": [{"type": "touches:Plain"}]}
    )
    (root / "touches.py").write_text(TOUCHES + "\n\nclass Plain(Touches):\n    __call__ = None\n")
    plan = load_plan(root, workspace=tmp_path / "ws")
    with pytest.raises(ConfigError, match=r"subscribers\[0\]\.type: 'touches:Plain' is not a"):
        await run_experiment(plan)
    assert not (root / "constructed").exists()


def test_a_subscriber_whose_constructor_raises_is_a_config_error(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """`expman run`: exit 2 naming the entry, the error and its frame; no workspace is made."""
    root = make_experiment(
        experiment={"name": "exp", "id": 1, "subscribers": [{"type": "subs:Broken"}]}
    )
    (root / "subs.py").write_text(
        "from expman import Subscriber\n\n\nclass Broken(Subscriber):\n"
        "    def __init__(self):\n        raise ValueError('no display here')\n\n"
        "    async def __call__(self, event):\n        pass\n"
    )
    proc = run_cli("run", str(root), "-w", str(tmp_path / "ws"))
    assert proc.returncode == 2, proc.stderr
    first, *frames = proc.stderr.strip().splitlines()
    assert "experiment.yaml:4: subscribers[0]: 'subs:Broken' cannot be built: ValueError" in first
    assert frames == [f"  {root / 'subs.py'}:6 in __init__: raise ValueError('no display here')"]
    assert not (tmp_path / "ws").exists()


def test_a_module_that_raises_shows_its_own_last_frames(
    make_experiment: Callable[..., Path],
) -> None:
    """The cause is the user's frames (file, line, source), none of importlib's or expman's."""
    root = make_experiment(base={"pipeline": {"type": "lib.model:Net"}})
    (root / "lib").mkdir()
    (root / "lib" / "__init__.py").write_text("")
    (root / "lib" / "model.py").write_text(
        "def load():\n    return {}['weights']\n\n\nWEIGHTS = load()\n"
    )
    with pytest.raises(ConfigError) as info:
        prepare(root)
    first, *frames = str(info.value).splitlines()
    assert "model.py:2: the module of 'lib.model:Net' cannot be imported: KeyError" in first
    assert frames == [
        f"  {root / 'lib' / 'model.py'}:5 in <module>: WEIGHTS = load()",
        f"  {root / 'lib' / 'model.py'}:2 in load: return {{}}['weights']",
    ]


def test_a_yaml_file_with_python_tags_never_constructs_them(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """!!python/object/apply in base.yaml is refused by its tag; the command never runs."""
    marker = tmp_path / "pwned"
    root = make_experiment()
    (root / "base.yaml").write_text(
        "settings:\n  pipeline: {type: pipelines:Sleeper}\n"
        f"  x: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    with pytest.raises(ConfigError, match=r"settings\.x: the YAML tag"):
        prepare(root)
    assert not marker.exists()


#: setpriv's arguments that take root's power to read and search what modes forbid.
DROP_READ_OVERRIDE = [
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
]


def cli_bound_by_modes(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m expman ARGS`` unable to read what file modes forbid, even run as root."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root reads files whatever their mode; setpriv is needed to drop that")
        prefix = [setpriv, *DROP_READ_OVERRIDE]
    env = dict(os.environ)
    source = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "expman", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env=env,
    )
    if proc.stderr.startswith("setpriv:"):
        pytest.skip(f"cannot drop root's read override here: {proc.stderr.strip()}")
    return proc


def lib_package(root: Path) -> Path:
    (root / "lib").mkdir()
    (root / "lib" / "__init__.py").write_text("class X:\n    pass\n")
    return root / "lib"


@pytest.mark.parametrize(
    ("locked", "overrides", "expected"),
    [
        pytest.param(
            lambda root: root,
            [],
            "experiment.yaml: cannot be read: Permission denied",
            id="config folder",
        ),
        pytest.param(
            lambda root: root / "base.yaml",
            [],
            "base.yaml: cannot read file: Permission denied",
            id="config file",
        ),
        pytest.param(
            lambda root: root / "pipelines.py",
            [],
            "pipelines.py: this module of the config folder cannot be imported: PermissionError",
            id="config module",
        ),
        pytest.param(
            lib_package,
            ["pipeline.type=lib:X"],
            "settings.pipeline.type: unknown type 'lib:X' (cannot read",
            id="package folder",
        ),
        pytest.param(
            lambda root: root.parent / "locked",
            ["-w", "../locked/ws"],
            "workspace: workspace",
            id="workspace's parent",
        ),
    ],
)
def test_what_cannot_be_read_is_a_config_error(
    make_experiment: Callable[..., Path],
    locked: Callable[[Path], Path],
    overrides: list[str],
    expected: str,
) -> None:
    """chmod 000 on a folder or file expman must read: validate and run exit 2, one message."""
    root = make_experiment()
    (root.parent / "locked").mkdir()
    target = locked(root)
    mode = target.stat().st_mode
    target.chmod(0)
    try:
        for command in ("validate", "run"):
            proc = cli_bound_by_modes(command, str(root), *overrides, cwd=root)
            assert proc.returncode == 2, proc.stderr
            assert proc.stderr.startswith("expman: config error: ")
            assert expected in proc.stderr
            assert "Traceback" not in proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1
    finally:
        target.chmod(mode)
    assert not (root / "workspace").exists()


class _Wrapped:
    """A decorator's callable object standing for a method (functools-less)."""

    def __init__(self, func: Callable[..., object]) -> None:
        self.func = func

    def __call__(self, *args: object) -> object:
        return self.func(*args)

    def __get__(self, obj: object, owner: type) -> Callable[..., object]:
        return lambda *args: self.func(obj, *args)


class _Plain:
    def run(self, ctx: object) -> None: ...


class _Async:
    async def run(self, ctx: object, *more: object) -> None: ...


class _Static:
    @staticmethod
    def run(ctx: object) -> None: ...


class _ClassMethod:
    @classmethod
    def run(cls, ctx: object) -> None: ...


class _Decorated:
    @_Wrapped
    def run(self, ctx: object) -> None: ...


class _NoCtx:
    def run(self) -> None: ...


class _TooMany:
    def run(self, ctx: object, epochs: int) -> None: ...


class _Property:
    @property
    def run(self) -> None: ...


@pytest.mark.parametrize(
    ("cls", "problem"),
    [
        (_Plain, None),
        (_Async, None),
        (_Static, None),
        (_ClassMethod, None),
        (_Decorated, None),
        (_NoCtx, "has run(self), which cannot take the run's context"),
        (_TooMany, "has run(self, ctx: 'object', epochs: 'int'), which cannot take"),
        (_Property, "has a run that is a property, not a method"),
        (len, "is not a class"),
    ],
)
def test_a_pipeline_is_a_class_whose_run_takes_the_context(
    cls: object, problem: str | None
) -> None:
    """pipeline_problem reads the class only: run as a method, static, class or wrapped."""
    found = pipeline_problem(cls)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found
