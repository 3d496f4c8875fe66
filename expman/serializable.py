"""YAMLSerializable: the registry that turns ``{type: Name, ...}`` into objects.

A class registers under a name with ``@YAMLSerializable.register("Name")`` (or
``expman.register``); a config can also name any importable class with an import
path ``"package.module:attr"`` (or ``"package.module.attr"``).  While a config's
pipelines and callbacks are resolved, its directory is on ``sys.path``, so an
experiment can keep its pipeline module beside its YAML.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")


class YAMLSerializable:
    """Base (optional) and registry of classes buildable from YAML mappings."""

    _registry: ClassVar[dict[str, type[Any]]] = {}

    @classmethod
    def register(cls, name: str | None = None) -> Callable[[type[T]], type[T]]:
        """Class decorator: make the class buildable as ``{type: name}``."""

        def decorate(target: type[T]) -> type[T]:
            YAMLSerializable._registry[name or target.__name__] = target
            return target

        return decorate

    @classmethod
    def registered(cls) -> Mapping[str, type[Any]]:
        """Every registered name and its class."""
        return dict(YAMLSerializable._registry)

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> None:
        """Check constructor parameters from a config before anything runs.

        Raise :class:`InvalidParam` naming the offending parameter; expman turns it
        into a ConfigError with the file, line and key.  Default: no checks beyond
        the constructor's signature.
        """

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Any:
        """Build an object from ``{type: ..., **params}``."""
        params = dict(config)
        target = resolve_type(str(params.pop("type")))
        return target(**params)


register = YAMLSerializable.register


class InvalidParam(ValueError):
    """A constructor parameter has a value the class cannot use."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        self.message = message
        super().__init__(f"{param}: {message}")


class UnknownType(LookupError):
    """A ``type`` names neither a registered class nor an importable attribute."""

    def __init__(self, name: str, detail: str, known: list[str]) -> None:
        self.name = name
        self.detail = detail
        self.known = known
        super().__init__(f"{name!r}: {detail}")


def resolve_type(name: str) -> Any:
    """The class registered as ``name``, or the attribute an import path names."""
    registry = YAMLSerializable._registry
    if name in registry:
        return registry[name]
    known = sorted(registry)
    if ":" in name:
        module_name, _, attr = name.partition(":")
    elif "." in name:
        module_name, _, attr = name.rpartition(".")
    else:
        raise UnknownType(name, "not a registered name", known)
    # Once per config folder and name, while the same module is loaded: the check
    # below stats files, and every run of a sweep builds its pipeline and callbacks
    # by name.  (Another folder's module of that name, or a reload, resolves again.)
    top = module_name.split(".")[0]
    key = (_config_dirs.get(), name)
    cached = _resolved.get(key)
    if cached is not None and sys.modules.get(top) is cached[1]:
        return cached[0]
    _forget_shadowed_module(top)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownType(name, f"cannot import module {module_name!r}: {exc}", known) from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UnknownType(name, f"module {module_name!r} has no {attr!r}", known) from None
    if len(_resolved) >= _RESOLVED_MAX:
        _resolved.clear()
    _resolved[key] = (target, sys.modules.get(top))
    return target


def signature_of(target: Any) -> inspect.Signature:
    """``inspect.signature(target)``, computed once per class (planning checks every trial)."""
    try:
        return _cached_signature(target)
    except TypeError:  # an unhashable callable (rare): look it up each time
        return inspect.signature(target)


@functools.lru_cache(maxsize=512)
def _cached_signature(target: Any) -> inspect.Signature:
    return inspect.signature(target)


def build(target: Any, params: Mapping[str, Any]) -> Any:
    """Call ``target(**params)``, turning a signature mismatch into a readable TypeError."""
    if params:
        try:
            signature_of(target).bind(**params)
        except TypeError as exc:
            raise TypeError(f"{getattr(target, '__name__', target)}: {exc}") from None
        except ValueError:  # builtins without a signature
            pass
    return target(**params)


#: Import paths resolved per config folder stack:
#: ``(folders, name) -> (target, the top-level module it came from)``.
_resolved: dict[tuple[tuple[Path, ...], str], tuple[Any, Any]] = {}
_RESOLVED_MAX = 1024

#: The config folders ``import_path`` put on ``sys.path``, innermost last.  A context
#: variable, so each experiment's tasks and worker threads see their own folder.
_config_dirs: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar(
    "expman_config_dirs", default=()
)


@contextlib.contextmanager
def import_path(path: Path) -> Iterator[None]:
    """Put ``path`` first on ``sys.path`` for the duration."""
    entry = str(path)
    sys.path.insert(0, entry)
    token = _config_dirs.set((*_config_dirs.get(), Path(path)))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            _config_dirs.reset(token)
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _forget_shadowed_module(top: str) -> None:
    """Drop ``top`` (and its submodules) if another folder's module of that name is cached.

    Two config folders may each ship a ``pipes.py``; without this the first one
    imported in a process would serve both (``sys.modules`` wins over ``sys.path``).
    """
    dirs = _config_dirs.get()
    cached = sys.modules.get(top)
    if not dirs or cached is None:
        return
    folder = dirs[-1]
    provided = next(
        (p for p in (folder / f"{top}.py", folder / top / "__init__.py") if p.is_file()), None
    )
    if provided is None:
        return
    loaded = getattr(cached, "__file__", None)
    if loaded is not None and _same_file(Path(loaded), provided):
        return
    for name in [n for n in sys.modules if n == top or n.startswith(f"{top}.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False
