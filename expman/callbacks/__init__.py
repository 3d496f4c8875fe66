"""Training callbacks: async bus subscribers with no-op hooks."""

from expman.callbacks.base import Callback, hook_name

__all__ = ["Callback", "hook_name"]
