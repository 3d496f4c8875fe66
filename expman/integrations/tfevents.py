"""TensorBoard's event files, encoded by hand: TFRecord framing and the scalar ``Event``.

An event file is a sequence of records, each ``length (u64 LE)``, the masked
CRC32C of those 8 bytes, the data, and the masked CRC32C of the data; the data is
an ``Event`` protobuf.  The protobuf library and tensorboardX's writer cost tens of
microseconds per value; here one epoch of a run is one ``Event`` whose ``Summary``
holds all its metrics as ``simple_value`` (float32), built from cached byte strings,
and the CRCs of a batch of records come from one vectorised NumPy gather (the
CRC of a record is the XOR of one table entry per byte, by its distance from the
record's end), so a batch costs well under a microsecond per value.  Small batches
take the plain table loop, which is cheaper below a few records.

The rare records (the file version, a restart's ``SessionLog.START``, the hparams
plugin's summaries) are passed in as already-encoded protobuf bytes by the caller
or built by :func:`event`; TensorBoard's own reader (``EventAccumulator``) is the
oracle of the tests.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Mapping, Sequence

import numpy as np

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected
_MASK_DELTA = 0xA282EAD8
#: Records up to this many bytes take the vectorised CRC (longer ones, rare, the loop).
_WIDEST = 1024
#: Below this many records in a batch, the loop is cheaper than NumPy's call overhead.
_VECTOR_FROM = 6
#: ... or when a record is this long (an hparams record of many settings).
_VECTOR_BYTES = 160


def _byte_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return table


_T8 = _byte_table()
_LITTLE = sys.byteorder == "little"  # the two-byte loop reads native words
# Two bytes at a time: the register's low 16 bits xor the next two input bytes.
_T16 = [_T8[_T8[i & 0xFF] & 0xFF ^ (i >> 8)] ^ (_T8[i & 0xFF] >> 8) for i in range(65536)]


def _distance_table() -> tuple[np.ndarray, np.ndarray]:
    """``BY_DISTANCE[d, b]``: the CRC contribution of byte ``b`` with ``d`` bytes after it.

    And ``AFFINE[n]``: what the initial register and the final xor add to the CRC of
    any ``n``-byte record, so that ``crc(m) = AFFINE[len(m)] ^ XOR BY_DISTANCE[...]``.
    """
    t8 = np.array(_T8, dtype=np.uint32)
    rows = np.empty((_WIDEST, 256), dtype=np.uint32)
    rows[0] = t8
    for d in range(1, _WIDEST):
        prev = rows[d - 1]
        rows[d] = t8[prev & 0xFF] ^ (prev >> 8)
    affine = np.empty(_WIDEST + 1, dtype=np.uint32)
    reg = 0xFFFFFFFF
    for n in range(_WIDEST + 1):
        affine[n] = reg ^ 0xFFFFFFFF
        reg = _T8[reg & 0xFF] ^ (reg >> 8)
    return rows.reshape(-1), affine


_BY_DISTANCE, _AFFINE = _distance_table()


def crc32c(data: bytes | memoryview) -> int:
    """The CRC-32C of ``data`` (the plain loop, two bytes a step)."""
    c = 0xFFFFFFFF
    if not _LITTLE:
        for byte in data:
            c = _T8[(c ^ byte) & 0xFF] ^ (c >> 8)
        return c ^ 0xFFFFFFFF
    n = len(data) & ~1
    table = _T16
    for word in memoryview(data)[:n].cast("H"):
        c = table[(c ^ word) & 0xFFFF] ^ (c >> 16)
    if len(data) & 1:
        c = _T8[(c ^ data[-1]) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes | memoryview) -> int:
    """The CRC TFRecord stores: rotated right by 15 bits, plus a constant."""
    x = crc32c(data)
    return (((x >> 15) | (x << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _masked_crcs(datas: Sequence[bytes]) -> list[int]:
    """The masked CRC-32C of each record, vectorised over the batch."""
    lengths = np.fromiter(map(len, datas), dtype=np.int64, count=len(datas))
    blob = np.frombuffer(b"".join(datas), dtype=np.uint8)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    # Each byte's distance to its record's end, then its table entry.
    distance = np.repeat(ends - 1, lengths) - np.arange(blob.size, dtype=np.int64)
    contributions = _BY_DISTANCE[distance * 256 + blob]
    crc = np.bitwise_xor.reduceat(contributions, starts) ^ _AFFINE[lengths]
    masked = ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(_MASK_DELTA)
    out: list[int] = masked.astype(np.uint32).tolist()
    return out


_HEADER_CRC: dict[int, bytes] = {}


def _header(length: int) -> bytes:
    found = _HEADER_CRC.get(length)
    if found is None:
        head = struct.pack("<Q", length)
        found = head + struct.pack("<I", masked_crc32c(head))
        if len(_HEADER_CRC) < 65536:
            _HEADER_CRC[length] = found
    return found


def records(datas: Sequence[bytes]) -> bytes:
    """``datas`` framed as TFRecords, ready to append to an event file."""
    if not datas:
        return b""
    widest = max(map(len, datas))
    if (len(datas) >= _VECTOR_FROM or widest >= _VECTOR_BYTES) and widest <= _WIDEST and all(datas):
        crcs = _masked_crcs(datas)
    else:
        crcs = [masked_crc32c(d) for d in datas]
    pack = struct.Struct("<I").pack
    parts: list[bytes] = []
    for data, crc in zip(datas, crcs, strict=True):
        parts += (_header(len(data)), data, pack(crc))
    return b"".join(parts)


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64: two's complement, ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


_SMALLS = 1 << 14
#: The varints of 0..16383 (steps, lengths): two bytes at most.
_SMALL = [_varint(i) for i in range(_SMALLS)]
_DOUBLE = struct.Struct("<d").pack
_FLOAT = struct.Struct("<f").pack
#: Each tag's encoded ``Summary.Value`` up to its float: ``value { tag: ..., simple_value: }``.
_VALUE_HEAD: dict[str, bytes] = {}


def _value_head(tag: str) -> bytes:
    found = _VALUE_HEAD.get(tag)
    if found is None:
        name = _field(1, tag.encode())
        found = b"\x0a" + _varint(len(name) + 5) + name + b"\x15"
        if len(_VALUE_HEAD) < 65536:
            _VALUE_HEAD[tag] = found
    return found


def float32(value: float) -> bytes:
    """``value`` as a little-endian float32 (beyond its range: the infinity of its sign)."""
    try:
        return _FLOAT(value)
    except OverflowError:
        return _FLOAT(float("inf") if value > 0 else float("-inf"))


def scalars_event(step: int, wall_time: float, metrics: Mapping[str, float]) -> bytes:
    """One ``Event``: ``wall_time``, ``step`` and a ``Summary`` of every metric, as float32."""
    parts: list[bytes] = []
    add = parts.append
    heads = _VALUE_HEAD
    for tag, value in metrics.items():
        add(heads.get(tag) or _value_head(tag))
        try:
            add(_FLOAT(value))
        except OverflowError:
            add(float32(value))
    summary = b"".join(parts)
    n = len(summary)
    return b"".join(
        (
            b"\x09",
            _DOUBLE(wall_time),
            b"\x10",
            _SMALL[step] if 0 <= step < _SMALLS else _varint(step),
            b"\x2a",
            _SMALL[n] if n < _SMALLS else _varint(n),
            summary,
        )
    )


def event(
    step: int,
    wall_time: float,
    *,
    file_version: str | None = None,
    summary: bytes | None = None,
    session_start: bool = False,
) -> bytes:
    """A rare ``Event``: the file's version, an encoded ``Summary``, or ``SessionLog.START``."""
    out = b"\x09" + _DOUBLE(wall_time) + (b"\x10" + _varint(step) if step else b"")
    if file_version is not None:
        out += _field(3, file_version.encode())
    if summary is not None:
        out += _field(5, summary)
    if session_start:
        out += _field(7, b"\x08\x01")  # SessionLog { status: START }
    return out


