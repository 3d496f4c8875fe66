"""Progress display overhead: epochs per second of one busy run, with each display attached.

One run reports EPOCHS epochs (a no-op pipeline) while the display under test is
attached to the bus as ``expman run`` attaches it; the live display draws into
/dev/null through a console that believes it is a terminal.  Prints one JSON line per
display (``_measure.emit``): best of 3 wall times and epochs per second.
``python benchmarks/display.py`` (``--smoke`` for tiny sizes).
"""

from __future__ import annotations

import os
from pathlib import Path

import _measure
import anyio
from rich.console import Console

import expman
from expman.subscribers.display import Display, JsonDisplay, LineDisplay, LiveDisplay

PIPELINE = """
from expman import Pipeline


class NoOp(Pipeline):
    def __init__(self, epochs=1, **params):
        super().__init__(**params)
        self.epochs = epochs

    async def run(self, ctx):
        for epoch in range(self.epochs):
            await ctx.epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "acc": epoch / self.epochs})
        return {}
"""


def write_experiment(root: Path, epochs: int) -> Path:
    root.mkdir(parents=True)
    (root / "experiment.yaml").write_text(
        f"name: {root.name}\nid: 1\ndesc: bench\nsettings: {{}}\n"
    )
    (root / "base.yaml").write_text(
        f"settings:\n  pipeline: {{type: 'bench_display:NoOp', epochs: {epochs}}}\n"
    )
    (root / "trials.yaml").write_text("- {name: t, id: 1, repeat: 1}\n")
    (root / "bench_display.py").write_text(PIPELINE)
    return root


async def measure(workdir: Path, kind: str, epochs: int, attempt: int) -> float:
    root = write_experiment(workdir / f"{kind}-{attempt}", epochs)
    devnull = open(os.devnull, "w")
    display: Display | None = {
        "none": None,
        "lines": LineDisplay(devnull),
        "json": JsonDisplay(devnull),
        "live": LiveDisplay(Console(file=devnull, force_terminal=True, width=120)),
    }[kind]
    with _measure.stopwatch() as watch:
        async with expman.start_experiment(root, workspace=workdir / "ws") as handle:
            if display is not None:
                display.attach(handle.bus)
            result = await handle.wait()
    wall = watch.sample
    if display is not None:
        display.close()
    devnull.close()
    assert result.status == "completed", result
    return wall


async def main() -> None:
    epochs = _measure.size(20_000, 200)
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        await measure(workdir, "none", 100, -1)  # warm up imports
        for kind in ("none", "lines", "json", "live"):
            walls = [await measure(workdir, kind, epochs, k) for k in range(_measure.REPEATS)]
            _measure.emit(
                "display",
                kind,
                params={"epochs": epochs, "metrics": 2},
                wall_s=walls,
                items=epochs,
                item="epoch",
                result=("epochs per second", epochs / min(walls), "/s"),
                load_average=os.getloadavg()[0],
            )


if __name__ == "__main__":
    anyio.run(main)
