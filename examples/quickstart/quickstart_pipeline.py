"""A pipeline small enough to read in one glance: y = 3x + 1 fitted by gradient descent."""

import random

import structlog

from expman import Pipeline


class LinearRegression(Pipeline):
    async def run(self, ctx):
        rng = random.Random(ctx.seed)
        xs = [rng.uniform(-1, 1) for _ in range(ctx.config.samples)]
        ys = [3 * x + 1 + rng.gauss(0, 0.1) for x in xs]
        w, b, lr = 0.0, 0.0, ctx.config.lr
        log = structlog.get_logger()
        for epoch in range(ctx.config.epochs):
            grad_w = sum((w * x + b - y) * x for x, y in zip(xs, ys, strict=True)) * 2 / len(xs)
            grad_b = sum(w * x + b - y for x, y in zip(xs, ys, strict=True)) * 2 / len(xs)
            w, b = w - lr * grad_w, b - lr * grad_b
            loss = sum((w * x + b - y) ** 2 for x, y in zip(xs, ys, strict=True)) / len(xs)
            log.debug("step", w=w, b=b)
            if await ctx.epoch_end(epoch, {"loss": loss}):
                break
        return {"loss": loss, "w": w, "b": b}
