"""MLflow end to end: what lands where, statuses, exactly once across crashes, a failing server.

The oracle is MLflow's own client reading the store back.  The experiments are
real YAML folders; the tracking server is MLflow's own server app in a subprocess
of the test's, behind a TCP proxy of the test's own (the edge) that can delay
each request or refuse connections for a while.
"""

from __future__ import annotations

import collections
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run

import expman
from expman.jsonlines import read_lines
from tests.conftest import run_cli, write_yaml
from tests.test_exact_resume import CHAIN, CHECKPOINTS
from tests.test_integrations import (
    Events,
    cut_journal,
    history,
    journal_lines,
    kill_at_random_moments,
    runs_of,
)

Make = Callable[..., Path]
QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"

#: MLflow's server app, served by werkzeug on a free port of the loopback (printed).
SERVER = textwrap.dedent(
    """
    import os
    import sys

    os.environ["_MLFLOW_SERVER_FILE_STORE"] = sys.argv[1]
    os.environ["_MLFLOW_SERVER_ARTIFACT_ROOT"] = sys.argv[2]
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # the benchmark's smoke sizes use one
    from mlflow.server import app
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()
    """
)


# -- the edge: a store, a server, a proxy ---------------------------------------------


def migrated_db(folder: Path) -> Path:
    """An empty MLflow sqlite store with its schema (creating one costs seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_db(tmp_path_factory.mktemp("mlflow-template"))


def store(template: Path, workspace: Path) -> MlflowClient:
    """The workspace's mlflow.db (the default tracking_uri), started from ``template``."""
    workspace.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, workspace / "mlflow.db")
    return MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")


class Server:
    """MLflow's tracking server on the loopback, over ``backend`` (a store URI)."""

    def __init__(self, backend: str, folder: Path) -> None:
        script = folder / "mlflow_server.py"
        script.write_text(SERVER)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), backend, str(folder / "artifacts")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)


class Proxy:
    """A TCP proxy to ``port``: delays each request by ``delay`` s, refuses connections
    while down, or passes the next ``swallow`` requests to ``swallow_path`` on and cuts the
    connection instead of returning the answer (the server did it; the client cannot know)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.delay = 0.0
        self.requests = 0
        self.swallow = 0
        self.swallow_path = b""
        self.swallowed = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = self._listen(0)

    def _listen(self, port: int) -> int:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return int(listener.getsockname()[1])

    def down_for(self, seconds: float) -> None:
        """Refuse connections (and cut the open ones) for ``seconds``, in the background."""
        with self._lock:
            listener, self._listener = self._listener, None
            cut, self._open = self._open, set()
        for sock in [listener, *cut]:
            if sock is not None:
                _close(sock)
        threading.Timer(seconds, self._listen, args=(self.port,)).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: down
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._open |= {client, upstream}
            asking, marked = threading.Event(), threading.Event()
            asking.set()
            for args in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(*args, asking, marked)).start()

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        request: bool,
        asking: threading.Event,
        marked: threading.Event,
    ) -> None:
        try:
            while data := src.recv(65536):
                if request and asking.is_set():  # the first bytes of a new request
                    asking.clear()
                    self.requests += 1
                    if self.swallow_path and self.swallow_path in data.split(b"\r\n")[0]:
                        marked.set()
                    time.sleep(self.delay)
                elif not request:
                    with self._lock:
                        cut = marked.is_set() and self.swallow > 0
                        self.swallow -= cut
                        self.swallowed += cut
                    if cut:
                        break
                    asking.set()  # an answer: what the client sends next is a new request
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# -- reading MLflow back ------------------------------------------------------------------


def experiment_runs(client: MlflowClient, name: str) -> tuple[list[Run], list[Run]]:
    """The experiment's parent runs and child runs."""
    found = client.get_experiment_by_name(name)
    assert found is not None, f"no MLflow experiment {name!r}"
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def child_of(children: list[Run], folder: Path) -> Run:
    (found,) = [r for r in children if r.info.run_name == f"{folder.parent.name}/{folder.name}"]
    return found


