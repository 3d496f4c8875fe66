"""TensorBoard: what TensorBoard's own readers show is each run's history, once, across kill -9.

The oracles are TensorBoard's: ``EventAccumulator`` (the reader the issue names,
which purges on ``SessionLog.START``), the plugin multiplexer and data provider the
TensorBoard server reads through, and the hparams plugin's own context, which infers
the HPARAMS tab's experiment from the runs.  The expected values are each run's
``metrics.log`` (a later line for an epoch wins), as float32.
"""

from __future__ import annotations

import math
import os
import random
import struct
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import expman
from expman.config import IntegrationSpec
from expman.integrations import tfevents
from expman.integrations.base import ExportContext, ExportRun, Point
from expman.integrations.tensorboard import OPEN_FILES, TensorBoardExporter, event_files
from expman.jsonlines import read_lines
from expman.status import RunStatus
from tests.conftest import write_yaml
from tests.test_exact_resume import CHAIN, CHECKPOINTS
from tests.test_integrations import history, kill_at_random_moments, runs_of

Make = Callable[..., Path]
Series = dict[str, dict[int, tuple[float, float]]]  # tag -> step -> (wall time, value)


def f32(value: float) -> float:
    """``value`` as TensorBoard stores it (float32; beyond its range, an infinity)."""
    try:
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def read_back(folder: Path, *, purge: bool = True) -> tuple[Series, int]:
    """What EventAccumulator shows of one run's folder, and how many steps it shows twice.

    ``purge=False``: a reader that ignores ``SessionLog.START`` (TensorBoard's Rust
    data server, its default loader, does): what the files themselves hold.
    """
    acc = EventAccumulator(
        str(folder), size_guidance={"scalars": 0, "tensors": 0}, purge_orphaned_data=purge
    )
    acc.Reload()
    shown: Series = {}
    duplicates = 0
    for tag in acc.Tags()["scalars"]:
        series = shown.setdefault(tag, {})
        for scalar in acc.Scalars(tag):
            duplicates += scalar.step in series
            series[scalar.step] = (scalar.wall_time, scalar.value)
    return shown, duplicates


def expected(run: Path) -> Series:
    """A run's history from its metrics.log, per tag, as float32 with the epoch's time."""
    times: dict[int, float] = {}
    for entry in read_lines(run / "logs" / "metrics.log"):
        times[entry["epoch"]] = entry["time"]
    out: Series = {}
    for epoch, metrics in history(run).items():
        for name, value in metrics.items():
            out.setdefault(name, {})[epoch] = (times[epoch], f32(value))
    return out


def same(a: Series, b: Series) -> bool:
    if a.keys() != b.keys():
        return False
    for tag in a:
        if a[tag].keys() != b[tag].keys():
            return False
        for step, (when, value) in a[tag].items():
            other_when, other = b[tag][step]
            if when != other_when:
                return False
            if not (value == other or (math.isnan(value) and math.isnan(other))):
                return False
    return True


def tb_folder(ws: Path, run: Path, name: str = "exp") -> Path:
    return ws / name / "tensorboard" / run.parent.name / run.name


#: Values TensorBoard cannot hold as they are: rounding, NaN, infinities, beyond float32.
ODD = textwrap.dedent(
    """
    from expman import Pipeline


    class Odd(Pipeline):
        def __init__(self, epochs=6, **params):
            super().__init__(**params)
            self.epochs = epochs

        def run(self, ctx):
            for epoch in range(ctx.start_epoch, self.epochs):
                metrics = {
                    "loss": 1.0 / (epoch + 3),
                    "big": 1e39 * (-1) ** epoch,
                    "val/acc": epoch / 7,
                    "ünï": float(ctx.seed % 97) + 0.1,
                    "step_int": epoch * 3,
                    "text": "not a scalar",
                }
                if epoch == 2:
                    metrics["loss"] = float("nan")
                if epoch == 3:
                    metrics["loss"] = float("-inf")
                if epoch >= 4:
                    metrics["late"] = 1e-40
                if ctx.epoch_end(epoch, metrics):
                    break
            return {}
    """
)


