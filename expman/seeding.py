"""seed_everything: one call that seeds every random number generator a run may use."""

from __future__ import annotations

import importlib.util
import os
import random


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
