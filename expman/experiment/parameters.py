"""Which constructor parameters a buildable type accepts, as far as its code says.

A class's parameters are those of the first ``__init__`` along its MRO (its own, or
the one it inherits from a class of yours), read from that function rather than from
``inspect.signature(cls)``, because of the framework bases: the catch-all
``**params`` of ``YAMLSerializable.__init__`` and ``Pipeline.__init__`` (and
``object.__init__``, and any ``__new__`` of those bases) accepts nothing on a
subclass's behalf.  (A class of yours that defines ``__new__`` is read by
``inspect.signature``.)  So

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

#: The bases whose ``__init__`` and ``__new__`` never count for a subclass: their
#: ``**params`` (and ``*args``) accept anything on its behalf.
_FRAMEWORK_BASES: tuple[type, ...] = (object, YAMLSerializable, Pipeline)
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
        if _defined_by(target, "__new__") in _FRAMEWORK_BASES:
            return _from_constructor(target)
        # A class with a __new__ of its own: its signature is whatever inspect makes of it.
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
    owner = _defined_by(cls, "__init__")
    if owner in _FRAMEWORK_BASES:
        return Accepted(())
    init = owner.__dict__["__init__"]
    if inspect.isfunction(init):
        parameters = list(signature_of(init).parameters.values())[1:]  # self
    else:  # a C type's __init__ or a descriptor: ask inspect about the class
        try:
            parameters = list(signature_of(cls).parameters.values())
        except (TypeError, ValueError):
            return None
    names = tuple(p.name for p in parameters if p.kind in _NAMED)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters)
    return Accepted(names, owner.__qualname__ if takes_any else None)


def _defined_by(cls: type, name: str) -> type:
    """The first class along ``cls``'s MRO that defines ``name`` itself."""
    return next(klass for klass in cls.__mro__ if name in klass.__dict__)


def _validates_params(target: Any) -> bool:
    """Whether ``target`` has a ``validate_params`` of its own (not the no-op default)."""
    own = inspect.getattr_static(target, "validate_params", None)
    if own is None:
        return False
    base = YAMLSerializable.__dict__["validate_params"]
    return getattr(own, "__func__", own) is not base.__func__