def make_odd(make_experiment: Make, entry: dict[str, Any]) -> Path:
    root = make_experiment(
        experiment={"name": "exp", "id": 1, "settings": {"model": {"depth": 3}}},
        base={"pipeline": {"type": "odd:Odd"}, "lr": 0.1, "flag": True},
        trials=[{"name": "a", "id": 1, "repeat": 2}, {"name": "b c", "id": 2, "repeat": 1}],
        env={"execution": {"max_concurrency": 3}},
    )
    write_yaml(
        root / "experiment.yaml",
        {"name": "exp", "id": 1, "settings": {"model": {"depth": 3}}, "integrations": [entry]},
    )
    write_yaml(
        root / "trials.yaml",
        [
            {"name": "a", "id": 1, "repeat": 2, "settings": {"lr": 0.5}},
            {"name": "b c", "id": 2, "repeat": 1, "settings": {"lr": 0.25, "flag": False}},
        ],
    )
    (root / "odd.py").write_text(ODD)
    return root


# -- readback ------------------------------------------------------------------------------


async def test_every_value_reads_back_float32_exact_at_its_epoch_and_wall_time(
    make_experiment: Make, tmp_path: Path
) -> None:
    """EventAccumulator shows every scalar of every epoch: float32-exact, step = epoch, time."""
    root = make_odd(make_experiment, {"type": "tensorboard"})
    ws = tmp_path / "ws"
    result = await expman.run_experiment(root, workspace=ws)
    assert result.ok, result.failed
    runs = runs_of(ws)
    assert len(runs) == 3
    for run in runs:
        want = expected(run)
        assert set(want) == {"loss", "big", "val/acc", "ünï", "step_int", "late"}
        shown, duplicates = read_back(tb_folder(ws, run))
        assert duplicates == 0
        assert same(shown, want), run
        assert shown["big"][0][1] == math.inf  # beyond float32: its infinity
        assert shown["late"][4][1] == f32(1e-40) != 0.0  # a float32 subnormal survives
    totals = result.integrations["tensorboard"]
    assert totals["lost"] == 0
    assert totals["sent"] == sum(len(m) for r in runs for m in history(r).values())


async def test_hparams_tab_lists_every_run_with_its_flattened_settings(
    make_experiment: Make, tmp_path: Path
) -> None:
    """The hparams plugin infers one session per run, grouped by trial, from the settings."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins.hparams import backend_context, metadata

    root = make_odd(make_experiment, {"type": "tensorboard", "dir": str(tmp_path / "tb")})
    ws = tmp_path / "ws"
    assert (await expman.run_experiment(root, workspace=ws)).ok
    assert not (ws / "exp" / "tensorboard").exists()  # an absolute dir: there, not here

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path / "tb"))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(tmp_path / "tb"))
    ctx = context.RequestContext()
    content = backend_context.Context(
        type("TBContext", (), {"data_provider": provider, "multiplexer": mux, "flags": None})()
    )
    by_run = content.hparams_metadata(ctx, "")
    assert set(by_run) == {"a/run_0", "a/run_1", "b c/run_0"}
    starts = {
        run: metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
        for run, tags in by_run.items()
    }
    assert starts["b c/run_0"].group_name == "b c"
    assert starts["a/run_1"].group_name == "a"
    assert starts["a/run_0"].hparams["lr"].number_value == 0.5
    assert starts["b c/run_0"].hparams["lr"].number_value == 0.25
    assert starts["b c/run_0"].hparams["flag"].bool_value is False
    assert starts["a/run_0"].hparams["model.depth"].number_value == 3
    assert starts["a/run_0"].hparams["pipeline.type"].string_value == "odd:Odd"
    for tags in by_run.values():  # each run ended for good: its session end is there
        end = metadata.parse_session_end_info_plugin_data(tags[metadata.SESSION_END_INFO_TAG])
        assert end.status == 1  # STATUS_SUCCESS
    experiment = content.experiment_from_metadata(
        ctx, "", include_metrics=True, hparams_run_to_tag_to_content=by_run,
        data_provider_hparams=None,
    )  # fmt: skip
    names = {info.name for info in experiment.hparam_infos}
    assert {"lr", "flag", "model.depth"} <= names
    assert {m.name.tag for m in experiment.metric_infos} >= {"loss", "val/acc"}

    # hparams: false writes none of it.
    write_yaml(
        root / "experiment.yaml",
        {"name": "off", "id": 2, "integrations": [{"type": "tensorboard", "hparams": False}]},
    )
    assert (await expman.run_experiment(root, workspace=ws)).ok
    acc = EventAccumulator(str(ws / "off" / "tensorboard" / "a" / "run_0"))
    acc.Reload()
    with pytest.raises(KeyError, match="hparams"):
        acc.PluginTagToContent("hparams")
    assert "loss" in acc.Tags()["scalars"]


# -- rewind ----------------------------------------------------------------------------


def exporter(root: Path, **options: Any) -> TensorBoardExporter:
    spec = IntegrationSpec(
        type="tensorboard", name="tensorboard", options={"dir": "tensorboard", **options}
    )
    return TensorBoardExporter(spec, ExportContext("exp", "1", "", root.parent, root))


def a_run(root: Path, repeat: int = 0) -> ExportRun:
    return ExportRun(
        trial="t",
        repeat=repeat,
        trial_id="1",
        seed=7,
        config_hash="h",
        settings={"lr": 0.1},
        swept={},
        repeats=1,
        folder=root / "trials" / "t" / f"run_{repeat}",
    )


def points(first: int, last: int, sign: float, **extra: float) -> list[Point]:
    return [
        Point(e, 1000.0 * sign + e, {"loss": sign / (e + 1), **extra}) for e in range(first, last)
    ]


def plugin_series(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """What the TensorBoard server's Python reader (multiplexer, data provider) shows."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer

    mux = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={"scalars": 0})
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(logdir))
    got = provider.read_scalars(
        context.RequestContext(), experiment_id="", plugin_name="scalars", downsample=10**6
    )
    return {tag: [(d.step, d.value) for d in data] for tag, data in got["t/run_0"].items()}


