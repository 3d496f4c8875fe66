"""seed_everything: one call that seeds every random number generator a run may use.

It seeds process-wide generators.  Runs that share a process at the same time (the
``async`` and ``thread`` executors with ``max_concurrency`` above 1) share them too,
so their draws interleave and do not repeat from one session to the next: such runs
should draw from their own generators (``ctx.random``, ``ctx.rng``,
``ctx.torch_generator``), or run on the ``process`` or ``ray`` executor, where each
run has its process.  :func:`seed_everything` says so in the run's log when it is
called while other runs share the process.
"""

from __future__ import annotations

import importlib.util
import os
import random
import threading

import structlog

log = structlog.get_logger("expman.seeding")

#: Runs executing in this process right now (counted by the in-process executors).
_shared = {"runs": 0, "warned": False}
_lock = threading.Lock()


def run_entered() -> None:
    """An in-process executor started a run here."""
    with _lock:
        _shared["runs"] += 1


def run_left() -> None:
    """An in-process executor's run ended."""
    with _lock:
        _shared["runs"] -= 1


def seed_everything(seed: int) -> int:
    """Seed ``random``, NumPy's global generator and PyTorch (CPU and CUDA) when installed.

    Call it at the start of ``run`` with ``ctx.seed``; returns the seed.  It also sets
    ``PYTHONHASHSEED``, which only affects Python processes started afterwards (a
    running interpreter's string hashing is fixed at start-up).  Libraries that keep
    their own generators (``numpy.random.default_rng()``, scikit-learn's
    ``random_state``) still need the seed passed to them.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    seed = seed % 2**32  # what NumPy accepts
    if _shared["runs"] > 1 and not _shared["warned"]:
        _shared["warned"] = True
        log.warning(
            "seed_everything_shared",
            runs_in_process=_shared["runs"],
            hint="these runs share process-wide generators, so they do not reproduce: draw "
            "from ctx.random / ctx.rng / ctx.torch_generator, or use the process executor",
        )
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    if importlib.util.find_spec("numpy") is not None:
        import numpy

        numpy.random.seed(seed)
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
    return seed
