"""The records of a bucket as record index entries: bytes to copy, or decoded where they cannot be.

Why: the compaction keeps ~99% of the previous full snapshot as it is, and the daily attributes
~99% of yesterday's records. Decoding a record to write it again costs ~20 µs for an attributes
record, ~40 µs for a small analysis and milliseconds for a real one (~800 segments); with the
bucket's record index (each record's length and the values the quality gate reads) its bytes are
sliced out of the decompressed block and copied. Files written before the dataset had record
indexes, or in an older format of its schema, are decoded (and upgraded) record by record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter

from pipeline.formats import ANALYSIS, fingerprint
from pipeline.formats.analysis import upgrade as upgrade_analysis
from pipeline.formats.avro_raw import read_raw
from pipeline.formats.record_index import Entry, copyable, read_entries, read_index
from pipeline.ops.quality import ANALYSIS_VALUE_FIELDS, analysis_row
from pipeline.storage import Storage
from pipeline.warehouse import Warehouse

ENTRY_ID = attrgetter("track_id")


@dataclass(frozen=True)
class RecordKind:
    """What a dataset's entries are made of: its schema, its index values and how to get them from a record."""

    schema_name: str
    value_fields: Sequence[str]
    row_of: Callable[[dict], Sequence[float]]
    upgrade: Callable[[dict], dict]  # a record of an older format as one of the current format


ANALYSIS_RECORDS = RecordKind(ANALYSIS, ANALYSIS_VALUE_FIELDS, analysis_row, upgrade_analysis)


def bucket_entries(wh: Warehouse, dataset: str, date: dt.date, bucket: int,
                   kind: RecordKind = ANALYSIS_RECORDS) -> Iterator[Entry]:
    """Every record of one bucket of ``dataset``, in id order: through its record index (no decoding) where
    the part can be copied, else decoded."""
    manifest = wh.manifest(dataset, date)
    entry = manifest.bucket(bucket)
    if not entry.record_index:  # written before the dataset had record indexes
        for url in wh.bucket_files(dataset, date, bucket, manifest):
            yield from decoded_entries(wh.storage, url, kind)
        return
    for part in read_index(wh.storage, wh.layout.file_url(dataset, date, entry.record_index)):
        url = wh.layout.file_url(dataset, date, part["part"])
        if copyable(part, kind.schema_name, kind.value_fields):
            yield from read_entries(wh.storage, url, part)
        else:
            yield from decoded_entries(wh.storage, url, kind)


def decoded_entries(storage: Storage, url: str, kind: RecordKind = ANALYSIS_RECORDS) -> Iterator[Entry]:
    """The entries of a file read without an index: decoded, and upgraded if it is an older format."""
    current = fingerprint(kind.schema_name)
    for record, raw, fp in read_raw(storage, url):
        if fp != current:
            record, raw = kind.upgrade(record), None  # re-encoded once, in the current format
        yield Entry(record["track_id"], record["source_updated_at"], raw, kind.row_of(record), record)
