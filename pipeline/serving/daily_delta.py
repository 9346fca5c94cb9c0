"""The delta segment of a daily version, built as the day's changes stream past, in flat memory.

A daily index (``pipeline.serving.similarity``) is its base's segment as it is, plus a delta
segment of every track changed since the base, plus the base rows that are dead. Today's delta
is the parent's delta rows that today did not touch, merged with today's changed and added
tracks; the dead rows are the parent's plus the base rows of today's changes. Everything here
is sorted by id within a bucket (the warehouse's order), so the merge reads the parent's delta
rows and the base's lookup columns *forward*, a block at a time, with plain file reads: memory
maps would leave every page they touched in this process's RSS, and a bucket's worth of them
grows with the catalogue.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.serving import cells
from pipeline.serving.errors import PublishError
from pipeline.serving.features import ID_LENGTH, ROW, RowSpill, feature_row
from pipeline.serving.similarity import SimilarityIndex

BLOCK = 65536  # records per file read
IDS = f"S{ID_LENGTH}"


class SortedReader:
    """Records ``[lo, hi)`` of a flat file sorted by ``key``, read forward a block at a time as ascending keys ask."""

    def __init__(self, path: Path, dtype: np.dtype | str, lo: int, hi: int, key: str | None = None):
        self.path, self.dtype, self.key = path, np.dtype(dtype), key
        self.next, self.hi = lo, hi
        self.buf = np.empty(0, self.dtype)

    def keys(self) -> np.ndarray:
        return self.buf if self.key is None else self.buf[self.key]

    def read(self) -> bool:
        """Append the next block to the buffer; False at the end of the range."""
        if self.next >= self.hi:
            return False
        count = min(BLOCK, self.hi - self.next)
        block = np.fromfile(self.path, self.dtype, count=count, offset=self.next * self.dtype.itemsize)
        if len(block) != count:
            raise PublishError(f"{self.path} is shorter than its index's meta says: rebuild with a full load (--full)")
        self.next += count
        self.buf = np.concatenate([self.buf, block]) if len(self.buf) else block
        return True

    def take_below(self, key: bytes | None) -> np.ndarray:
        """Remove and return up to about a block of the records with key < ``key`` (any, with None); empty when none."""
        if not len(self.buf):
            self.read()
        k = len(self.buf) if key is None else int(np.searchsorted(self.keys(), key))
        out, self.buf = self.buf[:k], self.buf[k:]
        return out

    def take_upto(self, key: bytes) -> np.ndarray:
        """Remove and return every record with key <= ``key``."""
        while (not len(self.buf) or self.keys()[-1] <= key) and self.read():
            pass
        k = int(np.searchsorted(self.keys(), key, side="right"))
        out, self.buf = self.buf[:k], self.buf[k:]
        return out


class BaseLookup:
    """The base segment's row of each id of one bucket, for sorted ids that ascend from call to call.

    Holds the base's lookup entries from the first id of the last call to its last: the span of one
    chunk of changes, never the bucket.
    """

    def __init__(self, index: SimilarityIndex, bucket: int):
        seg = index.base
        lo, hi = int(seg.bucket_offsets[bucket]), int(seg.bucket_offsets[bucket + 1])
        self._ids = SortedReader(seg.column_path("lookup_ids"), IDS, lo, hi)
        self._rows = SortedReader(seg.column_path("lookup_rows"), "<i4", lo, hi)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Base row of each of the sorted ``ids``, -1 where the base has none."""
        if not len(ids):
            return np.empty(0, np.int64)
        skip = int(np.searchsorted(self._ids.buf, ids[0]))
        self._ids.buf, self._rows.buf = self._ids.buf[skip:], self._rows.buf[skip:]
        while (not len(self._ids.buf) or self._ids.buf[-1] < ids[-1]) and self._ids.read():
            self._rows.read()
        buf = self._ids.buf
        at = np.searchsorted(buf, ids)
        found = at < len(buf)
        found[found] = buf[at[found]] == ids[found]
        out = np.full(len(ids), -1, np.int64)
        out[found] = self._rows.buf[at[found]]
        return out


class DailyDelta:
    """Today's changes, chunk by chunk in id order, merged with the parent's delta rows into the new delta's spill."""

    def __init__(self, parent: SimilarityIndex, scratch: Path, buckets: int):
        if parent.base.buckets != buckets:
            raise PublishError(f"the base index has {parent.base.buckets} buckets and the snapshot {buckets}: "
                               "publish it as a full load (--full)")
        self.parent = parent
        self.spill = RowSpill(str(scratch / "delta.spill"))
        self.dead: list[np.ndarray] = [parent.dead]
        self.new_tracks = 0  # delta rows of tracks not in the base: with the dead rows, the drift
        self._old: SortedReader | None = None
        self._base: BaseLookup | None = None

    def start_bucket(self, bucket: int) -> None:
        seg = self.parent.delta
        if seg is not None:
            lo, hi = int(seg.bucket_offsets[bucket]), int(seg.bucket_offsets[bucket + 1])
            self._old = SortedReader(self.parent.directory / "delta.rows", ROW, lo, hi, key="id")
        self._base = BaseLookup(self.parent, bucket)

    def add(self, changes: list) -> None:
        """One chunk of today's changes (sorted by id, after the previous chunk's)."""
        if not changes:
            return
        ids = np.array([c.track_id.encode("ascii") for c in changes], IDS)
        old = np.empty(0, ROW)
        if self._old is not None:
            while len(before := self._old.take_below(ids[0])):  # untouched parent rows before the chunk
                self._spill(before)
            old = self._old.take_upto(ids[-1])
            old = old[~np.isin(old["id"], ids)]
        fresh = [c for c in changes if c.raw is not None]
        new = np.zeros(len(fresh), ROW)
        for i, change in enumerate(fresh):
            feature_row(cells.decode(change.raw), new[i])
        rows = np.concatenate([old, new])
        rows = rows[np.argsort(rows["id"], kind="stable")]
        keys = np.union1d(ids, rows["id"])
        base = self._base.rows(keys)  # type: ignore[union-attr]
        dead = base[np.isin(keys, ids, assume_unique=True)]
        if (dead >= 0).any():
            self.dead.append(dead[dead >= 0])
        self._spill(rows, base[np.isin(keys, rows["id"], assume_unique=True)])

    def _spill(self, rows: np.ndarray, base_rows: np.ndarray | None = None) -> None:
        if base_rows is None:
            base_rows = self._base.rows(rows["id"])  # type: ignore[union-attr]
        self.new_tracks += int((base_rows < 0).sum())
        self.spill.add_rows(rows)

    def end_bucket(self) -> None:
        if self._old is not None:
            while len(rest := self._old.take_below(None)):
                self._spill(rest)
        self._old = self._base = None
        self.spill.end_bucket()

    def finish(self) -> tuple[int, np.ndarray, int]:
        """(delta rows, sorted dead base rows, drift: tracks that differ from the base)."""
        self.spill.close()
        dead = np.unique(np.concatenate(self.dead))
        return self.spill.n, dead, len(dead) + self.new_tracks
