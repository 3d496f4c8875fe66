"""Pipeline: the base class for user training code.

A pipeline is any class with ``run(self, ctx)``: ``async def`` runs in the event
loop, a plain ``def`` runs in a worker thread with the same ``ctx`` API.  It is
named in a run's settings as ``settings.pipeline.type`` (a registered name or an
import path); the other keys of ``settings.pipeline`` are passed to its constructor.

Optional hooks, called by expman:

* ``save_checkpoint(path)``: write the model state to ``path`` (a file or a folder).
  expman passes a temporary path and renames it once the hook returns, so a
  checkpoint is never half-written.  Sync or async.
* ``load_checkpoint(path)`` or ``load_checkpoint(path, ctx)``: restore state before
  ``run`` when a run resumes; ``ctx.start_epoch`` then says which epoch to continue
  from, and ``ctx`` lets it restore a generator of the run's (``ctx.rng``) with the
  model.  Sync or async.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from expman.serializable import YAMLSerializable

if TYPE_CHECKING:
    from expman.run.context import RunContext


class Pipeline(YAMLSerializable, ABC):
    """Base class for a training pipeline; subclasses implement :meth:`run`.

    The original API's ``Pipeline(env)`` (the base class itself, given an
    ``Environment``) is a holder of callbacks: those registered on it join every run
    of the experiments run with that environment, as fresh copies.  A subclass made
    with ``env`` registers with it the same way.
    """

    def __new__(cls, *args: Any, **params: Any) -> Any:
        # The base class is abstract (run): Pipeline(env) makes a callbacks holder.
        return super().__new__(_CallbackHolder if cls is Pipeline else cls)

    def __init__(self, env: Any = None, **params: Any) -> None:
        self.env = env
        self.params: dict[str, Any] = dict(params)
        self.callbacks: list[Any] = []
        if env is not None and isinstance(getattr(env, "pipelines", None), list):
            env.pipelines.append(self)

    def register_callback(self, callback: Any) -> None:
        """Attach a callback to every run of this pipeline (besides those in YAML)."""
        self.callbacks.append(callback)

    @abstractmethod
    def run(self, ctx: RunContext) -> Mapping[str, Any] | None:
        """Train; return the run's final metrics (or None).  May be ``async def``."""


class _CallbackHolder(Pipeline):
    """What ``Pipeline(env)`` makes: callbacks for the runs of ``env``'s experiments."""

    def run(self, ctx: RunContext) -> Mapping[str, Any] | None:
        raise TypeError(
            "Pipeline(env) holds callbacks for the experiment's runs; the pipeline that "
            "trains is the one settings.pipeline.type names (a subclass defining run(ctx))"
        )


def checkpoint_args(load: Any, path: Any, ctx: Any) -> tuple[Any, ...]:
    """The arguments for ``load_checkpoint``: ``(path, ctx)`` if it takes two, else ``(path,)``."""
    import inspect

    try:
        params = inspect.signature(load).parameters.values()
    except (TypeError, ValueError):
        return (path,)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_more = any(p.kind is p.VAR_POSITIONAL for p in params)
    return (path, ctx) if len(positional) >= 2 or takes_more else (path,)


def checkpoint_load_error(path: Any, exc: BaseException) -> Exception:
    """The error of a ``load_checkpoint`` that raised: names the file, keeps the cause."""
    from expman.errors import CheckpointLoadError

    what = type(exc).__qualname__ + (f": {exc}" if str(exc) else "")
    return CheckpointLoadError(f"checkpoint {path} could not be loaded ({what})")


def pipeline_class(config: Mapping[str, Any]) -> Any:
    """The class that ``settings.pipeline`` names (registered name or import path)."""
    from expman.serializable import resolve_type

    return resolve_type(str(config["type"]))


def build_pipeline(config: Mapping[str, Any]) -> Any:
    """A fresh pipeline object from ``settings.pipeline`` (``type`` plus constructor params)."""
    from expman.serializable import build

    params = {k: v for k, v in config.items() if k != "type"}
    return build(pipeline_class(config), params)


async def call_hook(hook: Any, *args: Any) -> Any:
    """Call a sync or async hook; sync ones run in a worker thread."""
    import inspect

    import anyio

    if inspect.iscoroutinefunction(hook):
        return await hook(*args)
    result = await anyio.to_thread.run_sync(hook, *args)
    if inspect.isawaitable(result):
        return await result
    return result
