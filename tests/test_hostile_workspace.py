"""A workspace that cannot be turned against its owner: planted links, FIFOs, a full disk.

Each attack plants something in a real workspace in ``tmp_path`` that points at a
victim outside it, runs ``python -m expman`` as a user would, and checks that the
victim is byte-identical and that the command names the link in one line (no
traceback).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from expman.errors import WorkspaceError, WorkspaceLinkError
from expman.jsonlines import repair_tail
from expman.workspace.atomic import atomic_write, make_folders, remove_path
from expman.workspace.lock import ExperimentLock
from expman.workspace.logsink import LogFiles
from expman.workspace.safepaths import make_dirs, open_append, remove_tree

from .conftest import run_cli

EXP = Path("exp")
RUN = EXP / "trials" / "a" / "run_0"

#: A pipeline that saves checkpoints (a file per save) and logs a line per epoch.
CHECKPOINTED = textwrap.dedent(
    """
    from pathlib import Path

    import structlog

    from expman import Pipeline


    class Saver(Pipeline):
        def __init__(self, epochs=3, **params):
            super().__init__(**params)
            self.epochs, self.epoch = epochs, None

        def run(self, ctx):
            for epoch in range(ctx.start_epoch, self.epochs):
                self.epoch = epoch
                structlog.get_logger().info("epoch", n=epoch)
                if ctx.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)}):
                    break
            return {"done": 1}

        def save_checkpoint(self, path):
            Path(path).write_text(str(self.epoch))
    """
)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the user's, outside the workspace, that nothing may change."""
    path = tmp_path / "outside" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(b"precious\nbytes, no newline at the end")
    return path


@pytest.fixture
def victim_dir(tmp_path: Path) -> Path:
    """A folder of the user's, outside the workspace, with files nothing may touch."""
    path = tmp_path / "outside_dir"
    path.mkdir()
    (path / "keep.txt").write_text("mine")
    (path / "checkpoint-0").write_text("not expman's")
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def saver_experiment(make_experiment: Callable[..., Path], **callback: Any) -> Path:
    root = make_experiment(
        base={
            "pipeline": {"type": "saver:Saver", "epochs": 3},
            "callbacks": [{"type": "CheckpointCallback", **callback}],
        }
    )
    (root / "saver.py").write_text(CHECKPOINTED)
    return root


def assert_refused(proc: subprocess.CompletedProcess[str], link: Path, target: Path) -> None:
    """Non-zero exit, one message naming the link and what it points at, no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout
    assert f"{link} is a symbolic link to {target}" in proc.stderr, proc.stderr


def plant(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    elif link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(target)


# -- planted before the experiment folder's first run ------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        ".lock",
        "logs/experiment.log",
        "logs/metrics.log",
        "logs/events.jsonl",
        "configs/resolved.yaml",
        "configs/experiment.yaml",
        "trials/logs/trials.log",
        "trials/a/logs/trial.log",
        "trials/a/configs/trial.yaml",
        "trials/a/run_0/logs/run.log",
        "trials/a/run_0/logs/metrics.log",
        "trials/a/run_0/configs/run.yaml",
    ],
)
def test_a_file_planted_as_a_link_is_refused_and_its_target_kept(
    make_experiment: Callable[..., Path], workspace: Path, victim: Path, name: str
) -> None:
    """A link where expman writes a file: the run is refused, the link named, the victim intact."""
    root = make_experiment()
    before = victim.read_bytes()
    link = workspace / EXP / name
    plant(link, victim)
    proc = run_cli("run", str(root), "-w", str(workspace))
    assert_refused(proc, link, victim)
    assert victim.read_bytes() == before
    assert link.is_symlink()


@pytest.mark.parametrize(
    "name",
    ["logs", "configs", "artifacts", "trials", "trials/a", "trials/a/run_0", "trials/a/run_0/logs"],
)
def test_a_folder_planted_as_a_link_is_refused_and_nothing_lands_outside(
    make_experiment: Callable[..., Path], workspace: Path, victim_dir: Path, name: str
) -> None:
    """A link where expman makes a folder: refused, named; the folder it points at unchanged."""
    root = saver_experiment(make_experiment, save_top_k=1)
    before = snapshot(victim_dir)
    link = workspace / EXP / name
    plant(link, victim_dir)
    proc = run_cli("run", str(root), "-w", str(workspace))
    assert_refused(proc, link, victim_dir)
    assert snapshot(victim_dir) == before
    assert sorted(os.listdir(victim_dir)) == ["checkpoint-0", "keep.txt"]


def test_a_linked_artifacts_folder_gets_no_checkpoint_and_loses_no_file(
    make_experiment: Callable[..., Path], workspace: Path, victim_dir: Path
) -> None:
    """A run's artifacts/ linked outside: nothing written or deleted there; resumable after."""
    root = saver_experiment(make_experiment, save_top_k=1)
    before = snapshot(victim_dir)
    link = workspace / RUN / "artifacts"
    plant(link, victim_dir)
    proc = run_cli("run", str(root), "-w", str(workspace))
    assert_refused(proc, link, victim_dir)
    assert snapshot(victim_dir) == before
    link.unlink()  # the owner removes it: the run that was refused runs again, whole
    proc = run_cli("run", str(root), "-w", str(workspace))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "a/run_0: completed" in proc.stdout
    assert (workspace / RUN / "artifacts" / "checkpoint-final").is_file()
    assert snapshot(victim_dir) == before


