"""What a publish writes: every record of a snapshot (full load), or only what changed since a parent date.

The attributes job keeps a track's record byte for byte unless its analysis changed, and each
bucket of ``attributes/<date>`` carries a record index (``_index/records-*.avro``: ids,
``source_updated_at`` and encoded lengths per part). Two dates made by the same algorithm are
therefore diffed per bucket from their record indexes alone: a track is *kept* when its id,
``source_updated_at`` and encoded length agree, *changed* or *added* otherwise, *dropped* when
it is only in the parent. Only the changed and added records' bytes are sliced out of today's
parts (no decoding of the rest); the store receives those bytes as they are (the attributes
record's Avro binary encoding is the store's value).

Everything streams, so a daily publish's memory does not grow with the bucket (nor the
catalogue): the two indexes are read as numpy columns one part at a time
(``pipeline.formats.index_columns``), merged in id order by ``diff_columns``, and the bytes of
each change are sliced from today's part files as the merge reaches them, one decompressed block
at a time. What is held is at most one part's index per day plus ``CHUNK`` changes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import fastavro
import numpy as np

from pipeline import layout
from pipeline.errors import CorruptFileError, PipelineError
from pipeline.formats import ATTRIBUTES, fingerprint
from pipeline.formats.avro_raw import read_raw
from pipeline.formats.index_columns import PartColumns, read_columns
from pipeline.manifest import Manifest
from pipeline.serving import cells
from pipeline.serving.errors import PublishError
from pipeline.warehouse import Warehouse

CHUNK = 4096  # changes handed on at a time: their bytes are what the publish holds beyond the two parts


@dataclass(frozen=True)
class Change:
    """One track's change in a bucket: ``raw`` is None for a dropped track."""

    track_id: str
    kind: str  # "added" | "changed" | "dropped"
    raw: bytes | None = None


def diffable(wh: Warehouse, parent: dt.date, date: dt.date) -> str | None:
    """Why ``date`` cannot be diffed against ``parent`` (None when it can)."""
    if not wh.is_complete(layout.ATTRIBUTES, parent):
        return f"attributes/{layout.format_date(parent)} is not in the warehouse"
    old, new = wh.manifest(layout.ATTRIBUTES, parent, whole=True), wh.manifest(layout.ATTRIBUTES, date, whole=True)
    if old.buckets != new.buckets:
        return "the bucket count changed"
    if old.algorithm_version is None or old.algorithm_version != new.algorithm_version:
        return "the attributes algorithm version changed (or is unknown)"
    if old.schema_fingerprint != new.schema_fingerprint:
        return "the attributes schema changed"
    if not all(e.record_index for m in (old, new) for e in m.entries()):
        return "a bucket has no record index"
    return None


def _columns(wh: Warehouse, date: dt.date, manifest: Manifest, bucket: int) -> Iterator[PartColumns]:
    """A bucket's record index, part by part, checked: current schema, ids strictly increasing across parts."""
    entry = manifest.bucket(bucket)
    url = wh.layout.file_url(layout.ATTRIBUTES, date, entry.record_index or "")
    current, last = fingerprint(ATTRIBUTES), None
    for part in read_columns(wh.storage, url):
        if part.schema_fingerprint != current:
            raise PublishError(f"attributes/{layout.format_date(date)} part {part.part} was written with another "
                               "schema: publish it as a full load (--full)")
        if not len(part.ids) == len(part.updated) == len(part.lengths):
            raise CorruptFileError(f"record index {url} has columns of different lengths for {part.part}")
        ids = part.ids
        if len(ids) and ((last is not None and ids[0] <= last) or bool((ids[1:] <= ids[:-1]).any())):
            raise CorruptFileError(f"record index {url} is not sorted by track id at {part.part}")
        if len(ids):
            last = ids[-1]
        yield part


