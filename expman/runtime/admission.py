"""Admission: which waiting run starts next, when a slot under the capacity limit is free.

The admission loop holds an :class:`anyio.CapacityLimiter` token for each run from
before it starts until it has published ``RunFinished``, so at most
``max_concurrency`` runs are ever active.  Each time a slot is free it asks the
experiment's :class:`AdmissionPolicy` to choose among the runs still waiting:

* :class:`Admit` starts a run now (any of the waiting ones: a policy may reorder),
  as it was planned or, with ``start_as``, as the run it has become: the same run
  (trial name and repeat) with its settings decided now (an adaptive search's
  sampled trial, :mod:`expman.runtime.search`);
* :class:`Drop` settles a run without starting it (``stopped``, with the policy's
  reason: a decision, kept on resume), which pruning and adaptive search need;
* the policy may also hold runs back: ``choose`` is async and may wait (for
  results of runs already going, say) before it answers, holding the free slot.

The default, :class:`PlanOrder`, admits runs in plan order.  A run that a stop
request reached before it started is settled without a slot, before the policy
is asked, so a stopped experiment ends without waiting for slots.
A policy that wants to learn from results subscribes to the bus itself.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio

from expman.config import RunSpec


@dataclass(frozen=True, slots=True)
class Admit:
    """Start ``spec`` now; as ``start_as`` when given (the same run, its settings decided).

    ``start_as`` must have ``spec``'s key (trial name and repeat): the run keeps its
    place, its folders and its resume record; only its trial's settings (and so its
    config hash) may differ.
    """

    spec: RunSpec
    start_as: RunSpec | None = None

    def __post_init__(self) -> None:
        if self.start_as is not None and self.start_as.key != self.spec.key:
            raise ValueError(
                f"Admit: start_as {self.start_as.label} is not the run {self.spec.label}"
            )

    @property
    def run(self) -> RunSpec:
        """The run to start: ``start_as``, else ``spec``."""
        return self.spec if self.start_as is None else self.start_as


@dataclass(frozen=True, slots=True)
class Drop:
    """Never start ``spec``: it ends ``stopped`` with ``reason``."""

    spec: RunSpec
    reason: str


class AdmissionPolicy(Protocol):
    """Chooses the next run to start among those waiting (never an empty sequence)."""

    async def choose(self, waiting: Sequence[RunSpec]) -> Admit | Drop: ...


class PlanOrder:
    """The default policy: runs start in plan order."""

    async def choose(self, waiting: Sequence[RunSpec]) -> Admit | Drop:
        return Admit(waiting[0])


#: Settles a run a stop reached before it started; True if it did.
Settle = Callable[[RunSpec], Awaitable[bool]]
#: Settles a run the policy dropped, with the policy's reason.
SettleDropped = Callable[[RunSpec, str], Awaitable[None]]
#: Starts a run holding its slot (``release()`` gives the slot back).
Start = Callable[[RunSpec, Callable[[], None]], None]


async def admit(
    todo: Sequence[RunSpec],
    limiter: anyio.CapacityLimiter,
    policy: AdmissionPolicy,
    *,
    settle_stopped: Settle,
    settle_dropped: SettleDropped,
    start: Start,
) -> None:
    """Start or settle every run of ``todo``, one slot at a time; returns when all have."""
    waiting = collections.deque(todo)
    while waiting:
        if await settle_stopped(waiting[0]):
            waiting.popleft()
            continue
        slot = object()
        await limiter.acquire_on_behalf_of(slot)

        def release(slot: object = slot) -> None:
            limiter.release_on_behalf_of(slot)

        try:
            # Runs a stop reached while this waited for its slot need no slot.
            while waiting and await settle_stopped(waiting[0]):
                waiting.popleft()
            if not waiting:
                release()
                return
            choice = await policy.choose(waiting)
            _take(waiting, choice.spec)
        except BaseException:
            release()
            raise
        if isinstance(choice, Drop):
            release()
            await settle_dropped(choice.spec, choice.reason)
        elif await settle_stopped(choice.spec):
            release()
        else:
            start(choice.run, release)


def _take(waiting: collections.deque[RunSpec], spec: RunSpec) -> None:
    if waiting and waiting[0] is spec:
        waiting.popleft()
        return
    try:
        waiting.remove(spec)
    except ValueError:
        raise ValueError(f"the admission policy chose {spec.label}, which is not waiting") from None
