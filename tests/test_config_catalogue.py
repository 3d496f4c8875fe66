"""The catalogue of config mistakes: each one message naming the file, the key and the expectation.

Every entry is a real config folder in tmp_path, changed by one mistake (and, for
some, the command line's overrides).  The same catalogue is checked three ways:
``prepare`` raises one ConfigError; ``expman validate`` (in-process, fast) and
``expman run`` (a real subprocess) exit 2 with that message and no traceback, and
``run`` leaves the workspace as it was.  Hostile entries (issue 13: configs that name
arbitrary callables, YAML that no JSON journal can hold, modules that raise) end the
list, so no input in it may produce a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from expman.cli import main
from expman.errors import ConfigError
from expman.experiment import prepare

from .conftest import run_cli, write_yaml

Mutation = Callable[[Path], None]


def edit_yaml(name: str, change: Callable[[Any], Any]) -> Mutation:
    def apply(root: Path) -> None:
        path = root / name
        data = yaml.safe_load(path.read_text()) if path.exists() else None
        write_yaml(path, change(data))

    return apply


def write_text(name: str, text: str) -> Mutation:
    def apply(root: Path) -> None:
        (root / name).write_text(text)

    return apply


def trial0(**changes: Any) -> Mutation:
    return edit_yaml("trials.yaml", lambda t: [{**t[0], **changes}, *t[1:]])


def two_trials(second: dict[str, Any]) -> Mutation:
    return edit_yaml("trials.yaml", lambda t: [t[0], {"name": "b", "id": 2, **second}])


def drop(name: str, key: str) -> Mutation:
    return edit_yaml(name, lambda d: {k: v for k, v in d.items() if k != key})


def both(*mutations: Mutation) -> Mutation:
    def apply(root: Path) -> None:
        for mutation in mutations:
            mutation(root)

    return apply


def pipeline_type(name: str) -> Mutation:
    return write_text("base.yaml", f"settings:\n  pipeline:\n    type: {name}\n")


NO_RUN = "from expman import Pipeline\n\n\nclass NoRun(Pipeline):\n    pass\n"

KNOWN = """
import expman
from expman import Pipeline


@expman.register("KnownPipe")
class KnownPipe(Pipeline):
    def run(self, ctx):
        return {}


@expman.register("RunOnly")
class RunOnly:
    def run(self, ctx):
        return {}