@dataclass
class _Side:
    """One day's index records not yet diffed: at most one part's worth (the diff consumes before it reads on)."""

    parts: Iterator[PartColumns]
    ids: np.ndarray
    updated: np.ndarray
    lengths: np.ndarray
    part: np.ndarray
    pos: np.ndarray
    done: bool = False
    number: int = -1

    @classmethod
    def of(cls, parts: Iterable[PartColumns]) -> _Side:
        empty = np.empty(0, np.int64)
        return cls(iter(parts), np.empty(0, "S22"), np.empty(0), empty, empty, empty)

    def fill(self) -> None:
        """Read parts until something is buffered or the bucket's index ends."""
        while not self.done and not len(self.ids):
            part = next(self.parts, None)
            if part is None:
                self.done = True
                return
            self.number += 1
            n = len(part)
            self.ids, self.updated, self.lengths = part.ids, part.updated, part.lengths
            self.part, self.pos = np.full(n, self.number, np.int64), np.arange(n, dtype=np.int64)

    def take(self, upto: bytes | None) -> tuple[np.ndarray, ...]:
        """Remove and return the buffered columns with ids <= ``upto`` (all with None)."""
        k = len(self.ids) if upto is None else int(np.searchsorted(self.ids, upto, side="right"))
        cols = tuple(c[:k] for c in (self.ids, self.updated, self.lengths, self.part, self.pos))
        self.ids, self.updated, self.lengths, self.part, self.pos = (
            c[k:] for c in (self.ids, self.updated, self.lengths, self.part, self.pos))
        return cols


DROPPED, CHANGED, ADDED = 0, 1, 2
KINDS = ("dropped", "changed", "added")


def diff_columns(old_parts: Iterable[PartColumns],
                 new_parts: Iterable[PartColumns]) -> Iterator[tuple[np.ndarray, ...]]:
    """The changes between two sorted record indexes, streamed: (ids, kind, part, position) arrays per step.

    A merge of two sorted streams, vectorised per step: each step diffs every buffered id up to
    the smallest "last buffered id" of the sides still reading (beyond it one side may not have
    read the id yet), then the side that ran out reads its next part. So memory is at most one
    part per side, whatever the bucket's size. ``kind`` codes: ``DROPPED``, ``CHANGED``, ``ADDED``;
    ``part`` is the index of today's part (-1 for a dropped track). Ids come out in order.
    """
    old, new = _Side.of(old_parts), _Side.of(new_parts)
    while True:
        old.fill()
        new.fill()
        if old.done and new.done and not len(old.ids) and not len(new.ids):
            return
        reading = [s.ids[-1] for s in (old, new) if not s.done]
        upto = min(reading) if reading else None
        o_ids, o_upd, o_len, _, _ = old.take(upto)
        n_ids, n_upd, n_len, n_part, n_pos = new.take(upto)
        at = np.searchsorted(o_ids, n_ids)
        found = at < len(o_ids)
        found[found] = o_ids[at[found]] == n_ids[found]
        match = at[found]
        same = np.zeros(len(n_ids), bool)
        same[found] = (((o_upd[match] == n_upd[found]) | (np.isnan(o_upd[match]) & np.isnan(n_upd[found])))
                       & (o_len[match] == n_len[found]))
        left = np.ones(len(o_ids), bool)
        left[match] = False
        changed = ~same
        ids = np.concatenate([n_ids[changed], o_ids[left]])
        if not len(ids):
            continue
        kind = np.concatenate([np.where(found[changed], CHANGED, ADDED), np.full(int(left.sum()), DROPPED)])
        part = np.concatenate([n_part[changed], np.full(int(left.sum()), -1)])
        pos = np.concatenate([n_pos[changed], np.full(int(left.sum()), -1)])
        order = np.argsort(ids, kind="stable")
        yield ids[order], kind[order].astype(np.int8), part[order], pos[order]


