"""Merging settings layers, and the helpers of the original specification.

``insert_value`` fills ``"?"`` placeholders; ``multiply`` takes the cartesian product
of two lists of configs.  Settings merge like OmegaConf: mappings merge key by key,
anything else (lists included) is replaced by the later layer.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

PLACEHOLDER = "?"


def deep_merge(layers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge plain mappings, later ones winning; inputs are not modified."""
    out: dict[str, Any] = {}
    for layer in layers:
        _merge_into(out, layer)
    return out


#: Values copied as they are (immutable): most of what YAML gives.
_ATOMS = frozenset((str, int, float, bool, type(None)))


def _merge_into(target: dict[str, Any], layer: Mapping[str, Any]) -> None:
    atoms = _ATOMS
    for key, value in layer.items():
        # type() first: the ABC check of isinstance(..., Mapping) is slow, and planning
        # a 100,000-trial sweep merges every trial's layers (benchmarks/sweep_planning.py).
        kind = type(value)
        if kind in atoms:
            target[key] = value
        elif kind is dict or isinstance(value, Mapping):
            current = target.get(key)
            if type(current) is not dict:
                current = target[key] = {}
            _merge_into(current, value)
        else:
            target[key] = copy.deepcopy(value)


def has_interpolation(value: Any) -> bool:
    """True when any string inside ``value`` contains an OmegaConf ``${...}``."""
    kind = type(value)
    if kind is str:
        return "${" in value
    if kind in _ATOMS:
        return False
    if kind is dict or isinstance(value, Mapping):
        items = value.values()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return isinstance(value, str) and "${" in value
    for item in items:  # a loop, not any(<generator>): this runs for every trial of a sweep
        if has_interpolation(item):
            return True
    return False


def insert_value(config: Any, value: Any) -> Any:
    """Replace every ``"?"`` placeholder in ``config`` (nested, lists included) by ``value``.

    Returns a new config of the same kind (DictConfig/ListConfig in, the same out;
    plain dicts and lists likewise); the input is left unchanged.
    """
    if isinstance(config, (DictConfig, ListConfig)):
        plain = OmegaConf.to_container(config, resolve=False)
        return OmegaConf.create(_insert(plain, value))
    return _insert(config, value)


def _insert(node: Any, value: Any) -> Any:
    if isinstance(node, str) and node == PLACEHOLDER:
        return copy.deepcopy(value)
    if isinstance(node, Mapping):
        return {k: _insert(v, value) for k, v in node.items()}
    if isinstance(node, list):
        return [_insert(v, value) for v in node]
    return node


def multiply(a: Sequence[Any], b: Sequence[Any]) -> ListConfig:
    """The cartesian product of two lists of configs, each pair merged (``b`` wins).

    ``multiply([x1, x2], [y1, y2, y3])`` has 6 entries, ``merge(x1, y1)``,
    ``merge(x1, y2)``, ... in that order.
    """
    left = [_as_container(x) for x in a]
    right = [_as_container(y) for y in b]
    merged = [OmegaConf.merge(x, y) for x in left for y in right]
    return OmegaConf.create([OmegaConf.to_container(m, resolve=False) for m in merged])


def _as_container(value: Any) -> DictConfig | ListConfig:
    if isinstance(value, (DictConfig, ListConfig)):
        return value
    created: DictConfig | ListConfig = OmegaConf.create(value)
    return created