def series(client: MlflowClient, run_id: str) -> tuple[dict[int, dict[str, float]], int]:
    """A run's metric history by step, and how many (metric, step) points it holds twice."""
    out: dict[int, dict[str, float]] = {}
    twice = 0
    for name in client.get_run(run_id).data.metrics:
        steps = collections.Counter()
        for m in client.get_metric_history(run_id, name):
            steps[m.step] += 1
            out.setdefault(m.step, {})[name] = m.value
        twice += sum(n - 1 for n in steps.values())
    return out, twice


def flat(value: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, item in value.items():
        if isinstance(item, dict) and item:
            yield from flat(item, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", str(item)


def run_yaml(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((folder / "configs" / "run.yaml").read_text())
    return data


# -- what lands where -------------------------------------------------------------------


class ActiveRunWatch:
    """A caller's subscriber that notes ``mlflow.active_run()`` at every event."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def __call__(self, event: Any) -> None:
        self.seen.append(mlflow.active_run())


async def test_quickstart_is_one_experiment_a_parent_per_trial_and_a_child_per_repeat(
    tmp_path: Path, template_db: Path
) -> None:
    """Quickstart at max_concurrency 8: 2 parents, 6 children, params, tags, full histories."""
    root = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, root)
    pipeline = root / "quickstart_pipeline.py"
    code = pipeline.read_text().replace("import random\n", "import random\n\nimport mlflow\n")
    code = code.replace(
        "            if await ctx.epoch_end(",
        "            assert mlflow.active_run() is None\n            if await ctx.epoch_end(",
    )
    assert code.count("mlflow.active_run()") == 1
    pipeline.write_text(code)
    experiment = yaml.safe_load((root / "experiment.yaml").read_text())
    experiment["settings"]["note"] = "n" * 7000  # past MLflow's 6000 characters
    experiment["integrations"] = [{"type": "mlflow", "tags": {"team": "vision"}}]
    write_yaml(root / "experiment.yaml", experiment)
    write_yaml(root / "env.yaml", {"execution": {"max_concurrency": 8}})
    ws = tmp_path / "ws"
    client = store(template_db, ws)
    watch = ActiveRunWatch()

    result = await expman.run_experiment(root, workspace=ws, subscribers=[watch])

    assert result.ok, result.failed
    assert result.integrations["mlflow"]["lost"] == 0
    assert watch.seen
    assert all(r is None for r in watch.seen)
    assert mlflow.active_run() is None
    assert [e.name for e in client.search_experiments()] == ["quickstart", "Default"]
    parents, children = experiment_runs(client, "quickstart")
    assert sorted(p.info.run_name for p in parents) == ["fast", "slow"]
    assert len(children) == 6
    by_id = {p.info.run_id: p for p in parents}
    runs = runs_of(ws, "quickstart")
    assert len(runs) == 6
    for folder in runs:
        child = child_of(children, folder)
        spec = run_yaml(folder)
        parent = by_id[child.data.tags["mlflow.parentRunId"]]
        assert parent.info.run_name == spec["trial"]
        expected = dict(flat(spec["settings"]))
        expected["note"] = expected["note"][:6000]
        assert child.data.params == expected
        assert parent.data.params == expected
        tags = child.data.tags
        assert tags["expman.truncated_params"] == "note"
        assert tags["expman.trial"] == spec["trial"]
        assert tags["expman.repeat"] == str(spec["repeat"])
        assert tags["expman.seed"] == str(spec["seed"])
        assert tags["expman.config_hash"] == spec["config_hash"]
        assert tags["team"] == "vision"
        assert "mlflow.source.name" not in tags  # the fluent API's context tags: never used
        assert child.info.status == "FINISHED"
        shown, twice = series(client, child.info.run_id)
        assert twice == 0
        assert shown == history(folder)
    assert {p.info.status for p in parents} == {"FINISHED"}


async def test_statuses_failed_and_stopped_and_the_experiment_option(
    make_experiment: Make, tmp_path: Path, template_db: Path
) -> None:
    """failed -> FAILED (and its parent), stopped -> FINISHED tagged with why; experiment: named."""
    root = make_experiment(
        experiment={
            "name": "exp",
            "id": 1,
            "integrations": [{"type": "mlflow", "experiment": "named ${experiment.name}"}],
        },
        base={"pipeline": {"type": "pipelines:Sleeper", "epochs": 6}},
        trials=[
            {"name": "a", "id": 1, "repeat": 2, "settings": {"pipeline": {"fail_on": 1}}},
            {
                "name": "b",
                "id": 2,
                "repeat": 1,
                "settings": {
                    "callbacks": [{"type": "EarlyStopping", "metric": "seed", "mode": "min"}]
                },
            },
        ],
    )
    ws = tmp_path / "ws"
    client = store(template_db, ws)
    result = await expman.run_experiment(root, workspace=ws)
    assert {r.status for r in result.runs} == {"completed", "failed", "stopped"}
    parents, children = experiment_runs(client, "named exp")
    status = {c.info.run_name: c.info.status for c in children}
    assert status == {"a/run_0": "FINISHED", "a/run_1": "FAILED", "b/run_0": "FINISHED"}
    (stopped,) = [c for c in children if c.info.run_name == "b/run_0"]
    assert stopped.data.tags["expman.status"] == "stopped"
    assert "expman.status" not in {k for c in children if c is not stopped for k in c.data.tags}
    assert stopped.data.tags["expman.stopped"]  # why
    assert {p.info.run_name: p.info.status for p in parents} == {"a": "FAILED", "b": "FINISHED"}


def test_a_bad_option_is_a_config_error_naming_file_and_key(make_experiment: Make) -> None:
    root = make_experiment(
        experiment={"name": "exp", "id": 1, "integrations": [{"type": "mlflow", "tags": [1]}]}
    )
    done = run_cli("validate", str(root))
    assert done.returncode != 0
    assert "experiment.yaml" in done.stderr
    assert "integrations[0].tags" in done.stderr
    assert "expected a mapping of tags" in done.stderr


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:///mlflow.db", "sqlite:///{ws}/mlflow.db"),
        ("sqlite:///sub/m.db", "sqlite:///{ws}/sub/m.db"),
        ("sqlite:////abs/m.db", "sqlite:////abs/m.db"),
        ("mlruns", "file://{ws}/mlruns"),
        ("file:mlruns", "file://{ws}/mlruns"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("https://mlflow.example.com/x", "https://mlflow.example.com/x"),
    ],
)
def test_relative_tracking_uris_are_relative_to_the_workspace(
    tmp_path: Path, uri: str, expected: str
) -> None:
    from expman.integrations.mlflow import tracking_uri

    assert tracking_uri(uri, tmp_path) == expected.format(ws=tmp_path.resolve())


# -- exactly once across crashes ----------------------------------------------------------


def chain_experiment(
    make_experiment: Make, *, repeats: int, epochs: int, evaluate: float = 0.0, **options: Any
) -> Path:
    root = make_experiment(
        experiment={
            "name": "exp",
            "id": 1,
            "integrations": [{"type": "mlflow", "export": "checkpointed", **options}],
        },
        base={
            "pipeline": {
                "type": "chain:Chain",
                "epochs": epochs,
                "seconds": 0.01,
                "evaluate_seconds": evaluate,
            }
        },
        trials=[{"name": "t", "id": 1, "repeat": repeats}],
    )
    (root / "chain.py").write_text(CHAIN)
    return root


@pytest.mark.parametrize("export", ["checkpointed", "live"])
async def test_a_crash_after_mlflow_had_the_points_of_an_unfinished_run(
    make_experiment: Make, tmp_path: Path, template_db: Path, export: str
) -> None:
    """MLflow holds every epoch; the journal says the run never ended: the run trains
    again (new timestamps) into the same MLflow run.  Checkpointed: each (metric, step)
    once.  Live: tagged with the epoch it rewound to, and the re-trained epochs twice
    (as documented)."""
    # A slow evaluation (first attempt only) lets its identity reach the journal first.
    root = chain_experiment(make_experiment, repeats=1, epochs=6, evaluate=2.5, export=export)
    ws = tmp_path / "ws"
    client = store(template_db, ws)
    assert (await expman.run_experiment(root, workspace=ws)).ok
    cut_journal(ws, "RunFinished")
    kinds = [r["type"] for r in read_lines(ws / "exp" / "logs" / "events.jsonl")]
    assert "IntegrationBound" in kinds

    result = await expman.run_experiment(root, workspace=ws)

    assert result.ok
    assert result.runs[0].attempt == 2  # it trained again, from scratch (no checkpoints)
    _, children = experiment_runs(client, "exp")
    (child,) = children
    shown, twice = series(client, child.info.run_id)
    assert shown == history(runs_of(ws)[0])
    assert child.info.status == "FINISHED"
    if export == "checkpointed":
        assert twice == 0
        assert "expman.resumed_from_epoch" not in child.data.tags
    else:
        assert twice == 6 * 2  # x and loss of epochs 0-5, once per attempt
        assert child.data.tags["expman.resumed_from_epoch"] == "0"


async def test_a_run_that_ended_before_the_journal_knew_its_mlflow_run_is_found_by_tag(
    make_experiment: Make, tmp_path: Path, template_db: Path
) -> None:
    """Killed after the run ended and MLflow had it, before the journal recorded its MLflow
    run: the next session finds that run by its tags (no second one), sends nothing twice,
    and journals its identity and watermark."""
    root = chain_experiment(make_experiment, repeats=1, epochs=6)
    ws = tmp_path / "ws"
    client = store(template_db, ws)
    assert (await expman.run_experiment(root, workspace=ws)).ok
    _, (first,) = experiment_runs(client, "exp")
    cut_journal(ws, "ExperimentFinished", tracker_behind=True)
    journal = ws / "exp" / "logs" / "events.jsonl"
    assert "RunFinished" in [r["type"] for r in read_lines(journal)]

    result = await expman.run_experiment(root, workspace=ws)

    assert result.ok
    assert result.runs[0].skipped  # nothing trained again: a catch-up
    _, children = experiment_runs(client, "exp")
    assert [c.info.run_id for c in children] == [first.info.run_id]
    shown, twice = series(client, first.info.run_id)
    assert twice == 0
    assert shown == history(runs_of(ws)[0])
    (bound,) = [r for r in read_lines(journal) if r["type"] == "IntegrationBound"]
    assert bound["external"] == first.info.run_id
    (mark,) = [r for r in read_lines(journal) if r["type"] == "IntegrationWatermark"]
    assert (mark["epoch"], mark["ended"]) == (5, True)


def while_training(
    proc: subprocess.Popen[str], journal: Path, before: int, moments: random.Random
) -> None:
    """A random moment while the runs train and the tracker is fed (it starts with them)."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if b'"type":"RunStarted"' in b"".join(journal_lines(journal)[before:]):
            break
        time.sleep(0.01)
    time.sleep(moments.uniform(0.4, 1.6))


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_sends_every_checkpointed_point_once(
    make_experiment: Make, tmp_path: Path, template_db: Path
) -> None:
    """kill -9 five times during a sweep, then resume: 0 duplicate, 0 missing points, the
    same MLflow run per repeat throughout."""

    root = make_experiment(
        experiment={
            "name": "exp",
            "id": 1,
            "integrations": [{"type": "mlflow", "export": "checkpointed"}],
        },
        base={
            "pipeline": {"type": "chain:Chain", "epochs": 12, "seconds": 0.15},
            "callbacks": [{**CHECKPOINTS, "interval": 3}],
        },
        trials=[{"name": "t", "id": 1, "repeat": 2}, {"name": "u", "id": 2, "repeat": 2}],
        env={"execution": {"max_concurrency": 4}},
    )
    (root / "chain.py").write_text(CHAIN)
    ws = tmp_path / "ws"
    client = store(template_db, ws)
    journal = kill_at_random_moments(root, ws, 16, moment=while_training)

    parents, children = experiment_runs(client, "exp")
    assert len(parents) == 2
    assert len(children) == 4  # no second run for a repeat, however often it was opened
    bound = {
        (r["trial"], r["repeat"]): r["external"]
        for r in read_lines(journal)
        if r["type"] == "IntegrationBound"
    }
    for folder in runs_of(ws):
        child = child_of(children, folder)
        key = (folder.parent.name, int(folder.name.removeprefix("run_")))
        assert bound[key] == child.info.run_id
        expected = history(folder)
        assert sorted(expected) == list(range(12))
        shown, twice = series(client, child.info.run_id)
        assert twice == 0, folder
        assert shown == expected, folder
        assert child.info.status == "FINISHED"


# -- a tracking server that fails -----------------------------------------------------------


async def test_a_server_losing_answers_then_refusing_connections_fails_no_run_loses_nothing(
    make_experiment: Make, tmp_path: Path, template_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Behind a proxy that first loses the server's answers to three run creations, then
    refuses connections for 3 s mid-sweep: no run fails, no run is created
    twice, nothing is lost or doubled, the params are there, the integration said it lagged
    (MLflow's own retries would have hidden the outage) and nothing was printed on stdout."""
    db = tmp_path / "server" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(template_db, db)
    server = Server(f"sqlite:///{db}", tmp_path / "server")
    try:
        proxy = Proxy(server.port)
        root = make_experiment(
            experiment={
                "name": "exp",
                "id": 1,
                "integrations": [
                    {
                        "type": "mlflow",
                        "tracking_uri": f"http://127.0.0.1:{proxy.port}",
                        # After the runs, the back-off may have grown to 5 s: room for a few.
                        "flush_timeout": 30,
                    }
                ],
            },
            base={"pipeline": {"type": "chain:Chain", "epochs": 25, "seconds": 0.1}},
            trials=[{"name": "t", "id": 1, "repeat": 2}, {"name": "u", "id": 2, "repeat": 2}],
            env={"execution": {"max_concurrency": 4}},
        )
        (root / "chain.py").write_text(CHAIN)
        proxy.swallow, proxy.swallow_path = 3, b"/runs/create"
        threading.Timer(1.5, proxy.down_for, args=(3.0,)).start()
        events = Events()
        result = await expman.run_experiment(root, workspace=tmp_path / "ws", subscribers=[events])
    finally:
        server.stop()
    assert result.ok, result.failed
    totals = result.integrations["mlflow"]
    assert totals["lost"] == 0, totals
    assert totals["retries"] > 0
    assert events.of("IntegrationLagging")
    assert capsys.readouterr().out == ""  # MLflow prints each run's URL there when it ends
    assert proxy.swallowed == 3
    client = MlflowClient(f"sqlite:///{db}")
    parents, children = experiment_runs(client, "exp")
    assert len(parents) == 2
    assert len(children) == 4
    for run in [*parents, *children]:
        assert run.data.params["pipeline.epochs"] == "25"
    for folder in runs_of(tmp_path / "ws"):
        child = child_of(children, folder)
        shown, twice = series(client, child.info.run_id)
        assert twice == 0
        assert shown == history(folder)


def test_a_new_sqlite_store_is_made_whole_before_it_takes_its_name(
    make_experiment: Make, tmp_path: Path
) -> None:
    """MLflow makes a new store's schema in many transactions: a kill -9 among them used
    to leave a mlflow.db it refused for good.  The schema is made under a staged name
    (a killed session's is left behind, as here) and only a whole store takes the name;
    MLflow's notes of it stay off the terminal."""
    root = chain_experiment(make_experiment, repeats=1, epochs=2)
    ws = tmp_path / "ws"
    ws.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (ws / f".mlflow.db.tmp-{dead.pid}").write_bytes(b"SQLite format 3\0 half made")
    done = run_cli("run", str(root), "-w", str(ws), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "database tables" not in done.stderr + done.stdout
    assert sorted(p.name for p in ws.iterdir() if "mlflow" in p.name) == ["mlflow.db"]
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "exp"]
    assert len(client.search_runs([experiment.experiment_id])) == 2  # a parent, a child
