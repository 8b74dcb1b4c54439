"""TensorBoard event files, written without TensorFlow (for :class:`gpulayers.callbacks.TensorBoard`).

An event file is a sequence of records, each ``length`` (uint64, little
endian), the masked CRC-32C of those 8 bytes, the payload, and the masked
CRC-32C of the payload. Each payload is an ``Event`` protocol buffer; the
first says ``file_version: "brain.Event:2"``, the others carry a ``Summary``
of scalar values (``simple_value``) or histograms (``HistogramProto``). The
few protobuf fields used are encoded here by hand.
"""

import os
import socket
import struct
import threading
import time

import numpy as np

__all__ = ["EventFileWriter", "crc32c", "histogram_buckets"]

# ---------------------------------------------------------------- CRC-32C (Castagnoli), as TFRecord uses


def _crc_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data):
    """The CRC-32C checksum of ``data`` (bytes)."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------- protobuf pieces


def _varint(value):
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64s are ten-byte varints
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field, wire_type):
    return _varint((field << 3) | wire_type)


def _double(field, value):
    return _key(field, 1) + struct.pack("<d", float(value))


def _float(field, value):
    return _key(field, 5) + struct.pack("<f", float(value))


def _int64(field, value):
    return _key(field, 0) + _varint(int(value))


def _bytes(field, value):
    if isinstance(value, str):
        value = value.encode("utf-8")
    return _key(field, 2) + _varint(len(value)) + value


def _packed_doubles(field, values):
    return _bytes(field, b"".join(struct.pack("<d", float(v)) for v in values))


def _event(step, summary=None, file_version=None, wall_time=None):
    out = _double(1, time.time() if wall_time is None else wall_time) + _int64(2, step)
    if file_version is not None:
        out += _bytes(3, file_version)
    if summary is not None:
        out += _bytes(5, summary)
    return out


def histogram_buckets(values, bins=30):
    """TensorBoard's histogram of ``values``: ``(min, max, num, sum, sum_squares, bucket_limits, counts)``."""
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.size == 0:
        return 0.0, 0.0, 0, 0.0, 0.0, [0.0], [0.0]
    low, high = float(a.min()), float(a.max())
    if low == high:
        edges = np.array([low - 0.5, high + 0.5])
        counts = np.array([a.size], dtype=np.float64)
    else:
        counts, edges = np.histogram(a, bins=bins, range=(low, high))
    return low, high, a.size, float(a.sum()), float(np.dot(a, a)), [float(e) for e in edges[1:]], \
        [float(c) for c in counts]


# ---------------------------------------------------------------- the writer


class EventFileWriter:
    """Appends events to ``<log_dir>/events.out.tfevents.<time>.<host>.<pid>.<n>.v2``.

    The directory is made when the writer is; every write is flushed, so
    TensorBoard sees the values while training runs.
    """

    _count = 0
    _lock = threading.Lock()

    def __init__(self, log_dir):
        os.makedirs(log_dir, exist_ok=True)
        with EventFileWriter._lock:
            EventFileWriter._count += 1
            n = EventFileWriter._count
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{n}.v2"
        self.path = os.path.join(log_dir, name)
        self._file = open(self.path, "ab")
        self._write(_event(0, file_version="brain.Event:2"))

    def _write(self, payload):
        header = struct.pack("<Q", len(payload))
        self._file.write(header + struct.pack("<I", _masked_crc(header)) + payload
                         + struct.pack("<I", _masked_crc(payload)))
        self._file.flush()

    def scalar(self, tag, value, step):
        """One scalar ``value`` (a float) for ``tag`` at ``step``."""
        self._write(_event(step, summary=_bytes(1, _bytes(1, tag) + _float(2, value))))

    def histogram(self, tag, values, step, bins=30):
        """The histogram of an array's values for ``tag`` at ``step``."""
        low, high, num, total, squares, limits, counts = histogram_buckets(values, bins)
        histo = (_double(1, low) + _double(2, high) + _double(3, num) + _double(4, total) + _double(5, squares)
                 + _packed_doubles(6, limits) + _packed_doubles(7, counts))
        self._write(_event(step, summary=_bytes(1, _bytes(1, tag) + _bytes(5, histo))))

    def close(self):
        if not self._file.closed:
            self._file.close()


def read_events(path):
    """The records of an event file as ``(payload bytes, ...)``, each checked against its CRCs (for tests)."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    i = 0
    while i < len(data):
        header = data[i:i + 8]
        (length,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", data[i + 8:i + 12])
        if crc != _masked_crc(header):
            raise ValueError(f"Bad length checksum in {path} at byte {i}")
        payload = data[i + 12:i + 12 + length]
        (crc,) = struct.unpack("<I", data[i + 12 + length:i + 16 + length])
        if crc != _masked_crc(payload):
            raise ValueError(f"Bad payload checksum in {path} at byte {i}")
        out.append(payload)
        i += 16 + length
    return out
