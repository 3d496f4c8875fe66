"""The end-of-run summary of `expman run`: every run when there are few, the counts, the
best trials and the failures when there are many."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import expman
from expman.subscribers.display import plain_summary
from expman.subscribers.display.summary import BEST, EVERY_RUN_UP_TO

from .conftest import run_cli, write_yaml
from .test_tables_terminal import assert_fits, in_terminal, words

#: Quality grows with the trial's q; repeat 1 of the trials with q >= 12 fails.
PIPES = """
from expman import Pipeline


class Graded(Pipeline):
    async def run(self, ctx):
        q = ctx.config.q
        if q >= 12 and ctx.repeat == 1:
            raise RuntimeError(f"diverged at q={q}")
        acc = 0.5 + q / 100 + ctx.repeat / 1000
        await ctx.epoch_end(0, {"loss": 1.0 - q / 100, "val_acc": acc})
        return {}
"""


def write_sweep(root: Path, trials: int, repeat: int = 2, name: str = "many") -> Path:
    root.mkdir(parents=True)
    write_yaml(root / "experiment.yaml", {"name": name, "id": 1, "desc": "", "settings": {}})
    write_yaml(root / "base.yaml", {"settings": {"pipeline": {"type": "graded_pipes:Graded"}}})
    write_yaml(
        root / "trials.yaml",
        [
            {
                "name": f"a_rather_long_trial_name_{i:03d}",
                "id": i + 1,
                "repeat": repeat,
                "settings": {"q": i},
            }
            for i in range(trials)
        ],
    )
    (root / "graded_pipes.py").write_text(PIPES)
    return root


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The config folder of 15 trials x 2 repeats (30 runs, 3 of them failing), and a
    workspace folder for it."""
    base = tmp_path_factory.mktemp("many")
    return write_sweep(base / "configs", 15), base / "ws"


def summary_lines(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("experiment many:"))
    return lines[start:]


def test_a_large_run_ends_with_counts_best_trials_and_failures(
    many: tuple[Path, Path], tmp_path: Path
) -> None:
    """30 runs in a pipe: the summary gives the counts, the 10 best trials by val_acc in
    the order `expman results` ranks them, each failed run with its error, and where to
    see everything: not one line per run."""
    config, _ = many
    workspace = tmp_path / "ws"
    done = run_cli("run", str(config), "-w", str(workspace))
    assert done.returncode == 1, done.stderr  # some runs failed
    lines = summary_lines(done.stdout)
    assert lines[0].startswith("experiment many: failed (27 completed, 3 failed) in ")
    assert lines[1] == (
        f"  the {BEST} best of 15 trials by val_acc (max is better, mean over repeats):"
    )
    ranked = json.loads(run_cli("results", str(workspace / "many"), "--format", "json").stdout)[
        "trials"
    ]
    best = [re.match(r"\s+(\d+)\. (\S+)  val_acc=", line) for line in lines[2 : 2 + BEST]]
    assert [(int(m[1]), m[2]) for m in best if m] == [
        (row["rank"], row["trial"]) for row in ranked[:BEST]
    ]
    assert "  failed runs (3):" in lines
    for q in (12, 13, 14):
        assert (
            f"    a_rather_long_trial_name_{q:03d}/run_1: RuntimeError: diverged at q={q}" in lines
        )
    assert f"  every run: expman status {workspace / 'many'}" in lines
    assert f"  every trial: expman results {workspace / 'many'}" in lines
    assert lines[-1] == f"workspace: {workspace / 'many'}"
    assert len(lines) < 2 + BEST + 1 + 3 + 3 + 1  # nothing per run beyond these
    assert not [line for line in lines if re.search(r"/run_\d: completed", line)]


def test_a_large_run_on_an_80_column_terminal(many: tuple[Path, Path], tmp_path: Path) -> None:
    """On an 80-column terminal the digest's tables keep each trial and run name whole,
    with the mean val_acc beside each best trial, and fit the width (the lines naming
    commands and paths are printed whole, for copying)."""
    config, _ = many
    code, lines = in_terminal(80, "run", str(config), "-w", str(tmp_path / "ws"))
    assert code == 1, "\n".join(lines)
    start = max(i for i, line in enumerate(lines) if line.startswith("experiment many:"))
    digest = lines[start:]
    assert_fits([line for line in digest if str(tmp_path) not in line], 80)
    header = next(line for line in digest if "val_acc (mean)" in line)
    assert words(header)[:2] == ["#", "trial"]
    best = [line for line in digest if re.match(r"\s*\d+\s+a_rather_long_trial_name_\d{3}\s", line)]
    assert len(best) == BEST
    assert all(re.search(r"0\.\d+", line) for line in best)
    for q in (12, 13, 14):
        assert any(
            words(line)[:2] == [f"a_rather_long_trial_name_{q:03d}/run_1", "RuntimeError:"]
            for line in digest
        )


async def test_up_to_20_runs_every_run_is_listed(tmp_path: Path) -> None:
    """With 20 runs the summary lists every run; with 21 it lists the best trials instead."""
    for trials, listed in ((EVERY_RUN_UP_TO, True), (EVERY_RUN_UP_TO + 1, False)):
        root = write_sweep(tmp_path / f"c{trials}", trials, repeat=1, name=f"s{trials}")
        result = await expman.run_experiment(root, workspace=tmp_path / "ws")
        text = plain_summary(result)
        per_run = re.findall(r"^  a_rather_long_trial_name_\d{3}/run_0: ", text, re.MULTILINE)
        assert len(per_run) == (trials if listed else 0), text
        assert ("best of" in text) is not listed
