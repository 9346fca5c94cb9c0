"""Streaming Avro reading and writing on warehouse URLs.

Writers are strict (a record that does not match its schema is an error, not a
silently defaulted field), stream record by record, and use a sync marker derived
from the file's identity, so the same records always give the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import fastavro
from fastavro.write import Writer

from pipeline.errors import CorruptFileError, PipelineError
from pipeline.formats import schema
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
        writer = Writer(out, schema(schema_name), codec=codec, sync_interval=sync_interval(schema_name),
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


def read_records(storage: Storage, url: str) -> Iterator[dict]:
    """Stream the records of one Avro file; a decoding failure names the file."""
    try:
        with storage.open_read(url) as f:
            yield from fastavro.reader(f)
    except (OSError, PipelineError):
        raise
    except Exception as exc:  # truncated blocks, bad codecs, garbage: whatever fastavro or cramjam raise
        raise CorruptFileError(f"cannot decode Avro file {url}: {type(exc).__name__}: {exc}") from exc


@dataclass
class RollingWriter:
    """Writes an ordered stream of records into successive part files of one bucket."""

    storage: Storage
    part_url: Callable[[int], str]
    schema_name: str
    codec: str
    records_per_part: int
    identity: str = ""  # e.g. "analysis-full/2026-11-26": with the part name, seeds the sync markers
    parts: list[FileInfo] = field(default_factory=list)
    _stack: contextlib.ExitStack | None = None
    _write: Callable[[dict], None] | None = None

    def write(self, record: dict) -> None:
        if self._write is None or self._write.info.records >= self.records_per_part:  # type: ignore[attr-defined]
            self._roll()
        self._write(record)  # type: ignore[misc]

    def _roll(self) -> None:
        self._finish_part()
        url = self.part_url(len(self.parts))
        self._stack = contextlib.ExitStack()
        identity = f"{self.identity}/{url.rsplit('/', 1)[-1]}"
        self._write = self._stack.enter_context(
            open_writer(self.storage, url, self.schema_name, self.codec, identity))

    def _finish_part(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self.parts.append(self._write.info)  # type: ignore[union-attr]
            self._stack, self._write = None, None

    def close(self) -> list[FileInfo]:
        """Publish the last part; returns every part written (none for an empty bucket)."""
        self._finish_part()
        return self.parts

    def abort(self) -> None:
        """Drop the part being written (its temporary file never becomes visible)."""
        if self._stack is not None:
            with contextlib.suppress(Exception):
                self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
            self._stack, self._write = None, None
