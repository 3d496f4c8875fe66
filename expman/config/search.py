"""The ``search:`` block of experiment.yaml: an adaptive search, validated into a SearchSpec.

::

    search:
      sampler: {type: tpe, seed: 7}     # random | tpe | cmaes | gp; other keys go to Optuna
      metric: val_loss                  # told to the sampler: the mean over a trial's repeats
      mode: min                         # min | max (default: from the metric's name)
      trials: 64                        # trials sampled for every trial entry
      lag: 4                            # default: max_concurrency
      space:
        lr: {loguniform: [1.0e-5, 1.0e-1]}
        depth: {randint: [2, 9]}
        act: {choice: [relu, gelu]}

Only the random sampler works without Optuna; ``tpe``, ``cmaes`` and ``gp`` need the
``optuna`` extra (``gp`` needs PyTorch as well), checked here, before anything runs,
without importing them. Options given beside ``type`` and ``seed`` are handed to the
Optuna sampler's constructor (tpe, gp), which is tried once here so that a misspelled
or mistyped option is a config error, not a crash in the middle of the search.
``cmaes`` runs the ``cmaes`` package's optimizer itself (see
:mod:`expman.search.samplers`) and takes ``sigma0`` (the initial step, as a share of
each dimension's range) and ``popsize``.

How the plan uses the spec (placeholder trials, sampled trials) is
:mod:`expman.config.search_plan`; what suggests values is :mod:`expman.search`.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from expman.config.distributions import Distribution, parse_distribution
from expman.config.loading import join_key
from expman.config.schema import (
    ErrorSite,
    check_int,
    check_keys,
    check_mode,
    check_number,
    expect_mapping,
    shown,
    type_name,
)

#: The samplers a search may name, and the modules each needs besides expman's own.
SAMPLERS: Mapping[str, tuple[str, ...]] = {
    "random": (),
    "tpe": ("optuna",),
    "cmaes": ("optuna", "cmaes"),
    "gp": ("optuna", "torch", "scipy"),
}
#: The Optuna sampler class of each sampler type that uses Optuna.
OPTUNA_SAMPLERS: Mapping[str, str] = {
    "tpe": "TPESampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
}
SEARCH_KEYS = {"sampler", "metric", "mode", "trials", "lag", "space"}
#: Distribution kinds a search space may use: the random forms (no plain lists, no range).
SPACE_KINDS = ("choice", "uniform", "loguniform", "randint")
#: Where each missing module comes from, for the error.
_INSTALL = {
    "optuna": "install expman[optuna] (pip install 'expman[optuna]')",
    "cmaes": "install expman[optuna] (pip install 'expman[optuna]'), which brings cmaes",
    "torch": "install PyTorch (pip install torch) besides expman[optuna]",
    "scipy": "install SciPy (pip install scipy) besides expman[optuna]",
}


@dataclass(frozen=True, slots=True)
class SearchSpec:
    """An adaptive search: which sampler, what it optimises, how many trials, over what.

    ``lag`` is how far behind the results a suggestion may be: trial *n* is sampled
    from the results of trials ``0 .. n - lag`` only, so the sequence of suggestions
    does not depend on timing or concurrency. ``options`` are the other keys of
    ``sampler:``, passed to the Optuna sampler as keyword arguments.
    """

    sampler: str
    seed: int
    metric: str
    mode: str
    trials: int
    lag: int
    space: Mapping[str, Distribution]
    options: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The block as resolved.yaml records it (every default filled in)."""
        return {
            "sampler": {"type": self.sampler, "seed": self.seed, **self.options},
            "metric": self.metric,
            "mode": self.mode,
            "trials": self.trials,
            "lag": self.lag,
            "space": {key: dist.describe() for key, dist in self.space.items()},
        }


def default_lag(max_concurrency: int | None) -> int:
    """``lag`` when the block does not say: the configured concurrency (else the CPUs)."""
    return max_concurrency or os.cpu_count() or 1


def parse_search(site: ErrorSite, raw: object, *, max_concurrency: int | None) -> SearchSpec:
    """The ``search`` block of ``site`` (experiment.yaml) as a SearchSpec.

    ``max_concurrency`` is the configured one (None: the CPU count), the default
    ``lag``. Every mistake is a ConfigError naming the file, line and key.
    """
    key = "search"
    block = expect_mapping(site, key, raw, allow_null=False)
    check_keys(site, key, block, SEARCH_KEYS, {"metric", "trials", "space"})
    sampler, seed, options = _sampler(site, join_key(key, "sampler"), block.get("sampler"))
    metric = block["metric"]
    if not isinstance(metric, str) or not metric.strip():
        raise site.error(
            join_key(key, "metric"),
            f"expected the name of a metric, got {type_name(metric)} {shown(metric)}",
        )
    mode = check_mode(site, join_key(key, "mode"), block.get("mode", "auto"), metric)
    trials = check_int(site, join_key(key, "trials"), block["trials"], minimum=1)
    lag = block.get("lag")
    lag = (
        default_lag(max_concurrency)
        if lag is None
        else check_int(site, join_key(key, "lag"), lag, minimum=1)
    )
    space = _space(site, join_key(key, "space"), block["space"])
    return SearchSpec(
        sampler=sampler,
        seed=seed,
        metric=metric,
        mode=mode,
        trials=trials,
        lag=lag,
        space=space,
        options=options,
    )


