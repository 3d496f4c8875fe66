"""The README's commands, run in the order it shows them, from a fresh folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]

#: The README's commands, in its order (each must stand in the README as written).
SEQUENCE = [
    "expman run examples/quickstart",
    "expman run examples/quickstart lr=0.1 execution.max_retries=2 --fresh",
    "expman status workspace/quickstart",
    "expman status workspace",
    "expman results workspace/quickstart",
    "expman results examples/quickstart",
]


@pytest.mark.slow
def test_the_readme_commands_work_in_the_order_shown(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    shutil.copytree(
        ROOT / "examples" / "quickstart",
        tmp_path / "examples" / "quickstart",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for command in SEQUENCE:
        assert command in readme, f"the README no longer shows {command!r}"
        done = run_cli(*command.split()[1:], cwd=tmp_path, timeout=120)
        assert done.returncode == 0, f"{command}: {done.stderr}"
