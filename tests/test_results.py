"""Reading experiments back: `expman results | report | status` and `expman.load_results`."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import expman
from expman.jsonlines import read_lines
from expman.results.reading import read_experiment
from expman.workspace.journal import read_journal

from .conftest import run_cli, write_yaml

#: Pipelines of these tests (dropped into each experiment folder as watch_pipes.py).
PIPES = '''
import anyio

from expman import Pipeline


class SeededAcc(Pipeline):
    """An accuracy that grows with the epoch and depends on the trial's quality and the seed."""

    def __init__(self, epochs=3, seconds=0.0, **params):
        super().__init__(**params)
        self.epochs, self.seconds = epochs, seconds

    async def run(self, ctx):
        for epoch in range(ctx.start_epoch, self.epochs):
            await anyio.sleep(self.seconds)
            acc = ctx.config.quality + 0.02 * epoch + (ctx.seed % 97) / 1000
            if ctx.config.get("fail") and ctx.repeat == 0:
                raise RuntimeError("the loss went to nan")
            if await ctx.epoch_end(epoch, {"acc": acc, "loss": 1.0 - acc}):
                break
        return {"acc": acc}
'''

TRIALS = [
    {"name": "weak", "id": 1, "repeat": 3, "settings": {"quality": 0.5, "width": 8}},
    {"name": "strong", "id": 2, "repeat": 3, "settings": {"quality": 0.7, "width": 32}},
    {"name": "middle", "id": 3, "repeat": 3, "settings": {"quality": 0.6, "width": 16}},
]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    source = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return env


def experiment(make: Callable[..., Path], trials: list[dict[str, Any]], **pipeline: Any) -> Path:
    root = make(
        base={"seed": 7, "pipeline": {"type": "watch_pipes:SeededAcc", **pipeline}},
        trials=trials,
    )
    (root / "watch_pipes.py").write_text(PIPES)
    return root


def final_acc_from_metrics_logs(exp: Path) -> dict[str, list[float]]:
    """Each trial's final-epoch acc per run, read straight from the runs' metrics.log files."""
    out: dict[str, list[float]] = {}
    for log in sorted(exp.glob("trials/*/run_*/logs/metrics.log")):
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        last = max(lines, key=lambda entry: entry["epoch"])
        out.setdefault(last["trial"], []).append(last["metrics"]["acc"])
    return out


@pytest.fixture(scope="module")
def finished_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished experiment: 3 trials x 3 repeats reporting acc and loss for 3 epochs."""
    base = tmp_path_factory.mktemp("finished")
    root = base / "configs"
    root.mkdir()
    write_yaml(root / "experiment.yaml", {"name": "exp", "id": 1, "desc": "", "settings": {}})
    write_yaml(
        root / "base.yaml", {"settings": {"seed": 7, "pipeline": {"type": "watch_pipes:SeededAcc"}}}
    )
    write_yaml(root / "trials.yaml", TRIALS)
    (root / "watch_pipes.py").write_text(PIPES)
    proc = run_cli("run", str(root), "-w", str(base / "ws"), "-j", "4", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return base / "ws" / "exp"


@pytest.fixture
def finished(finished_once: Path, tmp_path: Path) -> Path:
    """A fresh copy of the finished experiment, for a test to read or damage."""
    return Path(shutil.copytree(finished_once, tmp_path / "copy" / "exp"))


class TestResults:
    def test_trials_are_ranked_by_mean_over_repeats_as_the_metrics_logs_say(
        self, finished: Path
    ) -> None:
        """`expman results --format json` gives each trial's mean and std of final acc over
        its 3 repeats, best first, equal to numbers computed here from the metrics logs."""
        proc = run_cli("results", str(finished), "--metric", "acc", "--format", "json")
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert (doc["metric"], doc["mode"], doc["reduce"]) == ("acc", "max", "last")
        expected = final_acc_from_metrics_logs(finished)
        ranked = sorted(expected, key=lambda t: statistics.fmean(expected[t]), reverse=True)
        assert [row["trial"] for row in doc["trials"]] == ranked == ["strong", "middle", "weak"]
        for row in doc["trials"]:
            values = expected[row["trial"]]
            assert row["n"] == 3
            assert row["mean"] == pytest.approx(statistics.fmean(values))
            assert row["std"] == pytest.approx(statistics.stdev(values))
            assert row["min"] == pytest.approx(min(values))
            assert row["max"] == pytest.approx(max(values))
            assert row["best"] is (row["trial"] == "strong")
            assert set(row["settings"]) == {"quality", "width"}  # only what differs

    def test_the_table_marks_the_best_and_the_mode_comes_from_the_name(
        self, finished: Path
    ) -> None:
        """Without --metric/--mode the accuracy is ranked highest-first; loss lowest-first."""
        proc = run_cli("results", str(finished))
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert "acc" in lines[0]
        assert "max is better" in lines[0]
        rows = [line for line in lines if line.split() and line.split()[0] in ("*", "1", "2", "3")]
        assert rows[0].split()[:3] == ["*", "1", "strong"]
        assert "±" in rows[0]
        loss = run_cli("results", str(finished), "--metric", "loss", "--format", "json")
        doc = json.loads(loss.stdout)
        assert doc["mode"] == "min"
        assert doc["trials"][0]["trial"] == "strong"

    def test_csv_and_runs_give_one_row_per_trial_or_per_run(self, finished: Path) -> None:
        """--format csv has a header and 3 trial rows; --runs gives the 9 runs best first."""
        trials = list(
            csv.DictReader(io.StringIO(run_cli("results", str(finished), "--format", "csv").stdout))
        )
        assert [r["trial"] for r in trials] == ["strong", "middle", "weak"]
        assert float(trials[0]["acc_mean"]) > float(trials[1]["acc_mean"])
        proc = run_cli("results", str(finished), "--runs", "--format", "json", "--metric", "acc")
        runs = json.loads(proc.stdout)
        assert len(runs) == 9
        accs = [r["acc"] for r in runs]
        assert accs == sorted(accs, reverse=True)

    def test_a_config_folder_names_the_experiment_it_ran_into(self, finished_once: Path) -> None:
        """`expman results CONFIG_DIR -w WORKSPACE` reads the experiment that config ran into,
        as `expman run CONFIG_DIR -w WORKSPACE` placed it."""
        configs, ws = finished_once.parents[1] / "configs", finished_once.parent
        by_config = run_cli("results", str(configs), "-w", str(ws), "--format", "json")
        assert by_config.returncode == 0, by_config.stderr
        by_folder = run_cli("results", str(finished_once), "--format", "json")
        assert json.loads(by_config.stdout) == json.loads(by_folder.stdout)
        elsewhere = run_cli("status", str(configs), "-w", str(ws.parent / "elsewhere"))
        assert elsewhere.returncode == 2
        assert "is a config folder and its experiment" in elsewhere.stderr
        assert "has not run yet" in elsewhere.stderr

    def test_mistakes_are_one_message_and_exit_2(self, finished: Path, tmp_path: Path) -> None:
        """A missing folder, a folder that is no experiment, an unknown metric: exit 2, no
        traceback."""
        (tmp_path / "empty").mkdir()
        for args, words in [
            (("results", str(tmp_path / "nope")), "no such folder"),
            (("results", str(tmp_path / "empty")), "not an experiment folder"),
            (("report", str(tmp_path / "empty")), "not an experiment folder"),
            (("status", str(tmp_path / "empty")), "neither an experiment folder"),
            (("results", str(finished), "--metric", "f1"), "unknown metric 'f1'"),
        ]:
            proc = run_cli(*args)
            assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
            assert words in proc.stderr
            assert "Traceback" not in proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1


class TestLoadResults:
    def test_python_api_summary_best_history_and_dataframe(self, finished: Path) -> None:
        """load_results gives runs, ranked summaries, the best trial, epoch curves with mean
        and std over repeats, and a pandas frame with one row per run."""
        results = expman.load_results(finished)
        assert results.state == "finished"
        assert len(results.runs) == 9
        assert {r.status for r in results.runs} == {"completed"}
        summary = results.summary("acc")
        assert [row.trial for row in summary] == ["strong", "middle", "weak"]
        assert results.best_trial("loss").trial == "strong"
        best = results.summary("loss", reduce="best")
        assert best[0].stats.min == pytest.approx(
            1.0 - max(final_acc_from_metrics_logs(finished)["strong"])
        )
        history = results.history("acc")
        curve = history.trials["weak"]
        assert curve.epochs == (0, 1, 2)
        per_run = [history.runs[("weak", k)] for k in range(3)]
        assert curve.mean[2] == pytest.approx(statistics.fmean(p[2][1] for p in per_run))
        assert curve.std[2] == pytest.approx(statistics.stdev(p[2][1] for p in per_run))
        frame = results.to_dataframe()
        assert len(frame) == 9
        assert {"trial", "repeat", "status", "quality", "acc"} <= set(frame.columns)

    def test_torn_last_lines_are_skipped(self, finished: Path) -> None:
        """A half-written last line in the journal and the metrics log changes nothing."""
        before = expman.load_results(finished).summary("acc")
        with open(finished / "logs" / "events.jsonl", "a") as f:
            f.write('{"type": "RunFinished", "trial": "weak", "rep')
        with open(finished / "logs" / "metrics.log", "a") as f:
            f.write('{"experiment": "exp", "trial": "weak", "repeat": 0, "epo')
        after = expman.load_results(finished).summary("acc")
        assert [(r.trial, r.mean, r.std) for r in after] == [
            (r.trial, r.mean, r.std) for r in before
        ]


class _Page(HTMLParser):
    """Collects what the report test checks: images, tables, headings, resource links."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.tags: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = dict(attrs)
        if tag == "img":
            self.images.append(found)
        for key in ("src", "href"):
            if found.get(key):
                self.links.append(str(found[key]))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_is_one_self_contained_html_file(
    make_experiment: Callable[..., Path], workspace: Path, tmp_path: Path
) -> None:
    """`expman report` writes one HTML file with inline PNG curves and comparison chart,
    the results table, the differing settings and the failed run's reason; no URLs."""
    trials = [
        *TRIALS[:2],
        {"name": "broken", "id": 9, "repeat": 2, "settings": {"fail": True, "quality": 0.9}},
    ]
    root = experiment(make_experiment, trials)
    assert run_cli("run", str(root), "-w", str(workspace), "--quiet").returncode == 1
    out = tmp_path / "out" / "report.html"
    proc = run_cli("report", str(workspace / "exp"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # one file, nothing beside
    html = out.read_text()
    page = _Page()
    page.feed(html)
    text = " ".join(page.text)

    assert len(page.images) >= 3  # comparison chart + curves of acc and loss
    for image in page.images:
        src = str(image["src"])
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    alts = [str(image["alt"]) for image in page.images]
    assert "acc per trial" in alts
    assert "acc learning curves" in alts
    assert "script" not in page.tags
    assert "http://" not in html
    assert "https://" not in html
    assert all(link.startswith("data:") for link in page.links)
    assert page.tags.count("table") >= 4  # results, settings, failures, runs
    for heading in ("Results", "Learning curves", "Settings that differ between trials"):
        assert heading in text
    for name in ("strong", "weak", "broken", "quality"):
        assert name in text
    assert "RuntimeError: the loss went to nan" in text
    assert "trials/broken/run_0/logs/run.log" in text


# -- status: a running experiment, a killed one, a workspace ---------------------------


def start_run(root: Path, workspace: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "expman", "run", str(root), "-w", str(workspace), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def epochs_logged(exp: Path) -> int:
    try:
        return (exp / "logs" / "metrics.log").read_text().count("\n")
    except FileNotFoundError:
        return 0


def status_rows(output: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in output.splitlines() if "/run_" in line}


@pytest.mark.slow
def test_status_of_an_experiment_running_in_another_process(
    make_experiment: Callable[..., Path], workspace: Path, tmp_path: Path
) -> None:
    """While `expman run` works in another process, status says running, shows the active
    run with its epochs and the other as waiting; afterwards it says finished."""
    root = experiment(make_experiment, TRIALS[:1], epochs=12, seconds=0.2)
    exp = workspace / "exp"
    log = tmp_path / "run.out"
    proc = start_run(root, workspace, log, "-j", "1", "--quiet")
    try:
        wait_for(lambda: epochs_logged(exp) >= 2, proc, log)
        status = run_cli("status", str(exp))
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith("experiment exp: running")
        rows = status_rows(status.stdout)
        running = [row for row in rows.values() if row[1] == "running"]
        assert len(running) == 1  # -j 1
        assert int(running[0][3]) >= 1  # epochs done so far
        assert "acc=" in status.stdout
        assert rows["weak/run_2"][1] == "waiting"
        partial = run_cli("results", str(exp), "--format", "json")
        assert partial.returncode == 0, partial.stderr
        assert json.loads(partial.stdout)["state"] == "running"
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    status = run_cli("status", str(exp))
    assert status.stdout.startswith("experiment exp: finished (3 completed)")
    assert [row[1] for row in status_rows(status.stdout).values()] == ["completed"] * 3


@pytest.mark.slow
def test_status_of_an_experiment_killed_with_sigkill(
    make_experiment: Callable[..., Path], workspace: Path, tmp_path: Path
) -> None:
    """After SIGKILL, status says interrupted: the started runs interrupted with the epochs
    they logged, the others not started; results still reads what was logged.  Once
    resumed to its end, the interrupted runs show their second attempt."""
    root = experiment(make_experiment, TRIALS[:1], epochs=30, seconds=0.05)
    exp = workspace / "exp"
    log = tmp_path / "run.out"
    proc = start_run(root, workspace, log, "-j", "2", "--quiet")
    try:
        wait_for(lambda: epochs_logged(exp) >= 4, proc, log)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    status = run_cli("status", str(exp))
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("experiment exp: interrupted")
    rows = status_rows(status.stdout)
    assert [rows[f"weak/run_{k}"][1] for k in (0, 1)] == ["interrupted"] * 2
    assert sum(int(rows[f"weak/run_{k}"][3]) for k in (0, 1)) >= 4
    assert rows["weak/run_2"][1:3] == ["not", "started"]
    results = expman.load_results(exp)
    assert results.state == "interrupted"
    assert results.history("acc").trials["weak"].epochs[0] == 0

    resumed = run_cli("run", str(root), "-w", str(workspace), "-j", "3", "--quiet")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    rows = status_rows(run_cli("status", str(exp)).stdout)
    assert [rows[f"weak/run_{k}"][1:4] for k in range(3)] == [
        ["completed", "2", "30"],
        ["completed", "2", "30"],
        ["completed", "1", "30"],
    ]
    assert expman.load_results(exp).summary("acc")[0].n == 3


def test_status_of_a_workspace_lists_its_experiments(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """`expman status WORKSPACE` lists every experiment with its state and run counts."""
    for name in ("first", "second"):
        root = make_experiment(name=name, folder=name)
        assert run_cli("run", str(root), "-w", str(workspace), "--quiet").returncode == 0
    proc = run_cli("status", str(workspace))
    assert proc.returncode == 0, proc.stderr
    assert "2 experiment(s)" in proc.stdout
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert "finished" in lines["first"]
    assert "1 completed" in lines["second"]


class TestLiveness:
    """Whether an unfinished experiment is running or crashed, from its lock or journal."""

    @staticmethod
    def unfinish(exp: Path) -> None:
        journal = exp / "logs" / "events.jsonl"
        lines = journal.read_text().splitlines(keepends=True)
        cut = max(i for i, line in enumerate(lines) if '"RunStarted"' in line)
        journal.write_text("".join(lines[: cut + 1]))  # the last run started, nothing after

    @staticmethod
    def dead_pid() -> int:
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        return proc.pid

    def test_the_journal_pid_decides_without_a_lock(self, finished: Path) -> None:
        """No lock file: the pid recorded in ExperimentStarted is dead, so interrupted."""
        self.unfinish(finished)
        (finished / ".lock").unlink(missing_ok=True)
        results = expman.load_results(finished)
        assert results.state == "interrupted"
        assert [r.status for r in results.runs][-1] == "interrupted"

    def test_a_held_lock_means_running_and_a_free_one_interrupted(self, finished: Path) -> None:
        """While a process holds the experiment's lock it is running (the unfinished run
        too); once nobody holds it, the unfinished experiment was interrupted."""
        from expman.workspace.lock import ExperimentLock

        self.unfinish(finished)
        with ExperimentLock(finished / ".lock"):
            results = expman.load_results(finished)
            assert results.state == "running"
            assert [r.status for r in results.runs][-1] == "running"
        assert expman.load_results(finished).state == "interrupted"

    def test_a_lock_file_left_by_a_dead_process_is_not_held(self, finished: Path) -> None:
        """A lock file naming a process that died (nobody holds it): interrupted."""
        import json
        import socket

        self.unfinish(finished)
        record = {"pid": self.dead_pid(), "host": socket.gethostname()}
        (finished / ".lock").write_text(json.dumps(record))
        assert expman.load_results(finished).state == "interrupted"


# -- one fold of the journal for resume and results ------------------------------------

#: A falling loss (flat when asked) that fails at ``fail_at`` on the listed attempts.
LEDGER_PIPES = """
import json

from expman import Pipeline


class Steps(Pipeline):
    def __init__(self, epochs=4, fail_at=None, fail_attempts=(1,), flat=False, **params):
        super().__init__(**params)
        self.epochs, self.fail_at, self.flat = epochs, fail_at, flat
        self.fail_attempts = tuple(fail_attempts)
        self.done = 0

    async def run(self, ctx):
        self.done = ctx.start_epoch
        for epoch in range(ctx.start_epoch, self.epochs):
            if epoch == self.fail_at and ctx.attempt in self.fail_attempts:
                raise RuntimeError(f"broke at epoch {epoch}")
            self.done = epoch + 1
            if await ctx.epoch_end(epoch, {"loss": 1.0 if self.flat else 1.0 / (epoch + 1)}):
                break
        return {"done": self.done}

    def save_checkpoint(self, path):
        with open(path, "w") as f:
            json.dump({"done": self.done}, f)

    def load_checkpoint(self, path):
        with open(path) as f:
            self.done = json.load(f)["done"]
"""


async def test_resume_and_results_read_the_same_journal_the_same_way(
    make_experiment: Callable[..., Path], workspace: Path
) -> None:
    """After retries, an early stop, a failure and checkpoints, `expman status` shows each
    run as the journal's one fold has it, and resuming skips exactly the runs it shows as
    results and restarts the failed one from the checkpoint it shows."""
    root = make_experiment(
        base={
            "pipeline": {"type": "ledger:Steps"},
            "callbacks": [
                {"type": "CheckpointCallback", "interval": 1, "save_final": False},
                {"type": "EarlyStopping", "metric": "loss", "patience": 1},
            ],
        },
        trials=[
            {"name": "flaky", "id": 1, "repeat": 1, "settings": {"pipeline": {"fail_at": 2}}},
            {"name": "flat", "id": 2, "repeat": 1, "settings": {"pipeline": {"flat": True}}},
            {
                "name": "broken",
                "id": 3,
                "repeat": 1,
                "settings": {"pipeline": {"fail_at": 1, "fail_attempts": [1, 2]}},
            },
        ],
        env={"execution": {"max_retries": 1, "max_concurrency": 3}},
    )
    (root / "ledger.py").write_text(LEDGER_PIPES)
    await expman.run_experiment(root, workspace=workspace)
    exp = workspace / "exp"
    journal = read_journal(exp / "logs" / "events.jsonl")
    record = read_experiment(exp)
    shown = {(r.trial, r.repeat): r for r in record.runs}

    assert {key: run.status for key, run in shown.items()} == {
        ("flaky", 0): "completed",
        ("flat", 0): "stopped",
        ("broken", 0): "failed",
    }
    assert set(journal.runs) == set(shown)
    for key, run in shown.items():
        folded = journal.runs[key]
        assert run.status == folded.status
        assert run.attempt == folded.attempt == folded.attempts
        # An attempt that reported no epoch (broken's second) shows those metrics.log has.
        assert run.epochs == (folded.epochs or max(record.curves[key]) + 1)
        assert (run.duration, run.error, run.reason) == (
            folded.total_duration,
            folded.error,
            folded.reason,
        )
        assert (run.seed, run.config_hash, run.checkpoint) == (
            folded.seed,
            folded.config_hash,
            folded.checkpoint,
        )
        assert folded.metrics.items() <= run.metrics.items()
    assert shown["flaky", 0].attempt == shown["broken", 0].attempt == 2  # retried once
    assert "early stopping" in str(shown["flat", 0].reason)
    assert "RuntimeError: broke at epoch 1" in str(shown["broken", 0].error)
    broken_checkpoint = str(shown["broken", 0].checkpoint)
    assert Path(broken_checkpoint).name == "checkpoint-0"

    again = await expman.run_experiment(root, workspace=workspace)
    skipped = {(r.trial, r.repeat): r for r in again.runs if r.skipped}
    assert set(skipped) == {key for key, run in shown.items() if run.status != "failed"}
    for key, outcome in skipped.items():
        run = shown[key]
        assert (outcome.status, outcome.attempt, outcome.epochs, outcome.duration) == (
            run.status,
            run.attempt,
            run.epochs,
            run.duration,
        )
        assert (outcome.error, outcome.reason) == (run.error, run.reason)
        assert outcome.metrics == journal.runs[key].metrics
    restarted, sessions = [], 0
    for e in read_lines(exp / "logs" / "events.jsonl"):
        sessions += e["type"] == "ExperimentStarted"
        if sessions == 2 and e["type"] == "RunStarted":
            restarted.append(e)
    # The journal stores paths relative to the experiment folder.
    assert [
        (e["trial"], e["attempt"], e["start_epoch"], str(exp / e["checkpoint"])) for e in restarted
    ] == [("broken", 3, journal.runs["broken", 0].newest_checkpoint.epoch + 1, broken_checkpoint)]
