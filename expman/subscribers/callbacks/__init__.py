"""Training callbacks: async bus subscribers with no-op hooks, and the built-in ones.

Importing this package registers the built-ins under their names, so YAML can say
``{type: EarlyStopping, ...}``, ``{type: CheckpointCallback, ...}`` and
``{type: MetricsTracker}``.
"""

from expman.subscribers.callbacks.base import Callback, hook_name
from expman.subscribers.callbacks.checkpoint import CheckpointCallback
from expman.subscribers.callbacks.early_stopping import EarlyStopping
from expman.subscribers.callbacks.metrics import MetricsTracker

__all__ = ["Callback", "CheckpointCallback", "EarlyStopping", "MetricsTracker", "hook_name"]
