"""What a config may name by import path, and what a failed import of it says.

A YAML file alone must not be able to run arbitrary code (``type:
"subprocess:getoutput"``), so an import path is held to a policy before and after
its module is imported:

* it is dotted identifiers, ``package.module:Class`` (:func:`split_import_path`: no
  ``:X``, ``../x:y``, ``.mod:X``, no ``__dunder__`` attribute);
* its top-level module is a config folder's own, or not Python's: the standard
  library, builtins and ``__main__`` are refused before anything is imported
  (:func:`refuse_python_module`);
* what it names is a class, and not one Python itself defines (re-exported by a
  module of yours): :func:`refuse_non_class`.

Every refusal is a :class:`RefusedType`.  A module that raises while it imports is a
:class:`ConfigModuleError` carrying the last frames of its traceback in the user's
own files (:func:`user_frames`), so the cause shows without a Python traceback.
Whether the class is of the right kind (pipeline, callback, subscriber) is for the
caller, ``expman.experiment.preflight``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import stat
import sys
import traceback
from pathlib import Path
from typing import Any


class RefusedType(LookupError):
    """A ``type`` names something a config may not name (see the module docstring)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name!r}: {reason}")


class ConfigModuleError(ImportError):
    """A module a config names (or of its folder) raised while it was imported.

    ``frames`` is the end of its traceback in the user's own files, one short line
    each (``pipes.py:7 in helper: raise RuntimeError(...)``), innermost last.
    """

    def __init__(self, file: Path, line: int | None, error: BaseException) -> None:
        self.file = file
        self.line = line
        self.error = error
        self.frames = user_frames(error)
        super().__init__(f"{file}: cannot import it: {type(error).__name__}: {error}")


def split_import_path(name: str) -> tuple[str, str]:
    """``(module, attribute)`` of ``"pkg.mod:Class"`` (or ``"pkg.mod.Class"``).

    Each part is an identifier: a relative, empty or path-like module (``":X"``,
    ``"../x:y"``, ``".mod:X"``) and a ``__dunder__`` attribute are :class:`RefusedType`.
    """
    if ":" in name:
        module_name, _, attr = name.partition(":")
    else:
        module_name, _, attr = name.rpartition(".")
    expected = (
        "expected an import path 'package.module:Class' (names made of letters,"
        " digits and _, joined by dots) or a registered name"
    )
    modules, attrs = module_name.split("."), attr.split(".")
    if not all(part.isidentifier() for part in (*modules, *attrs)):
        raise RefusedType(name, f"not a valid import path; {expected}")
    if any(part.startswith("__") for part in attrs):
        raise RefusedType(name, f"names a private attribute ({attr!r}); {expected}")
    return module_name, attr


def is_python_own(top: str) -> bool:
    """Whether ``top`` is a module of Python itself (its standard library, builtins)."""
    return top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "__main__"


def folder_provides(folder: Path, top: str) -> bool:
    """Whether ``folder`` holds module ``top``; an OSError (a folder of mode 000) propagates."""
    return any(is_file(p) for p in (folder / f"{top}.py", folder / top / "__init__.py"))


def is_file(path: Path) -> bool:
    """``path.is_file()``, but a path that cannot be looked at raises (PermissionError)."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def refuse_python_module(name: str, top: str) -> None:
    """Refuse ``name`` when its top-level module ``top`` is Python's own (before importing)."""
    if not is_python_own(top):
        return
    what = "the running program" if top == "__main__" else "a module of Python's standard library"
    raise RefusedType(
        name,
        f"{top!r} is {what}; expected a class defined in the config folder or in an"
        " installed package",
    )


def module_error(module_name: str, error: BaseException) -> ConfigModuleError:
    """The ConfigModuleError of ``module_name``'s failed import: its file and line."""
    file = None
    if isinstance(error, SyntaxError) and error.filename:
        file = Path(error.filename)
    else:
        spec_file = _module_file(module_name)
        file = Path(spec_file) if spec_file else None
    if file is None:
        return ConfigModuleError(Path(module_name.replace(".", "/")), None, error)
    return ConfigModuleError(file, line_in(file, error), error)


def _module_file(module_name: str) -> str | None:
    """Where ``module_name``'s source is, if it can be found without running it."""
    with contextlib.suppress(Exception):
        spec = importlib.util.find_spec(module_name)
        if spec is not None and spec.origin and spec.has_location:
            return spec.origin
    return None


def refuse_non_class(name: str, target: Any, dirs: tuple[Path, ...]) -> None:
    """Refuse anything but a class, and a class of Python's own (``mypkg:Thread``)."""
    if not isinstance(target, type):
        raise RefusedType(
            name,
            f"{_what(target)}, not a class; expected a class (a pipeline, callback or subscriber)",
        )
    defined_in = getattr(target, "__module__", "") or ""
    top = defined_in.split(".")[0]
    if not is_python_own(top):
        return
    file = getattr(sys.modules.get(defined_in), "__file__", None)
    if file is not None and any(Path(file).is_relative_to(folder) for folder in dirs):
        return
    raise RefusedType(
        name,
        f"{target.__qualname__} is defined in {defined_in!r}, part of Python itself;"
        " expected a class defined in the config folder or in an installed package",
    )


def _what(target: Any) -> str:
    if inspect.ismodule(target):
        return "it is a module"
    if inspect.isroutine(target) or isinstance(target, functools.partial):
        return "it is a function"
    return f"it is a {type(target).__name__} object"


def user_frames(error: BaseException, limit: int = 3) -> list[str]:
    """The last ``limit`` frames of ``error``'s traceback in the user's own files.

    One line each, ``file:line in function: source``; frames of Python's import
    machinery and of expman itself are left out.  A SyntaxError adds the line it
    was found on (which is no frame).
    """
    own = Path(__file__).resolve().parent
    lines = []
    for frame in traceback.extract_tb(error.__traceback__):
        file = frame.filename
        if file.startswith("<") or "importlib" in file or _inside(Path(file), own):
            continue
        source = (frame.line or "").strip()
        lines.append(f"{file}:{frame.lineno} in {frame.name}: {source}"[:200])
    if isinstance(error, SyntaxError) and error.filename:
        text = (error.text or "").strip()
        lines.append(f"{error.filename}:{error.lineno}: {text}"[:200])
    return lines[-limit:]


def _inside(path: Path, folder: Path) -> bool:
    with contextlib.suppress(OSError, ValueError):
        return path.resolve().is_relative_to(folder)
    return False


def line_in(file: Path, error: BaseException) -> int | None:
    """The line of ``file`` where ``error`` was raised (or, for a SyntaxError, found)."""
    if isinstance(error, SyntaxError) and error.filename and same_file(Path(error.filename), file):
        return error.lineno
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if same_file(Path(frame.filename), file):
            line = frame.lineno
    return line


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False
