"""The channel between a driver and its worker: length-prefixed JSON frames on a socket."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import sys
import threading
from typing import Any, Protocol

from expman.jsonlines import dump_message, load_message

Message = dict[str, Any]
_HEADER = struct.Struct(">I")
#: A line on a process worker's stdout that starts with this byte is a sync mark.
MARK = b"\x1e"


class Channel(Protocol):
    """Messages between the worker and the driver."""

    def send(self, message: Message) -> None: ...

    def receive(self, timeout: float | None) -> Message | None:
        """The next message; None when ``timeout`` passed; EOFError once closed."""
        ...


class SocketChannel:
    """Length-prefixed JSON frames over a blocking socket (the process worker's end).

    Before each message it flushes stdout/stderr and writes a mark line to fd 1, so
    the driver publishes what the run printed before the message first.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._marks = 0
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        with self._lock:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            self._marks += 1
            message["mark"] = self._marks
            with contextlib.suppress(OSError):
                os.write(1, MARK + str(self._marks).encode() + b"\n")
            body = dump_message(message)
            self._sock.sendall(_HEADER.pack(len(body)) + body)

    def receive(self, timeout: float | None) -> Message | None:
        if timeout is not None:
            ready, _, _ = select.select([self._sock], [], [], timeout)
            if not ready:
                return None
        header = self._read(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        message: Message = load_message(self._read(size))
        return message

    def _read(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self._sock.recv(size - len(data))
            if not chunk:
                raise EOFError("the driver closed the channel")
            data += chunk
        return bytes(data)
