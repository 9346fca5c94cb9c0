"""A bucket's record index as numpy columns, part by part, decoding only what the reader needs.

Why not ``fastavro``: a record index entry holds a part's 20,000-50,000 ids, ``source_updated_at``
and lengths as Avro arrays, and fastavro turns each into a list of Python objects (~1 s per million
entries, the larger half of a daily publish, and ~80 bytes an id). The daily diff of the serving
store and the daily attributes (which keep yesterday's records) only need these columns as arrays,
so the entry's bytes are parsed here directly with numpy: the ids (22-character strings, so items of
23 bytes) become an ``S22`` view, and the two integer columns are decoded as vectors of varints;
``values`` is skipped unless asked for (``with_values``). The Avro container (header, codec, sync
markers) is still read by ``fastavro.block_reader``.

The fast path covers what the writer produces; anything else (ids of another length, arrays
written in several blocks, nulls) is still parsed exactly, more slowly, and a file whose schema
is not the record index's is decoded by fastavro. Same columns either way (tests compare them).
The schema is ``pipeline/formats/record_index.avsc``, written by ``record_index.IndexedPartsWriter``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import fastavro
import numpy as np

from pipeline.errors import CorruptFileError, PipelineError
from pipeline.formats import RECORD_INDEX, fingerprint, schema_fingerprint
from pipeline.storage import Storage

ID_LENGTH = 22
_LONG_BYTES = 10  # the most bytes of one varint-encoded long


@dataclass(frozen=True)
class PartColumns:
    """One part file's entry: ids (``S``, file order), ``source_updated_at`` (float, NaN = null), lengths;
    with ``with_values``, the value rows (records × ``value_fields``, a read-only view)."""

    part: str
    schema_fingerprint: str
    ids: np.ndarray
    updated: np.ndarray
    lengths: np.ndarray
    value_fields: tuple[str, ...] = ()
    values: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


class _Unexpected(Exception):
    """The bytes do not have the layout the parser expects (the caller decodes them another way)."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """One zigzag varint (Avro int or long) at ``pos``: (value, position after it)."""
    shift = result = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Unexpected("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def _varints(u8: np.ndarray, pos: int, count: int, chunk: int = 8192) -> tuple[np.ndarray, int]:
    """Up to ``count`` consecutive zigzag varints from ``pos``, vectorised: (values, position after the last).

    Fewer come back when the buffer ends first; the caller takes as many as it needs. Chunked, so
    that the per-byte temporaries stay small whatever the part's size.
    """
    out: list[np.ndarray] = []
    while count > 0:
        n = min(count, chunk)
        window = u8[pos:pos + n * _LONG_BYTES]
        ends = np.flatnonzero(window < 0x80)[:n]
        if not len(ends):
            break
        starts = np.empty(len(ends), np.int64)
        starts[0], starts[1:] = 0, ends[:-1] + 1
        sizes = ends - starts + 1
        if int(sizes.max()) > _LONG_BYTES:
            raise _Unexpected("varint longer than 10 bytes")
        stop = int(ends[-1]) + 1
        shift = ((np.arange(stop) - np.repeat(starts, sizes)) * 7).astype(np.uint64)
        raw = np.add.reduceat((window[:stop] & 0x7F).astype(np.uint64) << shift, starts)
        out.append((raw >> np.uint64(1)).astype(np.int64) ^ -(raw & np.uint64(1)).astype(np.int64))
        pos += stop
        count -= len(ends)
        if len(ends) < n:
            break
    return (np.concatenate(out) if out else np.empty(0, np.int64)), pos


class _Parser:
    """Parses the record index entries of one block's bytes, in order."""

    def __init__(self, buf: bytes | memoryview):
        self.buf, self.u8, self.pos = buf, np.frombuffer(buf, np.uint8), 0

    def string(self) -> bytes:
        size, self.pos = _varint(self.buf, self.pos)
        end = self.pos + size
        if size < 0 or end > len(self.buf):
            raise _Unexpected("string past the end")
        out, self.pos = bytes(self.buf[self.pos:end]), end
        return out

    def skip_string(self) -> None:
        size, self.pos = _varint(self.buf, self.pos)
        if size < 0 or self.pos + size > len(self.buf):
            raise _Unexpected("string past the end")
        self.pos += size

    def strings(self) -> np.ndarray:
        """An array of strings as ``S`` bytes: 22-character ids as one strided view, others one by one."""
        parts: list[np.ndarray] = []
        while True:
            count = self._block_count()
            if count == 0:
                break
            end = self.pos + count * (ID_LENGTH + 1)
            items = self.u8[self.pos:end]
            if end <= len(self.buf) and (items[::ID_LENGTH + 1] == 2 * ID_LENGTH).all():  # each a 22-byte string
                ids = np.ascontiguousarray(items.reshape(count, ID_LENGTH + 1)[:, 1:])
                parts.append(ids.view(f"S{ID_LENGTH}").reshape(count))
                self.pos = end
            else:
                parts.append(np.array([self.string() for _ in range(count)], dtype=bytes))
        return np.concatenate(parts) if parts else np.empty(0, f"S{ID_LENGTH}")

    def _block_count(self) -> int:
        """The item count of the next block of an array (0 ends the array)."""
        count, self.pos = _varint(self.buf, self.pos)
        if count < 0:  # a block written with its byte size
            count = -count
            _, self.pos = _varint(self.buf, self.pos)
        return count

    def longs(self, nullable: bool) -> np.ndarray:
        """An array of int (``nullable`` False) or of the union [null, long] (NaN for null), as float64/int64."""
        parts: list[np.ndarray] = []
        while True:
            count = self._block_count()
            if count == 0:
                break
            parts.append(self._union_items(count) if nullable else self._int_items(count))
        if not parts:
            return np.empty(0, np.float64 if nullable else np.int64)
        return np.concatenate(parts)

    def _int_items(self, count: int) -> np.ndarray:
        values, self.pos = _varints(self.u8, self.pos, count)
        if len(values) < count:
            raise _Unexpected("array past the end")
        return values

    def _union_items(self, count: int) -> np.ndarray:
        values, end = _varints(self.u8, self.pos, 2 * count)
        if len(values) == 2 * count and (values[0::2] == 1).all():  # no null: branch, value, branch, ...
            self.pos = end
            return values[1::2].astype(np.float64)
        out = np.empty(count, np.float64)
        for i in range(count):  # nulls present: walk branch by branch
            branch, self.pos = _varint(self.buf, self.pos)
            if branch == 0:
                out[i] = np.nan
            elif branch == 1:
                out[i], self.pos = _varint(self.buf, self.pos)
            else:
                raise _Unexpected(f"union branch {branch}")
        return out

    def names(self) -> tuple[str, ...]:
        out: list[str] = []
        while count := self._block_count():
            out.extend(self.string().decode("utf-8") for _ in range(count))
        return tuple(out)

    def entry(self, with_values: bool) -> PartColumns:
        part, fp = self.string().decode("utf-8"), self.string().decode("ascii")
        ids, updated, lengths = self.strings(), self.longs(nullable=True), self.longs(nullable=False)
        fields = self.names()
        if with_values:  # a copy: the caller keeps it beyond this block
            rows = _rows(self.string(), fields, len(ids))
        else:
            rows = None
            self.skip_string()
        return PartColumns(part, fp, ids, updated, lengths, fields, rows)


