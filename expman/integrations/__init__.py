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
from expman.integrations.base import Binding, ExportContext, Exporter, ExportRun, Point, Refused

__all__ = [
    "BACKENDS",
    "Binding",
    "ExportContext",
    "ExportRun",
    "Exporter",
    "Point",
    "Refused",
    "make_exporter",
]

#: Each type's backend, ``module:class`` (imported when an experiment names it).
BACKENDS = {
    "csv": "expman.integrations.csvfile:CsvExporter",
    "tensorboard": "expman.integrations.tensorboard:TensorBoardExporter",
    "mlflow": "expman.integrations.mlflow:MlflowExporter",
    "wandb": "expman.integrations.wandb:WandbExporter",
}


def make_exporter(spec: IntegrationSpec, context: ExportContext) -> Exporter:
    """The backend of ``spec``, built for this session."""
    module, _, name = BACKENDS[spec.type].partition(":")
    cls = getattr(importlib.import_module(module), name)
    exporter: Exporter = cls(spec, context)
    return exporter
