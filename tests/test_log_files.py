"""LogFiles, the one writer of every log file: its handles belong to one thread at a time."""

from __future__ import annotations

import os
import random
from pathlib import Path

import anyio

from expman.workspace.logsink import LogFiles

ROUNDS = 30
FILES = 40
LINES = 10


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_closing_while_another_task_syncs_loses_nothing_and_leaks_nothing(
    tmp_path: Path,
) -> None:
    """The journal syncs a run's logs (write, then fsync, in a worker thread) whenever it
    makes a record durable; the flusher may be closing its handles at that moment.  Every
    line must still land once, nothing may raise, and no descriptor may stay open."""
    rng = random.Random(7)
    before = _open_descriptors()
    for round_ in range(ROUNDS):
        files = LogFiles(within=tmp_path)
        paths = [str(tmp_path / f"round{round_}" / f"f{i}.log") for i in range(FILES)]

        async def syncer(files: LogFiles = files, paths: list[str] = paths) -> None:
            for line in range(LINES):
                for path in paths:
                    files.emit(path, b'{"line":%d}\n' % line)
                await files.sync(paths)

        async with anyio.create_task_group() as tg:
            await tg.start(files.run)
            tg.start_soon(syncer)
            await anyio.sleep(rng.uniform(0, 0.01))
            await files.aclose()
        assert files.statistics().errors == 0
        for path in paths:
            assert Path(path).read_bytes() == b"".join(
                b'{"line":%d}\n' % line for line in range(LINES)
            )
    assert _open_descriptors() == before