# -- planted in an experiment folder that has run already (resume) ------------------------


@pytest.mark.parametrize("name", [".lock", "logs/experiment.log", "logs/events.jsonl"])
def test_a_link_planted_in_a_finished_experiment_is_refused_on_resume(
    make_experiment: Callable[..., Path], workspace: Path, victim: Path, name: str
) -> None:
    """Resuming through a link planted since the last run: refused; journal and victim intact."""
    root = make_experiment(trials=[{"name": "a", "id": 1, "repeat": 2}])
    assert run_cli("run", str(root), "-w", str(workspace)).returncode == 0
    before = victim.read_bytes()
    link = workspace / EXP / name
    plant(link, victim)
    proc = run_cli("run", str(root), "-w", str(workspace))
    assert_refused(proc, link, victim)
    assert victim.read_bytes() == before


@pytest.mark.parametrize("name", [".lock", "logs/events.jsonl", "trials/a/run_0/logs/run.log"])
def test_a_dangling_link_never_creates_its_target(
    make_experiment: Callable[..., Path], workspace: Path, tmp_path: Path, name: str
) -> None:
    """A link to a path that does not exist yet: refused, and nothing is created there."""
    root = make_experiment()
    target = tmp_path / "outside" / "created-by-expman"
    target.parent.mkdir()
    link = workspace / EXP / name
    plant(link, target)
    proc = run_cli("run", str(root), "-w", str(workspace))
    assert_refused(proc, link, target)
    assert not target.exists()


@pytest.mark.slow
def test_the_report_is_never_written_through_a_planted_link(
    make_experiment: Callable[..., Path], workspace: Path, victim: Path
) -> None:
    """``expman report`` into the experiment folder: a link at report.html is refused."""
    pytest.importorskip("matplotlib")
    root = make_experiment()
    assert run_cli("run", str(root), "-w", str(workspace)).returncode == 0
    before = victim.read_bytes()
    link = workspace / EXP / "report.html"
    plant(link, victim)
    proc = run_cli("report", str(workspace / EXP))
    assert_refused(proc, link, victim)
    assert victim.read_bytes() == before


def test_a_hard_link_to_an_outside_file_is_refused(
    make_experiment: Callable[..., Path], workspace: Path, victim: Path
) -> None:
    """A log file that is a second name of the user's file: refused, the file untouched."""
    root = make_experiment()
    assert run_cli("run", str(root), "-w", str(workspace)).returncode == 0
    log = workspace / EXP / "logs" / "experiment.log"
    log.unlink()
    os.link(victim, log)
    before = victim.read_bytes()
    proc = run_cli("run", str(root), "-w", str(workspace))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"{log} is a hard link" in proc.stderr, proc.stderr
    assert victim.read_bytes() == before


