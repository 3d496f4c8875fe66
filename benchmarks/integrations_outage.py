"""An MLflow tracking server that is slow or down must not slow the runs or lose points silently.

MLflow's own server app on the loopback (a subprocess), reached through a TCP proxy
that either passes requests straight on (``healthy``), delays each request by 1 s
(``delayed``), or refuses connections for 30 s from 5 s into the sweep
(``refused``).  The sweep: 8 runs of 80 epochs x 0.25 s at max_concurrency 4 (about
40 s), ``export: live``, the default ``flush_timeout`` (10 s).

For each case: the runs' wall time (first RunStarted to last RunFinished, taken by a
control subscriber) and the whole call's, their ratio to the healthy case's (target
<= 1.05 for the runs), how many values the integration sent and counted lost, and
what the server holds afterwards (``arrived``, ``missing``: read back with MLflow's
client straight from the server, not through the proxy), so that ``lost`` can be
checked against ``missing``.  Run once per case (each takes the sweep's length).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import _measure
import anyio
from _folders import write_experiment
from mlflow import MlflowClient

import expman
from expman.events import Event, RunFinished, RunStarted
from tests.test_integration_mlflow import Proxy, Server, experiment_runs, migrated_db, series
from tests.test_integrations import history, runs_of

RUNS = _measure.size(8, 2)
CONCURRENCY = _measure.size(4, 2)
EPOCHS = _measure.size(80, 6)
EPOCH_S = _measure.size(250, 30) / 1000
DELAY_S = _measure.size(1000, 50) / 1000
DOWN_AT_S = _measure.size(5000, 200) / 1000
DOWN_FOR_S = _measure.size(30_000, 1000) / 1000


async def sweep(
    workdir: Path, case: str, server: Server, *, runs: int = RUNS, epochs: int = EPOCHS
) -> dict[str, Any]:
    proxy = Proxy(server.port)
    name = f"outage-{case}"
    root = write_experiment(
        workdir / f"configs-{case}",
        name=name,
        trials=runs,
        pipeline={"type": "bench_pipes:Trainer", "seconds": EPOCH_S, "epochs": epochs},
        max_concurrency=CONCURRENCY,
        callbacks=(),
    )
    text = (root / "experiment.yaml").read_text()
    uri = f"http://127.0.0.1:{proxy.port}"
    (root / "experiment.yaml").write_text(
        text + f"integrations:\n  - type: mlflow\n    tracking_uri: {uri}\n"
    )
    if case == "delayed":
        proxy.delay = DELAY_S
    marks: list[float] = []

    @expman.subscriber(RunStarted, RunFinished, delivery=expman.CONTROL)
    async def clock(event: Event) -> None:
        marks.append(time.perf_counter())

    if case == "refused":
        threading.Timer(DOWN_AT_S, proxy.down_for, args=(DOWN_FOR_S,)).start()
    ws = workdir / f"ws-{case}"
    with _measure.stopwatch() as watch:
        result = await expman.run_experiment(root, workspace=ws, subscribers=[clock])
    if not result.ok:
        raise SystemExit(f"integrations_outage: a run failed ({case}): {result.failed}")
    totals = result.integrations["mlflow"]
    # What the server holds, asked directly (not through the proxy).
    client = MlflowClient(f"http://127.0.0.1:{server.port}")
    _, children = experiment_runs(client, name)
    by_name = {c.info.run_name: c for c in children}
    expected = arrived = duplicates = 0
    for folder in runs_of(ws, name):
        want = history(folder)
        expected += sum(len(m) for m in want.values())
        child = by_name.get(f"{folder.parent.name}/{folder.name}")
        if child is None:
            continue
        shown, twice = series(client, child.info.run_id)
        duplicates += twice
        arrived += sum(
            1 for e, m in want.items() for k, v in m.items() if shown.get(e, {}).get(k) == v
        )
    return {
        "runs_s": marks[-1] - marks[0],
        "whole": watch.sample,
        "sent": totals["sent"],
        "lost": totals["lost"],
        "retries": totals["retries"],
        "expected": expected,
        "arrived": arrived,
        "missing": expected - arrived,
        "duplicates": duplicates,
        "requests": proxy.requests,
    }


async def main() -> None:
    cases = ("healthy", "delayed", "refused")
    figures: dict[str, dict[str, Any]] = {}
    with _measure.scratch() as tmp:
        workdir = Path(tmp)
        # A sqlite store's schema takes seconds to create: smoke sizes use a file store.
        folder = workdir / "server"
        folder.mkdir()
        backend = str(folder / "mlruns") if _measure.SMOKE else f"sqlite:///{migrated_db(folder)}"
        server = Server(backend, folder)
        try:
            await sweep(workdir, "warm-up", server, runs=1, epochs=2)  # imports, first client
            for case in cases:
                figures[case] = await sweep(workdir, case, server)
        finally:
            server.stop()
            shutil.rmtree(workdir / "server", ignore_errors=True)
    base = figures["healthy"]
    params = {
        "runs": RUNS,
        "max_concurrency": CONCURRENCY,
        "epochs": EPOCHS,
        "epoch_s": EPOCH_S,
        "delay_s": DELAY_S,
        "down_at_s": DOWN_AT_S,
        "down_for_s": DOWN_FOR_S,
    }
    for case in cases:
        got = figures[case]
        ratio = got["runs_s"] / base["runs_s"]
        what = {
            "healthy": "server healthy (through the proxy)",
            "delayed": f"each request delayed {DELAY_S:g} s",
            "refused": f"connections refused for {DOWN_FOR_S:g} s",
        }[case]
        _measure.emit(
            "integrations_outage",
            f"mlflow, {RUNS} runs x {EPOCHS} epochs: {what}",
            params=params,
            wall_s=got["runs_s"],
            items=RUNS,
            item="run",
            result=("runs' wall time / healthy", ratio, "x"),
            target=("<=", 1.05),
            whole_s=round(float(got["whole"]), 3),
            whole_ratio=round(float(got["whole"]) / float(base["whole"]), 3),
            without_s=round(base["runs_s"], 3),
            **{k: got[k] for k in ("sent", "lost", "retries", "expected", "arrived")},
            missing=got["missing"],
            duplicates=got["duplicates"],
            requests=got["requests"],
            lost_matches_missing=got["lost"] == got["missing"],
        )


if __name__ == "__main__":
    anyio.run(main)
