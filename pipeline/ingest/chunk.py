"""One ingest chunk: one bucket of an analysis dataset, written and committed as a unit.

A chunk attempt first clears whatever an earlier attempt of the same bucket left in
staging, so a killed chunk is rebuilt from scratch to identical records. It writes
the bucket's part files and id index while downloading, then its ledger bucket, and
commits last. When failures exceed the configured ratio it commits nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pipeline import layout
from pipeline.errors import TooManyFailuresError
from pipeline.formats import ANALYSIS, IDS, LEDGER, fingerprint
from pipeline.formats.avro_io import RollingWriter, open_writer, write_file
from pipeline.ingest import engine
from pipeline.ingest.convert import default_processes
from pipeline.ingest.engine import INGESTED, Counts, Result, WorkItem
from pipeline.ops.quality import ANALYSIS_RANGES, QualitySettings, QualityStats, analysis_values, enforce
from pipeline.source.base import Source
from pipeline.warehouse import Warehouse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkSettings:
    concurrency: int = 16
    max_document_bytes: int = 64 * 1024 * 1024
    unreachable_after: int = 20
    failure_ratio: float = 0.001
    records_per_part: int = 20000
    codec: str = "snappy"
    quality: QualitySettings = field(default_factory=QualitySettings)
    processes: int = 1  # worker processes converting the documents (1: in the downloading threads)

    @classmethod
    def from_config(cls) -> ChunkSettings:
        from pipeline import config

        src, ing = config.source(), config.ingest()
        return cls(src.concurrency, src.max_document_bytes, src.unreachable_after, ing.failure_ratio,
                   ing.records_per_part, ing.codec, QualitySettings.from_config(), default_processes(ing.processes))


def ledger_entry(result: Result, date: dt.date) -> dict:
    """The ledger row of a track that did not make it; ``attempts`` counts days tried."""
    prev = result.item.previous or {}
    today = layout.format_date(date)
    return {"track_id": result.item.row.track_id, "outcome": result.outcome, "reason": result.reason[:500],
            "attempts": prev.get("attempts", 0) + 1, "first_seen": prev.get("first_seen", today),
            "last_attempt": today, "source_key": result.item.key}


def check_failures(counts: Counts, ratio: float, where: str) -> None:
    if counts.attempted and counts.failed / counts.attempted > ratio:
        top = ", ".join(f"{reason} ×{n}" for reason, n in counts.by_reason.most_common(3))
        raise TooManyFailuresError(
            f"{where}: {counts.failed} of {counts.attempted} downloads failed "
            f"({counts.failed / counts.attempted:.2%} > [ingest] failure_ratio {ratio:.2%}); nothing published. "
            f"Most common: {top}. Rerun the chunk once the source is healthy.")


class BucketWriter:
    """The part files and id index of one bucket, written in track id order, appearing atomically.

    Opening it clears what an earlier attempt left of the bucket in staging; ``close`` publishes
    the last part and the index; ``abort`` makes sure no half-written file becomes visible.
    """

    def __init__(self, wh: Warehouse, dataset: str, date: dt.date, bucket: int, settings: ChunkSettings):
        self.wh, self.dataset, self.date, self.bucket = wh, dataset, date, bucket
        self.quality, self.z_threshold = QualityStats(ANALYSIS_RANGES), settings.quality.z_threshold
        identity = f"{dataset}/{layout.format_date(date)}"
        wh.clear_bucket(dataset, date, bucket)
        self._stack = contextlib.ExitStack()
        self.parts = RollingWriter(wh.storage, lambda p: wh.layout.part_url(dataset, date, bucket, p), ANALYSIS,
                                   settings.codec, settings.records_per_part, identity)
        index_url = wh.layout.index_url(dataset, date, bucket)
        self._index = self._stack.enter_context(open_writer(wh.storage, index_url, IDS, settings.codec,
                                                            f"{identity}/{wh.layout.index_name(bucket)}"))

    def write(self, record: dict) -> None:
        self.parts.write(record)
        self._index({"track_id": record["track_id"], "source_updated_at": record["source_updated_at"]})
        self.quality.observe(record["track_id"], *analysis_values(record))

    def close(self) -> dict:
        files = self.parts.close()
        self._stack.close()
        return {"records": sum(f.records for f in files), "bytes": sum(f.bytes for f in files),
                "files": [{"name": f.name, "records": f.records, "bytes": f.bytes} for f in files],
                "index": self.wh.layout.index_name(self.bucket), "quality": self.quality.as_dict(self.z_threshold)}

    def abort(self) -> None:
        self.parts.abort()
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


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
    check_failures(counts, settings.failure_ratio, where)
    return counts, problems


def committed_bucket(wh: Warehouse, dataset: str, date: dt.date, bucket: int) -> dict | None:
    """The bucket's manifest if it is already committed (or its date published), else None.

    A chunk's ``complete()`` is asked when the worker schedules it, not when it runs: without a
    central scheduler another worker may commit the bucket in between. Clearing a committed bucket
    while that worker publishes the date would publish it with files missing, so a committed
    bucket is never rebuilt (delete its ``_buckets`` manifest to force that).
    """
    if wh.is_complete(dataset, date):
        return wh.manifest(dataset, date)["bucket_manifests"][layout.bucket_name(bucket)]
    if wh.bucket_committed(dataset, date, bucket):
        log.warning("%s %s bucket %d is already committed (another worker?): not rebuilding it",
                    dataset, layout.format_date(date), bucket)
        return wh.read_json(wh.layout.bucket_manifest_url(dataset, date, bucket))
    return None


def ingest_bucket(wh: Warehouse, source: Source, dataset: str, date: dt.date, bucket: int,
                  items: Iterable[WorkItem], settings: ChunkSettings, carried_ledger: Iterable[dict] = (),
                  progress: Callable[[Counts], None] | None = None, inputs: list[str] | None = None,
                  details: Callable[[], dict] | None = None) -> dict:
    """Ingest the ``items`` (sorted by track id) into ``bucket`` of ``dataset``; returns the bucket manifest.

    ``carried_ledger`` (sorted) joins the bucket's ledger after the fetch; ``details`` adds
    fields to the bucket manifest once everything was consumed.
    """
    where = f"{dataset} {layout.format_date(date)} bucket {bucket}"
    done = committed_bucket(wh, dataset, date, bucket)
    if done is not None:
        return done
    wh.clear_bucket(layout.LEDGER, date, bucket)
    writer = BucketWriter(wh, dataset, date, bucket, settings)
    try:
        counts, problems = fetch(source, items, settings, date, where, writer.write, progress)
    except BaseException:
        writer.abort()
        raise
    info = writer.close()
    ledger_records = write_ledger_bucket(wh, date, bucket, heapq.merge(carried_ledger, problems,
                                                                       key=lambda e: e["track_id"]), settings.codec)
    info.update({"counts": counts.as_dict(), "ledger_records": ledger_records, "requests": source.stats.as_dict(),
                 "seconds": round(counts.seconds, 3), "inputs": inputs or [], **(details() if details else {})})
    wh.commit_bucket(dataset, date, bucket, info)
    log.info("%s: %s in %.1fs", where, counts.as_dict(), counts.seconds)
    return info


def write_ledger_bucket(wh: Warehouse, date: dt.date, bucket: int, entries: Iterable[dict], codec: str) -> int:
    """Write and commit one ledger bucket (entries sorted by track id); returns its record count."""
    url = wh.layout.part_url(layout.LEDGER, date, bucket, 0)
    name = url.rsplit("/", 1)[-1]
    info = write_file(wh.storage, url, LEDGER, entries, codec, identity=f"{layout.LEDGER}/{date}/{name}")
    wh.commit_bucket(layout.LEDGER, date, bucket, {
        "records": info.records, "bytes": info.bytes,
        "files": [{"name": info.name, "records": info.records, "bytes": info.bytes}]})
    return info.records


def publish_analysis(wh: Warehouse, dataset: str, date: dt.date, buckets: int,
                     quality: QualitySettings | None = None, **extra) -> dict:
    """Gate, publish the ledger of ``date``, then the analysis dataset itself (``_SUCCESS`` last)."""
    quality = quality or QualitySettings()
    where = f"{dataset}/{layout.format_date(date)}"

    def gate(entries: list[dict]) -> None:
        enforce(entries, quality, where, expected_schema=fingerprint(ANALYSIS),
                schema_of=lambda e: wh.staged_schema_fingerprint(dataset, date, e))

    if not wh.is_complete(dataset, date):
        gate(wh.bucket_manifests(dataset, date, buckets))  # before the ledger publishes either
    wh.publish(layout.LEDGER, date, LEDGER, buckets, analysis_dataset=dataset)
    return wh.publish(dataset, date, ANALYSIS, buckets, **extra)
