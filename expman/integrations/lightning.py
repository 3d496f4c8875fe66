"""A Lightning ``Trainer`` reporting into an expman run: :class:`ExpmanCallback`.

The other direction from the trackers beside it: here expman is the tracker and
Lightning the training loop.  Under a pipeline's plain ``def run(ctx)``::

    class Digits(expman.Pipeline):
        def run(self, ctx):
            self.expman = ExpmanCallback(ctx)
            trainer = self.expman.trainer(max_epochs=ctx.config.epochs)
            trainer.fit(model, train, val, ckpt_path=self.expman.ckpt_path)

        def save_checkpoint(self, path):
            self.expman.save_checkpoint(path)

What the callback does, on every executor (in-process threads, process workers):

* **Epochs.** Each training epoch in which validation ran (each epoch when the
  Trainer has no validation) is reported to ``ctx.epoch_end(trainer.current_epoch,
  trainer.callback_metrics)`` from the Trainer's thread, at the end of the epoch,
  when the epoch's training and validation metrics are both in (after the
  LightningModule's own ``on_train_epoch_end``: Lightning calls a ``Checkpoint``
  callback after it); the sanity check is never reported.  The metrics go as they
  are (0-d tensors): ``epoch_end`` turns them into numbers.
* **Stopping.** When ``epoch_end`` answers that the run should stop (expman's
  EarlyStopping, a pruner, a ``StopRequested``, Ctrl-C) the callback sets
  ``trainer.should_stop``: the Trainer ends after that epoch, like expman's own
  pipelines.  A run that starts already stopped trains no epoch.
* **Checkpoints.** expman decides when (``CheckpointCallback``), the Trainer
  writes them: :meth:`ExpmanCallback.save_checkpoint` is ``trainer.save_checkpoint``,
  allowed only where the Trainer's state is an epoch's end (inside ``epoch_end``,
  or after ``fit`` returned), so a checkpoint's epoch is the one the journal
  records.  A resumed run passes :attr:`ExpmanCallback.ckpt_path` (the checkpoint
  expman resumes from) to ``trainer.fit``; the callback checks that the Trainer
  then starts at ``ctx.start_epoch``.  It is a Lightning ``Checkpoint``, so the
  Trainer adds no ``ModelCheckpoint`` of its own.
* **One display, one log.** Lightning's progress bar is disabled (expman's display
  shows progress; two bars in one terminal deadlock), Lightning's loggers
  (``lightning.pytorch``, ``lightning.fabric``) propagate to expman's log routing
  instead of printing to stderr, and warnings issued in the run (Lightning's among
  them) are written to the run's run.log as ``py.warnings`` records.  Python still
  shows a warning once per place in the code per process: in-process runs share it.

:meth:`ExpmanCallback.trainer_kwargs` (or :meth:`ExpmanCallback.trainer`) also turns
Lightning's own logger off (expman records the metrics; ``integrations:`` exports
them) and points ``default_root_dir`` into the run's artifacts, so nothing lands
in the working directory; every keyword can be overridden.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint, ModelSummary

__all__ = ["ExpmanCallback", "RunHandle", "route_lightning_output"]

#: Loggers to which Lightning gives a stderr handler of its own.
LIGHTNING_LOGGERS = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "lightning_fabric",
)

# True in the context of a run that uses the bridge: its warnings go to its log.
_in_run: contextvars.ContextVar[bool] = contextvars.ContextVar("expman_lightning", default=False)
_setup_lock = threading.Lock()
_previous_showwarning: Any = None


class RunHandle(Protocol):
    """What the callback uses of a pipeline's ``ctx`` (in the driver or in a worker)."""

    start_epoch: int
    checkpoint: Path | None

    @property
    def artifacts(self) -> Path: ...

    @property
    def should_stop(self) -> bool: ...

    def epoch_end(self, epoch: int, metrics: Mapping[str, Any] | None = None) -> Any: ...