"""

MISTAKES: list[tuple[str, Mutation, str, str]] = [
    # (case, mutation, file named in the message, text the message must contain)
    (
        "yaml syntax error",
        write_text("trials.yaml", "- name: a\n  id: [1\n"),
        "trials.yaml",
        "YAML syntax error",
    ),
    (
        "missing experiment name",
        drop("experiment.yaml", "name"),
        "experiment.yaml",
        "missing required key 'name'",
    ),
    (
        "missing experiment id",
        drop("experiment.yaml", "id"),
        "experiment.yaml",
        "missing required key 'id'",
    ),
    (
        "unknown top-level key",
        edit_yaml("experiment.yaml", lambda d: {**d, "setings": {}}),
        "experiment.yaml",
        "setings: unknown key",
    ),
    (
        "trials not a list",
        write_text("trials.yaml", "a:\n  id: 1\n"),
        "trials.yaml",
        "expected a list of trials",
    ),
    (
        "trial without id",
        edit_yaml("trials.yaml", lambda t: [{"name": "a"}]),
        "trials.yaml",
        "[0]: missing required key 'id'",
    ),
    ("repeat below one", trial0(repeat=0), "trials.yaml", "[0].repeat: expected an integer >= 1"),
    (
        "repeat of wrong type",
        trial0(repeat="three"),
        "trials.yaml",
        "[0].repeat: expected an integer, got a string",
    ),
    (
        "duplicate trial names",
        two_trials({"name": "a"}),
        "trials.yaml",
        "[1].name: duplicate trial name 'a'",
    ),
    ("duplicate trial ids", two_trials({"id": 1}), "trials.yaml", "[1].id: duplicate trial id"),
    ("name with a slash", trial0(name="a/b"), "trials.yaml", "[0].name: 'a/b' is not usable"),
    ("name that is ..", trial0(name=".."), "trials.yaml", "[0].name: '..' is not usable"),
    ("empty name", trial0(name=""), "trials.yaml", "[0].name: '' is not usable"),
    (
        "name with a control character",
        trial0(name="a\tb"),
        "trials.yaml",
        "[0].name: 'a\\tb' is not usable",
    ),
    (
        "experiment name with a backslash",
        edit_yaml("experiment.yaml", lambda d: {**d, "name": "x\\y"}),
        "experiment.yaml",
        "name: 'x\\\\y' is not usable",
    ),
    (
        "settings not a mapping",
        write_text("base.yaml", "settings: [1, 2]\n"),
        "base.yaml",
        "settings: expected a mapping, got a list",
    ),
    (
        "unknown pipeline name",
        write_text("base.yaml", "settings:\n  pipeline:\n    type: Nonexistent\n"),
        "base.yaml",
        "settings.pipeline.type: unknown type 'Nonexistent'",
    ),
    (
        "pipeline module missing",
        write_text("base.yaml", "settings:\n  pipeline:\n    type: no_such_module:Thing\n"),
        "base.yaml",
        "cannot import module 'no_such_module'",
    ),
    (
        "missing pipeline",
        write_text("base.yaml", "settings:\n  lr: 1\n"),
        "trials.yaml",
        "[0].settings.pipeline: missing",
    ),
    (
        "unknown callback type",
        trial0(settings={"callbacks": [{"type": "EarlyStoping", "metric": "loss"}]}),
        "trials.yaml",
        "[0].settings.callbacks[0].type: unknown type 'EarlyStoping'",
    ),
    (
        "concurrency of zero",
        write_text("env.yaml", "execution:\n  max_concurrency: 0\n"),
        "env.yaml",
        "execution.max_concurrency: expected an integer >= 1",
    ),
    (
        "unknown executor",
        write_text("env.yaml", "execution:\n  executor: gpu-cluster\n"),
        "env.yaml",
        "execution.executor: expected one of",
    ),
    (
        "unresolvable interpolation",
        trial0(settings={"lr": "${settings.nope}"}),
        "trials.yaml",
        "cannot resolve interpolation",
    ),
    (
        "duplicate key",
        write_text("experiment.yaml", "name: e\nid: 1\nname: f\n"),
        "experiment.yaml",
        "name: duplicate key",
    ),
    (
        "id of wrong type",
        edit_yaml("experiment.yaml", lambda d: {**d, "id": [1]}),
        "experiment.yaml",
        "id: expected a string or an integer, got a list",
    ),
    (
        "negative gpus",
        trial0(resources={"gpus": -1}),
        "trials.yaml",
        "[0].resources.gpus: expected a number >= 0",
    ),
    (
        "trial named like expman's folder",
        trial0(name="logs"),
        "trials.yaml",
        "[0].name: 'logs' is reserved",
    ),
    (
        "pipeline class without run",
        both(
            write_text("norun.py", NO_RUN),
            pipeline_type("norun:NoRun"),
        ),
        "base.yaml",
        "settings.pipeline.type: 'norun:NoRun' is abstract: expected it to define run",
    ),
    (
        "seed that is not an integer",
        trial0(settings={"seed": "abc"}),
        "trials.yaml",
        "[0].settings.seed: expected an integer (the experiment's seed), got a string 'abc'",
    ),
    (
        "seed that is a bool",
        write_text("base.yaml", "settings:\n  seed: true\n  pipeline: {type: pipelines:Sleeper}\n"),
        "base.yaml",
        "settings.seed: expected an integer",
    ),
    (
        "absurd repeat count",
        two_trials({"repeat": 100_000_000}),
        "trials.yaml",
        "[1].repeat: repeat 100000000 brings the plan to 100,000,001 runs;"
        " expected at most 1,000,000 runs in total",
    ),
    (
        "misspelled callback parameter",
        trial0(settings={"callbacks": [{"type": "EarlyStopping", "metrc": "loss"}]}),
        "trials.yaml",
        "[0].settings.callbacks[0].metrc: EarlyStopping: unknown parameter 'metrc';"
        " expected one of: metric, ",
    ),
    (
        "missing trials file",
        lambda root: (root / "trials.yaml").unlink(),
        "trials.yaml",
        "required file is missing",
    ),
]


class Mistake(NamedTuple):
    """One entry: what is changed, the file named, text the message holds, and overrides."""

    case: str
    mutate: Mutation
    file: str
    expected: str
    overrides: tuple[str, ...] = ()


#: A config-folder module of things that are not what the keys naming them ask for.
#: Constructing or validating ``Touches`` writes a marker: it must never happen.
KINDS = textwrap.dedent(
    """
    import pathlib
    from threading import Thread

    from expman import Pipeline

    MARK = pathlib.Path(__file__).with_name("constructed")


    class Touches:
        def __init__(self, **params):
            MARK.write_text("constructed")

        @classmethod
        def validate_params(cls, params):
            MARK.write_text("validated")


    class Plain:
        pass


    class NoCtx:
        def run(self):
            return {}


    class RunNotMethod:
        run = 3


    class Pipe(Pipeline):
        def run(self, ctx):
            return {}


    def train(ctx):
        return {}


    async def hook(event):
        pass


    PIPE = Pipe()
    """
)

RAISES = 'def helper():\n    raise RuntimeError("boom at import")\n\n\nhelper()\n'
BIG = 100_000_000_000_000_000_000  # 67 bits


def with_kinds(*mutations: Mutation) -> Mutation:
    return both(write_text("kinds.py", KINDS), *mutations)


def settings_text(text: str) -> Mutation:
    """base.yaml's settings with the pipeline and the lines of ``text`` (YAML, indented)."""
    return write_text(
        "base.yaml",
        "settings:\n  pipeline: {type: pipelines:Sleeper}\n" + textwrap.indent(text, "  "),
    )


def callback(name: Any) -> Mutation:
    return trial0(settings={"callbacks": [{"type": name}]})


def subscriber(entry: dict[str, Any]) -> Mutation:
    return edit_yaml("experiment.yaml", lambda d: {**d, "subscribers": [entry]})


def package(name: str, init: str) -> Mutation:
    def apply(root: Path) -> None:
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(init)

    return apply


