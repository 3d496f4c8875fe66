"""The `expman` command as a user runs it: real subprocesses, exit codes, output."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_run_succeeds_with_exit_0_and_prints_a_summary(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """All runs completed: exit 0, a summary naming each run and the workspace."""
    root = make_experiment(trials=[{"name": "a", "id": 1, "repeat": 2}])
    proc = run_cli("run", str(root), "-w", str(workspace), "-j", "2")
    assert proc.returncode == 0, proc.stderr
    assert "a/run_0: completed" in proc.stdout
    assert "a/run_1: completed" in proc.stdout
    assert str(workspace / "exp") in proc.stdout


def test_run_with_a_failed_run_exits_1(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Some run failed: exit 1, the error named in the summary."""
    root = make_experiment(
        base={"pipeline": {"type": "pipelines:Sleeper", "fail_on": 0}},
        trials=[{"name": "a", "id": 1, "repeat": 2}],
    )
    proc = run_cli("run", str(root), "-w", str(workspace))
    assert proc.returncode == 1
    assert "ValueError: boom in repeat 0" in proc.stdout


def test_overrides_reach_the_run_config(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """KEY=VALUE arguments, before or after options, override settings."""
    root = make_experiment()
    proc = run_cli("run", str(root), "settings.lr=0.25", "-w", str(workspace), "tag=x")
    assert proc.returncode == 0, proc.stderr
    run_yaml = (workspace / "exp" / "trials" / "a" / "run_0" / "configs" / "run.yaml").read_text()
    assert "lr: 0.25" in run_yaml
    assert "tag: x" in run_yaml


def test_validate_prints_the_plan_and_runs_nothing(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """`expman validate` lists trials and seeds, exits 0, and creates no workspace."""
    root = make_experiment(trials=[{"name": "a", "id": 1, "repeat": 2}])
    proc = run_cli("validate", str(root), "-w", str(workspace))
    assert proc.returncode == 0, proc.stderr
    assert "trial a (id 1): repeat 2" in proc.stdout
    assert "run_1: seed" in proc.stdout
    assert not workspace.exists()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    """No command, an unknown option or a missing folder: exit 2 with one message."""
    assert run_cli().returncode == 2
    proc = run_cli("run", str(tmp_path), "--bogus")
    assert proc.returncode == 2
    assert "unrecognized arguments: --bogus" in proc.stderr
    proc = run_cli("run", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_changed_config_is_refused_on_resume(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """Re-running with a different setting names the changed key and exits 2."""
    root = make_experiment(trials=[{"name": "a", "id": 1}])
    assert run_cli("run", str(root), "-w", str(workspace)).returncode == 0
    proc = run_cli("run", str(root), "-w", str(workspace), "lr=0.5")
    assert proc.returncode == 2
    assert "changed keys: settings.lr" in proc.stderr


def test_quickstart_example_runs(tmp_path: Path) -> None:
    """The README's first command: the quickstart example runs and prints a summary."""
    proc = run_cli("run", str(ROOT / "examples" / "quickstart"), "-w", str(tmp_path / "ws"))
    assert proc.returncode == 0, proc.stderr
    assert "experiment quickstart: completed (6 completed)" in proc.stdout
    journal = tmp_path / "ws" / "quickstart" / "logs" / "events.jsonl"
    types = [json.loads(line)["type"] for line in journal.read_text().splitlines()]
    assert types.count("RunFinished") == 6


def test_fresh_keeps_the_old_folder_and_starts_anew(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """--fresh renames the previous experiment folder (never deletes it) and reruns all."""
    root = make_experiment(trials=[{"name": "a", "id": 1}])
    assert run_cli("run", str(root), "-w", str(workspace)).returncode == 0
    proc = run_cli("run", str(root), "-w", str(workspace), "lr=0.5", "--fresh")
    assert proc.returncode == 0, proc.stderr
    folders = sorted(p.name for p in workspace.iterdir())
    assert folders[0] == "exp"
    assert len(folders) == 2
    assert folders[1].startswith("exp.")
    assert (workspace / folders[1] / "logs" / "events.jsonl").is_file()
    assert (
        "lr: 0.5"
        in (workspace / "exp" / "trials" / "a" / "run_0" / "configs" / "run.yaml").read_text()
    )


def test_accept_changes_resumes_with_the_new_config(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """--accept-changes reruns the trials whose config changed, in the same folder."""
    root = make_experiment(trials=[{"name": "a", "id": 1}])
    assert run_cli("run", str(root), "-w", str(workspace)).returncode == 0
    proc = run_cli("run", str(root), "-w", str(workspace), "lr=0.5", "--accept-changes")
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in workspace.iterdir()] == ["exp"]
    journal = (workspace / "exp" / "logs" / "events.jsonl").read_text()
    assert journal.count('"type":"RunFinished"') == 2


def test_json_output_stays_json_when_pipelines_print(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """With --json, a pipeline's print() goes to stderr; stdout holds JSON lines only."""
    root = make_experiment(base={"pipeline": {"type": "printer:Printer"}})
    (root / "printer.py").write_text(
        "from expman import Pipeline\n\n\n"
        "class Printer(Pipeline):\n"
        "    def run(self, ctx):\n"
        "        print('hello from the pipeline')\n"
        "        ctx.epoch_end(0, {'loss': 1.0})\n"
        "        return {}\n"
    )
    proc = run_cli("run", str(root), "-w", str(workspace), "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines
    assert all(json.loads(line)["type"] for line in lines)
    assert "hello from the pipeline" in proc.stderr