# -- the hparams plugin's records (HParamsPluginData, hand-encoded as the rest) --------

_HPARAMS_PLUGIN = "hparams"
#: ``tensorboard.plugins.hparams.api_pb2.Status``: what a session end says.
STATUS_SUCCESS, STATUS_FAILURE = 1, 2


def _double_field(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + _DOUBLE(value)


def plugin_summary(tag: str, content: bytes, plugin: str = _HPARAMS_PLUGIN) -> bytes:
    """A ``Summary`` of one value that carries only its plugin's data (``metadata``)."""
    data = _field(1, plugin.encode()) + _field(2, content)
    return _field(1, _field(1, tag.encode()) + _field(9, _field(1, data)))


def _hparam(value: bool | float | str) -> bytes:
    """A ``google.protobuf.Value``: bool, number (double) or string."""
    if isinstance(value, bool):
        return b"\x20" + (b"\x01" if value else b"\x00")
    if isinstance(value, (int, float)):
        return _double_field(2, float(value))
    return _field(3, str(value).encode())


def session_start_info(
    hparams: Mapping[str, bool | float | str], group: str, start_time: float
) -> bytes:
    """``HParamsPluginData { session_start_info { hparams, group_name, start_time_secs } }``."""
    info = b"".join(
        _field(1, _field(1, key.encode()) + _field(2, _hparam(value)))
        for key, value in hparams.items()
    )
    info += _field(4, group.encode()) + _double_field(5, start_time)
    return _field(3, info)  # version 0: left out


def session_end_info(status: int, end_time: float) -> bytes:
    """``HParamsPluginData { session_end_info { status, end_time_secs } }``."""
    return _field(4, b"\x08" + _varint(status) + _double_field(2, end_time))


# -- reading back: where a file's records start, and their steps ----------------------


def _read_varint(data: bytes | memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def event_step(data: bytes | memoryview) -> int:
    """The ``step`` of an encoded ``Event`` (0 when absent, as protobuf reads it)."""
    at, step = 0, 0
    while at < len(data):
        key, at = _read_varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _read_varint(data, at)
            if number == 2:
                step = value - (1 << 64) if value >= 1 << 63 else value
        elif wire == 1:
            at += 8
        elif wire == 2:
            length, at = _read_varint(data, at)
            at += length
        elif wire == 5:
            at += 4
        else:
            raise ValueError(f"not an Event: wire type {wire}")
    return step


def record_steps(blob: bytes) -> list[tuple[int, int]]:
    """``(offset, step)`` of each whole record of an event file's bytes, in order.

    Reading stops at the first record that is torn (a crash mid-append) or fails
    its header's CRC, or at a last record whose data fails its CRC: what follows is
    no record TensorBoard would read either.  (Only the last record's data is
    checked: a tear is at the end; the loop costs microseconds per record.)
    """
    out = []
    at = 0
    view = memoryview(blob)
    while at + 12 <= len(blob):
        (length,) = struct.unpack_from("<Q", blob, at)
        end = at + 12 + length + 4
        if blob[at : at + 12] != _header(length) or end > len(blob):
            break
        data = view[at + 12 : at + 12 + length]
        if end == len(blob) and blob[end - 4 : end] != struct.pack("<I", masked_crc32c(data)):
            break
        try:
            out.append((at, event_step(data)))
        except (ValueError, IndexError):
            break
        at = end
    return out