def test_a_rewind_purges_orphans_even_those_never_sent_again(tmp_path: Path) -> None:
    """Epochs >= rewind vanish from every reader, re-sent or not; the new file sorts last."""
    root = tmp_path / "exp"
    run = a_run(root)
    first = exporter(root)
    binding = first.open(run, external=None, rewind=0)
    first.write(run, points(0, 10, 1.0, orphan=5.0))  # 'orphan' appears only here
    first.flush(run)
    first.close()
    assert binding.external == "tensorboard/t/run_0"
    before = event_files(Path(binding.location))

    # The next session (within the same second): rewind to 4, re-send only 4..6.
    second = exporter(root)
    assert second.open(run, external=binding.external, rewind=4) == binding
    second.write(run, points(4, 7, -1.0))
    second.finish(run, RunStatus.COMPLETED, None)
    second.flush(run)
    (new,) = set(event_files(Path(binding.location))) - set(before)
    assert event_files(Path(binding.location)) == [*before, new]  # read last

    shown, duplicates = read_back(Path(binding.location))
    assert duplicates == 0
    want = {e: f32(1.0 / (e + 1)) for e in range(4)} | {e: f32(-1.0 / (e + 1)) for e in (4, 5, 6)}
    assert {s: v for s, (_, v) in shown["loss"].items()} == want
    assert shown["loss"][5][0] == -1000.0 + 5  # the re-sent epoch's time
    assert sorted(shown.get("orphan", {})) == [0, 1, 2, 3]
    served = plugin_series(root / "tensorboard")
    assert served["loss"] == sorted(want.items())
    assert [s for s, _ in served["orphan"]] == [0, 1, 2, 3]
    # The earlier file was cut at the rewind: a reader that never purges sees the same.
    assert read_back(Path(binding.location), purge=False) == (shown, 0)

    # A rewind to 0 (a run the journal never saw exported) replaces all of it.
    third = exporter(root)
    third.open(run, external=None, rewind=0)
    third.write(run, points(0, 2, 2.0))
    third.flush(run)
    shown, duplicates = read_back(Path(binding.location))
    assert duplicates == 0
    assert {s: v for s, (_, v) in shown["loss"].items()} == {0: 2.0, 1: 1.0}
    assert "orphan" not in shown
    assert read_back(Path(binding.location), purge=False) == (shown, 0)


