"""The Quick Start's pipeline: y = 3x + 1 by gradient descent, with checkpoints.

Its checkpoint holds everything the next epoch depends on (the weights and the
random generator's state), so a resumed run continues exactly where it stopped.
"""

import json
import random

from expman import Pipeline


class Regression(Pipeline):
    def __init__(self, **params):
        super().__init__(**params)
        self.state = None

    def run(self, ctx):
        cfg = ctx.config
        rng = random.Random(ctx.seed)
        xs = [rng.uniform(-1, 1) for _ in range(cfg.samples)]
        ys = [3 * x + 1 + rng.gauss(0, 0.1) for x in xs]
        if self.state is None:
            self.state = {"w": 0.0, "b": 0.0, "rng": list(rng.getstate()[1])}
        w, b, lr = self.state["w"], self.state["b"], cfg.optimizer.lr
        loss = None
        for epoch in range(ctx.start_epoch, cfg.epochs):
            n = len(xs)
            grad_w = sum((w * x + b - y) * x for x, y in zip(xs, ys, strict=True)) * 2 / n
            grad_b = sum(w * x + b - y for x, y in zip(xs, ys, strict=True)) * 2 / n
            w, b = w - lr * grad_w, b - lr * grad_b
            self.state.update(w=w, b=b)
            loss = sum((w * x + b - y) ** 2 for x, y in zip(xs, ys, strict=True)) / n
            if ctx.epoch_end(epoch, {"loss": loss}):
                break
        return {"loss": loss, "w": w, "b": b}

    def save_checkpoint(self, path):
        path.write_text(json.dumps(self.state))

    def load_checkpoint(self, path):
        self.state = json.loads(path.read_text())
