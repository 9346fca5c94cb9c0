"""The metadata dump (the track catalog): read it once, validate it, bucket and sort it.

The dump is an external dataset, in no particular order. Every later step works
bucket by bucket on sorted ids, so the catalog of a date is first rewritten as a
bucketed, sorted, de-duplicated copy (the ``catalog`` dataset): an external sort.
Rows are buffered up to a memory budget, sorted by (bucket, track id, newest
analysis) and spilled as runs; the runs are k-way merged in one stream ordered by
bucket, so memory and open files stay bounded whatever the dump's size and the
bucket count.
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import orjson

from pipeline import layout
from pipeline.bucketing import bucket_of, is_track_id
from pipeline.errors import CatalogError
from pipeline.formats import CATALOG as CATALOG_SCHEMA
from pipeline.formats.avro_io import read_records, write_nonempty
from pipeline.formats.catalog_ids import read_id_blocks
from pipeline.manifest import BucketManifest, Manifest
from pipeline.storage import join
from pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)
MAX_EXAMPLES = 20
# Bytes a buffered dump row takes in memory besides its strings (tuple, ints, list slot, sort key).
ROW_BYTES = 300


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


def _run_order(item: tuple) -> tuple:
    """Order of a spilled row ``(bucket, track_id, analysis_key, analysis_updated_at)``: bucket, then dump order."""
    return (item[0], *dump_order(CatalogRow(item[1], item[2], item[3])))


def _write_run(items: list[tuple], spill_dir: str, number: int) -> str:
    path = os.path.join(spill_dir, f"run-{number:05d}.jsonl")
    items.sort(key=_run_order)
    with open(path, "wb") as f:
        f.writelines(orjson.dumps(item) + b"\n" for item in items)
    return path


def _read_run(path: str) -> Iterator[tuple]:
    with open(path, "rb") as f:
        for line in f:
            yield tuple(orjson.loads(line))


def _spill(rows: Iterable[dict], spill_dir: str, buckets: int, rejected: _Rejections, budget: int
           ) -> tuple[int, list[str]]:
    """Validate and bucket the dump's rows into sorted runs of at most ``budget`` bytes each (one file open)."""
    runs: list[str] = []
    items: list[tuple] = []
    used = total = 0
    for row in rows:
        track_id = row.get("track_id")
        if not is_track_id(track_id):
            rejected.add("malformed_id", track_id)
            continue
        key, updated = row.get("analysis_key"), row.get("analysis_updated_at")
        _check_column("analysis_key", key, str)
        _check_column("analysis_updated_at", updated, int)
        items.append((bucket_of(track_id, buckets), track_id, key, updated))
        used += ROW_BYTES + len(track_id) + len(key or "")
        total += 1
        if used >= budget:
            runs.append(_write_run(items, spill_dir, len(runs)))
            items, used = [], 0
    if items or not runs:
        runs.append(_write_run(items, spill_dir, len(runs)))
    return total, runs


def _merge_runs(runs: list[str], spill_dir: str, max_open: int) -> Iterator[tuple]:
    """Every spilled row in run order, merging at most ``max_open`` runs at a time (extra passes beyond)."""
    number = len(runs)
    while len(runs) > max_open:
        merged: list[str] = []
        for start in range(0, len(runs), max_open):
            group = runs[start:start + max_open]
            path = os.path.join(spill_dir, f"run-{number:05d}.jsonl")
            number += 1
            with open(path, "wb") as f:
                f.writelines(orjson.dumps(item) + b"\n"
                             for item in heapq.merge(*map(_read_run, group), key=_run_order))
            for done in group:
                os.remove(done)
            merged.append(path)
        runs = merged
    return heapq.merge(*map(_read_run, runs), key=_run_order)


def _unique(items: Iterator[tuple], rejected: _Rejections) -> Iterator[CatalogRow]:
    """One row per track id from rows in dump order: the last of its duplicates (newest analysis) wins."""
    last: CatalogRow | None = None
    for item in items:
        row = CatalogRow(item[1], item[2], item[3])
        if last is not None and last.track_id == row.track_id:
            rejected.add("duplicate_id", row.track_id)
        elif last is not None:
            yield last
        last = row
    if last is not None:
        yield last