def directory_instead(name: str) -> Mutation:
    def apply(root: Path) -> None:
        (root / name).unlink()
        (root / name).mkdir()

    return apply


ARBITRARY = "'subprocess' is a module of Python's standard library"
NOT_A_CLASS = "not a class; expected a class"
NOT_A_PATH = "cannot be used: not a valid import path"
HOSTILE: list[Mistake] = [
    # -- issue 13: a YAML-only config names arbitrary callables -------------------
    Mistake(
        "callback that is a stdlib function",
        trial0(settings={"callbacks": [{"type": "subprocess:getoutput", "cmd": "touch x"}]}),
        "trials.yaml",
        f"[0].settings.callbacks[0].type: 'subprocess:getoutput' cannot be used: {ARBITRARY}",
    ),
    Mistake(
        "pipeline that is a stdlib function",
        pipeline_type("os:system"),
        "base.yaml",
        "settings.pipeline.type: 'os:system' cannot be used: 'os' is a module of Python's",
    ),
    Mistake(
        "pipeline that is a builtin",
        pipeline_type("builtins:eval"),
        "base.yaml",
        "settings.pipeline.type: 'builtins:eval' cannot be used: 'builtins' is a module",
    ),
    Mistake(
        "subscriber from the standard library",
        subscriber({"type": "subprocess:Popen", "args": "touch x"}),
        "experiment.yaml",
        f"subscribers[0].type: 'subprocess:Popen' cannot be used: {ARBITRARY}",
    ),
    Mistake(
        "callback class that is not a Callback",
        with_kinds(callback("kinds:Touches")),
        "trials.yaml",
        "[0].settings.callbacks[0].type: 'kinds:Touches' is not a callback: expected a subclass"
        " of expman.Callback",
    ),
    Mistake(
        "callback that is a pipeline class",
        with_kinds(callback("kinds:Pipe")),
        "trials.yaml",
        "[0].settings.callbacks[0].type: 'kinds:Pipe' is not a callback",
    ),
    Mistake(
        "pipeline that is a function",
        with_kinds(pipeline_type("kinds:train")),
        "base.yaml",
        f"settings.pipeline.type: 'kinds:train' cannot be used: it is a function, {NOT_A_CLASS}",
    ),
    Mistake(
        "pipeline that is an object",
        with_kinds(pipeline_type("kinds:PIPE")),
        "base.yaml",
        f"settings.pipeline.type: 'kinds:PIPE' cannot be used: it is a Pipe object, {NOT_A_CLASS}",
    ),
    Mistake(
        "pipeline that is a module",
        with_kinds(pipeline_type("kinds:pathlib")),
        "base.yaml",
        f"settings.pipeline.type: 'kinds:pathlib' cannot be used: it is a module, {NOT_A_CLASS}",
    ),
    Mistake(
        "pipeline whose run takes no context",
        with_kinds(pipeline_type("kinds:NoCtx")),
        "base.yaml",
        "settings.pipeline.type: 'kinds:NoCtx' has run(self), which cannot take the run's context",
    ),
    Mistake(
        "pipeline whose run is not a method",
        with_kinds(pipeline_type("kinds:RunNotMethod")),
        "base.yaml",
        "settings.pipeline.type: 'kinds:RunNotMethod' has a run that is a int, not a method",
    ),
    Mistake(
        "stdlib class re-exported by a config module",
        with_kinds(pipeline_type("kinds:Thread")),
        "base.yaml",
        "settings.pipeline.type: 'kinds:Thread' cannot be used: Thread is defined in 'threading',"
        " part of Python itself",
    ),
    Mistake(
        "function of an installed package",
        pipeline_type("expman:run_experiment"),
        "base.yaml",
        "settings.pipeline.type: 'expman:run_experiment' cannot be used: it is a function,"
        f" {NOT_A_CLASS}",
    ),
    Mistake(
        "subscriber that is an async function",
        with_kinds(subscriber({"type": "kinds:hook"})),
        "experiment.yaml",
        f"subscribers[0].type: 'kinds:hook' cannot be used: it is a function, {NOT_A_CLASS}",
    ),
    Mistake(
        "pipeline from the running program",
        pipeline_type("__main__:main"),
        "base.yaml",
        "settings.pipeline.type: '__main__:main' cannot be used: '__main__' is the running program",
    ),
    Mistake(
        "a callback named as the pipeline",
        pipeline_type("EarlyStopping"),
        "base.yaml",
        "settings.pipeline.type: 'EarlyStopping' has no run(ctx) method",
    ),
    # -- issue 15: values no JSON journal can hold ----------------------------------
    Mistake(
        "integer beyond 64 bits in settings",
        settings_text(f"big: {BIG}\n"),
        "base.yaml",
        f"base.yaml:3: settings.big: the integer {BIG} is beyond 64 bits",
    ),
    Mistake(
        "integer beyond 64 bits as an override",
        lambda root: None,
        "<command line>",
        f"settings.big: the integer {BIG} is beyond 64 bits",
        (f"big={BIG}",),
    ),
    Mistake(
        "seed beyond 64 bits in YAML",
        trial0(settings={"seed": BIG}),
        "trials.yaml",
        f"[0].settings.seed: the integer {BIG} is beyond 64 bits",
    ),
    Mistake(
        "seed beyond 64 bits as an override",
        lambda root: None,
        "<command line>",
        f"settings.seed: the integer {BIG} is beyond 64 bits",
        (f"seed={BIG}",),
    ),
    Mistake(
        "yaml tag binary",
        settings_text("blob: !!binary aGVsbG8=\n"),
        "base.yaml",
        "settings.blob: the YAML tag '!!binary' is not allowed",
    ),
    Mistake(
        "yaml tag set",
        settings_text("s: !!set {a, b}\n"),
        "base.yaml",
        "settings.s: the YAML tag '!!set' is not allowed",
    ),
    Mistake(
        "yaml tag python object",
        settings_text("s: !!python/object/apply:os.system [touch x]\n"),
        "base.yaml",
        "settings.s: the YAML tag '!!python/object/apply:os.system' is not allowed",
    ),
    Mistake(
        "yaml tag python name",
        settings_text("s: !!python/name:os.system ''\n"),
        "base.yaml",
        "settings.s: the YAML tag '!!python/name:os.system' is not allowed",
    ),
    Mistake(
        "recursive alias in a list",
        settings_text("r: &a [1, *a]\n"),
        "base.yaml",
        "settings.r[1]: an alias inside the very list or mapping it names",
    ),
    Mistake(
        "recursive alias in a mapping",
        settings_text("r: &a {x: [*a]}\n"),
        "base.yaml",
        "settings.r.x[0]: an alias inside the very list or mapping it names",
    ),
    Mistake(
        "override key 300 levels deep",
        lambda root: None,
        "<command line>",
        "the key has 300 parts; expected at most 64",
        (".".join(["k"] * 300) + "=1",),
    ),
    # -- issue 15: malformed import paths ------------------------------------------
    Mistake(
        "pipeline type with an empty module",
        write_text("base.yaml", "settings:\n  pipeline: {type: ':X'}\n"),
        "base.yaml",
        f"settings.pipeline.type: ':X' {NOT_A_PATH}",
    ),
    Mistake(
        "pipeline type that is a path",
        write_text("base.yaml", "settings:\n  pipeline: {type: '../x:y'}\n"),
        "base.yaml",
        f"settings.pipeline.type: '../x:y' {NOT_A_PATH}",
    ),
    Mistake(
        "pipeline type that is a relative import",
        write_text("base.yaml", "settings:\n  pipeline: {type: '.pipelines:Sleeper'}\n"),
        "base.yaml",
        f"settings.pipeline.type: '.pipelines:Sleeper' {NOT_A_PATH}",
    ),
    Mistake(
        "pipeline type with an empty class",
        write_text("base.yaml", "settings:\n  pipeline: {type: 'pipelines:'}\n"),
        "base.yaml",
        f"settings.pipeline.type: 'pipelines:' {NOT_A_PATH}",
    ),
    Mistake(
        "pipeline type with a space",
        write_text("base.yaml", "settings:\n  pipeline: {type: 'pipelines :Sleeper'}\n"),
        "base.yaml",
        f"settings.pipeline.type: 'pipelines :Sleeper' {NOT_A_PATH}",
    ),
    Mistake(
        "pipeline type naming a dunder",
        pipeline_type("pipelines:Sleeper.__init__"),
        "base.yaml",
        "settings.pipeline.type: 'pipelines:Sleeper.__init__' cannot be used: names a private",
    ),
    Mistake(
        "pipeline type that is a list",
        write_text("base.yaml", "settings:\n  pipeline: {type: [pipelines, Sleeper]}\n"),
        "base.yaml",
        "settings.pipeline.type: expected a string naming a registered pipeline",
    ),
    Mistake(
        "callback type that is a number",
        callback(5),
        "trials.yaml",
        "[0].settings.callbacks[0].type: expected a string naming a registered callback",
    ),
    # -- issue 15: modules that fail as they import --------------------------------
    Mistake(
        "pipeline module that raises at import",
        write_text("boom.py", RAISES),
        "boom.py",
        "boom.py:2: this module of the config folder cannot be imported: RuntimeError: boom",
    ),
    Mistake(
        "pipeline module with a syntax error",
        write_text("broken.py", "def broken(:\n    pass\n"),
        "broken.py",
        "broken.py:1: this module of the config folder cannot be imported: SyntaxError",
    ),
    Mistake(
        "package of the config folder that raises at import",
        both(package("lib", RAISES), pipeline_type("lib:X")),
        "__init__.py",
        "lib/__init__.py:2: the module of 'lib:X' cannot be imported: RuntimeError: boom",
    ),
    Mistake(
        "module with a missing dependency",
        both(package("lib", "import not_installed_anywhere\n"), pipeline_type("lib:X")),
        "__init__.py",
        "ModuleNotFoundError: No module named 'not_installed_anywhere'",
    ),
    Mistake(
        "module that calls sys.exit at import",
        write_text("exits.py", "import sys\n\nsys.exit(0)\n"),
        "exits.py",
        "exits.py:3: this module of the config folder cannot be imported: SystemExit: sys.exit(0)",
    ),
    Mistake(
        "pipeline module that is a folder",
        directory_instead("pipelines.py"),
        "base.yaml",
        "settings.pipeline.type: unknown type 'pipelines:Sleeper' (cannot import module",
    ),
    # -- issue 15: a directory where a file belongs (what chmod 000 is, for root) ------
    Mistake(
        "base.yaml that is a directory",
        directory_instead("base.yaml"),
        "base.yaml",
        "base.yaml: is a directory; expected a YAML file",
    ),
    Mistake(
        "trials.yaml that is a directory",
        directory_instead("trials.yaml"),
        "trials.yaml",
        "trials.yaml: is a directory; expected a YAML file",
    ),
    Mistake(
        "experiment.yaml that is a directory",
        directory_instead("experiment.yaml"),
        "experiment.yaml",
        "experiment.yaml: is a directory; expected a YAML file",
    ),
    # -- issue 15: accepted silently until now -------------------------------------
    Mistake(
        "override key with an empty part",
        lambda root: None,
        "<command line>",
        "settings..x: override 'settings..x=1': the key 'settings..x' has an empty part",
        ("settings..x=1",),
    ),
    Mistake(
        "pipeline override naming a class without run",
        with_kinds(),
        "<command line>",
        "settings.pipeline: 'kinds:Plain' has no run(ctx) method",
        ("pipeline=kinds:Plain",),
    ),
    # -- more of the same classes ----------------------------------------------------
    Mistake(
        "execution value beyond 64 bits",
        lambda root: None,
        "<command line>",
        f"execution.max_retries: the integer {BIG} is beyond 64 bits",
        (f"execution.max_retries={BIG}",),
    ),
    Mistake(
        "experiment id beyond 64 bits",
        edit_yaml("experiment.yaml", lambda d: {**d, "id": BIG}),
        "experiment.yaml",
        f"id: the integer {BIG} is beyond 64 bits",
    ),
    Mistake(
        "mapping key beyond 64 bits",
        settings_text(f"{BIG}: x\n"),
        "base.yaml",
        f"settings.{BIG}: the integer {BIG} is beyond 64 bits",
    ),
    Mistake(
        "hexadecimal integer beyond 64 bits",
        settings_text("big: 0xFFFFFFFFFFFFFFFFF\n"),
        "base.yaml",
        f"settings.big: the integer {0xFFFFFFFFFFFFFFFFF} is beyond 64 bits",
    ),
    Mistake(
        "negative integer beyond 64 bits",
        settings_text("small: -9223372036854775809\n"),
        "base.yaml",
        "settings.small: the integer -9223372036854775809 is beyond 64 bits",
    ),
    Mistake(
        "interpolation decoding an integer beyond 64 bits",
        trial0(settings={"x": f"${{oc.decode:'{BIG}'}}"}),
        "trials.yaml",
        f"[0].settings.x: the integer {BIG} is beyond 64 bits",
    ),
    Mistake(
        "binary value as an override",
        lambda root: None,
        "<command line>",
        "settings.x: expected a value YAML can hold",
        ("x=!!binary aGVsbG8=",),
    ),
    Mistake(
        "yaml tag timestamp",
        settings_text("when: !!timestamp 2001-12-14\n"),
        "base.yaml",
        "settings.when: the YAML tag '!!timestamp' is not allowed",
    ),
    Mistake(
        "yaml tag omap",
        settings_text("pairs: !!omap [a: 1]\n"),
        "base.yaml",
        "settings.pairs: the YAML tag '!!omap' is not allowed",
    ),
    Mistake(
        "custom yaml tag",
        settings_text("home: !env HOME\n"),
        "base.yaml",
        "settings.home: the YAML tag '!env' is not allowed",
    ),
    Mistake(
        "int tag on letters",
        settings_text("n: !!int abc\n"),
        "base.yaml",
        "settings.n: not a valid value: invalid literal for int()",
    ),
    Mistake(
        "bare override key with an empty part",
        lambda root: None,
        "<command line>",
        "a..b: override 'a..b=1': the key 'a..b' has an empty part",
        ("a..b=1",),
    ),
    Mistake(
        "execution override with an empty part",
        lambda root: None,
        "<command line>",
        "the key 'execution..timeout' has an empty part",
        ("execution..timeout=1",),
    ),
    Mistake(
        "override value nested past the limit",
        lambda root: None,
        "<command line>",
        "nesting deeper than 64 levels",
        ("x=" + "[" * 70 + "]" * 70,),
    ),
    Mistake(
        "integer of 5000 digits",
        settings_text("big: " + "9" * 5000 + "\n"),
        "base.yaml",
        "settings.big: the integer 99999999999999999999... is beyond 64 bits",
    ),
    Mistake(
        "module whose __getattr__ raises",
        both(
            write_text("lazy.py", "def __getattr__(name):\n    raise RuntimeError(name)\n"),
            pipeline_type("lazy:Net"),
        ),
        "lazy.py",
        "lazy.py:2: the module of 'lazy:Net' cannot be imported: RuntimeError: Net",
    ),
    Mistake(
        "callback whose validate_params raises",
        both(
            write_text(
                "checks.py",
                "from expman import Callback\n\n\nclass Picky(Callback):\n"
                "    @classmethod\n    def validate_params(cls, params):\n"
                "        return params['missing']\n",
            ),
            callback("checks:Picky"),
        ),
        "trials.yaml",
        "[0].settings.callbacks[0]: checks:Picky: validate_params raised KeyError: 'missing'",
    ),
    Mistake(
        "workspace with a NUL character",
        write_text("env.yaml", 'workspace: "ws\\0x"\n'),
        "env.yaml",
        "workspace: expected a path, got a string with a NUL character",
    ),
    Mistake(
        "import path of 6000 characters",
        pipeline_type("a." * 3000 + "b:P"),
        "base.yaml",
        "cannot be used: the name is 6003 characters long; expected at most 200",
    ),
    Mistake(
        "a value of 100,000 characters in a message",
        trial0(repeat="r" * 100_000),
        "trials.yaml",
        "[0].repeat: expected an integer, got a string 'rrrr",
    ),
    Mistake(
        "control character in a config file",
        write_text("base.yaml", "settings:\n  x: \x00\n"),
        "base.yaml",
        "control characters are not allowed",
    ),
]


