"""YAMLSerializable: the registry that turns ``{type: Name, ...}`` into objects, and back.

Naming a class.  A class registers under a name with ``@YAMLSerializable.register
("Name")`` (or ``expman.register``); a config can also name a class with an import
path ``"package.module:Class"`` (or ``"package.module.Class"``).  An import path is
held to a policy, because a YAML file alone must not be able to run arbitrary code
(``type: "subprocess:getoutput"``): it is dotted identifiers (no ``..``, no leading
``.``, no ``__dunder__`` attribute); its module is one of the config folder's or of
an installed package, never Python's standard library (refused before it is
imported); and what it names is a class defined there, not a function, a module or
another object (:class:`RefusedType`; the policy is :mod:`expman.import_paths`).
Whether the class is of the right kind (a pipeline, a callback, a subscriber) is for
the caller to check, before it calls or builds anything
(``expman.experiment.preflight``).  While a
config's pipelines, callbacks and subscribers are resolved, its folder is on
``sys.path`` (:func:`import_path`), and before the first name is resolved there the
folder's own modules are imported, once per folder per process (see
:func:`import_config_modules`), so ``type: StopWhenPerfect`` works for a class that
a ``callbacks.py`` beside the YAML registers.  A name registered by a module of the
folder being resolved wins over the same name registered elsewhere.

Building.  :func:`build` is expman's one way to make an object from a type and its
parameters (``settings.pipeline``, ``settings.callbacks``, ``subscribers:``): a
YAMLSerializable subclass that defines its own ``from_config`` classmethod is built
with ``cls.from_config(params)`` (``params`` without ``type``); any other class is
called with the parameters as keywords.  ``YAMLSerializable.from_config({type: ...})``
resolves the type and builds it that way; ``Sub.from_config(params)`` on a subclass
without its own ``from_config`` calls ``Sub(**params)``.

Saving.  Every YAMLSerializable object keeps the config it was built from in
``self.config`` (a dict without ``type``): ``YAMLSerializable.__init__(config=None,
**params)`` stores it, and :func:`build` records it on objects whose constructor did
not.  ``obj.to_config()`` is that config with ``type`` (the class's registered name,
else its import path); ``obj.to_yaml(path=None)`` and ``YAMLSerializable.save(obj,
path)`` write it as YAML, and ``YAMLSerializable.from_config(yaml.safe_load(text))``
builds an equal object again.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from expman.import_paths import (
    ConfigModuleError,
    RefusedType,
    folder_provides,
    is_file,
    line_in,
    module_error,
    refuse_non_class,
    refuse_python_module,
    same_file,
    split_import_path,
)

__all__ = [
    "ConfigModuleError",
    "InvalidParam",
    "RefusedType",
    "UnknownType",
    "YAMLSerializable",
    "build",
    "builds_itself",
    "config_modules",
    "import_config_modules",
    "import_path",
    "register",
    "resolve_type",
    "signature_of",
    "type_name",
]

T = TypeVar("T")

#: The longest ``type`` a config may give (a registered name or an import path).
MAX_TYPE_NAME = 200


class YAMLSerializable:
    """Base (optional) and registry of classes buildable from YAML mappings, and savable."""

    _registry: ClassVar[dict[str, type[Any]]] = {}

    #: The config this object was built from: its parameters, without ``type``.
    config: dict[str, Any]

    def __init__(self, config: Mapping[str, Any] | None = None, **params: Any) -> None:
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(
                f"{type(self).__name__}: expected the config as a mapping,"
                f" got {type(config).__name__}"
            )
        merged = {**(config or {}), **params}
        merged.pop("type", None)
        self.config = merged
        super().__init__()

    @classmethod
    def register(cls, name: str | None = None) -> Callable[[type[T]], type[T]]:
        """Class decorator: make the class buildable as ``{type: name}``."""

        def decorate(target: type[T]) -> type[T]:
            key = name or target.__name__
            YAMLSerializable._registry[key] = target
            module = sys.modules.get(getattr(target, "__module__", ""))
            file = getattr(module, "__file__", None)
            if file is not None:
                _registered_in.setdefault(file, {})[key] = target
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
        """Build an object from its config.

        On YAMLSerializable itself, ``config["type"]`` names the class (see the module
        docstring for how it is built).  On a subclass, ``type`` may be left out; when
        given it must name that class or one of its subclasses.
        """
        params = dict(config)
        name = params.pop("type", None)
        if name is None:
            if cls is YAMLSerializable:
                raise ValueError(
                    f"from_config: expected a mapping with a 'type' key, got keys {sorted(params)}"
                )
            return _construct(cls, params)
        target = resolve_type(str(name))
        if target is cls or cls is YAMLSerializable:
            return _construct(cls, params) if target is cls else build(target, params)
        if isinstance(target, type) and issubclass(target, cls):
            return build(target, params)
        raise TypeError(f"{cls.__name__}.from_config: type {name!r} is not a {cls.__name__}")

    def to_config(self) -> dict[str, Any]:
        """``{type: ..., **config}``: what :meth:`from_config` builds this object from."""
        config = getattr(self, "config", None)
        if not isinstance(config, Mapping):
            raise TypeError(
                f"{type(self).__name__}.to_config: the object has no config to save"
                " (build it with from_config, or pass its parameters to"
                " YAMLSerializable.__init__)"
            )
        saved = {"type": type_name(type(self))}
        for key, value in config.items():
            saved[str(key)] = _plain(value, str(key), type(self).__name__)
        return saved

    def to_yaml(self, path: str | Path | None = None) -> str:
        """This object's :meth:`to_config` as YAML text, also written to ``path`` if given."""
        # Imported here on purpose: a worker process builds pipelines without PyYAML.
        import yaml

        text: str = yaml.safe_dump(self.to_config(), sort_keys=False, allow_unicode=True)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @staticmethod
    def save(obj: YAMLSerializable, path: str | Path) -> Path:
        """Write ``obj``'s config to ``path`` as YAML; returns the path."""
        if not isinstance(obj, YAMLSerializable):
            raise TypeError(f"save: expected a YAMLSerializable, got {type(obj).__name__}")
        obj.to_yaml(path)
        return Path(path)


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


