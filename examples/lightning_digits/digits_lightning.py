"""Handwritten digits (scikit-learn's bundled 8x8 images) with a Lightning MLP under expman.

The LightningModule is ordinary Lightning; the pipeline around it is a few lines:
an :class:`~expman.integrations.lightning.ExpmanCallback` reports each epoch's
``callback_metrics`` to the run (expman's EarlyStopping, checkpoints and display
work on them), builds the Trainer (no progress bar or logger of Lightning's own),
and is the pipeline's ``save_checkpoint``: a checkpoint is the Trainer's, and a
resumed run continues from it with ``trainer.fit(..., ckpt_path=...)``.

The run reproduces whatever else runs beside it and however often it is resumed:
the weights are drawn from the run's own generator (``ctx.torch_generator``) and
each epoch's order of minibatches from ``(ctx.seed, epoch)``
(:class:`EpochShuffle`, which Lightning tells the epoch).  A checkpoint loads as
any Lightning checkpoint::

    model = DigitsMLP.load_from_checkpoint(
        "workspace/lightning_digits/trials/fast/run_0/artifacts/checkpoint-last")
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

import expman
from expman import Pipeline
from expman.integrations.lightning import ExpmanCallback


def digits_split(val_fraction: float = 0.25, split_seed: int = 0) -> tuple[TensorDataset, ...]:
    """Train and validation sets: pixels scaled to [0, 1], the same split for every run."""
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x / 16.0, y, test_size=val_fraction, random_state=split_seed, stratify=y
    )
    return (
        TensorDataset(torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train)),
        TensorDataset(torch.tensor(x_val, dtype=torch.float32), torch.tensor(y_val)),
    )


class EpochShuffle(Sampler[int]):
    """A permutation per epoch drawn from ``(seed, epoch)``: the same after a resume."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it before each epoch
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class DigitsMLP(pl.LightningModule):
    """64 -> hidden (ReLU) -> 10, cross-entropy, plain SGD."""

    def __init__(self, hidden: int = 32, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def init_weights(self, generator: torch.Generator) -> None:
        """Draw the weights from ``generator`` (not torch's global one, shared by threads)."""
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu", generator=generator)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


class DigitsLightning(Pipeline):
    """Trains :class:`DigitsMLP` with a Lightning Trainer; takes ``settings.pipeline``'s keys."""

    def __init__(self, hidden: int = 32, batch_size: int = 64) -> None:
        super().__init__()
        self.hidden = hidden
        self.batch_size = batch_size
        self.bridge: ExpmanCallback | None = None

    def run(self, ctx: expman.RunContext) -> dict[str, Any]:
        torch.set_num_threads(1)  # several runs share the CPUs
        cfg = ctx.config
        train, val = digits_split(cfg.val_fraction, cfg.split_seed)
        model = DigitsMLP(self.hidden, cfg.lr)
        model.init_weights(ctx.torch_generator)  # a resumed run loads its checkpoint's
        self.bridge = ExpmanCallback(ctx)
        trainer = self.bridge.trainer(max_epochs=cfg.epochs, accelerator="cpu", devices=1)
        trainer.fit(
            model,
            DataLoader(train, self.batch_size, sampler=EpochShuffle(len(train), ctx.seed)),
            DataLoader(val, batch_size=512),
            ckpt_path=self.bridge.ckpt_path,
        )
        return {"epochs_trained": trainer.current_epoch}

    def save_checkpoint(self, path: Path) -> None:
        assert self.bridge is not None, "save_checkpoint before run"
        self.bridge.save_checkpoint(path)