def _bucket_rows(merged: Iterator[tuple], buckets: int) -> Iterator[tuple[int, Iterator[tuple]]]:
    """(bucket, its rows) for every bucket in order, from one stream sorted by bucket."""
    pending = next(merged, None)

    def rows_of(bucket: int) -> Iterator[tuple]:
        nonlocal pending
        while pending is not None and pending[0] == bucket:
            yield pending
            pending = next(merged, None)

    for bucket in range(buckets):
        rows = rows_of(bucket)
        yield bucket, rows
        for _ in rows:  # whatever the consumer left unread
            pass


@dataclass(frozen=True)
class SortSettings:
    """The catalog build's external sort; resolved once, by the task, from ``[catalog]``."""

    memory_mb: float = 256.0  # [catalog] sort_memory_mb
    max_open_runs: int = 64  # [catalog] max_open_runs


def build_catalog(wh: Warehouse, date: dt.date, buckets: int, sort: SortSettings | None = None) -> Manifest:
    """Write the bucketed catalog of ``date`` to staging and publish it; returns its manifest.

    Memory stays near ``sort.memory_mb`` whatever the dump's size (rows beyond it are spilled as
    sorted runs and k-way merged), and at most ``sort.max_open_runs`` + 2 files are open whatever the
    bucket count: the merged stream is ordered by bucket, so one output file is written at a time.
    """
    sort = sort or SortSettings()
    rejected = _Rejections()
    with tempfile.TemporaryDirectory(prefix="catalog-spill-") as spill_dir:
        total, runs = _spill(read_dump(wh, date), spill_dir, buckets, rejected, int(sort.memory_mb * 1e6))
        if total == 0:
            raise CatalogError(f"metadata dump for {layout.format_date(date)} has no valid track: refusing to "
                               f"publish an empty catalog ({rejected.counts['malformed_id']} malformed ids)")
        log.info("catalog %s: %d rows in %d sorted runs", date, total, len(runs))
        for bucket, items in _bucket_rows(_merge_runs(runs, spill_dir, max(2, sort.max_open_runs)), buckets):
            url = wh.layout.part_url(layout.CATALOG, date, bucket, 0)
            info = write_nonempty(wh.storage, url, CATALOG_SCHEMA, (r._asdict() for r in _unique(items, rejected)),
                                  codec="deflate",
                                  identity=f"{layout.CATALOG}/{layout.format_date(date)}/{url.rsplit('/', 1)[-1]}")
            wh.commit_bucket(layout.CATALOG, date, BucketManifest.of_files(bucket, [info] if info else []))
    if any(rejected.counts.values()):
        log.warning("metadata dump %s: rejected %s, e.g. %s", date, rejected.counts, rejected.examples[:5])
    return wh.publish(layout.CATALOG, date, CATALOG_SCHEMA, buckets,
                      inputs=[wh.layout.date_url(layout.TRACKS, date)],
                      rejected=rejected.counts, rejected_examples=rejected.examples)


def read_catalog_id_blocks(wh: Warehouse, date: dt.date, bucket: int) -> Iterator[np.ndarray]:
    """Only the track ids of one catalog bucket, in order, as arrays of UTF-8 bytes (a daily job's hot loop:
    no row object per track, see formats/catalog_ids.py)."""
    for url in wh.bucket_files(layout.CATALOG, date, bucket):
        yield from read_id_blocks(wh.storage, url)


def read_catalog_bucket(wh: Warehouse, date: dt.date, bucket: int, manifest: Manifest | None = None
                        ) -> Iterator[CatalogRow]:
    """Stream one bucket of the catalog of ``date`` in track id order."""
    for rec in wh.read_bucket(layout.CATALOG, date, bucket, manifest):
        yield CatalogRow(rec["track_id"], rec["analysis_key"], rec["analysis_updated_at"])