def missing_modules(sampler: str) -> tuple[str, ...]:
    """The modules ``sampler`` needs that cannot be imported here (none are imported)."""
    return tuple(name for name in SAMPLERS[sampler] if not _importable(name))


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or blocked module counts as missing
        return False


def _sampler(site: ErrorSite, key: str, raw: object) -> tuple[str, int, dict[str, Any]]:
    """``sampler:`` (a mapping with ``type``, or the type alone) as type, seed, options."""
    if raw is None:
        raw = {"type": "random"}
    elif isinstance(raw, str):
        raw = {"type": raw}
    block = expect_mapping(site, key, raw)
    kind = block.get("type", "random")
    if not isinstance(kind, str) or kind not in SAMPLERS:
        raise site.error(
            join_key(key, "type"),
            f"unknown sampler {shown(kind)}; expected one of {', '.join(SAMPLERS)}",
        )
    seed = check_int(site, join_key(key, "seed"), block.get("seed", 0))
    options = {k: v for k, v in block.items() if k not in ("type", "seed")}
    for k in options:
        if not isinstance(k, str):
            raise site.error(key, f"keys must be strings, got {type_name(k)} {shown(k)}")
    missing = missing_modules(kind)
    if missing:
        needs = " and ".join(missing)
        raise site.error(
            join_key(key, "type"),
            f"sampler {kind!r} needs {needs}, which cannot be imported here: "
            + "; ".join(_INSTALL[name] for name in missing)
            + " (the random sampler needs nothing)",
        )
    if options:
        if kind == "random":
            first = next(iter(options))
            raise site.error(
                join_key(key, first), "unknown key; the random sampler takes only type and seed"
            )
        if kind == "cmaes":
            _check_cmaes_options(site, key, options)
        else:
            _check_options(site, key, kind, seed, options)
    return kind, seed, options


def _check_cmaes_options(site: ErrorSite, key: str, options: Mapping[str, Any]) -> None:
    """cmaes takes ``sigma0`` and ``popsize`` (expman drives the cmaes package itself)."""
    for name, value in options.items():
        at = join_key(key, name)
        if name == "sigma0":
            number = check_number(site, at, value, positive=True)
            if number > 1:
                raise site.error(at, f"expected a step size in (0, 1] of each range, got {value}")
        elif name == "popsize":
            check_int(site, at, value, minimum=2)
        else:
            raise site.error(
                at, "unknown option of the cmaes sampler; expected type, seed, sigma0 or popsize"
            )


def _check_options(
    site: ErrorSite, key: str, kind: str, seed: int, options: Mapping[str, Any]
) -> None:
    """Build the Optuna sampler once with ``options``: a wrong one is a config error now."""
    import optuna

    cls = getattr(optuna.samplers, OPTUNA_SAMPLERS[kind])
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    accepted = [
        name
        for name, param in inspect.signature(cls).parameters.items()
        if name != "seed" and param.kind in named
    ]
    for name in options:
        if name not in accepted:
            raise site.error(
                join_key(key, name),
                f"unknown option of Optuna's {cls.__name__}; expected type, seed"
                f" or one of: {', '.join(accepted)}",
            )
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # no "A new study created" lines
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sampler = cls(seed=seed, **options)
            # Most options are only read when the sampler samples: make it sample once.
            study = optuna.create_study(sampler=sampler)
            study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    except Exception as exc:  # whatever Optuna says about a value is the user's mistake
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise site.error(key, f"Optuna's {cls.__name__} refused the options: {reason}") from None


def _space(site: ErrorSite, key: str, raw: object) -> dict[str, Distribution]:
    block = expect_mapping(site, key, raw)
    if not block:
        raise site.error(key, "expected at least one dimension (a setting and its distribution)")
    space: dict[str, Distribution] = {}
    for name, value in block.items():
        if not isinstance(name, str) or not name.strip() or "" in name.split("."):
            raise site.error(key, f"expected a dotted settings key, got {shown(name)}")
        at = join_key(key, name)
        if isinstance(value, list):
            raise site.error(
                at,
                "a plain list is a grid axis; a search dimension is one of"
                f" {', '.join(SPACE_KINDS)} (for these values: {{choice: [...]}})",
            )
        dist = parse_distribution(site, at, value, grid=False)
        if dist.kind not in SPACE_KINDS:
            raise site.error(
                at,
                f"{dist.kind} is a grid axis; a search dimension is one of {', '.join(SPACE_KINDS)}"
                " (for integers: {randint: [lo, hi]})",
            )
        space[name] = dist
    return space
