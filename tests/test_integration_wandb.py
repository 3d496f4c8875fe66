"""The W&B integration, offline and disabled, read back from the run folders W&B writes.

What W&B holds is read from each run's ``.wandb`` file (wandb's own protobuf
records: the run record with its group, name, config and branch point, the history
rows) and its wandb-core log; nothing of W&B is faked.  A resumed offline run is a
second folder of the same id whose branch point says where ``wandb sync`` rewinds
it: :func:`shown` replays the folders that way and must give each run's history.
"""

from __future__ import annotations

import json
import os
import random
import signal
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import expman
from expman.config import IntegrationSpec
from expman.integrations.base import ExportContext, ExportRun, Point
from expman.integrations.wandb import TransactionLog, WandbExporter
from expman.jsonlines import read_lines
from tests.conftest import run_cli, write_yaml
from tests.test_exact_resume import CHAIN
from tests.test_integrations import cut_journal, history, runs_of, same
from tests.test_resume import start_cli, wait_for

Make = Callable[..., Path]

#: Chains x like CHAIN, and fails once, at epoch 5 of its first attempt.
FLAKY = CHAIN + textwrap.dedent(
    """

    class Flaky(Chain):
        def run(self, ctx):
            if ctx.attempt == 1:
                for epoch in range(ctx.start_epoch, 5):
                    self.x = (self.x * 1103515245 + ctx.seed + epoch) % 2**31
                    ctx.epoch_end(epoch, {"x": self.x, "loss": 1.0 / (epoch + 1)})
                raise RuntimeError("a flaky node")
            return super().run(ctx)
    """
)


@pytest.fixture(autouse=True)
def _wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B's own settings and caches in tmp_path; no key, so nothing could go online."""
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


@dataclass
class Segment:
    """One folder W&B wrote for a run: one session's part of it."""

    folder: Path
    run: Any  # wandb's RunRecord
    config: dict[str, Any]
    history: list[tuple[int, dict[str, float]]]
    exit_code: int | None


def segments(wandb_dir: Path) -> dict[str, list[Segment]]:
    """Every run id's folders, in the order they were written."""
    out: dict[str, list[Segment]] = {}
    for folder in sorted(wandb_dir.glob("wandb/offline-run-*")):
        (path,) = folder.glob("run-*.wandb")
        run, config, rows, exit_code = None, {}, [], None
        for record in TransactionLog(path).records():
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
                config = {i.key: json.loads(i.value_json) for i in run.config.update}
            elif kind == "history":
                values = {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in record.history.item
                }
                rows.append(
                    (
                        record.history.step.num,
                        {k: float(v) for k, v in values.items() if not k.startswith("_")},
                    )
                )
            elif kind == "exit":
                exit_code = record.exit.exit_code
        assert run is not None, folder
        out.setdefault(run.run_id, []).append(Segment(folder, run, config, rows, exit_code))
    for parts in out.values():
        parts.sort(key=lambda s: (s.run.start_time.seconds, s.run.start_time.nanos))
    return out


def shown(parts: list[Segment]) -> dict[int, dict[str, float]]:
    """The run's history as ``wandb sync`` of its folders leaves it on the server."""
    series: dict[int, dict[str, float]] = {}
    for part in parts:
        branch = part.run.branch_point
        if branch.run:
            assert branch.run == part.run.run_id  # a rewind of itself, never a fork
            series = {e: m for e, m in series.items() if e <= branch.value}
        for step, metrics in part.history:
            assert step not in series, f"step {step} twice in {part.folder.name}"
            series[step] = metrics
    return series


def bound(ws: Path) -> dict[tuple[str, int], set[str]]:
    """The W&B ids the journal bound each run to."""
    out: dict[tuple[str, int], set[str]] = {}
    for r in read_lines(ws / "exp" / "logs" / "events.jsonl"):
        if r["type"] == "IntegrationBound" and r["integration"] == "wandb":
            out.setdefault((r["trial"], r["repeat"]), set()).add(r["external"])
    return out


def step_warnings(wandb_dir: Path) -> list[str]:
    """wandb-core's complaints about steps that do not increase, in every run's log."""
    return [
        line
        for log in wandb_dir.glob("wandb/offline-run-*/logs/debug-internal.log")
        for line in log.read_text().splitlines()
        if "ignoring partial history" in line or "step must" in line.lower()
    ]


def chatter(output: str) -> list[str]:
    """Lines of W&B's own on a terminal (banner, sync hints): all but expman's summary."""
    return [
        line
        for line in output.splitlines()
        if "wandb" in line.lower() and not line.strip().startswith("integration wandb:")
    ]


