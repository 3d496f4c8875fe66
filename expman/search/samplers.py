"""What an adaptive search suggests next: a pure function of the spec and what it was told.

``suggest(spec, study, number, history)`` gives trial ``number`` of ``study`` its
values. It is deterministic: the same arguments give the same values in any process,
under any ``PYTHONHASHSEED``, whatever happened before in that process. The caller
passes as ``history`` exactly the trials ``0 .. number - lag`` of the study (all
finished); ``suggest`` reads nothing else, so a suggestion never depends on which
other trials happened to finish first. That is what makes the sequence of a search
the same at any concurrency and after a crash.

How each sampler keeps that promise:

- ``random``: one ``random.Random("<seed>/<study>/<number>")`` draws every dimension
  (:meth:`Distribution.sample`); no history, no Optuna.
- ``tpe``, ``gp``: a fresh in-memory Optuna study per call, its sampler seeded with an
  integer derived by SHA-512 from ``(seed, study, number)``; the history is added in
  number order (``study.add_trial``), then one ``ask`` with the space's distributions.
  Both samplers read only the finished trials, so nothing else carries over.
- ``cmaes``: Optuna's CmaEsSampler keeps its optimizer in the system attributes of
  the trials it sampled itself, which a study rebuilt from the journal does not have,
  so it would never leave its first generation. Here the ``cmaes`` package's
  optimizer is driven directly instead: seeded from ``(seed, study)``, told the
  history's complete trials in number order, a generation of ``popsize`` at a time,
  then asked once with its random state seeded from ``(seed, study, number)``
  (Optuna does the same reseeding). Dimensions CMA-ES cannot model (``choice``) are
  drawn at random, as Optuna's CmaEsSampler does with its independent sampler.

A NaN or infinite metric is told as a failed trial.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from expman.config.distributions import Distribution
from expman.config.search import OPTUNA_SAMPLERS, SearchSpec

if TYPE_CHECKING:
    import optuna

STATES = ("complete", "failed", "pruned")


@dataclass(frozen=True, slots=True)
class Told:
    """One finished trial as the sampler is told it: its values and how it ended.

    ``value`` is the search metric (the mean over the trial's repeats) when ``state``
    is ``complete``; None otherwise.
    """

    number: int
    values: Mapping[str, Any]
    state: str
    value: float | None = None

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"state {self.state!r}; expected one of {', '.join(STATES)}")

    @property
    def usable(self) -> bool:
        """Complete with a finite value (a NaN or an infinity counts as failed)."""
        return self.state == "complete" and self.value is not None and math.isfinite(self.value)


def suggest(spec: SearchSpec, study: str, number: int, history: Sequence[Told]) -> dict[str, Any]:
    """The values of trial ``number`` of ``study``: a key of ``spec.space`` each.

    ``history`` holds the study's finished trials ``0 .. number - spec.lag`` (any
    order; they are read in number order); any later trial in it is ignored.
    """
    # Trials past number - lag are ignored even if given: the suggestion may not
    # depend on which of them happened to finish first.
    ordered = sorted(
        (told for told in history if told.number <= number - spec.lag),
        key=lambda told: told.number,
    )
    if spec.sampler == "random":
        rng = random.Random(f"{spec.seed}/{study}/{number}")
        return {key: dist.sample(rng) for key, dist in spec.space.items()}
    if spec.sampler == "cmaes":
        return _cmaes(spec, study, number, ordered)
    return _optuna(spec, study, number, ordered)


def derived_seed(*parts: object) -> int:
    """A 32-bit seed from ``parts`` by SHA-512 (never ``hash()``: that varies by process)."""
    text = "/".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha512(text.encode()).digest()[:4], "big")


# -- Optuna: TPE and GP --------------------------------------------------------------


def _optuna(spec: SearchSpec, study: str, number: int, history: Sequence[Told]) -> dict[str, Any]:
    optuna = _quiet_optuna()
    cls = getattr(optuna.samplers, OPTUNA_SAMPLERS[spec.sampler])
    sampler = cls(seed=derived_seed(spec.seed, study, number), **spec.options)
    direction = "minimize" if spec.mode == "min" else "maximize"
    optimisation = optuna.create_study(direction=direction, sampler=sampler)
    distributions = {key: _optuna_distribution(dist) for key, dist in spec.space.items()}
    for told in history:
        trial = _optuna_trial(optuna, spec.space, distributions, told)
        if trial is not None:
            optimisation.add_trial(trial)
    asked = optimisation.ask(distributions)
    return {key: _from_optuna(dist, asked.params[key]) for key, dist in spec.space.items()}


@functools.cache
def _quiet_optuna() -> Any:
    """Optuna, told once to keep quiet: no line per study, no ExperimentalWarning.

    A filter installed for good rather than ``catch_warnings`` around each call: the
    runtime suggests in a worker thread, and ``catch_warnings`` is not thread-safe.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _optuna_distribution(dist: Distribution) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if dist.kind == "uniform":
        return FloatDistribution(float(dist.args[0]), float(dist.args[1]))
    if dist.kind == "loguniform":
        return FloatDistribution(float(dist.args[0]), float(dist.args[1]), log=True)
    if dist.kind == "randint":
        return IntDistribution(int(dist.args[0]), int(dist.args[1]) - 1)  # high excluded
    # Choices by index: any YAML value can be a choice, Optuna's categoricals cannot.
    return CategoricalDistribution(tuple(range(len(dist.args))))


