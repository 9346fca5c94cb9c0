"""The records of an analysis bucket as record index entries: bytes to copy, or decoded where they cannot be.

Why: the compaction keeps ~99% of the previous full snapshot as it is. Decoding an analysis to
write it again costs ~40 µs for a small one and milliseconds for a real one (~800 segments);
with the bucket's record index (each record's length and gate values, ``BucketWriter``) its
bytes are sliced out of the decompressed block and copied. Sets written before analysis record
indexes existed, or in an older analysis format, are decoded (and upgraded) record by record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from operator import attrgetter

from pipeline.formats import ANALYSIS, fingerprint
from pipeline.formats.analysis import upgrade
from pipeline.formats.avro_raw import read_raw
from pipeline.formats.record_index import Entry, copyable, read_entries, read_index
from pipeline.ops.quality import ANALYSIS_VALUE_FIELDS, analysis_row
from pipeline.storage import Storage
from pipeline.warehouse import Warehouse

ENTRY_ID = attrgetter("track_id")


def bucket_entries(wh: Warehouse, dataset: str, date: dt.date, bucket: int) -> Iterator[Entry]:
    """Every record of one bucket of an analysis set, in id order."""
    manifest = wh.manifest(dataset, date)
    entry = manifest.bucket(bucket)
    if not entry.record_index:  # written before analysis sets had record indexes
        for url in wh.bucket_files(dataset, date, bucket, manifest):
            yield from decoded_entries(wh.storage, url)
        return
    for part in read_index(wh.storage, wh.layout.file_url(dataset, date, entry.record_index)):
        url = wh.layout.file_url(dataset, date, part["part"])
        if copyable(part, ANALYSIS, ANALYSIS_VALUE_FIELDS):
            yield from read_entries(wh.storage, url, part)
        else:
            yield from decoded_entries(wh.storage, url)


def decoded_entries(storage: Storage, url: str) -> Iterator[Entry]:
    """The entries of an analysis file read without an index: decoded, and upgraded if it is an older format."""
    current = fingerprint(ANALYSIS)
    for record, raw, fp in read_raw(storage, url):
        if fp != current:
            record, raw = upgrade(record), None  # re-encoded once, in the current format
        yield Entry(record["track_id"], record["source_updated_at"], raw, analysis_row(record), record)
