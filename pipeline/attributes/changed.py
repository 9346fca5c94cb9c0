"""The analyses of a day that the attributes must compute: those that changed since yesterday.

Why: on a compaction day the day's analysis set is the whole new full snapshot, but ~99% of its
records are the same analyses yesterday's attributes were computed from. Their versions are
known without touching a payload: the set's id index (``_index/ids-*``) and yesterday's record
index list ``source_updated_at`` per track, both in track id order. A merge-join of the two
flags the records to decode; ``read_selected`` then skips every block that holds none of them.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Iterator

from pipeline import layout
from pipeline.formats.avro_select import read_selected
from pipeline.formats.record_index import read_index
from pipeline.warehouse import Warehouse


def previous_versions(wh: Warehouse, date: dt.date, bucket: int) -> Iterator[tuple[str, int | None]] | None:
    """(track id, source_updated_at) of yesterday's attributes from their record index; None without one."""
    entry = wh.manifest(layout.ATTRIBUTES, date).bucket(bucket)
    if not entry.record_index:
        return None

    def versions() -> Iterator[tuple[str, int | None]]:
        for part in read_index(wh.storage, wh.layout.file_url(layout.ATTRIBUTES, date, entry.record_index)):
            yield from zip(part["track_ids"], part["source_updated_at"], strict=True)

    return versions()


def changed_flags(index: Iterable[dict], previous: Iterable[tuple[str, int | None]]) -> Iterator[bool]:
    """Per id-index record, in order: True when yesterday had no attributes for it or another version."""
    prev_it = iter(previous)
    prev = next(prev_it, None)
    for rec in index:
        track_id = rec["track_id"]
        while prev is not None and prev[0] < track_id:
            prev = next(prev_it, None)
        yield not (prev is not None and prev[0] == track_id and prev[1] == rec["source_updated_at"])


def changed_analyses(wh: Warehouse, dataset: str, date: dt.date, bucket: int,
                     previous: Iterable[tuple[str, int | None]]) -> Iterator[dict] | None:
    """The bucket's analysis records that changed since ``previous``, decoded; None when it has no id index."""
    manifest = wh.manifest(dataset, date)
    entry = manifest.bucket(bucket)
    if not entry.index:
        return None

    def records() -> Iterator[dict]:
        flags = changed_flags(wh.read_index(dataset, date, bucket, manifest), previous)
        for f in entry.files:
            wanted = list(itertools.islice(flags, f.records))
            if any(wanted):
                yield from read_selected(wh.storage, wh.layout.file_url(dataset, date, f.name), wanted)

    return records()
