"""The metadata dump (the track catalog): read it once, validate it, bucket and sort it.

The dump is an external dataset, in no particular order. Every later step works
bucket by bucket on sorted ids, so the catalog of a date is first rewritten as a
bucketed, sorted, de-duplicated copy (the ``catalog`` dataset). Memory stays at
one bucket of ids: rows are spilled to one local file per bucket, then each
bucket is sorted on its own.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import NamedTuple

import orjson

from pipeline import layout
from pipeline.bucketing import bucket_of, is_track_id
from pipeline.errors import CatalogError
from pipeline.formats import CATALOG as CATALOG_SCHEMA
from pipeline.formats.avro_io import read_records, write_nonempty
from pipeline.manifest import BucketManifest, Manifest
from pipeline.storage import join
from pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)
MAX_EXAMPLES = 20


class CatalogRow(NamedTuple):
    track_id: str
    analysis_key: str | None
    analysis_updated_at: int | None


def dump_files(wh: Warehouse, date: dt.date) -> list[str]:
    """The data files of the metadata dump of ``date``; ``CatalogError`` when absent or incomplete."""
    url = wh.layout.date_url(layout.TRACKS, date)
    names = wh.storage.list_names(url)
    if not names:
        raise CatalogError(f"no metadata dump for {layout.format_date(date)} at {url}")
    if layout.SUCCESS not in names:
        raise CatalogError(f"metadata dump {url} is incomplete (no {layout.SUCCESS}); wait for the exporter")
    return [join(url, n) for n in names if n.endswith(".avro") and not n.startswith(("_", "."))]


def read_dump(wh: Warehouse, date: dt.date) -> Iterator[dict]:
    for url in dump_files(wh, date):
        yield from read_records(wh.storage, url)


class _Rejections:
    def __init__(self) -> None:
        self.counts = {"malformed_id": 0, "duplicate_id": 0}
        self.examples: list[str] = []

    def add(self, kind: str, value: object) -> None:
        self.counts[kind] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{kind}: {value!r}")


def _check_column(name: str, value: object, kind: type) -> None:
    """A dump column of another type than tracks.avsc declares is a broken export, not a bad row."""
    if value is not None and (type(value) is not kind):
        raise CatalogError(f"metadata dump column {name} holds {value!r} ({type(value).__name__}), expected "
                           f"{'string' if kind is str else 'long'} or null: the dump was written with another "
                           "schema than tracks.avsc; fix the export")


def dump_order(row: CatalogRow) -> tuple:
    """Total order of a track's rows; the last one wins: newest ``analysis_updated_at`` (null oldest, 0 a
    real time), then the greatest ``analysis_key`` (null lowest), whatever the order of the dump's files."""
    return (row.track_id, row.analysis_updated_at is not None, row.analysis_updated_at or 0,
            row.analysis_key is not None, row.analysis_key or "")


def _spill(rows, spill_dir: str, buckets: int, rejected: _Rejections) -> int:
    files = [open(os.path.join(spill_dir, f"{b:05d}.jsonl"), "wb") for b in range(buckets)]  # noqa: SIM115
    total = 0
    try:
        for row in rows:
            track_id = row.get("track_id")
            if not is_track_id(track_id):
                rejected.add("malformed_id", track_id)
                continue
            key, updated = row.get("analysis_key"), row.get("analysis_updated_at")
            _check_column("analysis_key", key, str)
            _check_column("analysis_updated_at", updated, int)
            files[bucket_of(track_id, buckets)].write(orjson.dumps([track_id, key, updated]) + b"\n")
            total += 1
    finally:
        for f in files:
            f.close()
    return total


def _sorted_unique(path: str, rejected: _Rejections) -> list[CatalogRow]:
    with open(path, "rb") as f:
        rows = sorted((CatalogRow(*orjson.loads(line)) for line in f),
                      key=dump_order)
    out: list[CatalogRow] = []
    for row in rows:
        if out and out[-1].track_id == row.track_id:
            rejected.add("duplicate_id", row.track_id)
            # keep the row with the newest analysis: it sorts last among its duplicates
            out[-1] = row
        else:
            out.append(row)
    return out


def build_catalog(wh: Warehouse, date: dt.date, buckets: int) -> Manifest:
    """Write the bucketed catalog of ``date`` to staging and publish it; returns its manifest."""
    rejected = _Rejections()
    with tempfile.TemporaryDirectory(prefix="catalog-spill-") as spill_dir:
        total = _spill(read_dump(wh, date), spill_dir, buckets, rejected)
        if total == 0:
            raise CatalogError(f"metadata dump for {layout.format_date(date)} has no valid track: refusing to "
                               f"publish an empty catalog ({rejected.counts['malformed_id']} malformed ids)")
        for bucket in range(buckets):
            rows = _sorted_unique(os.path.join(spill_dir, f"{bucket:05d}.jsonl"), rejected)
            url = wh.layout.part_url(layout.CATALOG, date, bucket, 0)
            info = write_nonempty(wh.storage, url, CATALOG_SCHEMA, (r._asdict() for r in rows), codec="deflate",
                                  identity=f"{layout.CATALOG}/{layout.format_date(date)}/{url.rsplit('/', 1)[-1]}")
            wh.commit_bucket(layout.CATALOG, date, BucketManifest.of_files(bucket, [info] if info else []))
    if any(rejected.counts.values()):
        log.warning("metadata dump %s: rejected %s, e.g. %s", date, rejected.counts, rejected.examples[:5])
    return wh.publish(layout.CATALOG, date, CATALOG_SCHEMA, buckets,
                      inputs=[wh.layout.date_url(layout.TRACKS, date)],
                      rejected=rejected.counts, rejected_examples=rejected.examples)


def read_catalog_bucket(wh: Warehouse, date: dt.date, bucket: int, manifest: Manifest | None = None
                        ) -> Iterator[CatalogRow]:
    """Stream one bucket of the catalog of ``date`` in track id order."""
    for rec in wh.read_bucket(layout.CATALOG, date, bucket, manifest):
        yield CatalogRow(rec["track_id"], rec["analysis_key"], rec["analysis_updated_at"])
