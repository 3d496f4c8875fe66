"""Handwritten digits (scikit-learn's bundled 8x8 images) with a small NumPy MLP.

Trained epoch by epoch with minibatch SGD; each epoch reports val_acc, val_loss and
train_loss.  A checkpoint holds everything the next epoch depends on: the model's
weights and the state of the run's random generator (``ctx.rng``, which shuffles the
minibatches), so a run resumed from it trains exactly as if it had never stopped.
It is one ``.npz`` file, which :meth:`MLP.load` turns back into a working model::

    from digits_pipeline import MLP, load_digits_split
    model = MLP.load("workspace/digits/trials/fast/run_0/artifacts/checkpoint-final")
    _, _, x_val, y_val = load_digits_split()
    print(model.accuracy(x_val, y_val))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import expman
from expman import Pipeline


def load_digits_split(val_fraction: float = 0.25, split_seed: int = 0) -> tuple[Any, ...]:
    """x_train, y_train, x_val, y_val: pixels scaled to [0, 1], the same split for every run."""
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x / 16.0, y, test_size=val_fraction, random_state=split_seed, stratify=y
    )
    return x_train, y_train, x_val, y_val


class MLP:
    """64 -> hidden (ReLU) -> 10 (softmax)."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.w = weights

    @classmethod
    def create(cls, hidden: int, rng: np.random.Generator) -> MLP:
        return cls(
            {
                "w1": rng.normal(0, 1 / np.sqrt(64), (64, hidden)),
                "b1": np.zeros(hidden),
                "w2": rng.normal(0, 1 / np.sqrt(hidden), (hidden, 10)),
                "b2": np.zeros(10),
            }
        )

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = np.maximum(0.0, x @ self.w["w1"] + self.w["b1"])
        logits = h @ self.w["w2"] + self.w["b2"]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return h, p / p.sum(axis=1, keepdims=True)

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        _, p = self._forward(x)
        return float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x)[1].argmax(axis=1)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(x) == y).mean())

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> None:
        """One SGD step on a minibatch (cross-entropy, backpropagation by hand)."""
        h, p = self._forward(x)
        d = p
        d[np.arange(len(y)), y] -= 1.0
        d /= len(y)
        dh = (d @ self.w["w2"].T) * (h > 0)
        self.w["w2"] -= lr * (h.T @ d)
        self.w["b2"] -= lr * d.sum(axis=0)
        self.w["w1"] -= lr * (x.T @ dh)
        self.w["b1"] -= lr * dh.sum(axis=0)

    def save(self, path: str | Path, **extra: np.ndarray) -> None:
        # A file object: np.savez would otherwise append ".npz" to the name expman chose.
        with open(path, "wb") as f:
            np.savez(f, **self.w, **{f"__{k}__": v for k, v in extra.items()})

    @classmethod
    def load(cls, path: str | Path) -> MLP:
        with np.load(path) as data:
            return cls({k: data[k].copy() for k in data.files if not k.startswith("__")})


class DigitsMLP(Pipeline):
    """Trains an MLP on the digits; the constructor takes ``settings.pipeline``'s keys."""

    def __init__(self, hidden: int = 32, batch_size: int = 32) -> None:
        super().__init__()
        self.hidden = hidden
        self.batch_size = batch_size
        self.model: MLP | None = None
        self.rng: np.random.Generator | None = None

    def run(self, ctx: expman.RunContext) -> dict[str, Any]:
        # The run's own generator (seeded with ctx.seed): runs that overlap in threads
        # do not share it, so each run reproduces whatever else runs beside it.
        rng = self.rng = ctx.rng
        cfg = ctx.config
        x_train, y_train, x_val, y_val = load_digits_split(cfg.val_fraction, cfg.split_seed)
        if self.model is None:  # not restored from a checkpoint
            self.model = MLP.create(self.hidden, rng)
        for epoch in range(ctx.start_epoch, cfg.epochs):
            if ctx.should_stop:  # e.g. early stopping decided before a crash and a resume
                break
            order = rng.permutation(len(y_train))
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                self.model.step(x_train[batch], y_train[batch], cfg.lr)
            metrics = {
                "val_acc": self.model.accuracy(x_val, y_val),
                "val_loss": self.model.loss(x_val, y_val),
                "train_loss": self.model.loss(x_train, y_train),
            }
            if ctx.epoch_end(epoch, metrics):  # a plain def: runs in a thread, no await
                break
        return {"train_acc": self.model.accuracy(x_train, y_train)}

    def save_checkpoint(self, path: Path) -> None:
        assert self.model is not None
        assert self.rng is not None
        rng_state = json.dumps(self.rng.bit_generator.state)
        self.model.save(path, rng=np.array(rng_state))

    def load_checkpoint(self, path: Path, ctx: expman.RunContext) -> None:
        self.model = MLP.load(path)
        with np.load(path) as data:
            if "__rng__" in data.files:  # the generator where the checkpoint left it
                ctx.rng.bit_generator.state = json.loads(str(data["__rng__"]))
