"""Callback: the base class of training callbacks, all of them bus subscribers.

A callback overrides only the hooks it needs; each hook is named after the event it
receives (``on_epoch_end(event)`` for :class:`~expman.events.EpochEnd`,
``on_run_finished(event)`` for :class:`~expman.events.RunFinished`, ...) and is a
coroutine.  Hooks of control callbacks run before ``publish`` returns, so when a
pipeline's ``await ctx.epoch_end(...)`` returns, every callback has seen that epoch.

Callbacks named in YAML (``settings.callbacks``) are built fresh for every run and
see that run's events.  Callbacks passed to ``run_experiment(subscribers=...)`` see
every event of the experiment.  ``state_dict``/``load_state_dict`` let a callback's
counters be saved with a checkpoint and restored when the run resumes from it.

A run's callbacks are part of its training loop (as in Lightning and Keras): one
that raises fails that run (``CallbackError``).  The experiment's subscribers stay
isolated: an exception there is reported and the runs go on.

Per run, hooks are called in this order (checkpoints where a callback asks for them)::

    on_run_started
    on_epoch_end            once per reported epoch
      on_checkpoint_due     a callback asked for a checkpoint during that epoch_end
      on_checkpoint_staged  the pipeline's save_checkpoint wrote it (temporary name)
      on_checkpoint_saved   renamed into place, and the journal durably names it
      on_stop_requested     a callback (or the pipeline) asked to stop
    on_run_ending           run() returned; a final checkpoint may still be asked for
    on_run_finished         the outcome, with run_summary() merged into its metrics
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, get_args

from expman.bus import CONTROL, Delivery
from expman.events import (
    CheckpointDue,
    CheckpointSaved,
    CheckpointStaged,
    EpochEnd,
    Event,
    ExperimentFinished,
    ExperimentStarted,
    RunEnding,
    RunFinished,
    RunRetrying,
    RunStalled,
    RunStarted,
    StopRequested,
    StopScope,
    TrialFinished,
    TrialStarted,
)
from expman.run.callbacks import HookedCallback
from expman.serializable import YAMLSerializable

if TYPE_CHECKING:
    from expman.bus import EventBus
    from expman.workspace.layout import RunPaths

C = TypeVar("C", bound="Callback")
#: The scopes a stop request can have: run, trial, experiment.
STOP_SCOPES: tuple[str, ...] = get_args(StopScope)
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def hook_name(event_type: type[Event]) -> str:
    """``on_<snake_case>`` of an event class: EpochEnd -> on_epoch_end."""
    return "on_" + _CAMEL.sub("_", event_type.__name__).lower()


class Callback(YAMLSerializable, HookedCallback):
    """Base class: no-op async hooks, state for resume, and ways to publish.

    Passed to ``run_experiment(subscribers=...)``, a callback is a *control*
    subscriber to every event: it decides (stops runs, asks for checkpoints) before
    the publisher goes on.
    """

    events: ClassVar[tuple[type[Event], ...]] = (Event,)
    delivery: ClassVar[Delivery] = CONTROL

    #: The key of this callback's state in a checkpoint (default: the class name).
    state_key: ClassVar[str | None] = None

    _hooks: ClassVar[dict[type[Event], str | None]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._hooks = {}

    def __init__(self, env: Any = None) -> None:
        #: The original API's ``Environment`` this callback was made with (or None).
        self.env = env
        self._bus: EventBus | None = None
        self._experiment: str | None = None
        self._trial: str | None = None
        self._repeat: int | None = None
        self._paths: RunPaths | None = None
        self._peers: Sequence[Any] = ()

    # -- wiring (done by the runtime) ---------------------------------------------------

    def bind(
        self,
        bus: EventBus,
        experiment: str,
        trial: str | None = None,
        repeat: int | None = None,
        *,
        paths: RunPaths | None = None,
        peers: Sequence[Any] = (),
    ) -> None:
        """Attach to a bus and, for per-run callbacks, to one run.

        ``paths`` are the run's folders; ``peers`` is the run's live list of callbacks
        (this one included), which :meth:`find_callback` searches.
        """
        self._bus = bus
        self._experiment = experiment
        self._trial = trial
        self._repeat = repeat
        self._paths = paths
        self._peers = peers

    @property
    def paths(self) -> RunPaths:
        """The folders of this callback's run (``paths.artifacts`` for checkpoints)."""
        if self._paths is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a run")
        return self._paths

    def find_callback(self, kind: type[C]) -> C | None:
        """The first callback of the same run that is a ``kind`` (e.g. MetricsTracker)."""
        for peer in self._peers:
            if isinstance(peer, kind):
                return peer
        return None

    async def __call__(self, event: Event) -> None:
        """Dispatch ``event`` to its hook (the nearest one along the event's MRO)."""
        hook = self._own_hook(type(event))
        if hook is not None:
            await hook(event)

    def hook(self, event_type: type[Event]) -> Callable[[Any], Awaitable[None]] | None:
        """What to call for an ``event_type`` event here, or None if nothing handles it.

        The run context asks once per event type and calls the answer directly, so a
        callback that only overrides ``on_epoch_end`` costs nothing for other events.
        A class that overrides ``__call__`` dispatches for itself: it gets every event.
        """
        if type(self).__call__ is not Callback.__call__:
            return self.__call__
        return self._own_hook(event_type)

    def _own_hook(self, event_type: type[Event]) -> Callable[[Any], Awaitable[None]] | None:
        cls = type(self)
        name = cls._hooks.get(event_type, "")
        if name == "":
            name = None
            for klass in event_type.__mro__:
                if isinstance(klass, type) and issubclass(klass, Event):
                    candidate = hook_name(klass)
                    if getattr(cls, candidate, None) is not getattr(Callback, candidate, None):
                        name = candidate
                        break
            cls._hooks[event_type] = name
        return None if name is None else getattr(self, name)

    # -- publishing -----------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        if self._bus is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a running experiment")
        await self._bus.publish(event)

    async def request_stop(
        self,
        reason: str,
        *,
        scope: StopScope = "run",
        event: Event | None = None,
    ) -> None:
        """Publish StopRequested for this callback's run (or ``event``'s run).

        ``scope`` is ``run`` (this run), ``trial`` (every repeat of its trial) or
        ``experiment`` (everything); anything else is a ValueError.
        """
        if scope not in STOP_SCOPES:
            allowed = ", ".join(STOP_SCOPES)
            raise ValueError(f"request_stop scope must be one of {allowed}; got {scope!r}")
        trial = event.trial if event is not None else self._trial
        repeat = event.repeat if event is not None else self._repeat
        experiment = event.experiment if event is not None else self._experiment
        await self.publish(
            StopRequested(
                experiment=experiment or "",
                trial=trial if scope != "experiment" else None,
                repeat=repeat if scope == "run" else None,
                scope=scope,
                reason=reason,
                source=type(self).__name__,
            )
        )

    # -- state for resume -------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state saved with each checkpoint (default: nothing)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    # -- the run's summary --------------------------------------------------------------

    def run_summary(self) -> Mapping[str, Any]:
        """Metrics this callback adds to its run's ``RunFinished`` (default: none).

        Read by the runtime just before ``RunFinished``: the run's last reported
        metrics, updated with every callback's summary, updated with what ``run``
        returned.
        """
        return {}

    # -- hooks (no-ops) ---------------------------------------------------------------

    async def on_experiment_started(self, event: ExperimentStarted) -> None:
        """The experiment began (experiment subscribers only)."""

    async def on_experiment_finished(self, event: ExperimentFinished) -> None:
        """The experiment ended, with its status and counts (experiment subscribers only)."""

    async def on_trial_started(self, event: TrialStarted) -> None:
        """A trial's first run is about to start (experiment subscribers only)."""

    async def on_trial_finished(self, event: TrialFinished) -> None:
        """A trial's last run ended (experiment subscribers only)."""

    async def on_run_started(self, event: RunStarted) -> None:
        """The run began (its folders exist; its seed and attempt are set)."""

    async def on_epoch_end(self, event: EpochEnd) -> None:
        """The pipeline reported an epoch and its metrics."""

    async def on_checkpoint_due(self, event: CheckpointDue) -> None:
        """A checkpoint was asked for (saved once every callback has seen the epoch)."""

    async def on_checkpoint_staged(self, event: CheckpointStaged) -> None:
        """A complete checkpoint is written under its temporary name (being recorded)."""

    async def on_checkpoint_saved(self, event: CheckpointSaved) -> None:
        """A complete checkpoint is on disk at its path, and the journal names it."""

    async def on_stop_requested(self, event: StopRequested) -> None:
        """Someone asked this run (its trial, the experiment) to stop."""

    async def on_run_stalled(self, event: RunStalled) -> None:
        """The run reported no epoch for ``execution.stall_timeout`` seconds."""

    async def on_run_retrying(self, event: RunRetrying) -> None:
        """The run failed and runs again (a new attempt)."""

    async def on_run_ending(self, event: RunEnding) -> None:
        """``run`` returned; a last checkpoint can still be asked for."""

    async def on_run_finished(self, event: RunFinished) -> None:
        """The run ended: its status, metrics and error."""


def environment_first(first: Any, default: Any) -> tuple[Any, Any]:
    """``(env, value)`` from a first argument that may be an ``Environment``.

    The original API passes the environment first (``EarlyStopping(env, patience=5)``,
    ``MetricsTracker(env)``); expman's own first parameter then takes its default.
    """
    if hasattr(first, "workspace") and hasattr(first, "pipelines"):
        return first, default
    return None, first