def _to_optuna(dist: Distribution, value: Any) -> Any | None:
    """``value`` as the Optuna distribution of ``dist`` holds it, or None if outside."""
    if dist.kind == "choice":
        for i, choice in enumerate(dist.args):
            if type(choice) is type(value) and choice == value:
                return i
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    lo, hi = dist.args
    if dist.kind == "randint":
        return int(value) if float(value).is_integer() and lo <= value < hi else None
    return float(value) if lo <= value <= hi else None


def _from_optuna(dist: Distribution, value: Any) -> Any:
    if dist.kind == "choice":
        return dist.args[value]
    if dist.kind == "randint":
        return int(value)
    return float(value)


def _optuna_trial(
    lib: Any,
    space: Mapping[str, Distribution],
    distributions: Mapping[str, Any],
    told: Told,
) -> optuna.trial.FrozenTrial | None:
    """``told`` as an Optuna trial (only the values inside today's space), or None."""
    params: dict[str, Any] = {}
    for key, dist in space.items():
        if key in told.values:
            inside = _to_optuna(dist, told.values[key])
            if inside is not None:
                params[key] = inside
    if not params:
        return None
    state = lib.trial.TrialState
    trial: optuna.trial.FrozenTrial = lib.trial.create_trial(
        params=params,
        distributions={key: distributions[key] for key in params},
        value=told.value if told.usable else None,
        state=state.COMPLETE
        if told.usable
        else state.PRUNED
        if told.state == "pruned"
        else state.FAIL,
    )
    return trial


# -- CMA-ES through the cmaes package ------------------------------------------------


def _cmaes(spec: SearchSpec, study: str, number: int, history: Sequence[Told]) -> dict[str, Any]:
    import numpy as np
    from cmaes import CMA

    numeric = [key for key, dist in spec.space.items() if dist.kind != "choice"]
    rng = random.Random(f"{spec.seed}/{study}/{number}")
    out: dict[str, Any] = {}
    if numeric:
        # The cmaes package needs two dimensions at least: one alone gets a constant twin.
        dims = max(len(numeric), 2)
        options = dict(spec.options)
        sigma = float(options.get("sigma0", 1 / 6))
        optimizer = CMA(
            mean=np.full(dims, 0.5),
            sigma=sigma,
            bounds=np.array([[0.0, 1.0]] * dims),
            seed=derived_seed(spec.seed, study),
            population_size=options.get("popsize"),
        )
        sign = 1.0 if spec.mode == "min" else -1.0
        generation: list[tuple[Any, float]] = []
        for told in history:
            point = _unit_point(spec.space, numeric, told)
            if point is None or not told.usable:
                continue
            assert told.value is not None
            point += [0.5] * (dims - len(point))
            generation.append((np.array(point), sign * told.value))
            if len(generation) == optimizer.population_size:
                optimizer.tell(generation)
                generation = []
        # As Optuna does: the optimizer's own random state, reseeded for this trial.
        optimizer._rng.seed(derived_seed(spec.seed, study, number, "cma"))
        x = optimizer.ask()
        for key, unit in zip(numeric, x[: len(numeric)], strict=True):
            out[key] = _from_unit(spec.space[key], float(unit))
    for key, dist in spec.space.items():
        if dist.kind == "choice":
            out[key] = dist.sample(rng)
    return {key: out[key] for key in spec.space}


def _unit_point(
    space: Mapping[str, Distribution], numeric: Sequence[str], told: Told
) -> list[float] | None:
    point = []
    for key in numeric:
        value = told.values.get(key)
        dist = space[key]
        if _to_optuna(dist, value) is None:
            return None
        point.append(_to_unit(dist, float(value)))  # type: ignore[arg-type]
    return point


def _to_unit(dist: Distribution, value: float) -> float:
    lo, hi = (float(a) for a in dist.args)
    if dist.kind == "loguniform":
        return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    if dist.kind == "randint":  # each integer owns an equal share of [0, 1]
        return (value - lo + 0.5) / (hi - lo)
    return (value - lo) / (hi - lo)


def _from_unit(dist: Distribution, unit: float) -> Any:
    unit = min(max(unit, 0.0), 1.0)
    lo, hi = dist.args
    if dist.kind == "loguniform":
        return math.exp(math.log(lo) + unit * (math.log(hi) - math.log(lo)))
    if dist.kind == "randint":
        return min(int(lo) + int(unit * (hi - lo)), int(hi) - 1)
    return float(lo) + unit * (float(hi) - float(lo))
