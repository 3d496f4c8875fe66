"""Journal growth: one run of 10,000 epochs with a checkpoint every epoch and MetricsTracker.

A real ``expman run`` (subprocess) trains one run that reports 10,000 epochs and asks
for a checkpoint after each (``CheckpointCallback`` interval 1, ``save_last``), with
``MetricsTracker`` keeping the metric history.  Each checkpoint's journal record
carries every run callback's state, so a callback whose state held its whole
history would make the journal grow with the square of the epochs.  Reported:

* ``journal_bytes`` / ``metrics_log_bytes``: the journal against the run's own
  metrics.log (target: within 3x);
* ``status_s``: ``expman status`` on the experiment (the command, start to end);
* ``resume_s``: ``expman run`` resuming the run cut off after its last checkpoint
  (its RunFinished and ExperimentFinished removed from the journal): it reads the
  journal, restores MetricsTracker's history, trains nothing and finishes;
* ``fold_s``: folding the journal in-process (``read_journal``), the part of both
  that grows with the journal.

Targets: ``status_s`` and ``resume_s`` under 0.5 s.  Both include starting Python
and importing what the command needs, which does not grow with the journal: each is
reported beside the same command on the same experiment with 1 epoch
(``floor_s``), and the difference (``growth_s``) is what the 10,000 epochs cost.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import _measure
from _folders import write_experiment

from expman.workspace.journal import read_journal

CALLBACKS = (
    {"type": "CheckpointCallback", "interval": 1, "save_top_k": 1},
    {"type": "MetricsTracker"},
)
MODULE = '''
import json

import expman


class Counter(expman.Pipeline):
    """Reports ``epochs`` epochs; its checkpoint is the epoch it reached."""

    def __init__(self, epochs=10, **params):
        super().__init__(**params)
        self.epochs, self.done = epochs, 0

    async def run(self, ctx):
        loss = 1.0
        for epoch in range(ctx.start_epoch, self.epochs):
            loss = 1.0 / (epoch + 1)
            self.done = epoch + 1
            if await ctx.epoch_end(epoch, {"loss": loss, "acc": 1.0 - loss}):
                break
        return {"done": self.done}

    def save_checkpoint(self, path):
        with open(path, "w") as f:
            json.dump({"done": self.done}, f)

    def load_checkpoint(self, path):
        with open(path) as f:
            self.done = json.load(f)["done"]
'''


def expman_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_measure.ROOT), env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-m", "expman", *args], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"expman {' '.join(args)} failed:\n{done.stderr}")
    return done


def cut_after_last_checkpoint(journal: Path) -> None:
    """Drop the run's end from the journal: as if killed right after its last checkpoint."""
    lines = journal.read_bytes().splitlines(keepends=True)
    keep = [
        line
        for line in lines
        if b'"RunFinished"' not in line
        and b'"ExperimentFinished"' not in line
        and b'"TrialFinished"' not in line
    ]
    journal.write_bytes(b"".join(keep))


def measure(workdir: Path, epochs: int) -> dict[str, Any]:
    """Train one run of ``epochs`` epochs, then time status and a resume on it."""
    root = write_experiment(
        workdir / f"configs-{epochs}",
        name="growth",
        trials=1,
        pipeline={"type": "growth_pipes:Counter", "epochs": epochs},
        max_concurrency=1,
        callbacks=CALLBACKS,
    )
    (root / "growth_pipes.py").write_text(MODULE)
    ws = workdir / f"ws-{epochs}"
    with _measure.stopwatch() as train:
        expman_cli("run", str(root), "-w", str(ws), "--quiet")
    exp = ws / "growth"
    journal = exp / "logs" / "events.jsonl"
    metrics_log = next(exp.glob("trials/*/run_0/logs/metrics.log"))
    out: dict[str, Any] = {
        "train": train.sample,
        "journal_bytes": journal.stat().st_size,
        "metrics_log_bytes": metrics_log.stat().st_size,
        "status": [],
        "fold": [],
        "resume": [],
    }
    for _ in range(_measure.REPEATS):
        with _measure.stopwatch() as t:
            expman_cli("status", str(exp))
        out["status"].append(t.sample)
        with _measure.stopwatch() as t:
            read_journal(journal)
        out["fold"].append(t.sample)
    saved = journal.read_bytes()
    for _ in range(_measure.REPEATS):
        journal.write_bytes(saved)
        cut_after_last_checkpoint(journal)
        with _measure.stopwatch() as t:
            expman_cli("run", str(root), "-w", str(ws), "--quiet")
        out["resume"].append(t.sample)
    (run,) = read_journal(journal).runs.values()
    if run.status != "completed" or run.epochs != epochs:
        raise SystemExit(f"resumed run ended {run.status} after {run.epochs} epochs")
    return out


def best(samples: list[Any]) -> float:
    return round(min(float(s) for s in samples), 4)


def main() -> None:
    epochs = _measure.size(10_000, 200)
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        floor = measure(workdir, 1)
        grown = measure(workdir, epochs)
    journal_bytes, metrics_bytes = grown["journal_bytes"], grown["metrics_log_bytes"]
    train = grown["train"]
    status, resume = grown["status"], grown["resume"]
    fold = grown["fold"]
    startup = floor["status"]
    ratio = journal_bytes / metrics_bytes
    params = {"epochs": epochs, "checkpoint_every": 1, "callbacks": [c["type"] for c in CALLBACKS]}
    _measure.emit(
        "journal_growth",
        f"{epochs} epochs, a checkpoint each: journal size",
        params=params,
        wall_s=train,
        items=epochs,
        item="epoch with a checkpoint",
        result=("journal / metrics.log", round(ratio, 3), "x"),
        target=("<=", 3.0),
        journal_bytes=journal_bytes,
        metrics_log_bytes=metrics_bytes,
    )
    _measure.emit(
        "journal_growth",
        f"{epochs} epochs, a checkpoint each: expman status",
        params=params,
        wall_s=status,
        items=1,
        item="command",
        result=("expman status", min(float(s) for s in status), "s"),
        target=("<=", 0.5),
        floor_s=best(startup),
        growth_s=round(best(status) - best(startup), 4),
        fold_s=best(fold),
    )
    _measure.emit(
        "journal_growth",
        f"{epochs} epochs, a checkpoint each: resume",
        params=params,
        wall_s=resume,
        items=1,
        item="command",
        result=("expman run (resume)", min(float(s) for s in resume), "s"),
        target=("<=", 0.5),
        floor_s=best(floor["resume"]),
        growth_s=round(best(resume) - best(floor["resume"]), 4),
    )


if __name__ == "__main__":
    main()
