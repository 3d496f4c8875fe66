"""SyntheticCurves: a pipeline of synthetic learning curves whose best configuration is known.

For tests, benchmarks and examples of cross-trial pruning: configuration ``c`` of
problem ``instance`` reports, at epoch ``t`` (0-based)::

    val_loss(c, t) = L_inf(c) + A(c) * (t + 1) ** (-alpha(c)) + noise(c, seed, t)

and ``score = exp(-val_loss)`` (higher is better).  The curve's parameters of every
configuration derive from the instance alone, through ``random.Random("expman.
SyntheticCurves/<instance>/<config>")`` (a string seed: the same numbers in every
process, on every executor, whatever ``PYTHONHASHSEED``), so the best configuration is
known before anything runs: :meth:`SyntheticCurves.best`.

**The family.**  Each configuration draws two latent factors, its *quality* ``q`` and
its *speed* ``s``, each uniform on [0, 1), then::

    L_inf = 0.05 + 0.40 * q + 0.15 * s          the plateau: good configs lower, fast ones higher
    A     = (0.4 + 0.8 * q) * (1.2 - 0.6 * s)   the excess after the first epoch
    alpha = 0.3 * 6 ** s                        the rate, log-uniform on [0.3, 1.8)

plus a jitter of each parameter (a factor uniform on [0.9, 1.1)).  Quality shows at
every epoch (a good configuration starts lower and ends lower), while speed trades
early progress for a higher plateau: a fast configuration leads after a few epochs
and is overtaken later by slower, better ones, so curves cross, as they do when a
large learning rate learns fast and settles high.

**Noise** is Gaussian with standard deviation ``noise`` (default 0.01), drawn per
(instance, configuration, the run's ``ctx.seed``, epoch) from its own string-seeded
generator: repeats of a configuration differ, and a run resumed at epoch ``t`` reports
exactly what it would have without the interruption.

**Sleeps** (for tests of timing and concurrency): ``sleep: 0.01`` waits that many
seconds before each epoch's report; ``sleep: [lo, hi]`` draws each epoch's wait
uniformly from the run's own generator (``ctx.random``).  Timing varies with the
draws; the values never depend on it.

Named in YAML as ``settings.pipeline: {type: expman.testing.SyntheticCurves, config:
17, configs: 81, instance: 3, epochs: 81}`` (or ``type: SyntheticCurves`` where
``expman.testing`` has been imported); sweep it with ``pipeline.config: {range: [0,
81]}``.  ``SyntheticCurves`` is ``async def run``; :class:`SyncSyntheticCurves` is the
same pipeline as a plain ``def run`` (the thread executor runs it in a worker thread).
Either runs on every executor.  A checkpoint (``save_checkpoint``) is a small JSON
file: the last epoch, the best value so far and the state of ``ctx.random``.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from expman.pipeline import Pipeline
from expman.serializable import InvalidParam, YAMLSerializable

if TYPE_CHECKING:
    from expman.run.context import RunContext

__all__ = ["Curve", "SyncSyntheticCurves", "SyntheticCurves", "best_config", "curve"]

#: The prefix of every string seed (curves and noise): nothing else draws from these.
_SEED = "expman.SyntheticCurves"


@dataclass(frozen=True, slots=True)
class Curve:
    """One configuration's noise-free curve: ``final + scale * (epoch + 1) ** -rate``."""

    instance: int
    config: int
    final: float  # L_inf: the plateau
    scale: float  # A: the excess over the plateau after the first epoch
    rate: float  # alpha: how fast the excess decays

    def loss(self, epoch: int) -> float:
        """The noise-free loss reported at ``epoch`` (0-based)."""
        return self.final + self.scale * math.pow(epoch + 1, -self.rate)

    def noisy_loss(self, epoch: int, seed: int, noise: float) -> float:
        """The loss a run of seed ``seed`` reports at ``epoch``: :meth:`loss` plus its noise."""
        if noise == 0:
            return self.loss(epoch)
        draw = random.Random(f"{_SEED}/noise/{self.instance}/{self.config}/{seed}/{epoch}")
        return self.loss(epoch) + draw.gauss(0.0, noise)


def curve(instance: int, config: int) -> Curve:
    """Configuration ``config``'s curve in problem ``instance`` (independent of the others)."""
    draw = random.Random(f"{_SEED}/{instance}/{config}")
    quality, speed = draw.random(), draw.random()

    def jitter() -> float:
        return draw.uniform(0.9, 1.1)

    return Curve(
        instance=instance,
        config=config,
        final=(0.05 + 0.40 * quality + 0.15 * speed) * jitter(),
        scale=(0.4 + 0.8 * quality) * (1.2 - 0.6 * speed) * jitter(),
        rate=0.3 * 6**speed * jitter(),
    )


def best_config(instance: int, configs: int, epochs: int | None = None) -> int:
    """The configuration of ``range(configs)`` with the lowest noise-free loss.

    At the last of ``epochs`` epochs (epoch ``epochs - 1``); with ``epochs`` None, the
    lowest plateau ``L_inf`` (the best after unlimited training).
    """
    if configs < 1:
        raise ValueError(f"configs must be at least 1, got {configs}")

    def key(c: int) -> float:
        shape = curve(instance, c)
        return shape.final if epochs is None else shape.loss(epochs - 1)

    return min(range(configs), key=key)


