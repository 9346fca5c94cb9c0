"""The ordinary day of a bucket, a window at a time: yesterday's records kept in runs, not one by one.

``daily.join_bucket`` walks the catalog track by track; on an ordinary day ~99% of those tracks
keep yesterday's record, and the Python work per kept record (a join step, an index entry, a copy,
a statistics row: ~15 µs) was most of the day's cost. Here the catalog is read in windows of
``WINDOW`` ids; yesterday's records in the same id range are matched against it as arrays (their
ids, versions, lengths and rows come from the record index), the few changed analyses are looked
up among them, and every run of consecutive kept records is copied with one slice of the part's
decompressed block, one index append and one statistics fold. The output is the same, byte for byte,
as the track-by-track path (tests/test_attributes_kept_runs.py); that path stays for full days
and for a yesterday whose parts cannot be copied (another schema, no record index).

Memory: one window of the catalog, the record index of yesterday's current part (as numpy columns,
``index_columns.read_columns``: ~110 bytes a record, not the ~250 of fastavro's lists) and one
decompressed block; nothing grows with the bucket.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.attributes.maths import compute
from pipeline.attributes.summary import VALUE_FIELDS, BucketStats, row_of
from pipeline.formats import ATTRIBUTES, fingerprint
from pipeline.formats.arrays import arrays
from pipeline.formats.index_columns import PartColumns
from pipeline.formats.record_index import IndexedPartsWriter, PartBytes
from pipeline.storage import Storage

WINDOW = 8192
ID = "S22"  # track ids are 22 base62 characters (pipeline/bucketing.py); anything else takes the general path


class NotCopyable(Exception):
    """Yesterday's bucket cannot be kept in runs (a part of another schema, or ids of another shape)."""


def _ids(values: np.ndarray) -> np.ndarray:
    """Catalog ids (UTF-8 bytes) as ``ID``; an id of another length cannot be matched in runs."""
    if len(values) and (values.dtype.itemsize != 22 or int(np.char.str_len(values).min()) != 22):
        raise NotCopyable("a track id is not 22 characters")
    return values.astype(ID, copy=False)


@dataclass
class _Part:
    """One part file of yesterday's bucket, as its record index describes it."""

    ids: np.ndarray  # ``ID`` bytes
    updated: np.ndarray  # source_updated_at, NaN for null
    lengths: np.ndarray
    rows: np.ndarray
    data: PartBytes


def _part_ids(index: PartColumns) -> np.ndarray:
    ids = index.ids
    if len(ids) and (ids.dtype.itemsize != 22 or int(np.char.str_len(ids).min()) != 22):
        raise NotCopyable(f"a track id of part {index.part} is not 22 characters")
    return ids.astype(ID, copy=False)


class Yesterday:
    """Yesterday's records in id order, taken a range of ids at a time, part by part."""

    def __init__(self, storage: Storage, parts: Iterable[PartColumns], url_of):
        self.storage, self.url_of, self._parts = storage, url_of, iter(parts)
        self.part: _Part | None = None
        self.at = 0  # first record of ``part`` not yet taken
        self._done: list[_Part] = []  # parts taken to their end, closed once their ranges were written
        self._load()

    def _load(self) -> None:
        if self.part is not None:
            self._done.append(self.part)
        self.part, self.at = None, 0
        for index in self._parts:
            if index.schema_fingerprint != fingerprint(ATTRIBUTES) or index.value_fields != VALUE_FIELDS:
                raise NotCopyable(f"part {index.part} was written with another schema")
            if len(index.ids):
                self.part = _Part(_part_ids(index), index.updated, index.lengths, index.values,
                                  PartBytes(self.storage, self.url_of(index.part), index.lengths))
                return

    def take_through(self, last: bytes | None) -> list[tuple[_Part, int, int]]:
        """The not yet taken records with ids ≤ ``last`` (all of them for None), as (part, start, stop) ranges.

        The ranges of the previous call are done with: their finished parts are closed now.
        """
        self._close_done()
        taken = []
        while self.part is not None:
            n = len(self.part.ids)
            stop = n if last is None else int(np.searchsorted(self.part.ids, last, side="right"))
            if stop > self.at:
                taken.append((self.part, self.at, stop))
            self.at = stop
            if stop < n:
                break
            self._load()
        return taken

    def _close_done(self) -> None:
        for part in self._done:
            part.data.close()
        self._done = []

    def close(self) -> None:
        self._close_done()
        if self.part is not None:
            self.part.data.close()


