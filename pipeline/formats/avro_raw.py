"""Copying already-encoded Avro records: read them with their bytes, write them without re-encoding.

The daily attributes keep most records unchanged from yesterday. Decoding a record costs ~10 µs,
encoding it again ~25 µs (unions and float arrays); copying its bytes costs nothing, and makes
"unchanged" byte-identical by construction. fastavro decodes the blocks and writes the header;
this module frames the blocks (count, size, compressed bytes, sync marker) as the Avro
specification says, for the codecs the warehouse uses.
"""

from __future__ import annotations

import contextlib
import io
import zlib
from collections.abc import Iterator

import cramjam
import fastavro
import numpy as np
from fastavro.write import Writer

from pipeline.errors import CorruptFileError, PipelineError
from pipeline.formats import header_schema, schema, schema_fingerprint
from pipeline.formats.avro_io import CountingFile, FileInfo, RollingParts, sync_interval, sync_marker
from pipeline.storage import Storage


def read_raw(storage: Storage, url: str) -> Iterator[tuple[dict, bytes, str]]:
    """(record, its encoded bytes, the file's schema fingerprint) for every record of a file."""
    try:
        with storage.open_read(url) as f:
            parsed = fp = None
            for block in fastavro.block_reader(f):
                if parsed is None:  # once per file: parsing the header's schema per record costs ~20 µs
                    parsed = fastavro.parse_schema(block.writer_schema)
                    fp = schema_fingerprint(parsed)
                data = block.bytes_
                view = data.getbuffer()
                for _ in range(block.num_records):
                    start = data.tell()
                    record = fastavro.schemaless_reader(data, parsed, None)
                    yield record, bytes(view[start:data.tell()]), fp
                del view
    except (OSError, PipelineError):
        raise
    except Exception as exc:  # truncated blocks, bad codecs, garbage: whatever fastavro or cramjam raise
        raise CorruptFileError(f"cannot decode Avro file {url}: {type(exc).__name__}: {exc}") from exc


def _long(n: int) -> bytes:
    """Avro's zig-zag varint encoding of a long."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _compress(codec: str, data: bytes) -> bytes:
    if codec == "null":
        return data
    if codec == "deflate":
        deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        return deflater.compress(data) + deflater.flush()
    if codec == "snappy":  # raw snappy followed by the big-endian CRC-32 of the uncompressed data
        return bytes(cramjam.snappy.compress_raw(data)) + zlib.crc32(data).to_bytes(4, "big")
    raise ValueError(f"codec {codec!r} is not supported for raw copies")


class RawFileWriter:
    """One Avro container file assembled from encoded records (and records encoded on the way)."""

    def __init__(self, out, schema_name: str, codec: str, identity: str):
        self.out, self.codec, self.parsed = out, codec, schema(schema_name)
        self.block_bytes = sync_interval(schema_name)
        self.sync = sync_marker(identity)
        Writer(out, header_schema(schema_name), codec=codec, sync_marker=self.sync)  # writes the header only
        self.block, self.count, self.info = io.BytesIO(), 0, FileInfo(identity.rsplit("/", 1)[-1])

    def write_raw(self, encoded: bytes) -> int:
        """Append one encoded record; returns its size."""
        self.block.write(encoded)
        self.count += 1
        self.info.records += 1
        if self.block.tell() >= self.block_bytes:
            self.flush()
        return len(encoded)

    def write_raw_run(self, data, lengths: np.ndarray) -> None:
        """Append many encoded records (concatenated in ``data``, sizes in ``lengths``).

        Blocks are flushed after exactly the records where ``write_raw`` one by one would flush
        them, so a file written in runs is byte-identical to one written record by record.
        """
        ends = np.cumsum(lengths, dtype=np.int64)
        first, start = 0, 0
        while first < len(ends):
            need = self.block_bytes - self.block.tell() + (int(ends[first - 1]) if first else 0)
            last = int(np.searchsorted(ends, need, side="left"))  # the record that fills the block
            stop = min(last + 1, len(ends))
            end = int(ends[stop - 1])
            self.block.write(data[start:end])
            self.count += stop - first
            self.info.records += stop - first
            if last < len(ends):
                self.flush()
            first, start = stop, end

    def write(self, record: dict) -> int:
        """Encode (strictly) and append one record; returns its encoded size."""
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.parsed, record, strict=True)
        return self.write_raw(buf.getvalue())

    def flush(self) -> None:
        if self.count:
            data = _compress(self.codec, self.block.getvalue())
            self.out.write(_long(self.count) + _long(len(data)) + data + self.sync)
            self.block, self.count = io.BytesIO(), 0


class RawRollingWriter(RollingParts):
    """Rolling part files for a mix of copied (``write_raw``) and new (``write``) records."""

    def _open(self, url: str, stack: contextlib.ExitStack, identity: str) -> RawFileWriter:
        self._counter = CountingFile(stack.enter_context(self.storage.atomic_writer(url)), url)
        return RawFileWriter(self._counter, self.schema_name, self.codec, identity)

    def _seal(self, part: RawFileWriter) -> None:
        part.flush()
        part.info.bytes = self._counter.bytes

    def write_raw(self, encoded: bytes) -> int:
        return self._current().write_raw(encoded)

    def room(self) -> int:
        """Records the current part still takes (a full part is closed, and a new one opened, first)."""
        return self.records_per_part - self._current().info.records

    def write_raw_run(self, data, lengths: np.ndarray) -> None:
        """``write_raw`` of many records that all fit in the current part (see ``room``)."""
        self._current().write_raw_run(data, lengths)

    def write(self, record: dict) -> int:
        return self._current().write(record)


class LazyRawWriter:
    """A ``RawFileWriter`` whose file only appears with its first record: an empty bucket leaves none.

    The raw counterpart of ``avro_io.LazyWriter``, for a file whose records arrive already encoded
    (the record index, ``index_encode.py``); same header, blocks and sync marker as fastavro's writer.
    """

    def __init__(self, storage: Storage, url: str, schema_name: str, codec: str, identity: str):
        self._args = (storage, url, schema_name, codec, identity)
        self._stack: contextlib.ExitStack | None = None
        self._writer: RawFileWriter | None = None
        self._out: CountingFile | None = None

    def _current(self) -> RawFileWriter:
        if self._writer is None:
            storage, url, schema_name, codec, identity = self._args
            self._stack = contextlib.ExitStack()
            self._out = CountingFile(self._stack.enter_context(storage.atomic_writer(url)), url)
            self._writer = RawFileWriter(self._out, schema_name, codec, identity)
        return self._writer

    def write_raw(self, encoded: bytes) -> int:
        return self._current().write_raw(encoded)

    def write(self, record: dict) -> int:
        return self._current().write(record)

    def close(self) -> FileInfo | None:
        """Publish the file (None when nothing was written)."""
        if self._writer is None or self._stack is None:
            return None
        self._writer.flush()
        self._writer.info.bytes = self._out.bytes if self._out else 0
        self._stack.close()
        self._stack = None
        return self._writer.info

    def abort(self) -> None:
        """Drop the file being written (its temporary file never becomes visible)."""
        if self._stack is not None:
            with contextlib.suppress(Exception):
                self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
            self._stack = None
