"""Streaming Avro reading and writing on warehouse URLs.

Writers are strict (a record that does not match its schema is an error, not a
silently defaulted field), stream record by record, and use a sync marker derived
from the file's identity, so the same records always give the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import fastavro
from fastavro.write import Writer

from pipeline.errors import CorruptFileError, PipelineError
from pipeline.formats import header_schema
from pipeline.storage import Storage, os_error

SYNC_INTERVAL = 256 * 1024
# Analysis files get smaller blocks: a compaction day's attributes decode only the changed analyses and
# skip every block without one (avro_select.py); in a 64 kB block few unchanged records share one.
BLOCK_BYTES = {"analysis": 64 * 1024}


def sync_interval(schema_name: str) -> int:
    """Uncompressed bytes per Avro block for files of ``schema_name``."""
    return BLOCK_BYTES.get(schema_name, SYNC_INTERVAL)


def sync_marker(identity: str) -> bytes:
    """16 bytes derived from a file's identity (deterministic output, unlike fastavro's random default)."""
    return hashlib.md5(identity.encode("utf-8"), usedforsecurity=False).digest()


class CountingFile:
    """Counts the bytes written through it (the Avro file size, without a stat afterwards).

    A write that fails (disk full while a part streams) becomes a ``StorageError`` naming the file.
    """

    def __init__(self, raw, url: str = ""):
        self.raw, self.url = raw, url
        self.bytes = 0

    def write(self, data) -> int:
        self.bytes += len(data)
        try:
            return self.raw.write(data)
        except OSError as exc:
            raise os_error(exc, self.url, "write") from exc

    def flush(self) -> None:
        self.raw.flush()

    def seekable(self) -> bool:
        return False  # tells fastavro this is a new file, not one to append to


@dataclass
class FileInfo:
    name: str
    records: int = 0
    bytes: int = 0


@contextlib.contextmanager
def open_writer(storage: Storage, url: str, schema_name: str, codec: str = "snappy",
                identity: str | None = None) -> Iterator[Callable[[dict], None]]:
    """Yield ``write(record)``; the file appears atomically at ``url`` when the block exits cleanly."""
    info = FileInfo(url.rsplit("/", 1)[-1])
    with storage.atomic_writer(url) as raw:
        out = CountingFile(raw, url)
        writer = Writer(out, header_schema(schema_name), codec=codec, sync_interval=sync_interval(schema_name),
                        sync_marker=sync_marker(identity or info.name), options={"strict": True})

        def write(record: dict) -> None:
            writer.write(record)
            info.records += 1

        write.info = info  # type: ignore[attr-defined]
        yield write
        writer.flush()
        info.bytes = out.bytes


def write_file(storage: Storage, url: str, schema_name: str, records: Iterable[dict], codec: str = "snappy",
               identity: str | None = None) -> FileInfo:
    with open_writer(storage, url, schema_name, codec, identity) as write:
        for record in records:
            write(record)
    return write.info  # type: ignore[attr-defined]


class LazyWriter:
    """One Avro file that is only created by its first record: an empty bucket leaves no file.

    A zero-record Avro file is valid, but some readers other teams use cannot open one (polars
    panics on it), so manifests list no file, and no index, for an empty bucket instead.
    ``close`` returns the file's ``FileInfo``, or None when nothing was written.
    """

    def __init__(self, storage: Storage, url: str, schema_name: str, codec: str = "snappy",
                 identity: str | None = None):
        self._args = (storage, url, schema_name, codec, identity)
        self._stack: contextlib.ExitStack | None = None
        self._write: Callable[[dict], None] | None = None

    def __call__(self, record: dict) -> None:
        if self._write is None:
            self._stack = contextlib.ExitStack()
            self._write = self._stack.enter_context(open_writer(*self._args))
        self._write(record)

    def close(self) -> FileInfo | None:
        if self._stack is None:
            return None
        self._stack.close()
        self._stack = None
        return self._write.info  # type: ignore[union-attr]

    def abort(self) -> None:
        """Drop the file being written (its temporary file never becomes visible)."""
        if self._stack is not None:
            with contextlib.suppress(Exception):
                self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
            self._stack = None


def write_nonempty(storage: Storage, url: str, schema_name: str, records: Iterable[dict], codec: str = "snappy",
                   identity: str | None = None) -> FileInfo | None:
    """``write_file``, except that no records means no file (None)."""
    writer = LazyWriter(storage, url, schema_name, codec, identity)
    try:
        for record in records:
            writer(record)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def read_records(storage: Storage, url: str) -> Iterator[dict]:
    """Stream the records of one Avro file; a decoding failure names the file."""
    try:
        with storage.open_read(url) as f:
            yield from fastavro.reader(f)
    except (OSError, PipelineError):
        raise
    except Exception as exc:  # truncated blocks, bad codecs, garbage: whatever fastavro or cramjam raise
        raise CorruptFileError(f"cannot decode Avro file {url}: {type(exc).__name__}: {exc}") from exc


def discard(stack: contextlib.ExitStack) -> None:
    """Unwind ``stack`` as if its block had failed: the atomic writers in it drop their temporary files."""
    with contextlib.suppress(Exception):
        stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


class AbortOnError:
    """What every part writer is: ``with Writer(...) as w:`` aborts ``w`` when the block raises.

    So no half-written file ever becomes visible, whatever fails (a download, an encoder, a kill
    signal turned into an exception); ``close()`` inside the block publishes what was written.
    """

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self.abort()
        return False


class RollingParts(AbortOnError):
    """An ordered stream of records in successive part files of one bucket, each appearing atomically.

    The one implementation of rolling, closing and aborting; a subclass says how a part is opened
    (``_open``: a writer with an ``info``) and sealed before its file is moved into place (``_seal``).
    """

    def __init__(self, storage: Storage, part_url: Callable[[int], str], schema_name: str, codec: str,
                 records_per_part: int, identity: str = "", on_part: Callable[[FileInfo], None] | None = None):
        self.storage, self.part_url, self.schema_name = storage, part_url, schema_name
        self.codec, self.records_per_part = codec, records_per_part
        self.identity = identity  # e.g. "analysis-full/2026-11-26": with the part name, seeds the sync markers
        self.on_part = on_part  # called with each part once it is in place
        self.parts: list[FileInfo] = []
        self._stack: contextlib.ExitStack | None = None
        self._part = None

    def _open(self, url: str, stack: contextlib.ExitStack, identity: str):
        raise NotImplementedError

    def _seal(self, part) -> None:
        """Last writes of a part, before its file is moved into place."""

    def _current(self):
        if self._part is None or self._part.info.records >= self.records_per_part:
            self._finish()
            url = self.part_url(len(self.parts))
            self._stack = contextlib.ExitStack()
            self._part = self._open(url, self._stack, f"{self.identity}/{url.rsplit('/', 1)[-1]}")
        return self._part

    def _finish(self) -> None:
        if self._part is not None:
            self._seal(self._part)
            self._stack.close()  # type: ignore[union-attr]
            self.parts.append(self._part.info)
            self._stack = self._part = None
            if self.on_part is not None:
                self.on_part(self.parts[-1])

    def close(self) -> list[FileInfo]:
        """Publish the last part; returns every part written (none for an empty bucket)."""
        self._finish()
        return self.parts

    def abort(self) -> None:
        """Drop the part being written (its temporary file never becomes visible)."""
        if self._stack is not None:
            discard(self._stack)
            self._stack = self._part = None


class RollingWriter(RollingParts):
    """Rolling part files written record by record with fastavro."""

    def _open(self, url: str, stack: contextlib.ExitStack, identity: str):
        return stack.enter_context(open_writer(self.storage, url, self.schema_name, self.codec, identity))

    def write(self, record: dict) -> None:
        self._current()(record)
