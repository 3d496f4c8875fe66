"""Training callbacks: async bus subscribers with no-op hooks, and the built-in ones.

Importing this package registers the built-ins under their names, so YAML can say
``{type: EarlyStopping, ...}``, ``{type: CheckpointCallback, ...}`` and
``{type: MetricsTracker}``.
"""

from expman.callbacks.base import Callback, hook_name
from expman.callbacks.checkpoint import CheckpointCallback
from expman.callbacks.early_stopping import EarlyStopping
from expman.callbacks.metrics import MetricsTracker

__all__ = ["Callback", "CheckpointCallback", "EarlyStopping", "MetricsTracker", "hook_name"]
