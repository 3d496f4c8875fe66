"""Adaptive search: what to try next, from what earlier trials gave.

Above :mod:`expman.config` (it reads a :class:`~expman.config.search.SearchSpec`),
below the runtime (whose admission policy calls :func:`suggest`). Pure functions:
no events, no files, no clock.
"""

from expman.search.samplers import Told, derived_seed, suggest

__all__ = ["Told", "derived_seed", "suggest"]