class _Curves(Pipeline):
    """What both variants share: the settings, their checks, the epochs' values, the state."""

    def __init__(
        self,
        config: int = 0,
        configs: int = 81,
        instance: int = 0,
        epochs: int = 81,
        noise: float = 0.01,
        sleep: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        type(self).validate_params(
            {
                "config": config,
                "configs": configs,
                "instance": instance,
                "epochs": epochs,
                "noise": noise,
                "sleep": sleep,
            }
        )
        self.curve = curve(instance, config)
        self.epochs = epochs
        self.noise = float(noise)
        self.sleep = sleep
        # The run's state, all of it in a checkpoint: the last epoch reported, the
        # lowest loss so far, and ctx.random's state (the sleeps' draws).
        self.last_epoch = -1
        self.best_loss: float | None = None
        self._random: random.Random | None = None

    @classmethod
    def best(cls, *, instance: int, configs: int, epochs: int | None = None) -> int:
        """The known best configuration (see :func:`best_config`)."""
        return best_config(instance, configs, epochs)

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> None:
        """Refuse settings the curves cannot use, naming the key (a config error in YAML)."""
        for key, low in (("config", 0), ("configs", 1), ("instance", None), ("epochs", 1)):
            if key not in params:
                continue
            value = params[key]
            if type(value) is not int:
                raise InvalidParam(key, f"expected an integer, got {value!r}")
            if low is not None and value < low:
                raise InvalidParam(key, f"expected an integer >= {low}, got {value}")
        config, configs = params.get("config", 0), params.get("configs", 81)
        if type(config) is int and type(configs) is int and config >= configs:
            raise InvalidParam(
                "config", f"expected 0 <= config < configs ({configs}), got {config}"
            )
        if "noise" in params:
            noise = params["noise"]
            if not _is_number(noise) or not math.isfinite(noise) or noise < 0:
                raise InvalidParam("noise", f"expected a number >= 0, got {noise!r}")
        sleep = params.get("sleep")
        if sleep is None:
            return
        expected = "expected seconds >= 0 or a range [lo, hi] with 0 <= lo <= hi"
        if _is_number(sleep):
            if not (math.isfinite(sleep) and sleep >= 0):
                raise InvalidParam("sleep", f"{expected}, got {sleep!r}")
            return
        if isinstance(sleep, (list, tuple)) and len(sleep) == 2 and all(map(_is_number, sleep)):
            lo, hi = sleep
            if math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi:
                return
        raise InvalidParam("sleep", f"{expected}, got {sleep!r}")

    # -- one epoch ------------------------------------------------------------------

    def seconds(self, ctx: Any) -> float:
        """How long epoch ``t`` sleeps: fixed, or drawn from ``ctx.random``."""
        self._random = ctx.random
        if self.sleep is None:
            return 0.0
        if _is_number(self.sleep):
            return float(self.sleep)  # type: ignore[arg-type]
        lo, hi = self.sleep  # type: ignore[misc]
        return float(ctx.random.uniform(float(lo), float(hi)))

    def metrics(self, ctx: Any, epoch: int) -> dict[str, float]:
        """The epoch's metrics, and the state they leave."""
        loss = self.curve.noisy_loss(epoch, ctx.seed, self.noise)
        self.last_epoch = epoch
        if self.best_loss is None or loss < self.best_loss:
            self.best_loss = loss
        return {"val_loss": loss, "score": math.exp(-loss)}

    def result(self) -> dict[str, Any]:
        return {"best_val_loss": self.best_loss, "last_epoch": self.last_epoch}

    # -- checkpoints ----------------------------------------------------------------

    def save_checkpoint(self, path: Path) -> None:
        state: dict[str, Any] = {"epoch": self.last_epoch, "best_val_loss": self.best_loss}
        if self._random is not None:
            version, internal, gauss_next = self._random.getstate()
            state["random"] = [version, list(internal), gauss_next]
        Path(path).write_text(json.dumps(state))

    def load_checkpoint(self, path: Path, ctx: RunContext) -> None:
        state = json.loads(Path(path).read_text())
        self.last_epoch = state["epoch"]
        self.best_loss = state["best_val_loss"]
        if "random" in state:
            version, internal, gauss_next = state["random"]
            ctx.random.setstate((version, tuple(internal), gauss_next))


@YAMLSerializable.register("SyntheticCurves")
class SyntheticCurves(_Curves):
    """Synthetic learning curves with a known best configuration (``async def run``).

    Settings (the keys of ``settings.pipeline``): ``config`` (this run's
    configuration, ``0 <= config < configs``), ``configs`` (how many there are; 81),
    ``instance`` (the problem: which curves; 0), ``epochs`` (81), ``noise`` (the
    noise's standard deviation; 0.01), ``sleep`` (seconds per epoch, or ``[lo, hi]``
    drawn per epoch from ``ctx.random``; none).  Reports ``val_loss`` and ``score``
    each epoch; returns ``best_val_loss`` and ``last_epoch``.  The family and its
    parameter distributions: :mod:`expman.testing.synthetic`.
    """

    # Pipeline.run may be async def (the executors await it); its annotation is sync's.
    async def run(self, ctx: RunContext) -> dict[str, Any]:  # type: ignore[override]
        for epoch in range(ctx.start_epoch, self.epochs):
            if ctx.should_stop:  # stopped before a crash, resumed: no epoch more
                break
            seconds = self.seconds(ctx)
            if seconds:
                await anyio.sleep(seconds)
            if await ctx.epoch_end(epoch, self.metrics(ctx, epoch)):
                break
        return self.result()


@YAMLSerializable.register("SyncSyntheticCurves")
class SyncSyntheticCurves(_Curves):
    """:class:`SyntheticCurves` as a plain ``def run`` (a worker thread, a process)."""

    def run(self, ctx: RunContext) -> dict[str, Any]:
        for epoch in range(ctx.start_epoch, self.epochs):
            if ctx.should_stop:
                break
            seconds = self.seconds(ctx)
            if seconds:
                time.sleep(seconds)
            if ctx.epoch_end(epoch, self.metrics(ctx, epoch)):
                break
        return self.result()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
