"""Every built-in subscriber passes the shipped conformance suite (expman.testing.subscribers)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import yaml
from rich.console import Console

from expman.config import load_plan
from expman.events import EpochEnd, Event, RunStarted
from expman.subscribers.display import JsonDisplay, LineDisplay, LiveDisplay
from expman.subscribers.writers.eventlog import EventLogWriter
from expman.subscribers.writers.workspace import WorkspaceWriter
from expman.testing.subscribers import SubscriberContract, experiment_events
from expman.workspace.journal import JournalWriter, read_journal
from expman.workspace.layout import ExperimentLayout
from expman.workspace.logsink import LogFiles


class TestEventLogWriter(SubscriberContract):
    def make_subscriber(self, tmp_path: Path) -> Any:
        self.files = LogFiles()
        self.layout = ExperimentLayout(tmp_path / "exp")
        return EventLogWriter(self.layout, self.files)

    @contextlib.asynccontextmanager
    async def running(self, subscriber: Any, tmp_path: Path) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            await tg.start(self.files.run)
            try:
                yield
            finally:
                await self.files.aclose()

    def check_output(self, subscriber: Any, delivered: Sequence[Event], tmp_path: Path) -> None:
        epochs = [e for e in delivered if isinstance(e, EpochEnd)]
        metrics = self.layout.metrics_file.read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in metrics] == [e.epoch for e in epochs]
        lines = self.layout.log_file.read_text().splitlines()
        logged = [json.loads(line)["event"] for line in lines]
        lifecycle = [type(e).__name__ for e in delivered if not isinstance(e, EpochEnd)]
        assert logged[0] == "ExperimentStarted"
        assert logged[-1] == "ExperimentFinished"
        assert set(logged) <= set(lifecycle)


class TestJournalWriter(SubscriberContract):
    def make_subscriber(self, tmp_path: Path) -> Any:
        self.path = tmp_path / "journal.jsonl"
        writer = JournalWriter(self.path)
        writer.open()
        return writer

    @contextlib.asynccontextmanager
    async def running(self, subscriber: Any, tmp_path: Path) -> AsyncIterator[None]:
        try:
            yield
        finally:
            subscriber.close()

    def check_output(self, subscriber: Any, delivered: Sequence[Event], tmp_path: Path) -> None:
        assert len(self.path.read_text().splitlines()) == len(delivered)
        state = read_journal(self.path)
        assert set(state.runs) == {("a", 0), ("a", 1)}


class TestWorkspaceWriter(SubscriberContract):
    def make_subscriber(self, tmp_path: Path) -> Any:
        config = tmp_path / "configs"
        config.mkdir()
        (config / "experiment.yaml").write_text(yaml.safe_dump({"name": "exp", "id": 1}))
        (config / "base.yaml").write_text(yaml.safe_dump({"settings": {"pipeline": "x:Y"}}))
        (config / "trials.yaml").write_text(yaml.safe_dump([{"name": "a", "id": 1, "repeat": 2}]))
        plan = load_plan(config, workspace=tmp_path / "ws")
        self.layout = ExperimentLayout(plan.path)
        writer = WorkspaceWriter(plan, self.layout)
        writer.prepare_experiment()
        return writer

    def sample_events(self, tmp_path: Path) -> list[Event]:
        return experiment_events(path=str(tmp_path / "ws" / "exp"))

    def check_output(self, subscriber: Any, delivered: Sequence[Event], tmp_path: Path) -> None:
        assert any(isinstance(event, RunStarted) for event in delivered)
        for event in delivered:
            if not isinstance(event, RunStarted):
                continue
            assert event.trial is not None
            assert event.repeat is not None
            run = self.layout.run(event.trial, event.repeat)
            assert yaml.safe_load(run.config_file.read_text())["seed"] == event.seed


class TestLineDisplay(SubscriberContract):
    def make_subscriber(self, tmp_path: Path) -> Any:
        self.out = io.StringIO()
        return LineDisplay(self.out)

    def check_output(self, subscriber: Any, delivered: Sequence[Event], tmp_path: Path) -> None:
        assert "a/run_0" in self.out.getvalue()


class TestJsonDisplay(SubscriberContract):
    def make_subscriber(self, tmp_path: Path) -> Any:
        self.out = io.StringIO()
        return JsonDisplay(self.out)

    def check_output(self, subscriber: Any, delivered: Sequence[Event], tmp_path: Path) -> None:
        lines = [json.loads(line) for line in self.out.getvalue().splitlines()]
        assert [line["type"] for line in lines] == [type(e).__name__ for e in delivered]


class TestLiveDisplay(SubscriberContract):
    def make_subscriber(self, tmp_path: Path) -> Any:
        console = Console(file=io.StringIO(), force_terminal=True, width=100)
        return LiveDisplay(console)


class TestPlainAsyncFunction(SubscriberContract):
    """What a user passes most often: a mailbox subscriber to every event."""

    def make_subscriber(self, tmp_path: Path) -> Any:
        seen: list[Event] = []

        async def record(event: Event) -> None:
            seen.append(event)

        self.seen = seen
        return record

    def check_output(self, subscriber: Any, delivered: Sequence[Event], tmp_path: Path) -> None:
        assert self.seen == list(delivered)