def _rows(values: bytes, fields: tuple[str, ...], count: int) -> np.ndarray:
    rows = np.frombuffer(values, "<f8")
    if len(rows) != count * len(fields):
        raise _Unexpected(f"{len(rows)} values for {count} records of {len(fields)} fields")
    return rows.reshape(count, len(fields))


def _from_record(record: dict, with_values: bool = False) -> PartColumns:
    ids, fields = record["track_ids"], tuple(record.get("value_fields") or ())
    return PartColumns(record["part"], record["schema_fingerprint"],
                       np.array([t.encode() for t in ids], dtype=bytes) if ids else np.empty(0, f"S{ID_LENGTH}"),
                       np.array([np.nan if u is None else u for u in record["source_updated_at"]], np.float64),
                       np.asarray(record["lengths"], np.int64), fields,
                       _rows(record["values"], fields, len(ids)) if with_values else None)


def parse_block(buf: bytes | memoryview, num_records: int, with_values: bool = False) -> list[PartColumns]:
    """The entries encoded in one block's (decompressed) bytes; ``CorruptFileError``-free: raises ValueError."""
    parser = _Parser(buf)
    try:
        out = [parser.entry(with_values) for _ in range(num_records)]
    except (_Unexpected, IndexError) as exc:
        raise ValueError(f"record index block does not parse: {exc}") from exc
    if parser.pos != len(buf):
        raise ValueError(f"record index block has {len(buf) - parser.pos} bytes after its {num_records} entries")
    return out


@cache
def _index_fingerprint() -> str:
    return fingerprint(RECORD_INDEX)


def _parse(block, with_values: bool) -> list[PartColumns]:
    """Parse a block's bytes in place (a view, not a copy: a part's entry is ~6 MB decompressed)."""
    view = block.bytes_.getbuffer()
    try:
        return parse_block(view, block.num_records, with_values)
    finally:
        with contextlib.suppress(BufferError):  # a traceback may still hold the parser's array
            view.release()


def read_columns(storage: Storage, index_url: str, with_values: bool = False) -> Iterator[PartColumns]:
    """The entries of a bucket's record index, one per part file, in part order, as columns (and value rows)."""
    try:
        with storage.open_read(index_url) as f:
            reader = fastavro.block_reader(f)
            fast = schema_fingerprint(reader.writer_schema) == _index_fingerprint()
            for block in reader:
                entries = _parse(block, with_values) if fast else [_from_record(r, with_values) for r in block]
                block.bytes_.close()  # the reader keeps its last block: free the decompressed bytes now
                del block
                yield from entries
    except (OSError, PipelineError):
        raise
    except Exception as exc:  # truncated blocks, bad codecs, garbage: whatever fastavro, cramjam or the parser raise
        raise CorruptFileError(f"cannot decode record index {index_url}: {type(exc).__name__}: {exc}") from exc
