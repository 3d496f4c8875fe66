"""From a config directory to an :class:`ExperimentPlan`: the stages, in order.

1. load (:mod:`~expman.config.sources`): parse the directory's YAML files;
2. validate (:mod:`~expman.config.validation`): shape, keys and types, file by file;
   the caller's override strings and values (:mod:`~expman.config.overrides`);
3. expand (:mod:`~expman.config.expansion`): each trial entry through the expanders
   (first :mod:`~expman.config.sweeps`: a ``sweep:`` block makes one trial per point),
   then unique names and ids and the run limit;
4. resolve (:mod:`~expman.config.resolution`): per trial, merge the layers
   (base < experiment < trial < overrides < values), interpolate, check the seed,
   hash; each trial's ``repeat`` runs with their seeds.

Execution settings take the same order: experiment.yaml < env.yaml < overrides <
values. Nothing is written anywhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from expman.config.expansion import DEFAULT_EXPANDERS, Expander, expand_entries
from expman.config.overrides import check_values, parse_overrides
from expman.config.pruning import PruningSpec
from expman.config.resolution import TrialResolver, plan_runs
from expman.config.schema import ExecutionSettings
from expman.config.search_plan import search_trials
from expman.config.sources import read_config_dir
from expman.config.specs import ExperimentPlan, Layer
from expman.config.sweeps import SweepExpander
from expman.config.validation import validate_config


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while the plan is built, on again after.

    A sweep's plan allocates hundreds of thousands of objects that hold no cycles;
    each allocation burst starts a collection over all of them (a third of the time
    of a 100,000-trial plan, benchmarks/sweep_planning.py).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_plan(
    config_dir: str | os.PathLike[str],
    *,
    overrides: Sequence[str] = (),
    values: Mapping[str, Any] | None = None,
    workspace: str | os.PathLike[str] | None = None,
    expanders: Sequence[Expander] = DEFAULT_EXPANDERS,
    sweep: Mapping[str, Any] | None = None,
) -> ExperimentPlan:
    """Read, validate, expand and resolve a config directory; nothing is written anywhere.

    ``overrides`` are ``key=value`` strings (values parsed as YAML), ``values`` a
    mapping of already-typed values (dotted or nested keys) applied after them; a
    ``workspace`` given here wins over env.yaml's. ``expanders`` replace
    :data:`~expman.config.expansion.DEFAULT_EXPANDERS` (the ``sweep:`` blocks of
    trials.yaml are expanded first, always). ``sweep`` is a sweep block of the YAML
    form (the command line's ``-m``), joined to every entry's own.
    """
    config = validate_config(read_config_dir(config_dir))
    changes = [parse_overrides(overrides)]
    if values is not None:
        changes.append(check_values(values))
    execution = dict(config.execution)
    for change in changes:
        execution.update(change.checked_execution())

    experiment = {"name": config.name, "id": config.id, "desc": config.desc}
    caller = tuple(change.layer() for change in changes)
    with _collector_paused():
        sweeps = SweepExpander(config.layers, sweep)
        entries = expand_entries(config.entries, (sweeps, *expanders))
        search = None
        if config.search is not None:  # each entry stands for its study's placeholder trials
            search, trials = search_trials(config, entries, execution, caller, experiment)
        else:
            resolver = TrialResolver(config.layers, caller, experiment)
            trials = tuple(resolver.resolve(entry, i) for i, entry in enumerate(entries))
        runs = plan_runs(trials)
    workspace_path = Path(workspace) if workspace is not None else config.workspace
    return ExperimentPlan(
        name=config.name,
        id=config.id,
        desc=config.desc,
        config_dir=config.sources.root.resolve(),
        workspace=(workspace_path or Path("workspace")).absolute(),
        execution=ExecutionSettings(**execution),
        trials=trials,
        runs=runs,
        documents=config.sources.documents,
        overrides=tuple(overrides),
        subscribers=config.subscribers,
        written_id=config.written_id,
        search=search,
        pruning=_seeded(config.pruning, (*config.layers, *caller)),
        integrations=config.integrations,
    )


def _seeded(pruning: PruningSpec | None, layers: Sequence[Layer]) -> PruningSpec | None:
    """``pruning`` with the experiment's seed: ``settings.seed`` of the last layer setting it."""
    if pruning is None:
        return None
    seed = 0
    for layer in layers:
        value = layer.settings.get("seed")
        if isinstance(value, int) and not isinstance(value, bool):
            seed = value
    return dataclasses.replace(pruning, seed=seed)
