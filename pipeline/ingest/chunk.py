"""One ingest chunk: one bucket of an analysis dataset, written and committed as a unit.

A chunk attempt first clears whatever an earlier attempt of the same bucket left in
staging, so a killed chunk is rebuilt from scratch to identical records. It writes
the bucket's part files and id index while downloading, then its ledger bucket, and
commits last. When failures exceed the configured ratio it commits nothing.
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pipeline import layout
from pipeline.errors import TooManyFailuresError
from pipeline.formats import ANALYSIS, IDS, LEDGER, fingerprint
from pipeline.formats.avro_io import AbortOnError, LazyWriter, write_nonempty
from pipeline.formats.record_index import Entry, IndexedPartsWriter
from pipeline.ingest import engine
from pipeline.ingest.engine import INGESTED, Counts, Result, WorkItem
from pipeline.manifest import BucketManifest, Manifest
from pipeline.ops.quality import (
    ANALYSIS_RANGES,
    ANALYSIS_VALUE_FIELDS,
    QualitySettings,
    QualityStats,
    analysis_row,
    analysis_values,
    enforce,
    row_values,
)
from pipeline.source.base import Source
from pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)
MIN_INVALID_BURST = 10  # fewer newly invalid documents than this never fail a chunk, whatever their share


@dataclass(frozen=True)
class ChunkSettings:
    concurrency: int = 16
    max_document_bytes: int = 64 * 1024 * 1024
    unreachable_after: int = 20
    failure_ratio: float = 0.001
    records_per_part: int = 20000
    codec: str = "snappy"
    quality: QualitySettings = field(default_factory=QualitySettings)
    invalid_ratio: float = 0.5
    processes: int = 1  # [ingest] processes, resolved (0 → every core): worker processes converting documents


def ledger_entry(result: Result, date: dt.date) -> dict:
    """The ledger row of a track that did not make it; ``attempts`` counts days tried."""
    prev = result.item.previous or {}
    today = layout.format_date(date)
    return {"track_id": result.item.row.track_id, "outcome": result.outcome, "reason": result.reason[:500],
            "attempts": prev.get("attempts", 0) + 1, "first_seen": prev.get("first_seen", today),
            "last_attempt": today, "source_key": result.item.key}


def check_failures(counts: Counts, ratio: float, where: str, invalid_ratio: float = 1.0) -> None:
    """Fail the chunk when too many downloads failed, or too many documents were newly invalid.

    Tracks the ledger already had as invalid are retried every day and do not count: an
    incremental of a few retried tracks would otherwise fail for documents known to be broken.
    Nor does a handful: a burst is at least ``MIN_INVALID_BURST`` documents.
    """
    if counts.attempted and counts.failed / counts.attempted > ratio:
        top = ", ".join(f"{reason} ×{n}" for reason, n in counts.by_reason.most_common(3))
        raise TooManyFailuresError(
            f"{where}: {counts.failed} of {counts.attempted} downloads failed "
            f"({counts.failed / counts.attempted:.2%} > [ingest] failure_ratio {ratio:.2%}); nothing published. "
            f"Most common: {top}. Rerun the chunk once the source is healthy.")
    fresh = counts.newly_invalid
    if fresh >= MIN_INVALID_BURST and fresh / counts.attempted > invalid_ratio:
        top = ", ".join(f"{reason} ×{n}" for reason, n in counts.by_reason.most_common(3))
        raise TooManyFailuresError(
            f"{where}: {fresh} of {counts.attempted} documents are newly invalid "
            f"({fresh / counts.attempted:.2%} > [ingest] invalid_ratio {invalid_ratio:.2%}); nothing "
            f"published. Most common: {top}. Check the source (a new analyzer format? a broken exporter?), "
            "then rerun the chunk or raise the ratio.")


class BucketWriter(AbortOnError):
    """The part files, id index and record index of one bucket, written in track id order, appearing atomically.

    Opening it clears what an earlier attempt left of the bucket in staging; ``close`` publishes
    the last part and the indexes; ``abort`` makes sure no half-written file becomes visible.
    The record index (each record's length and gate values) lets a later pass, the compaction
    and the attributes of a compaction day, copy or skip records without decoding them.
    """

    def __init__(self, wh: Warehouse, dataset: str, date: dt.date, bucket: int, settings: ChunkSettings):
        self.wh, self.dataset, self.date, self.bucket = wh, dataset, date, bucket
        self.quality, self.z_threshold = QualityStats(ANALYSIS_RANGES), settings.quality.z_threshold
        identity = f"{dataset}/{layout.format_date(date)}"
        wh.clear_bucket(dataset, date, bucket)
        self.parts = IndexedPartsWriter(wh.storage, lambda p: wh.layout.part_url(dataset, date, bucket, p),
                                        wh.layout.record_index_url(dataset, date, bucket), ANALYSIS, settings.codec,
                                        settings.records_per_part, identity, ANALYSIS_VALUE_FIELDS)
        index_url = wh.layout.index_url(dataset, date, bucket)
        self._index = LazyWriter(wh.storage, index_url, IDS, settings.codec,
                                 f"{identity}/{wh.layout.index_name(bucket)}")  # no records, no index file

    def write(self, record: dict) -> None:
        """Encode (strictly) and write a record."""
        self.parts.write(record, analysis_row(record))
        self._index({"track_id": record["track_id"], "source_updated_at": record["source_updated_at"]})
        self.quality.observe(record["track_id"], *analysis_values(record))

    def write_entry(self, entry: Entry) -> None:
        """Write a record another analysis set holds: its bytes copied when it has them, else encoded."""
        if entry.raw is None:
            self.write(entry.record)
            return
        self.parts.write_raw(entry.raw, entry.track_id, entry.source_updated_at, entry.row)
        self._index({"track_id": entry.track_id, "source_updated_at": entry.source_updated_at})
        self.quality.observe(entry.track_id, *row_values(entry.row))

    def close(self) -> BucketManifest:
        files = self.parts.close()
        index = self.wh.layout.index_name(self.bucket) if self._index.close() else None
        return BucketManifest.of_files(self.bucket, files, index=index,
                                       record_index=self.wh.layout.record_index_name(self.bucket) if files else None,
                                       quality=self.quality.report(self.z_threshold))

    def abort(self) -> None:
        self.parts.abort()
        self._index.abort()


def fetch(source: Source, items: Iterable[WorkItem], settings: ChunkSettings, date: dt.date, where: str,
          on_record: Callable[[dict], None], progress: Callable[[Counts], None] | None = None
          ) -> tuple[Counts, list[dict]]:
    """Fetch every item, hand good records to ``on_record`` in order; returns counts and ledger rows."""
    problems: list[dict] = []

    def on_result(result: Result) -> None:
        if result.outcome == INGESTED:
            on_record(result.record)
        else:
            problems.append(ledger_entry(result, date))

    counts = engine.run(source, items, concurrency=settings.concurrency, max_bytes=settings.max_document_bytes,
                        unreachable_after=settings.unreachable_after, on_result=on_result, progress=progress,
                        processes=settings.processes)
    check_failures(counts, settings.failure_ratio, where, settings.invalid_ratio)
    return counts, problems


def ingest_bucket(wh: Warehouse, source: Source, dataset: str, date: dt.date, bucket: int,
                  items: Iterable[WorkItem], settings: ChunkSettings, carried_ledger: Iterable[dict] = (),
                  progress: Callable[[Counts], None] | None = None, inputs: list[str] | None = None,
                  details: Callable[[], dict] | None = None) -> BucketManifest:
    """Ingest the ``items`` (sorted by track id) into ``bucket`` of ``dataset``; returns the bucket manifest.

    ``carried_ledger`` (sorted) joins the bucket's ledger after the fetch; ``details`` adds
    fields to the bucket manifest once everything was consumed.
    """
    where = f"{dataset} {layout.format_date(date)} bucket {bucket}"
    done = wh.committed_bucket(dataset, date, bucket)
    if done is not None:
        return done
    wh.clear_bucket(layout.LEDGER, date, bucket)
    with BucketWriter(wh, dataset, date, bucket, settings) as writer:
        counts, problems = fetch(source, items, settings, date, where, writer.write, progress)
        written = writer.close()
    ledger_records = write_ledger_bucket(wh, date, bucket, heapq.merge(carried_ledger, problems,
                                                                       key=lambda e: e["track_id"]), settings.codec)
    info = written.with_details(counts=counts.as_dict(), ledger_records=ledger_records,
                                requests=source.stats.as_dict(), seconds=round(counts.seconds, 3),
                                inputs=inputs or [], **(details() if details else {}))
    wh.commit_bucket(dataset, date, info)
    log.info("%s: %s in %.1fs", where, counts.as_dict(), counts.seconds)
    return info


def write_ledger_bucket(wh: Warehouse, date: dt.date, bucket: int, entries: Iterable[dict], codec: str) -> int:
    """Write and commit one ledger bucket (entries sorted by track id); returns its record count."""
    url = wh.layout.part_url(layout.LEDGER, date, bucket, 0)
    name = url.rsplit("/", 1)[-1]
    info = write_nonempty(wh.storage, url, LEDGER, entries, codec, identity=f"{layout.LEDGER}/{date}/{name}")
    wh.commit_bucket(layout.LEDGER, date, BucketManifest.of_files(bucket, [info] if info else []))  # empty: no file
    return info.records if info else 0


def publish_analysis(wh: Warehouse, dataset: str, date: dt.date, buckets: int,
                     quality: QualitySettings | None = None, **extra) -> Manifest:
    """Gate, publish the ledger of ``date``, then the analysis dataset itself (``_SUCCESS`` last)."""
    quality = quality or QualitySettings()
    where = f"{dataset}/{layout.format_date(date)}"

    def gate(entries: list[BucketManifest]) -> None:
        enforce(entries, quality, where, expected_schema=fingerprint(ANALYSIS),
                schema_of=lambda e: wh.staged_schema_fingerprint(dataset, date, e))

    if not wh.is_complete(dataset, date):
        gate(wh.bucket_manifests(dataset, date, buckets))  # before the ledger publishes either
    wh.publish(layout.LEDGER, date, LEDGER, buckets, analysis_dataset=dataset)
    return wh.publish(dataset, date, ANALYSIS, buckets, **extra)