def sweep0(sweep: dict[str, Any], **changes: Any) -> Mutation:
    """Trial 0 with settings lr and batch_size, and ``sweep`` as its sweep block."""
    return trial0(settings={"lr": 0.1, "batch_size": 8}, sweep=sweep, **changes)


#: The sweep errors of issue 14 (trial 0's settings on lines 5-6, its sweep from line 7).
SWEEP = [
    Mistake(
        "a grid axis that repeats a value",
        sweep0({"grid": {"lr": [0.1, 0.2, 0.1]}}),
        "trials.yaml",
        "[0].sweep.grid.lr: the value 0.1 appears twice; expected distinct values",
    ),
    Mistake(
        "unknown distribution",
        sweep0({"grid": {"lr": {"logunifrom": [1.0e-4, 0.1]}}}),
        "trials.yaml",
        "trials.yaml:10: [0].sweep.grid.lr.logunifrom: unknown distribution 'logunifrom'"
        " (did you mean 'loguniform'?)",
    ),
    Mistake(
        "range with step 0",
        sweep0({"grid": {"batch_size": {"range": [0, 10, 0]}}}),
        "trials.yaml",
        "trials.yaml:10: [0].sweep.grid.batch_size.range: the step must not be 0",
    ),
    Mistake(
        "range with a step of the wrong sign",
        sweep0({"grid": {"batch_size": {"range": [0, 10, -2]}}}),
        "trials.yaml",
        "[0].sweep.grid.batch_size.range: step -2 goes away from stop 10",
    ),
    Mistake(
        "loguniform bound of zero",
        sweep0({"grid": {"lr": {"loguniform": [0.0, 0.1], "num": 3}}}),
        "trials.yaml",
        "trials.yaml:10: [0].sweep.grid.lr.loguniform: the bounds of a loguniform must be > 0",
    ),
    Mistake(
        "zip axes of unequal lengths",
        sweep0({"zip": [{"lr": [0.1, 0.2], "batch_size": [8, 16, 32]}]}),
        "trials.yaml",
        "trials.yaml:12: [0].sweep.zip[0].batch_size: zip axes must have equal lengths:"
        " 'batch_size' has 3 values, 'lr' has 2",
    ),
    Mistake(
        "swept key not in the settings",
        sweep0({"grid": {"lrr": [0.1, 0.2]}}),
        "trials.yaml",
        "trials.yaml:9: [0].sweep.grid.lrr: the settings have no key 'lrr'",
    ),
    Mistake(
        "name template with an unknown field",
        sweep0({"name": "a-{lrr}", "grid": {"lr": [0.1, 0.2]}}),
        "trials.yaml",
        "trials.yaml:8: [0].sweep.name: unknown field {lrr} in the name template"
        " (did you mean {lr}?)",
    ),
    Mistake(
        "two generated trials with the same name",
        sweep0({"name": "a-{lr}", "grid": {"lr": [0.1, 0.2], "batch_size": [8, 16]}}),
        "trials.yaml",
        "trials.yaml:8: [0].sweep.name: duplicate trial name 'a-0.1'"
        " (also trial generated from trial [0])",
    ),
    Mistake(
        "more than a million runs after expansion",
        sweep0(
            {"grid": {"lr": {"range": [0, 1000]}, "batch_size": {"range": [0, 1000]}}}, repeat=2
        ),
        "trials.yaml",
        "trials.yaml:7: [0].sweep: the sweep expands to 1,000,000 trials of 2 repeat(s),"
        " 2,000,000 runs; expected at most 1,000,000 runs in total",
    ),
]