class _PartBytes:
    """Reads today's part files forward, block by block, slicing out the wanted records' bytes.

    Positions are asked for in increasing order (the diff's order), so each part file is read
    once and only one decompressed block is held at a time.
    """

    def __init__(self, wh: Warehouse, date: dt.date):
        self.wh, self.date = wh, date
        self.number, self._file, self._blocks, self._url = -1, None, None, ""
        self._first = self._last = 0
        self._data, self._ends = b"", np.empty(0, np.int64)
        self._lengths = np.empty(0, np.int64)

    def _open(self, number: int, part: PartColumns) -> None:
        self.close()
        self.number, self._lengths = number, part.lengths
        self._url = self.wh.layout.file_url(layout.ATTRIBUTES, self.date, part.part)
        self._file = self.wh.storage.open_read(self._url)
        self._blocks = fastavro.block_reader(self._file)
        self._first = self._last = 0

    def get(self, number: int, part: PartColumns, position: int) -> bytes:
        if number != self.number:
            self._open(number, part)
        try:
            while position >= self._last:
                block = next(self._blocks)  # type: ignore[arg-type]
                self._first, self._last = self._last, self._last + block.num_records
                self._data = block.bytes_.getvalue()
                self._ends = np.cumsum(self._lengths[self._first:self._last])
                if self._last > len(self._lengths) or int(self._ends[-1]) != len(self._data):
                    raise CorruptFileError(f"record index does not match {self._url} at byte {block.offset}")
        except (OSError, PipelineError):
            raise
        except StopIteration:
            raise CorruptFileError(f"record index lists more records than {self._url} holds") from None
        except Exception as exc:  # truncated blocks, bad codecs, garbage: whatever fastavro or cramjam raise
            raise CorruptFileError(f"cannot decode Avro file {self._url}: {type(exc).__name__}: {exc}") from exc
        i = position - self._first
        end = int(self._ends[i])
        return self._data[end - int(self._lengths[position]):end]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _Recorder:
    """Keeps today's part entries that a pending change still points at (the current one or two)."""

    def __init__(self, parts: Iterable[PartColumns]):
        self.parts, self.seen = iter(parts), {}

    def __iter__(self) -> Iterator[PartColumns]:
        for number, part in enumerate(self.parts):
            self.seen = {k: v for k, v in self.seen.items() if k >= number - 1}
            self.seen[number] = part
            yield part


def bucket_changes(wh: Warehouse, parent: dt.date, date: dt.date, bucket: int, with_bytes: bool = True,
                   chunk: int | None = None) -> Iterator[list[Change]]:
    """The changes of one bucket from ``parent`` to ``date`` in id order, in lists of at most ``chunk``.

    The new records' bytes are sliced out of today's parts as the diff reaches them: memory stays
    at one part's index per day plus one decompressed block, never the bucket.
    """
    chunk = chunk or CHUNK
    old_m = wh.manifest(layout.ATTRIBUTES, parent, whole=True)
    new_m = wh.manifest(layout.ATTRIBUTES, date, whole=True)
    today = _Recorder(_columns(wh, date, new_m, bucket))
    reader = _PartBytes(wh, date)
    try:
        for ids, kind, part, pos in diff_columns(_columns(wh, parent, old_m, bucket), today):
            for start in range(0, len(ids), chunk):
                out = []
                for i in range(start, min(len(ids), start + chunk)):
                    raw = None
                    if kind[i] != DROPPED and with_bytes:
                        number = int(part[i])
                        raw = reader.get(number, today.seen[number], int(pos[i]))
                    out.append(Change(ids[i].decode(), KINDS[kind[i]], raw))
                yield out
    finally:
        reader.close()


def full_records(wh: Warehouse, date: dt.date, manifest: Manifest, bucket: int) -> Iterator[tuple[dict, bytes]]:
    """Every record of a bucket with its Avro bytes (re-encoded when written with another schema)."""
    current = fingerprint(ATTRIBUTES)
    for url in wh.bucket_files(layout.ATTRIBUTES, date, bucket, manifest):
        for record, raw, fp in read_raw(wh.storage, url):
            yield record, (raw if fp == current else cells.encode(record))