def wandb_services() -> list[int]:
    """The wandb-core processes this process started that are still alive."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"wandb-core" in cmdline:
            found.append(int(proc.name))
    return found


def make_chain(make_experiment: Make, entry: dict[str, Any], **pipeline: Any) -> Path:
    root = make_experiment(
        experiment={
            "name": "exp",
            "id": 1,
            "settings": {"lr": 0.1},
            "integrations": [{"type": "wandb", **entry}],
        },
        base={
            "pipeline": {"type": "chain:Chain", "epochs": 4, "seconds": 0.02, **pipeline},
            "callbacks": [
                {"type": "CheckpointCallback", "interval": 2, "save_top_k": 1, "save_last": True}
            ],
        },
        trials=[
            {"name": "a", "id": 1, "repeat": 2, "settings": {"lr": 0.2}},
            {"name": "b", "id": 2, "repeat": 2},
        ],
        env={"execution": {"max_concurrency": 4}},
    )
    (root / "chain.py").write_text(CHAIN)
    return root


def test_an_offline_sweep_is_one_wandb_run_per_run_grouped_by_trial(
    make_experiment: Make, tmp_path: Path
) -> None:
    """Offline, each run is one W&B run of its trial's group with its config, tags and
    every epoch of its metrics.log as a step; W&B says nothing on the terminal."""
    root = make_chain(make_experiment, {"mode": "offline", "tags": ["sweep", "t1"]})
    ws = tmp_path / "ws"
    done = run_cli("run", str(root), "-w", str(ws))
    assert done.returncode == 0, done.stderr
    assert not chatter(done.stdout + done.stderr)
    assert "integration wandb: 32 values sent" in done.stderr + done.stdout

    found = segments(ws)
    ids = bound(ws)
    assert len(found) == 4
    assert sorted(ids) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    for run in runs_of(ws):
        trial, repeat = run.parent.name, int(run.name.removeprefix("run_"))
        (run_id,) = ids[(trial, repeat)]
        (part,) = found[run_id]  # one folder: nothing was resumed
        assert part.run.run_group == trial
        assert part.run.display_name == f"{trial}/run_{repeat}"
        assert part.run.job_type == "exp"
        assert list(part.run.tags) == ["sweep", "t1"]
        assert part.config["lr"] == (0.2 if trial == "a" else 0.1)
        assert part.config["pipeline"]["epochs"] == 4
        assert part.config["expman"]["trial"] == trial
        assert part.config["expman"]["repeat"] == repeat
        finished = next(
            r
            for r in read_lines(ws / "exp" / "logs" / "events.jsonl")
            if r["type"] == "RunStarted" and (r["trial"], r["repeat"]) == (trial, repeat)
        )
        assert part.config["expman"]["seed"] == finished["seed"]
        assert [step for step, _ in part.history] == [0, 1, 2, 3]
        assert same(shown(found[run_id]), history(run))
        assert part.exit_code == 0
    assert not step_warnings(ws)


def test_after_kill_9_a_run_resumes_its_wandb_run_and_rewinds_what_it_trains_again(
    make_experiment: Make, tmp_path: Path
) -> None:
    """Killed mid-run and resumed, each run keeps its W&B id; the resumed folder rewinds
    to the checkpoint the run resumed from, so every epoch shows once and in order."""
    root = make_chain(make_experiment, {"mode": "offline"}, epochs=12, seconds=0.25)
    ws = tmp_path / "ws"
    proc = start_cli(root, ws, "--quiet")
    journal = ws / "exp" / "logs" / "events.jsonl"

    def checkpointed_and_beyond() -> bool:
        """Every run exported up to a checkpoint, and one has an epoch past its last
        checkpoint in its W&B folder: the resume must replace that one."""
        if not journal.exists():
            return False
        records = list(read_lines(journal))
        marks = {
            (r["trial"], r["repeat"])
            for r in records
            if r["type"] == "IntegrationWatermark" and r["epoch"] >= 1
        }
        if len(marks) < 4:
            return False
        saved: dict[tuple[str, int], int] = {}
        for r in records:
            if r["type"] == "CheckpointStaged":
                key = (r["trial"], r["repeat"])
                saved[key] = max(saved.get(key, -1), r["epoch"])
        for key, (run_id,) in bound(ws).items():
            for path in ws.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"):
                if TransactionLog(path).last_step() > saved.get(key, -1):
                    return True
        return False

    try:
        wait_for(checkpointed_and_beyond, timeout=60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = bound(ws)
    trained = {run: len(history(run)) for run in runs_of(ws)}
    assert all(n < 12 for n in trained.values()), "the kill came after the end"

    done = run_cli("run", str(root), "-w", str(ws), "--quiet")
    assert done.returncode == 0, done.stderr
    assert not chatter(done.stdout + done.stderr)
    ids = bound(ws)
    assert ids == before  # the same W&B run ids, bound once
    found = segments(ws)
    assert len(found) == 4
    rewound = 0
    for run in runs_of(ws):
        trial, repeat = run.parent.name, int(run.name.removeprefix("run_"))
        (run_id,) = ids[(trial, repeat)]
        parts = found[run_id]
        assert len(parts) == 2, [p.folder.name for p in parts]
        first, resumed = parts
        assert resumed.run.branch_point.run == run_id
        # The resumed session rewinds to the last epoch it does not train again...
        starts = [
            r["start_epoch"]
            for r in read_lines(ws / "exp" / "logs" / "events.jsonl")
            if r["type"] == "RunStarted" and (r["trial"], r["repeat"]) == (trial, repeat)
        ]
        assert resumed.run.branch_point.value <= starts[-1] - 1
        # ...and what the killed one sent past it is replaced, not doubled.
        rewound += any(step > resumed.run.branch_point.value for step, _ in first.history)
        assert same(shown(parts), history(run))
        assert sorted(history(run)) == list(range(12))
        assert resumed.exit_code == 0
    assert rewound, "no orphaned epoch reached W&B before the kill: the rewind is not exercised"
    assert not step_warnings(ws)


async def test_a_retried_attempt_rewinds_the_same_wandb_run_within_the_session(
    make_experiment: Make, tmp_path: Path
) -> None:
    """An attempt that fails after its checkpoint and is retried in the same session
    rewinds its W&B run to the checkpoint: the epoch it sent past it is replaced."""
    root = make_chain(make_experiment, {"mode": "offline"}, type="chain:Flaky", epochs=8)
    (root / "chain.py").write_text(FLAKY)
    write_yaml(root / "trials.yaml", [{"name": "a", "id": 1, "repeat": 1}])
    write_yaml(root / "env.yaml", {"execution": {"max_retries": 1}})
    result = await expman.run_experiment(root, workspace=tmp_path / "ws")
    assert result.ok, result.failed
    ((run_id,),) = bound(tmp_path / "ws").values()
    first, retried = segments(tmp_path / "ws")[run_id]
    assert [step for step, _ in first.history] == [0, 1, 2, 3, 4]
    assert first.exit_code == 1
    assert retried.run.branch_point.value == 3  # the checkpoint at epoch 3
    assert [step for step, _ in retried.history] == [4, 5, 6, 7]
    (run,) = runs_of(tmp_path / "ws")
    assert same(shown([first, retried]), history(run))
    assert not step_warnings(tmp_path / "ws")


async def test_mode_disabled_writes_nothing_and_fails_nothing(
    make_experiment: Make, tmp_path: Path
) -> None:
    """mode: disabled runs the experiment as without it: no W&B folder, nothing lost,
    and no W&B service left running in the process."""
    root = make_chain(make_experiment, {"mode": "disabled"})
    result = await expman.run_experiment(root, workspace=tmp_path / "ws")
    assert result.ok, result.failed
    assert result.integrations["wandb"]["lost"] == 0
    assert not [p for p in tmp_path.rglob("*wandb*") if "wandb-home" not in str(p)]
    assert not wandb_services()


async def test_the_wandb_service_is_shut_down_when_the_session_ends(
    make_experiment: Make, tmp_path: Path
) -> None:
    """In process (the API), the offline runs are written and no wandb-core process of
    ours outlives the experiment."""
    root = make_chain(make_experiment, {"mode": "offline"})
    result = await expman.run_experiment(root, workspace=tmp_path / "ws")
    assert result.ok, result.failed
    assert result.integrations["wandb"]["sent"] == 32
    assert len(segments(tmp_path / "ws")) == 4
    assert not wandb_services()


def test_online_without_a_key_is_refused_at_once_and_the_runs_go_on(
    make_experiment: Make, tmp_path: Path
) -> None:
    """Online with no API key: no login prompt, no retry loop; the runs complete and
    the summary counts their values lost with the reason."""
    root = make_chain(make_experiment, {"mode": "online"})
    ws = tmp_path / "ws"
    done = run_cli("run", str(root), "-w", str(ws), "--quiet", timeout=60)
    assert done.returncode == 0, done.stderr
    journal = read_lines(ws / "exp" / "logs" / "events.jsonl")
    (report,) = [r for r in journal if r["type"] == "IntegrationReport"]
    assert report["lost"] == 32
    assert report["retries"] == 0
    assert "W&B has no API key" in report["error"]


def test_flush_follows_the_wandb_file_past_its_blocks_and_through_torn_writes(
    tmp_path: Path,
) -> None:
    """flush() returns once the run's .wandb file holds the last step, past many 32 KiB
    blocks; read while it grows, cut at any byte, the file gives each record once."""
    exporter = offline_exporter(tmp_path)
    run = ExportRun("a", 0, "1", 7, "h", {"lr": 0.1}, {}, 1, tmp_path / "exp/trials/a/run_0")
    try:
        run_id = exporter.open(run, external=None, rewind=0).external
        for start in range(0, 400, 100):
            points = [
                Point(e, 1000.0 + e, {"loss": 1 / (e + 1), "a_rather_long_metric_name": e})
                for e in range(start, start + 100)
            ]
            exporter.write(run, points)
            exporter.flush(run)  # raises TimeoutError if the reader never sees the step
        exporter.finish(run, expman.RunStatus.COMPLETED, None)
    finally:
        exporter.close()
    (path,) = tmp_path.glob(f"wb/wandb/offline-run-*/run-{run_id}.wandb")
    data = path.read_bytes()
    assert len(data) > 3 * 32768

    def steps(records: list[Any]) -> list[int]:
        return [r.history.step.num for r in records if r.WhichOneof("record_type") == "history"]

    assert steps(TransactionLog(path).records()) == list(range(400))
    growing = tmp_path / "growing.wandb"
    reader, seen, at, cuts = TransactionLog(growing), [], 0, random.Random(16)
    with open(growing, "wb") as f:
        while at < len(data):
            n = cuts.randint(1, 3000)
            f.write(data[at : at + n])
            f.flush()
            at += n
            seen += steps(reader.records())
    assert seen == list(range(400))


def test_a_run_reopened_with_nothing_left_to_send_flushes_at_once(tmp_path: Path) -> None:
    """Reopened past its last epoch (a catch-up that finds nothing to re-send), the new
    folder holds no step: the flush before the watermark does not wait for one."""
    exporter = offline_exporter(tmp_path)
    run = ExportRun("a", 0, "1", 7, "h", {"lr": 0.1}, {}, 1, tmp_path / "exp/trials/a/run_0")
    try:
        run_id = exporter.open(run, external=None, rewind=0).external
        exporter.write(run, [Point(e, 1000.0 + e, {"loss": 1.0}) for e in range(3)])
        exporter.finish(run, expman.RunStatus.FAILED, "killed")
        exporter.open(run, external=run_id, rewind=3)
        started = time.monotonic()
        exporter.flush(run)
        assert time.monotonic() - started < 1
        exporter.finish(run, expman.RunStatus.COMPLETED, None)
    finally:
        exporter.close()
    first, again = segments(tmp_path / "wb")[run_id]
    assert again.run.branch_point.value == 2
    assert (first.exit_code, again.exit_code) == (1, 0)
    assert sorted(shown([first, again])) == [0, 1, 2]


def offline_exporter(tmp_path: Path) -> WandbExporter:
    """The backend as an experiment builds it, for a workspace at tmp_path."""
    options = {"project": "p", "entity": None, "mode": "offline", "dir": "wb", "tags": []}
    spec = IntegrationSpec(type="wandb", name="wandb", options=options)
    return WandbExporter(spec, ExportContext("exp", "1", "", tmp_path, tmp_path / "exp"))


async def test_a_run_the_journal_lost_before_its_id_reuses_the_same_wandb_run(
    make_experiment: Make, tmp_path: Path
) -> None:
    """A kill -9 after W&B made the runs but before the journal recorded their ids (or
    anything of theirs): the next session finds the same W&B runs (the id is derived
    from the experiment and the run) and rewinds them; no second W&B run per run."""
    root = make_chain(make_experiment, {"mode": "offline"})
    ws = tmp_path / "ws"
    assert (await expman.run_experiment(root, workspace=ws)).ok
    cut_journal(ws, "RunFinished", tracker_behind=True)
    assert not bound(ws)

    assert (await expman.run_experiment(root, workspace=ws)).ok

    ids = bound(ws)
    found = segments(ws)
    assert len(found) == len(ids) == 4  # one W&B run per expman run, whatever crashed
    for run in runs_of(ws):
        (run_id,) = ids[(run.parent.name, int(run.name.removeprefix("run_")))]
        first, resumed = found[run_id]
        assert resumed.run.branch_point.run == run_id
        assert same(shown([first, resumed]), history(run))
    assert not step_warnings(ws)