# -- issue 14: the search block of experiment.yaml (search-core) ------------------
SEARCH_SPACE = {"lr": {"loguniform": [1.0e-5, 1.0e-1]}, "depth": {"randint": [2, 9]}}


def search(**changes: Any) -> Mutation:
    """experiment.yaml with lr and depth settings and a valid search block, then ``changes``."""
    block = {"sampler": {"type": "tpe", "seed": 1}, "metric": "val_loss", "mode": "min"}
    block |= {"trials": 4, "space": SEARCH_SPACE, **changes}
    block = {k: v for k, v in block.items() if v is not DROP}
    return edit_yaml(
        "experiment.yaml",
        lambda d: {**d, "settings": {"lr": 0.1, "depth": 2}, "search": block},
    )


def search_space(**dimensions: Any) -> Mutation:
    return search(space={**SEARCH_SPACE, **dimensions})


DROP = object()
SEARCH: list[Mistake] = [
    Mistake(
        "search not a mapping",
        edit_yaml("experiment.yaml", lambda d: {**d, "search": [1]}),
        "experiment.yaml",
        "search: expected a mapping, got a list",
    ),
    Mistake(
        "search with an unknown key",
        search(samples=3),
        "experiment.yaml",
        "search.samples: unknown key; expected one of: lag, metric, mode,",
    ),
    Mistake(
        "search with an unknown sampler",
        search(sampler={"type": "hyperband"}),
        "experiment.yaml",
        "search.sampler.type: unknown sampler 'hyperband'; expected one of random, tpe, cmaes, gp",
    ),
    Mistake(
        "search sampler seed not an integer",
        search(sampler={"type": "random", "seed": "abc"}),
        "experiment.yaml",
        "search.sampler.seed: expected an integer, got a string 'abc'",
    ),
    Mistake(
        "search without a metric",
        search(metric=DROP),
        "experiment.yaml",
        "search: missing required key 'metric'",
    ),
    Mistake(
        "search mode sideways",
        search(mode="sideways"),
        "experiment.yaml",
        "search.mode: expected min, max or auto, got a string 'sideways'",
    ),
    Mistake(
        "search mode not told by the metric's name",
        search(metric="zeta", mode=DROP),
        "experiment.yaml",
        "search.mode: cannot tell from the name 'zeta' whether lower or higher is better",
    ),
    Mistake(
        "search of zero trials",
        search(trials=0),
        "experiment.yaml",
        "search.trials: expected an integer >= 1, got 0",
    ),
    Mistake(
        "search lag of zero",
        search(lag=0),
        "experiment.yaml",
        "search.lag: expected an integer >= 1, got 0",
    ),
    Mistake(
        "search with an empty space",
        search(space={}),
        "experiment.yaml",
        "search.space: expected at least one dimension",
    ),
    Mistake(
        "search with an unknown distribution",
        search_space(lr={"logunifrom": [1.0e-5, 1.0]}),
        "experiment.yaml",
        "search.space.lr.logunifrom: unknown distribution 'logunifrom'",
    ),
    Mistake(
        "search loguniform bound at zero",
        search_space(lr={"loguniform": [0, 1.0]}),
        "experiment.yaml",
        "search.space.lr.loguniform: the bounds of a loguniform must be > 0",
    ),
    Mistake(
        "search dimension as a plain list",
        search_space(lr=[0.1, 0.01]),
        "experiment.yaml",
        "search.space.lr: a plain list is a grid axis; a search dimension is one of choice,",
    ),
    Mistake(
        "search dimension as a range",
        search_space(depth={"range": [2, 9]}),
        "experiment.yaml",
        "search.space.depth: range is a grid axis; a search dimension is one of choice,",
    ),
    Mistake(
        "search dimension with grid points",
        search_space(lr={"loguniform": [1.0e-5, 1.0], "num": 4}),
        "experiment.yaml",
        "search.space.lr.num: 'num' is for grid axes",
    ),
    Mistake(
        "search key not in the settings",
        search_space(lrr={"uniform": [0.0, 1.0]}),
        "experiment.yaml",
        "search.space.lrr: 'lrr' is not a setting of trial 'a' (trials.yaml [0]);",
    ),
    Mistake(
        "search key that names a mapping",
        both(
            trial0(settings={"model": {"width": 3}}),
            search_space(model={"choice": [1, 2]}),
        ),
        "experiment.yaml",
        "search.space.model: 'model' is a mapping of settings in trial 'a'",
    ),
    Mistake(
        "search key also given as an override",
        search(),
        "<command line>",
        "settings.lr: 'lr' is searched (search.space in experiment.yaml)",
        ("lr=0.5",),
    ),
    Mistake(
        "search sampler option Optuna does not have",
        search(sampler={"type": "tpe", "n_startup": 3}),
        "experiment.yaml",
        "search.sampler.n_startup: unknown option of Optuna's TPESampler; expected type, seed",
    ),
    Mistake(
        "search sampler type not a string",
        search(sampler={"type": ["tpe"]}),
        "experiment.yaml",
        "search.sampler.type: unknown sampler ['tpe']; expected one of random, tpe,",
    ),
    Mistake(
        "search sampler option of the wrong type",
        search(sampler={"type": "tpe", "n_startup_trials": [3]}),
        "experiment.yaml",
        "search.sampler: Optuna's TPESampler refused the options:",
    ),
    Mistake(
        "search option the cmaes sampler does not take",
        search(sampler={"type": "cmaes", "restart_strategy": "ipop"}),
        "experiment.yaml",
        "search.sampler.restart_strategy: unknown option of the cmaes sampler; expected type,",
    ),
    Mistake(
        "search cmaes population of one",
        search(sampler={"type": "cmaes", "popsize": 1}),
        "experiment.yaml",
        "search.sampler.popsize: expected an integer >= 2, got 1",
    ),
    Mistake(
        "search option of the random sampler",
        search(sampler={"type": "random", "n_startup_trials": 3}),
        "experiment.yaml",
        "search.sampler.n_startup_trials: unknown key; the random sampler takes only type",
    ),
    Mistake(
        "search past the run limit",
        search(trials=1_000_001),
        "experiment.yaml",
        "search.trials: 1000001 trials of every entry bring the plan to 1,000,001 runs",
    ),
]
if find_spec("torch") is None:
    SEARCH.append(
        Mistake(
            "search with gp and no torch",
            search(sampler={"type": "gp"}),
            "experiment.yaml",
            "search.sampler.type: sampler 'gp' needs torch, which cannot be imported here:"
            " install PyTorch",
        )
    )