def type_name(cls: type[Any]) -> str:
    """The name ``type:`` gives ``cls`` by: its registered name, else its import path."""
    for name, registered in YAMLSerializable._registry.items():
        if registered is cls:
            return name
    return f"{cls.__module__}:{cls.__qualname__}"


def builds_itself(target: Any) -> bool:
    """Whether ``target`` is a YAMLSerializable class with its own ``from_config``."""
    if not (isinstance(target, type) and issubclass(target, YAMLSerializable)):
        return False
    own = inspect.getattr_static(target, "from_config")
    base = YAMLSerializable.__dict__["from_config"]
    return getattr(own, "__func__", own) is not base.__func__


def resolve_type(name: str) -> Any:
    """The class registered as ``name``, or the attribute an import path names."""
    dirs = _config_dirs.get()
    for folder in dirs:
        import_config_modules(folder)
    for folder in reversed(dirs):
        own = _folder_names.get(folder)
        if own and name in own:
            return own[name]
    registry = YAMLSerializable._registry
    if name in registry:
        return registry[name]
    known = sorted(registry)
    if len(name) > MAX_TYPE_NAME:
        raise RefusedType(
            name, f"the name is {len(name)} characters long; expected at most {MAX_TYPE_NAME}"
        )
    if ":" not in name and "." not in name:
        raise UnknownType(name, "not a registered name", known)
    module_name, attr = split_import_path(name)
    # Once per config folder and name, while the same module is loaded: the check
    # below stats files, and every run of a sweep builds its pipeline and callbacks
    # by name.  (Another folder's module of that name, or a reload, resolves again.)
    top = module_name.split(".")[0]
    key = (dirs, name)
    cached = _resolved.get(key)
    if cached is not None and sys.modules.get(top) is cached[1]:
        return cached[0]
    try:
        from_folder = any(folder_provides(folder, top) for folder in dirs)
    except OSError as exc:
        detail = f"cannot read {exc.filename}: {exc.strerror or type(exc).__name__}"
        raise UnknownType(name, detail, known) from None
    if not from_folder:
        refuse_python_module(name, top)
    if dirs:
        _forget_shadowed_module(top, dirs[-1])
    module = _import(name, module_name, known)
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UnknownType(name, f"module {module_name!r} has no {attr!r}", known) from None
        except Exception as exc:  # a module-level __getattr__ of the user's that raised
            raise module_error(module_name, exc) from exc
    refuse_non_class(name, target, dirs)
    if len(_resolved) >= _RESOLVED_MAX:
        _resolved.clear()
    _resolved[key] = (target, sys.modules.get(top))
    return target


