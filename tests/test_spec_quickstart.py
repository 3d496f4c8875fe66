"""The original specification's Quick Start, as its users type it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import expman

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "spec_quickstart" / "run_experiment.py"


def test_the_spec_script_runs_its_experiment_from_plain_code(tmp_path: Path) -> None:
    """``experiment.run()`` from a synchronous script runs everything (it used to do nothing)."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "spec_quickstart: completed" in done.stdout
    exp = tmp_path / "outputs" / "spec_quickstart"
    journal = [
        json.loads(line) for line in (exp / "logs" / "events.jsonl").read_text().splitlines()
    ]
    finished = [e for e in journal if e["type"] == "RunFinished"]
    assert len(finished) == 4
    # The callbacks registered on Pipeline(env) joined every run.
    for e in finished:
        assert "best_loss" in e["metrics"]  # MetricsTracker's summary
    run = exp / "trials" / "baseline" / "run_0"
    assert (run / "artifacts" / "checkpoint-final").exists()  # CheckpointCallback


def test_the_top_level_configs_folder_is_the_quickstart(tmp_path: Path) -> None:
    """``expman run configs/`` works from the repository root."""
    done = subprocess.run(
        [sys.executable, "-m", "expman", "run", "configs/", "-w", str(tmp_path), "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "spec_quickstart" / "logs" / "events.jsonl").is_file()


async def test_await_experiment_run_works_in_async_code(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    root = make_experiment()
    result = await expman.Experiment(
        env=expman.Environment(workspace=workspace), config_dir_path=root
    ).run()
    assert result.status == "completed"


async def test_an_unawaited_run_inside_a_loop_fails_at_once(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    root = make_experiment()
    experiment = expman.Experiment(
        env=expman.Environment(workspace=workspace), config_dir_path=root
    )

    def sync_helper() -> object:
        return experiment.run()  # code that cannot await, inside the running loop

    with pytest.raises(RuntimeError, match=r"await experiment\.run"):
        sync_helper()
    assert not (workspace / "exp").exists()


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"execution": {"timeout": "soon"}}, "execution.timeout"),
        ({"setings": {}}, "setings"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"devices": "gpu"}, "devices"),
    ],
)
def test_an_environment_config_is_checked_like_env_yaml(config: dict, key: str) -> None:
    with pytest.raises(expman.ConfigError) as caught:
        expman.Environment(workspace="w", config=config)
    text = str(caught.value)
    assert "<Environment(config=...)>" in text
    assert key in text


def test_an_environment_config_accepts_what_env_yaml_does(tmp_path: Path) -> None:
    env = expman.Environment(
        config={
            "workspace": str(tmp_path / "ws"),
            "execution": {"timeout": None},
            "max_concurrency": 3,
        }
    )
    assert env.workspace == tmp_path / "ws"
    assert env.checked.execution == {"timeout": None, "max_concurrency": 3}
    assert yaml.safe_dump(env.config)  # kept as given


async def test_progress_can_be_shown_from_python(
    make_experiment: Callable[..., Path], workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a notebook shows by default (here asked for: plain lines, not a terminal)."""
    root = make_experiment(trials=[{"name": "a", "id": 1, "repeat": 2}])
    result = await expman.run_experiment(root, workspace=workspace, progress=True)
    out = capsys.readouterr().out
    assert result.status == "completed"
    assert "a/run_1" in out
    assert "experiment exp: completed" in out


def test_no_progress_is_shown_outside_a_notebook_by_default() -> None:
    from expman.experiment.start import in_notebook, progress_display

    assert not in_notebook()
    assert progress_display(None) is None