def _windows(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """The catalog's ids (blocks of UTF-8 bytes, in id order) in windows of ``WINDOW`` ids, as ``ID`` arrays."""
    pending: list[np.ndarray] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += len(block)
        while held >= WINDOW:
            ids = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield _ids(ids[:WINDOW])
            pending, held = [ids[WINDOW:]], held - WINDOW
    if held:
        yield _ids(np.concatenate(pending))


def _analyses_through(pending: list, analyses: Iterator[dict], last: str) -> list[dict]:
    """The analyses with ids ≤ ``last``; ``pending`` holds the one read past it."""
    out = []
    while True:
        if not pending:
            nxt = next(analyses, None)
            if nxt is None:
                return out
            pending.append(nxt)
        if pending[0]["track_id"] > last:
            return out
        out.append(pending.pop(0))


def _member(sorted_values: np.ndarray, of: np.ndarray) -> np.ndarray:
    """For each of ``of``, whether it is in ``sorted_values``."""
    at = np.searchsorted(sorted_values, of)
    found = at < len(sorted_values)
    found[found] = sorted_values[at[found]] == of[found]
    return found


def write_day(yesterday: Yesterday, catalog_ids: Iterable[np.ndarray], analyses: Iterable[dict], stats: BucketStats,
              out: IndexedPartsWriter) -> None:
    """Write a bucket of an ordinary day: kept records copied in runs, changed and new ones computed.

    ``catalog_ids`` are the day's catalog ids in blocks of UTF-8 bytes (``catalog.read_catalog_id_blocks``).
    """
    pending: list = []
    ana_it = iter(analyses)
    for catalog in _windows(catalog_ids):
        ranges = yesterday.take_through(catalog[-1])
        news = _analyses_through(pending, ana_it, catalog[-1].decode())
        _write_window(catalog, ranges, news, stats, out)
    stats.dropped += sum(stop - start for _, start, stop in yesterday.take_through(None))


def _write_window(catalog: np.ndarray, ranges: list[tuple[_Part, int, int]], news: list[dict],
                  stats: BucketStats, out: IndexedPartsWriter) -> None:
    prev_ids = np.concatenate([p.ids[a:b] for p, a, b in ranges]) if ranges else np.empty(0, ID)
    which = np.concatenate([np.full(b - a, i) for i, (_, a, b) in enumerate(ranges)]) if ranges else np.empty(0, int)
    pos = np.concatenate([np.arange(a, b) for _, a, b in ranges]) if ranges else np.empty(0, int)
    kept = _member(catalog, prev_ids)
    stats.dropped += int((~kept).sum())
    computed = []
    for new in news:
        track_id = new["track_id"]
        key = track_id.encode()
        in_catalog = catalog[min(int(np.searchsorted(catalog, key)), len(catalog) - 1)] == key
        if not in_catalog:
            continue
        at = int(np.searchsorted(prev_ids, key))
        have = at < len(prev_ids) and prev_ids[at] == key
        if have and _same_version(ranges[which[at]][0].updated[pos[at]], new["source_updated_at"]):
            continue  # the same analysis as yesterday's record: kept
        if have:
            kept[at] = False
        computed.append(new)
    keep = np.flatnonzero(kept)
    stats.kept += len(keep)
    stats.computed += len(computed)
    stats.without_analysis += len(catalog) - len(keep) - len(computed)
    insert = np.searchsorted(prev_ids[keep], np.asarray([c["track_id"] for c in computed], dtype=ID))
    done = 0
    for new, before in zip(computed, insert.tolist(), strict=True):
        _copy(keep[done:before], which, pos, ranges, stats, out)
        record = compute(arrays(new))
        row = row_of(record)
        out.write(record, row)
        stats.observe(record["track_id"], row)
        done = before
    _copy(keep[done:], which, pos, ranges, stats, out)


def _same_version(old: float, new: int | None) -> bool:
    return math.isnan(old) if new is None else old == new


def _copy(keep: np.ndarray, which: np.ndarray, pos: np.ndarray, ranges: list, stats: BucketStats,
          out: IndexedPartsWriter) -> None:
    """Copy kept records (window positions ``keep``, in order) in runs of consecutive records of one part."""
    if not len(keep):
        return
    parts, at = which[keep], pos[keep]
    bounds = [0, *(np.flatnonzero((parts[1:] != parts[:-1]) | (at[1:] != at[:-1] + 1)) + 1).tolist(), len(keep)]
    for first, end in zip(bounds, bounds[1:], strict=False):
        part: _Part = ranges[int(parts[first])][0]
        start, stop = int(at[first]), int(at[end - 1]) + 1
        rows = part.rows[start:stop]
        ids = part.ids[start:stop]
        out.write_raw_run(part.data.take(start, stop), part.lengths[start:stop], ids, part.updated[start:stop], rows)
        stats.observe_many(ids, rows)
