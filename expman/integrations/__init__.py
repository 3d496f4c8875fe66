"""Trackers fed from the bus: TensorBoard, MLflow, Weights & Biases and CSV.

``integrations:`` in experiment.yaml or env.yaml names them
(:mod:`expman.config.integrations`); each becomes an
:class:`~expman.integrations.driver.Integration` (a mailbox subscriber and its
export task) around a backend (:class:`~expman.integrations.base.Exporter`), which
is imported only when named: ``expman[tensorboard]``, ``expman[mlflow]``,
``expman[wandb]``.  ``expman.integrations.lightning`` is the other direction: a
Lightning ``Trainer`` reporting into a run.
"""

from __future__ import annotations

import importlib

from expman.config import IntegrationSpec
from expman.import_paths import RefusedType
from expman.integrations.base import Binding, ExportContext, Exporter, ExportRun, Point, Refused
from expman.serializable import UnknownType, resolve_type

__all__ = [
    "BACKENDS",
    "Binding",
    "ExportContext",
    "ExportRun",
    "Exporter",
    "Point",
    "Refused",
    "exporter_class",
    "make_exporter",
]

#: Each type's backend, ``module:class`` (imported when an experiment names it).
BACKENDS = {
    "csv": "expman.integrations.csvfile:CsvExporter",
    "tensorboard": "expman.integrations.tensorboard:TensorBoardExporter",
    "mlflow": "expman.integrations.mlflow:MlflowExporter",
    "wandb": "expman.integrations.wandb:WandbExporter",
}


def exporter_class(spec: IntegrationSpec) -> type[Exporter]:
    """The backend class of ``spec``: a built-in one, or the user's ``module:Class``.

    A user's type is resolved as callbacks are (the config folder first); one that
    is no :class:`Exporter` subclass is a ConfigError at its ``type``.
    """
    if not spec.custom:
        module, _, name = BACKENDS[spec.type].partition(":")
        found: type[Exporter] = getattr(importlib.import_module(module), name)
        return found
    try:
        target = resolve_type(spec.type)
    except (UnknownType, RefusedType) as exc:
        raise spec.error("type", str(exc)) from None
    if not (isinstance(target, type) and issubclass(target, Exporter)):
        raise spec.error(
            "type",
            f"{spec.type} is not an integration backend: expected a subclass of"
            " expman.integrations.Exporter",
        )
    return target


def make_exporter(spec: IntegrationSpec, context: ExportContext) -> Exporter:
    """The backend of ``spec``, built for this session."""
    return exporter_class(spec)(spec, context)