#: Every mistake, the original catalogue's first.
CATALOGUE: list[Mistake] = [Mistake(*m) for m in MISTAKES] + HOSTILE + SWEEP + SEARCH
CASES = [pytest.param(m, id=m.case) for m in CATALOGUE]


def assert_one_message(text: str, mistake: Mistake) -> None:
    """One message: its first line names file and key; any other line is a frame of the cause."""
    first, *rest = text.strip().splitlines()
    assert mistake.file in first
    assert mistake.expected in first
    assert len(first) < 1000  # a message quotes what it is about, it never floods
    assert all(line.startswith("  ") for line in rest), text
    assert "Traceback" not in text


@pytest.mark.parametrize("mistake", CASES)
def test_config_mistake_is_named_precisely(
    make_experiment: Callable[..., Path], mistake: Mistake
) -> None:
    """Each mistake raises one ConfigError naming the file and the key path."""
    root = make_experiment()
    mistake.mutate(root)
    with pytest.raises(ConfigError) as info:
        prepare(root, overrides=mistake.overrides)
    assert_one_message(str(info.value), mistake)
    assert not (root / "constructed").exists()


@pytest.mark.parametrize("mistake", CASES)
def test_validate_reports_mistake_with_exit_2_and_no_traceback(
    make_experiment: Callable[..., Path], capsys: pytest.CaptureFixture[str], mistake: Mistake
) -> None:
    """`expman validate` (in this process) prints one config error and exits 2."""
    root = make_experiment()
    mistake.mutate(root)
    assert main(["validate", str(root), *mistake.overrides]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("expman: config error: ")
    assert_one_message(err, mistake)
    assert "configs are valid" not in out
    assert not (root / "constructed").exists()


def test_yaml_error_has_line_and_column(make_experiment: Callable[..., Path]) -> None:
    """A syntax error names the line and column where it was found."""
    root = make_experiment()
    (root / "trials.yaml").write_text("- name: a\n  id: 1\n  repeat: [1\n")
    with pytest.raises(ConfigError) as info:
        prepare(root)
    assert info.value.line == 4
    assert info.value.column is not None


def test_errors_name_the_line_of_the_key(make_experiment: Callable[..., Path]) -> None:
    """The message points at the offending key's line in its file."""
    root = make_experiment(trials=[{"name": "a", "id": 1}, {"name": "b", "id": 2, "repeat": 0}])
    with pytest.raises(ConfigError) as info:
        prepare(root)
    assert "trials.yaml:5: [1].repeat" in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("mistake", CASES)
def test_cli_reports_mistake_with_exit_2_and_leaves_workspace_untouched(
    make_experiment: Callable[..., Path], tmp_path: Path, mistake: Mistake
) -> None:
    """`expman run` prints one message (no traceback), exits 2, and writes nothing."""
    root = make_experiment()
    workspace = tmp_path / "ws"
    (workspace / "exp" / "logs").mkdir(parents=True)
    journal = workspace / "exp" / "logs" / "events.jsonl"
    journal.write_text('{"type": "ExperimentStarted"}\n')
    before = {p: p.stat().st_mtime_ns for p in workspace.rglob("*")}
    mistake.mutate(root)
    proc = run_cli("run", str(root), "-w", str(workspace), *mistake.overrides)
    assert proc.returncode == 2, proc.stderr
    assert_one_message(proc.stderr, mistake)
    assert {p: p.stat().st_mtime_ns for p in workspace.rglob("*")} == before
    assert not (root / "constructed").exists()
    assert not (tmp_path / "x").exists()
    assert not (root / "x").exists()


# -- issue 14: the search block (search-core) -------------------------------------


def test_search_needing_optuna_without_it_is_a_config_error(
    make_experiment: Callable[..., Path],
) -> None:
    """Where Optuna cannot be imported, `validate` of a tpe search exits 2 naming the extra."""
    root = make_experiment()
    search()(root)
    blocked = (
        "import sys; sys.modules['optuna'] = None; from expman.cli import main;"
        f" raise SystemExit(main(['validate', {str(root)!r}]))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    mistake = Mistake(
        "tpe without optuna",
        search(),
        "experiment.yaml",
        "search.sampler.type: sampler 'tpe' needs optuna, which cannot be imported here:"
        " install expman[optuna] (pip install 'expman[optuna]')",
    )
    assert_one_message(proc.stderr.removeprefix("expman: config error: "), mistake)