@pytest.mark.parametrize("name", ["logs/experiment.log", "logs/events.jsonl", ".lock"])
def test_a_fifo_planted_as_a_log_never_blocks_the_run(
    make_experiment: Callable[..., Path], workspace: Path, name: str
) -> None:
    """A named pipe where a log goes: an error at once, not a run waiting for a reader."""
    root = make_experiment()
    fifo = workspace / EXP / name
    fifo.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo)
    proc = run_cli("run", str(root), "-w", str(workspace), timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"{fifo} is not a plain file" in proc.stderr, proc.stderr


def test_status_on_a_fifo_journal_answers_at_once(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """``expman status`` of a folder whose events.jsonl is a FIFO: a message, no hang."""
    root = make_experiment()
    assert run_cli("run", str(root), "-w", str(workspace)).returncode == 0
    journal = workspace / EXP / "logs" / "events.jsonl"
    journal.unlink()
    os.mkfifo(journal)
    proc = run_cli("status", str(workspace / EXP), timeout=30)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"{journal} is not a plain file" in proc.stderr, proc.stderr


def test_links_above_the_experiment_folder_are_the_owners_choice(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """The workspace (or the experiment folder itself) may be a link: that is not planted."""
    root = make_experiment()
    real = tmp_path / "big_disk"
    (real / "exp").mkdir(parents=True)
    workspace = tmp_path / "ws_link"
    workspace.symlink_to(real)
    proc = run_cli("run", str(root), "-w", str(workspace))
    assert proc.returncode == 0, proc.stderr
    assert (real / RUN / "logs" / "run.log").is_file()
    moved = tmp_path / "ws2"
    moved.mkdir()
    (moved / "exp").symlink_to(real / "exp")
    proc = run_cli("run", str(root), "-w", str(moved))
    assert proc.returncode == 0, proc.stderr


# -- the primitives ----------------------------------------------------------------------


class TestPrimitives:
    """safepaths and the helpers built on it, one behaviour per test."""

    def test_open_append_refuses_a_link_in_a_folder_on_the_way(
        self, tmp_path: Path, victim_dir: Path
    ) -> None:
        """A link between the experiment folder and the file: WorkspaceLinkError naming it."""
        (tmp_path / "exp").mkdir()
        plant(tmp_path / "exp" / "logs", victim_dir)
        with pytest.raises(WorkspaceLinkError, match="logs is a symbolic link to"):
            open_append(tmp_path / "exp" / "logs" / "x.log", tmp_path / "exp")
        assert not (victim_dir / "x.log").exists()

    def test_make_dirs_refuses_a_linked_folder(self, tmp_path: Path, victim_dir: Path) -> None:
        """An existing name on the way must be a real folder."""
        plant(tmp_path / "exp" / "trials", victim_dir)
        with pytest.raises(WorkspaceLinkError):
            make_dirs(tmp_path / "exp" / "trials" / "a", tmp_path / "exp")
        assert not (victim_dir / "a").exists()

    def test_make_folders_refuses_a_linked_subfolder(
        self, tmp_path: Path, victim_dir: Path
    ) -> None:
        """A run folder's artifacts/ that is a link: refused, never used."""
        make_folders(tmp_path / "run", "logs", "artifacts")
        plant(tmp_path / "run" / "artifacts", victim_dir)
        with pytest.raises(WorkspaceLinkError):
            make_folders(tmp_path / "run", "logs", "artifacts", within=tmp_path)

    def test_remove_tree_never_deletes_through_a_link(
        self, tmp_path: Path, victim_dir: Path
    ) -> None:
        """Deleting a checkpoint that is a link, or under a linked folder: refused."""
        before = snapshot(victim_dir)
        root = tmp_path / "artifacts"
        root.mkdir()
        plant(root / "checkpoint-0", victim_dir)
        with pytest.raises(WorkspaceLinkError):
            remove_tree(root / "checkpoint-0", root)
        plant(tmp_path / "linked", victim_dir)
        with pytest.raises(WorkspaceLinkError):
            remove_tree(tmp_path / "linked" / "checkpoint-0", tmp_path)
        assert snapshot(victim_dir) == before

    def test_remove_tree_refuses_paths_outside_its_root(
        self, tmp_path: Path, victim_dir: Path
    ) -> None:
        """A path outside the root (absolute, or with ``..``) is never deleted."""
        root = tmp_path / "artifacts"
        root.mkdir()
        with pytest.raises(WorkspaceError, match="not inside"):
            remove_tree(victim_dir / "keep.txt", root)
        with pytest.raises(WorkspaceError, match="not inside"):
            remove_tree(root / ".." / "outside_dir", root)
        assert (victim_dir / "keep.txt").exists()

    def test_remove_tree_removes_a_real_folder_and_only_links_inside_it(
        self, tmp_path: Path, victim_dir: Path
    ) -> None:
        """A real checkpoint folder holding a link: the folder goes, the link's target stays."""
        root = tmp_path / "artifacts"
        (root / "checkpoint-3").mkdir(parents=True)
        (root / "checkpoint-3" / "w").write_text("x")
        (root / "checkpoint-3" / "inner").symlink_to(victim_dir)
        before = snapshot(victim_dir)
        assert remove_tree(root / "checkpoint-3", root)
        assert not (root / "checkpoint-3").exists()
        assert snapshot(victim_dir) == before
        assert not remove_tree(root / "checkpoint-3", root)

    def test_remove_path_removes_a_link_not_its_target(
        self, tmp_path: Path, victim_dir: Path
    ) -> None:
        """remove_path (temporary files) unlinks a link itself, never what it points at."""
        plant(tmp_path / "tmp", victim_dir)
        remove_path(tmp_path / "tmp")
        assert not (tmp_path / "tmp").is_symlink()
        assert (victim_dir / "keep.txt").exists()

    def test_atomic_write_refuses_a_link_at_its_name(self, tmp_path: Path, victim: Path) -> None:
        """A snapshot's name that is a link: refused, not replaced, the target unchanged."""
        before = victim.read_bytes()
        plant(tmp_path / "run.yaml", victim)
        with pytest.raises(WorkspaceLinkError):
            atomic_write(tmp_path / "run.yaml", b"x: 1\n", make_parent=False)
        assert victim.read_bytes() == before
        assert (tmp_path / "run.yaml").is_symlink()
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    def test_repair_tail_never_truncates_through_a_link(self, tmp_path: Path, victim: Path) -> None:
        """A torn-looking target (no final newline) behind a link is never cut."""
        before = victim.read_bytes()
        plant(tmp_path / "events.jsonl", victim)
        with pytest.raises(WorkspaceLinkError):
            repair_tail(tmp_path / "events.jsonl")
        assert victim.read_bytes() == before

    def test_repair_tail_on_a_descriptor_cuts_only_the_torn_line(self, tmp_path: Path) -> None:
        """Through the descriptor that appends: whole lines stay, the fragment goes."""
        path = tmp_path / "x.jsonl"
        path.write_bytes(b'{"a":1}\n' * 1000 + b'{"b":')
        fd = open_append(path, tmp_path)
        try:
            assert repair_tail(fd)
            assert not repair_tail(fd)
        finally:
            os.close(fd)
        assert path.read_bytes() == b'{"a":1}\n' * 1000

    async def test_log_files_outside_the_experiment_folder_are_the_callers_own(
        self, tmp_path: Path
    ) -> None:
        """A LogFiles path outside ``within`` is written as asked (not refused, no crash)."""
        files = LogFiles(within=tmp_path / "exp")
        files.emit(str(tmp_path / "elsewhere" / "x.log"), b'{"a":1}\n')
        await files.flush()
        assert (tmp_path / "elsewhere" / "x.log").read_bytes() == b'{"a":1}\n'
        assert files.statistics().errors == 0

    def test_the_lock_never_truncates_a_linked_target(self, tmp_path: Path, victim: Path) -> None:
        """ExperimentLock on a planted .lock link: an error naming it; the target intact."""
        before = victim.read_bytes()
        plant(tmp_path / "exp" / ".lock", victim)
        with pytest.raises(WorkspaceLinkError, match=r"\.lock is a symbolic link"):
            ExperimentLock(tmp_path / "exp" / ".lock").acquire()
        assert victim.read_bytes() == before


# -- a full disk ---------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted in tmp_path (skips where mounting is not allowed)."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Write a filler file until the disk is full."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0")
    finally:
        os.close(fd)


def test_starting_on_a_full_disk_is_one_message_naming_the_file(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """No space left at the lock: exit non-zero, the message names the path, no traceback."""
    root = make_experiment()
    with small_disk(tmp_path, "256k") as disk:
        fill(disk)
        proc = run_cli("run", str(root), "-w", str(disk / "ws"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "No space left on device" in proc.stderr, proc.stderr
    assert str(disk / "ws" / "exp") in proc.stderr, proc.stderr


#: A pipeline that logs long lines until its disk is full, then frees some space (a
#: ballast file it wrote first) and logs on: a line written after a torn one would then
#: land in the middle of a log.
CHATTY = textwrap.dedent(
    """
    import os
    import time

    import anyio
    import structlog

    from expman import Pipeline


    class Chatty(Pipeline):
        def __init__(self, epochs=400, **params):
            super().__init__(**params)
            self.epochs = epochs

        async def run(self, ctx):
            log = structlog.get_logger()
            ballast = ctx.artifacts / "ballast"
            with open(ballast, "wb") as f:
                f.write(b"b" * 128 * 1024)
            freed_at = None
            for epoch in range(self.epochs):
                log.info("chatter", text="x" * 3000, epoch=epoch)
                await ctx.epoch_end(epoch, {"loss": 1.0, "pad": "y" * 2000})
                await anyio.sleep(0.002)
                free = os.statvfs(ctx.artifacts).f_bavail
                if freed_at is None and free == 0:
                    await anyio.sleep(0.3)  # the log writer meets the full disk
                    ballast.unlink()
                    freed_at = epoch
                if freed_at is not None and epoch > freed_at + 20:
                    break
            return {}
    """
)


def test_a_disk_filling_up_mid_run_leaves_only_whole_json_lines(
    make_experiment: Callable[..., Path], tmp_path: Path
) -> None:
    """Every log line is valid JSON after the disk filled mid-run; the run stops with a message."""
    root = make_experiment(
        base={"pipeline": {"type": "chatty:Chatty"}},
        trials=[{"name": "a", "id": 1, "repeat": 2}],
    )
    (root / "chatty.py").write_text(CHATTY)
    with small_disk(tmp_path, "1m") as disk:
        proc = run_cli("run", str(root), "-w", str(disk / "ws"), "-j", "2", timeout=90)
        assert proc.returncode != 0, proc.stdout
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "No space left on device" in proc.stderr, proc.stderr
        logs = [p for p in (disk / "ws").rglob("*") if p.suffix in (".log", ".jsonl")]
        assert logs
        for path in logs:
            data = path.read_bytes()
            for number, line in enumerate(data.split(b"\n")[:-1], 1):
                try:
                    json.loads(line)
                except ValueError:
                    pytest.fail(f"{path}:{number} is not JSON: {line[:80]!r}")
            # A torn tail (no newline) is allowed only at the very end: never in the middle.


async def test_a_write_torn_by_a_full_disk_is_cut_back_and_nothing_follows_it(
    tmp_path: Path,
) -> None:
    """LogFiles on a real full tmpfs: the half-written batch is cut; later lines never land."""
    with small_disk(tmp_path, "64k") as disk:
        files = LogFiles(within=disk)
        path = str(disk / "logs" / "run.log")
        files.emit(path, b'{"first":1}\n')
        await files.flush()
        fill(disk)  # the log's first page still has room: the next write is torn
        files.emit(path, b'{"big":"' + b"x" * 6000 + b'"}\n')
        await files.flush()
        assert files.statistics().errors == 1
        (disk / "filler").unlink()  # space again: a line now would follow the fragment
        files.emit(path, b'{"after":1}\n')
        await files.flush()
        assert Path(path).read_bytes() == b'{"first":1}\n'
        assert files.statistics().dropped == 1