def test_a_record_torn_by_a_crash_is_cut_and_what_follows_is_read(tmp_path: Path) -> None:
    """Half a record at a file's end (a crash mid-append) is cut on the next open."""
    root = tmp_path / "exp"
    run = a_run(root)
    first = exporter(root)
    binding = first.open(run, external=None, rewind=0)
    first.write(run, points(0, 3, 1.0))
    (path,) = event_files(Path(binding.location))
    whole = path.stat().st_size
    with open(path, "ab") as f:
        f.write(tfevents.records([tfevents.scalars_event(3, 3.0, {"loss": 9.0})])[:-7])
    second = exporter(root)
    second.open(run, external=binding.external, rewind=3)
    second.write(run, points(3, 5, 1.0))
    assert path.stat().st_size == whole
    for purge in (True, False):
        shown, duplicates = read_back(Path(binding.location), purge=purge)
        assert duplicates == 0
        assert {s: v for s, (_, v) in shown["loss"].items()} == {
            e: f32(1.0 / (e + 1)) for e in range(5)
        }


def test_many_runs_hold_a_few_descriptors_and_an_ended_run_none(tmp_path: Path) -> None:
    """Only the runs written to last keep their file open; a run that ended closes its own."""
    root = tmp_path / "exp"
    tb = exporter(root)
    fds = len(os.listdir("/proc/self/fd"))
    runs = [a_run(root, k) for k in range(300)]
    for run in runs:
        tb.open(run, external=None, rewind=0)
        tb.write(run, points(0, 3, 1.0))
    assert len(os.listdir("/proc/self/fd")) <= fds + OPEN_FILES
    for run in runs:
        tb.write(run, points(3, 4, 1.0))  # reopened: the oldest are closed meanwhile
        tb.finish(run, RunStatus.COMPLETED, None)
        tb.flush(run)
    assert len(os.listdir("/proc/self/fd")) <= fds
    for run in (runs[0], runs[-1]):
        shown, _ = read_back(tb.folder(run))
        assert sorted(shown["loss"]) == [0, 1, 2, 3]
    tb.close()


def test_the_encoder_matches_tensorboards_crc_and_protobuf() -> None:
    """Both CRC paths agree with TensorBoard's own CRC-32C; the Event parses with protobuf."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    rng = random.Random(3)
    datas = [rng.randbytes(n) for n in [*range(1, 40), 255, 1023, 1024, 1025, 4000]]
    framed = tfevents.records(datas)  # vectorised (and the loop past 1024 bytes)
    assert framed == b"".join(tfevents.records([d]) for d in datas)  # the loop, one by one
    offset = 0
    for data in datas:
        length, head_crc = struct.unpack_from("<QI", framed, offset)
        assert length == len(data)
        assert head_crc == masked_crc32c(framed[offset : offset + 8])
        (crc,) = struct.unpack_from("<I", framed, offset + 12 + length)
        assert crc == masked_crc32c(data)
        offset += 16 + length
    event = Event.FromString(tfevents.scalars_event(2**40, 1.5, {"a": 0.5, "b/c": -2.0}))
    assert (event.step, event.wall_time) == (2**40, 1.5)
    assert [(v.tag, v.simple_value) for v in event.summary.value] == [("a", 0.5), ("b/c", -2.0)]


# -- exactly once across kill -9 --------------------------------------------------------------


def test_kill_9_at_random_moments_leaves_every_point_visible_once(
    make_experiment: Make, tmp_path: Path
) -> None:
    """Killed at random moments then resumed: TensorBoard shows each run's history, once."""
    root = make_experiment(
        experiment={"name": "exp", "id": 1, "settings": {}},
        base={
            "pipeline": {"type": "chain:Chain", "epochs": 12, "seconds": 0.05},
            "callbacks": [{**CHECKPOINTS, "interval": 3}],
        },
        trials=[{"name": "t", "id": 1, "repeat": 3}, {"name": "u", "id": 2, "repeat": 3}],
        env={"execution": {"max_concurrency": 3}},
    )
    (root / "chain.py").write_text(CHAIN)
    write_yaml(
        root / "experiment.yaml",
        {"name": "exp", "id": 1, "integrations": [{"type": "tensorboard"}]},
    )
    ws = tmp_path / "ws"
    kill_at_random_moments(root, ws, 61)
    runs = runs_of(ws)
    assert len(runs) == 6
    rewound = 0
    for run in runs:
        want = expected(run)
        assert sorted(want["x"]) == list(range(12))
        folder = tb_folder(ws, run)
        shown, duplicates = read_back(folder)
        assert duplicates == 0, run
        assert same(shown, want), run
        raw, duplicates = read_back(folder, purge=False)  # what the files hold
        assert duplicates == 0, run
        assert same(raw, want), run
        rewound += len(event_files(folder)) > 1
    assert rewound, "no run was ever reopened: the rewind is not exercised"
