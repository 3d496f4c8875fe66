"""Process executor: each run in its own worker process (a fresh interpreter: spawn).

The worker is ``python -c "...worker.main()" FD``: it gets the run in a ``start``
message over one end of a socket pair (length-prefixed JSON frames, see
:mod:`expman.executors.worker`), puts the config folder on its ``sys.path``, builds
the pipeline and runs it in its main thread, whether ``run`` is sync or async.

* **Live events.** ``ctx.epoch_end`` in the worker sends the epoch; the driver
  publishes ``EpochEnd`` on the bus and replies with ``should_stop``, so control
  callbacks stay synchronous with the run.  Stop requests and checkpoint requests
  travel the other way.
* **Logs.** The worker's stdout and stderr are one pipe read by the driver: structlog
  and ``logging`` write JSON lines there, raw prints become JSON entries
  (``logger: output``), and each line goes to the run's run.log as a ``LogRecord``.
  Before each message the worker writes a mark line; the driver publishes a message
  only once the output up to its mark is published, so run.log keeps the run's order.
  Output written at the C level (a segfault's report) is kept too.
* **Death.** A worker that exits before reporting its end (``os._exit``, SIGKILL, a
  segfault) fails its run with :class:`~expman.errors.WorkerLost` naming the exit
  code or signal; other runs go on.  A driver that dies takes its workers with it:
  the worker is given the driver's pid and asks the kernel for SIGKILL when its parent
  dies (Linux; elsewhere it watches its parent): ``worker.die_with_parent``.
* **Cancellation** (grace period over, timeout) terminates the worker, then kills it
  after ``kill_after`` seconds.
* **Devices.** With GPUs in the pool, a worker's ``CUDA_VISIBLE_DEVICES`` is its lease
  (empty when it leased none, so it sees no GPU), set before the pipeline is built.
* **Spare workers.** Starting an interpreter and importing expman takes a few hundred
  milliseconds; the executor keeps ``spare_workers`` (default 1) started and waiting, so
  that cost overlaps the previous run.  Each run still gets a process of its own.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import ByteReceiveStream, ByteStream, Process, TaskGroup

from expman.errors import WorkerLost
from expman.executors.base import Executor
from expman.executors.channel import Message
from expman.executors.remote import RemoteRun, start_message
from expman.executors.worker import MARK, output_record
from expman.jsonlines import dump_message, load_message, loads

if TYPE_CHECKING:
    from expman.executors.devices import ResourcePool
    from expman.run.context import RunContext

log = structlog.get_logger("expman.executors")
_HEADER = struct.Struct(">I")
_WORKER = "from expman.executors.worker import main; main()"
#: Output longer than this without a newline is cut into lines of this size.
MAX_LINE = 1 << 20


@dataclass(frozen=True, slots=True)
class ProcessStatistics:
    """A snapshot of a process executor's counts."""

    workers_started: int
    spares_used: int
    spares_waiting: int


