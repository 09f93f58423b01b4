"""The record wire encoding of sluice plugin protocol version 1 (sdk/record/codec.go).

A Batch message's data field holds its count records back to back. Each record is:

    op        1 byte
    encoding  1 byte
    position  uvarint length, bytes
    key       uvarint length, bytes
    meta      uvarint count, then count x (uvarint length, key bytes, uvarint length, value bytes)
    payload   uvarint length, bytes

Uvarints are protobuf's: 7 bits a byte, least significant group first, high bit set on all but the last.
A metadata entry "sluice.time" carries the record's event time in nanoseconds since the Unix epoch, in
decimal; decode moves it into Record.time_ns.
"""

from typing import NamedTuple, Optional

OPS = ("unknown", "insert", "update", "replace", "delete", "snapshot", "heartbeat", "other")
ENCODINGS = ("raw", "json", "bson")
META_TIME = "sluice.time"


class CorruptBatch(ValueError):
    """The data is not a valid encoding of the number of records the batch says it holds."""


class Record(NamedTuple):
    op: str
    encoding: str
    position: bytes
    key: bytes
    meta: list  # of (key, value) string pairs, in order
    payload: bytes
    time_ns: Optional[int]  # event time, nanoseconds since the Unix epoch; None when unknown


class _Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.off = 0

    def byte(self) -> int:
        if self.off >= len(self.data):
            raise CorruptBatch("truncated header")
        b = self.data[self.off]
        self.off += 1
        return b

    def uvarint(self) -> int:
        value, shift = 0, 0
        while True:
            if self.off >= len(self.data) or shift > 63:
                raise CorruptBatch("bad length")
            b = self.data[self.off]
            self.off += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7

    def bytes(self) -> bytes:
        n = self.uvarint()
        if n > len(self.data) - self.off:
            raise CorruptBatch("length past end of data")
        b = bytes(self.data[self.off:self.off + n])
        self.off += n
        return b


def decode(data: bytes, count: int) -> list:
    """Decodes count records from data (a Batch's data field); raises CorruptBatch when it is not valid."""
    r = _Reader(data)
    records = []
    for i in range(count):
        try:
            op, encoding = r.byte(), r.byte()
            position, key = r.bytes(), r.bytes()
            meta, time_ns = [], None
            for _ in range(r.uvarint()):
                k = r.bytes().decode("utf-8", "surrogateescape")
                v = r.bytes().decode("utf-8", "surrogateescape")
                if k == META_TIME and time_ns is None and v.lstrip("-").isdigit():
                    time_ns = int(v)
                    continue
                meta.append((k, v))
            payload = r.bytes()
            if op >= len(OPS):
                raise CorruptBatch(f"unknown op {op}")
            if encoding >= len(ENCODINGS):
                raise CorruptBatch(f"unknown encoding {encoding}")
        except CorruptBatch as e:
            raise CorruptBatch(f"record {i}: {e}") from None
        records.append(Record(OPS[op], ENCODINGS[encoding], position, key, meta, payload, time_ns))
    if r.off != len(r.data):
        raise CorruptBatch(f"{len(r.data) - r.off} bytes left after {count} records")
    return records