def _import(name: str, module_name: str, known: list[str]) -> Any:
    """Import ``module_name``; its own failure is a ConfigModuleError with the user's frames."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(f"{missing}.")):
            raise UnknownType(name, f"cannot import module {module_name!r}: {exc}", known) from None
        raise module_error(module_name, exc) from exc  # the module's own missing import
    except (Exception, SystemExit) as exc:  # the user's module raised while it imported
        raise module_error(module_name, exc) from exc


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
    """An object of ``target`` from its parameters (``from_config`` or keywords, as above)."""
    if builds_itself(target):
        built = target.from_config(dict(params))
    else:
        built = _construct(target, params)
    if isinstance(built, YAMLSerializable) and getattr(built, "config", None) is None:
        with contextlib.suppress(AttributeError, TypeError):  # __slots__, a frozen class
            built.config = dict(params)
    return built


def _construct(target: Any, params: Mapping[str, Any]) -> Any:
    """Call ``target(**params)``, turning a signature mismatch into a readable TypeError."""
    if params:
        try:
            signature_of(target).bind(**params)
        except TypeError as exc:
            raise TypeError(f"{getattr(target, '__name__', target)}: {exc}") from None
        except ValueError:  # builtins without a signature
            pass
    return target(**params)


def _plain(value: Any, key: str, owner: str) -> Any:
    """``value`` as plain YAML data (dicts, lists, scalars), or a TypeError naming ``key``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{key}.{k}", owner) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{key}[{i}]", owner) for i, v in enumerate(value)]
    raise TypeError(
        f"{owner}.to_config: {key}: a {type(value).__name__} is not a YAML value"
        " (expected None, a bool, number or string, or a list or mapping of those)"
    )


#: Import paths resolved per config folder stack:
#: ``(folders, name) -> (target, the top-level module it came from)``.
_resolved: dict[tuple[tuple[Path, ...], str], tuple[Any, Any]] = {}
_RESOLVED_MAX = 1024

#: The config folders ``import_path`` put on ``sys.path``, innermost last.  A context
#: variable, so each experiment's tasks and worker threads see their own folder.
_config_dirs: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar(
    "expman_config_dirs", default=()
)

#: The names each module file registered: ``module.__file__ -> {name: class}``.
_registered_in: dict[str, dict[str, type[Any]]] = {}
#: The names registered by each imported config folder's own modules.  A folder is
#: in here once all its modules imported; a failed one is tried again next time.
_folder_names: dict[Path, dict[str, type[Any]]] = {}

#: Top-level files of a config folder that are never imported as its modules.
_NOT_MODULES = frozenset({"setup.py", "conftest.py"})


@contextlib.contextmanager
def import_path(path: Path) -> Iterator[None]:
    """Put ``path`` first on ``sys.path`` for the duration; its modules import on first use."""
    entry = str(path)
    sys.path.insert(0, entry)
    token = _config_dirs.set((*_config_dirs.get(), Path(path).absolute()))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            _config_dirs.reset(token)
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def config_modules(folder: Path) -> list[Path]:
    """The files of ``folder`` imported as its modules: top-level ``*.py``, in name order.

    Subfolders are not searched; ``_*.py``, ``test_*.py``, ``setup.py`` and
    ``conftest.py`` are skipped, and so is a file whose name is not a module name.
    """
    return [
        file
        for file in sorted(folder.glob("*.py"))
        if file.is_file()
        and file.stem.isidentifier()
        and not file.stem.startswith(("_", "test_"))
        and file.name not in _NOT_MODULES
    ]


def import_config_modules(folder: Path) -> None:
    """Import ``folder``'s modules (:func:`config_modules`) once per process.

    Call it with ``folder`` on ``sys.path`` (inside :func:`import_path`).  A module
    that raises is a :class:`ConfigModuleError` naming its file and, where the
    traceback says, the line.
    """
    folder = folder.absolute()
    if folder in _folder_names:
        return
    names: dict[str, type[Any]] = {}
    for file in config_modules(folder):
        _forget_shadowed_module(file.stem, folder)
        try:
            module = importlib.import_module(file.stem)
        except (Exception, SystemExit) as exc:  # sys.exit() at import is a mistake too
            raise ConfigModuleError(file, line_in(file, exc), exc) from exc
        names.update(_registered_in.get(getattr(module, "__file__", None) or "", {}))
    _folder_names[folder] = names


def _forget_shadowed_module(top: str, folder: Path) -> None:
    """Drop ``top`` (and its submodules) if another folder's module of that name is cached.

    Two config folders may each ship a ``pipes.py``; without this the first one
    imported in a process would serve both (``sys.modules`` wins over ``sys.path``).
    """
    cached = sys.modules.get(top)
    if cached is None:
        return
    provided = next(
        (p for p in (folder / f"{top}.py", folder / top / "__init__.py") if _readable_file(p)),
        None,
    )
    if provided is None:
        return
    loaded = getattr(cached, "__file__", None)
    if loaded is not None and same_file(Path(loaded), provided):
        return
    for name in [n for n in sys.modules if n == top or n.startswith(f"{top}.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def _readable_file(path: Path) -> bool:
    try:
        return is_file(path)
    except OSError:
        return False
