"""Weights & Biases: one W&B run per expman run, grouped by trial.

Each expman run is a W&B run named ``<trial>/run_<k>`` in ``group=<trial>`` (so W&B
draws the mean and band over the repeats), ``job_type=<experiment>``, with the run's
settings as its config (plus ``expman``: trial, repeat, seed, config hash) and the
entry's ``tags``.  Its steps are the epochs (``log(..., step=epoch)``, each epoch a
committed row, ``_timestamp`` the epoch's own time).

Identity: the W&B run id is generated once, when the run is first exported, and the
journal keeps it (``Binding.external``); every later session binds to that id.  A
run opened again (a retry, a resumed session) is opened with W&B's rewind,
``resume_from="<id>?_step=<rewind - 1>"``: W&B keeps the steps up to it and the
epochs from ``rewind`` on replace the orphaned ones, so steps only ever increase.

Offline: wandb 0.31 takes ``resume_from`` offline but cannot truncate anything there
(wandb-core: "when offline, we assume the run exists and we don't pull its past
data"); it starts the run at step ``rewind``.  Each session (and each retried
attempt) writes one more ``offline-run-*-<id>`` folder whose run record carries the
branch point (``_step = rewind - 1``); ``wandb sync`` of such a folder first calls
the server's ``RewindRun`` with it, then streams its steps, so the folders synced
oldest first leave every epoch there once.  Online, the rewind needs the server's
(preview) support; where it is refused, opening the run fails and is retried.

Final means on disk: wandb-core buffers the run's ``.wandb`` file (lost on kill -9),
so :meth:`WandbExporter.flush` waits until the file holds the last step written (the
core flushes it every :data:`LOG_FLUSH_INTERVAL` s) before the driver journals the
watermark.  Online, that is the local transaction log, not the server's copy.

Every call runs in the integration's one thread on ``Run`` objects
(``reinit="create_new"``), never on the global ``wandb.run``; wandb's console output
is off (``silent``, ``console="off"``) and :meth:`WandbExporter.close` shuts its
service process down once the last W&B integration of the process is closed.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import string
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wandb
from wandb.proto import wandb_internal_pb2

from expman.config import IntegrationSpec
from expman.integrations.base import Binding, ExportContext, Exporter, ExportRun, Point, Refused
from expman.status import RunStatus

#: Seconds between wandb-core's writes of a run's ``.wandb`` file.
LOG_FLUSH_INTERVAL = 0.02
#: How long :meth:`WandbExporter.flush` waits for the file to hold what was logged.
FLUSH_WAIT = 10.0
#: Statuses W&B shows as "finished" (exit code 0); the others end "failed".
_ID_CHARS = string.ascii_lowercase + string.digits

# The wandb service is per process: the last W&B integration to close shuts it down.
_service_lock = threading.Lock()
_service_users = 0


def new_run_id() -> str:
    """A fresh W&B run id (8 characters of [a-z0-9], as W&B makes them)."""
    return "".join(secrets.choice(_ID_CHARS) for _ in range(8))


@dataclass(slots=True)
class _Open:
    """One W&B run this session holds open."""

    wb: Any  # wandb.Run
    #: Its first step in this session (the rewind): the folder holds nothing before.
    start: int
    #: The highest step logged to it (start - 1 until one is).
    last: int
    log: TransactionLog | None


class WandbExporter(Exporter):
    """The ``wandb`` integration."""

    def __init__(self, spec: IntegrationSpec, context: ExportContext) -> None:
        super().__init__(spec, context)
        options = spec.options
        self.mode: str = options["mode"]
        self.project: str = options["project"]
        self.entity: str | None = options.get("entity")
        self.tags: list[str] = list(options.get("tags") or [])
        self.dir = context.workspace / options["dir"]
        self._runs: dict[tuple[str, int], _Open] = {}
        self._uses_service = False
        self._logged_in = False
        self._instance: bytes | None = None

    # -- the contract ------------------------------------------------------------------

    def open(self, run: ExportRun, *, external: str | None, rewind: int) -> Binding:
        self._end(run.key, exit_code=1)  # a new attempt: the previous one's segment ends
        self._start_service()
        run_id = external or self.run_id(run)
        branch: dict[str, Any] = {}
        if external is not None or self._written_before(run_id):
            # Keep steps < rewind there, replace the rest (offline: at sync time).  A run
            # the journal does not know may still be there: a kill -9 before the journal
            # recorded it; its id is the same (see run_id), so it is rewound, not doubled.
            branch["resume_from"] = f"{run_id}?_step={rewind - 1}"
        elif self.mode == "online":
            branch["resume"] = "allow"  # the same id, whether or not a crash made it
        wb = wandb.init(
            id=run_id,
            project=self.project,
            entity=self.entity,
            name=run.label,
            group=run.trial,
            job_type=self.context.experiment,
            tags=self.tags or None,
            config=self._config(run),
            dir=str(self.dir) if self.mode != "disabled" else None,
            reinit="create_new",
            settings=self._settings(),
            **branch,
        )
        log = TransactionLog(Path(wb.settings.sync_file)) if self.mode != "disabled" else None
        self._runs[run.key] = _Open(wb=wb, start=rewind, last=rewind - 1, log=log)
        location = (wb.url or "") if self.mode == "online" else str(self.dir)
        return Binding(run_id, location)

    def write(self, run: ExportRun, points: Sequence[Point]) -> None:
        held = self._runs.get(run.key)
        if held is None:
            raise Refused(f"{run.label} is not open in W&B")
        for point in points:
            if point.epoch <= held.last:
                continue  # a retried batch: logged before the failure
            held.wb.log({**point.metrics, "_timestamp": point.time}, step=point.epoch, commit=True)
            held.last = point.epoch

    def flush(self, run: ExportRun) -> None:
        held = self._runs.get(run.key)
        if held is None or held.log is None or held.last < held.start:
            return  # nothing logged to this session's folder: nothing to wait for
        deadline = time.monotonic() + FLUSH_WAIT
        while held.log.last_step() < held.last:
            if time.monotonic() > deadline:
                raise TimeoutError(f"step {held.last} of {run.label} is not in {held.log.path} yet")
            time.sleep(LOG_FLUSH_INTERVAL / 2)

    def finish(self, run: ExportRun, status: RunStatus, reason: str | None) -> None:
        held = self._runs.get(run.key)
        if held is None:
            return
        held.wb.summary["expman/status"] = str(status)
        if reason:
            held.wb.summary["expman/reason"] = reason
        self._end(run.key, exit_code=0 if status.is_finished else 1)

    def close(self) -> None:
        global _service_users
        try:
            for key in list(self._runs):
                self._end(key, exit_code=1)  # the session ends before the run did
        finally:
            if self._uses_service:
                self._uses_service = False
                with _service_lock:
                    _service_users -= 1
                    if _service_users == 0:
                        wandb.teardown()

    def run_id(self, run: ExportRun) -> str:
        """The run's W&B id: the same in every session of this experiment's workspace.

        It is derived from the experiment's folder, the first record of its journal
        (so ``--fresh`` or another workspace gets new ids) and the run's key, so that
        a session killed before the journal recorded the id finds the same W&B run.
        """
        if self._instance is None:
            journal = self.context.root / "logs" / "events.jsonl"
            try:
                with open(journal, "rb") as f:
                    first = f.readline()
            except OSError:
                first = b""
            if not first.endswith(b"\n"):
                return new_run_id()  # no journal to anchor it: a fresh one (journaled)
            self._instance = f"{self.context.root.resolve()}\0".encode() + first
        digest = hashlib.sha256(self._instance + f"\0{run.trial}\0{run.repeat}".encode())
        return "".join(_ID_CHARS[b % len(_ID_CHARS)] for b in digest.digest()[:8])

    def _written_before(self, run_id: str) -> bool:
        """Whether an earlier session left an offline folder of ``run_id``."""
        if self.mode != "offline":
            return False
        return any((self.dir / "wandb").glob(f"offline-run-*-{run_id}*"))

    # -- W&B ---------------------------------------------------------------------------

    def _start_service(self) -> None:
        global _service_users
        if self._uses_service:
            return
        if self.mode != "online":
            # Nothing may reach the network: wandb's crash reports included.
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
            if self.mode == "offline":
                self.dir.mkdir(parents=True, exist_ok=True)
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not self._logged_in:
                # Never a login prompt in the integration's thread: a key or nothing;
                # and no "Loaded credentials" line on the terminal either.
                wandb.setup(settings=wandb.Settings(silent=True, quiet=True))
                if not wandb.login(prompt=False, verify=False):
                    raise Refused(
                        "W&B has no API key: run `wandb login`, set WANDB_API_KEY,"
                        " or use mode: offline"
                    )
                self._logged_in = True
        with _service_lock:
            _service_users += 1
        self._uses_service = True

    def _settings(self) -> Any:
        return wandb.Settings(
            mode=self.mode,  # type: ignore[arg-type]
            silent=True,
            quiet=True,
            console="off",
            show_info=False,
            show_warnings=False,
            x_disable_stats=True,  # the machine's metrics, not the run's
            save_code=False,
            x_transaction_log_flush_interval=LOG_FLUSH_INTERVAL,
        )

    def _config(self, run: ExportRun) -> dict[str, Any]:
        return {
            **dict(run.settings),
            "expman": {
                "experiment": self.context.experiment,
                "experiment_id": self.context.experiment_id,
                "trial": run.trial,
                "trial_id": run.trial_id,
                "repeat": run.repeat,
                "repeats": run.repeats,
                "seed": run.seed,
                "config_hash": run.config_hash,
            },
        }

    def _end(self, key: tuple[str, int], *, exit_code: int) -> None:
        held = self._runs.pop(key, None)
        if held is not None:
            held.wb.finish(exit_code=exit_code)


# -- the run's .wandb file ----------------------------------------------------------------

_HEADER = 7  # ":W&B", magic 0xBEE1, version: the file's header; also a record's header size
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass(slots=True)
class TransactionLog:
    """A run's ``.wandb`` file, read as wandb-core appends it (the LevelDB log format).

    Records are protobuf ``wandb.Record``s split in chunks that never cross a 32 KiB
    block; :meth:`records` returns the complete ones added since the last call.
    """

    path: Path
    _pos: int = 0
    _chunks: list[bytes] = field(default_factory=list)
    _step: int = -1

    def records(self) -> list[Any]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return []
        out: list[Any] = []
        pos, at = self._pos, 0
        if pos == 0:
            if len(data) < _HEADER:
                return []
            if data[:4] != b":W&B":
                raise ValueError(f"{self.path} is not a W&B transaction log")
            pos = at = _HEADER
        while True:
            room = _BLOCK - pos % _BLOCK
            if room < _HEADER:  # a block's zero-filled tail
                if len(data) - at < room:
                    break
                pos, at = pos + room, at + room
                continue
            if len(data) - at < _HEADER:
                break
            _crc, length, kind = struct.unpack("<IHB", data[at : at + _HEADER])
            if len(data) - at < _HEADER + length:
                break  # written in part: the rest comes with a later flush
            chunk = data[at + _HEADER : at + _HEADER + length]
            pos, at = pos + _HEADER + length, at + _HEADER + length
            if kind in (_FULL, _FIRST):
                self._chunks = [chunk]
            else:
                self._chunks.append(chunk)
            if kind in (_FULL, _LAST):
                record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
                record.ParseFromString(b"".join(self._chunks))
                self._chunks = []
                out.append(record)
        self._pos = pos
        return out

    def last_step(self) -> int:
        """The highest history step in the file so far (-1: none)."""
        for record in self.records():
            if record.WhichOneof("record_type") == "history":
                self._step = max(self._step, record.history.step.num)
        return self._step
