"""The curated public surface: ``expman.__all__`` is exactly what the package offers."""

from __future__ import annotations

import importlib.resources
import inspect
import json
import subprocess
import sys
import types

import pytest

import expman


def test_all_is_sorted_and_unique() -> None:
    """``__all__`` lists each name once, in order, so a diff of it reads as an API change.

    The order is ruff's (RUF022): constants, then classes, then functions, each sorted.
    """

    def kind(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert list(expman.__all__) == sorted(set(expman.__all__), key=kind)


@pytest.mark.parametrize("name", expman.__all__)
def test_every_exported_name_exists_and_is_documented(name: str) -> None:
    """Each name in ``__all__`` resolves, and a class or function says what it is for."""
    obj = getattr(expman, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert obj.__module__.startswith("expman"), f"{name} comes from {obj.__module__}"
        doc = inspect.getdoc(obj)
        assert doc, f"{name} has no docstring"
        assert doc.splitlines()[0].strip(), f"{name}'s docstring starts with an empty line"


def test_nothing_public_is_left_out_of_all() -> None:
    """Every public attribute of the package (not a submodule) is listed in ``__all__``."""
    public = {
        name
        for name, value in vars(expman).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - set(expman.__all__) == set()


def test_star_import_gives_exactly_all() -> None:
    """``from expman import *`` binds exactly the names of ``__all__``."""
    namespace: dict[str, object] = {}
    exec("from expman import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(expman.__all__)


def test_the_package_ships_its_types() -> None:
    """``py.typed`` is installed beside the package (PEP 561), so users' type checkers read it."""
    assert (importlib.resources.files("expman") / "py.typed").is_file()


def test_importing_expman_loads_no_heavy_optional_package() -> None:
    """``import expman`` pulls in neither Ray, matplotlib nor pandas (they load when used)."""
    code = (
        "import sys, expman; "
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules} "
        "& {'ray', 'matplotlib', 'pandas', 'numpy', 'sklearn'})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_a_process_worker_imports_only_what_a_run_needs() -> None:
    """The worker process loads no config machinery, runtime, experiment or writers.

    (structlog itself imports rich when rich is installed; that one is not ours to skip.)
    """
    code = (
        "import json, sys; import expman.executors.worker; print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    for package in (
        "omegaconf",
        "yaml",
        "expman.config",
        "expman.experiment",
        "expman.runtime",
        "expman.subscribers",
        "expman.results",
    ):
        assert not {m for m in loaded if m == package or m.startswith(package + ".")}, package


def test_no_layer_below_the_api_imports_the_package_root() -> None:
    """``import expman`` inside the package would tie a layer to everything above it."""
    import ast
    from pathlib import Path

    root = Path(expman.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root).as_posix()
        if relative in ("__init__.py", "cli.py") or relative.startswith("testing/"):
            continue  # the API itself and the layers above it
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if "expman" in names:
                offenders.append(f"{relative}:{node.lineno}")
    assert offenders == []
