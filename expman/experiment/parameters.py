"""Which constructor parameters a buildable type accepts, as far as its code says.

A class's parameters are those of the first ``__init__`` along its MRO (its own, or
the one it inherits from a class of yours), read from that function rather than from
``inspect.signature(cls)``, because of the framework bases: the catch-all
``**params`` of ``YAMLSerializable.__init__`` and ``Pipeline.__init__`` (and
``object.__init__``) accepts nothing on a subclass's behalf.  So

* a pipeline without a constructor of its own takes no parameters;
* ``__init__(self, hidden=32, lr=0.1)`` calling ``super().__init__()`` takes exactly
  ``hidden`` and ``lr``;
* an ``__init__`` taking ``**kwargs`` *opts out*: any key may be meant for it (kept,
  or handed on to a parent), so unknown keys are not refused, and
  :func:`unchecked_reason` says so;
* a class with its own ``from_config`` builds itself from whatever config it is
  given: nothing can be known of its parameters but what its ``validate_params``
  checks;
* a function (a factory) accepts what its signature says.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from expman.pipeline import Pipeline
from expman.serializable import YAMLSerializable, builds_itself, signature_of

#: The bases' ``__init__`` methods: what they accept never counts for a subclass.
_FRAMEWORK_INITS: tuple[Any, ...] = (
    object.__init__,
    YAMLSerializable.__dict__["__init__"],
    Pipeline.__dict__["__init__"],
)
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True, slots=True)
class Accepted:
    """The parameter names a type accepts; ``open_in`` names who takes ``**kwargs``."""

    names: tuple[str, ...]
    #: The qualified name of the class (or function) whose ``**kwargs`` accept any
    #: other key, or None when exactly ``names`` are accepted.
    open_in: str | None = None
    #: The type builds itself with its own ``from_config``: nothing is known.
    builds_itself: bool = False

    @property
    def checked(self) -> bool:
        """Whether an unknown key can be refused."""
        return self.open_in is None and not self.builds_itself


def accepted_parameters(target: Any) -> Accepted | None:
    """What ``target`` accepts (see the module docstring); None when it has no signature."""
    if builds_itself(target):
        return Accepted((), builds_itself=True)
    if isinstance(target, type):
        if inspect.getattr_static(target, "__new__") is object.__dict__["__new__"]:
            return _from_constructor(target)
        # A class with its own __new__: its signature is whatever inspect makes of it.
    try:
        signature = signature_of(target)
    except (TypeError, ValueError):
        return None
    names = tuple(p.name for p in signature.parameters.values() if p.kind in _NAMED)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    return Accepted(names, getattr(target, "__qualname__", repr(target)) if takes_any else None)


def unchecked_reason(target: Any) -> str | None:
    """Why ``target``'s parameter names cannot be checked, or None when they are."""
    accepted = accepted_parameters(target)
    if accepted is None or accepted.checked:
        return None
    own_validation = _validates_params(target)
    if accepted.builds_itself:
        if own_validation:
            return "builds itself (from_config): only its validate_params checks its parameters"
        return "builds itself (from_config): its parameters are not checked"
    if own_validation:
        return "takes **kwargs: only its validate_params checks its parameters"
    return "takes **kwargs: its parameters are not checked"


def _from_constructor(cls: type) -> Accepted | None:
    """The parameters of the first ``__init__`` along ``cls``'s MRO."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if init in _FRAMEWORK_INITS:
            return Accepted(())
        if inspect.isfunction(init):
            parameters = list(signature_of(init).parameters.values())[1:]  # self
        else:  # a C type's __init__ or a descriptor: ask inspect about the class
            try:
                parameters = list(signature_of(cls).parameters.values())
            except (TypeError, ValueError):
                return None
        names = tuple(p.name for p in parameters if p.kind in _NAMED)
        takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters)
        return Accepted(names, klass.__qualname__ if takes_any else None)
    return Accepted(())


def _validates_params(target: Any) -> bool:
    """Whether ``target`` has a ``validate_params`` of its own (not the no-op default)."""
    own = inspect.getattr_static(target, "validate_params", None)
    if own is None:
        return False
    base = YAMLSerializable.__dict__["validate_params"]
    return getattr(own, "__func__", own) is not base.__func__