class ProcessExecutor(Executor):
    """Runs each run in a fresh worker process; the bus stays here."""

    name = "process"

    def __init__(
        self,
        pool: ResourcePool | None = None,
        *,
        config_dir: Path | None = None,
        kill_after: float = 2.0,
        spare_workers: int = 1,
    ) -> None:
        self.pool = pool
        self.config_dir = config_dir
        self.kill_after = kill_after
        self.spare_workers = spare_workers
        self.workers_started = 0
        self.spares_used = 0
        # Invariant: every worker in _spares is started, has received nothing yet, and
        # is ended by __aexit__ unless a run takes it first.
        self._spares: list[_Worker] = []
        self._spawning = 0
        self._tasks: TaskGroup | None = None

    async def __aenter__(self) -> ProcessExecutor:
        if self.spare_workers > 0:
            tasks = anyio.create_task_group()
            await tasks.__aenter__()
            self._tasks = tasks
            tasks.start_soon(self._refill)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tasks, self._tasks = self._tasks, None
        if tasks is not None:
            tasks.cancel_scope.cancel()
            await tasks.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True):
            while self._spares:
                await self._spares.pop().end(self.kill_after)

    def statistics(self) -> ProcessStatistics:
        """Workers started so far, how many runs got a warm spare, spares waiting now."""
        return ProcessStatistics(self.workers_started, self.spares_used, len(self._spares))

    def environment(self) -> dict[str, str]:
        """A worker's environment: ours, with expman importable and output unbuffered."""
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def run_environment(self, ctx: RunContext) -> dict[str, str]:
        """Variables the worker sets before it builds the pipeline: its leased devices."""
        if self.pool is not None and self.pool.devices:
            return {"CUDA_VISIBLE_DEVICES": ",".join(ctx.devices)}
        return {}

    def sys_path(self) -> list[str]:
        """What the worker puts on ``sys.path``: the config folder, then the driver's."""
        paths = [str(self.config_dir)] if self.config_dir is not None else []
        paths.extend(p for p in sys.path if p and p not in paths)
        return paths

    async def _spawn(self) -> _Worker:
        parent, child = socket.socketpair()
        try:
            process = await anyio.open_process(
                [sys.executable, "-c", _WORKER, str(child.fileno()), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(child.fileno(),),
                env=self.environment(),
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.workers_started += 1
        worker = _Worker(process, parent)
        try:
            worker.stream = await anyio.abc.UNIXSocketStream.from_socket(parent)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await worker.end(self.kill_after)
            raise
        return worker

    async def _refill(self) -> None:
        """Keep ``spare_workers`` workers started and waiting (their start-up overlaps runs)."""
        while len(self._spares) + self._spawning < self.spare_workers:
            self._spawning += 1
            try:
                self._spares.append(await self._spawn())
            except Exception as exc:  # no spares then; each run starts its own worker
                log.warning("spare_worker_failed", error=repr(exc))
                return
            finally:
                self._spawning -= 1

    async def _take_worker(self) -> _Worker:
        while self._spares:
            worker = self._spares.pop(0)
            if worker.process.returncode is None:
                self.spares_used += 1
                break
            with anyio.CancelScope(shield=True):
                await worker.end(self.kill_after)
        else:
            worker = await self._spawn()
        if self._tasks is not None:
            self._tasks.start_soon(self._refill)
        return worker

    async def execute(self, ctx: RunContext) -> Mapping[str, Any] | None:
        worker = await self._take_worker()
        try:
            assert worker.stream is not None
            result: Mapping[str, Any] | None = await self._serve(ctx, worker.process, worker.stream)
            return result
        finally:
            with anyio.CancelScope(shield=True):
                await worker.end(self.kill_after)

    async def _serve(self, ctx: RunContext, process: Process, stream: ByteStream) -> Any:
        assert process.stdout is not None
        output = _Output(process.stdout)

        async def send(message: Message) -> None:
            body = dump_message(message)
            await stream.send(_HEADER.pack(len(body)) + body)

        remote = RemoteRun(ctx, send, before=output.wait_for_mark)
        failure: Exception | None = None
        result: Any = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(output.pump, remote)
            start = start_message(ctx, self.sys_path(), self.config_dir)
            start["env"] = self.run_environment(ctx)
            await remote.send(start)
            try:
                result = await remote.serve(_frames(stream))
            except WorkerLost:
                code = await process.wait()
                failure = WorkerLost(describe_exit(code))
            except Exception as exc:
                # Raised outside the task group, so the run fails with the pipeline's error.
                failure = exc
            # The run has ended: let the worker's last lines (a crash report) arrive.
            with anyio.move_on_after(self.kill_after):
                await output.closed.wait()
            tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return result


class _Worker:
    """One worker process and the driver's end of its socket pair."""

    def __init__(self, process: Process, sock: socket.socket) -> None:
        self.process = process
        self.sock = sock
        self.stream: ByteStream | None = None

    async def end(self, kill_after: float) -> None:
        await _end(self.process, kill_after)
        if self.stream is not None:
            await self.stream.aclose()
        else:
            self.sock.close()


def describe_exit(code: int) -> str:
    """Why a worker ended early, in words: its exit code or the signal that killed it."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the worker process was killed by {name} (signal {-code}) before its run ended"
    return f"the worker process exited with code {code} before its run ended"


async def _end(process: Process, kill_after: float) -> None:
    """Terminate a worker that is still alive, then kill it if it lingers."""
    if process.returncode is None:
        try:
            process.terminate()
        except ProcessLookupError:
            pass
        with anyio.move_on_after(kill_after):
            await process.wait()
        if process.returncode is None:
            try:
                process.kill()
            except ProcessLookupError:
                pass
    await process.aclose()


async def _frames(stream: ByteStream) -> AsyncIterator[Message]:
    """The worker's messages, until it closes its end."""
    buffer = bytearray()
    while True:
        while len(buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer)
            if len(buffer) < _HEADER.size + size:
                break
            body = bytes(buffer[_HEADER.size : _HEADER.size + size])
            del buffer[: _HEADER.size + size]
            yield load_message(body)
        try:
            buffer += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return


class _Output:
    """The worker's stdout+stderr: every line to run.log, and the marks it has passed."""

    def __init__(self, stream: ByteReceiveStream) -> None:
        self._stream = stream
        self.mark = 0
        self.closed = anyio.Event()
        self._moved = anyio.Event()

    async def wait_for_mark(self, message: Message) -> None:
        """Return once every line the worker wrote before ``message`` is published."""
        mark = message.get("mark")
        while mark is not None and self.mark < mark and not self.closed.is_set():
            moved = self._moved
            await moved.wait()

    def _advance(self, mark: int) -> None:
        self.mark = max(self.mark, mark)
        self._moved.set()
        self._moved = anyio.Event()

    async def pump(self, remote: RemoteRun) -> None:
        ctx = remote.ctx
        context: dict[str, Any] = {
            "experiment": ctx.experiment,
            "trial": ctx.trial,
            "repeat": ctx.repeat,
        }
        pending = b""
        try:
            while True:
                try:
                    chunk = await self._stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    break
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                if len(pending) > MAX_LINE:  # endless output without a newline
                    lines.append(pending)
                    pending = b""
                for line in lines:
                    await self._line(line, remote, context)
            if pending:
                await self._line(pending, remote, context)
        finally:
            self.closed.set()
            self._moved.set()

    async def _line(self, line: bytes, remote: RemoteRun, context: Mapping[str, Any]) -> None:
        text, found, mark = line.partition(MARK)
        if text.strip():
            await remote.publish_line(_as_json_line(text, context))
        if found:
            try:
                self._advance(int(mark))
            except ValueError:
                pass


def _as_json_line(text: bytes, context: Mapping[str, Any]) -> str:
    """The line itself when it is a JSON log entry, else the text wrapped as one."""
    stripped = text.strip()
    if stripped.startswith(b"{"):
        try:
            if isinstance(loads(stripped), dict):
                return stripped.decode("utf-8", "replace")
        except ValueError:
            pass
    decoded = text.rstrip(b"\r").decode("utf-8", "replace")
    return output_record(decoded, context).decode()
