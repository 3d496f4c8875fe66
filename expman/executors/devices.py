"""Devices: the GPUs and CPUs of this machine that runs lease for their whole life.

A trial may declare ``resources: {cpus: N, gpus: G}``.  On the local executors
(``async``, ``thread``, ``process``) each run leases them from a
:class:`ResourcePool` before it starts and gives them back after ``RunFinished``:

* **GPUs** are concrete device ids: ``execution.devices`` (env.yaml ``devices``),
  else ``CUDA_VISIBLE_DEVICES``, else what ``nvidia-smi -L`` lists, else none.
  A fraction (``gpus: 0.25``) packs onto one device that still has that much left
  (the fullest such device first, so fractions share rather than spread); a whole
  number takes that many devices that nobody else holds.
* **CPUs** are a budget of ``os.cpu_count()``; only runs that declare ``cpus``
  count against it (``max_concurrency`` bounds the others).

A run whose request cannot be met now waits until enough is released.  Asking for
more than the machine has is refused when the experiment is planned
(:func:`resource_problem`), so a wait always ends.  With Ray, resources go to Ray.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import anyio

#: Resource amounts are kept in integer milli-units so fractions add up exactly.
_UNIT = 1000


@dataclass(frozen=True, slots=True)
class Lease:
    """What one run holds: GPU ids (with the share of each) and a number of CPUs."""

    devices: tuple[str, ...] = ()
    shares: tuple[int, ...] = ()  # milli-GPUs held on each of ``devices``
    cpus: int = 0  # milli-CPUs

    @property
    def cuda_visible_devices(self) -> str:
        """The value a worker process gets as ``CUDA_VISIBLE_DEVICES``."""
        return ",".join(self.devices)


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot: how much of each device and of the CPU budget is leased."""

    devices: Mapping[str, float]
    cpus_leased: float
    cpus: float
    leases: int
    waiting: int


def detect_devices(configured: Sequence[str] | None = None) -> tuple[str, ...]:
    """GPU ids: ``configured``, else ``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``."""
    if configured is not None:
        return tuple(configured)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [d.strip() for d in visible.split(",") if d.strip()]
        # "-1" (or any negative id) is CUDA's way of hiding every device.
        return tuple(d for d in ids if not d.startswith("-"))
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        listing = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU "))


def resource_problem(
    resources: Mapping[str, float], devices: Sequence[str], cpus: int | None = None
) -> tuple[str, str] | None:
    """``(key, message)`` when no lease could ever meet ``resources`` here, else None."""
    budget = cpus if cpus is not None else (os.cpu_count() or 1)
    gpus = resources.get("gpus", 0)
    if gpus > len(devices) or (0 < gpus < 1 and not devices):
        where = ", ".join(devices) if devices else "none found"
        return (
            "gpus",
            f"asks for {gpus:g} GPU(s) but {len(devices)} are available ({where});"
            " list the device ids in env.yaml `devices` or lower the request",
        )
    if resources.get("cpus", 0) > budget:
        return ("cpus", f"asks for {resources['cpus']:g} CPUs but this machine has {budget}")
    return None


class ResourcePool:
    """GPU ids and a CPU budget that runs lease; waits until a request fits."""

    def __init__(self, devices: Sequence[str] = (), cpus: int | None = None) -> None:
        self.devices = tuple(devices)
        self.cpus = cpus if cpus is not None else (os.cpu_count() or 1)
        # Invariant: 0 <= _free[d] <= _UNIT, and _UNIT - _free[d] is the sum of the
        # shares of every live lease on d; likewise for _cpus_free.
        self._free = dict.fromkeys(self.devices, _UNIT)
        self._cpus_free = self.cpus * _UNIT
        self._released = anyio.Event()
        self._leases = 0
        self._waiting = 0

    def try_lease(self, gpus: float = 0, cpus: float = 0) -> Lease | None:
        """A lease for the request if it fits now, else None (nothing is taken)."""
        want_gpu = round(gpus * _UNIT)
        want_cpu = round(cpus * _UNIT)
        if want_cpu > self._cpus_free:
            return None
        picked: list[tuple[str, int]] = []
        if 0 < want_gpu < _UNIT:
            fits = [d for d in self.devices if self._free[d] >= want_gpu]
            if not fits:
                return None
            device = min(fits, key=lambda d: self._free[d])
            picked.append((device, want_gpu))
        elif want_gpu > 0:
            whole = [d for d in self.devices if self._free[d] == _UNIT]
            count = want_gpu // _UNIT
            if len(whole) < count:
                return None
            picked.extend((d, _UNIT) for d in whole[:count])
        for device, share in picked:
            self._free[device] -= share
        self._cpus_free -= want_cpu
        self._leases += 1
        return Lease(
            devices=tuple(d for d, _ in picked),
            shares=tuple(s for _, s in picked),
            cpus=want_cpu,
        )

    async def acquire(self, gpus: float = 0, cpus: float = 0) -> Lease:
        """Wait until the request fits, then take it."""
        while True:
            lease = self.try_lease(gpus, cpus)
            if lease is not None:
                return lease
            released = self._released
            self._waiting += 1
            try:
                await released.wait()
            finally:
                self._waiting -= 1

    def release(self, lease: Lease) -> None:
        """Give a lease back and wake every waiting request."""
        for device, share in zip(lease.devices, lease.shares, strict=True):
            self._free[device] += share
        self._cpus_free += lease.cpus
        self._leases -= 1
        self._released.set()
        self._released = anyio.Event()

    @contextlib.asynccontextmanager
    async def lease(self, resources: Mapping[str, float]) -> AsyncIterator[Lease]:
        """Hold a lease for ``resources`` (``{gpus, cpus}``) for the block."""
        lease = await self.acquire(resources.get("gpus", 0), resources.get("cpus", 0))
        try:
            yield lease
        finally:
            self.release(lease)

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            devices={d: (_UNIT - free) / _UNIT for d, free in self._free.items()},
            cpus_leased=(self.cpus * _UNIT - self._cpus_free) / _UNIT,
            cpus=float(self.cpus),
            leases=self._leases,
            waiting=self._waiting,
        )