class ExpmanCallback(Checkpoint):
    """Reports a Lightning Trainer's epochs to an expman run and takes its checkpoints."""

    def __init__(self, ctx: RunHandle) -> None:
        super().__init__()
        self.ctx = ctx
        self._trainer: pl.Trainer | None = None
        # Invariant: _validated is the training epoch in which validation last ran (not
        # the sanity check), None before any.
        self._validated: int | None = None
        self._started = False
        # Invariant: _at_rest is True only while the Trainer's state is an epoch's end:
        # while it waits in epoch_end, and once fit has returned normally.
        self._at_rest = False
        route_lightning_output()
        # The run's context (its log route): a checkpoint saved from another thread
        # logs into the run's log too.
        self._context = contextvars.copy_context()

    # -- what the pipeline calls ------------------------------------------------------

    @property
    def ckpt_path(self) -> str | None:
        """The checkpoint this run resumes from (for ``trainer.fit(ckpt_path=...)``), or None."""
        checkpoint = self.ctx.checkpoint
        return None if checkpoint is None else str(checkpoint)

    def trainer_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keywords for ``lightning.Trainer``: this callback, no progress bar, no logger.

        The model summary is Lightning's plain one, logged (into run.log), not the rich
        table it prints on the terminal.  ``overrides`` win; a ``callbacks`` list is
        added to, this callback kept.
        """
        if overrides.get("enable_checkpointing") is False:
            raise ValueError(
                "ExpmanCallback.trainer_kwargs: enable_checkpointing=False, but this callback"
                " is the Trainer's checkpointing (expman's CheckpointCallback decides when);"
                " leave it on, and leave CheckpointCallback out of the YAML for none"
            )
        callbacks = list(overrides.pop("callbacks", None) or ())
        if not any(isinstance(c, ModelSummary) for c in callbacks):
            callbacks.append(ModelSummary())
        if self not in callbacks:
            callbacks.append(self)
        kwargs: dict[str, Any] = {
            "enable_progress_bar": False,
            "enable_model_summary": False,  # Lightning's own would be the rich one
            "logger": False,
            "default_root_dir": str(self.ctx.artifacts / "lightning"),
        }
        kwargs.update(overrides)
        kwargs["callbacks"] = callbacks
        return kwargs

    def trainer(self, **overrides: Any) -> pl.Trainer:
        """A ``lightning.Trainer`` built with :meth:`trainer_kwargs`."""
        return pl.Trainer(**self.trainer_kwargs(**overrides))

    def save_checkpoint(self, path: str | Path) -> None:
        """expman's ``save_checkpoint`` hook: the Trainer's own checkpoint, at ``path``."""
        trainer = self._trainer
        if trainer is None:
            raise RuntimeError(
                "ExpmanCallback.save_checkpoint: no Trainer was set up with this callback"
                " yet (pass it in the Trainer's callbacks and call trainer.fit)"
            )
        if not self._at_rest:
            raise RuntimeError(
                "ExpmanCallback.save_checkpoint: the Trainer is inside an epoch; a Lightning"
                " checkpoint is taken at an epoch's end (in epoch_end) or after fit"
            )
        # The full state (optimizer, loops, callbacks): what resuming needs.
        self._context.run(trainer.save_checkpoint, path, weights_only=False)

    # -- Lightning's hooks ------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer
        self._at_rest = False
        bar = trainer.progress_bar_callback
        if bar is not None:
            # A Trainer built without trainer_kwargs: expman's display is the only one.
            bar.disable()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.ctx.should_stop:  # stopped before a crash, resumed: nothing more to train
            trainer.should_stop = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _install_showwarning()
        if self._started:
            return
        self._started = True
        start = self.ctx.start_epoch
        if trainer.current_epoch != start:
            raise RuntimeError(
                f"ExpmanCallback: expman runs this run from epoch {start}"
                f" (checkpoint {self.ckpt_path}) but the Trainer starts at epoch"
                f" {trainer.current_epoch}: pass ckpt_path=callback.ckpt_path to trainer.fit"
            )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = trainer.current_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.enable_validation and self._validated != epoch:
            return  # an epoch without validation (check_val_every_n_epoch > 1)
        self._at_rest = True
        try:
            answer = self.ctx.epoch_end(epoch, dict(trainer.callback_metrics))
        finally:
            self._at_rest = False
        if inspect.isawaitable(answer):
            close = getattr(answer, "close", None)
            if close is not None:
                close()
            raise RuntimeError(
                "ExpmanCallback: trainer.fit runs in an event loop; call it from a plain"
                " `def run(self, ctx)` (expman runs that in a worker thread)"
            )
        if answer or self.ctx.should_stop:
            trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._at_rest = True  # fit ends after an epoch: a final checkpoint is consistent

    def state_dict(self) -> dict[str, Any]:
        return {}


def route_lightning_output() -> None:
    """Send Lightning's log records and a run's warnings to expman's log routing (once).

    Lightning gives its loggers a stderr handler of their own (``lightning`` always,
    ``lightning.pytorch`` and ``lightning.fabric`` when imported before any logging
    was configured, and then not propagating); under expman each record belongs in
    the run's run.log instead.  Warnings issued in a run that made an
    :class:`ExpmanCallback` (in its context) are logged as ``py.warnings``; others are
    shown as before.
    """
    _in_run.set(True)
    with _setup_lock:
        for name in LIGHTNING_LOGGERS:
            logger = logging.getLogger(name)
            own = [h for h in logger.handlers if type(h) is logging.StreamHandler]
            for handler in own:
                logger.removeHandler(handler)
            if own:
                logger.propagate = True
    _install_showwarning()


def _install_showwarning() -> None:
    # Called again at each epoch: a catch_warnings() block entered in any thread before
    # the first call and left after it puts the old function back.
    global _previous_showwarning
    if warnings.showwarning is _show_warning:
        return
    with _setup_lock:
        if warnings.showwarning is not _show_warning:
            _previous_showwarning = warnings.showwarning
            warnings.showwarning = _show_warning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    if file is None and _in_run.get():
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        logging.getLogger("py.warnings").warning("%s", text)
        return
    _previous_showwarning(message, category, filename, lineno, file, line)
