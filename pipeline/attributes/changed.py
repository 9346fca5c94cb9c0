"""The analyses of a day that the attributes must compute: those that changed since yesterday.

Why: on a compaction day the day's analysis set is the whole new full snapshot, but ~99% of its
records are the same analyses yesterday's attributes were computed from. Their versions are
known without touching a payload: the set's record index (or, for older sets, its id index) and
yesterday's record index list ``source_updated_at`` per track, both in track id order. A merge-join
of the two flags the records to decode; ``read_selected`` then skips every block that holds none of
them, and inside a block every record that is not flagged (by the lengths of the record index).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Iterator

import numpy as np

from pipeline import layout
from pipeline.errors import CorruptFileError
from pipeline.formats.avro_select import read_selected
from pipeline.formats.catalog_ids import read_id_version_blocks
from pipeline.formats.index_columns import read_columns
from pipeline.manifest import BucketManifest
from pipeline.warehouse import Warehouse

Versions = tuple[np.ndarray, np.ndarray]  # ids (UTF-8 bytes) and source_updated_at (NaN: null) of a run, in id order


def previous_versions(wh: Warehouse, date: dt.date, bucket: int) -> Iterator[Versions] | None:
    """(track ids, source_updated_at) of yesterday's attributes, part by part from their record index; None
    without one."""
    entry = wh.manifest(layout.ATTRIBUTES, date).bucket(bucket)
    if not entry.record_index:
        return None

    def versions() -> Iterator[Versions]:
        for part in read_columns(wh.storage, wh.layout.file_url(layout.ATTRIBUTES, date, entry.record_index)):
            yield part.ids, part.updated

    return versions()


class _Through:
    """Sorted (id, version) blocks, taken up to an id at a time, as arrays."""

    def __init__(self, blocks: Iterable[Versions]):
        self.blocks = iter(blocks)
        self.ids, self.versions = np.empty(0, "S1"), np.empty(0)

    def take(self, last: bytes) -> tuple[np.ndarray, np.ndarray]:
        ids, versions = [self.ids], [self.versions]
        while not len(self.ids) or self.ids[-1] <= last:
            block = next(self.blocks, None)
            if block is None:
                break
            self.ids, self.versions = np.asarray(block[0]), np.asarray(block[1], dtype=np.float64)
            ids.append(self.ids)
            versions.append(self.versions)
        all_ids, all_versions = np.concatenate(ids), np.concatenate(versions)
        stop = int(np.searchsorted(all_ids, last, side="right"))
        self.ids, self.versions = all_ids[stop:], all_versions[stop:]
        return all_ids[:stop], all_versions[:stop]


class _Changed:
    """Per record of the day's index, block by block: True when yesterday had no attributes for it or
    another version (yesterday's versions are read along, in id order)."""

    def __init__(self, previous: Iterable[Versions]):
        self.through = _Through(previous)

    def __call__(self, ids: np.ndarray, versions: np.ndarray) -> np.ndarray:
        if not len(ids):
            return np.zeros(0, bool)
        old_ids, old_versions = self.through.take(ids[-1])
        if not len(old_ids):
            return np.ones(len(ids), bool)
        at = np.minimum(np.searchsorted(old_ids, ids), len(old_ids) - 1)
        same = (old_ids[at] == ids) & ((old_versions[at] == versions)
                                       | (np.isnan(old_versions[at]) & np.isnan(versions)))
        return ~same


def changed_flags(index: Iterable[Versions], previous: Iterable[Versions]) -> Iterator[bool]:
    """Per id-index record, in order: True when yesterday had no attributes for it or another version.

    ``index`` is the day's id index in blocks of (ids, versions) arrays (``catalog_ids``), vectorised
    a block at a time: on a compaction day the index lists the whole bucket.
    """
    changed = _Changed(previous)
    for ids, versions in index:
        yield from changed(ids, versions).tolist()


def changed_analyses(wh: Warehouse, dataset: str, date: dt.date, bucket: int,
                     previous: Iterable[Versions]) -> Iterator[dict] | None:
    """The bucket's analysis records that changed since ``previous``, decoded; None when it has no id index.

    With the set's record index, each part's flags come from its own entry and the unchanged records
    of a block are skipped by their lengths; older sets go through the id index and decode a block's
    records up to the last changed one.
    """
    manifest = wh.manifest(dataset, date)
    entry = manifest.bucket(bucket)
    if entry.record_index:
        return _through_record_index(wh, dataset, date, entry, previous)
    if not entry.index:
        return None

    def records() -> Iterator[dict]:
        flags = changed_flags(read_id_version_blocks(wh.storage, wh.layout.file_url(dataset, date, entry.index)),
                              previous)
        for f in entry.files:
            wanted = list(itertools.islice(flags, f.records))
            if any(wanted):
                yield from read_selected(wh.storage, wh.layout.file_url(dataset, date, f.name), wanted)

    return records()


def _through_record_index(wh: Warehouse, dataset: str, date: dt.date, entry: BucketManifest,
                          previous: Iterable[Versions]) -> Iterator[dict]:
    changed, url = _Changed(previous), wh.layout.file_url(dataset, date, entry.record_index or "")
    parts = read_columns(wh.storage, url)
    for f, part in itertools.zip_longest(entry.files, parts):
        if f is None or part is None or part.part != f.name or len(part) != f.records:
            raise CorruptFileError(f"{url} does not describe the bucket's files: {part.part if part else None} "
                                   f"where the manifest has {f.name if f else None}")
        flags = changed(part.ids, part.updated)
        if flags.any():
            yield from read_selected(wh.storage, wh.layout.file_url(dataset, date, part.part), flags, part.lengths)
